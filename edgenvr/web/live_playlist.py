"""Live HLS: owns, per camera watched over HLS, one subscription to the live relay (web.live_relay) and a short
window of its newest media segments in memory, served as an fMP4 HLS playlist and its parts, for browsers
without Media Source (iPhones before iOS 17.1: `<video src=".../live.m3u8">`).

Routes: `GET /api/cameras/{camera}/live.m3u8` (the playlist) and `GET /api/cameras/{camera}/live/{name}` (its
parts: `init-N.mp4`, an init segment, and `N.m4s`, a media segment). Access (Permission.VIEW and the camera
grant) is decided by web.access like every media route.

Invariants:
- Costs nothing while nobody watches and never opens a camera session: a camera's window exists from the first
  playlist request until IDLE_SECONDS pass with no request (playlist or part) for it; then it leaves the relay,
  which unsubscribes from the recorder unless a WebSocket viewer still watches. A part request never starts one.
- Memory is bounded: at most WINDOW_SEGMENTS segments and WINDOW_BYTES per camera, plus the segment being built
  (at most MAX_SEGMENT_BYTES: key frames further apart are skipped, not buffered), plus the init segments the
  window uses (a few hundred bytes each). Nothing is held per client: a part is served from the window or is
  404; a slow client only holds the one `bytes` object its answer is sending (shared, not copied).
- Every media segment starts with a key frame (so EXT-X-INDEPENDENT-SEGMENTS is true, and the window starts at
  a key frame): a segment is one key fragment and the non-key fragments after it. The relay gives a viewer
  nothing but whole fragments from a key frame on, also after a fragment was lost.
- A segment is listed as soon as it is known to be whole: when the next key fragment arrives, or at once if the
  camera sends a key frame every fragment (guessed from the previous segment being one fragment; a wrong guess
  costs the fragments up to the next key frame and ends the guessing). This saves a fragment (~1 s) of latency.
- One `live_view` audit record per user and camera session, written as the WebSocket route writes it
  (web.camera_routes.audited), before any picture; parts are served only within the caller's own session.
- Decode times are continuous for the whole HLS session: each recorder segment restarts its timestamps at 0,
  so every fragment's tfdt is rewritten to follow the previous fragment; an EXT-X-DISCONTINUITY (with a new
  EXT-X-MAP) is written only where the track format really changes (another codec, size or timescale).
- Part names are never reused within the web process, and practically never across its restarts: a session's
  numbers start at the wall-clock second or after the camera's last session, whichever is larger; a player
  holding an old playlist gets 404, not another moment's picture.
- A piece that cannot be read is dropped (the window then waits for the next key frame) and logged at most once
  a minute per camera, never raised.

Failure paths: no relay (not under `edgenvr run`) -> 503 as the WebSocket route; a camera not in the config ->
404; a malformed or expired part name, or a part asked for outside the caller's session (no audited playlist
request in IDLE_SECONDS) -> 404; the camera sends nothing within FIRST_SEGMENT_SECONDS -> 503 saying
so (the window keeps waiting until the idle timeout); the audit trail cannot be written -> 503 (no record, no
picture: web.camera_routes.audited).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from edgenvr.core.clock import Clock
from edgenvr.evidence.audit import AuditAction
from edgenvr.web.access import caller
from edgenvr.web.accounts import Permission
from edgenvr.web.api_routes import CAMERA_PATH, ApiRoute

# The live view's own checks and audit: HLS and the WebSocket audit alike (one code path).
from edgenvr.web.camera_routes import LIVE_KEY, audited, known_camera
from edgenvr.web.live_relay import LiveRelay, Viewer
from edgenvr.web.mp4_boxes import TrackFormat, children, parse_moof, parse_moov
from edgenvr.web.request_values import fail

log = logging.getLogger(__name__)

IDLE_SECONDS = 15.0           # no request for a camera's playlist or parts this long: the window closes. A
# player reloads the playlist every target duration (1-2 s), so only a closed or stopped player is this quiet.
FIRST_SEGMENT_SECONDS = 10.0  # a playlist request waits this long for the first segment (a key frame, then the
# next one to close it: 2-3 s normally)
WINDOW_SEGMENTS = 6           # newest segments listed: ~6 s at 1 s key frame intervals
WINDOW_BYTES = 8 * 1024 * 1024          # and at most this much of them (big GOPs of a 4K camera)
MAX_SEGMENT_BYTES = 4 * 1024 * 1024     # a segment (key frame to key frame) bigger than this is skipped
WARN_EVERY_SECONDS = 60.0
_TFDT_32_LIMIT = 1 << 31      # a 32-bit tfdt restarts (with a discontinuity) before it could wrap

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PART_NAME = re.compile(r"init-([0-9]{1,12})\.mp4|([0-9]{1,12})\.m4s")   # fullmatch; ASCII digits only
PART_PATH = {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": r"^(init-[0-9]{1,12}\.mp4|[0-9]{1,12}\.m4s)$"},
             "description": "A part the playlist names: init-N.mp4 (init segment) or N.m4s (media segment)."}


@dataclass(frozen=True)
class Segment:
    sequence: int
    init: int               # the number of its init segment (init-N.mp4)
    data: bytes             # one or more whole moof+mdat fragments, the first one starting with a key frame
    seconds: float
    discontinuity: bool     # the track format (or the decode time) changed before it


@dataclass(eq=False)
class _Window:
    """One camera's HLS session: fed by its relay viewer, read by the playlist and part requests."""
    camera: str
    viewer: Viewer
    next_sequence: int
    last_request: float
    segments: deque[Segment] = field(default_factory=deque)
    window_bytes: int = 0
    inits: dict[int, bytes] = field(default_factory=dict)   # only those of listed segments and the current one
    init_number: int | None = None
    track: TrackFormat | None = None
    decode_time: int = 0            # the next fragment's (rewritten) tfdt, in track.timescale units
    building: list[bytes] = field(default_factory=list)     # the segment being built, [] while waiting for a key
    building_bytes: int = 0
    building_ticks: int = 0
    format_changed: bool = False    # the next segment is preceded by a discontinuity
    eager: bool = False             # the last closed segment was one fragment: publish key fragments at once
    target_duration: int = 1        # only grows: a live playlist's target duration must not change
    discontinuity_sequence: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)   # set once a segment is listed
    task: asyncio.Task[None] | None = None
    last_warning: float = 0.0


class LivePlaylists:
    """Every camera's HLS window; lives in the web process's event loop (no locks: one thread)."""

    def __init__(self, relay: LiveRelay, clock: Clock) -> None:
        self.relay = relay
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._next_sequence: dict[str, int] = {}        # camera -> the first number its next session may use
        self._sessions: dict[tuple[str, str], float] = {}   # (actor, camera) -> last request, for the audit

    async def stop(self) -> None:
        for window in list(self._windows.values()):
            if window.task is not None:
                window.task.cancel()
        self._windows.clear()

    # --- requests ---

    def watching(self, actor: str, camera: str) -> bool:
        """Whether `actor` has an HLS session of `camera`: an audited playlist request, and a request of theirs
        for it within IDLE_SECONDS since. A playlist request outside one starts one (and is audited)."""
        now = self.clock.monotonic()
        if len(self._sessions) > 10_000:   # bounded: forget the ended sessions
            self._sessions = {k: t for k, t in self._sessions.items() if now - t < IDLE_SECONDS}
        return now - self._sessions.get((actor, camera), -1e9) < IDLE_SECONDS

    def touch(self, actor: str, camera: str) -> None:
        """A request of `actor` for `camera`'s playlist or parts: their session and the window stay open."""
        self._sessions[(actor, camera)] = self.clock.monotonic()
        window = self._windows.get(camera)
        if window is not None:
            window.last_request = self.clock.monotonic()

    def window(self, camera: str) -> _Window:
        """The camera's window, opened (subscribed to the relay) if it was not."""
        window = self._windows.get(camera)
        if window is None:
            first = max(self.clock.now_ms() // 1000, self._next_sequence.get(camera, 0))
            window = _Window(camera, self.relay.watch(camera), next_sequence=first, last_request=self.clock.monotonic())
            self._windows[camera] = window
            window.task = asyncio.create_task(self._feed(window))
            log.info("camera %s: live HLS started", camera)
        return window

    def part(self, camera: str, name: str) -> bytes | None:
        """A part of the camera's open window, None if the name is malformed, expired or never was."""
        match = PART_NAME.fullmatch(name)
        window = self._windows.get(camera)
        if match is None or window is None:
            return None   # no window: its parts expired with it (a part never opens one)
        if match[1] is not None:
            return window.inits.get(int(match[1]))
        number = int(match[2])
        for segment in window.segments:
            if segment.sequence == number:
                return segment.data
        return None

    # --- the window, fed by the relay ---

    async def _feed(self, window: _Window) -> None:
        try:
            while True:
                quiet = IDLE_SECONDS - (self.clock.monotonic() - window.last_request)
                if quiet <= 0:
                    break
                try:
                    piece = await asyncio.wait_for(window.viewer.queue.get(), min(quiet, 1.0))
                except asyncio.TimeoutError:
                    continue
                try:
                    self._take(window, piece)
                except Exception as error:   # noqa: BLE001 - a piece we cannot read must not end the window
                    self._drop_building(window)   # (parsing comes before any change) wait for a key frame
                    now = self.clock.monotonic()
                    if now - window.last_warning > WARN_EVERY_SECONDS:
                        window.last_warning = now
                        log.warning("camera %s: live HLS dropped a piece it could not read: %s", window.camera, error)
        finally:
            self.relay.leave(window.viewer)
            if self._windows.get(window.camera) is window:
                del self._windows[window.camera]
            self._next_sequence[window.camera] = window.next_sequence
            log.info("camera %s: live HLS ended (no request for %.0f s)", window.camera, IDLE_SECONDS)

    def _take(self, window: _Window, piece: bytes) -> None:
        if piece[4:8] == b"ftyp":
            self._init(window, piece)
        elif piece[4:8] == b"moof":
            self._fragment(window, piece)

    def _init(self, window: _Window, init: bytes) -> None:
        boxes = {box.kind: box for box in children(init, 0, len(init))}
        ftyp, moov = boxes[b"ftyp"], boxes[b"moov"]
        track = parse_moov(init[ftyp.start:ftyp.end], init[moov.start:moov.end], moov.start)
        if window.track is not None and track.compatibility == window.track.compatibility:
            return   # the recorder's next segment, same format: its fragments decode with the init in use
        self._close_segment(window)   # what was built belongs to the old init
        if window.track is not None:
            window.decode_time = window.decode_time * track.timescale // window.track.timescale
            window.format_changed = True
        window.track = track
        window.init_number = window.next_sequence   # unique as the segment numbers are
        window.inits[window.init_number] = init

    def _fragment(self, window: _Window, fragment: bytes) -> None:
        if window.track is None or window.init_number is None:
            return
        moof = next(children(fragment, 0, len(fragment)))
        _, tfdt_at, wide, _, duration, key, _ = parse_moof(fragment[:moof.end], 0, window.track)
        if key:
            self._close_segment(window)
            if not wide and window.decode_time >= _TFDT_32_LIMIT:
                window.decode_time = 0    # hours of watching: restart the clock rather than wrap it
                window.format_changed = True
        elif not window.building:
            # a fragment without a key frame and no segment to add it to: the previous segment was published
            # at once (`eager`) and the camera's key frames are further apart than a fragment now
            window.eager = False
            return
        rewritten = bytearray(fragment)
        struct.pack_into(">Q" if wide else ">I", rewritten, tfdt_at + 4, window.decode_time)
        window.decode_time += duration
        window.building.append(bytes(rewritten))
        window.building_bytes += len(rewritten)
        window.building_ticks += duration
        if window.building_bytes > MAX_SEGMENT_BYTES:
            self._drop_building(window)
            now = self.clock.monotonic()
            if now - window.last_warning > WARN_EVERY_SECONDS:
                window.last_warning = now
                log.warning("camera %s: live HLS skips key frame intervals over %d bytes", window.camera,
                            MAX_SEGMENT_BYTES)
        elif key and window.eager:
            self._close_segment(window)   # the camera sends a key frame every fragment: no need to wait

    def _drop_building(self, window: _Window) -> None:
        """Forget the segment being built and wait for the next key frame; the decode time goes back, so the
        timeline stays continuous (the picture jumps, as after any lost fragment)."""
        window.decode_time -= window.building_ticks
        window.building.clear()
        window.building_bytes = window.building_ticks = 0

    def _close_segment(self, window: _Window) -> None:
        if not window.building or window.track is None or window.init_number is None:
            return
        assert window.track.timescale > 0
        segment = Segment(window.next_sequence, window.init_number, b"".join(window.building),
                          window.building_ticks / window.track.timescale, window.format_changed)
        window.eager = len(window.building) == 1
        window.building.clear()
        window.building_bytes = window.building_ticks = 0
        window.format_changed = False
        window.next_sequence += 1
        window.segments.append(segment)
        window.window_bytes += len(segment.data)
        window.target_duration = max(window.target_duration, round(segment.seconds))
        while len(window.segments) > WINDOW_SEGMENTS or (window.window_bytes > WINDOW_BYTES and len(window.segments) > 1):
            gone = window.segments.popleft()
            window.window_bytes -= len(gone.data)
            window.discontinuity_sequence += gone.discontinuity
        used = {s.init for s in window.segments} | {window.init_number}
        for number in [n for n in window.inits if n not in used]:
            del window.inits[number]
        window.ready.set()


def playlist_text(window: _Window) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{window.target_duration}",
             f"#EXT-X-MEDIA-SEQUENCE:{window.segments[0].sequence}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{window.discontinuity_sequence}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    init = None
    for segment in window.segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.init != init:
            init = segment.init
            lines.append(f'#EXT-X-MAP:URI="live/init-{init}.mp4"')
        lines += [f"#EXTINF:{segment.seconds:.3f},", f"live/{segment.sequence}.m4s"]
    return "\n".join(lines) + "\n"


# --- routes ---

PLAYLISTS_KEY = web.AppKey("edgenvr_live_playlists", LivePlaylists)


async def live_playlist(request: web.Request) -> web.Response:
    camera = known_camera(request)
    playlists = request.app[PLAYLISTS_KEY]
    if not request.app[LIVE_KEY].available:
        fail(web.HTTPServiceUnavailable, "live view is available only under `edgenvr run`")
    actor = caller(request).actor
    if not playlists.watching(actor, camera):
        await audited(request, actor, AuditAction.LIVE_VIEW, camera=camera)   # once per user, camera, session
    playlists.touch(actor, camera)
    window = playlists.window(camera)
    try:
        await asyncio.wait_for(window.ready.wait(), FIRST_SEGMENT_SECONDS)
    except asyncio.TimeoutError:
        fail(web.HTTPServiceUnavailable, f"camera {camera} sends no picture yet (is it recording?); try again")
    return web.Response(text=playlist_text(window), content_type=PLAYLIST_TYPE)


async def live_part(request: web.Request) -> web.Response:
    camera = known_camera(request)
    playlists = request.app[PLAYLISTS_KEY]
    actor = caller(request).actor
    # Parts only within the caller's audited session: no picture without an audit record, even for a script
    # that guesses part names (they are predictable); a player always asks for the playlist first.
    data = playlists.part(camera, request.match_info["name"]) if playlists.watching(actor, camera) else None
    if data is None:   # (the name is only matched against a pattern, never made into a path)
        fail(web.HTTPNotFound, "no such part of the live playlist (it may have expired: reload the playlist)")
    playlists.touch(actor, camera)
    return web.Response(body=data, content_type="video/mp4")


ROUTES = [
    ApiRoute("GET", "/api/cameras/{camera}/live.m3u8", live_playlist, Permission.VIEW,
             "The live picture as an fMP4 HLS playlist (the last few seconds), for browsers without Media Source; "
             "no extra camera session, nothing while nobody asks", (CAMERA_PATH,), content=PLAYLIST_TYPE,
             responses={"404": "No such camera", "503": "No live view here, or no picture from the camera yet"}),
    ApiRoute("GET", "/api/cameras/{camera}/live/{name}", live_part, Permission.VIEW,
             "A part the live playlist names: an init segment or a media segment", (CAMERA_PATH, PART_PATH),
             content="video/mp4", responses={"404": "No such camera, or no such part (any more)"}),
]
