"""Where files live under the data directory. Paths are built only from validated camera ids and integers.

Layout: <data>/segments/<camera>/<YYYY-MM-DD>/<HH>/<start-epoch-ms>.mp4 (UTC date and hour);
an open segment is written as <start-epoch-ms>.mp4.partial beside it.
Event snapshots: <data>/snapshots/<camera>/<YYYY-MM-DD>/<start-epoch-ms>-<kind>[-<subkind>].jpg;
reference views: <data>/references/<camera>/<approved-epoch-ms>.png.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.units import LATEST_TIME_MS, SECOND_MS

SEGMENT_SUFFIX = ".mp4"
PARTIAL_EXTRA = ".partial"   # an open segment: <start-epoch-ms>.mp4.partial
# Any epoch: a box without a real-time clock records at 1970 until NTP answers (`95000.mp4`, even `0.mp4`).
# Only the name segment_path itself builds (no leading zero: `095000.mp4` would be a file no row's path
# reaches, so the ring could never delete it), and no later than the year 9999 (15 digits), as it can.
_SEGMENT_NAME = re.compile(r"^(0|[1-9]\d{0,14})\.mp4(\.partial)?$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageLayout:
    data_dir: Path

    @property
    def segments_dir(self) -> Path:
        return self.data_dir / "segments"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    def index_set_aside_path(self, at_ms: int) -> Path:
        """Where an unusable index is moved, never deleted (index.recovery): index.sqlite3.corrupt-<epoch ms>."""
        return self.data_dir / f"{self.index_path.name}.corrupt-{int(at_ms)}"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def device_key_path(self) -> Path:
        """The box's private Ed25519 key (evidence.identity): 0600, never deleted, never exported."""
        return self.data_dir / "device.key"

    @property
    def device_public_key_path(self) -> Path:
        return self.data_dir / "device.pub"

    @property
    def audit_path(self) -> Path:
        """The audit trail (evidence.audit): its own SQLite file, so it outlives a rebuilt index."""
        return self.data_dir / "audit.sqlite3"

    @property
    def hub_key_path(self) -> Path:
        """The city hub's receipt key (public, PEM), learnt at enrolment (sync.uploader): receipts that do not
        verify with it are not receipts."""
        return self.data_dir / "hub.pub"

    @property
    def outbox_dir(self) -> Path:
        """Where the sync process builds a clip (an export's folder, then its zip) while it is being sent."""
        return self.data_dir / "outbox"

    @property
    def users_path(self) -> Path:
        """The web users' accounts (web.accounts): its own SQLite file like the audit trail, so accounts outlive
        an index rebuild."""
        return self.data_dir / "users.sqlite3"

    @property
    def web_tls_key_path(self) -> Path:
        """The web server's TLS key (web.tls_certificate): ECDSA P-256, 0600; not the device key (browsers
        do not accept Ed25519 certificates)."""
        return self.data_dir / "web-tls.key"

    @property
    def web_tls_certificate_path(self) -> Path:
        return self.data_dir / "web-tls.crt"

    @property
    def exports_dir(self) -> Path:
        """Where the web server builds an export's folder and zip; both are removed once sent."""
        return self.data_dir / "exports"

    @property
    def provisioning_state_path(self) -> Path:
        """What `edgenvr provision` has applied of a provisioning file (runtime.provisioning): its SHA-256 and
        the steps done, so a run cut by a power loss resumes; then when it was completed. Holds no secret."""
        return self.data_dir / "provisioning.json"

    @property
    def supervisor_lock(self) -> Path:
        return self.data_dir / ".supervisor.lock"

    @property
    def recorders_lock(self) -> Path:
        return self.data_dir / ".recorders.lock"

    def camera_dir(self, camera_id: str) -> Path:
        if not is_camera_id(camera_id):
            raise ValueError(f"invalid camera id {camera_id!r}")
        return self.segments_dir / camera_id

    def segment_path(self, camera_id: str, start_ms: int) -> Path:
        if not is_camera_id(camera_id):
            raise ValueError(f"invalid camera id {camera_id!r}")
        when = _utc(start_ms)
        # one joinpath: the sweep builds thousands of these, and each pathlib `/` parses again
        return self.segments_dir.joinpath(camera_id, f"{when:%Y-%m-%d}", f"{when:%H}", f"{int(start_ms)}{SEGMENT_SUFFIX}")

    def snapshot_path(self, camera_id: str, start_ms: int, kind: str, subkind: str = "") -> Path:
        self.camera_dir(camera_id)  # validates the id
        day = _utc(start_ms).strftime("%Y-%m-%d")
        name = "-".join(part for part in (str(int(start_ms)), kind, subkind) if part)
        return self.data_dir / "snapshots" / camera_id / day / f"{name}.jpg"

    def reference_path(self, camera_id: str, approved_ms: int) -> Path:
        self.camera_dir(camera_id)
        return self.data_dir / "references" / camera_id / f"{int(approved_ms)}.png"

    def cameras_on_disk(self) -> list[str]:
        """Camera ids that have a segment directory (whatever the config says now)."""
        if not self.segments_dir.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.segments_dir) if e.is_dir() and is_camera_id(e.name))

    def hour_dirs(self, camera_id: str) -> list[tuple[int, Path]]:
        """(hour start ms, directory) of every hour directory of a camera, oldest first. A directory this
        layout did not make is logged and left alone."""
        result: list[tuple[int, Path]] = []
        camera_dir = self.camera_dir(camera_id)
        for day in os.scandir(camera_dir) if camera_dir.is_dir() else ():
            for hour in os.scandir(day.path) if day.is_dir() else ():
                try:
                    when = dt.datetime.strptime(f"{day.name} {hour.name}", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)
                except ValueError:
                    log.warning("unexpected directory %s left alone", hour.path)
                    continue
                if hour.is_dir():
                    result.append((int(when.timestamp()) * SECOND_MS, Path(hour.path)))
        return sorted(result)

    def relative(self, path: Path) -> str:
        """Index rows store paths relative to the data dir, so a moved data dir keeps working."""
        return path.relative_to(self.data_dir).as_posix()

    def absolute(self, relative_path: str) -> Path:
        return self.data_dir / relative_path

    def quarantine_paths(self, path: Path) -> tuple[Path, Path]:
        """Where a file of the segment tree (<camera>/<day>/<hour>/<name>) goes in quarantine, named
        <camera>-<name> so names stay unique across cameras, and the text file beside it that says why."""
        target = self.quarantine_dir / f"{path.parent.parent.parent.name}-{path.name}"
        return target, target.with_name(target.name + ".reason.txt")


def _utc(time_ms: int) -> dt.datetime:
    """The UTC date and time of an epoch-ms time; a time no date directory can name raises ValueError."""
    try:
        return dt.datetime.fromtimestamp(time_ms / 1000, dt.timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"time {time_ms!r} ms has no date") from exc


def partial_path(final_path: Path) -> Path:
    return final_path.with_name(final_path.name + PARTIAL_EXTRA)


def final_path_of_partial(partial: Path) -> Path:
    return partial.with_name(partial.name[: -len(PARTIAL_EXTRA)])


def remux_path_of_partial(partial: Path) -> Path:
    """Where a torn partial's readable prefix is remuxed before it replaces the final name."""
    return partial.with_name(partial.name + ".remux")


def sqlite_companions(database: Path) -> tuple[Path, Path]:
    """The -wal and -shm files SQLite keeps beside a database in WAL mode (they move with it)."""
    return database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")


def parse_segment_name(name: str) -> tuple[int, bool] | None:
    """(start_ms, is_partial) for a segment file name, None for anything else."""
    match = _SEGMENT_NAME.match(name)
    if not match or int(match.group(1)) > LATEST_TIME_MS:
        return None
    return int(match.group(1)), match.group(2) is not None
