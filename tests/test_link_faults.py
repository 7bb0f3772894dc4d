"""The link-fault tools themselves (tests/link_faults.py), against tiny echo and sink servers on real sockets."""

from __future__ import annotations

import queue
import random
import socket
import subprocess
import threading
import time
from typing import Callable, Iterator

import pytest
from link_faults import FaultyLink, rate_limited_namespace_link

MBIT = 1_000_000 / 8  # bytes per second in one Mbit/s


class Server:
    """A loopback TCP server running `handler(conn)` in a thread per connection; results go to `results`."""

    def __init__(self, handler: Callable[[socket.socket], object], host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.results: queue.Queue[object] = queue.Queue()
        self.sock = socket.create_server((host, 0))
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            self.results.put(self.handler(conn))

    def close(self) -> None:
        self.sock.close()


def echo(conn: socket.socket) -> None:
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def sink(conn: socket.socket) -> tuple[int, str]:
    """Counts bytes until EOF or reset; returns (bytes, how it ended)."""
    total = 0
    try:
        while data := conn.recv(65536):
            total += len(data)
    except OSError as error:
        return total, type(error).__name__
    return total, "eof"


def rate_meter(seconds: float) -> Callable[[socket.socket], tuple[int, float]]:
    """A sink measuring the receive rate for `seconds` from the first byte: returns (bytes after it, elapsed)."""
    def measure(conn: socket.socket) -> tuple[int, float]:
        first = conn.recv(65536)
        start = last = time.monotonic()
        total = 0
        assert first
        while last - start < seconds:
            data = conn.recv(65536)
            if not data:
                break
            total += len(data)
            last = time.monotonic()
        return total, last - start
    return measure


@pytest.fixture
def echo_server() -> Iterator[Server]:
    server = Server(echo)
    yield server
    server.close()


def exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send `payload` through an echo, half-close, read everything back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while data := sock.recv(65536):
            received += data
        sender.join()
    return bytes(received)


def test_data_passes_unchanged_without_faults(echo_server: Server) -> None:
    payload = random.Random(1).randbytes(3_000_000)
    with FaultyLink(echo_server.address) as link:
        assert exchange(link.port, payload) == payload
        assert exchange(link.port, b"x") == b"x"
        assert (link.bytes_up, link.bytes_down) == (len(payload) + 1, len(payload) + 1)
        assert (link.connections, link.drops) == (2, 0)


def cut_run(target: tuple[str, int], server: Server, seed: int, count: int) -> tuple[list[int], list[tuple[int, str]]]:
    """`count` connections in turn, each sending until cut; returns the link's cut points and what the server saw."""
    payload = b"u" * 2_000_000
    seen: list[tuple[int, str]] = []
    with FaultyLink(target) as link:
        link.drop_at_random(mean_bytes=50_000, seed=seed)
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", link.port), timeout=5) as sock:
                with pytest.raises((ConnectionResetError, BrokenPipeError)):
                    sock.sendall(payload)  # larger than any cut point (P < e^-40) and than the buffers between
                    sock.recv(1)  # the cut came after sendall handed everything to the kernel: the RST shows here
            seen.append(server.results.get(timeout=5))  # type: ignore[arg-type]
        assert link.drops == count and link.connections == count
        return link.cut_points, seen


def test_drop_at_random_cuts_connections_reproducibly() -> None:
    server = Server(sink)
    try:
        cuts, seen = cut_run(server.address, server, seed=7, count=6)
        again, seen_again = cut_run(server.address, server, seed=7, count=6)
        other, _ = cut_run(server.address, server, seed=8, count=6)
    finally:
        server.close()
    print(f"cut points for seed 7: {cuts}; server saw {seen}")
    assert len(cuts) == 6 and len(set(cuts)) == 6
    assert again == cuts and other != cuts
    # The target received exactly the bytes before each cut point, then the reset.
    assert seen == seen_again == [(cut, "ConnectionResetError") for cut in cuts]
    assert 5_000 < sum(cuts) / len(cuts) < 500_000  # exponential with mean 50 kB: loose, 6 draws


def test_drop_all_now_resets_every_open_connection(echo_server: Server) -> None:
    with FaultyLink(echo_server.address) as link:
        clients = [socket.create_connection(("127.0.0.1", link.port), timeout=5) for _ in range(3)]
        for sock in clients:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        assert link.drop_all_now() == 3
        for sock in clients:
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
            sock.close()
        assert link.drops == 3
        assert exchange(link.port, b"still works") == b"still works"  # new connections are not affected


def test_stall_holds_bytes_and_releases_them(echo_server: Server) -> None:
    with FaultyLink(echo_server.address) as link:
        with socket.create_connection(("127.0.0.1", link.port), timeout=5) as sock:
            sock.sendall(b"before")
            assert sock.recv(6) == b"before"
            link.stall(True)
            sock.sendall(b"held back")
            sock.settimeout(0.7)
            with pytest.raises(TimeoutError):
                sock.recv(100)
            assert link.bytes_up == 6
            link.stall(False)
            sock.settimeout(5)
            received = b""
            while len(received) < 9:
                received += sock.recv(100)
            assert received == b"held back"
        assert link.drops == 0


def test_down_refuses_connections_fast_and_up_restores(echo_server: Server) -> None:
    with FaultyLink(echo_server.address) as link:
        open_one = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        open_one.sendall(b"a")
        assert open_one.recv(1) == b"a"
        link.down(True)
        with pytest.raises(ConnectionResetError):
            open_one.recv(1)
        open_one.close()
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", link.port), timeout=5)
        assert time.monotonic() - started < 0.5
        link.down(False)
        assert exchange(link.port, b"back up") == b"back up"
        assert (link.drops, link.connections) == (1, 2)


def test_delay_adds_latency_each_way(echo_server: Server) -> None:
    with FaultyLink(echo_server.address) as link:
        link.delay(0.2)
        with socket.create_connection(("127.0.0.1", link.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
            round_trip = time.monotonic() - started
        assert 0.4 <= round_trip < 0.8
        link.delay(0)
        started = time.monotonic()
        assert exchange(link.port, b"fast") == b"fast"
        assert time.monotonic() - started < 0.2


def test_corrupt_next_flips_exactly_one_byte(echo_server: Server) -> None:
    payload = random.Random(2).randbytes(200_000)
    with FaultyLink(echo_server.address) as link:
        link.corrupt_next("up", at_byte=123_456)
        received = exchange(link.port, payload)
        differ = [i for i in range(len(payload)) if payload[i] != received[i]]
        assert len(received) == len(payload) and differ == [123_456]
        assert received[123_456] == payload[123_456] ^ 0xFF
        assert exchange(link.port, payload) == payload  # once only
        link.corrupt_next("down")
        received = exchange(link.port, payload)
        assert sum(a != b for a, b in zip(payload, received)) == 1
        assert [c[:2] for c in link.corruptions] == [(1, "up"), (3, "down")]


def send_forever(address: tuple[str, int]) -> None:
    """Send until the receiver closes."""
    block = b"t" * 65536
    try:
        with socket.create_connection(address, timeout=30) as sock:
            while True:
                sock.sendall(block)
    except OSError:
        pass


@pytest.mark.slow
def test_throttle_rate_is_accurate() -> None:
    server = Server(rate_meter(10))
    try:
        with FaultyLink(server.address) as link:
            link.throttle(2 * MBIT, "up")
            threading.Thread(target=send_forever, args=(("127.0.0.1", link.port),), daemon=True).start()
            total, elapsed = server.results.get(timeout=30)  # type: ignore[misc]
    finally:
        server.close()
    rate = total / elapsed
    print(f"FaultyLink throttle 2 Mbit/s: measured {rate * 8 / 1e6:.4f} Mbit/s over {elapsed:.2f} s")
    assert abs(rate / (2 * MBIT) - 1) < 0.10


SENDER = """
import socket, sys
block = b"n" * 65536
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as sock:
        while True:
            sock.sendall(block)
except OSError:
    pass
"""


@pytest.mark.slow
def test_namespace_link_tbf_rate_is_accurate() -> None:
    with rate_limited_namespace_link(2000) as link:
        server = Server(rate_meter(10), host=link.server_ip)
        try:
            before = link.tbf_bytes_sent()
            with subprocess.Popen(link.python(SENDER, *map(str, server.address)), stderr=subprocess.PIPE) as sender:
                total, elapsed = server.results.get(timeout=30)  # type: ignore[misc]
                wire = link.tbf_bytes_sent() - before
                _, errors = sender.communicate(timeout=10)  # it ends when the meter closes
            print(link.run("tc", "-s", "qdisc", "show", "dev", link.client_veth).stdout.strip())
            assert sender.returncode == 0, errors
        finally:
            server.close()
    goodput = total / elapsed
    print(f"tbf 2000 kbit: TCP payload {goodput * 8 / 1e6:.4f} Mbit/s over {elapsed:.2f} s; "
          f"link layer (tc) {wire * 8 / 1e6 / elapsed:.4f} Mbit/s (approx., includes the run-up)")
    assert abs(goodput / (2 * MBIT) - 1) < 0.10
