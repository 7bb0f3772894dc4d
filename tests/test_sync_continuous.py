"""Continuous video goes to the city hub only inside `continuous_windows` (the night's idle uplink), in pieces
one after another, after events; a piece still going when its window closes stops and resumes at the hub's
offset in the next window (issue 12, points 2 and 3). The box's real sync code (Uploader) on a real index and
real segment files (tests.synced_box), the hub a real process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from edgenvr.config.checking import load_config
from edgenvr.core.records import EventKind
from edgenvr.core.time_format import local_minute_of_day
from edgenvr.evidence.identity import device_identity
from edgenvr.sync import outbox
from edgenvr.sync.hub_client import HubClient
from edgenvr.sync.uploader import MIN_CHUNK_BYTES
from tests.hub_site import Hub, running_hub
from tests.link_faults import FaultyLink
from tests.synced_box import SEGMENT_SECONDS, SyncedBox, open_footage, run_round

pytestmark = pytest.mark.slow

PIECE_MS = 16_000    # four segments: the test's pieces (5 minutes on a box)


def _window(from_minutes: int, to_minutes: int) -> str:
    """A window from..to minutes from now, in the box's local time."""
    now = local_minute_of_day(int(time.time() * 1000))
    start, end = (now + from_minutes) % 1440, (now + to_minutes) % 1440
    return f'"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"'


def _with_windows(box: SyncedBox, window: str) -> None:
    text = box.config_path.read_text().replace("continuous_windows", "# was")
    box.config_path.write_text(text + f"continuous_windows = [{window}]\n")
    box.config = load_config(box.config_path)


def _clips(hub: Hub) -> list[dict]:
    return [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]


def test_continuous_video_goes_only_in_its_window_after_events_and_a_piece_cut_by_the_window_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "CONTINUOUS_PIECE_MS", PIECE_MS)
    with running_hub(tmp_path) as hub, FaultyLink(("127.0.0.1", hub.port)) as link:
        box = SyncedBox(tmp_path / "box", f"http://127.0.0.1:{link.port}", hub.token("rt08-kuningan"),
                        open_footage(bitrate=1_200_000))
        t0 = int(time.time() * 1000) - 60_000
        outbox.sync_since(box.writer.conn, t0)          # syncing since a minute ago
        for i in range(12):                             # 48 s of video since then
            box.record("gate", t0 + i * SEGMENT_SECONDS * 1000)
        box.event(EventKind.MOTION, "gate", t0 + 30_000, t0 + 33_000)
        box.commit()

        # Outside the window: the motion clip goes, no continuous piece is even queued.
        _with_windows(box, _window(120, 180))
        uploader = box.uploader()
        run_round(uploader)
        assert [c["kind"] for c in _clips(hub)] == ["motion"]
        assert box.writer.conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'continuous'").fetchone()[0] == 0

        # In the window: pieces one after another from where syncing began, each a clip at the hub.
        _with_windows(box, _window(-60, 60))
        uploader = box.uploader()
        uploader._chunk = uploader._max_chunk = MIN_CHUNK_BYTES   # several chunks per piece
        link.throttle(200_000)                                   # a piece takes a few seconds to go up
        closing = threading.Timer(1.5, lambda: setattr(uploader, "sync", dataclasses.replace(
            uploader.sync, continuous_windows=())))   # ... and the window closes while the first one is going
        closing.start()
        run_round(uploader)
        closing.join()
        cut = box.writer.conn.execute("SELECT id, upload, state FROM outbox WHERE kind = 'continuous'").fetchall()
        assert [tuple(row)[2] for row in cut] == ["queued"] and cut[0][1], "the cut piece waits, its upload kept"
        offset = _hub_offset(hub, box, cut[0][1])
        assert offset > 0 and [c["kind"] for c in _clips(hub)] == ["motion"]

        # The next window: the cut piece resumes at the hub's offset (same upload), then the next pieces.
        link.throttle(None)
        uploader = box.uploader()
        for _ in range(3):
            run_round(uploader)
        pieces = sorted((c["start_ms"], c["end_ms"]) for c in _clips(hub) if c["kind"] == "continuous")
        assert len(pieces) == 3, pieces
        assert pieces[0][0] == t0 and all(b[0] >= a[1] - SEGMENT_SECONDS * 1000 for a, b in zip(pieces, pieces[1:]))
        uploads = [line for line in hub.log.read_text().splitlines() if "created" in line and "upload" in line]
        assert len(uploads) == 1 + 3, "the cut piece went on in its own upload, not a new one"
        box.close()


def _hub_offset(hub: Hub, box: SyncedBox, upload: str) -> int:
    """The hub's committed offset of `upload` (a signed HEAD, as the box sends it)."""
    async def ask() -> int:
        identity = device_identity(box.layout, box.config.box.box_id, box.config.box.box_name)
        async with HubClient(hub.url, identity) as client:
            return (await client.offset(upload))[0]
    return asyncio.run(ask())
