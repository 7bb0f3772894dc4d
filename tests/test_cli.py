"""The command line as a site technician uses it: exit codes and messages."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import edgenvr


def test_check_config_lists_every_problem_with_its_key_and_fails(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[storage]\nquota = "120%"\n[[cameras]]\nid = "../etc"\nurl = "rtsp://admin:hunter2@10.0.0.9/x"\n'
                      '[[cameras]]\nid = "gate"\nurl = "rtsp://h/a"\n[[cameras]]\nid = "gate"\nurl = "rtsp://h/b"\n')
    result = edgenvr("check-config", str(config))
    assert result.returncode == 1
    assert "storage.quota" in result.stdout
    assert "cameras[0].id" in result.stdout
    assert "cameras[2].id" in result.stdout and "duplicate" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n[[cameras]]\nid = "gate"\nurl = "rtsp://h/a"\n')
    result = edgenvr("check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_run_refuses_an_invalid_config_without_touching_the_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nfrobnicate = 1\n')
    result = edgenvr("run", "--config", str(config))
    assert result.returncode == 2
    assert "storage.frobnicate" in result.stderr
    assert not (tmp_path / "data").exists()


def test_segments_on_a_box_that_never_recorded_says_so(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n')
    result = edgenvr("segments", "--config", str(config))
    assert result.returncode == 1
    assert "nothing has been recorded" in result.stderr


def test_bad_time_argument_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n')
    result = edgenvr("gaps", "--config", str(config), "--since", "yesterday")
    assert result.returncode == 2
    assert "ISO 8601" in result.stderr


def test_second_supervisor_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    from conftest import start_supervisor

    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nmin_free = "0"\n')
    first = start_supervisor(config, tmp_path / "first.log")
    try:
        first.wait_for_log("recording 0 cameras")
        second = edgenvr("run", "--config", str(config))
        assert second.returncode == 1
        assert "already running" in second.stderr
    finally:
        assert first.stop() == 0


def test_a_damaged_index_gives_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n[[cameras]]\nid = "gate"\nurl = "rtsp://h/a"\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "index.sqlite3").write_bytes(b"this is not an SQLite file" * 100)
    for command in (["events"], ["status"], ["hold", "list"], ["retention"],
                    ["hold", "add", "--camera", "gate", "--from", "0", "--to", "1000", "--reason", "x"]):
        result = edgenvr(*command, "--config", str(config))
        assert result.returncode == 1, (command, result.stderr)
        assert "index cannot be used" in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)
