"""The city hub's Prometheus metrics (`GET /api/metrics`, web.metrics_exposition): its boxes, the clips they
sent, the uploads under way, remote pulls, and each box's backlog as it last reported it, read from the hub's
database at scrape time. docs/metrics.md lists every metric.

Owns the hub's metric names and what each one means. Sources: the boxes, clips, uploads and pulls tables
(hub.hub_database), and the fleet view (hub.fleet: each box's last report and its flags, computed as the fleet
page computes them).

Invariants: every figure is read from the database when a scrape asks; nothing is counted in a worker's memory,
so with `[hub] workers > 1` on PostgreSQL every worker answers the same whichever one the scrape reaches, and a
worker's restart loses nothing. A box is "connected" when its last report came within CONNECTED_WITHIN_MS (a box
reports every minute over its channel, so the database sees an open channel without asking the worker that
holds it), "silent" as the fleet view says (no report for 5 minutes).
Failure paths: the database unreachable or refusing -> 503 (logged); nothing else is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import sqlalchemy as sa
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgenvr.core.clock import Clock
from edgenvr.hub.fleet import BoxHealth, fleet
from edgenvr.hub.hub_database import BOXES, CLIPS, PULLS, UPLOADS
from edgenvr.sync.hub_protocol import REPORT_EVERY_S, PullState
from edgenvr.web.access import CONTEXT_KEY
from edgenvr.web.metrics_exposition import encode, metrics_route
from edgenvr.web.request_values import fail

log = logging.getLogger(__name__)

CONNECTED_WITHIN_MS = int(2 * REPORT_EVERY_S * 1000)   # one report missed is a late one, two a closed channel
UPLOAD_STATES = ("receiving", "complete", "rejected")   # hub.tus_uploads' states of an upload


class _HubReads(Protocol):
    """What a scrape uses of the hub's web context (hub.hub_web.HubWebContext)."""
    engine: sa.Engine
    clock: Clock


@dataclass
class HubMetrics(Collector):
    """The figures of one scrape, read from `engine` when collected."""

    engine: sa.Engine
    now_ms: int

    def collect(self) -> Iterator[Metric]:
        health = fleet(self.engine, self.now_ms)
        with self.engine.connect() as conn:
            boxes = conn.execute(sa.select(BOXES.c.public_key.is_not(None), BOXES.c.revoked_ms.is_not(None))).all()
            clips = conn.execute(sa.select(CLIPS.c.box, sa.func.count(), sa.func.coalesce(sa.func.sum(CLIPS.c.bytes), 0))
                                 .group_by(CLIPS.c.box)).all()
            uploads = {row[0]: (row[1], row[2]) for row in conn.execute(
                sa.select(UPLOADS.c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(UPLOADS.c.offset), 0))
                .group_by(UPLOADS.c.state))}
            pulls = dict(conn.execute(sa.select(PULLS.c.state, sa.func.count()).group_by(PULLS.c.state)).all())

        states = GaugeMetricFamily("edgenvr_hub_boxes", "Boxes the hub knows, by state: waiting (an enrolment token"
                                   " issued, not used yet), enrolled, revoked", labels=["state"])
        for name, count in (("waiting", sum(1 for enrolled, _ in boxes if not enrolled)),
                            ("enrolled", sum(1 for enrolled, revoked in boxes if enrolled and not revoked)),
                            ("revoked", sum(1 for _, revoked in boxes if revoked))):
            states.add_metric([name], count)
        yield states
        active = [box for box in health if not box.revoked]
        yield GaugeMetricFamily("edgenvr_hub_boxes_connected", "Enrolled boxes whose last report came within the last"
                                f" {CONNECTED_WITHIN_MS // 1000} s (a box on its channel reports every"
                                f" {REPORT_EVERY_S:.0f} s)",
                                value=sum(1 for box in active if box.last_report_ms is not None
                                          and self.now_ms - box.last_report_ms <= CONNECTED_WITHIN_MS))
        yield GaugeMetricFamily("edgenvr_hub_boxes_silent", "Enrolled boxes silent as the fleet view says it (no report"
                                " for 5 minutes, or none ever)", value=sum(1 for box in active if box.silent))
        yield from self._per_box(active)

        stored = GaugeMetricFamily("edgenvr_hub_clips", "Clips received, verified and stored, per box", labels=["box"])
        stored_bytes = GaugeMetricFamily("edgenvr_hub_clips_bytes", "Bytes of the stored clips (their zips), per box",
                                         labels=["box"])
        for box, count, size in sorted(clips):
            stored.add_metric([box], count)
            stored_bytes.add_metric([box], size)
        yield from (stored, stored_bytes)

        count = GaugeMetricFamily("edgenvr_hub_uploads", "Uploads (tus) the database holds, by state: receiving,"
                                  " complete (filed as a clip), rejected (refused at intake: bad signature, hashes,"
                                  " manifest)", labels=["state"])
        received = GaugeMetricFamily("edgenvr_hub_upload_received_bytes", "Bytes received and committed of those"
                                     " uploads, by state (an expired or abandoned upload leaves the sum)",
                                     labels=["state"])
        for state in UPLOAD_STATES:
            uploads_in, size = uploads.get(state, (0, 0))
            count.add_metric([state], uploads_in)
            received.add_metric([state], size)
        yield from (count, received)

        by_state = GaugeMetricFamily("edgenvr_hub_pulls", "Remote pull requests, by state", labels=["state"])
        for pull_state in PullState:
            by_state.add_metric([str(pull_state)], pulls.get(str(pull_state), 0))
        yield by_state

    def _per_box(self, active: list[BoxHealth]) -> Iterator[Metric]:
        last = GaugeMetricFamily("edgenvr_hub_box_last_report_timestamp_seconds", "When the box's last report came",
                                 labels=["box"])
        backlog = GaugeMetricFamily("edgenvr_hub_box_backlog_clips", "Clips the box had queued for the hub, as it last"
                                    " reported", labels=["box"])
        oldest = GaugeMetricFamily("edgenvr_hub_box_backlog_oldest_age_seconds", "Age of the oldest video the box had"
                                   " queued for the hub, as it last reported (0: nothing queued)", labels=["box"])
        offline = GaugeMetricFamily("edgenvr_hub_box_cameras_offline", "The box's cameras offline or reconnecting, as"
                                    " it last reported", labels=["box"])
        for box in active:
            if box.last_report_ms is None:
                continue
            last.add_metric([box.box], box.last_report_ms / 1000)
            backlog.add_metric([box.box], box.backlog)
            oldest.add_metric([box.box], max(self.now_ms - box.backlog_oldest_ms, 0) / 1000
                              if box.backlog and box.backlog_oldest_ms is not None else 0)
            offline.add_metric([box.box], len(box.cameras_offline))
        yield from (last, backlog, oldest, offline)


async def scrape(request: web.Request) -> web.Response:
    ctx = cast(_HubReads, request.app[CONTEXT_KEY])
    accept = request.headers.get("Accept", "")
    try:
        body, content_type = await asyncio.to_thread(encode, HubMetrics(ctx.engine, ctx.clock.now_ms()), accept)
    except sa.exc.SQLAlchemyError as error:
        log.warning("metrics: the hub's database cannot be read: %s", error)
        fail(web.HTTPServiceUnavailable, "the hub's database cannot be read right now; try again")
    return web.Response(body=body, headers={"Content-Type": content_type})


ROUTE = metrics_route(scrape, "The hub's Prometheus metrics: boxes (enrolled, connected, silent), clips stored per"
                              " box, uploads and intake rejections, pulls by state, each box's backlog as it last"
                              " reported (docs/metrics.md)")
