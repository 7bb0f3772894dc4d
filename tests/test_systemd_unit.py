"""The shipped systemd unit: systemd accepts it, and `edgenvr run` keeps the contract it declares
(Type=notify readiness, watchdog pings well inside WatchdogSec, a clean stop on SIGTERM within TimeoutStopSec)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import config_text

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgenvr.service"
INSTALLED_BINARY = "/opt/edgenvr/bin/edgenvr"
INSTALLED_CONFIG = "/etc/edgenvr/edgenvr.toml"


def _unit_settings(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE))


def _seconds(value: str) -> float:
    return float(value.rstrip("s"))


def _verify(unit: Path) -> str:
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f"\nexit {result.returncode}")


def _local_unit(tmp_path: Path, extra: str = "") -> Path:
    """The shipped unit with its binary pointing at this checkout's installed edgenvr."""
    binary = shutil.which("edgenvr", path=str(Path(sys.executable).parent))
    assert binary, "edgenvr console script not installed next to the test interpreter"
    unit = tmp_path / "edgenvr.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, binary).replace("[Service]\n", f"[Service]\n{extra}"))
    return unit


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/setup test installs systemd")
    assert _verify(_local_unit(tmp_path)) == ""
    # the check is able to fail: a misspelt directive is reported
    assert "Unknown key" in _verify(_local_unit(tmp_path, extra="RestartSecs=2\n"))


def test_supervisor_keeps_the_contract_the_unit_declares(tmp_path: Path) -> None:
    """READY=1 once the start-up reconcile is done, WATCHDOG=1 well inside WatchdogSec, STOPPING=1 and a clean
    exit within TimeoutStopSec on SIGTERM; the unit's own command lines (check-config, run) are used."""
    settings = _unit_settings(UNIT.read_text())
    assert settings["Type"] == "notify" and settings["KillSignal"] == "SIGTERM"
    config = tmp_path / "edgenvr.toml"
    # a camera that refuses connections: the supervisor must still be ready and keep pinging
    config.write_text(config_text(tmp_path / "data", {"door": "rtsp://127.0.0.1:9/nothing"}))

    def command(line: str) -> list[str]:
        words = shlex.split(line.replace(INSTALLED_CONFIG, str(config)))
        assert words[0] == INSTALLED_BINARY
        return [sys.executable, "-m", "edgenvr", *words[1:]]

    check = subprocess.run(command(settings["ExecStartPre"]), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(0.5)
        log_path = tmp_path / "edgenvr.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command(settings["ExecStart"]), stdout=log_file, stderr=subprocess.STDOUT,
                                       env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
        try:
            messages: list[tuple[float, str]] = []
            started = time.monotonic()
            while time.monotonic() - started < 12:
                try:
                    messages.append((time.monotonic(), listener.recv(4096).decode()))
                except socket.timeout:
                    pass
            ready = [at for at, text in messages if text == "READY=1"]
            assert len(ready) == 1, messages[:5]
            assert "start-up reconcile took" in log_path.read_text()
            pings = [at for at, text in messages if text == "WATCHDOG=1" and at >= ready[0]]
            assert len(pings) >= 5
            assert max(b - a for a, b in zip(pings, pings[1:])) < _seconds(settings["WatchdogSec"]) / 3
            process.send_signal(signal.SIGTERM)
            stopping_at = time.monotonic()
            assert process.wait(timeout=_seconds(settings["TimeoutStopSec"])) == 0
            assert time.monotonic() - stopping_at < _seconds(settings["TimeoutStopSec"])
            while True:
                try:
                    messages.append((time.monotonic(), listener.recv(4096).decode()))
                except socket.timeout:
                    break
            assert "STOPPING=1" in [text for _, text in messages]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
