"""A box whose link to the city hub is down for a week (issue 12), in seconds: the backlog of clips grows and
says why, retention keeps every unsent clip's video while it deletes ordinary video of the same age for the
quota, and when the link returns everything arrives, in priority order (tamper, then what the city asked
for, then motion; oldest first within each), each clip once.

Real components: the box's index, segment files, retention sweep and sync process's Uploader on a
SimulatedClock that runs through the week (tests.synced_box: real MP4 segments written by the recorder's
SegmentWriter), and `edgenvr hub` in a process of its own behind a proxy the test takes down
(tests.link_faults). The hub runs on the real clock; the box's week is the seven days before now, so its
clock is at the hub's time again when the link returns.

Continuous clips (priority 3) are not part of it: nothing on the box queues them yet ([sync]
continuous_windows is read, but no code path makes a continuous outbox row, and sync.outbox has no function
that would).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import EventKind, TamperKind
from edgenvr.core.units import DAY_MS, HOUR_MS
from edgenvr.evidence.hub_receipts import read_receipt
from edgenvr.evidence.identity import load_public_key
from edgenvr.index.retention_classes import AWAITING_UPLOAD
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.sync import outbox
from edgenvr.sync.outbox import PRIORITY, ClipKind
from tests.hub_site import running_hub
from tests.link_faults import FaultyLink
from tests.synced_box import BOX_ID, SEGMENT_SECONDS, SyncedBox, open_footage, run_round

pytestmark = pytest.mark.slow

SLOT_MS = 2 * HOUR_MS          # one 4 s segment stands for each two hours of the ring
SLOTS = 7 * 12                 # a week
MOTION_SLOTS = (2, 9, 15, 22, 31, 37, 44, 50, 57, 63, 70, 76, 81)
TAMPER_SLOTS = {40: TamperKind.COVERED, 61: TamperKind.MOVED}
PULLED_SLOT = 26               # day 2: what the city asks for before the link goes down
QUOTA = 4_000_000              # segments of ~100 kB and the index (~1 MB by the end): a day and a half of
#                                ordinary video beside the clips' ~1.7 MB, where the week is ~8.5 MB
SETTLE_MS = SEGMENT_SECONDS * 1000 + outbox.SETTLE_MARGIN_MS


def _segments(box: SyncedBox) -> dict[int, int]:
    """start_ms -> retention class of every segment still on the box."""
    return {row[0]: row[1] for row in box.writer.conn.execute(
        "SELECT start_ms, retention_class FROM segments WHERE deleting = 0")}


def test_a_week_without_the_link_keeps_every_clip_and_they_arrive_by_priority_then_age(tmp_path: Path) -> None:
    week_start = int(time.time() * 1000) - 7 * DAY_MS - HOUR_MS
    clock = SimulatedClock(epoch_ms=week_start)
    with running_hub(tmp_path) as hub, FaultyLink(("127.0.0.1", hub.port)) as link:
        box = SyncedBox(tmp_path / "box", f"http://127.0.0.1:{link.port}", hub.token(BOX_ID),
                        open_footage(200_000), clock=clock, storage={"quota": str(QUOTA)})
        uploader = box.uploader()
        run_round(uploader)   # installed: the box enrols and starts syncing
        assert box.layout.hub_key_path.exists(), hub.log.read_text()[-3000:]
        slot_ms = [week_start + HOUR_MS // 2 + n * SLOT_MS for n in range(SLOTS)]   # each segment's start

        # The city asks ahead for two seconds of day 2 (a planned market day); the box queues the pull as its
        # channel to the hub does (sync.outbox.enqueue_pull), to go once that range is recorded and settled.
        pulled = (slot_ms[PULLED_SLOT] + 1_000, slot_ms[PULLED_SLOT] + 3_000)
        asked = hub.cli("pull", "--box", BOX_ID, "--camera", "gate", "--from", f"{pulled[0]}ms", "--to",
                        f"{pulled[1]}ms", "--reason", "laporan 7/XII: pasar hari Rabu")
        assert asked.returncode == 0, asked.stderr
        pull_id = asked.stdout.split()[0]
        assert outbox.enqueue_pull(box.writer.conn, pull_id, "gate", *pulled, clock.now_ms(), pulled[1] + SETTLE_MS)

        # Then the link is cut for the week. The box records, detects, sweeps and tries the hub as it goes.
        link.down(True)
        policy = RetentionPolicy(box.config, box.layout, box.writer, clock=clock)
        clip_starts: dict[int, tuple[ClipKind, int]] = {}   # segment start -> (kind, event start)
        backlog = []
        for n, start in enumerate(slot_ms):
            clock.advance((start + SEGMENT_SECONDS * 1000 - clock.now_ms()) / 1000)
            box.record("gate", start)
            if n in MOTION_SLOTS:
                box.event(EventKind.MOTION, "gate", start + 1_500, start + 2_500)
                clip_starts[start] = (ClipKind.MOTION, start + 1_500)
            if n in TAMPER_SLOTS:
                box.event(EventKind.TAMPER, "gate", start + 1_200, start + 2_800, subkind=TAMPER_SLOTS[n])
                clip_starts[start] = (ClipKind.TAMPER, start + 1_200)
            if n == PULLED_SLOT:
                clip_starts[start] = (ClipKind.REQUESTED, pulled[0])
            box.commit()
            clock.advance(60)
            policy.sweep()
            run_round(uploader)   # the link is down: nothing goes, the backlog grows
            backlog.append(outbox.backlog(box.writer.conn))

        waiting = backlog[-1]
        on_disk = _segments(box)
        assert [b.count for b in backlog] == sorted(b.count for b in backlog), "the backlog shrank with no link"
        assert backlog[11].count < backlog[-1].count, "the backlog did not grow over the week"
        assert waiting.count == len(MOTION_SLOTS) + len(TAMPER_SLOTS) + 1, waiting
        assert waiting.last_error.startswith("the hub is unreachable"), waiting
        assert waiting.oldest_ms is not None and waiting.oldest_ms < week_start + DAY_MS
        assert not hub.cli("clips", "--json").stdout.strip(), "nothing can have crossed a cut link"
        # Retention kept every clip's video (awaiting upload: no quota deletes it) and deleted the ordinary
        # video around it, oldest first: nothing ordinary of the first five days is left.
        assert {start: on_disk.get(start) for start in clip_starts} == dict.fromkeys(clip_starts, AWAITING_UPLOAD)
        ordinary = sorted(start for start in on_disk if start not in clip_starts)
        print(f"\nafter the week: {waiting.count} clips waiting ({waiting.last_error[:40]}...); "
              f"{len(clip_starts)} clip segments kept, {len(ordinary)} of {SLOTS - len(clip_starts)} ordinary "
              f"segments left (the newest {(slot_ms[-1] - ordinary[0]) / HOUR_MS:.0f} h)")
        assert all(start > week_start + 5 * DAY_MS for start in ordinary), [s - week_start for s in ordinary]

        # The week is over: the box's clock is the hub's again, and the link returns.
        clock.advance(max(0, int(time.time() * 1000) - clock.now_ms()) / 1000)
        link.down(False)
        for _ in range(10):
            run_round(uploader)
            if outbox.backlog(box.writer.conn).count == 0:
                break
            clock.advance(5)
        rows = [dict(row) for row in box.writer.conn.execute("SELECT * FROM outbox ORDER BY id")]
        clips = {clip["id"]: clip for clip in map(json.loads, hub.cli("clips", "--json").stdout.splitlines())}
        hub_log = hub.log.read_text()
        pulls = [json.loads(line) for line in hub.cli("pulls", "--json").stdout.splitlines()]

    assert all(row["state"] == "synced" for row in rows), [(r["kind"], r["state"], r["last_error"]) for r in rows]
    assert len(clips) == len(rows) == len(clip_starts)
    hub_key = load_public_key(box.layout.hub_key_path.read_bytes())
    by_clip = {read_receipt(row["receipt"], hub_key)["clip"]: row for row in rows}
    assert set(by_clip) == set(clips)
    assert all(clips[clip]["sha256"] == row["sha256"] and clips[clip]["kind"] == row["kind"]
               for clip, row in by_clip.items())
    assert sorted((ClipKind(r["kind"]), r["start_ms"] + 1_000 * (r["kind"] != "requested")) for r in rows) == \
        sorted(clip_starts.values())   # one clip per event (padded by a second) and the pull's range

    # The order the hub filed them in (its log, one line per clip as it is filed; received_ms agrees).
    filed = re.findall(r"clip ([0-9a-f]{32}) from \S+ (\w+) (\d+)-(\d+) filed", hub_log)
    order = [(PRIORITY[ClipKind(by_clip[clip]["kind"])], by_clip[clip]["start_ms"]) for clip, *_ in filed]
    print(f"\nfiled after a week offline ({len(order)} clips): "
          + ", ".join(f"{ClipKind(by_clip[c]['kind'])}@day{(by_clip[c]['start_ms'] - week_start) / DAY_MS:.1f}"
                      for c, *_ in filed))
    received = [clips[clip]["received_ms"] for clip, *_ in filed]
    assert len(filed) == len(clips) and received == sorted(received), (filed, received)
    assert order == sorted(order), "not tamper, then requested, then motion, each oldest first"
    assert [kind for _, kind, *_ in filed][:3] == ["tamper", "tamper", "requested"]
    assert [(p["id"], p["state"]) for p in pulls] == [(pull_id, "ready")]

    # Receipted, the clips' video is ordinary again: retention may take it as it takes any video.
    assert AWAITING_UPLOAD not in set(_segments(box).values())
    box.close()
