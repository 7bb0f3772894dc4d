"""Tests for edgenvr.config and edgenvr.url_redaction: what a user editing the
config file relies on (values, defaults, clear errors naming the key) and that
camera passwords never leak into messages or reprs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgenvr.config.checking import (
    ConfigError,
    check_data_dir,
    load_config,
    parse_config,
)
from edgenvr.config.keys import ConfigKey, Kind
from edgenvr.config.records import (
    CONFIG_KEYS,
    CameraConfig,
    Config,
    Quota,
    RecordingConfig,
    StorageConfig,
    SyncConfig,
    TimeWindow,
    section_keys,
)
from edgenvr.config.values import parse_size
from edgenvr.config.writing import config_example, config_reference, config_to_toml
from edgenvr.core.url_redaction import redact_text, redact_url
from tests.conftest import edgenvr

PASSWORD = "S3cr3t-pw"
MAIN_URL = f"rtsp://admin:{PASSWORD}@192.0.2.10:554/Streaming/Channels/101"
SUB_URL = f"rtsp://admin:{PASSWORD}@192.0.2.10:554/Streaming/Channels/102"

FULL_CONFIG = f"""
[storage]
data_dir = "/var/lib/edgenvr"
quota = "85%"            # of the data filesystem
min_free = "2GB"
max_age_days = 30
sweep_seconds = 5
index_commit_seconds = 20

[recording]
segment_seconds = 6
connect_timeout_seconds = 8
read_timeout_seconds = 4.5
max_backoff_seconds = 60

[logging]
level = "debug"

[[cameras]]
id = "gudang-1"
name = "Gudang logistik - pintu utama"
url = "{MAIN_URL}"
detect_url = "{SUB_URL}"
enabled = true

[[cameras]]
id = "kasir-2"
url = "rtsps://192.0.2.11/live"
enabled = false
"""

CAMERA = '[[cameras]]\nid = "cam-1"\nurl = "rtsp://192.0.2.10/stream"\n'


def write(tmp_path: Path, text: str, name: str = "edgenvr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


def assert_one_problem(problems: list[str], key_path: str, *fragments: str) -> None:
    """Exactly one problem, starting with the key path and mentioning fragments."""
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key_path}: "), problems
    for fragment in fragments:
        assert fragment in problems[0], problems


# --- a valid config ----------------------------------------------------------


def test_full_config_loads_with_every_value(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_CONFIG)
    config = load_config(path)

    assert config.source == str(path)
    assert config.log_level == "debug"
    assert config.storage == StorageConfig(
        data_dir=Path("/var/lib/edgenvr"),
        quota=Quota(percent=85.0),
        min_free_bytes=2 * 10**9,
        max_age_days=30.0,
        sweep_seconds=5.0,
        index_commit_seconds=20.0,
    )
    assert config.recording == RecordingConfig(
        segment_seconds=6, connect_timeout_seconds=8, read_timeout_seconds=4.5, max_backoff_seconds=60
    )
    gudang = config.camera("gudang-1")
    assert gudang.name == "Gudang logistik - pintu utama"
    assert gudang.url == MAIN_URL
    assert gudang.detect_url == SUB_URL
    assert gudang.enabled is True
    kasir = config.camera("kasir-2")
    assert kasir.name == "kasir-2"  # name defaults to the id
    assert kasir.detect_url is None
    assert [camera.id for camera in config.cameras] == ["gudang-1", "kasir-2"]
    assert config.enabled_cameras == (gudang,)
    with pytest.raises(KeyError):
        config.camera("nope")


def test_empty_file_gives_defaults_and_no_cameras(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "# a box being set up\n"))
    assert config.cameras == ()
    assert config.enabled_cameras == ()
    assert config.log_level == "info"
    storage = config.storage
    assert storage.data_dir == Path("/var/lib/edgenvr")
    assert storage.quota == Quota(percent=90.0)
    assert storage.min_free_bytes == 10**9
    assert storage.max_age_days is None
    assert storage.sweep_seconds == 10
    assert storage.index_commit_seconds == 600
    assert config.recording == RecordingConfig()
    assert config.recording.segment_seconds == 10
    assert config.recording.connect_timeout_seconds == 10
    assert config.recording.read_timeout_seconds == 5
    assert config.recording.max_backoff_seconds == 2


def test_absolute_quota_and_case_insensitive_log_level(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[storage]\nquota = "400GB"\nmin_free = 0\n[logging]\nlevel = "WARNING"\n'))
    assert config.storage.quota == Quota(bytes=400 * 10**9)
    assert config.storage.min_free_bytes == 0
    assert config.log_level == "warning"


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(config_dir, '[storage]\ndata_dir = "recordings"\n')

    assert load_config(path).storage.data_dir == config_dir / "recordings"
    # parse_config has no file, so the current directory is the base.
    assert parse_config(path.read_text()).storage.data_dir == elsewhere / "recordings"


def test_byte_order_mark_from_windows_editors_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CAMERA.encode())
    assert load_config(path).camera("cam-1").url == "rtsp://192.0.2.10/stream"


# --- rejected configs: each message names the key -----------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert_one_problem(caught.value.problems, str(missing), "cannot read")


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nquota = "85%"\nmin_free = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert_one_problem(caught.value.problems, str(path), "invalid TOML", "line 3")


@pytest.mark.parametrize(
    ("text", "key_path", "hint"),
    [
        ('frobnicate = 1\n', "frobnicate", ""),
        ('[camera]\nid = "a"\n', "camera", 'did you mean "cameras"'),
        ('[storage]\nfrobnicate = 1\n', "storage.frobnicate", ""),
        ('[storage]\nqouta = "85%"\n', "storage.qouta", 'did you mean "quota"'),
        ('[recording]\nsegment_secs = 5\n', "recording.segment_secs", 'did you mean "segment_seconds"'),
        ('[logging]\nlevl = "info"\n', "logging.levl", 'did you mean "level"'),
        (CAMERA + 'enable = false\n', "cameras[0].enable", 'did you mean "enabled"'),
    ],
)
def test_unknown_keys_are_rejected_at_every_level(tmp_path: Path, text: str, key_path: str, hint: str) -> None:
    assert_one_problem(problems_of(tmp_path, text), key_path, "unknown key", hint)


def test_duplicate_camera_id(tmp_path: Path) -> None:
    text = CAMERA + CAMERA.replace("192.0.2.10", "192.0.2.11")
    assert_one_problem(
        problems_of(tmp_path, text),
        "cameras[1].id",
        'duplicate camera id "cam-1" (also cameras[0].id)',
    )


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "..", "Gudang-1", "cam 1", "-cam", "", "a" * 33, "cam\n"])
def test_invalid_camera_ids(tmp_path: Path, bad_id: str) -> None:
    text = CAMERA.replace('id = "cam-1"', f"id = {bad_id!r}".replace("'", '"').replace("\n", "\\n"))
    assert_one_problem(problems_of(tmp_path, text), "cameras[0].id", "is not a valid id", "a-z, 0-9")


def test_longest_valid_camera_id_is_accepted(tmp_path: Path) -> None:
    camera_id = "a" * 32
    config = load_config(write(tmp_path, CAMERA.replace("cam-1", camera_id)))
    assert config.camera(camera_id).id == camera_id


@pytest.mark.parametrize(
    ("quota", "fragment"),
    [
        ('"120%"', "120% is over 100%"),
        ('"0%"', "0% must be more than 0%"),
        ('"-5%"', "must be more than 0%"),
        ('"abc"', '"abc" is not a percentage like "85%" or a size like "400GB"'),
        ('"400XB"', 'unknown unit "XB"'),
        ('"0"', "more than 0 bytes"),
        ("0.85", "expected a percentage"),
        ('"85"', 'write "85%" for a percentage'),  # 85 bytes would delete everything
        ("85", 'write "85%" for a percentage'),
    ],
)
def test_bad_quota(tmp_path: Path, quota: str, fragment: str) -> None:
    assert_one_problem(problems_of(tmp_path, f"[storage]\nquota = {quota}\n"), "storage.quota", fragment)


def test_full_quota_and_explicit_small_sizes_are_allowed(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[storage]\nquota = "100%"\n')).storage.quota == Quota(percent=100.0)
    assert load_config(write(tmp_path, '[storage]\nquota = "85B"\n')).storage.quota == Quota(bytes=85)
    assert load_config(write(tmp_path, "[storage]\nquota = 5000000\n")).storage.quota == Quota(bytes=5 * 10**6)


@pytest.mark.parametrize("min_free", ['"-1GB"', "-1"])
def test_negative_min_free(tmp_path: Path, min_free: str) -> None:
    problems = problems_of(tmp_path, f"[storage]\nmin_free = {min_free}\n")
    assert_one_problem(problems, "storage.min_free", "negative")


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        ('[recording]\nsegment_seconds = "ten"\n', "recording.segment_seconds", 'expected a number, got string "ten"'),
        ("[recording]\nsegment_seconds = true\n", "recording.segment_seconds", "expected a number, got boolean"),
        ("[recording]\nsegment_seconds = 0\n", "recording.segment_seconds", "must be more than 0"),
        ("[recording]\nsegment_seconds = 601\n", "recording.segment_seconds", "at most 600"),
        ("[recording]\nread_timeout_seconds = nan\n", "recording.read_timeout_seconds", "finite"),
        ("[storage]\nmax_age_days = 0\n", "storage.max_age_days", "must be more than 0"),
        ("[storage]\ndata_dir = 5\n", "storage.data_dir", "expected a string"),
        ('[logging]\nlevel = "verbose"\n', "logging.level", "debug, info, warning, error"),
        ('storage = "big"\n', "storage", "expected a table"),
        ('[cameras]\nid = "a"\n', "cameras", "[[cameras]]"),
        (CAMERA + 'enabled = "yes"\n', "cameras[0].enabled", 'expected true or false, got string "yes"'),
        ('[[cameras]]\nid = "cam-1"\n', "cameras[0].url", "required"),
        ('[[cameras]]\nurl = "rtsp://192.0.2.10/"\n', "cameras[0].id", "required"),
        ('[[cameras]]\nid = "cam-1"\nurl = "http://192.0.2.10/stream"\n', "cameras[0].url", "rtsp:// or rtsps://"),
        ('[[cameras]]\nid = "cam-1"\nurl = "file:///tmp/x.mp4"\n', "cameras[0].url", "rtsp:// or rtsps://"),
        ('[[cameras]]\nid = "cam-1"\nurl = "rtsp:///stream"\n', "cameras[0].url", "no host"),
        ('[[cameras]]\nid = "cam-1"\nurl = "rtsp://192.0.2.10:99999/"\n', "cameras[0].url", "invalid port"),
        (CAMERA + 'detect_url = "http://192.0.2.10/sub"\n', "cameras[0].detect_url", "rtsp:// or rtsps://"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key_path: str, fragment: str) -> None:
    assert_one_problem(problems_of(tmp_path, text), key_path, fragment)


def test_all_problems_in_one_file_are_reported(tmp_path: Path) -> None:
    text = f"""
[storage]
quota = "120%"
frobnicate = true

[recording]
segment_seconds = "ten"

[[cameras]]
id = "Gudang/1"
url = "{MAIN_URL}"
enabled = "yes"

[[cameras]]
id = "ok-cam"
url = "http://admin:{PASSWORD}@192.0.2.12/"
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    error = caught.value
    keys = [problem.split(": ", 1)[0] for problem in error.problems]
    assert keys == [
        "storage.frobnicate",
        "storage.quota",
        "recording.segment_seconds",
        "cameras[0].id",
        "cameras[0].enabled",
        "cameras[1].url",
    ]
    assert str(error) == "\n".join(error.problems)
    assert PASSWORD not in str(error)
    assert "http://admin:***@192.0.2.12/" in str(error)


# --- sizes and quotas ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400GB", 400 * 10**9),
        ("2 GB", 2 * 10**9),
        ("2gb", 2 * 10**9),
        ("2G", 2 * 10**9),
        ("2GiB", 2 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5TB", 1_500_000_000_000),
        ("1.1TB", 1_100_000_000_000),  # exact, no float rounding
        ("10kB", 10_000),
        ("4KiB", 4096),
        ("1000", 1000),
        ("1000B", 1000),
        (1000, 1000),
        (0, 0),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "abc", "1.2.3GB", "5 PB", "2 G B", "-1GB", "1e9"])
def test_parse_size_rejects_nonsense_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="size|unit|negative"):
        parse_size(text)


def test_parse_size_rejects_negative_int_and_bool() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)
    with pytest.raises(TypeError):
        parse_size(True)  # type: ignore[arg-type]


def test_quota_limit_bytes() -> None:
    assert Quota(percent=85.0).limit_bytes(1000 * 10**9) == 850 * 10**9
    assert Quota(percent=100.0).limit_bytes(12345) == 12345
    assert Quota(percent=50.0).limit_bytes(3) == 1  # rounded down, never over quota
    assert Quota(bytes=400 * 10**9).limit_bytes(2000 * 10**9) == 400 * 10**9
    with pytest.raises(ValueError):
        Quota()
    with pytest.raises(ValueError):
        Quota(percent=50.0, bytes=10)


# --- credentials -----------------------------------------------------------------


def test_passwords_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_CONFIG))
    camera = config.camera("gudang-1")
    for text in (repr(config), str(config), repr(camera), str(camera)):
        assert PASSWORD not in text
        # Still useful for debugging: user and host stay visible.
        assert "rtsp://admin:***@192.0.2.10:554/Streaming/Channels/101" in text
        assert "rtsp://admin:***@192.0.2.10:554/Streaming/Channels/102" in text


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{PASSWORD}@192.0.2.10/x",  # wrong scheme
        f"admin:{PASSWORD}@192.0.2.10/x",  # scheme forgotten
        f"rtsp://admin:{PASSWORD}@192.0.2.10:99999/x",  # bad port
        f"rtsp://admin:{PASSWORD}/x@192.0.2.10/x",  # unencoded "/" in the password
        f"rtsp://admin:{PASSWORD}#x@192.0.2.10/x",  # unencoded "#" in the password
        f"rtsp://admin:{PASSWORD} @192.0.2.10/x",  # space
    ],
)
def test_passwords_never_appear_in_url_errors(tmp_path: Path, url: str) -> None:
    problems = problems_of(tmp_path, f'[[cameras]]\nid = "cam-1"\nurl = "{url}"\n')
    assert len(problems) == 1 and problems[0].startswith("cameras[0].url: "), problems
    assert PASSWORD not in problems[0]


def test_password_pasted_under_a_wrong_key_does_not_leak(tmp_path: Path) -> None:
    text = f'[[cameras]]\nid = "cam-1"\nurl = "rtsp://192.0.2.10/"\nenabled = "{MAIN_URL}"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert PASSWORD not in str(caught.value)
    assert caught.value.problems[0].startswith("cameras[0].enabled: ")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:pass@host/Streaming/101", "rtsp://user:***@host/Streaming/101"),
        ("rtsps://user:p@ss@host:322/x", "rtsps://user:***@host:322/x"),  # "@" in the password
        ("rtsp://user:p%40ss@host", "rtsp://user:***@host"),
        ("http://a:b@example.com/?q=1", "http://a:***@example.com/?q=1"),
        ("rtsp://host:554/Streaming/101", "rtsp://host:554/Streaming/101"),  # no credentials
        ("rtsp://user@host/x", "rtsp://user@host/x"),  # user name is not a secret
        ("rtsp://host/path@1", "rtsp://host/path@1"),  # "@" in the path is not userinfo
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_on_an_ffmpeg_message() -> None:
    message = (
        f"[rtsp @ 0x55d0c8a2c1c0] method DESCRIBE failed: 401 Unauthorized\n"
        f"{MAIN_URL}: Server returned 401 Unauthorized (authorization failed)\n"
        f"retrying '{SUB_URL}' and rtsp://cam.local/live"
    )
    redacted = redact_text(message)
    assert PASSWORD not in redacted
    assert "rtsp://admin:***@192.0.2.10:554/Streaming/Channels/101: Server returned 401" in redacted
    assert "'rtsp://admin:***@192.0.2.10:554/Streaming/Channels/102'" in redacted
    assert "[rtsp @ 0x55d0c8a2c1c0] method DESCRIBE failed" in redacted
    assert "rtsp://cam.local/live" in redacted
    assert redact_text(redacted) == redacted


# --- writing configs ---------------------------------------------------------------


def test_config_to_toml_round_trips(tmp_path: Path) -> None:
    original = load_config(write(tmp_path, FULL_CONFIG))
    written = write(tmp_path, config_to_toml(original), "written.toml")
    reloaded = load_config(written)
    assert reloaded == Config(
        storage=original.storage,
        recording=original.recording,
        cameras=original.cameras,
        log_level=original.log_level,
        source=str(written),
    )


def test_config_to_toml_round_trips_awkward_values(tmp_path: Path) -> None:
    awkward_name = 'Pintu "utama" \\ gudang\ttab \x7f del, ünïcödé 🎥'
    original = Config(
        storage=StorageConfig(
            data_dir=tmp_path / "data dir",
            quota=Quota(bytes=2 * 2**30),
            min_free_bytes=123_456_789,
            max_age_days=0.5,
            sweep_seconds=2.5,
            index_commit_seconds=0,
        ),
        recording=RecordingConfig(segment_seconds=0.25),
        cameras=(
            CameraConfig(id="cam-1", name=awkward_name, url="rtsp://u:p%22w@192.0.2.10/x?a=1&b=2", enabled=False),
            CameraConfig(id="cam-2", url="rtsps://192.0.2.11/live", detect_url="rtsps://192.0.2.11/sub"),
        ),
        log_level="error",
    )
    text = config_to_toml(original)
    assert 'quota = "2GiB"' in text
    assert parse_config(text) == original
    assert parse_config(text).camera("cam-1").name == awkward_name


def test_config_to_toml_keeps_fractional_percent_and_no_age_limit() -> None:
    original = Config(storage=StorageConfig(data_dir=Path("/srv/nvr"), quota=Quota(percent=0.00001)))
    text = config_to_toml(original)
    assert "max_age_days" not in text
    assert parse_config(text) == original


def test_config_to_toml_round_trips_a_tiny_absolute_quota() -> None:
    original = Config(storage=StorageConfig(data_dir=Path("/srv/nvr"), quota=Quota(bytes=85), min_free_bytes=0))
    assert parse_config(config_to_toml(original)) == original


@pytest.mark.parametrize("value, fragment", [("0", "from 1 to 64"), ("2.5", "whole number"), ('"4"', "whole number")])
def test_cameras_per_process_must_be_a_small_whole_number(tmp_path: Path, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, f"[recording]\ncameras_per_process = {value}\n"))
    assert "recording.cameras_per_process" in str(error.value) and fragment in str(error.value)


# --- motion, zones and retention tiers ----------------------------------------------


MOTION_CONFIG = f"""
[storage]
data_dir = "/var/lib/edgenvr"
max_age_days = 14
event_days = 45
retention_max_days = 60
event_pre_seconds = 5

[motion]
fps = 4
sensitivity = 0.7
cameras_per_process = 4

[[cameras]]
id = "gudang-1"
url = "{MAIN_URL}"
max_age_days = 90
retention_max_days = 120
[cameras.motion]
min_area = 0.01
ignore = [[[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 0.1]]]
[[cameras.motion.zones]]
name = "pintu"
polygon = [[0.1, 0.2], [0.5, 0.2], [0.5, 0.9], [0.1, 0.9]]

[[cameras]]
id = "kasir-2"
url = "rtsp://192.0.2.11/live"
[cameras.motion]
enabled = false
"""


def test_motion_defaults_apply_to_every_camera_and_cameras_override_them() -> None:
    config = parse_config(MOTION_CONFIG)
    gudang, kasir = config.camera("gudang-1").motion, config.camera("kasir-2").motion
    assert (gudang.fps, gudang.sensitivity, gudang.min_area) == (4, 0.7, 0.01)
    assert (kasir.fps, kasir.sensitivity, kasir.enabled) == (4, 0.7, False)
    assert gudang.zones[0].name == "pintu" and gudang.zones[0].polygon[1] == (0.5, 0.2)
    assert gudang.ignore == (((0.0, 0.0), (1.0, 0.0), (1.0, 0.1), (0.0, 0.1)),)
    assert config.motion_cameras_per_process == 4


def test_retention_days_per_camera_fall_back_to_storage() -> None:
    config = parse_config(MOTION_CONFIG)
    gudang, kasir = config.retention_days("gudang-1"), config.retention_days("kasir-2")
    assert (gudang.max_age_days, gudang.event_days, gudang.retention_max_days) == (90, 45, 120)
    assert (kasir.max_age_days, kasir.event_days, kasir.retention_max_days) == (14, 45, 60)
    assert config.retention_days("removed-camera") == kasir
    assert config.storage.event_pre_seconds == 5 and config.storage.event_post_seconds == 20


@pytest.mark.parametrize("motion_toml, key", [
    ('[cameras.motion]\nfps = 0', "cameras[0].motion.fps"),
    ('[cameras.motion]\nsensitivity = 1.5', "cameras[0].motion.sensitivity"),
    ('[cameras.motion]\nminarea = 0.1', "cameras[0].motion.minarea"),
    ('[cameras.motion]\nignore = [[[0, 0], [1, 0]]]', "cameras[0].motion.ignore[0]"),
    ('[cameras.motion]\nignore = [[[0, 0], [1, 0], [1, 2]]]', "cameras[0].motion.ignore[0]"),
    ('[[cameras.motion.zones]]\npolygon = [[0, 0], [1, 0], [1, 1]]', "cameras[0].motion.zones[0].name"),
    ('[[cameras.motion.zones]]\nname = "a"\npolygon = [[0, 0], [1, 0], ["x", 1]]', "cameras[0].motion.zones[0].polygon"),
    ('[[cameras.motion.zones]]\nname = "a"\npolygon = [[0, 0], [1, 0], [1, 1]]\n'
     '[[cameras.motion.zones]]\nname = "a"\npolygon = [[0, 0], [1, 0], [1, 1]]', "cameras[0].motion.zones[1].name"),
    ('[cameras.motion]\ntamper_seconds = 1', "cameras[0].motion.tamper_seconds"),
    ('event_days = 0', "cameras[0].event_days"),
])
def test_bad_motion_and_retention_settings_are_rejected_naming_the_key(motion_toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(CAMERA + motion_toml + "\n")
    assert any(problem.startswith(key + ":") for problem in error.value.problems), error.value.problems


def test_config_with_zones_round_trips_through_toml() -> None:
    original = parse_config(MOTION_CONFIG)
    assert parse_config(config_to_toml(original)) == original


def test_the_config_shown_in_the_readme_is_valid() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("```toml", 1)[1].split("```", 1)[0]
    config = parse_config(block)
    assert config.camera("gudang-1").motion.zones[0].name == "pintu"


# --- the key descriptions: one source for defaults, checks and the documentation ----------


ROOT = Path(__file__).parent.parent


def test_the_documented_example_config_parses_to_the_defaults() -> None:
    assert parse_config(config_example()) == Config(storage=StorageConfig(data_dir=Path("/var/lib/edgenvr")))


def test_docs_config_md_is_what_the_key_descriptions_generate() -> None:
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == config_reference(), "out of date: python -m edgenvr.config.writing > docs/config.md"


def _key_paths(table: dict[str, Any], section: str = "") -> Iterator[str]:
    for name, value in table.items():
        path = f"{section}.{name}" if section else name
        if isinstance(value, dict):
            yield from _key_paths(value, path)
        elif isinstance(value, list) and value and all(isinstance(entry, dict) for entry in value):
            for entry in value:
                yield from _key_paths(entry, path)
        else:
            yield path


def test_the_readme_example_uses_described_keys_and_leaves_defaults_to_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml", 1)[1].split("```", 1)[0]
    assert set(_key_paths(tomllib.loads(block))) <= {key.path for key in CONFIG_KEYS}
    # Defaults restated in comments ("# sweep_seconds = 10") go stale; docs/config.md lists them all.
    assert re.search(r"#.*\b[a-z_]+ = ", block) is None, block
    assert "docs/config.md" in readme


def _with_setting(key: ConfigKey, value: str) -> str:
    if key.section == "cameras":
        return CAMERA + f"{key.name} = {value}\n"
    if key.section == "cameras.motion":
        return CAMERA + f"[cameras.motion]\n{key.name} = {value}\n"
    if key.section == "sync":   # a [sync] table must name its hub
        return f'[sync]\nhub_url = "{HUB_URL}"\n{key.name} = {value}\n'
    return f"[{key.section}]\n{key.name} = {value}\n"


def _problems(text: str) -> list[str]:
    try:
        parse_config(text)
    except ConfigError as error:
        return error.problems
    return []


@pytest.mark.parametrize("key", [key for key in CONFIG_KEYS if key.kind in (Kind.NUMBER, Kind.WHOLE_NUMBER)],
                         ids=lambda key: key.path)
def test_every_number_is_checked_against_its_described_bounds(key: ConfigKey) -> None:
    where = (key.path.replace("cameras", "cameras[0]", 1) if key.section.startswith("cameras") else key.path) + ": "
    step = 1 if key.kind is Kind.WHOLE_NUMBER else 0.5

    def rejected(value: float | str) -> bool:
        problems = _problems(_with_setting(key, str(value)))
        return len(problems) == 1 and problems[0].startswith(where)

    assert rejected('"ten"')
    if key.greater_than is not None:
        assert rejected(key.greater_than) and not _problems(_with_setting(key, str(key.greater_than + step)))
    if key.at_least is not None:
        assert rejected(key.at_least - step) and not _problems(_with_setting(key, str(key.at_least)))
    if key.at_most is not None:
        assert rejected(key.at_most + step) and not _problems(_with_setting(key, str(key.at_most)))


# --- bounds that keep every value computable, and what only the machine can tell -------------------------


@pytest.mark.parametrize(("text", "key_path", "fragment"), [
    ("[storage]\nmax_age_days = 1e12\n", "storage.max_age_days", "at most 36500, got 1000000000000"),
    (CAMERA + "event_days = 1e300\n", "cameras[0].event_days", "at most 36500"),
    ('[storage]\nmin_free = "10001TB"\n', "storage.min_free", 'at most 10000TB, got "10001TB"'),
    (f"[storage]\nmin_free = {2**63}\n", "storage.min_free", "at most 10000TB"),
    ('[storage]\nquota = "99999999999999999999GB"\n', "storage.quota", "at most 10000TB"),
    ("[storage]\nindex_commit_seconds = 86400\n", "storage.index_commit_seconds", "at most 3600"),
])
def test_values_too_large_to_compute_with_are_refused_naming_the_key(text: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert_one_problem(refused.value.problems, key_path, fragment)


def _storage(tmp_path: Path, data_dir: Path, min_free: str = '"0"') -> Config:
    return load_config(write(tmp_path, f'[storage]\ndata_dir = "{data_dir}"\nmin_free = {min_free}\n'))


def _machine_problems(config: Config) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        check_data_dir(config)
    return refused.value.problems


def test_a_data_dir_that_can_be_created_passes_and_nothing_is_created(tmp_path: Path) -> None:
    check_data_dir(_storage(tmp_path, tmp_path / "new" / "data"))
    check_data_dir(_storage(tmp_path, tmp_path))
    assert not (tmp_path / "new").exists()


def test_a_data_dir_that_is_or_lies_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    assert_one_problem(_machine_problems(_storage(tmp_path, tmp_path / "data")), "storage.data_dir",
                       "is not a directory")
    assert_one_problem(_machine_problems(_storage(tmp_path, tmp_path / "data" / "segments")), "storage.data_dir",
                       "cannot be created", "is not a directory")


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this user cannot write: read-only permissions, or for root (whom they do not stop) a
    read-only filesystem."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root is kept from writing only by a read-only mount, which failed: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_data_dir_this_user_cannot_write_is_refused(tmp_path: Path, unwritable_dir: Path) -> None:
    assert_one_problem(_machine_problems(_storage(tmp_path, unwritable_dir)), "storage.data_dir", "is not writable")
    assert_one_problem(_machine_problems(_storage(tmp_path, unwritable_dir / "data")), "storage.data_dir",
                       "cannot be created", "is not writable")


def test_min_free_must_leave_room_on_the_data_filesystem(tmp_path: Path) -> None:
    disk = shutil.disk_usage(tmp_path).total
    assert_one_problem(_machine_problems(_storage(tmp_path, tmp_path / "data", str(disk))), "storage.min_free",
                       "not less than the whole data filesystem")
    check_data_dir(_storage(tmp_path, tmp_path / "data", str(disk - 1)))


# --- [sync]: store-and-forward to the city hub ----------------------------------------------------------


HUB_URL = "https://hub.example.id:8443"
TOKEN = "enrol_Q7vX2-kLmN9pR4sT6uW8yZ0aBcDeFgHi"
FINGERPRINT = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
FINGERPRINT_SHOWN = FINGERPRINT.upper()   # as a browser and `edgenvr identity` show it

SYNC_CONFIG = f"""
[sync]
hub_url = "{HUB_URL}"
enrolment_token = "{TOKEN}"
hub_fingerprint = "{FINGERPRINT}"
upload_kbps = 2000
continuous_windows = ["22:00-06:00", "12:30-13:15"]
"""


def test_a_full_sync_table_loads_with_every_value() -> None:
    sync = parse_config(SYNC_CONFIG).sync
    assert sync == SyncConfig(hub_url=HUB_URL, enrolment_token=TOKEN, hub_fingerprint=FINGERPRINT_SHOWN,
                              upload_kbps=2000,
                              continuous_windows=(TimeWindow(22 * 60, 6 * 60), TimeWindow(12 * 60 + 30, 13 * 60 + 15)),
                              enabled=True)
    assert [str(window) for window in sync.continuous_windows] == ["22:00-06:00", "12:30-13:15"]


def test_a_config_without_sync_does_not_sync() -> None:
    config = parse_config(CAMERA)
    assert config.sync.enabled is False
    assert config.sync == SyncConfig()
    assert config.sync.allows_continuous(0) is False


def test_a_sync_table_with_only_the_hub_gets_the_defaults() -> None:
    sync = parse_config(f'[sync]\nhub_url = "{HUB_URL}"\n').sync
    assert sync == SyncConfig(hub_url=HUB_URL, enabled=True)
    assert (sync.enrolment_token, sync.hub_fingerprint, sync.upload_kbps, sync.continuous_windows) == (
        None, None, 0, ())
    # No windows: continuous video is never sent.
    assert not any(sync.allows_continuous(minute) for minute in range(24 * 60))


def test_a_plain_http_hub_is_accepted_and_its_doc_says_when_to_use_one() -> None:
    assert parse_config('[sync]\nhub_url = "http://10.0.0.2:8080/hub"\n').sync.hub_url == "http://10.0.0.2:8080/hub"
    hub_url = next(key for key in section_keys("sync") if key.name == "hub_url")
    assert "http://" in hub_url.doc and "proxy" in hub_url.doc and "TLS" in hub_url.doc


@pytest.mark.parametrize("written", [
    FINGERPRINT, FINGERPRINT.upper(), FINGERPRINT.replace(":", ""), FINGERPRINT.replace(":", "").upper(),
    f"  {FINGERPRINT}  ",
])
def test_the_hub_fingerprint_is_kept_in_one_form(written: str) -> None:
    text = f'[sync]\nhub_url = "{HUB_URL}"\nhub_fingerprint = "{written}"\n'
    assert parse_config(text).sync.hub_fingerprint == FINGERPRINT_SHOWN


def test_time_windows_wrap_past_midnight() -> None:
    night = TimeWindow(22 * 60, 6 * 60)
    assert [night.allows(minute) for minute in (21 * 60 + 59, 22 * 60, 23 * 60 + 59, 0, 5 * 60 + 59, 6 * 60)] == [
        False, True, True, True, True, False]   # from the start up to, not including, the end
    noon = TimeWindow(12 * 60, 13 * 60)
    assert [noon.allows(minute) for minute in (12 * 60 - 1, 12 * 60, 13 * 60 - 1, 13 * 60)] == [
        False, True, True, False]
    until_midnight = TimeWindow(23 * 60, 0)
    assert until_midnight.allows(23 * 60 + 59) and not until_midnight.allows(0)
    with pytest.raises(ValueError):
        night.allows(24 * 60)

    sync = parse_config(f'[sync]\nhub_url = "{HUB_URL}"\ncontinuous_windows = ["23:30-00:30", "3:00-04:00"]\n').sync
    allowed = [minute for minute in range(24 * 60) if sync.allows_continuous(minute)]
    assert allowed == [*range(0, 30), *range(180, 240), *range(23 * 60 + 30, 24 * 60)]


@pytest.mark.parametrize(("setting", "key_path", "fragment"), [
    # The hub's URL: https:// (or http://), a host, no credentials, fragment or query.
    ('hub_url = "ftp://hub.example.id"', "sync.hub_url", "is not an https:// URL"),
    ('hub_url = "hub.example.id:8443"', "sync.hub_url", "is not an https:// URL"),
    ('hub_url = "rtsp://hub.example.id"', "sync.hub_url", "is not an https:// URL"),
    ('hub_url = "https://box:pw@hub.example.id"', "sync.hub_url", "user name or password"),
    ('hub_url = "https://hub.example.id/#top"', "sync.hub_url", "fragment"),
    ('hub_url = "https://hub.example.id/?x=1"', "sync.hub_url", "query"),
    ('hub_url = "https:///api"', "sync.hub_url", "no host"),
    ('hub_url = "https://hub.example.id:99999"', "sync.hub_url", "invalid port"),
    ('hub_url = "https://hub example.id"', "sync.hub_url", "spaces"),
    ('hub_url = ""', "sync.hub_url", "must not be empty"),
    ("hub_url = 8443", "sync.hub_url", "expected a string, got integer 8443"),
    # The certificate's fingerprint: 64 hex digits.
    ('hub_fingerprint = "AB:CD:EF"', "sync.hub_fingerprint", "64 hex digits"),
    (f'hub_fingerprint = "{"ab" * 20}"', "sync.hub_fingerprint", "SHA-1"),
    (f'hub_fingerprint = "{"gh" * 32}"', "sync.hub_fingerprint", "64 hex digits"),
    (f'hub_fingerprint = "{"ab" * 33}"', "sync.hub_fingerprint", "this has 66"),
    ("hub_fingerprint = true", "sync.hub_fingerprint", "expected a string, got boolean true"),
    # The upload cap: a whole number of kbit/s, 0 to 10 Gbit/s.
    ("upload_kbps = -1", "sync.upload_kbps", "must be from 0 to 10000000, got -1"),
    ("upload_kbps = 10000001", "sync.upload_kbps", "must be from 0 to 10000000"),
    ("upload_kbps = 1.5", "sync.upload_kbps", "expected a whole number, got float 1.5"),
    ('upload_kbps = "2000"', "sync.upload_kbps", 'expected a whole number, got string "2000"'),
    # Windows: "HH:MM-HH:MM", hours 0-23, minutes 0-59, start != end.
    ('continuous_windows = "22:00-06:00"', "sync.continuous_windows", 'expected an array of windows'),
    ('continuous_windows = ["22:00-06:00", "24:00-06:00"]', "sync.continuous_windows[1]", "hour 24 is not 0-23"),
    ('continuous_windows = ["22:00-06:60"]', "sync.continuous_windows[0]", "minute 60 is not 0-59"),
    ('continuous_windows = ["06:00-06:00"]', "sync.continuous_windows[0]", "starts and ends at the same time"),
    ('continuous_windows = ["10pm-6am"]', "sync.continuous_windows[0]", '"10pm-6am" is not a window "HH:MM-HH:MM"'),
    ('continuous_windows = ["22:00"]', "sync.continuous_windows[0]", "is not a window"),
    ("continuous_windows = [2200]", "sync.continuous_windows[0]", "got integer 2200"),
    # The token: a string, one word.
    ('enrolment_token = ""', "sync.enrolment_token", "must not be empty"),
    ("enrolment_token = 12345", "sync.enrolment_token", "expected a string, got integer"),
    ('enrolment_token = "enrol_abc def"', "sync.enrolment_token", "spaces"),
    # A misspelt key.
    ('enrollment_token = "enrol_abc"', "sync.enrollment_token", 'did you mean "enrolment_token"'),
])
def test_bad_sync_values_name_the_key(setting: str, key_path: str, fragment: str) -> None:
    hub = "" if setting.startswith("hub_url") else f'hub_url = "{HUB_URL}"\n'
    with pytest.raises(ConfigError) as refused:
        parse_config(f"[sync]\n{hub}{setting}\n")
    assert_one_problem(refused.value.problems, key_path, fragment)


@pytest.mark.parametrize(("text", "fragment"), [
    ("[sync]\n", "required"),
    ('[sync]\nupload_kbps = 100\n', "required"),
])
def test_a_sync_table_must_name_its_hub(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert_one_problem(refused.value.problems, "sync.hub_url", fragment, "https://")


def test_sync_that_is_not_a_table_is_one_problem() -> None:
    for text in ("sync = true\n", f'[[sync]]\nhub_url = "{HUB_URL}"\n'):
        with pytest.raises(ConfigError) as refused:
            parse_config(text)
        assert_one_problem(refused.value.problems, "sync", "expected a table ([sync])")


@pytest.mark.parametrize("settings", [
    f'enrolment_token = "{TOKEN} "',                                    # pasted with a space
    f'enrolment_token = "{TOKEN}\\n"',                                  # and with a line break
    f'enrolment_token = "{TOKEN}"\nupload_kbps = "{TOKEN}"',            # and under another key
    f'enrolment_token = "{TOKEN}"\ncontinuous_windows = ["{TOKEN}"]',
    f'enrolment_token = "{TOKEN}"\nhub_fingerprint = "{TOKEN}"',
    f'enrolment_token = "{TOKEN}"\n[storage]\nquota = "{TOKEN}"',
    f'enrolment_token = "{TOKEN}"\n[box]\nid = "{TOKEN}"',
])
def test_the_enrolment_token_is_in_no_error_message(settings: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f'[sync]\nhub_url = "{HUB_URL}"\n{settings}\n')
    assert refused.value.problems
    assert TOKEN not in str(refused.value) and TOKEN not in repr(refused.value)
    assert all(TOKEN not in problem for problem in refused.value.problems)


def test_the_enrolment_token_under_the_hub_url_is_not_shown_either() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f'[sync]\nhub_url = "{TOKEN}"\nenrolment_token = "{TOKEN}"\n')
    assert_one_problem(refused.value.problems, "sync.hub_url", "is not an https:// URL")
    assert TOKEN not in str(refused.value)


def test_the_enrolment_token_is_not_in_the_repr_of_the_config() -> None:
    config = parse_config(SYNC_CONFIG)
    assert config.sync.enrolment_token == TOKEN   # the sync process needs it as written
    for text in (repr(config), str(config), repr(config.sync), str(config.sync), f"{config.sync}"):
        assert TOKEN not in text
        assert "enrolment_token='***'" in text and HUB_URL in text   # still says a token is set, and where to
    assert "enrolment_token=None" in repr(SyncConfig(hub_url=HUB_URL))


def test_check_config_never_shows_the_enrolment_token(tmp_path: Path) -> None:
    good = write(tmp_path, f'[storage]\ndata_dir = "{tmp_path}/data"\n{SYNC_CONFIG}', "good.toml")
    checked = edgenvr("check-config", str(good))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert TOKEN not in checked.stdout + checked.stderr

    bad = write(tmp_path, f'[storage]\ndata_dir = "{tmp_path}/data"\n{SYNC_CONFIG}upload_kbps_max = 1\n'
                          f'hub_fingerprint_sha = "{TOKEN}"\n[box]\nname = 5\nid = "{TOKEN}"\n', "bad.toml")
    checked = edgenvr("check-config", str(bad))
    assert checked.returncode == 1
    assert "sync.upload_kbps_max" in checked.stdout and "box.id" in checked.stdout
    assert TOKEN not in checked.stdout + checked.stderr


def test_config_with_sync_round_trips_through_toml() -> None:
    original = parse_config(SYNC_CONFIG + "\n" + CAMERA)
    text = config_to_toml(original)
    assert "[sync]" in text and 'continuous_windows = ["22:00-06:00", "12:30-13:15"]' in text
    assert parse_config(text) == original
    without = parse_config(CAMERA)
    assert "[sync]" not in config_to_toml(without) and parse_config(config_to_toml(without)) == without
