"""The recording timeline: the boot-time clocks of the box's successive boots laid end to end, in the order the
index first saw them. It is what the ring deletes by (recording order) and what the age rules count with,
because the wall clock cannot be trusted for either (docs/architecture.md, "Clock trust").

Owns the `boots` table and every segment's and event's position on the timeline (`timeline_ms`,
`timeline_keep_to_ms`); the index writer asks it, the sweep and the report read it.

Invariants:
- A segment with a known boot is at base_ms(boot) + its boot-time ms at start. Within a boot, differences
  are real elapsed time: CLOCK_BOOTTIME is never stepped and counts suspend.
- A boot first seen at boot-time b gets base_ms = known end - b, where the known end is the furthest point
  on the timeline (the newest segment's end, every earlier boot's first point): it starts after everything
  known, and between a segment x and a later one y, t_y - t_x is never more than the real time between them
  (the time the box was off counts as nothing). The first boot of an index without any timeline starts at
  the wall clock (base = wall - b), so that on a sane box the timeline reads like the wall clock.
- now_ms() is the current boot's base + the boot-time clock: now_ms() - t is a lower bound of the real age
  of what is at t, whatever the wall clock did (stepped by NTP, reset to 1970 at boot, a year off).
- A record without a boot (a file from before clock records, or probed without its attribute) and an event
  (motion workers send wall times) are placed by their wall-clock age when indexed, never after now: by the
  wall clock's offset from the boot-time clock as it is now, or as it was before a step seen in this run
  (`note_offset`): a time stamped before the step and announced after it is placed as stamped, not a year
  off. Of the offsets that put it no later than now, the latest position is taken (a time stamped after a
  forward step would be in the future by the older offset; after a backward one, older by the newer
  offset). A wall time before 2000 was read from an unsynchronised clock, and its age means nothing: it
  is placed at now.
- Across boots the order is the order boots were first seen. A boot seen first after a later one (all its
  rows lost in a power cut before their first commit, and adopted after the next boot had recorded) is placed
  after it: its video is then deleted later than its time, never earlier; its ages stay lower bounds.

Failure paths: boots first seen, and a boot's offset once synchronised, are written with the writer's next
commit (`pending`/`written`); if that commit fails they stay pending. A boot row lost with a lost batch is
registered again, from the adopted segments, by the start-up reconcile.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

from edgenvr.core.clock import WALL_STEP_MS, Clock
from edgenvr.core.units import DAY_MS, EARLIEST_DATE_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from edgenvr.index.retention_classes import CLASS_NAMES

RECENT_STEPS = 8   # wall clock offsets kept for placing wall times stamped before a step (NTP steps seldom)

# segments.clock_state: what vouches for a segment's start_ms/end_ms
CLOCK_UNSYNCHRONISED = 0   # recorded on an unsynchronised wall clock: its times are what that clock said
CLOCK_SYNCHRONISED = 1     # recorded on a synchronised clock (or nothing known: taken at its times, as before)
CLOCK_REANCHORED = 2       # was 0; moved to its true time from the boot-time clock (index.reanchoring)
CLOCK_NOT_REANCHORED = 3   # was 0; its true time was known but another segment had that name: left as recorded
CLOCK_STATE_NAMES = {CLOCK_UNSYNCHRONISED: "unsynchronised", CLOCK_SYNCHRONISED: "synchronised",
                     CLOCK_REANCHORED: "re-anchored", CLOCK_NOT_REANCHORED: "unsynchronised"}


def describe_step(delta_ms: int) -> str:
    """A clock step for people: "+56.0 years", "-365.0 days", "+3.2 s"."""
    size = abs(delta_ms)
    sign = "+" if delta_ms >= 0 else "-"
    for unit, name in ((365.25 * DAY_MS, "years"), (DAY_MS, "days"), (HOUR_MS, "h"), (MINUTE_MS, "min")):
        if size >= 2 * unit:
            return f"{sign}{size / unit:.1f} {name}"
    return f"{sign}{size / SECOND_MS:.1f} s"


@dataclass(frozen=True)
class Boot:
    row_id: int
    boot_id: str
    base_ms: int             # timeline_ms = base_ms + boot-time ms
    first_ms: int            # where on the timeline the boot was first seen
    offset_ms: int | None    # wall minus boot-time clock, from the boot's first synchronised observation


class RecordingTimeline:
    """The timeline as the index writer keeps it (one per writer; see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self.clock = clock
        self._boots: dict[str, Boot] = {}
        for row in conn.execute("SELECT id, boot_id, base_ms, first_ms, offset_ms FROM boots"):
            self._boots[row[1]] = Boot(row[0], row[1], row[2], row[3], row[4])
        self._by_row = {boot.row_id: boot for boot in self._boots.values()}
        self._pending: dict[str, Boot] = {}   # boots new or changed since the last commit
        self.known_end_ms = known_end(conn)
        self._offsets: list[int] = []         # wall minus boot-time clock before each step seen (note_offset)

    # -- positions --------------------------------------------------------------------------------

    def boot(self, boot_id: str, boot_ms: int) -> Boot:
        """The boot `boot_id`, first seen now at its boot-time `boot_ms` if it is new (registered)."""
        boot = self._boots.get(boot_id)
        if boot is None:
            if self.known_end_ms is None:   # a new timeline: it reads like the wall clock
                start = self.clock.now_ms() - (self.clock.boot_ms() - boot_ms if boot_id == self.clock.boot_id() else 0)
            else:
                start = self.known_end_ms
            boot = Boot(max(self._by_row, default=0) + 1, boot_id, start - boot_ms, start, None)
            self._store(boot)
        return boot

    def position(self, boot_id: str, boot_ms: int, duration_ms: int) -> tuple[int, int]:
        """(boot row id, timeline_ms) of a segment of that boot starting at its boot-time `boot_ms`."""
        boot = self.boot(boot_id, boot_ms)
        at = boot.base_ms + boot_ms
        self.note_end(at + duration_ms)
        return boot.row_id, at

    def now_ms(self) -> int:
        """Where now is on the timeline."""
        boot_ms = self.clock.boot_ms()
        return self.boot(self.clock.boot_id(), boot_ms).base_ms + boot_ms

    def place_wall(self, wall_ms: int, duration_ms: int = 0) -> int:
        """The timeline position of something known only by its wall time `wall_ms` (lasting `duration_ms`)."""
        now = self.now_ms()
        if wall_ms < EARLIEST_DATE_MS:   # read from a clock not set yet: its age is unknown, so it is new
            return now - duration_ms
        base = now - self.clock.boot_ms()
        positions = [base + wall_ms - offset for offset in [*self._offsets, self.clock.now_ms() - self.clock.boot_ms()]]
        return max((at for at in positions if at <= now - duration_ms), default=now - duration_ms)

    def note_offset(self, offset_ms: int) -> None:
        """The wall clock reads the boot-time clock + `offset_ms` now (the clock watch, every step). A change
        over WALL_STEP_MS is a step: the offset before it is kept (the last few) for `place_wall`."""
        if not self._offsets or abs(offset_ms - self._offsets[-1]) > WALL_STEP_MS:
            self._offsets = [*self._offsets[-(RECENT_STEPS - 1):], offset_ms]

    def note_end(self, timeline_end_ms: int) -> None:
        if self.known_end_ms is None or timeline_end_ms > self.known_end_ms:
            self.known_end_ms = timeline_end_ms

    # -- offsets ----------------------------------------------------------------------------------

    def note_synchronised(self, offset_ms: int) -> bool:
        """The wall clock is synchronised now and reads boot-time + `offset_ms`. Returns whether this is the
        first synchronised observation of the current boot (its offset is kept from then on)."""
        boot = self.boot(self.clock.boot_id(), self.clock.boot_ms())
        if boot.offset_ms is not None:
            return False
        self._store(replace(boot, offset_ms=offset_ms))
        return True

    def boots_with_offset(self) -> list[Boot]:
        """The boots whose wall clock was seen synchronised (their segments can be re-anchored)."""
        return [boot for boot in self._by_row.values() if boot.offset_ms is not None]

    def current_offset_ms(self) -> int | None:
        boot = self._boots.get(self.clock.boot_id())
        return boot.offset_ms if boot is not None else None

    # -- writing ----------------------------------------------------------------------------------

    def pending(self) -> list[Boot]:
        return list(self._pending.values())

    def write(self, conn: sqlite3.Connection, boots: list[Boot]) -> None:
        """Inside the writer's commit transaction."""
        conn.executemany("INSERT INTO boots (id, boot_id, base_ms, first_ms, offset_ms) VALUES (?,?,?,?,?)"
                         " ON CONFLICT(id) DO UPDATE SET offset_ms = excluded.offset_ms",
                         [(b.row_id, b.boot_id, b.base_ms, b.first_ms, b.offset_ms) for b in boots])

    def written(self, boots: list[Boot]) -> None:
        """These were committed: no longer pending unless changed since."""
        for boot in boots:
            if self._pending.get(boot.boot_id) == boot:
                del self._pending[boot.boot_id]

    def _store(self, boot: Boot) -> None:
        self._boots[boot.boot_id] = self._by_row[boot.row_id] = self._pending[boot.boot_id] = boot
        self.note_end(boot.first_ms)


def known_end(conn: sqlite3.Connection) -> int | None:
    """The furthest point known on the timeline: the end of the newest segment on it and the first point of
    every boot (index seeks only)."""
    ends = [conn.execute("SELECT MAX(first_ms) FROM boots").fetchone()[0]]
    for retention_class in CLASS_NAMES:   # one seek each at the end of segments_ring
        row = conn.execute("SELECT timeline_ms + end_ms - start_ms FROM segments INDEXED BY segments_ring"
                           " WHERE retention_class = ? ORDER BY timeline_ms DESC LIMIT 1",
                           (retention_class,)).fetchone()
        ends.append(row[0] if row is not None else None)
    return max((end for end in ends if end is not None), default=None)


def timeline_now(conn: sqlite3.Connection, clock: Clock) -> int:
    """Where now is on the timeline, for a reader (read-only): the current boot's position if the index knows
    the boot; otherwise (nothing indexed since this boot) the furthest known point, a lower bound; on an empty
    timeline the wall clock."""
    row = conn.execute("SELECT base_ms FROM boots WHERE boot_id = ?", (clock.boot_id(),)).fetchone()
    if row is not None:
        return int(row[0]) + clock.boot_ms()
    end = known_end(conn)
    return end if end is not None else clock.now_ms()
