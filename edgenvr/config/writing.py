"""Writing configs as TOML, from the key descriptions: `config_to_toml` writes a config back (for
``edgenvr demo``) so that parse_config reads it back equal, and `config_example` writes every key with its
doc, allowed values and default, which is docs/config.md (`python -m edgenvr.config.writing` prints it).
"""

from __future__ import annotations

from typing import Any

from edgenvr.config.keys import ConfigKey, Kind, keys_of
from edgenvr.config.records import (
    SECTIONS,
    BoxConfig,
    CameraConfig,
    Config,
    MotionConfig,
    MqttConfig,
    Polygon,
    RecordingConfig,
    StorageConfig,
    SyncConfig,
    WebConfig,
    Zone,
    section_keys,
)
from edgenvr.config.values import format_size, toml_number, toml_string

_ARRAYS_OF_TABLES = ("cameras", "cameras.motion.zones")
_TURNED_ON_BY_PRESENCE = ("web", "sync", "mqtt")   # tables whose presence in the file turns a process on


def config_to_toml(config: Config) -> str:
    """Write ``config`` as a TOML document that parse_config reads back equal.

    ``source`` is not written: it describes where a config was read from. Motion settings are
    written per camera: parsing resolved the [motion] defaults into each camera's.
    """
    lines = ["# edgenvr configuration"]
    tables: tuple[tuple[str, object, type], ...] = (
        ("storage", config.storage, StorageConfig), ("recording", config.recording, RecordingConfig),
        ("motion", config, Config), ("logging", config, Config))   # the camera tables hold the motion settings
    if config.web.enabled:   # the table's presence is what turns the web server on
        tables += (("web", config.web, WebConfig),)
    if config.sync.enabled:   # likewise for syncing to the hub
        tables += (("sync", config.sync, SyncConfig),)
    if config.mqtt.enabled:   # and for publishing to an MQTT broker
        tables += (("mqtt", config.mqtt, MqttConfig),)
    if config.box != BoxConfig():
        tables += (("box", config.box, BoxConfig),)
    for section, record, record_type in tables:
        lines += ["", f"[{section}]", *_assignments(record, keys_of(record_type, section))]
    for camera in config.cameras:
        lines += ["", "[[cameras]]", *_assignments(camera, keys_of(CameraConfig, "cameras")),
                  "[cameras.motion]", *_assignments(camera.motion, keys_of(MotionConfig, "cameras.motion"))]
        for zone in camera.motion.zones:
            lines += ["[[cameras.motion.zones]]", *_assignments(zone, keys_of(Zone, "cameras.motion.zones"))]
    return "\n".join(lines) + "\n"


def config_example() -> str:
    """Every key of the config file: its doc as a comment, its default, and the values it accepts.

    Keys without a default are commented out, and so are the camera tables, [web], [sync] and [mqtt] (whose
    presence turns the web server, syncing and MQTT on), so the text parses to the default configuration.
    """
    lines = ["# edgenvr configuration: every key with its default and the values it accepts. Keys shown",
             "# commented out have no default; the [[cameras]] tables are an outline, one per camera;",
             "# uncomment [web] to serve the web UI and HTTP API, [sync] to send clips to the city hub,",
             "# [mqtt] to publish events and camera states to an MQTT broker (Home Assistant)."]
    for section in SECTIONS:
        comment = "# " if section.startswith("cameras") or section in _TURNED_ON_BY_PRESENCE else ""
        parent, _, name = section.rpartition(".")
        holder = [key for key in section_keys(parent) if key.name == name] if parent else []
        lines += ["", *(f"# {key.doc}" for key in holder),
                  comment + (f"[[{section}]]" if section in _ARRAYS_OF_TABLES else f"[{section}]")]
        for key in section_keys(section):
            if key.kind in (Kind.TABLE, Kind.ZONES):
                continue   # a table of its own, below
            if key.default is None or key.default == "" or key.required:
                assignment = f"# {key.name} ="
            else:
                assignment = f"{comment}{key.name} = {toml_value(key.kind, key.default)}"
            lines += [f"# {key.doc}", f"{assignment:<32}# {key.allowed}"]
    return "\n".join(lines) + "\n"


def config_reference() -> str:
    """docs/config.md: the example config with every key, in a page saying where it comes from."""
    return (
        "# Configuration reference\n\n"
        "Every key of the config file, its default, the values it accepts and what it means. Generated from\n"
        "the key descriptions in `edgenvr/config/records.py` by `python -m edgenvr.config.writing >\n"
        "docs/config.md`; a test fails when this file is out of date. `edgenvr check-config FILE` shows every\n"
        "problem of a config file, each with its key.\n\n"
        f"```toml\n{config_example()}```\n"
    )


def toml_value(kind: Kind, value: Any) -> str:
    """``value``, in the form its record holds it, as the TOML literal a key of ``kind`` is written with."""
    if kind is Kind.BOOLEAN:
        return "true" if value else "false"
    if kind in (Kind.NUMBER, Kind.WHOLE_NUMBER, Kind.PORT):
        return toml_number(value)
    if kind is Kind.SIZE:
        return toml_string(format_size(value))
    if kind is Kind.POLYGON:
        return _toml_polygon(value)
    if kind is Kind.POLYGONS:
        return "[" + ", ".join(_toml_polygon(polygon) for polygon in value) + "]"
    if kind is Kind.TIME_WINDOWS:
        return "[" + ", ".join(toml_string(str(window)) for window in value) + "]"
    return toml_string(str(value))   # strings, camera ids, URLs, paths, quotas, log levels, fingerprints, secrets


def _assignments(record: object, keys: tuple[ConfigKey, ...]) -> list[str]:
    """``key = value`` for each key ``record`` has a value for; tables are left to their own sections."""
    return [f"{key.name} = {toml_value(key.kind, getattr(record, key.attribute))}" for key in keys
            if key.kind not in (Kind.TABLE, Kind.ZONES) and getattr(record, key.attribute) not in (None, ())]


def _toml_polygon(polygon: Polygon) -> str:
    return "[" + ", ".join(f"[{toml_number(x)}, {toml_number(y)}]" for x, y in polygon) + "]"


if __name__ == "__main__":
    print(config_reference(), end="")
