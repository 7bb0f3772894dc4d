"""Whether the box's clock is synchronised, and what systemd-timesyncd says of its NTP server, as `edgenvr status`,
the web's /api/status (tests/test_setup_page.py) and the health report to the hub show it (core.time_sync).

"Synchronised" is the kernel's answer, the one every segment records: checked against adjtimex read here. The
NTP details come from timesyncd over D-Bus (busctl). On this machine systemd is not PID 1, so the real busctl
fails, and status must say so; a machine without systemd's tools says that instead. timesyncd's own answers can
only be shown with a stand-in busctl on PATH: a real timesyncd needs systemd as PID 1 and a system bus, and would
set this machine's clock (other tests run on it). The stand-in prints what busctl prints (the property types and
the NTP message's 15 fields, from systemd's timesyncd-bus.c).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgenvr.config.checking import load_config
from edgenvr.core.clock import SimulatedClock, read_adjtimex, synchronised_from_adjtimex
from edgenvr.core.time_format import format_ms
from edgenvr.index.recovery import open_or_rebuild
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync.box_report import box_report

pytestmark = pytest.mark.slow
# One NTP exchange: the box sent at T1, the server received at T2 and answered at T3, the answer came at T4
# (µs of the realtime clock); the box was 2.5 ms behind: ((T2 - T1) + (T3 - T4)) / 2 = +2500 µs.
T1, T2, T3, T4 = 1_787_323_275_100_000, 1_787_323_275_106_000, 1_787_323_275_106_100, 1_787_323_275_107_100
BUSCTL_ANSWER = "\n".join(json.dumps(value, separators=(",", ":")) for value in (
    {"type": "s", "data": "0.id.pool.ntp.org"},
    {"type": "(iay)", "data": [2, [145, 40, 176, 243]]},
    {"type": "t", "data": 256_000_000},
    {"type": "(uuuuittayttttbtt)", "data": [0, 4, 4, 2, -25, 6576, 228, [29, 88, 99, 4], T1, T2, T3, T4, False, 12,
                                            5476]}))


def _box(tmp_path: Path) -> Path:
    """A box that has recorded nothing yet (an index, no camera)."""
    config = tmp_path / "edgenvr.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\nmin_free = "0"\n')
    open_or_rebuild(StorageLayout(tmp_path / "data")).conn.close()
    return config


def _status(config: Path, path: str | None = None) -> tuple[str, dict]:
    env = {**os.environ, "PATH": path} if path is not None else None
    text = subprocess.run([sys.executable, "-m", "edgenvr", "status", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env=env)
    as_json = subprocess.run([sys.executable, "-m", "edgenvr", "status", "--config", str(config), "--json"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    return text.stdout, json.loads(as_json.stdout.splitlines()[-1])["time_sync"]


def _stand_in_busctl(folder: Path, output: str, code: int = 0) -> str:
    """A busctl printing `output` (on stderr when it fails, as busctl does) and exiting with `code`."""
    folder.mkdir()
    script = folder / "busctl"
    script.write_text(f"#!/bin/sh\ncat {'>&2 ' if code else ''}<<'EOF'\n{output}\nEOF\nexit {code}\n")
    script.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_status_says_what_the_kernel_says_and_why_ntp_is_unknown_here(tmp_path: Path) -> None:
    if shutil.which("busctl") is None:
        pytest.skip("busctl is not installed here: the next test covers a machine without it")
    state, status = read_adjtimex()
    text, clock = _status(_box(tmp_path))
    assert clock["synchronised"] == synchronised_from_adjtimex(state, status)
    real = subprocess.run(["busctl", "--json=short", "get-property", "org.freedesktop.timesync1",
                           "/org/freedesktop/timesync1", "org.freedesktop.timesync1.Manager", "ServerName"],
                          capture_output=True, text=True, timeout=10)
    if real.returncode == 0:   # a machine with timesyncd running: then its answers are shown
        assert clock["unknown"] is None and clock["server"] == json.loads(real.stdout)["data"]
        return
    # this machine: systemd is not PID 1 (no system bus); status says so in busctl's own words
    assert clock["unknown"].startswith("systemd-timesyncd cannot be asked: ")
    assert real.stderr.strip().splitlines()[-1] in clock["unknown"]
    assert clock["server"] is None and clock["offset_ms"] is None
    assert f"NTP: unknown ({clock['unknown']})" in text.splitlines()[-1]


def test_without_systemds_tools_the_ntp_state_is_unknown_and_says_why(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    text, clock = _status(_box(tmp_path), path=str(bare))   # the interpreter is named by its full path
    assert clock["unknown"] == "busctl not available: not a systemd system"
    assert text.splitlines()[-1].startswith("clock: ") and "NTP: unknown (busctl not available" in text


def test_timesyncds_server_last_sync_and_offset_are_shown(tmp_path: Path) -> None:
    path = _stand_in_busctl(tmp_path / "bin", BUSCTL_ANSWER)
    config = _box(tmp_path)
    text, clock = _status(config, path=path)
    assert clock["server"] == "0.id.pool.ntp.org" and clock["server_address"] == "145.40.176.243"
    assert clock["last_sync_ms"] == T4 // 1000 and clock["offset_ms"] == 2.5
    assert clock["poll_interval_s"] == 256 and clock["stratum"] == 2 and clock["unknown"] is None
    line = text.splitlines()[-1]
    assert (f"NTP server 0.id.pool.ntp.org (145.40.176.243); last sync {format_ms(T4 // 1000)}; offset +2.5 ms; "
            "polled every 256 s") in line
    # the health report to the hub: the same record, "synchronised" from the box's clock
    os.environ["PATH"], saved = path, os.environ["PATH"]
    try:
        layout = StorageLayout(tmp_path / "data")
        with open_or_rebuild(layout).conn as conn:
            for synchronised in (True, False):
                report = box_report(conn, load_config(config), SimulatedClock(synchronised=synchronised))
                assert report["clock_synchronised"] is synchronised is report["time_sync"]["synchronised"]
                assert report["time_sync"]["server"] == "0.id.pool.ntp.org"
    finally:
        os.environ["PATH"] = saved


def test_a_timesyncd_that_has_not_answered_yet_or_fails_is_said_so(tmp_path: Path) -> None:
    waiting = BUSCTL_ANSWER.replace(f"{T1},{T2},{T3},{T4}", "0,0,0,0").replace('"data":[2,[145,40,176,243]]',
                                                                                 '"data":[0,[]]')
    text, clock = _status(_box(tmp_path), path=_stand_in_busctl(tmp_path / "waiting", waiting))
    assert clock["server"] == "0.id.pool.ntp.org" and clock["last_sync_ms"] is None and clock["offset_ms"] is None
    assert clock["server_address"] is None and clock["unknown"] is None
    failing = _stand_in_busctl(tmp_path / "failing", "Failed to get property ServerName: Unit dbus-org.freedesktop."
                               "timesync1.service not found.", code=1)
    (tmp_path / "other").mkdir()
    _, clock = _status(_box(tmp_path / "other"), path=failing)
    assert clock["unknown"] == ("systemd-timesyncd cannot be asked: Failed to get property ServerName: Unit "
                                "dbus-org.freedesktop.timesync1.service not found.")
