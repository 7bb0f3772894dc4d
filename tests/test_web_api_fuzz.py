"""Property tests of the HTTP API from its own OpenAPI description (schemathesis): whatever the generated
requests carry, the box answers with a clear 4xx and never with a server error."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from web_site import Site, running_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("fuzz"), h264_clip, cameras=("gate",), record_seconds=4)


def test_no_request_gets_a_server_error(site: Site) -> None:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{site.port}/api/openapi.json",
                                           headers={"Authorization": f"Bearer {site.tokens['admin']}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    calls = [0]
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            if case.operation.path == "/api/cameras/{camera}/reference/approve":
                case.path_parameters = {"camera": "no-such-camera"}   # a real approval watches the camera 15 s
            response = case.call(base_url=f"http://127.0.0.1:{site.port}",
                                 headers={"Authorization": f"Bearer {site.tokens['admin']}"}, timeout=60)
            calls[0] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: "
                                f"{response.text[:200]}")
        call()
    assert not failures, "\n".join(failures[:20])
    assert calls[0] >= 5 * len(operations), calls   # the property really ran
