"""The edgenvr configuration file: loading, validation and the typed records.

This module owns the TOML config format. It turns a file (or a string) into
frozen dataclasses that the recorder, the index and the CLI read, and it owns
every rule about what a valid configuration is: unknown keys, wrong types,
out-of-range values, camera ids and camera URLs. Validation collects every
problem in one pass, each message starting with the key path it is about, so
``edgenvr check-config`` can show a user everything to fix at once.

Parsing is done by the standard library's ``tomllib``. Writing (for
``edgenvr demo``) is a small serializer for this module's fixed shape.

The record constructors do not validate (beyond ``Quota``'s own invariant):
code and tests build records directly, and ``parse_config`` is the one place
that decides what a config file may contain.

Camera URLs carry passwords. No message, ``repr()`` or ``str()`` produced here
contains one; see ``edgenvr.url_redaction``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from .url_redaction import redact_text, redact_url

__all__ = [
    "CameraConfig",
    "MotionConfig",
    "RetentionDays",
    "Zone",
    "Config",
    "ConfigError",
    "Quota",
    "RecordingConfig",
    "StorageConfig",
    "config_to_toml",
    "load_config",
    "parse_config",
    "parse_size",
]

DEFAULT_DATA_DIR = "/var/lib/edgenvr"
DEFAULT_QUOTA = "90%"
DEFAULT_MIN_FREE = "1GB"
MAX_SEGMENT_SECONDS = 600.0
LOG_LEVELS = ("debug", "info", "warning", "error")

# fullmatch, not match with "$": "$" also matches before a trailing newline,
# which would let "cam\n" through into paths and URLs.
_CAMERA_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_CAMERA_ID_RULE = 'use 1-32 characters a-z, 0-9 and "-", starting with a letter or digit'
_URL_SCHEMES = ("rtsp", "rtsps")

_TOP_KEYS = ("storage", "recording", "motion", "cameras", "logging")
_STORAGE_KEYS = (
    "data_dir",
    "quota",
    "min_free",
    "max_age_days",
    "event_days",
    "retention_max_days",
    "event_pre_seconds",
    "event_post_seconds",
    "sweep_seconds",
    "index_commit_seconds",
)
_RECORDING_KEYS = (
    "segment_seconds",
    "connect_timeout_seconds",
    "read_timeout_seconds",
    "max_backoff_seconds",
    "cameras_per_process",
)
_CAMERA_KEYS = ("id", "name", "url", "detect_url", "enabled", "max_age_days", "event_days",
                "retention_max_days", "motion")
# [motion] holds the defaults for every camera; [cameras.motion] overrides them and adds zones/ignore.
_MOTION_KEYS = ("enabled", "fps", "sensitivity", "min_area", "tamper", "tamper_seconds")
_MOTION_TOP_KEYS = _MOTION_KEYS + ("cameras_per_process",)
_CAMERA_MOTION_KEYS = _MOTION_KEYS + ("zones", "ignore")
_ZONE_KEYS = ("name", "polygon")
_LOGGING_KEYS = ("level",)

# Decimal units are powers of 1000 and binary units powers of 1024, matching
# what disk vendors (GB) and `df -h`-style tools (GiB) print. Lookup is on the
# lower-cased unit, so "gb", "GB" and "Gb" are all gigabytes.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
# Largest first, so config_to_toml writes "2GiB" rather than "2048MiB".
_SIZE_NAMES = (
    ("TiB", 1024**4),
    ("TB", 1000**4),
    ("GiB", 1024**3),
    ("GB", 1000**3),
    ("MiB", 1024**2),
    ("MB", 1000**2),
    ("KiB", 1024),
    ("kB", 1000),
)
_SIZE_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_PERCENT_TEXT = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*%\s*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason.

    ``str()`` gives the problems one per line, each starting with the key path
    (or the file name, for problems with the file itself).
    """

    def __init__(self, problems: Iterable[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        # Messages about URLs are built with redact_url already; redacting
        # again here means a value echoed from an unexpected place (a URL
        # pasted under the wrong key) cannot carry a password out either.
        self.problems: list[str] = [redact_text(problem) for problem in problems]
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class Quota:
    """How much of the data filesystem recordings may use.

    Exactly one of ``percent`` (of the filesystem size, 0 < percent <= 100) or
    ``bytes`` (an absolute size) is set.
    """

    percent: float | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.bytes is None):
            raise ValueError("Quota needs exactly one of percent or bytes")

    def limit_bytes(self, filesystem_bytes: int) -> int:
        """The quota in bytes for a filesystem of ``filesystem_bytes``.

        A percentage is rounded down so the limit is never above the quota.
        An absolute quota is returned as configured, even if it is larger
        than the filesystem: the ``min_free`` floor is what protects a disk
        that is smaller than the quota.
        """
        if filesystem_bytes < 0:
            raise ValueError(f"filesystem size must not be negative, got {filesystem_bytes}")
        if self.percent is not None:
            return int(filesystem_bytes * self.percent / 100)
        assert self.bytes is not None
        return self.bytes

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{_plain_number(self.percent)}%"
        assert self.bytes is not None
        return _format_size(self.bytes)


@dataclass(frozen=True)
class StorageConfig:
    """Where recordings live and how much space and time they may take."""

    data_dir: Path
    quota: Quota = field(default_factory=lambda: Quota(percent=90.0))
    min_free_bytes: int = 1000**3
    max_age_days: float | None = None   # continuous video older than this is deleted
    event_days: float = 30.0             # video around motion/tamper events is kept this long
    retention_max_days: float | None = None  # legal maximum: nothing but holds survives past it
    event_pre_seconds: float = 10.0      # video kept before an event starts ...
    event_post_seconds: float = 20.0     # ... and after it ends
    sweep_seconds: float = 10.0
    # How long a closed segment's row waits to be committed. Every commit costs tens of KB of device
    # writes (WAL, filesystem journal, checkpoint) however few rows it holds, so batching minutes of rows
    # is what keeps the index under ~300 KB per camera-hour on an SD card. Rows are not lost with a
    # batch: each segment file carries its row, adopted at start-up, and readers see uncommitted
    # segments from the files. Events and camera state changes are committed within a second regardless.
    index_commit_seconds: float = 600.0

    def __post_init__(self) -> None:
        # Accept a str so callers building records by hand need not wrap it.
        object.__setattr__(self, "data_dir", Path(self.data_dir))


@dataclass(frozen=True)
class RecordingConfig:
    """How camera streams are cut into segments and how connections retry."""

    segment_seconds: float = 10
    connect_timeout_seconds: float = 10
    read_timeout_seconds: float = 5
    # A refused connection costs nothing, so retry often: a camera back from a power cut records within seconds.
    max_backoff_seconds: float = 2
    # Cameras recorded by one process (one thread each). 1 isolates every camera in its own process;
    # more share one interpreter and libav: about 50 MB RSS per process vs a few MB per extra thread.
    cameras_per_process: int = 16


Point = tuple[float, float]
Polygon = tuple[Point, ...]   # normalised picture coordinates, 0..1 from the top left corner


@dataclass(frozen=True)
class Zone:
    """A named area of the picture; when a camera has zones, only motion inside them counts."""

    name: str
    polygon: Polygon


@dataclass(frozen=True)
class MotionConfig:
    """Motion and tamper detection of one camera."""

    enabled: bool = True
    fps: float = 5.0             # pictures analysed per second
    sensitivity: float = 0.5     # 0..1: higher counts fainter changes as motion
    min_area: float = 0.002      # smallest moving blob that counts, as a fraction of the picture
    zones: tuple[Zone, ...] = ()
    ignore: tuple[Polygon, ...] = ()  # never counted as motion (trees, a road, an on-screen clock)
    tamper: bool = True          # covered / defocused / moved camera detection
    tamper_seconds: float = 10.0  # how long a tamper condition must last before it is raised


@dataclass(frozen=True)
class RetentionDays:
    """A camera's retention, resolved from its own settings and [storage]; None = no age limit."""

    max_age_days: float | None
    event_days: float
    retention_max_days: float | None


@dataclass(frozen=True, repr=False)
class CameraConfig:
    """One camera. ``repr()``/``str()`` never show the password in its URLs.

    ``name`` defaults to ``id``. ``url`` has a default only so records can be
    built by keyword (``CameraConfig(id="a", url=...)``); a config file must
    always give one.
    """

    id: str
    name: str = ""
    url: str = ""
    detect_url: str | None = None
    enabled: bool = True
    # None: the [storage] setting applies
    max_age_days: float | None = None
    event_days: float | None = None
    retention_max_days: float | None = None
    motion: MotionConfig = field(default_factory=MotionConfig)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.id)

    def __repr__(self) -> str:
        detect = None if self.detect_url is None else redact_url(self.detect_url)
        return (
            f"CameraConfig(id={self.id!r}, name={self.name!r}, "
            f"url={redact_url(self.url)!r}, detect_url={detect!r}, "
            f"enabled={self.enabled!r})"
        )


@dataclass(frozen=True)
class Config:
    """A whole, validated edgenvr configuration."""

    storage: StorageConfig
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    cameras: tuple[CameraConfig, ...] = ()
    log_level: str = "info"
    source: str = "<string>"
    # Motion workers per process (one thread each), like recording.cameras_per_process.
    motion_cameras_per_process: int = 8

    def __post_init__(self) -> None:
        # A list would make the frozen record mutable and unhashable.
        object.__setattr__(self, "cameras", tuple(self.cameras))

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with id ``camera_id``; KeyError if there is none."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    @property
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        return tuple(camera for camera in self.cameras if camera.enabled)

    def retention_days(self, camera_id: str) -> RetentionDays:
        """The camera's retention; a camera no longer in the config gets the [storage] settings."""
        storage = self.storage
        try:
            camera = self.camera(camera_id)
        except KeyError:
            camera = CameraConfig(id=camera_id)
        return RetentionDays(
            max_age_days=camera.max_age_days if camera.max_age_days is not None else storage.max_age_days,
            event_days=camera.event_days if camera.event_days is not None else storage.event_days,
            retention_max_days=(camera.retention_max_days if camera.retention_max_days is not None
                                else storage.retention_max_days),
        )


_STORAGE_DEFAULTS = StorageConfig(data_dir=Path(DEFAULT_DATA_DIR))


def parse_size(text: str | int) -> int:
    """Parse a size such as "400GB", "2 GB", "512MiB", "1.5TB", "1000" or 1000.

    k/M/G/T (with or without a trailing B) are powers of 1000 and
    KiB/MiB/GiB/TiB powers of 1024; units are case-insensitive; a bare number
    is bytes. Fractional results are rounded down to whole bytes. Raises
    ValueError for text that is not a size or is negative, and TypeError for
    anything that is neither a str nor an int.
    """
    # bool is an int subclass, but `quota = true` is a mistake, not 1 byte.
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise TypeError(
            f'a size must be a string like "2GB" or an int, got {type(text).__name__}'
        )
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative: a size must be 0 or more")
        return text
    quoted = _quote(text)
    if text.strip().startswith("-"):
        raise ValueError(f"{quoted} is negative: a size must be 0 or more")
    match = _SIZE_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{quoted} is not a size: use a number of bytes or a number with a "
            'unit, e.g. "400GB", "2 GB", "512MiB" or "1.5TB"'
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(
            f'{quoted} has an unknown unit "{unit}": use B, kB, MB, GB, TB '
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    # Decimal, not float: "1.1TB" must be exactly 1_100_000_000_000 bytes.
    return int(Decimal(number) * multiplier)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate config TOML ``text``; raise ConfigError listing every problem.

    ``source`` names where the text came from, for messages and
    ``Config.source``. A relative ``storage.data_dir`` is taken relative to
    the current directory.
    """
    return _parse(text, source, Path.cwd())


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``.

    A relative ``storage.data_dir`` is taken relative to the file's directory,
    so a config keeps meaning the same thing whatever directory the service is
    started from. A missing or unreadable file is a ConfigError naming it.
    """
    config_path = Path(path)
    try:
        raw = config_path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([f"{config_path}: cannot read config file: {reason}"]) from None
    try:
        # utf-8-sig: editors on Windows like to prepend a byte-order mark,
        # which tomllib would reject as an invalid character.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [f"{config_path}: not UTF-8 text (invalid byte at offset {error.start})"]
        ) from None
    return _parse(text, str(config_path), config_path.absolute().parent)


def config_to_toml(config: Config) -> str:
    """Write ``config`` as a TOML document that parse_config reads back equal.

    ``source`` is not written: it describes where a config was read from.
    """
    storage = config.storage
    recording = config.recording
    lines = [
        "# edgenvr configuration",
        "",
        "[storage]",
        f"data_dir = {_toml_string(str(storage.data_dir))}",
        f"quota = {_toml_string(str(storage.quota))}",
        f"min_free = {_toml_string(_format_size(storage.min_free_bytes))}",
    ]
    if storage.max_age_days is not None:
        lines.append(f"max_age_days = {_toml_number(storage.max_age_days)}")
    lines.append(f"event_days = {_toml_number(storage.event_days)}")
    if storage.retention_max_days is not None:
        lines.append(f"retention_max_days = {_toml_number(storage.retention_max_days)}")
    lines += [
        f"event_pre_seconds = {_toml_number(storage.event_pre_seconds)}",
        f"event_post_seconds = {_toml_number(storage.event_post_seconds)}",
        f"sweep_seconds = {_toml_number(storage.sweep_seconds)}",
        f"index_commit_seconds = {_toml_number(storage.index_commit_seconds)}",
        "",
        "[recording]",
        f"segment_seconds = {_toml_number(recording.segment_seconds)}",
        f"connect_timeout_seconds = {_toml_number(recording.connect_timeout_seconds)}",
        f"read_timeout_seconds = {_toml_number(recording.read_timeout_seconds)}",
        f"max_backoff_seconds = {_toml_number(recording.max_backoff_seconds)}",
        f"cameras_per_process = {recording.cameras_per_process}",
        "",
        "[motion]",
        f"cameras_per_process = {config.motion_cameras_per_process}",
        "",
        "[logging]",
        f"level = {_toml_string(config.log_level)}",
    ]
    for camera in config.cameras:
        lines += [
            "",
            "[[cameras]]",
            f"id = {_toml_string(camera.id)}",
            f"name = {_toml_string(camera.name)}",
            f"url = {_toml_string(camera.url)}",
        ]
        if camera.detect_url is not None:
            lines.append(f"detect_url = {_toml_string(camera.detect_url)}")
        lines.append(f"enabled = {_toml_bool(camera.enabled)}")
        for key in ("max_age_days", "event_days", "retention_max_days"):
            if getattr(camera, key) is not None:
                lines.append(f"{key} = {_toml_number(getattr(camera, key))}")
        motion = camera.motion
        lines += [
            "[cameras.motion]",
            f"enabled = {_toml_bool(motion.enabled)}",
            f"fps = {_toml_number(motion.fps)}",
            f"sensitivity = {_toml_number(motion.sensitivity)}",
            f"min_area = {_toml_number(motion.min_area)}",
            f"tamper = {_toml_bool(motion.tamper)}",
            f"tamper_seconds = {_toml_number(motion.tamper_seconds)}",
        ]
        if motion.ignore:
            lines.append(f"ignore = [{', '.join(_toml_polygon(p) for p in motion.ignore)}]")
        for zone in motion.zones:
            lines += ["[[cameras.motion.zones]]", f"name = {_toml_string(zone.name)}",
                      f"polygon = {_toml_polygon(zone.polygon)}"]
    return "\n".join(lines) + "\n"


# --- parsing -----------------------------------------------------------------


def _parse(text: str, source: str, base_dir: Path) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line N, column M)".
        raise ConfigError([f"{source}: invalid TOML: {error}"]) from None

    checker = _Checker()
    checker.check_keys(document, "", _TOP_KEYS)
    storage = checker.storage(checker.section(document, "storage", _STORAGE_KEYS), base_dir)
    recording = checker.recording(checker.section(document, "recording", _RECORDING_KEYS))
    motion_table = checker.section(document, "motion", _MOTION_TOP_KEYS)
    motion_defaults = checker.motion(motion_table, "motion", MotionConfig())
    motion_per_process = checker.whole_number(motion_table, "motion", "cameras_per_process",
                                              Config.motion_cameras_per_process, 1, 64)
    cameras = checker.cameras(document.get("cameras", []), motion_defaults)
    log_level = checker.log_level(checker.section(document, "logging", _LOGGING_KEYS))
    if checker.problems:
        raise ConfigError(checker.problems)
    return Config(
        storage=storage,
        recording=recording,
        cameras=cameras,
        log_level=log_level,
        source=source,
        motion_cameras_per_process=motion_per_process,
    )


class _Checker:
    """Reads values out of the parsed TOML, recording every problem found.

    Each reader returns a usable stand-in value when the real one is bad, so
    checking continues and the user sees all problems at once; the caller
    builds a Config only when ``problems`` stays empty.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def check_keys(self, table: dict[str, Any], prefix: str, allowed: tuple[str, ...]) -> None:
        # Unknown keys are errors: a typo like "qouta" silently ignored would
        # leave the default quota in force and fill the disk.
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                hint = f'did you mean "{close[0]}"?'
            else:
                hint = "known keys: " + ", ".join(allowed)
            self.add(_key_path(prefix, key), f"unknown key ({hint})")

    def section(self, document: dict[str, Any], name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            self.add(name, f"expected a table ([{name}]), got {_describe(value)}")
            return {}
        self.check_keys(value, name, allowed)
        return value

    # --- typed readers ---

    def number(
        self,
        table: dict[str, Any],
        prefix: str,
        key: str,
        default: float,
        *,
        greater_than: float | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> float:
        if key not in table:
            return default
        where = _key_path(prefix, key)
        value = table[key]
        # bool is an int subclass; `segment_seconds = true` is a mistake.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(where, f"expected a number, got {_describe(value)}")
            return default
        try:
            number = float(value)
        except OverflowError:
            self.add(where, f"{value} is too large")
            return default
        if not math.isfinite(number):
            self.add(where, f"expected a finite number, got {value}")
            return default
        if greater_than is not None and not number > greater_than:
            self.add(where, f"must be more than {_plain_number(greater_than)}, got {_plain_number(number)}")
        elif at_least is not None and not number >= at_least:
            self.add(where, f"must be {_plain_number(at_least)} or more, got {_plain_number(number)}")
        elif at_most is not None and not number <= at_most:
            self.add(where, f"must be at most {_plain_number(at_most)}, got {_plain_number(number)}")
        return number

    def whole_number(self, table: dict[str, Any], prefix: str, key: str, default: int,
                     at_least: int, at_most: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(_key_path(prefix, key), f"expected a whole number, got {_describe(value)}")
            return default
        if not at_least <= value <= at_most:
            self.add(_key_path(prefix, key), f"must be from {at_least} to {at_most}, got {value}")
            return default
        return value

    def string(self, table: dict[str, Any], prefix: str, key: str) -> str | None:
        """The string at ``key``, or None if it is absent or not a string."""
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str):
            self.add(_key_path(prefix, key), f"expected a string, got {_describe(value)}")
            return None
        return value

    def boolean(self, table: dict[str, Any], prefix: str, key: str, default: bool) -> bool:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.add(_key_path(prefix, key), f"expected true or false, got {_describe(value)}")
            return default
        return value

    def size(self, table: dict[str, Any], prefix: str, key: str, default: str) -> int:
        where = _key_path(prefix, key)
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.add(where, f'expected a size like "2GB" or a whole number of bytes, got {_describe(value)}')
            return 0
        try:
            return parse_size(value)
        except ValueError as error:
            self.add(where, str(error))
            return 0

    # --- sections ---

    def storage(self, table: dict[str, Any], base_dir: Path) -> StorageConfig:
        return StorageConfig(
            data_dir=self.data_dir(table, base_dir),
            quota=self.quota(table),
            min_free_bytes=self.size(table, "storage", "min_free", DEFAULT_MIN_FREE),
            max_age_days=self.optional_days(table, "storage", "max_age_days"),
            event_days=self.number(table, "storage", "event_days", _STORAGE_DEFAULTS.event_days, greater_than=0),
            retention_max_days=self.optional_days(table, "storage", "retention_max_days"),
            event_pre_seconds=self.number(table, "storage", "event_pre_seconds",
                                          _STORAGE_DEFAULTS.event_pre_seconds, at_least=0, at_most=600),
            event_post_seconds=self.number(table, "storage", "event_post_seconds",
                                           _STORAGE_DEFAULTS.event_post_seconds, at_least=0, at_most=600),
            sweep_seconds=self.number(table, "storage", "sweep_seconds", _STORAGE_DEFAULTS.sweep_seconds,
                                      greater_than=0),
            # 0 is allowed: commit every write, for those who prefer it to
            # SD-card life.
            index_commit_seconds=self.number(
                table, "storage", "index_commit_seconds", _STORAGE_DEFAULTS.index_commit_seconds, at_least=0
            ),
        )

    def optional_days(self, table: dict[str, Any], prefix: str, key: str) -> float | None:
        return self.number(table, prefix, key, 1.0, greater_than=0) if key in table else None

    def motion(self, table: dict[str, Any], prefix: str, defaults: MotionConfig) -> MotionConfig:
        return MotionConfig(
            enabled=self.boolean(table, prefix, "enabled", defaults.enabled),
            fps=self.number(table, prefix, "fps", defaults.fps, greater_than=0, at_most=30),
            sensitivity=self.number(table, prefix, "sensitivity", defaults.sensitivity, at_least=0, at_most=1),
            min_area=self.number(table, prefix, "min_area", defaults.min_area, greater_than=0, at_most=1),
            zones=self.zones(table.get("zones", []), f"{prefix}.zones"),
            ignore=tuple(self.polygon(entry, f"{prefix}.ignore[{i}]")
                         for i, entry in enumerate(self.array(table, prefix, "ignore"))),
            tamper=self.boolean(table, prefix, "tamper", defaults.tamper),
            tamper_seconds=self.number(table, prefix, "tamper_seconds", defaults.tamper_seconds,
                                       at_least=2, at_most=600),
        )

    def array(self, table: dict[str, Any], prefix: str, key: str) -> list[Any]:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.add(_key_path(prefix, key), f"expected an array, got {_describe(value)}")
            return []
        return value

    def zones(self, value: Any, where: str) -> tuple[Zone, ...]:
        if not isinstance(value, list):
            self.add(where, f"expected an array of tables ([[...zones]]), got {_describe(value)}")
            return ()
        zones: list[Zone] = []
        for index, entry in enumerate(value):
            prefix = f"{where}[{index}]"
            if not isinstance(entry, dict):
                self.add(prefix, f"expected a table with name and polygon, got {_describe(entry)}")
                continue
            self.check_keys(entry, prefix, _ZONE_KEYS)
            name = self.string(entry, prefix, "name")
            if name is None or not name.strip():
                self.add(f"{prefix}.name", "required: a name for the zone, shown in events")
                continue
            if any(zone.name == name for zone in zones):
                self.add(f"{prefix}.name", f"duplicate zone name {_quote(name)}")
            if "polygon" not in entry:
                self.add(f"{prefix}.polygon", "required: [[x, y], ...] with at least 3 points")
                continue
            zones.append(Zone(name, self.polygon(entry["polygon"], f"{prefix}.polygon")))
        return tuple(zones)

    def polygon(self, value: Any, where: str) -> Polygon:
        rule = "a polygon is [[x, y], [x, y], [x, y], ...]: 3 or more points, each 0..1 of the picture"
        if not isinstance(value, list) or len(value) < 3:
            self.add(where, f"{rule}; got {_describe(value)}" + (f" of {len(value)}" if isinstance(value, list) else ""))
            return ()
        points: list[Point] = []
        for point in value:
            if (not isinstance(point, list) or len(point) != 2
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in point)
                    or not all(0 <= c <= 1 for c in point)):
                self.add(where, f"{rule}; got point {point!r}")
                return ()
            points.append((float(point[0]), float(point[1])))
        return tuple(points)

    def data_dir(self, table: dict[str, Any], base_dir: Path) -> Path:
        fallback = Path(DEFAULT_DATA_DIR)
        if "data_dir" not in table:
            return fallback
        raw = self.string(table, "storage", "data_dir")
        if raw is None:
            return fallback
        if not raw.strip():
            self.add("storage.data_dir", "must not be empty")
            return fallback
        if "\0" in raw:
            self.add("storage.data_dir", "must not contain a NUL character")
            return fallback
        try:
            path = Path(raw).expanduser()
        except RuntimeError:
            self.add("storage.data_dir", f"cannot expand {_quote(raw)}: home directory unknown")
            return fallback
        if not path.is_absolute():
            # normpath, not resolve(): the data disk may be a symlinked mount
            # and the configured spelling is what the operator recognises.
            path = Path(os.path.normpath(base_dir / path))
        return path

    def quota(self, table: dict[str, Any]) -> Quota:
        fallback = Quota(percent=90.0)
        value = table.get("quota", DEFAULT_QUOTA)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.add(
                "storage.quota",
                f'expected a percentage like "85%" or a size like "400GB", got {_describe(value)}',
            )
            return fallback
        try:
            return _parse_quota(value)
        except ValueError as error:
            self.add("storage.quota", str(error))
            return fallback

    def recording(self, table: dict[str, Any]) -> RecordingConfig:
        defaults = RecordingConfig()
        return RecordingConfig(
            segment_seconds=self.number(
                table,
                "recording",
                "segment_seconds",
                defaults.segment_seconds,
                greater_than=0,
                at_most=MAX_SEGMENT_SECONDS,
            ),
            connect_timeout_seconds=self.number(
                table, "recording", "connect_timeout_seconds",
                defaults.connect_timeout_seconds, greater_than=0,
            ),
            read_timeout_seconds=self.number(
                table, "recording", "read_timeout_seconds",
                defaults.read_timeout_seconds, greater_than=0,
            ),
            max_backoff_seconds=self.number(
                table, "recording", "max_backoff_seconds",
                defaults.max_backoff_seconds, greater_than=0,
            ),
            cameras_per_process=self.whole_number(
                table, "recording", "cameras_per_process", defaults.cameras_per_process, 1, 64,
            ),
        )

    def cameras(self, value: Any, motion_defaults: MotionConfig) -> tuple[CameraConfig, ...]:
        if isinstance(value, dict):
            self.add("cameras", "expected an array of tables ([[cameras]]), got a single table ([cameras])")
            return ()
        if not isinstance(value, list):
            self.add("cameras", f"expected an array of tables ([[cameras]]), got {_describe(value)}")
            return ()
        cameras: list[CameraConfig] = []
        first_index_of: dict[str, int] = {}
        for index, entry in enumerate(value):
            prefix = f"cameras[{index}]"
            if not isinstance(entry, dict):
                self.add(prefix, f"expected a table, got {_describe(entry)}")
                continue
            self.check_keys(entry, prefix, _CAMERA_KEYS)
            camera_id = self.camera_id(entry, prefix)
            if camera_id is not None:
                if camera_id in first_index_of:
                    self.add(
                        f"{prefix}.id",
                        f"duplicate camera id {_quote(camera_id)} "
                        f"(also cameras[{first_index_of[camera_id]}].id)",
                    )
                else:
                    first_index_of[camera_id] = index
            name = self.string(entry, prefix, "name")
            if name is not None and not name.strip():
                self.add(f"{prefix}.name", "must not be empty (leave it out to use the id)")
            if "url" not in entry:
                self.add(f"{prefix}.url", "required: the camera's rtsp:// or rtsps:// stream URL")
            url = self.camera_url(entry, prefix, "url")
            detect_url = self.camera_url(entry, prefix, "detect_url")
            motion_table = entry.get("motion", {})
            if not isinstance(motion_table, dict):
                self.add(f"{prefix}.motion", f"expected a table ([cameras.motion]), got {_describe(motion_table)}")
                motion_table = {}
            self.check_keys(motion_table, f"{prefix}.motion", _CAMERA_MOTION_KEYS)
            cameras.append(
                CameraConfig(
                    id=camera_id or "",
                    name=name or camera_id or "",
                    url=url or "",
                    detect_url=detect_url,
                    enabled=self.boolean(entry, prefix, "enabled", True),
                    max_age_days=self.optional_days(entry, prefix, "max_age_days"),
                    event_days=self.optional_days(entry, prefix, "event_days"),
                    retention_max_days=self.optional_days(entry, prefix, "retention_max_days"),
                    motion=self.motion(motion_table, f"{prefix}.motion", motion_defaults),
                )
            )
        return tuple(cameras)

    def camera_id(self, entry: dict[str, Any], prefix: str) -> str | None:
        if "id" not in entry:
            self.add(f"{prefix}.id", f"required: {_CAMERA_ID_RULE}")
            return None
        camera_id = self.string(entry, prefix, "id")
        if camera_id is None:
            return None
        # The id becomes a directory name and a URL path segment, hence the
        # strict alphabet: no "/", "..", spaces or case-only differences.
        if _CAMERA_ID.fullmatch(camera_id) is None:
            self.add(f"{prefix}.id", f"{_quote(camera_id)} is not a valid id: {_CAMERA_ID_RULE}")
            return None
        return camera_id

    def camera_url(self, entry: dict[str, Any], prefix: str, key: str) -> str | None:
        url = self.string(entry, prefix, key)
        if url is None:
            return None
        where = _key_path(prefix, key)
        if not url.strip():
            self.add(where, "must not be empty")
            return None
        problem = _url_problem(url)
        if problem is not None:
            self.add(where, problem)
            return None
        return url

    def log_level(self, table: dict[str, Any]) -> str:
        if "level" not in table:
            return "info"
        level = self.string(table, "logging", "level")
        if level is None:
            return "info"
        if level.lower() not in LOG_LEVELS:
            self.add("logging.level", f"{_quote(level)} is not a log level: use one of {', '.join(LOG_LEVELS)}")
            return "info"
        return level.lower()


def _parse_quota(value: str | int) -> Quota:
    """Parse "85%" or a size; ValueError with a message that has no key path."""
    if isinstance(value, str) and value.strip().endswith("%"):
        match = _PERCENT_TEXT.fullmatch(value)
        if match is None:
            raise ValueError(f'{_quote(value)} is not a percentage like "85%"')
        percent = float(match.group(1))
        if percent > 100:
            raise ValueError(f"{_plain_number(percent)}% is over 100%")
        if percent <= 0:
            raise ValueError(f"{_plain_number(percent)}% must be more than 0%")
        return Quota(percent=percent)
    if isinstance(value, str) and not re.match(r"\s*[-+0-9.]", value):
        # Neither a percentage nor anything number-like: say both forms.
        raise ValueError(f'{_quote(value)} is not a percentage like "85%" or a size like "400GB"')
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be more than 0 bytes (a quota of nothing would record nothing)")
    unitless = isinstance(value, int) or re.fullmatch(r"\s*[0-9.]+\s*", value) is not None
    if unitless and size <= 100:
        # `quota = 85` almost certainly means 85%, and taken as 85 bytes it
        # would make retention delete every recording.
        raise ValueError(
            f'{_plain_number(size)} without a unit would mean {size} bytes: '
            f'write "{size}%" for a percentage or add a unit like "GB"'
        )
    return Quota(bytes=size)


def _url_problem(url: str) -> str | None:
    """What is wrong with a camera URL, or None. Messages never show a password."""
    shown = _quote(redact_url(url))
    if any(character.isspace() or ord(character) < 0x20 or character == "\x7f" for character in url):
        return f"{shown} contains spaces or control characters; percent-encode them (a space is %20)"
    try:
        parts = urlsplit(url)
    except ValueError:
        # e.g. an unclosed IPv6 "[" bracket; urlsplit's message is generic.
        return f"{shown} is not a valid URL"
    if parts.scheme.lower() not in _URL_SCHEMES or not url.lower().startswith(f"{parts.scheme.lower()}://"):
        return f"{shown} is not an RTSP URL: use rtsp:// or rtsps://"
    # A password containing an unencoded "/", "?" or "#" ends the host part
    # early, so both urlsplit and FFmpeg would read part of the password as
    # the host or path; the URL cannot work. It is not shown, because
    # redaction cannot know where such a password ends.
    if "@" in url[len(parts.scheme) + 3 + len(parts.netloc):]:
        return (
            'has "@" after the host; if the password contains "/", "?" or "#", '
            "percent-encode them (%2F, %3F, %23)"
        )
    if not parts.hostname:
        return f"{shown} has no host"
    try:
        _ = parts.port  # urlsplit validates the port only when it is read
    except ValueError:
        # urlsplit's own message can quote part of the password; use ours.
        return f"{shown} has an invalid port (use 1-65535)"
    return None


# --- formatting helpers ------------------------------------------------------


def _quote(text: str) -> str:
    """Show a user's string in a message, in double quotes, with escapes."""
    return json.dumps(text, ensure_ascii=False)


def _key_path(prefix: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else _quote(key)
    return f"{prefix}.{shown}" if prefix else shown


def _type_name(value: Any) -> str:
    # TOML's names for its types, which is what the user wrote.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    return type(value).__name__


def _describe(value: Any) -> str:
    """Type and, for scalars, the value: 'string "ten"', 'boolean true'."""
    kind = _type_name(value)
    if isinstance(value, bool):
        return f"{kind} {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"{kind} {_quote(redact_text(redact_url(value)))}"
    if isinstance(value, (int, float)):
        return f"{kind} {value}"
    return kind


def _plain_number(value: float) -> str:
    """A number as a person writes it: 120 not 120.0, 0.00001 not 1e-05."""
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def _format_size(size: int) -> str:
    """The shortest exact spelling of a byte count that parse_size reads back."""
    for unit, multiplier in _SIZE_NAMES:
        if size >= multiplier and size % multiplier == 0:
            return f"{size // multiplier}{unit}"
    # An explicit "B" keeps a small quota from reading as a unit-less number,
    # which the quota check rejects as a probable percentage.
    return f"{size}B" if size else "0"


def _toml_string(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes. JSON leaves
    # DEL (U+007F) raw, which TOML forbids in basic strings, so escape it too.
    # ensure_ascii=False keeps non-BMP characters whole: JSON's \ud83d\ude00
    # surrogate-pair escapes are not valid TOML.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def _toml_polygon(polygon: Polygon) -> str:
    return "[" + ", ".join(f"[{_toml_number(x)}, {_toml_number(y)}]" for x, y in polygon) + "]"


def _toml_number(value: float) -> str:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    # repr() of a finite float is valid TOML ("0.5", "1e-05", "1e+16").
    return repr(value)
