"""Reading a config file: TOML text in, a validated ``Config`` out, or a ``ConfigError`` listing every problem.

This module owns every rule about what a valid configuration is. The generic ones (unknown keys, types,
bounds, defaults) come from the key descriptions on the records (records.py); the special ones are here:
sizes and quotas, the data directory, camera ids (``edgenvr.core.camera_ids``), camera URLs, zones and
polygons, [sync]'s hub URL, certificate fingerprint, enrolment token and time windows, [mqtt]'s broker, topics
and password; and, in
`check_data_dir`, what only the machine can tell (data_dir writable, min_free below the filesystem's size).
Validation collects every problem in one pass, each message starting with the key path it is about, so
``edgenvr check-config`` can show a user everything to fix at once. Parsing is done by the standard library's
``tomllib``.

Camera URLs carry passwords, [sync] an enrolment token and [mqtt] a password. No message produced here contains
any of them; see
``edgenvr.core.url_redaction`` and ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import os
import pwd
import re
import shutil
import stat
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from edgenvr.config.keys import ConfigKey, Kind, keys_of
from edgenvr.config.records import (
    CONFIG_KEYS,
    TOP_LEVEL_KEYS,
    BoxConfig,
    CameraConfig,
    Config,
    MotionConfig,
    MqttConfig,
    Point,
    Polygon,
    Quota,
    RecordingConfig,
    StorageConfig,
    SyncConfig,
    TimeWindow,
    WebConfig,
    Zone,
    section_keys,
    split_listen,
)
from edgenvr.config.values import format_size, parse_size, plain_number, quote
from edgenvr.core.camera_ids import CAMERA_ID_RULE, is_camera_id
from edgenvr.core.url_redaction import REDACTED, redact_text, redact_url

_URL_SCHEMES = ("rtsp", "rtsps")
# http:// is accepted for a hub behind a proxy on the same host or LAN that adds TLS (the key's doc says so).
_HUB_URL_SCHEMES = ("https", "http")
_HUB_URL_EXAMPLE = '"https://hub.example.id:8443"'
_FINGERPRINT_DIGITS = re.compile(r"[0-9A-Fa-f]*")
_SHA256_HEX_DIGITS = 64
# One or two digits of hour (people write "6:00"), always two of minute; spaces around "-" are harmless.
_TIME_WINDOW = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")
_TIME_WINDOW_RULE = '"HH:MM-HH:MM" on the 24 h clock, like "22:00-06:00"'
_PERCENT_TEXT = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*%\s*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# A DNS label (RFC 1123): letters, digits and inner hyphens. Strict on purpose: an underscore or a space in the
# broker's host is a typo (or a secret pasted under the wrong key), never a name the resolver would find.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MQTT_HOST_EXAMPLE = '"192.168.1.10" or "broker.lan"'
# Topic prefixes are joined with the box's own levels; MQTT allows 65535 bytes, a prefix this long is a mistake.
_MQTT_TOPIC_MAX_BYTES = 200
# MQTT 3.1.1 servers must accept 1-23 letters and digits and may accept more (Mosquitto does): what a client id
# may be here is what every common broker takes.
_MQTT_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason.

    ``str()`` gives the problems one per line, each starting with the key path
    (or the file name, for problems with the file itself).
    """

    def __init__(self, problems: Iterable[str] | str, secrets: Iterable[str] = ()) -> None:
        if isinstance(problems, str):
            problems = [problems]
        # ``secrets`` are the values of the file's secret keys (the enrolment token). Their own reader never
        # shows them, but the same text pasted under another key would be echoed by that key's message:
        # taking every occurrence out here keeps it out of every message, whatever key it is under.
        # Also as quote() escapes it and without the spaces it may have been pasted with.
        hidden = {form for secret in secrets for form in (secret, secret.strip(), quote(secret)[1:-1])
                  if form.strip()}
        cleaned: list[str] = []
        for problem in problems:
            for secret in sorted(hidden, key=len, reverse=True):   # the longest first: no part of it left behind
                problem = problem.replace(secret, REDACTED)
            # Messages about URLs are built with redact_url already; redacting
            # again here means a value echoed from an unexpected place (a URL
            # pasted under the wrong key) cannot carry a password out either.
            cleaned.append(redact_text(problem))
        self.problems: list[str] = cleaned
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


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


def check_data_dir(config: Config) -> None:
    """Check what only this machine can tell about ``[storage]``; ConfigError lists the problems.

    ``storage.data_dir`` must be a directory this user can write, or one it can create (its nearest existing
    ancestor is a writable directory); ``storage.min_free`` must be less than the whole data filesystem, or
    nothing could ever be recorded. `edgenvr check-config` and `edgenvr run` call it. parse_config and
    load_config do not: configs are built for directories that do not exist yet (tests, `edgenvr demo`), and
    a file may be checked on another machine than the one it is for. Nothing is created or changed.
    """
    storage = config.storage
    shown = quote(str(storage.data_dir))
    existing = storage.data_dir
    while True:
        try:
            status = os.stat(existing)   # follows symlinks: a data disk mounted through a link is fine
            break
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:   # "/" (or ".") always exists; kept so the loop always ends
                raise ConfigError([f"storage.data_dir: no part of {shown} exists"]) from None
            existing = existing.parent
        except OSError as error:   # e.g. a parent this user may not enter
            problem = f"storage.data_dir: cannot look at {quote(str(existing))}: {error.strerror or error}"
            raise ConfigError([problem]) from None
    created = "" if existing == storage.data_dir else f"{shown} does not exist and cannot be created: "
    where = quote(str(existing))
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigError([f"storage.data_dir: {created}{where} is not a directory"])
    if not os.access(existing, os.W_OK | os.X_OK):   # also False on a read-only filesystem, even for root
        raise ConfigError([f"storage.data_dir: {created}{where} is not writable by {_this_user()}, who would "
                           "record into it"])
    try:
        filesystem_bytes = shutil.disk_usage(existing).total
    except OSError as error:
        problem = f"storage.data_dir: cannot read the size of the filesystem of {where}: {error.strerror or error}"
        raise ConfigError([problem]) from None
    if storage.min_free_bytes >= filesystem_bytes:
        size = f"{filesystem_bytes / 1000**3:.1f} GB"
        raise ConfigError([f"storage.min_free: {format_size(storage.min_free_bytes)} is not less than the whole data "
                           f"filesystem ({size} at {where}): nothing could ever be recorded"])


def _this_user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:   # a uid without a passwd entry (containers)
        return f"uid {os.geteuid()}"


def _parse(text: str, source: str, base_dir: Path) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line N, column M)".
        raise ConfigError([f"{source}: invalid TOML: {error}"]) from None
    return _checked(document, source, base_dir)


def config_from_document(document: dict[str, Any], source: str) -> Config:
    """Check a TOML document already parsed (tomllib's dict): how runtime.provision_file checks the provisioning
    file's tables laid over the box's config file. A relative data_dir is taken relative to the current
    directory, as parse_config takes it."""
    return _checked(document, source, Path.cwd())


def _checked(document: dict[str, Any], source: str, base_dir: Path) -> Config:
    checker = _Checker(base_dir)
    checker.check_keys(document, "", TOP_LEVEL_KEYS)
    box = BoxConfig(**checker.values(checker.section(document, "box"), "box", section_keys("box")))
    storage = StorageConfig(**checker.values(checker.section(document, "storage"), "storage",
                                             section_keys("storage")))
    recording = RecordingConfig(**checker.values(checker.section(document, "recording"), "recording",
                                                 section_keys("recording")))
    motion_table = checker.section(document, "motion")
    motion_defaults = MotionConfig(**checker.values(motion_table, "motion", keys_of(MotionConfig, "motion")))
    config_values = checker.values(motion_table, "motion", keys_of(Config, "motion"))
    cameras = checker.cameras(document.get("cameras", []), motion_defaults)
    config_values |= checker.values(checker.section(document, "logging"), "logging", keys_of(Config, "logging"))
    web = WebConfig(**checker.values(checker.section(document, "web"), "web", section_keys("web")),
                    enabled="web" in document)
    sync = checker.sync(document)
    mqtt = checker.mqtt(document)
    if checker.problems:
        raise ConfigError(checker.problems, secrets=_secrets(document))
    return Config(storage=storage, recording=recording, box=box, web=web, sync=sync, mqtt=mqtt, cameras=cameras,
                  source=source, **config_values)


def _secrets(document: dict[str, Any]) -> list[str]:
    """The values the file gives its secret keys, for ConfigError to keep out of every message."""
    found: list[str] = []
    for key in CONFIG_KEYS:
        if key.kind is Kind.SECRET:
            assert "." not in key.section, f"{key.path}: a secret is looked up in a top-level table only"
            table = document.get(key.section)
            value = table.get(key.name) if isinstance(table, dict) else None
            if isinstance(value, str) and value:
                found.append(value)
    return found


class _Checker:
    """Reads values out of the parsed TOML, recording every problem found.

    Each reader returns a usable stand-in value when the real one is bad, so
    checking continues and the user sees all problems at once; the caller
    builds a Config only when ``problems`` stays empty.
    """

    def __init__(self, base_dir: Path) -> None:
        self.problems: list[str] = []
        self.base_dir = base_dir   # what a relative data_dir is relative to

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

    def section(self, document: dict[str, Any], name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            self.add(name, f"expected a table ([{name}]), got {_describe(value)}")
            return {}
        self.check_keys(value, name, tuple(key.name for key in section_keys(name)))
        return value

    def values(self, table: dict[str, Any], prefix: str, keys: Iterable[ConfigKey],
               defaults: object | None = None) -> dict[str, Any]:
        """Each key's value from ``table`` by record attribute, for building the record.

        An absent key gets its described default, or ``defaults``' value of the same attribute when given.
        """
        return {key.attribute: self.value(table, prefix, key,
                                          key.default if defaults is None else getattr(defaults, key.attribute))
                for key in keys}

    def value(self, table: dict[str, Any], prefix: str, key: ConfigKey, default: Any) -> Any:
        name = key.name
        match key.kind:
            case Kind.NUMBER:
                return self.number(table, prefix, name, default, greater_than=key.greater_than,
                                   at_least=key.at_least, at_most=key.at_most)
            case Kind.WHOLE_NUMBER:
                assert key.at_least is not None and key.at_most is not None
                return self.whole_number(table, prefix, name, default, int(key.at_least), int(key.at_most))
            case Kind.BOOLEAN:
                return self.boolean(table, prefix, name, default)
            case Kind.SIZE:
                return self.size(table, prefix, name, default, key.at_most)
            case Kind.QUOTA:
                return self.quota(table, prefix, name, default, key.at_most)
            case Kind.PATH:
                return self.data_dir(table, prefix, name, default)
            case Kind.LOG_LEVEL:
                return self.log_level(table, prefix, key)
            case Kind.STRING:
                value = self.string(table, prefix, name)
                return default if value is None else value
            case Kind.LISTEN:
                value = self.string(table, prefix, name)
                if value is None:
                    return default
                try:
                    split_listen(value)
                except ValueError as error:
                    self.add(_key_path(prefix, name), f"{quote(value)}: {error}")
                    return default
                return value
            case Kind.CAMERA_ID:
                value = self.string(table, prefix, name)
                if value is not None and not is_camera_id(value):
                    self.add(_key_path(prefix, name), f"{quote(value)} is not a valid id: {CAMERA_ID_RULE}")
                    return default
                return default if value is None else value
            case Kind.ZONES:
                return self.zones(table.get(name, []), _key_path(prefix, name))
            case Kind.POLYGONS:
                return tuple(self.polygon(entry, f"{_key_path(prefix, name)}[{i}]")
                             for i, entry in enumerate(self.array(table, prefix, name)))
            case Kind.HUB_URL:
                return self.hub_url(table, prefix, name, default)
            case Kind.SECRET:
                return self.secret(table, prefix, name, default)
            case Kind.FINGERPRINT:
                return self.fingerprint(table, prefix, name, default)
            case Kind.TIME_WINDOWS:
                return self.time_windows(table, prefix, name, default)
            case Kind.HOST:
                return self.host(table, prefix, name, default)
            case Kind.PORT:
                if name not in table:   # not set: the table's own rule picks it (MQTT: 1883, 8883 with TLS)
                    return default
                assert key.at_least is not None and key.at_most is not None
                return self.whole_number(table, prefix, name, default, int(key.at_least), int(key.at_most))
            case Kind.MQTT_TOPIC:
                return self.mqtt_topic(table, prefix, name, default)
        raise AssertionError(f"{key.path}: {key.kind} is read by its table's own reader")

    # --- typed readers ---

    def number(
        self,
        table: dict[str, Any],
        prefix: str,
        key: str,
        default: float | None,
        *,
        greater_than: float | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> float | None:
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
            self.add(where, f"must be more than {plain_number(greater_than)}, got {plain_number(number)}")
        elif at_least is not None and not number >= at_least:
            self.add(where, f"must be {plain_number(at_least)} or more, got {plain_number(number)}")
        elif at_most is not None and not number <= at_most:
            self.add(where, f"must be at most {plain_number(at_most)}, got {plain_number(number)}")
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

    def size(self, table: dict[str, Any], prefix: str, key: str, default: int, at_most: float | None) -> int:
        if key not in table:
            return default
        where = _key_path(prefix, key)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.add(where, f'expected a size like "2GB" or a whole number of bytes, got {_describe(value)}')
            return 0
        try:
            size = parse_size(value)
        except ValueError as error:
            self.add(where, str(error))
            return 0
        if at_most is not None and size > at_most:
            self.add(where, f"must be at most {format_size(int(at_most))}, got {_shown_size(value)}")
            return 0
        return size

    def quota(self, table: dict[str, Any], prefix: str, key: str, default: Quota, at_most: float | None) -> Quota:
        if key not in table:
            return default
        where = _key_path(prefix, key)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.add(where, f'expected a percentage like "85%" or a size like "400GB", got {_describe(value)}')
            return default
        try:
            quota = parse_quota(value)
        except ValueError as error:
            self.add(where, str(error))
            return default
        if at_most is not None and quota.bytes is not None and quota.bytes > at_most:
            self.add(where, f"must be at most {format_size(int(at_most))} or a percentage, got {_shown_size(value)}")
            return default
        return quota

    def data_dir(self, table: dict[str, Any], prefix: str, key: str, default: Path) -> Path:
        where = _key_path(prefix, key)
        raw = self.string(table, prefix, key)
        if raw is None:
            return default
        if not raw.strip():
            self.add(where, "must not be empty")
            return default
        if "\0" in raw:
            self.add(where, "must not contain a NUL character")
            return default
        try:
            path = Path(raw).expanduser()
        except RuntimeError:
            self.add(where, f"cannot expand {quote(raw)}: home directory unknown")
            return default
        if not path.is_absolute():
            # normpath, not resolve(): the data disk may be a symlinked mount
            # and the configured spelling is what the operator recognises.
            path = Path(os.path.normpath(self.base_dir / path))
        return path

    def log_level(self, table: dict[str, Any], prefix: str, key: ConfigKey) -> str:
        level = self.string(table, prefix, key.name)
        if level is None:
            return str(key.default)
        if level.lower() not in key.choices:
            self.add(_key_path(prefix, key.name),
                     f"{quote(level)} is not a log level: use one of {', '.join(key.choices)}")
            return str(key.default)
        return level.lower()

    def array(self, table: dict[str, Any], prefix: str, key: str) -> list[Any]:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.add(_key_path(prefix, key), f"expected an array, got {_describe(value)}")
            return []
        return value

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

    def hub_url(self, table: dict[str, Any], prefix: str, key: str, default: str) -> str:
        url = self.string(table, prefix, key)
        if url is None:
            return default
        where = _key_path(prefix, key)
        if not url.strip():
            self.add(where, f"must not be empty: the city hub's URL, like {_HUB_URL_EXAMPLE}")
            return default
        problem = _hub_url_problem(url)
        if problem is not None:
            self.add(where, problem)
            return default
        return url

    def secret(self, table: dict[str, Any], prefix: str, key: str, default: str | None) -> str | None:
        """A secret string (the enrolment token). No message shows the value, not even a number or a part
        of it: what the user wrote there may be the secret, typed without quotes or pasted with a space."""
        if key not in table:
            return default
        where = _key_path(prefix, key)
        value = table[key]
        if not isinstance(value, str):
            self.add(where, f"expected a string, got {_type_name(value)} (not shown: it is a secret)")
            return default
        if not value.strip():
            self.add(where, "must not be empty (leave the key out once the box is enrolled)")
            return default
        if any(character.isspace() or not character.isprintable() for character in value):
            # A token copied with a line break or a space would be refused by the hub as unknown, which
            # says much less than this does.
            self.add(where, "contains spaces or control characters (not shown: it is a secret); copy the token "
                            "again without them")
            return default
        return value

    def fingerprint(self, table: dict[str, Any], prefix: str, key: str, default: str | None) -> str | None:
        """A SHA-256 certificate fingerprint in any case, with or without ":"; kept as browsers and
        `edgenvr identity` show one ("AB:CD:..."), so the same certificate always compares equal."""
        raw = self.string(table, prefix, key)
        if raw is None:
            return default
        digits = raw.strip().replace(":", "")
        if len(digits) != _SHA256_HEX_DIGITS or not _FINGERPRINT_DIGITS.fullmatch(digits):
            rule = (f'a SHA-256 fingerprint is {_SHA256_HEX_DIGITS} hex digits (0-9, A-F), with or without ":" '
                    "between pairs")
            if _FINGERPRINT_DIGITS.fullmatch(digits):
                rule += f"; this has {len(digits)}" + (" (a SHA-1 fingerprint?)" if len(digits) == 40 else "")
            self.add(_key_path(prefix, key), f"{quote(raw)}: {rule}")
            return default
        return bytes.fromhex(digits).hex(":").upper()

    def time_windows(self, table: dict[str, Any], prefix: str, key: str,
                     default: tuple[TimeWindow, ...]) -> tuple[TimeWindow, ...]:
        if key not in table:
            return default
        where = _key_path(prefix, key)
        value = table[key]
        if not isinstance(value, list):
            self.add(where, f'expected an array of windows like ["22:00-06:00"], got {_describe(value)}')
            return default
        windows = (self.time_window(entry, f"{where}[{index}]") for index, entry in enumerate(value))
        return tuple(window for window in windows if window is not None)

    def time_window(self, value: Any, where: str) -> TimeWindow | None:
        if not isinstance(value, str):
            self.add(where, f"expected a window {_TIME_WINDOW_RULE}, got {_describe(value)}")
            return None
        match = _TIME_WINDOW.fullmatch(value)
        if match is None:
            self.add(where, f"{quote(value)} is not a window {_TIME_WINDOW_RULE}")
            return None
        start_hour, start_minute, end_hour, end_minute = (int(group) for group in match.groups())
        for hour, minute in ((start_hour, start_minute), (end_hour, end_minute)):
            if hour > 23:
                self.add(where, f"{quote(value)}: hour {hour} is not 0-23 (midnight is 00:00)")
                return None
            if minute > 59:
                self.add(where, f"{quote(value)}: minute {minute} is not 0-59")
                return None
        window = TimeWindow(start_hour * 60 + start_minute, end_hour * 60 + end_minute)
        if window.start_minute == window.end_minute:
            # Equal ends could mean nothing or all day; all day is written as two windows.
            self.add(where, f'{quote(value)} starts and ends at the same time; for the whole day write '
                            '"00:00-12:00", "12:00-00:00"')
            return None
        return window

    def host(self, table: dict[str, Any], prefix: str, key: str, default: str) -> str:
        """A host name or an IP address (an IPv6 one with or without brackets), nothing else: no scheme, no port."""
        raw = self.string(table, prefix, key)
        if raw is None:
            return default
        problem = host_problem(raw)
        if problem is not None:
            self.add(_key_path(prefix, key), problem)
            return default
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(raw.removeprefix("[").removesuffix("]")))
        return raw

    def mqtt_topic(self, table: dict[str, Any], prefix: str, key: str, default: str | None) -> str | None:
        """A topic the box publishes under: levels joined by "/", none empty, no wildcard, not the broker's $."""
        raw = self.string(table, prefix, key)
        if raw is None:
            return default
        where = _key_path(prefix, key)
        problem = None
        if not raw:
            problem = "must not be empty (leave the key out for the default)"
        elif "+" in raw or "#" in raw:
            problem = f'{quote(raw)}: "+" and "#" are wildcards, nothing can be published to them'
        elif raw.startswith("$"):
            problem = f'{quote(raw)}: topics starting with "$" are the broker\'s own'
        elif raw.startswith("/") or raw.endswith("/") or "//" in raw:
            problem = f'{quote(raw)} has an empty level: no "/" at either end or twice in a row'
        elif any(not character.isprintable() or character.isspace() for character in raw):
            problem = f"{quote(raw)} contains spaces or control characters"
        elif len(raw.encode()) > _MQTT_TOPIC_MAX_BYTES:
            problem = f"is {len(raw.encode())} bytes long: at most {_MQTT_TOPIC_MAX_BYTES}"
        if problem is not None:
            self.add(where, problem)
            return default
        return raw

    def password(self, table: dict[str, Any], prefix: str, key: str) -> str | None:
        """A password: any text, spaces too, but never shown (not even its type's value or a part of it)."""
        if key not in table:
            return None
        where = _key_path(prefix, key)
        value = table[key]
        if not isinstance(value, str):
            self.add(where, f"expected a string, got {_type_name(value)} (not shown: it is a secret)")
            return None
        if not value:
            self.add(where, "must not be empty (leave the key out for a broker without passwords)")
            return None
        if any(not character.isprintable() and character != " " for character in value):
            self.add(where, "contains control characters or a line break (not shown: it is a secret)")
            return None
        return value

    # --- tables with rules of their own ---

    def sync(self, document: dict[str, Any]) -> SyncConfig:
        """[sync]: its presence turns syncing on, and then the hub's URL is required."""
        if "sync" not in document:
            return SyncConfig()
        table = self.section(document, "sync")
        # Not a table: section() said so, and a missing hub_url would be a second message about the same line.
        if isinstance(document["sync"], dict) and "hub_url" not in table:
            self.add("sync.hub_url",
                     f"required when [sync] is present: the city hub's URL, like {_HUB_URL_EXAMPLE}")
        return SyncConfig(**self.values(table, "sync", section_keys("sync")), enabled=True)

    def mqtt(self, document: dict[str, Any]) -> MqttConfig:
        """[mqtt]: its presence turns publishing on, and then the broker's host is required; TLS settings need
        tls, a password needs its user."""
        if "mqtt" not in document:
            return MqttConfig()
        table = self.section(document, "mqtt")
        if isinstance(document["mqtt"], dict) and "host" not in table:
            self.add("mqtt.host", f"required when [mqtt] is present: the broker's host name or address, like "
                                  f"{_MQTT_HOST_EXAMPLE}")
        values = self.values(table, "mqtt", [key for key in section_keys("mqtt") if key.kind is not Kind.SECRET])
        values["password"] = self.password(table, "mqtt", "password")
        if not values["tls"]:
            for key in ("ca_file", "broker_fingerprint"):
                if key in table:
                    self.add(f"mqtt.{key}", "used only with tls = true: turn TLS on (brokers serve it on port 8883) "
                                            "or leave the key out")
        elif "ca_file" in table and "broker_fingerprint" in table:
            self.add("mqtt.broker_fingerprint", "give ca_file or broker_fingerprint, not both: a pinned certificate "
                                                "is trusted without any authority")
        if values["username"] is not None and not values["username"]:
            self.add("mqtt.username", "must not be empty (leave it out to connect without a user)")
        if "password" in table and "username" not in table:
            self.add("mqtt.password", "needs a username: a broker checks the password of a user")
        client_id = values["client_id"]
        if client_id is not None and not _MQTT_CLIENT_ID.fullmatch(client_id):
            self.add("mqtt.client_id", f"{quote(client_id)}: use 1 to 128 letters, digits, \".\", \"_\", \":\" or \"-\"")
        return MqttConfig(**values, enabled=True)


    def zones(self, value: Any, where: str) -> tuple[Zone, ...]:
        if not isinstance(value, list):
            self.add(where, f"expected an array of tables ([[...zones]]), got {_describe(value)}")
            return ()
        allowed = tuple(key.name for key in section_keys("cameras.motion.zones"))
        zones: list[Zone] = []
        for index, entry in enumerate(value):
            prefix = f"{where}[{index}]"
            if not isinstance(entry, dict):
                self.add(prefix, f"expected a table with name and polygon, got {_describe(entry)}")
                continue
            self.check_keys(entry, prefix, allowed)
            name = self.string(entry, prefix, "name")
            if name is None or not name.strip():
                self.add(f"{prefix}.name", "required: a name for the zone, shown in events")
                continue
            if any(zone.name == name for zone in zones):
                self.add(f"{prefix}.name", f"duplicate zone name {quote(name)}")
            if "polygon" not in entry:
                self.add(f"{prefix}.polygon", "required: [[x, y], ...] with at least 3 points")
                continue
            zones.append(Zone(name, self.polygon(entry["polygon"], f"{prefix}.polygon")))
        return tuple(zones)

    def cameras(self, value: Any, motion_defaults: MotionConfig) -> tuple[CameraConfig, ...]:
        if isinstance(value, dict):
            self.add("cameras", "expected an array of tables ([[cameras]]), got a single table ([cameras])")
            return ()
        if not isinstance(value, list):
            self.add("cameras", f"expected an array of tables ([[cameras]]), got {_describe(value)}")
            return ()
        camera_keys = section_keys("cameras")
        # id, name, url, detect_url and motion have rules of their own, read below.
        plain_keys = tuple(key for key in camera_keys if key.kind in (Kind.BOOLEAN, Kind.NUMBER))
        cameras: list[CameraConfig] = []
        first_index_of: dict[str, int] = {}
        for index, entry in enumerate(value):
            prefix = f"cameras[{index}]"
            if not isinstance(entry, dict):
                self.add(prefix, f"expected a table, got {_describe(entry)}")
                continue
            self.check_keys(entry, prefix, tuple(key.name for key in camera_keys))
            camera_id = self.camera_id(entry, prefix)
            if camera_id is not None:
                if camera_id in first_index_of:
                    self.add(
                        f"{prefix}.id",
                        f"duplicate camera id {quote(camera_id)} "
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
            motion_keys = section_keys("cameras.motion")
            self.check_keys(motion_table, f"{prefix}.motion", tuple(key.name for key in motion_keys))
            plain = self.values(entry, prefix, plain_keys)
            motion = MotionConfig(**self.values(motion_table, f"{prefix}.motion", motion_keys, motion_defaults))
            cameras.append(CameraConfig(id=camera_id or "", name=name or camera_id or "", url=url or "",
                                        detect_url=detect_url, motion=motion, **plain))
        return tuple(cameras)

    def camera_id(self, entry: dict[str, Any], prefix: str) -> str | None:
        if "id" not in entry:
            self.add(f"{prefix}.id", f"required: {CAMERA_ID_RULE}")
            return None
        camera_id = self.string(entry, prefix, "id")
        if camera_id is None:
            return None
        # The id becomes a directory name and a URL path segment, hence the
        # strict alphabet: no "/", "..", spaces or case-only differences.
        if not is_camera_id(camera_id):
            self.add(f"{prefix}.id", f"{quote(camera_id)} is not a valid id: {CAMERA_ID_RULE}")
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


def host_problem(raw: str) -> str | None:
    """Why `raw` is not a host name or an IP address (an IPv6 one with or without brackets; no scheme, no port),
    or None when it is one. The rule of [mqtt] host, and of the NTP servers a provisioning file names."""
    if not raw.strip():
        return f"must not be empty: the host name or address, like {_MQTT_HOST_EXAMPLE}"
    if "://" in raw:
        return (f"{quote(redact_url(raw))} is a URL: give the host alone, like {_MQTT_HOST_EXAMPLE} "
                "(the port and TLS have keys of their own)")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(raw.removeprefix("[").removesuffix("]"))
        return None
    if ":" in raw:
        return f"{quote(raw)}: give the port in the port key, not after the host"
    labels = raw.removesuffix(".").split(".")
    if len(raw) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{quote(raw)} is not a host name or IP address (letters, digits, \"-\" and \".\" only)"
    return None


def parse_quota(value: str | int) -> Quota:
    """Parse "85%" or a size; ValueError with a message that has no key path."""
    if isinstance(value, str) and value.strip().endswith("%"):
        match = _PERCENT_TEXT.fullmatch(value)
        if match is None:
            raise ValueError(f'{quote(value)} is not a percentage like "85%"')
        percent = float(match.group(1))
        if percent > 100:
            raise ValueError(f"{plain_number(percent)}% is over 100%")
        if percent <= 0:
            raise ValueError(f"{plain_number(percent)}% must be more than 0%")
        return Quota(percent=percent)
    if isinstance(value, str) and not re.match(r"\s*[-+0-9.]", value):
        # Neither a percentage nor anything number-like: say both forms.
        raise ValueError(f'{quote(value)} is not a percentage like "85%" or a size like "400GB"')
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be more than 0 bytes (a quota of nothing would record nothing)")
    unitless = isinstance(value, int) or re.fullmatch(r"\s*[0-9.]+\s*", value) is not None
    if unitless and size <= 100:
        # `quota = 85` almost certainly means 85%, and taken as 85 bytes it
        # would make retention delete every recording.
        raise ValueError(
            f'{plain_number(size)} without a unit would mean {size} bytes: '
            f'write "{size}%" for a percentage or add a unit like "GB"'
        )
    return Quota(bytes=size)


def _url_problem(url: str) -> str | None:
    """What is wrong with a camera URL, or None. Messages never show a password."""
    shown = quote(redact_url(url))
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


def _hub_url_problem(url: str) -> str | None:
    """What is wrong with the hub's URL, or None. Messages never show a password."""
    shown = quote(redact_url(url))
    if any(character.isspace() or not character.isprintable() for character in url):
        return f"{shown} contains spaces or control characters; percent-encode them (a space is %20)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{shown} is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in _HUB_URL_SCHEMES or not url.lower().startswith(f"{scheme}://"):
        return (f"{shown} is not an https:// URL: use https:// (http:// only to a proxy on this host or its LAN "
                "that adds TLS)")
    if "@" in url:
        # Not shown: where a password ends cannot be known for sure. The hub needs none: the box signs each
        # request with its device key.
        return ("has a user name or password (an \"@\"): leave them out, the box signs its requests with its "
                "device key")
    if "#" in url:
        return f"{quote(url.split('#', 1)[0])} is followed by a fragment (#...): leave it out"
    if "?" in url:
        # The hub's API paths are appended to the URL: "https://hub/?a=1" + "/api/v1/enrol" would be broken.
        return f"{quote(url.split('?', 1)[0])} is followed by a query (?...): leave it out"
    if not parts.hostname:
        return f"{shown} has no host"
    try:
        port = parts.port  # urlsplit validates the port only when it is read
    except ValueError:
        port = 0
    if port == 0:
        return f"{shown} has an invalid port (use 1-65535)"
    return None


# --- how keys and values are named in messages ------------------------------


def _key_path(prefix: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else quote(key)
    return f"{prefix}.{shown}" if prefix else shown


def _shown_size(value: str | int) -> str:
    return quote(value) if isinstance(value, str) else str(value)


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
        return f"{kind} {quote(redact_text(redact_url(value)))}"
    if isinstance(value, (int, float)):
        return f"{kind} {value}"
    return kind
