"""The command line as a site technician uses it: exit codes and messages."""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from edgenvr.cli.deferred_command import Deferred
from edgenvr.cli.main import build_parser
from edgenvr.index import schema as index_schema
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
                    ["hold", "add", "--camera", "gate", "--from", "2026-11-30", "--to", "2026-12-01", "--reason", "x"]):
        result = edgenvr(*command, "--config", str(config))
        assert result.returncode == 1, (command, result.stderr)
        assert "index cannot be used" in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)


# --- input, everywhere: times, ranges, a newer index, the data dir, values, passwords -------------------------


def _recorded_box(tmp_path: Path, schema_version: int | None = None) -> Path:
    """A config with camera "gate" and an (empty) index in its data dir; returns the config's path."""
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nmin_free = "0"\n'
                      '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.10/a"\n')
    conn = index_schema.connect(tmp_path / "data" / "index.sqlite3")
    if schema_version is not None:
        conn.execute(f"PRAGMA user_version = {schema_version}")
    conn.close()
    return config


def test_a_hold_on_dates_covers_those_dates_and_bare_numbers_are_refused(tmp_path: Path) -> None:
    config = str(_recorded_box(tmp_path))
    added = edgenvr("hold", "add", "--config", config, "--camera", "gate", "--from", "20261130", "--to", "20261201",
                    "--reason", "incident 7")
    assert added.returncode == 0, added.stderr
    [hold] = [json.loads(line) for line in edgenvr("hold", "list", "--config", config, "--json").stdout.splitlines()]
    assert (hold["from_ms"], hold["to_ms"]) == (1_795_996_800_000, 1_796_083_200_000), "30 Nov 2026, not 1970"

    bare = edgenvr("hold", "add", "--config", config, "--camera", "gate", "--from", "1732924800", "--to",
                   "1732928400", "--reason", "x")
    assert bare.returncode == 2 and "@1732924800 for epoch seconds" in bare.stderr, bare.stderr
    epoch = edgenvr("hold", "add", "--config", config, "--camera", "gate", "--from", "@1732924800", "--to",
                    "1732928400000ms", "--reason", "x")
    assert epoch.returncode == 0, epoch.stderr
    year = edgenvr("gaps", "--config", config, "--since", "2026", "--json")
    assert year.returncode == 0, year.stderr


def test_reversed_ranges_are_refused_before_anything_is_opened(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"   # nothing recorded: a command that got as far as the index would exit 1
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n[[cameras]]\nid = "gate"\nurl = "rtsp://h/a"\n')
    for command in (["segments"], ["gaps"], ["events"]):
        result = edgenvr(*command, "--config", str(config), "--since", "2026-12-01", "--until", "2026-11-30")
        assert result.returncode == 2, (command, result.stderr)
        assert "--since 2026-12-01 00:00:00.000Z is after --until 2026-11-30" in result.stderr
    result = edgenvr("hold", "add", "--config", str(config), "--camera", "gate", "--from", "2026-12-01",
                     "--to", "2026-11-30", "--reason", "x")
    assert result.returncode == 2 and "must start before it ends" in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


def test_times_beyond_year_9999_are_refused_and_a_hold_saved_with_one_still_lists(tmp_path: Path) -> None:
    config = str(_recorded_box(tmp_path))
    for args in (["hold", "add", "--camera", "gate", "--from", "2026-11-30", "--to", "@253402300800",
                  "--reason", "x"],
                 ["segments", "--since", "@99999999999999999999999"],
                 ["gaps", "--until", "99999999999999999999999ms"],
                 ["hold", "release", "99999999999999999999999"]):
        result = edgenvr(*args, "--config", config)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "error:" in result.stderr, (args, result.stderr)
    # such a hold, saved by an edgenvr that did not refuse it, made hold add/list/release crash for good
    conn = index_schema.connect(tmp_path / "data" / "index.sqlite3")
    conn.execute("INSERT INTO holds (camera, from_ms, to_ms, reason, created_ms) VALUES"
                 " ('gate', 1795996800000, 253402300800000, 'old', 0)")
    conn.close()
    for args in (["hold", "list"], ["hold", "list", "--json"], ["retention"],
                 ["hold", "add", "--camera", "gate", "--from", "2026-11-30", "--to", "2026-12-01", "--reason", "x"],
                 ["hold", "release", "1"]):
        result = edgenvr(*args, "--config", config)
        assert result.returncode == 0, (args, result.stderr)
    assert "253402300800000ms" in edgenvr("hold", "list", "--config", config, "--all").stdout


def test_an_index_from_a_newer_edgenvr_is_refused_by_every_command(tmp_path: Path) -> None:
    config = str(_recorded_box(tmp_path, schema_version=99))
    commands = [["segments"], ["gaps"], ["status"], ["check-index"], ["events"], ["retention"], ["hold", "list"],
                ["hold", "add", "--camera", "gate", "--from", "2026-11-30", "--to", "2026-12-01", "--reason", "x"],
                ["hold", "release", "1"], ["run"]]
    for command in commands:
        result = edgenvr(*command, "--config", config)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "newer edgenvr" in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)
    checked = edgenvr("check-config", config)
    assert checked.returncode == 1 and "storage.data_dir:" in checked.stdout and "newer edgenvr" in checked.stdout


def test_an_index_from_an_older_edgenvr_is_upgraded_by_run_and_until_then_readers_say_so(tmp_path: Path) -> None:
    """After a software update, the first `edgenvr run` migrates the index; a read-only command before that
    says what to do instead of failing on a missing column."""
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nmin_free = "0"\n'
                      '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.10/a"\n')
    (tmp_path / "data").mkdir()
    conn = sqlite3.connect(tmp_path / "data" / "index.sqlite3")
    for script in index_schema.MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    for command in (["segments"], ["status"], ["events"], ["gaps"]):
        result = edgenvr(*command, "--config", str(config))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "older edgenvr" in result.stderr and "edgenvr run" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    index_schema.connect(tmp_path / "data" / "index.sqlite3").close()   # what `edgenvr run` does first
    assert edgenvr("segments", "--config", str(config)).returncode == 0


def test_check_config_and_run_refuse_a_data_dir_they_cannot_record_into(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a directory")
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nmin_free = "0"\n')
    checked = edgenvr("check-config", str(config))
    assert checked.returncode == 1 and "storage.data_dir:" in checked.stdout and "not a directory" in checked.stdout
    ran = edgenvr("run", "--config", str(config))
    assert ran.returncode == 2 and "storage.data_dir:" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr

    disk = shutil.disk_usage(tmp_path).total
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/new/data"\nmin_free = {disk}\n')
    checked = edgenvr("check-config", str(config))
    assert checked.returncode == 1 and "storage.min_free:" in checked.stdout, checked.stdout
    ran = edgenvr("run", "--config", str(config))
    assert ran.returncode == 2 and "storage.min_free:" in ran.stderr, ran.stderr
    assert not (tmp_path / "new").exists(), "refused before anything was created"


def test_values_too_large_to_compute_with_are_refused_by_check_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\nmax_age_days = 1e12\nmin_free = "20000TB"\n'
                      '[[cameras]]\nid = "gate"\nurl = "rtsp://h/a"\nretention_max_days = 1e300\n')
    result = edgenvr("check-config", str(config))
    assert result.returncode == 1
    assert "storage.max_age_days: must be at most 36500, got 1000000000000" in result.stdout
    assert "storage.min_free: must be at most 10000TB" in result.stdout
    assert "cameras[0].retention_max_days: must be at most 36500" in result.stdout


def test_check_config_shows_no_password_of_any_url_shape(tmp_path: Path) -> None:
    urls = ["rtsp:/admin:Hunter2pw@192.0.2.10/a", "rtsp//admin:Hunter2pw@192.0.2.10/a",
            "rtsp://admin:Hunter2pw/x@192.0.2.10/a", "rtsp://admin:Hunter2pw x@192.0.2.10/a",
            "rtsp://admin:Hunter2pw@x y@192.0.2.10/a", "http://192.0.2.10/a?user=admin&password=Hunter2pw"]
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n' + "".join(
        f'[[cameras]]\nid = "cam-{index}"\nurl = "{url}"\n' for index, url in enumerate(urls)))
    result = edgenvr("check-config", str(config))
    assert result.returncode == 1
    assert all(f"cameras[{index}].url:" in result.stdout for index in range(len(urls))), result.stdout
    assert "Hunter2pw" not in result.stdout + result.stderr


def test_status_says_which_reference_views_nobody_has_approved(tmp_path: Path) -> None:
    from edgenvr.core.records import COMMISSIONING, CameraState, ReferenceRecord
    from edgenvr.index.writer import IndexWriter

    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n'
                      + "".join(f'[[cameras]]\nid = "{c}"\nurl = "rtsp://h/{c}"\n' for c in ("gate", "yard", "hall"))
                      + '[cameras.motion]\ntamper = false\n')
    writer = IndexWriter(index_schema.connect(tmp_path / "data" / "index.sqlite3"))
    for camera in ("gate", "yard", "hall"):
        writer.set_state(CameraState(camera, "recording", 1_780_000_000_000, "", {}))
    writer.add_reference(ReferenceRecord("gate", 1_780_000_000_000, "references/gate/1.png", COMMISSIONING))
    writer.add_reference(ReferenceRecord("yard", 1_780_000_000_000, "references/yard/1.png", COMMISSIONING))
    writer.add_reference(ReferenceRecord("yard", 1_780_000_100_000, "references/yard/2.png", "ani"))
    writer.commit()
    writer.conn.close()

    result = edgenvr("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == ["gate", "yard", "hall", "clock:"]
    not_approved = [line.strip() for line in lines if "reference view not approved" in line]
    # gate: taken automatically; yard: approved by ani; hall: no tamper detection, so no reference wanted
    assert len(not_approved) == 1 and "taken automatically" in not_approved[0], result.stdout
    assert "edgenvr reference approve --camera gate" in not_approved[0]
    as_json = {json.loads(line)["camera"]: json.loads(line)["reference"]
               for line in edgenvr("status", "--config", str(config), "--json").stdout.splitlines()
               if "camera" in json.loads(line)}   # the last line is the clock's
    assert as_json["gate"]["approved_by"] is None and as_json["yard"]["approved_by"] == "ani"
    assert as_json["hall"] is None


def test_nobody_approves_a_view_under_the_name_of_the_automatic_one(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.1/x"\n')
    result = edgenvr("reference", "approve", "--config", str(config), "--camera", "gate", "--by", "commissioning")
    assert result.returncode == 1 and "give your own name" in result.stderr, result.stderr
    assert not (tmp_path / "data" / "references").exists()


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgenvr.config.checking import load_config
    from edgenvr.evidence.audit import AuditAction, AuditTrail
    from edgenvr.evidence.identity import device_identity
    from edgenvr.storage.layout import StorageLayout

    config_path = tmp_path / "edgenvr.toml"
    config_path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\nmin_free = "0"\n')
    config = load_config(config_path)
    layout = StorageLayout(config.storage.data_dir)
    with AuditTrail(layout, device_identity(layout, "box", "box")) as trail:   # far more than a pipe holds
        for n in range(1500):
            trail.append("tester", AuditAction.HOLD_ADD, camera="gate", from_ms=n, to_ms=n + 1, reason="x" * 100)
    done = subprocess.run(f"{sys.executable} -m edgenvr audit --config {config_path} --json | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("{"), done.stdout[:200]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def _handlers(parser: argparse.ArgumentParser) -> Iterator[object]:
    yield parser.get_default("func")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _handlers(child)


def test_the_box_s_commands_start_without_the_hub_s_and_the_onvif_client_s_libraries() -> None:
    """`edgenvr status` on a Raspberry Pi: the command line loads neither SQLAlchemy nor aiohttp (the hub's and
    `discover`'s), which made every command about a second slower and 70 MB larger."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from edgenvr.cli.main import build_parser; build_parser(); "
                               "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert not {"sqlalchemy", "aiohttp", "gunicorn", "psycopg", "defusedxml"} & set(loaded), loaded
    # and every command whose code is loaded only when it runs names a handler that exists
    deferred = [handler for handler in _handlers(build_parser()) if isinstance(handler, Deferred)]
    assert len(deferred) >= 11
    for handler in deferred:
        assert callable(handler.handler()), handler


def test_status_and_verify_load_no_video_or_picture_library(tmp_path: Path) -> None:
    """`edgenvr status`, `segments` and `gaps` read the index only, and `verify` (on a police laptop) reads a
    folder: they load neither PyAV nor OpenCV nor numpy (half a second on this machine, several on a Raspberry
    Pi, for commands run by hand and by monitoring)."""
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n[[cameras]]\nid = "gate"\nurl = "rtsp://h/gate"\n')
    index_schema.connect(tmp_path / "data" / "index.sqlite3").close()
    (tmp_path / "export").mkdir()   # an empty folder: NOT VERIFIED, once the checks have been loaded
    for command, code in ((["status", "--config", str(config)], 0), (["segments", "--config", str(config)], 0),
                          (["gaps", "--config", str(config)], 0), (["verify", str(tmp_path / "export")], 1)):
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from edgenvr.cli.main import main; code = main(sys.argv[1:]); "
                                   "print(' '.join(sorted({m.split('.')[0] for m in sys.modules}))); sys.exit(code)",
             *command], capture_output=True, text=True)
        assert done.returncode == code, (command, done.stderr)
        loaded = done.stdout.splitlines()[-1].split()
        assert not {"av", "cv2", "numpy"} & set(loaded), (command, loaded)
