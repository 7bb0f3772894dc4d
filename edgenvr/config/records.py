"""The typed, frozen records a configuration is read into, and on each field the config key it comes from:
its kind, default, bounds, unit and one-line doc, declared once with `setting(...)` (see keys.py).
`SECTIONS` says which records fill which TOML table; `CONFIG_KEYS` lists every key of the file.

The constructors do not validate (beyond ``Quota``'s own invariant): code and tests build records
directly, and ``parse_config`` is the one place that decides what a config file may contain. Camera URLs
carry passwords, [sync] an enrolment token and [mqtt] a password: ``repr()`` and ``str()`` never show them (see
``edgenvr.core.url_redaction``).
"""

from __future__ import annotations

import re
import socket
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from edgenvr.config.keys import ConfigKey, Kind, keys_of, setting
from edgenvr.config.values import format_size, plain_number
from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.url_redaction import REDACTED, redact_url

# Upper bounds of the numbers every retention computation multiplies (days to ms, bytes), so none can overflow
# a 64-bit SQLite integer or a datetime (`max_age_days = 1e12` once crashed the first sweep):
# 100 years is longer than any legal retention period;
MAX_DAYS = 36_500
# 10 PB is more than any disk an edge recorder has.
MAX_BYTES = 10 * 1000**5
# 10 Gbit/s: more than any uplink a box has, and small enough that bytes per second stay exact in a float.
MAX_UPLOAD_KBPS = 10_000_000
MINUTES_PER_DAY = 24 * 60


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
            return f"{plain_number(self.percent)}%"
        assert self.bytes is not None
        return format_size(self.bytes)


@dataclass(frozen=True)
class StorageConfig:
    """Where recordings live and how much space and time they may take."""

    # No default in code: a record built without a data_dir must not write to the system's directory.
    data_dir: Path = setting(Kind.PATH, Path("/var/lib/edgenvr"), record_default=False, doc=(
        "Where segments, the index and snapshots are written; a relative path is from the config file's directory."))
    quota: Quota = setting(Kind.QUOTA, Quota(percent=90.0), at_most=MAX_BYTES, doc=(
        "How much of the data filesystem recordings may use."))
    min_free_bytes: int = setting(Kind.SIZE, 1000**3, name="min_free", at_most=MAX_BYTES, doc=(
        "Free space always left on the data filesystem: a floor that wins over every retention setting; "
        "`edgenvr check-config` and `edgenvr run` refuse one as large as the filesystem."))
    max_age_days: float | None = setting(Kind.NUMBER, None, unit="days", greater_than=0, at_most=MAX_DAYS, doc=(
        "Continuous video older than this is deleted; not set: it stays until the quota needs the space. "
        "Every number of days is at most 36500 (100 years, longer than any legal retention period)."))
    event_days: float = setting(Kind.NUMBER, 30.0, unit="days", greater_than=0, at_most=MAX_DAYS, doc=(
        "Video around motion and tamper events is kept this long."))
    retention_max_days: float | None = setting(Kind.NUMBER, None, unit="days", greater_than=0, at_most=MAX_DAYS,
                                               doc=(
        "Legal maximum: nothing but holds survives past it; not set: no maximum."))
    event_pre_seconds: float = setting(Kind.NUMBER, 10.0, unit="seconds", at_least=0, at_most=600, doc=(
        "Video kept before an event starts, as event video."))
    event_post_seconds: float = setting(Kind.NUMBER, 20.0, unit="seconds", at_least=0, at_most=600, doc=(
        "Video kept after an event ends, as event video."))
    sweep_seconds: float = setting(Kind.NUMBER, 10.0, unit="seconds", greater_than=0, at_most=3600, doc=(
        "How often retention checks that the quota and min_free will hold until the next full sweep; at most "
        "an hour, as a disk can fill in less."))
    # Why minutes: docs/architecture.md, "Commits are batched". At most an hour: readers show the rows not
    # committed yet from the files of the last 2 hours (index.queries.UNINDEXED_LOOKBACK_MS).
    index_commit_seconds: float = setting(Kind.NUMBER, 600.0, unit="seconds", at_least=0, at_most=3600, doc=(
        "How long closed segments' index rows wait to be committed in one batch (SD-card wear); 0: at once; "
        "at most an hour, so readers still see the video of the batch."))
    audit_days: float = setting(Kind.NUMBER, 730.0, unit="days", greater_than=0, at_most=MAX_DAYS, doc=(
        "The audit trail (who exported, held, approved what) is kept this long, longer than the video it "
        "describes; what is pruned leaves a signed checkpoint, so the rest still verifies."))

    def __post_init__(self) -> None:
        # Accept a str so callers building records by hand need not wrap it.
        object.__setattr__(self, "data_dir", Path(self.data_dir))


@dataclass(frozen=True)
class RecordingConfig:
    """How camera streams are cut into segments and how connections retry."""

    segment_seconds: float = setting(Kind.NUMBER, 10, unit="seconds", greater_than=0, at_most=600, doc=(
        "Length of one segment file."))
    connect_timeout_seconds: float = setting(Kind.NUMBER, 10, unit="seconds", greater_than=0, at_most=300, doc=(
        "How long opening a camera's stream may take; at most 5 minutes, as nothing is recorded meanwhile."))
    read_timeout_seconds: float = setting(Kind.NUMBER, 5, unit="seconds", greater_than=0, at_most=300, doc=(
        "How long a stream may send nothing before it is reopened; at most 5 minutes, as a frozen stream "
        "records nothing meanwhile."))
    max_backoff_seconds: float = setting(Kind.NUMBER, 2, unit="seconds", greater_than=0, at_most=600, doc=(
        "Longest wait between reconnections: short, so a camera back from a power cut records within seconds; "
        "at most 10 minutes."))
    cameras_per_process: int = setting(Kind.WHOLE_NUMBER, 16, at_least=1, at_most=64, doc=(
        "Cameras recorded by one process, one thread each; 1 isolates each camera, at ~50 MB RSS per process."))


Point = tuple[float, float]
Polygon = tuple[Point, ...]   # normalised picture coordinates, 0..1 from the top left corner


@dataclass(frozen=True)
class Zone:
    """A named area of the picture; when a camera has zones, only motion inside them counts."""

    name: str = setting(Kind.STRING, MISSING, required=True, doc=(
        "The zone's name, shown in its events."))
    polygon: Polygon = setting(Kind.POLYGON, MISSING, required=True, doc=(
        "The zone's outline."))


@dataclass(frozen=True)
class MotionConfig:
    """Motion and tamper detection of one camera. In the file, [motion] gives every camera's defaults and
    [cameras.motion] overrides them for one camera and adds its zones and ignored areas."""

    enabled: bool = setting(Kind.BOOLEAN, True, doc=(
        "Detect motion; video around it is kept as event video."))
    fps: float = setting(Kind.NUMBER, 5.0, unit="pictures per second", greater_than=0, at_most=30, doc=(
        "How many pictures are analysed per second."))
    sensitivity: float = setting(Kind.NUMBER, 0.5, at_least=0, at_most=1, doc=(
        "Higher counts fainter changes as motion."))
    min_area: float = setting(Kind.NUMBER, 0.002, unit="fraction of the picture", greater_than=0, at_most=1, doc=(
        "Smallest moving blob that counts as motion."))
    tamper: bool = setting(Kind.BOOLEAN, True, doc=(
        "Detect a covered, defocused or moved camera."))
    tamper_seconds: float = setting(Kind.NUMBER, 10.0, unit="seconds", at_least=2, at_most=600, doc=(
        "How long a tamper condition must last before it is raised."))
    zones: tuple[Zone, ...] = setting(Kind.ZONES, (), section="cameras.motion", doc=(
        "Named areas of the picture; when a camera has zones, only motion inside them counts."))
    ignore: tuple[Polygon, ...] = setting(Kind.POLYGONS, (), section="cameras.motion", doc=(
        "Areas never counted as motion: trees, a road, an on-screen clock."))


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

    id: str = setting(Kind.CAMERA_ID, MISSING, required=True, doc=(
        "The camera's id, used in directory names and URLs."))
    name: str = setting(Kind.STRING, "", doc=(
        "The camera's name, shown to people; not set: the id."))
    url: str = setting(Kind.URL, "", required=True, doc=(
        "The stream that is recorded, with user and password if the camera needs them."))
    detect_url: str | None = setting(Kind.URL, None, doc=(
        "A smaller sub-stream for motion and tamper detection; not set: the recorded stream."))
    enabled: bool = setting(Kind.BOOLEAN, True, doc=(
        "Record this camera."))
    max_age_days: float | None = setting(Kind.NUMBER, None, unit="days", greater_than=0, at_most=MAX_DAYS, doc=(
        "This camera's own storage.max_age_days; not set: the [storage] setting."))
    event_days: float | None = setting(Kind.NUMBER, None, unit="days", greater_than=0, at_most=MAX_DAYS, doc=(
        "This camera's own storage.event_days; not set: the [storage] setting."))
    retention_max_days: float | None = setting(Kind.NUMBER, None, unit="days", greater_than=0, at_most=MAX_DAYS,
                                               doc=(
        "This camera's own storage.retention_max_days; not set: the [storage] setting."))
    motion: MotionConfig = setting(Kind.TABLE, MotionConfig(), doc=(
        "This camera's own [motion] settings, zones and ignored areas."))

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
class BoxConfig:
    """Which box this is, in export manifests and the audit trail (and on the city's hub)."""

    id: str | None = setting(Kind.CAMERA_ID, None, doc=(
        "The box's id, written like a camera id (`rt08-kuningan`); not set: its host name, made an id."))
    name: str | None = setting(Kind.STRING, None, doc=(
        "The box's name for people (`Pos RT 08 Kuningan`); not set: its id."))

    @property
    def box_id(self) -> str:
        if self.id is not None:
            return self.id
        host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:32].strip("-")
        return host if is_camera_id(host) else "edgenvr"

    @property
    def box_name(self) -> str:
        return self.name if self.name is not None else self.box_id


@dataclass(frozen=True)
class WebConfig:
    """The box's web server (UI and HTTP API): served by `edgenvr run` only when the file has a [web] table."""

    listen: str = setting(Kind.LISTEN, "0.0.0.0:8443", doc=(
        "Address and port the web server listens on (UI and HTTP API)."))
    tls: bool = setting(Kind.BOOLEAN, True, doc=(
        "HTTPS with the box's self-signed certificate, made at the first start (`edgenvr identity` shows its "
        "fingerprint); false: plain HTTP, only behind a reverse proxy that adds TLS."))
    enabled: bool = False   # not a key: true when the config file has a [web] table

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """("0.0.0.0", 8443) from "0.0.0.0:8443", ("::", 8443) from "[::]:8443"; ValueError if it is neither."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address is written in brackets, like [::]:8443")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected an address and a port 1-65535, like 0.0.0.0:8443")
    return host, int(port)


@dataclass(frozen=True)
class TimeWindow:
    """A daily window of the box's local time, from ``start_minute`` up to (not including) ``end_minute``,
    both minutes of the day (0-1439). A window whose end is before its start wraps past midnight:
    22:00-06:00 is 1320-360. Start and end are never equal: that would mean either nothing or the whole day."""

    start_minute: int
    end_minute: int

    def allows(self, minute_of_day: int) -> bool:
        """Whether the window is open at ``minute_of_day`` (0-1439, local time)."""
        if not 0 <= minute_of_day < MINUTES_PER_DAY:
            raise ValueError(f"a minute of the day is 0-{MINUTES_PER_DAY - 1}, got {minute_of_day}")
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute_of_day < self.end_minute
        return minute_of_day >= self.start_minute or minute_of_day < self.end_minute   # wraps past midnight

    def __str__(self) -> str:
        """As the config file writes it: "22:00-06:00"."""
        return f"{_clock_time(self.start_minute)}-{_clock_time(self.end_minute)}"


def _clock_time(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


@dataclass(frozen=True, repr=False)
class SyncConfig:
    """Store-and-forward of clips to the city hub: done by `edgenvr run` only when the file has a [sync] table.
    ``repr()``/``str()`` never show the enrolment token."""

    # "" only so records can be built by keyword and a config without [sync] has one; a [sync] table must give it.
    hub_url: str = setting(Kind.HUB_URL, "", required=True, doc=(
        "The city hub, like https://hub.example.id:8443. http:// only to a proxy on this host or its LAN that "
        "adds TLS: otherwise the clips and the enrolment token cross the network unencrypted."))
    enrolment_token: str | None = setting(Kind.SECRET, None, doc=(
        "The one-time token from the city IT office (`edgenvr hub enrol`), sent once, at the first contact; "
        "the box then signs every request with its own device key. Not set: the box is already enrolled."))
    hub_fingerprint: str | None = setting(Kind.FINGERPRINT, None, doc=(
        "Pins the hub's TLS certificate, self-signed or not: the SHA-256 of its DER bytes, as a browser shows "
        "it; not set: the certificate must be signed by an authority the box trusts."))
    upload_kbps: int = setting(Kind.WHOLE_NUMBER, 0, unit="kbit/s", at_least=0, at_most=MAX_UPLOAD_KBPS, doc=(
        "Upload cap, so syncing leaves room on a shared uplink; 0: no cap."))
    continuous_windows: tuple[TimeWindow, ...] = setting(Kind.TIME_WINDOWS, (), doc=(
        "When continuous video may be sent (events and pulls are sent at any time, first), like "
        "[\"22:00-06:00\"] for the night's idle uplink, in the box's local time: 5-minute pieces from when "
        "syncing began, one per camera queued at a time (if the link falls behind, the ring's oldest video is "
        "skipped, not kept); empty: continuous video is never sent."))
    enabled: bool = False   # not a key: true when the config file has a [sync] table

    def __post_init__(self) -> None:
        # A list would make the frozen record mutable and unhashable.
        object.__setattr__(self, "continuous_windows", tuple(self.continuous_windows))

    def allows_continuous(self, minute_of_day: int) -> bool:
        """Whether continuous video may be sent at ``minute_of_day`` (0-1439, the box's local time)."""
        return any(window.allows(minute_of_day) for window in self.continuous_windows)

    def __repr__(self) -> str:
        # Every field but the token as the dataclass would show it, so a field added later is not left out.
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        if self.enrolment_token is not None:
            shown["enrolment_token"] = REDACTED
        return "SyncConfig(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"


@dataclass(frozen=True, repr=False)
class MqttConfig:
    """Events, camera states and Home Assistant discovery to an MQTT broker: published by `edgenvr run` only when
    the file has an [mqtt] table. ``repr()``/``str()`` never show the password."""

    # "" only so records can be built by keyword and a config without [mqtt] has one; an [mqtt] table must give it.
    host: str = setting(Kind.HOST, "", required=True, doc=(
        "The MQTT broker (Mosquitto, Home Assistant's add-on, ...); a broker that is down or slow never slows "
        "recording: messages wait in memory (the oldest events are dropped first) and the box reconnects."))
    port: int | None = setting(Kind.PORT, None, at_least=1, at_most=65535, doc=(
        "The broker's port; not set: 1883, or 8883 with tls."))
    tls: bool = setting(Kind.BOOLEAN, False, doc=(
        "Connect with TLS; the broker's certificate must be signed by an authority the box trusts, or by ca_file, "
        "or be the one broker_fingerprint pins."))
    ca_file: Path | None = setting(Kind.PATH, None, doc=(
        "With tls: a PEM file of the authority that signed the broker's certificate (a site's own CA); a relative "
        "path is from the config file's directory; not set: the authorities the system trusts."))
    broker_fingerprint: str | None = setting(Kind.FINGERPRINT, None, doc=(
        "With tls: pins the broker's certificate, self-signed or not: the SHA-256 of its DER bytes (`openssl x509 "
        "-noout -fingerprint -sha256 -in cert.pem`); not with ca_file."))
    username: str | None = setting(Kind.STRING, None, doc=(
        "The user the box logs in to the broker as; not set: anonymous."))
    password: str | None = setting(Kind.SECRET, None, doc=(
        "That user's password; never shown in logs or messages."))
    client_id: str | None = setting(Kind.STRING, None, doc=(
        "The box's MQTT client id, unique on the broker; not set: edgenvr-<box id>."))
    topic_prefix: str | None = setting(Kind.MQTT_TOPIC, None, doc=(
        "Where the box publishes: <prefix>/availability (online/offline, retained, the last will says offline), "
        "<prefix>/cameras/<camera>/state, /motion, /tamper, /online, /snapshot (retained) and /events; "
        "not set: edgenvr/<box id>."))
    discovery: bool = setting(Kind.BOOLEAN, True, doc=(
        "Publish Home Assistant discovery configs, so each camera appears with its motion, tamper and online "
        "sensors and its latest event snapshot."))
    discovery_prefix: str = setting(Kind.MQTT_TOPIC, "homeassistant", doc=(
        "Home Assistant's discovery prefix (its MQTT integration's setting)."))
    enabled: bool = False   # not a key: true when the config file has an [mqtt] table

    def __post_init__(self) -> None:
        if self.ca_file is not None:   # accept a str so callers building records by hand need not wrap it
            object.__setattr__(self, "ca_file", Path(self.ca_file))

    @property
    def broker_port(self) -> int:
        """The port connected to: the configured one, else MQTT's registered port (8883 with TLS, 1883 without)."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    def prefix_for(self, box_id: str) -> str:
        return self.topic_prefix if self.topic_prefix is not None else f"edgenvr/{box_id}"

    def client_id_for(self, box_id: str) -> str:
        return self.client_id if self.client_id is not None else f"edgenvr-{box_id}"

    def __repr__(self) -> str:
        # Every field but the password as the dataclass would show it, so a field added later is not left out.
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        if self.password is not None:
            shown["password"] = REDACTED
        return "MqttConfig(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"


@dataclass(frozen=True)
class Config:
    """A whole, validated edgenvr configuration."""

    storage: StorageConfig
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    box: BoxConfig = field(default_factory=BoxConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    cameras: tuple[CameraConfig, ...] = ()
    log_level: str = setting(Kind.LOG_LEVEL, "info", choices=("debug", "info", "warning", "error"),
                             section="logging", name="level", doc=(
        "How much the service logs."))
    source: str = "<string>"   # where the config was read from
    motion_cameras_per_process: int = setting(Kind.WHOLE_NUMBER, 8, at_least=1, at_most=64,
                                              section="motion", name="cameras_per_process", doc=(
        "Motion workers per process, one thread each, like recording.cameras_per_process."))

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


# The TOML tables of a config file, in the order they are checked and documented, and the records whose
# fields declare their keys. [motion] fills every camera's MotionConfig defaults and one Config field.
SECTIONS: dict[str, tuple[type, ...]] = {
    "box": (BoxConfig,),
    "storage": (StorageConfig,),
    "recording": (RecordingConfig,),
    "motion": (MotionConfig, Config),
    "cameras": (CameraConfig,),
    "cameras.motion": (MotionConfig,),
    "cameras.motion.zones": (Zone,),
    "web": (WebConfig,),
    "sync": (SyncConfig,),
    "mqtt": (MqttConfig,),
    "logging": (Config,),
}
CONFIG_KEYS: tuple[ConfigKey, ...] = tuple(
    key for section, records in SECTIONS.items() for record in records for key in keys_of(record, section))
TOP_LEVEL_KEYS: tuple[str, ...] = tuple(dict.fromkeys(section.split(".")[0] for section in SECTIONS))


def section_keys(section: str) -> tuple[ConfigKey, ...]:
    """Every key of the TOML table ``section`` ("storage", "cameras.motion", ...), in order."""
    return tuple(key for key in CONFIG_KEYS if key.section == section)
