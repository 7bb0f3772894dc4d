"""Prometheus scrapes, for the box (web.box_metrics) and the city hub (hub.hub_metrics): the one route both
serve, who may call it, and a collector's figures encoded as the scraper asks (prometheus_client's encoders:
OpenMetrics 1.0 when its Accept asks for it, else the text format 0.0.4).

Invariants:
- The route is `GET /api/metrics`, under /api/ like every route with a rule, so it is in the OpenAPI description
  and goes through the one access middleware (web.access): a Bearer token (or a session) of a role with
  Permission.READ_METRICS (operator, admin); nothing is served to an address, a localhost or a header.
- Figures are read when a scrape asks, by a custom collector over the database (the index on the box, the hub's
  database), never kept in this process: no global registry and no counters in memory, so a scrape costs
  nothing between scrapes, nothing is kept in two places, and any of the hub's workers answers the same.
Failure paths: the collector's errors propagate to the route, which answers 503 for a database it cannot read.
"""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from edgenvr.web.accounts import Permission
from edgenvr.web.api_routes import ApiRoute, Handler

METRICS_PATH = "/api/metrics"


def metrics_route(handler: Handler, summary: str) -> ApiRoute:
    """The route table's entry for a scrape (the box's and the hub's differ only in their handler)."""
    return ApiRoute("GET", METRICS_PATH, handler, Permission.READ_METRICS, summary, content="text/plain",
                    responses={"200": "Prometheus text format 0.0.4, or OpenMetrics 1.0 if Accept asks for it "
                                      "(docs/metrics.md lists every metric)",
                               "503": "The database cannot be read right now"})


def encode(collector: Collector, accept: str) -> tuple[bytes, str]:
    """The collector's figures (collected now) in the format `accept` asks for, and that format's content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(collector), content_type
