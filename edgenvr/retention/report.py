"""What retention keeps and what it is about to do (`edgenvr retention`).

For each camera: how many days and bytes of continuous, event, held and awaiting-upload video (clips queued
for the city hub) are on disk, what the next sweep would delete and why; for the disk: how full it is
against the quota and min_free, what held video and video awaiting upload keep there whatever the quota, the
write rate of the last hour, and when at that rate the ring must start deleting for space.

This module owns the report and decides nothing: the rules and the sweep's steps are retention.policy's
(camera_rules; expired_events, age_victims, pressure_victims and unsent_victims with choose_until), counted
here step by step instead of carried out, so the report cannot drift from what the sweep does. It only reads
the index (a read-only connection is enough) and asks the filesystem for its free space. `class_days` gives the
report's days per class by index seeks alone, for readers that ask every minute (the metrics route).
"""

from __future__ import annotations

import heapq
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS
from edgenvr.index.recording_timeline import timeline_now
from edgenvr.index.retention_classes import (
    AWAITING_UPLOAD,
    CLASS_NAMES,
    CONTINUOUS,
    DELETABLE_BELOW,
    EVENT,
    HOLD,
    LONGEST_SEGMENT_MS,
    classes_after,
)
from edgenvr.retention.policy import (
    EXPIRED_EVENT_WITH_VIDEO,
    FLOOR,
    AgeRule,
    CameraRules,
    DiskSpace,
    DiskUsage,
    age_victims_total,
    camera_rules,
    choose_until,
    disk_usage,
    expired_events,
    expired_events_params,
    headroom_bytes,
    pressure_victims,
    ring_key,
    sweep_cameras,
    unsent_victims,
)
from edgenvr.storage.layout import StorageLayout

RATE_WINDOW_MS = HOUR_MS   # the write rate is that of the last hour (or since the first segment, if less)


@dataclass(frozen=True)
class ClassSpan:
    """The video of one camera in one retention class."""

    retention_class: int
    segments: int = 0
    bytes: int = 0
    oldest_ms: int | None = None   # start of the oldest segment
    newest_ms: int | None = None   # end of the newest segment

    @property
    def days(self) -> float:
        if self.oldest_ms is None or self.newest_ms is None:
            return 0.0
        return (self.newest_ms - self.oldest_ms) / DAY_MS


@dataclass(frozen=True)
class Due:
    """Something the next sweep would delete."""

    why: str        # max_age_days | event_days | retention_max_days | quota reached | free space below min_free
    what: str       # continuous | event | awaiting upload (segments) | events (event rows with their snapshots)
    count: int
    bytes: int = 0  # 0 for events (snapshots are not counted)


@dataclass(frozen=True)
class CameraRetention:
    camera: str
    in_config: bool
    max_age_days: float | None
    event_days: float
    retention_max_days: float | None
    continuous: ClassSpan
    event: ClassSpan
    held: ClassSpan
    awaiting_upload: ClassSpan    # video of clips queued for the hub (kept like held video but for min_free)
    holds_in_force: int
    clips_queued: int             # outbox rows of the camera waiting for the hub
    write_rate: float             # bytes per second over the rate window
    next_sweep: tuple[Due, ...]


@dataclass(frozen=True)
class DiskOutlook:
    used_bytes: int        # what the quota counts: segments and the index
    quota_bytes: int
    free_bytes: int
    min_free_bytes: int
    headroom_bytes: int    # kept free for what is written before the next sweep
    need_bytes: int        # what the next sweep must free for space (0: nothing)
    need_why: str
    write_rate: float      # bytes per second, all cameras, over the rate window
    rate_window_ms: int
    room_bytes: int        # until the quota or the floor is reached (negative: past it)
    full_at_ms: int | None  # when the ring must start deleting for space at this rate (at_ms: it is already);
    #                         None: nothing is being written
    days_at_rate: float | None  # days of video (held and awaiting-upload video aside) the quota and floor hold
    #                             at this rate
    held_bytes: int = 0             # kept whatever the quota and min_free, until the hold is released
    awaiting_upload_bytes: int = 0  # kept whatever the quota until the hub has it; min_free may delete it
    kept_over_quota_bytes: int = 0  # how far those two keep the ring over the quota (0: within it)


@dataclass(frozen=True)
class RetentionReport:
    at_ms: int
    cameras: tuple[CameraRetention, ...]
    disk: DiskOutlook


def build_report(conn: sqlite3.Connection, config: Config, layout: StorageLayout, at_ms: int | None = None, *,
                 clock: Clock = SYSTEM_CLOCK, disk_space: DiskSpace = shutil.disk_usage) -> RetentionReport:
    """The report at `at_ms` (default: now on `clock`); `disk_space` measures the data dir's filesystem."""
    at = clock.now_ms() if at_ms is None else at_ms
    cameras = sweep_cameras(conn, config)
    # ages are counted on the recording timeline, as the sweep counts them (retention.policy.AgeRule)
    timeline_at = timeline_now(conn, clock) + (at - clock.now_ms())
    rules = {camera: camera_rules(config, camera, timeline_at) for camera in cameras}
    spans = _class_spans(conn)
    rates, window_ms = _write_rates(conn, at)
    total_rate = sum(rates.values())

    # What the next sweep deletes, step by step as the sweep does it, with its queries (retention.policy).
    due: dict[str, list[Due]] = {camera: [] for camera in cameras}
    reclassed = _expiring_events(conn, rules, due)
    age_bytes = _due_by_age(conn, rules, reclassed, due)
    usage = disk_usage(layout, config.storage, sum(span.bytes for span in spans.values()), disk_space)
    headroom = headroom_bytes(total_rate, config.storage, config.recording.segment_seconds)
    need, why = usage.bytes_to_free(headroom)
    _due_for_space(conn, rules, reclassed, need - age_bytes, why, usage.floor_short(headroom) - age_bytes, due)

    return RetentionReport(at, _camera_reports(conn, config, cameras, spans, rates, due),
                           _disk_outlook(usage, headroom, need, why, total_rate, window_ms, spans, at))


def _class_spans(conn: sqlite3.Connection) -> dict[tuple[str, int], ClassSpan]:
    """(camera, class) -> its video. Needs every row: the report's one cost that grows with the index (~1 s
    per million segments on a PC). NOT INDEXED: reading the table in order and grouping in a small temp
    b-tree beats following the (camera, retention_class) index into the table at random, on an SD card most
    of all."""
    spans: dict[tuple[str, int], ClassSpan] = {}
    for row in conn.execute("SELECT camera, retention_class, COUNT(*), SUM(bytes), MIN(start_ms), MAX(end_ms)"
                            " FROM segments NOT INDEXED WHERE deleting = 0 GROUP BY camera, retention_class"):
        spans[(row[0], row[1])] = ClassSpan(row[1], row[2], row[3], row[4], row[5])
    return spans


def class_days(conn: sqlite3.Connection, cameras: list[str]) -> dict[tuple[str, int], float]:
    """(camera, class) -> the days of video it keeps (ClassSpan.days: its oldest segment's start to its newest
    one's end), for classes that hold video. Cheap enough to ask often (the metrics route, web.box_metrics, on
    every scrape): a few seeks at both ends of segments_camera_class per camera and class instead of the
    report's scan of every row. The newest end is the latest end among the segments starting within a longest
    segment of the newest start (segments are bounded in length)."""
    found: dict[tuple[str, int], float] = {}
    for camera in cameras:
        for retention_class in CLASS_NAMES:
            ends = []
            for order in ("", "DESC"):
                row = conn.execute(
                    "SELECT start_ms FROM segments INDEXED BY segments_camera_class WHERE camera = ?"
                    f" AND retention_class = ? AND deleting = 0 ORDER BY start_ms {order} LIMIT 1",
                    (camera, retention_class)).fetchone()
                ends.append(None if row is None else row[0])
            oldest, newest_start = ends
            if oldest is None or newest_start is None:
                continue
            newest = conn.execute(
                "SELECT MAX(end_ms) FROM segments INDEXED BY segments_camera_class WHERE camera = ?"
                " AND retention_class = ? AND deleting = 0 AND start_ms >= ?",
                (camera, retention_class, newest_start - LONGEST_SEGMENT_MS)).fetchone()[0]
            found[(camera, retention_class)] = ClassSpan(retention_class, oldest_ms=oldest, newest_ms=newest).days
    return found


def _write_rates(conn: sqlite3.Connection, at: int) -> tuple[dict[str, float], int]:
    """Bytes per second each camera wrote over the rate window ending at `at`, and the window in ms."""
    oldest = conn.execute("SELECT MIN(start_ms) FROM segments").fetchone()[0]
    window_start = max(at - RATE_WINDOW_MS, oldest if oldest is not None else at)
    window_ms = max(at - window_start, 1)
    rates = {row[0]: row[1] * 1000 / window_ms for row in conn.execute(
        "SELECT camera, SUM(bytes) FROM segments WHERE start_ms >= ? AND deleting = 0 GROUP BY camera",
        (window_start,))}
    return rates, window_ms


def _expiring_events(conn: sqlite3.Connection, rules: dict[str, CameraRules],
                     due: dict[str, list[Due]]) -> dict[int, dict[str, Any]]:
    """Step 1 of a sweep: the events it deletes (added to `due`), and the class their video has once they
    are gone. Returns segment id -> the row with its class after step 1 (`was`: its class now)."""
    reclassed: dict[int, dict[str, Any]] = {}
    for camera_rules_ in rules.values():
        expiring = expired_events(conn, camera_rules_)
        if expiring:
            due[camera_rules_.camera].append(Due(camera_rules_.events_why, "events", len(expiring)))
        for event in expiring:
            if event["keep_from_ms"] is None:
                continue
            for row in classes_after(conn, event["camera"], event["keep_from_ms"], event["keep_to_ms"],
                                     f"NOT ({EXPIRED_EVENT_WITH_VIDEO})", expired_events_params(camera_rules_)):
                if row["class"] != row["retention_class"]:
                    reclassed[row["id"]] = {**dict(row), "retention_class": row["class"], "was": row["retention_class"]}
    return reclassed


def _due_by_age(conn: sqlite3.Connection, rules: dict[str, CameraRules], reclassed: dict[int, dict[str, Any]],
                due: dict[str, list[Due]]) -> int:
    """Step 2: what the age rules delete (added to `due`), counted on the index and corrected for what step 1
    re-classifies. Returns the bytes."""
    by_age: dict[tuple[str, str, str], list[int]] = {}
    for camera_rules_ in rules.values():
        for rule in camera_rules_.segments:
            by_age[(rule.camera, rule.why, CLASS_NAMES[rule.retention_class])] = list(age_victims_total(conn, rule))
    for row in reclassed.values():
        for retention_class, sign in ((row["was"], -1), (row["retention_class"], 1)):
            rule = _age_rule(rules, row["camera"], retention_class, row["timeline_ms"])
            if rule is not None:
                entry = by_age.setdefault((rule.camera, rule.why, CLASS_NAMES[retention_class]), [0, 0])
                entry[0] += sign
                entry[1] += sign * row["bytes"]
    age_bytes = 0
    for (camera, why_, what), (count, size) in by_age.items():
        if count:
            due.setdefault(camera, []).append(Due(why_, what, count, size))
            age_bytes += size
    return age_bytes


def _due_for_space(conn: sqlite3.Connection, rules: dict[str, CameraRules], reclassed: dict[int, dict[str, Any]],
                   need: int, why: str, floor_need: int, due: dict[str, list[Due]]) -> None:
    """Step 3: what the ring deletes for space once steps 1-2 are done (added to `due`), `need` bytes in its
    order; then, if that is every continuous and event segment and the free-space floor still needs more
    (`floor_need`), video awaiting upload oldest first, as the sweep does."""
    if need <= 0:
        return
    pressure: dict[tuple[str, str], list[int]] = {}
    ring = choose_until(_ring_order(conn, rules, reclassed), need)
    floor_need -= sum(row["bytes"] for row in ring)
    unsent = choose_until(_unsent_order(conn, reclassed), floor_need) if floor_need > 0 else []
    for row, reason in [*((row, why) for row in ring), *((row, FLOOR) for row in unsent)]:
        entry = pressure.setdefault((row["camera"], CLASS_NAMES[row["retention_class"]], reason), [0, 0])
        entry[0] += 1
        entry[1] += row["bytes"]
    for (camera, what, reason), (count, size) in pressure.items():
        due.setdefault(camera, []).append(Due(reason, what, count, size))


def _camera_reports(conn: sqlite3.Connection, config: Config, cameras: list[str],
                    spans: dict[tuple[str, int], ClassSpan], rates: dict[str, float],
                    due: dict[str, list[Due]]) -> tuple[CameraRetention, ...]:
    holds = {row[0]: row[1] for row in conn.execute(
        "SELECT camera, COUNT(*) FROM holds WHERE released_ms IS NULL GROUP BY camera")}
    queued = {row[0]: row[1] for row in conn.execute(
        "SELECT camera, COUNT(*) FROM outbox WHERE state = 'queued' GROUP BY camera")}
    configured = {camera.id for camera in config.cameras}
    report_cameras = []
    for camera in sorted(set(cameras) | set(due)):
        days = config.retention_days(camera)
        report_cameras.append(CameraRetention(
            camera, camera in configured, days.max_age_days, days.event_days, days.retention_max_days,
            spans.get((camera, CONTINUOUS), ClassSpan(CONTINUOUS)), spans.get((camera, EVENT), ClassSpan(EVENT)),
            spans.get((camera, HOLD), ClassSpan(HOLD)),
            spans.get((camera, AWAITING_UPLOAD), ClassSpan(AWAITING_UPLOAD)), holds.get(camera, 0),
            queued.get(camera, 0), rates.get(camera, 0.0), tuple(due.get(camera, ()))))
    return tuple(report_cameras)


def _disk_outlook(usage: DiskUsage, headroom: int, need: int, why: str, total_rate: float, window_ms: int,
                  spans: dict[tuple[str, int], ClassSpan], at: int) -> DiskOutlook:
    room = min(usage.limit - usage.used, usage.free - usage.min_free)
    if room <= 0 or need > 0:   # the ring is deleting for space already (need counts the headroom too)
        full_at: int | None = at
    elif total_rate > 0:
        full_at = at + int(room / total_rate * 1000)
    else:
        full_at = None
    kept = {cls: sum(span.bytes for (_, of), span in spans.items() if of == cls) for cls in (HOLD, AWAITING_UPLOAD)}
    ring_bytes = sum(span.bytes for (_, cls), span in spans.items() if cls not in kept)
    days_at_rate = (ring_bytes + room) / total_rate / (DAY_MS // 1000) if total_rate > 0 else None
    # what is left over the quota once every continuous and event segment is gone: the quota cannot go further
    over_quota = max(min(usage.used - usage.limit - ring_bytes, sum(kept.values())), 0)
    return DiskOutlook(usage.used, usage.limit, usage.free, usage.min_free, headroom, need, why, total_rate,
                       window_ms, room, full_at, days_at_rate, kept[HOLD], kept[AWAITING_UPLOAD], over_quota)


def _age_rule(rules: dict[str, CameraRules], camera: str, retention_class: int, timeline_ms: int) -> AgeRule | None:
    camera_rules_ = rules.get(camera)
    if camera_rules_ is None:
        return None
    return next((rule for rule in camera_rules_.segments
                 if rule.applies(camera, retention_class, timeline_ms)), None)


def _ring_order(conn: sqlite3.Connection, rules: dict[str, CameraRules],
                reclassed: dict[int, dict[str, Any]]) -> Iterator[Any]:
    """The ring's deletion order as the sweep meets it in step 3: with the classes step 1 sets, and without
    what the age rules of step 2 have deleted by then."""
    indexed = (row for row in pressure_victims(conn) if row["id"] not in reclassed)
    moved = sorted((row for row in reclassed.values() if row["retention_class"] < DELETABLE_BELOW),
                   key=ring_key)
    for row in heapq.merge(indexed, moved, key=ring_key):
        if _age_rule(rules, row["camera"], row["retention_class"], row["timeline_ms"]) is None:
            yield row


def _unsent_order(conn: sqlite3.Connection, reclassed: dict[int, dict[str, Any]]) -> Iterator[Any]:
    """The order in which the free-space floor deletes video awaiting upload, with the classes step 1 sets
    (no age rule deletes it)."""
    def key(row: Any) -> tuple[int, int]:
        return row["timeline_ms"], row["start_ms"]

    indexed = (row for row in unsent_victims(conn) if row["id"] not in reclassed)
    moved = sorted((row for row in reclassed.values() if row["retention_class"] == AWAITING_UPLOAD), key=key)
    yield from heapq.merge(indexed, moved, key=key)


# -- output ---------------------------------------------------------------------------------------

def report_to_json(report: RetentionReport) -> list[dict[str, Any]]:
    """One object per camera, then one for the disk (`--json` prints one per line)."""
    objects: list[dict[str, Any]] = []
    for camera in report.cameras:
        body = asdict(camera)
        for name in ("continuous", "event", "held", "awaiting_upload"):
            body[name]["days"] = round(getattr(camera, name).days, 6)
            del body[name]["retention_class"]
        body["write_rate_bytes_per_s"] = round(body.pop("write_rate"), 3)
        body["next_sweep"] = [asdict(d) for d in camera.next_sweep]
        objects.append({"type": "camera", **body})
    disk = asdict(report.disk)
    disk["write_rate_bytes_per_s"] = round(disk.pop("write_rate"), 3)
    objects.append({"type": "disk", "at_ms": report.at_ms, **disk})
    return objects


def format_report(report: RetentionReport) -> list[str]:
    lines = []
    for camera in report.cameras:
        limits = [f"max_age_days {_days(camera.max_age_days)}", f"event_days {_days(camera.event_days)}",
                  f"retention_max_days {_days(camera.retention_max_days)}"]
        lines.append(f"{camera.camera}{'' if camera.in_config else ' (not in the config)'}: {', '.join(limits)}")
        for label, span in (("continuous", camera.continuous), ("event", camera.event), ("held", camera.held),
                            ("awaiting upload", camera.awaiting_upload)):
            if span.segments == 0:
                lines.append(f"  {label:<15} none")
            else:
                lines.append(f"  {label:<15} {span.days:7.2f} days {_mb(span.bytes):>11}  {span.segments} segments,"
                             f" {format_ms(span.oldest_ms)} .. {format_ms(span.newest_ms)}")
        if camera.holds_in_force:
            lines.append(f"  holds in force: {camera.holds_in_force} (edgenvr hold list)")
        if camera.clips_queued:
            lines.append(f"  clips waiting for the hub: {camera.clips_queued} (edgenvr status)")
        lines.append(f"  writing {_mb(camera.write_rate * 3600)}/h")
        if not camera.next_sweep:
            lines.append("  next sweep: nothing to delete")
        for item in camera.next_sweep:
            size = f" ({_mb(item.bytes)})" if item.what != "events" else ""
            noun = "events" if item.what == "events" else f"{item.what} segments"
            lines.append(f"  next sweep: delete {item.count} {noun}{size}: {item.why}")
    disk = report.disk
    lines.append(f"disk: {_mb(disk.used_bytes)} used of quota {_mb(disk.quota_bytes)}; {_mb(disk.free_bytes)} free"
                 f" (min_free {_mb(disk.min_free_bytes)})")
    if disk.held_bytes or disk.awaiting_upload_bytes:
        lines.append(f"  kept whatever the quota: held video {_mb(disk.held_bytes)}, video awaiting upload"
                     f" {_mb(disk.awaiting_upload_bytes)} (held video is never deleted; video awaiting upload only"
                     " by min_free, after all other video)")
    if disk.kept_over_quota_bytes:
        lines.append(f"  held video and video awaiting upload keep the ring {_mb(disk.kept_over_quota_bytes)} over"
                     " the quota")
    if disk.need_bytes:
        lines.append(f"  next sweep must free {_mb(disk.need_bytes)}: {disk.need_why}")
    window = f"last {disk.rate_window_ms / MINUTE_MS:.0f} min"
    if disk.full_at_ms is None:
        lines.append(f"  nothing written in the {window}: not filling")
    elif disk.full_at_ms <= report.at_ms:
        lines.append(f"  writing {_mb(disk.write_rate * 3600)}/h ({window}): full now, the ring is deleting"
                     " the oldest video to make room")
    else:
        hours = (disk.full_at_ms - report.at_ms) / HOUR_MS
        lines.append(f"  writing {_mb(disk.write_rate * 3600)}/h ({window}): full in {hours:.1f} h"
                     f" ({format_ms(disk.full_at_ms)}), then the ring deletes the oldest video")
    if disk.days_at_rate is not None:
        lines.append(f"  at this rate the disk holds {disk.days_at_rate:.1f} days of video (held video and video"
                     " awaiting upload aside)")
    return lines


def _mb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if abs(size) >= 10e9 else f"{size / 1e6:.1f} MB"


def _days(days: float | None) -> str:
    return "none" if days is None else f"{days:g}"
