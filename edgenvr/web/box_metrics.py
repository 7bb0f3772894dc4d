"""The box's Prometheus metrics (`GET /api/metrics`, web.metrics_exposition): what the box records, keeps and
sends, read at scrape time from where each figure already lives. docs/metrics.md lists every metric.

Owns the box's metric names and what each one means. Sources, all read-only, in ONE read transaction of the
index (one snapshot, so a segment whose batch commits during a scrape is counted once, not twice or never):
- the index's `cameras` rows: each recorder's state and since when, its drop counters (as of its last state
  report), the bytes of video indexed (`written_bytes`, index.writer) and the motion worker's last status
  (state, frames analysed and skipped: written on change and every 5 minutes, at the writer's next commit);
- the closed segment files whose batch is not committed yet (index.queries.unindexed_segments, as every reader
  of the index sees them): added to bytes written and to what the quota counts, so neither waits for a batch;
- the `gaps` rows; the days each tier keeps (retention.report.class_days); the `counters` rows (index.writer's
  commit timing and the ring's size; sync.outbox's clips delivered to the hub); the hub backlog
  (index.queries.backlog);
- the disk and the quota as retention counts them (retention.policy.disk_usage), the temperature
  (core.host_sensors, as the box's report to the hub), and whether the clock is synchronised (core.clock).

Invariants: nothing is counted or kept in this process (a custom collector, no global registry): a scrape costs
a few index seeks per camera and a look at the files of the last batch, and nothing between scrapes. Cameras
are the config's, each shown only to a caller who may see it (camera grants, as /api/cameras); the box-wide
figures are shown to every caller with Permission.READ_METRICS.
Failure paths: no index yet, or one that cannot be read -> 503 (as every route that reads it); a counter row
missing (an index a newer writer has not committed to yet) -> 0; no temperature sensor -> that metric is left
out.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

import edgenvr
from edgenvr.config.records import CameraConfig, Config
from edgenvr.core.clock import Clock
from edgenvr.core.host_sensors import hottest_temperature_c
from edgenvr.core.records import DetectionState, RecorderState, SegmentRecord
from edgenvr.index.queries import (
    DELIVERED_BYTES,
    DELIVERED_CLIPS,
    backlog,
    camera_states,
    unindexed_segments,
)
from edgenvr.index.retention_classes import CLASS_NAMES
from edgenvr.index.writer import (
    COMMIT_MICROSECONDS,
    COMMITS_TIMED,
    INDEXED_BYTES,
    LAST_COMMIT_MS,
)
from edgenvr.retention.policy import disk_usage
from edgenvr.retention.report import class_days
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.access import caller, context
from edgenvr.web.metrics_exposition import encode, metrics_route
from edgenvr.web.request_values import fail

log = logging.getLogger(__name__)

DISABLED = "disabled"   # a camera switched off in the config (as /api/cameras says it)
CAMERA_STATES = (*(str(state) for state in RecorderState), DISABLED)


def _seconds(ms: int | float) -> float:
    return ms / 1000


@dataclass
class BoxMetrics(Collector):
    """The figures of one scrape, read from `conn` (inside a read transaction) when collected."""

    conn: sqlite3.Connection
    config: Config
    layout: StorageLayout
    clock: Clock
    may_see: Callable[[str], bool]

    def collect(self) -> Iterator[Metric]:
        now_ms = self.clock.now_ms()
        cameras = [camera for camera in self.config.cameras if self.may_see(camera.id)]
        rows = {row["id"]: row for row in camera_states(self.conn)}
        written = {row[0]: row[1] for row in self.conn.execute("SELECT id, written_bytes FROM cameras")}
        counters = dict(self.conn.execute("SELECT name, value FROM counters").fetchall())
        # closed files of every camera (not only those shown): the quota counts them all
        recent = {camera.id: unindexed_segments(self.conn, self.layout, camera.id, clock=self.clock)
                  for camera in self.config.cameras}

        yield from self._cameras(cameras, rows, written, recent)
        yield from self._motion(cameras, rows)
        yield from self._gaps(cameras)
        yield from self._retention(cameras)
        yield from self._disk(counters.get(INDEXED_BYTES, 0) + sum(r.bytes for found in recent.values() for r in found))
        yield from self._index(counters)
        yield from self._sync(counters, now_ms)
        yield from self._host()

    def _cameras(self, cameras: list[CameraConfig], rows: dict[str, sqlite3.Row], written: dict[str, int],
                 recent: dict[str, list[SegmentRecord]]) -> Iterator[Metric]:
        state = GaugeMetricFamily("edgenvr_camera_state", "The camera's recorder state: 1 for the state it is in, 0 for"
                                  " the others (unknown: never reported; offline: reconnecting for over 15 s;"
                                  " disabled: switched off in the config)", labels=["camera", "state"])
        since = GaugeMetricFamily("edgenvr_camera_state_since_timestamp_seconds",
                                  "When the camera's recorder entered its state (UTC epoch seconds)", labels=["camera"])
        size = CounterMetricFamily("edgenvr_camera_written_bytes", "Bytes of the camera's closed segment files: indexed,"
                                   " plus those closed since the last index commit (never decreases when the ring"
                                   " deletes video)", labels=["camera"])
        dropped = CounterMetricFamily("edgenvr_camera_dropped_packets", "Packets the camera's recorder dropped since"
                                      " it started, by reason (as of its last state report)",
                                      labels=["camera", "reason"])
        for camera in cameras:
            row = rows.get(camera.id)
            now = DISABLED if not camera.enabled else (row["state"] if row is not None else RecorderState.UNKNOWN)
            for name in CAMERA_STATES:
                state.add_metric([camera.id, name], 1 if name == now else 0)
            if row is not None and row["state_since_ms"] is not None:
                since.add_metric([camera.id], _seconds(row["state_since_ms"]))
            size.add_metric([camera.id], written.get(camera.id, 0) + sum(r.bytes for r in recent[camera.id]))
            for reason, count in sorted(json.loads(row["dropped_json"]).items() if row is not None else ()):
                dropped.add_metric([camera.id, reason], count)
        yield from (state, since, size, dropped)

    def _motion(self, cameras: list[CameraConfig], rows: dict[str, sqlite3.Row]) -> Iterator[Metric]:
        state = GaugeMetricFamily("edgenvr_motion_state", "The camera's motion worker state: 1 for the state it is in,"
                                  " 0 for the others (as of its last status in the index)", labels=["camera", "state"])
        analysed = CounterMetricFamily("edgenvr_motion_frames_analysed", "Frames the camera's motion worker analysed"
                                       " since it started (as of its last status in the index)", labels=["camera"])
        skipped = CounterMetricFamily("edgenvr_motion_frames_skipped", "Frames the camera's motion worker skipped"
                                      " because it fell behind, since it started (as of its last status in the index)",
                                      labels=["camera"])
        when = GaugeMetricFamily("edgenvr_motion_status_timestamp_seconds", "When the camera's motion worker sent the"
                                 " status these figures are from (written on change and every 5 minutes, at the"
                                 " next index commit)", labels=["camera"])
        for camera in cameras:
            row = rows.get(camera.id)
            status = json.loads(row["motion_json"]) if row is not None else {}
            if not status:
                continue   # no motion worker has reported for this camera (motion off, or not started yet)
            for name in DetectionState:
                state.add_metric([camera.id, str(name)], 1 if status.get("state") == name else 0)
            analysed.add_metric([camera.id], status.get("analysed", 0))
            skipped.add_metric([camera.id], status.get("dropped", 0))
            if status.get("time_ms") is not None:
                when.add_metric([camera.id], _seconds(status["time_ms"]))
        yield from (state, analysed, skipped, when)

    def _gaps(self, cameras: list[CameraConfig]) -> Iterator[Metric]:
        count = CounterMetricFamily("edgenvr_camera_gaps", "Gaps in the camera's recording the index holds (closed"
                                    " ones; a camera not recording now shows in edgenvr_camera_state)",
                                    labels=["camera"])
        seconds = CounterMetricFamily("edgenvr_camera_gap_seconds", "Total length of those gaps", labels=["camera"])
        found = {row[0]: (row[1], row[2]) for row in self.conn.execute(
            "SELECT camera, COUNT(*), COALESCE(SUM(end_ms - start_ms), 0) FROM gaps GROUP BY camera")}
        for camera in cameras:
            gaps, length_ms = found.get(camera.id, (0, 0))
            count.add_metric([camera.id], gaps)
            seconds.add_metric([camera.id], _seconds(length_ms))
        yield from (count, seconds)

    def _retention(self, cameras: list[CameraConfig]) -> Iterator[Metric]:
        days = GaugeMetricFamily("edgenvr_retention_kept_days", "Days of the camera's video the index holds in each"
                                 " retention tier, its oldest segment's start to its newest one's end (as `edgenvr"
                                 " retention` says); a tier without video is left out", labels=["camera", "tier"])
        for (camera, retention_class), kept in sorted(class_days(self.conn, [c.id for c in cameras]).items()):
            days.add_metric([camera, CLASS_NAMES[retention_class]], kept)
        yield days

    def _disk(self, segment_bytes: int) -> Iterator[Metric]:
        disk = shutil.disk_usage(self.layout.data_dir)   # one look for the size and the quota's figures
        usage = disk_usage(self.layout, self.config.storage, segment_bytes, lambda _path: disk)
        for name, text, value in (
                ("edgenvr_disk_size_bytes", "Size of the data directory's filesystem", disk.total),
                ("edgenvr_disk_free_bytes", "Free space on the data directory's filesystem", usage.free),
                ("edgenvr_storage_used_bytes", "What the quota counts: segment files (indexed and closed since the"
                 " last commit) and the index", usage.used),
                ("edgenvr_storage_quota_bytes", "The quota ([storage] quota, in bytes of this filesystem)", usage.limit),
                ("edgenvr_storage_min_free_bytes", "The free-space floor ([storage] min_free)", usage.min_free)):
            yield GaugeMetricFamily(name, text, value=value)

    def _index(self, counters: dict[str, int]) -> Iterator[Metric]:
        yield SummaryMetricFamily("edgenvr_index_commit_seconds", "Duration of the index writer's commits (each one"
                                  " counted from the commit after it); rate(_sum)/rate(_count) is the mean latency",
                                  count_value=counters.get(COMMITS_TIMED, 0),
                                  sum_value=counters.get(COMMIT_MICROSECONDS, 0) / 1e6)
        if LAST_COMMIT_MS in counters:
            yield GaugeMetricFamily("edgenvr_index_last_commit_timestamp_seconds", "When the index writer last"
                                    " committed (segment rows wait up to [storage] index_commit_seconds; state changes"
                                    " and events a second)", value=_seconds(counters[LAST_COMMIT_MS]))

    def _sync(self, counters: dict[str, int], now_ms: int) -> Iterator[Metric]:
        waiting = backlog(self.conn)
        yield GaugeMetricFamily("edgenvr_sync_backlog_clips", "Clips queued for the city hub, not receipted yet",
                                value=waiting.count)
        yield GaugeMetricFamily("edgenvr_sync_backlog_bytes", "Bytes of the queued clips already built (a clip's size is"
                                " known once it is exported)", value=waiting.bytes_known)
        yield GaugeMetricFamily("edgenvr_sync_backlog_oldest_age_seconds", "Age of the oldest video queued for the hub"
                                " (its clip's start); 0 with nothing queued",
                                value=max(_seconds(now_ms - waiting.oldest_ms), 0) if waiting.oldest_ms is not None else 0)
        yield CounterMetricFamily("edgenvr_sync_delivered_clips", "Clips the hub has receipted",
                                  value=counters.get(DELIVERED_CLIPS, 0))
        yield CounterMetricFamily("edgenvr_sync_delivered_bytes", "Bytes of the clips the hub has receipted (counted"
                                  " when each is receipted: rate() of it is the upload rate)",
                                  value=counters.get(DELIVERED_BYTES, 0))

    def _host(self) -> Iterator[Metric]:
        temperature = hottest_temperature_c()
        if temperature is not None:
            yield GaugeMetricFamily("edgenvr_cpu_temperature_celsius", "The hottest temperature sensor the kernel"
                                    " reports (a Pi's SoC, a PC's CPU package)", value=temperature)
        yield GaugeMetricFamily("edgenvr_clock_synchronised", "1 if the kernel (or systemd-timesyncd) says the wall"
                                " clock is synchronised, else 0", value=1 if self.clock.synchronised() else 0)
        info = GaugeMetricFamily("edgenvr_box_info", "The box's id and edgenvr version (always 1)",
                                 labels=["box", "version"])
        info.add_metric([self.config.box.box_id, edgenvr.__version__], 1)
        yield info


async def scrape(request: web.Request) -> web.Response:
    ctx = context(request)
    may_see = caller(request).user.may_see
    accept = request.headers.get("Accept", "")

    def collect(conn: sqlite3.Connection) -> tuple[bytes, str]:
        conn.execute("BEGIN")   # one snapshot for every figure (the connection closes after, ending it)
        return encode(BoxMetrics(conn, ctx.config, ctx.layout, ctx.clock, may_see), accept)
    try:
        body, content_type = await ctx.read(collect)
    except FileNotFoundError:
        fail(web.HTTPServiceUnavailable, "nothing has been recorded yet (no index)")
    except sqlite3.Error as error:
        log.warning("metrics: the index cannot be read: %s", error)
        fail(web.HTTPServiceUnavailable, "the index cannot be read right now; try again")
    return web.Response(body=body, headers={"Content-Type": content_type})


ROUTES = [metrics_route(scrape, "The box's Prometheus metrics: cameras (state, bytes written, drops, gaps, motion),"
                                " disk and quota, days kept per tier, index commits, sync backlog and deliveries,"
                                " temperature (docs/metrics.md)")]
