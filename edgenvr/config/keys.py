"""The description of a config key: its TOML table and name, kind, default, bounds, unit and one-line doc.

Every key is declared once, with `setting(...)` on the field of the record it fills (records.py), so a
key's type, default, bounds and doc sit together at the field. `keys_of()` reads the declarations
back; from them come the records' defaults, the checker's type, bounds and unknown-key checks
(checking.py), `config_to_toml` and the documented example in docs/config.md (writing.py). The web API's
JSON schema is meant to come from them too: `Kind` maps to a JSON type, `greater_than`/`at_least`/`at_most`
to exclusiveMinimum/minimum/maximum, `choices` to enum, `doc` to description. Every number and size has an
upper bound (a test checks it), so no accepted value can overflow what it is multiplied into.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from functools import cache
from typing import Any

from edgenvr.config.values import format_size, plain_number
from edgenvr.core.camera_ids import CAMERA_ID_RULE

_METADATA_KEY = "edgenvr.config.key"


class Kind(StrEnum):
    """What a key's TOML value is; the checker has one reader per kind. The value names it for people."""

    NUMBER = "number"
    WHOLE_NUMBER = "whole number"
    BOOLEAN = "true or false"
    STRING = "string"
    PATH = "path"
    SIZE = 'size like "2GB" or "512MiB"'
    QUOTA = 'percentage like "85%" or size like "400GB"'
    URL = "rtsp:// or rtsps:// URL"
    CAMERA_ID = "camera id"
    LOG_LEVEL = "log level"
    LISTEN = 'address and port like "0.0.0.0:8443" or "[::]:8443"'
    POLYGON = "[[x, y], ...]: 3 or more points, x and y 0..1 from the picture's top left"
    POLYGONS = "array of polygons, each [[x, y], ...] like a zone's"
    ZONES = "array of tables"
    HUB_URL = "https:// URL (http:// only to a TLS-terminating proxy on the same host or LAN)"
    SECRET = "string, a secret: never shown in logs, messages or check-config output"
    FINGERPRINT = 'SHA-256 fingerprint: 64 hex digits, with or without ":" between pairs, any case'
    TIME_WINDOWS = 'array of local-time windows "HH:MM-HH:MM" (24 h clock, may wrap past midnight)'
    HOST = 'host name or IP address, like "192.168.1.10" or "broker.lan"'
    PORT = "TCP port"
    MQTT_TOPIC = 'MQTT topic like "edgenvr/rt08": levels joined by "/", no "+" or "#" wildcards'
    TABLE = "table"


@dataclass(frozen=True)
class ConfigKey:
    """One key of the config file. ``default`` is in the record's form (a Quota, a byte count, a Path);
    None means "not set" (each doc says what that means) and MISSING that there is no default."""

    kind: Kind
    default: Any
    doc: str
    unit: str = ""                   # for numbers: "seconds", "days", ...
    greater_than: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False           # the config file must give it
    section: str = ""                # the TOML table: "storage", "cameras.motion", ...
    name: str = ""                   # the TOML key; the field's name unless declared otherwise
    attribute: str = ""              # the record field it fills

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def allowed(self) -> str:
        """What a value may be, in words: "seconds, more than 0, at most 600"."""
        words = [self.unit or str(self.kind)]
        if self.greater_than is not None:
            words.append(f"more than {self.bound(self.greater_than)}")
        if self.at_least is not None and self.at_most is not None:
            words.append(f"{self.bound(self.at_least)} to {self.bound(self.at_most)}")
        elif self.at_least is not None:
            words.append(f"{self.bound(self.at_least)} or more")
        elif self.at_most is not None:
            words.append(f"at most {self.bound(self.at_most)}")
        if self.choices:
            words.append("one of " + ", ".join(self.choices))
        if self.kind is Kind.CAMERA_ID:
            words.append(CAMERA_ID_RULE.removeprefix("use "))
        if self.required:
            words.append("required")
        return ", ".join(words)

    def bound(self, value: float) -> str:
        """A bound as the key's values are written: "10000TB" for a size, "36500" for a number."""
        return format_size(int(value)) if self.kind in (Kind.SIZE, Kind.QUOTA) else plain_number(value)


def setting(
    kind: Kind,
    default: Any,
    doc: str,
    *,
    unit: str = "",
    greater_than: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    choices: tuple[str, ...] = (),
    required: bool = False,
    section: str = "",
    name: str = "",
    record_default: bool = True,
) -> Any:
    """A record field that is a config key. ``default`` is also the field's default, unless it is MISSING
    or ``record_default`` is False (the file's default only: code building a record must give it).
    ``section`` restricts the key to one TOML table when its record is read from several."""
    key = ConfigKey(kind, default, doc, unit, greater_than, at_least, at_most, choices, required, section, name)
    if default is MISSING or not record_default:
        return field(metadata={_METADATA_KEY: key})
    return field(default=default, metadata={_METADATA_KEY: key})


@cache
def keys_of(record: type, section: str) -> tuple[ConfigKey, ...]:
    """The keys that ``record``'s fields declare for the TOML table ``section``, in field order."""
    found: list[ConfigKey] = []
    for record_field in fields(record):
        key = record_field.metadata.get(_METADATA_KEY)
        if key is not None and key.section in ("", section):
            found.append(replace(key, section=section, name=key.name or record_field.name,
                                 attribute=record_field.name))
    return tuple(found)
