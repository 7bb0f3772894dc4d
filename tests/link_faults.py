"""Link faults made real at the socket level, for tests of the box-to-hub sync (store-and-forward).

This machine's kernel has no `netem`, so a flaky metro network is made of two tools a test controls:

- `FaultyLink`: a TCP proxy on 127.0.0.1 that forwards to a target and, on command, cuts connections (RST),
  freezes the link, refuses connections, adds latency, limits the rate or flips a byte in flight. It runs its
  own asyncio loop in a background thread, so synchronous tests and servers in other threads can use it.
- `rate_limited_namespace_link`: a veth pair between the root network namespace and a new one, with a kernel
  `tbf` qdisc limiting the rate, for measurements that must see a real kernel rate limit (TCP's own pacing,
  send buffers, retransmissions) rather than a proxy's.

Neither is part of the `edgenvr` package: they exist for the tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import random
import socket
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, TypeVar

import pytest

Direction = Literal["up", "down"]  # up: client -> target (box -> hub); down: target -> client
_T = TypeVar("_T")

_READ_SIZE = 65536
# Chunks read but not yet forwarded, per direction and connection: bounded so a stalled or throttled link
# pushes back on the sender through TCP (as a real link does) instead of the proxy buffering without limit.
_QUEUE_CHUNKS = 8
# How long a random drop waits for the bytes before the cut point to leave the proxy's send queue: the cut then
# happens at the same byte of the stream every run (an RST discards whatever is still queued).
_FLUSH_BEFORE_CUT_S = 0.5
_LINGER_ZERO = struct.pack("ii", 1, 0)


class _Bucket:
    """A token bucket shared by every connection in one direction (the link's capacity, not a connection's)."""

    def __init__(self, bytes_per_second: float, now: float) -> None:
        self.rate = float(bytes_per_second)
        # 20 ms worth (at least one full-size packet): small enough that the receiver sees a smooth rate, large
        # enough that the loop's sleep granularity (~1 ms) costs no accuracy.
        self.burst = max(1500.0, self.rate / 50)
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


@dataclass
class _Corruption:
    at_byte: int | None  # stream offset of the byte to flip; None: the last byte of the next chunk


@dataclass(eq=False)
class _Connection:
    id: int
    client: asyncio.StreamWriter | None = None
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    offset: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    budget: int | None = None  # up bytes left before a random drop cuts this connection
    eofs: int = 0
    closed: bool = False


class FaultyLink:
    """A TCP proxy on 127.0.0.1:`port` forwarding to `target`, with faults switched on and off by the test.

    Use it as a context manager (`with FaultyLink(("127.0.0.1", hub_port)) as link:`) and point the client at
    `("127.0.0.1", link.port)`. Every control is thread-safe, takes effect on open connections as well as new
    ones, and has happened when it returns (it runs on the proxy's loop and waits for it).

    Counters (read them any time): `bytes_up` / `bytes_down` (bytes forwarded to the target / to the client),
    `connections` (accepted), `drops` (connections cut by a fault: random drop, `drop_all_now`, `down`),
    `cut_points` (for each random drop, the up-stream bytes the target had received: reproducible for a seed
    when the client's traffic is), `corruptions` ((connection, direction, stream offset) of each flipped byte).

    Limits: one target; IPv4 loopback only; the proxy is a TCP endpoint, so the client's connect succeeds before
    the target is reached (a target that refuses shows as an immediate RST after connect); while stalled a
    client can still connect (the kernel completes the handshake); chunk boundaries seen by the target can differ
    from the client's writes; rates are of payload bytes (no TCP/IP header overhead is counted).
    """

    def __init__(self, target: tuple[str, int], *, connect_timeout: float = 5.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.drops = 0
        self.cut_points: list[int] = []
        self.corruptions: list[tuple[int, Direction, int]] = []
        self._open: dict[int, _Connection] = {}
        self._rng: random.Random | None = None
        self._mean_bytes: int | None = None
        self._delay = 0.0
        self._buckets: dict[str, _Bucket | None] = {"up": None, "down": None}
        self._corrupt: dict[str, _Corruption | None] = {"up": None, "down": None}
        self._is_down = False
        self._closed = False

        self._listener = _bound_listener()
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]

        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(started,), name=f"FaultyLink:{self.port}",
                                        daemon=True)
        self._thread.start()
        started.wait()

    # ---- lifecycle

    def __enter__(self) -> FaultyLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cut every connection (not counted as drops), stop listening and stop the loop's thread."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            self._loop.remove_reader(self._listener.fileno())
            for conn in list(self._open.values()):
                self._cut(conn, fault=False)
            self._listener.close()

        self._call(shut)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run_loop(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._loop.add_reader(self._listener.fileno(), self._on_acceptable)
        started.set()
        self._loop.run_forever()
        # Let cancelled connection tasks finish so none is destroyed pending.
        pending = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the proxy's loop and wait for it: the control has taken effect when this returns."""
        if threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the calling thread
                future.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    # ---- controls

    def drop_at_random(self, mean_bytes: int | None, seed: int = 0) -> None:
        """Cut each connection (RST both sides) after a random number of client->target bytes.

        The numbers come from `random.Random(seed)`, exponentially distributed with mean `mean_bytes` (at least
        1), one per connection in the order they were accepted: connections already open draw theirs now (counted
        from now), new ones when accepted (counted from their first byte). The same seed and the same traffic
        give the same `cut_points`. `None` turns random drops off.
        """
        def apply() -> None:
            if mean_bytes is None:
                self._rng, self._mean_bytes = None, None
                for conn in self._open.values():
                    conn.budget = None
                return
            if mean_bytes < 1:
                raise ValueError("mean_bytes must be at least 1")
            self._rng, self._mean_bytes = random.Random(seed), mean_bytes
            for conn in sorted(self._open.values(), key=lambda c: c.id):
                conn.budget = self._draw()

        self._call(apply)

    def drop_all_now(self) -> int:
        """Cut every open connection at once (RST both sides, bytes in flight lost); returns how many."""
        def apply() -> int:
            conns = list(self._open.values())
            for conn in conns:
                self._cut(conn, fault=True)
            return len(conns)

        return self._call(apply)

    def stall(self, stalled: bool = True) -> None:
        """Freeze the link in both directions without closing anything, or thaw it.

        Bytes already read are held (up to a few chunks per direction and connection; beyond that TCP flow control
        holds the sender, as a real frozen link does) and delivered in order when the link thaws.
        """
        def apply() -> None:
            assert self._flowing is not None
            if stalled:
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(apply)

    def down(self, is_down: bool = True) -> None:
        """Take the link down (a cut cable) or bring it back.

        Down: open connections are cut (RST, counted as drops) and the proxy stops listening, so a connect fails
        fast with ECONNREFUSED (the kernel answers the SYN with an RST) rather than hanging. The port stays bound
        to this proxy, so the client's address stays valid for when the link comes back up.
        """
        def apply() -> None:
            if is_down == self._is_down:
                return
            self._is_down = is_down
            fd = self._listener.fileno()
            if is_down:
                self._loop.remove_reader(fd)
                # Linux: shutdown() of a listening socket stops the listening (handshakes queued for accept() are
                # reset) but keeps the bind, so listen() can start again on the same port later.
                self._listener.shutdown(socket.SHUT_RDWR)
                for conn in list(self._open.values()):
                    self._cut(conn, fault=True)
            else:
                self._listener.listen(128)
                self._loop.add_reader(fd, self._on_acceptable)

        self._call(apply)

    def delay(self, seconds: float) -> None:
        """Add `seconds` of latency to every chunk, each way (0 for none). Pipelined: throughput is unchanged."""
        if seconds < 0:
            raise ValueError("delay must not be negative")

        def apply() -> None:
            self._delay = float(seconds)

        self._call(apply)

    def throttle(self, bytes_per_second: float | None, direction: Direction | Literal["both"] = "both") -> None:
        """Limit the payload rate with a token bucket per direction, shared by all connections; None: no limit.

        Burst: 20 ms worth (at least 1500 bytes). Accurate to well under 1 % over 10 s at 250 kB/s on loopback.
        """
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive (or None for no limit)")
        directions: tuple[str, ...] = ("up", "down") if direction == "both" else (direction,)

        def apply() -> None:
            for d in directions:
                self._buckets[d] = None if bytes_per_second is None else _Bucket(bytes_per_second, self._loop.time())

        self._call(apply)

    def corrupt_next(self, direction: Direction = "up", at_byte: int | None = None) -> None:
        """Flip one byte (XOR 0xFF) once, in the next chunk forwarded in `direction`.

        With `at_byte`, the byte flipped is the one at that offset of a connection's stream in that direction
        (the first connection to forward it, counted from the connection's first byte), so a test can aim at a
        request body. Without it, the last byte of the next chunk (the body's end when a request is written in one
        go; chunk boundaries depend on timing, so prefer `at_byte`). `corruptions` records each flip.
        """
        if at_byte is not None and at_byte < 0:
            raise ValueError("at_byte must not be negative")

        def apply() -> None:
            self._corrupt[direction] = _Corruption(at_byte)

        self._call(apply)

    # ---- the proxy

    def _draw(self) -> int:
        assert self._rng is not None and self._mean_bytes is not None
        return max(1, round(self._rng.expovariate(1.0 / self._mean_bytes)))

    def _on_acceptable(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the listener was shut down under us
                return
            self.connections += 1
            conn = _Connection(self.connections)
            if self._rng is not None:
                conn.budget = self._draw()
            self._open[conn.id] = conn
            conn.tasks = [self._loop.create_task(self._serve(conn, client))]

    async def _serve(self, conn: _Connection, client: socket.socket) -> None:
        client.setblocking(False)
        try:
            client_reader, conn.client = await asyncio.open_connection(sock=client, limit=_READ_SIZE)
            server_reader, conn.server = await asyncio.wait_for(
                asyncio.open_connection(*self.target, limit=_READ_SIZE), self.connect_timeout)
        except asyncio.CancelledError:  # cut (down, drop_all_now, close) while connecting: _cut did the rest
            if conn.client is None:
                _abort(client)
            return
        except (OSError, TimeoutError):
            if conn.client is None:
                _abort(client)
                self._open.pop(conn.id, None)
            else:
                self._cut(conn, fault=False)  # as a refusal looks through a proxy: the client sees a reset
            return
        for writer in (conn.client, conn.server):
            # No buffering in asyncio's transport: drain() then means "in the kernel", so the rate limit and the
            # cut points are measured at the socket, and a slow reader pushes back at once.
            writer.transport.set_write_buffer_limits(high=0)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # latency is ours to add, not Nagle's
        up: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        down: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        conn.tasks = [
            asyncio.create_task(self._read(conn, client_reader, up)),
            asyncio.create_task(self._write(conn, "up", up, conn.server)),
            asyncio.create_task(self._read(conn, server_reader, down)),
            asyncio.create_task(self._write(conn, "down", down, conn.client)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._open.pop(conn.id, None)

    async def _read(self, conn: _Connection, reader: asyncio.StreamReader, queue: asyncio.Queue[Any]) -> None:
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                await queue.put((self._loop.time(), data))
                if not data:  # EOF: queued behind the data, so it is delivered after it, delay and stall included
                    return
        except OSError:  # reset by a peer: pass the reset on to the other side
            self._cut(conn, fault=False)
        except asyncio.CancelledError:
            pass

    async def _write(self, conn: _Connection, direction: Direction, queue: asyncio.Queue[Any],
                     writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                read_at, data = await queue.get()
                await self._flowing.wait()
                wait = read_at + self._delay - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    await self._flowing.wait()
                    writer.write_eof()  # a half-close, passed on as such (HTTP clients may rely on it)
                    conn.eofs += 1
                    if conn.eofs == 2:  # both ways closed: an orderly end
                        self._close(conn)
                    return
                data = self._maybe_corrupt(conn, direction, data)
                await self._forward(conn, direction, memoryview(data), writer)
        except OSError:
            self._cut(conn, fault=False)
        except asyncio.CancelledError:
            pass

    def _maybe_corrupt(self, conn: _Connection, direction: Direction, data: bytes) -> bytes:
        spec = self._corrupt[direction]
        if spec is None:
            return data
        start = conn.offset[direction]
        if spec.at_byte is None:
            index = len(data) - 1
        elif start <= spec.at_byte < start + len(data):
            index = spec.at_byte - start
        else:
            return data
        self._corrupt[direction] = None
        flipped = bytearray(data)
        flipped[index] ^= 0xFF
        self.corruptions.append((conn.id, direction, start + index))
        return bytes(flipped)

    async def _forward(self, conn: _Connection, direction: Direction, view: memoryview,
                       writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while view:
            await self._flowing.wait()  # a stall holds the rest of a chunk too
            piece = view
            bucket = self._buckets[direction]  # looked up each time: throttle() may change it at any moment
            if bucket is not None:
                bucket.refill(self._loop.time())
                if bucket.tokens < 0:  # in debt: wait until the rate has paid for what went out
                    await asyncio.sleep(-bucket.tokens / bucket.rate)
                    continue
                piece = view[: int(bucket.burst)]
                bucket.tokens -= len(piece)
            cut_after = direction == "up" and conn.budget is not None and conn.budget <= len(piece)
            if cut_after:
                assert conn.budget is not None
                piece = piece[: conn.budget]
            writer.write(piece)
            await writer.drain()
            conn.offset[direction] += len(piece)
            if direction == "up":
                self.bytes_up += len(piece)
                if conn.budget is not None:
                    conn.budget -= len(piece)
            else:
                self.bytes_down += len(piece)
            view = view[len(piece):]
            if cut_after:
                await _flushed(writer, self._loop.time() + _FLUSH_BEFORE_CUT_S)
                self.cut_points.append(conn.offset["up"])
                self._cut(conn, fault=True)
                return

    def _cut(self, conn: _Connection, *, fault: bool) -> None:
        """Close both sides abruptly (RST) and stop the connection's tasks; idempotent."""
        if conn.closed:
            return
        conn.closed = True
        if fault:
            self.drops += 1
        for writer in (conn.client, conn.server):
            if writer is not None:
                _abort_writer(writer)
        current = asyncio.current_task(self._loop) if self._loop.is_running() else None
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        self._open.pop(conn.id, None)

    def _close(self, conn: _Connection) -> None:
        """Orderly close after EOF each way."""
        conn.closed = True
        for writer in (conn.client, conn.server):
            if writer is not None:
                writer.close()
        self._open.pop(conn.id, None)


def _bound_listener() -> socket.socket:
    """A socket bound to an ephemeral loopback port *by number*.

    Linux releases an ephemeral port (one bound as port 0) when a listening socket is shut down, so `down()` could
    not listen on it again; a port bound by number stays bound. A probe socket finds a free port and the listener
    binds it alongside the probe (SO_REUSEPORT on both), so no other socket can take the port in between.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.bind(("127.0.0.1", 0))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(probe.getsockname())
    probe.close()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)  # the port is this link's alone from now on
    return listener


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)  # close() then sends an RST
    sock.close()


def _abort_writer(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


async def _flushed(writer: asyncio.StreamWriter, deadline: float) -> None:
    """Wait (until `deadline`) for the kernel's send queue to empty: sent and acknowledged by the peer."""
    sock = writer.get_extra_info("socket")
    loop = asyncio.get_running_loop()
    while sock is not None and loop.time() < deadline:
        try:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return
        if queued == 0:
            return
        await asyncio.sleep(0.002)


# ---- a real kernel rate limit between two network namespaces


@dataclass
class NamespaceLink:
    """A veth pair from the root network namespace (the server's side) to namespace `namespace` (the client's).

    Run servers in the test process bound to `server_ip`; run clients with `exec_prefix` (`ip netns exec NAME`)
    before their argv, e.g. `link.python("...")` for a Python one. The `tbf` qdisc sits on the egress of the
    shaped side(s): client->server by default (the box uploading to the hub).
    """

    namespace: str
    server_ip: str
    client_ip: str
    server_veth: str
    client_veth: str
    rate_kbit: int
    exec_prefix: list[str]

    def argv(self, *command: str) -> list[str]:
        """`command` as an argv that runs inside the client namespace."""
        return [*self.exec_prefix, *command]

    def python(self, code: str, *args: str) -> list[str]:
        """An argv running `python -c code args...` (this interpreter, so this venv) in the client namespace."""
        return self.argv(sys.executable, "-c", code, *args)

    def run(self, *command: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `command` in the client namespace and wait for it (text output captured unless told otherwise)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(*command), timeout=timeout, **kwargs)

    def start(self, *command: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `command` in the client namespace; the link kills it on exit if it is still running."""
        return subprocess.Popen(self.argv(*command), **kwargs)

    def tbf_bytes_sent(self) -> int:
        """Bytes the client side's qdisc has sent (link-layer: payload plus TCP/IP and Ethernet headers)."""
        out = _ip("tc", "-s", "qdisc", "show", "dev", self.client_veth, netns=self.namespace)
        words = out.split()
        return int(words[words.index("Sent") + 1])


def _ip(*argv: str, netns: str | None = None, check: bool = True) -> str:
    command = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _free_subnet() -> tuple[str, str]:
    """A /30 in 198.18.0.0/15 (reserved for network tests, RFC 2544) that no interface here uses yet."""
    used = _ip("ip", "-4", "-o", "addr", "show")
    rng = random.Random(os.getpid() ^ threading.get_ident())
    for _ in range(100):
        third, fourth = rng.randrange(256), rng.randrange(0, 256, 4)
        server, client = f"198.18.{third}.{fourth + 1}", f"198.18.{third}.{fourth + 2}"
        if f" 198.18.{third}.{fourth + 1}/" not in used and f" 198.18.{third}.{fourth + 2}/" not in used:
            return server, client
    raise RuntimeError("no free /30 in 198.18.0.0/15")


@contextlib.contextmanager
def rate_limited_namespace_link(rate_kbit: int, *, burst_bytes: int | None = None, latency_ms: int = 50,
                                shape: Literal["up", "down", "both"] = "up",
                                mtu: int = 1500) -> Iterator[NamespaceLink]:
    """A real kernel rate limit: root namespace (server) <-veth-> new namespace (client), `tbf` on egress.

    `shape="up"` limits client->server (the qdisc on the client's veth), `"down"` server->client (the server's
    veth, in the root namespace), `"both"` each. `rate_kbit` counts link-layer bytes (Ethernet, IP and TCP headers
    included), so TCP's payload throughput is about 4-5 % lower at MTU 1500. `burst_bytes` defaults to 10 ms worth
    (at least 2 MTU); `latency_ms` bounds the qdisc's queue. Needs root, `ip` and `tc` (iproute2); skips the test
    if a namespace cannot be made. Everything made here (namespace, veth pair, qdiscs, processes started in the
    namespace) is removed on exit, also when the test fails. Several may exist at once (names and subnets are
    unique). GSO is off on the veth pair (one packet per skb), so tbf shapes packets as a real link does.
    Limits: no `netem` here, so no loss or jitter at this layer (use `FaultyLink` for those); the root side's
    address is a real address of this host while the link exists (in 198.18.0.0/15, reserved for tests).
    """
    if rate_kbit <= 0:
        raise ValueError("rate_kbit must be positive")
    tag = f"{os.getpid() % 100000}{threading.get_ident() % 97:02d}{random.randrange(100):02d}"
    namespace, server_veth, client_veth = f"enl-{tag}", f"enls{tag}", f"enlc{tag}"  # veth names: 15 chars max
    try:
        _ip("ip", "netns", "add", namespace)
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot create a network namespace: {error}")
    try:
        server_ip, client_ip = _free_subnet()
        _ip("ip", "link", "add", server_veth, "mtu", str(mtu), "type", "veth", "peer", "name", client_veth,
            "mtu", str(mtu))
        _ip("ip", "link", "set", client_veth, "netns", namespace)
        _ip("ip", "addr", "add", f"{server_ip}/30", "dev", server_veth)
        _ip("ip", "-n", namespace, "addr", "add", f"{client_ip}/30", "dev", client_veth)
        _ip("ip", "link", "set", server_veth, "up")
        _ip("ip", "-n", namespace, "link", "set", client_veth, "up")
        # One packet per skb, as a real link carries them: with GSO, TCP hands tbf 64 kB bursts that overflow its
        # short queue, and the retransmissions and timeouts that follow cost 2-3 % of throughput, varying run to
        # run. Best effort: kernels before 5.19 cannot set this on a veth (the rate is still right, less steady).
        _ip("ip", "link", "set", "dev", server_veth, "gso_max_segs", "1", "gso_max_size", str(mtu), check=False)
        _ip("ip", "-n", namespace, "link", "set", "dev", client_veth, "gso_max_segs", "1", "gso_max_size", str(mtu),
            check=False)
        _ip("ip", "-n", namespace, "link", "set", "lo", "up")
        burst = burst_bytes if burst_bytes is not None else max(2 * mtu + 100, rate_kbit * 1000 // 8 // 100)
        tbf = ["root", "tbf", "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", f"{latency_ms}ms"]
        if shape in ("up", "both"):
            _ip("tc", "qdisc", "add", "dev", client_veth, *tbf, netns=namespace)
        if shape in ("down", "both"):
            _ip("tc", "qdisc", "add", "dev", server_veth, *tbf)
        yield NamespaceLink(namespace, server_ip, client_ip, server_veth, client_veth, rate_kbit,
                            ["ip", "netns", "exec", namespace])
    finally:
        # Processes left in the namespace are the test's own (the namespace is new and uniquely named).
        for pid in _ip("ip", "netns", "pids", namespace, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        # Deleting the root-side end removes the pair even if something still holds the namespace open.
        _ip("ip", "link", "del", server_veth, check=False)
        _ip("ip", "netns", "del", namespace, check=False)
