"""When the free-space floor has to delete video of clips still waiting for the hub, the box tells the city exactly
which clips it will never send and why (issue 12, point 2): the box's channel (sync.hub_channel, the sync
process's code, here in the test process on the box's real index) reports them to a real hub process, which
lists them with `edgenvr hub lost` and flags the box in the fleet view; a report is on record once, and the box
stops sending it once the hub has acknowledged it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from edgenvr.config.checking import load_config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.time_format import format_ms
from edgenvr.evidence.identity import device_identity
from edgenvr.sync.hub_channel import HubChannel
from edgenvr.sync.hub_client import HubClient
from tests.hub_site import running_hub
from tests.test_retention_outbox import LOST, _floor_box

pytestmark = pytest.mark.slow

BOX = "pos-rt-08"


def test_clips_the_floor_gave_up_are_reported_to_the_hub_once_with_the_reason(tmp_path: Path) -> None:
    box, config, gate, yard = _floor_box(tmp_path)
    at = box.clock.now_ms()
    assert box.policy(config).sweep().unsent_deleted == 2      # clips A (gate) and C (yard) are lost
    lost = {(camera, start) for (camera, start), (state, _) in box.clips().items() if state == "unavailable"}
    box.writer.conn.close()

    with running_hub(tmp_path) as hub:
        sync_config = tmp_path / "sync.toml"
        sync_config.write_text(f'[box]\nid = "{BOX}"\n' + (tmp_path / "c.toml").read_text()
                               + f'[sync]\nhub_url = "{hub.url}"\n')
        loaded = load_config(sync_config)
        identity = device_identity(box.layout, BOX, "Pos RT 08")

        async def report_until_listed() -> list[dict]:
            async with HubClient(hub.url, identity) as client:
                hub_key = await client.enrol(hub.token(BOX))
            channel = HubChannel(loaded, identity, SYSTEM_CLOCK, lambda: hub_key)
            stop = asyncio.Event()
            running = asyncio.create_task(channel.run(stop))
            try:
                deadline = time.monotonic() + 30
                while True:
                    listed = await asyncio.to_thread(hub.cli, "lost", "--json")
                    found = [json.loads(line) for line in listed.stdout.splitlines()]
                    if len(found) == 2:
                        await asyncio.sleep(1)   # the acknowledgement is on its way back
                        return found
                    assert time.monotonic() < deadline, hub.log.read_text()[-3000:]
                    await asyncio.sleep(0.3)
            finally:
                stop.set()
                await running

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("edgenvr.sync.hub_channel.CHECK_S", 0.2)
            found = asyncio.run(report_until_listed())

        assert {(loss["camera"], loss["start_ms"]) for loss in found} == lost
        for loss in found:
            assert loss["box"] == BOX and loss["kind"] == "motion" and loss["reason"] == LOST + format_ms(at)
            assert loss["lost_ms"] == at
        box.open()
        unreported = box.conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'unavailable'"
                                      " AND reported_ms IS NULL").fetchone()[0]
        assert unreported == 0, "the box keeps reporting what the hub acknowledged"
        fleet = [json.loads(line) for line in hub.cli("boxes", "--json").stdout.splitlines()]
        assert [(b["box"], b["lost_clips"]) for b in fleet] == [(BOX, 2)]
        assert "LOST 2 clip(s)" in hub.cli("boxes").stdout
