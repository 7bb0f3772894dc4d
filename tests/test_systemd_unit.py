"""The shipped systemd unit: systemd accepts it, `edgenvr run` keeps the contract it declares (Type=notify
readiness, watchdog pings well inside WatchdogSec, a clean stop on SIGTERM within TimeoutStopSec), its sandbox
rates at most 2.0 on `systemd-analyze security` and recording still works under it, and the shipped sysusers
and tmpfiles files make the service user, the viewer group and a data directory only they can enter.

systemd is not PID 1 where the tests run, so the unit is never started for real: the sandbox test applies
what can be applied without systemd (see test_recording_works_under_the_units_sandbox)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import config_text

from edgenvr.simulator import SimulatedCamera

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "edgenvr.service"
SANDBOX = Path(__file__).resolve().parent / "unit_sandbox.py"
MAX_EXPOSURE = 2.0
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


def _exposure(unit: Path) -> float:
    """The overall exposure `systemd-analyze security` gives the unit file (0 safest, 10 least safe)."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


def test_systemd_rates_the_units_sandbox_at_most_2(tmp_path: Path) -> None:
    exposure = _exposure(_local_unit(tmp_path))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure}: `systemd-analyze security` shows what it counts"
    # the number is read, not assumed: a unit with no sandbox rates far worse
    bare = tmp_path / "bare" / "edgenvr.service"
    bare.parent.mkdir()
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert _exposure(bare) > 9


def test_installed_users_and_directories_keep_the_data_to_edgenvr_and_its_viewers(tmp_path: Path) -> None:
    """systemd-sysusers and systemd-tmpfiles apply the shipped files to an empty root, as an install does: a
    service user, a viewer group, a data directory (set-group-ID to the viewer group, so what the service
    creates there is theirs too) that nobody else can enter, and a config (camera passwords) that only the
    service's group reads."""
    root = tmp_path / "root"
    (root / "etc" / "edgenvr").mkdir(parents=True)
    (root / "etc" / "edgenvr" / "edgenvr.toml").write_text("# camera passwords live here\n")
    (root / "etc" / "edgenvr" / "edgenvr.toml").chmod(0o644)  # as an editor under umask 022 leaves it
    for command in (["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "edgenvr.sysusers.conf")],
                    ["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD_DIR / "edgenvr.tmpfiles.conf")]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: int(line.split(":")[2]) for line in (root / "etc" / "group").read_text().splitlines()}
    settings = _unit_settings(UNIT.read_text())
    service_user = users[settings["User"]]
    assert int(service_user[2]) != 0 and service_user[6].endswith("nologin")
    assert "edgenvr-view" in groups and groups["edgenvr-view"] != groups[settings["Group"]]

    def owner_and_mode(relative: str) -> tuple[int, int, int]:
        entry = (root / relative).stat()
        return entry.st_uid, entry.st_gid, stat.S_IMODE(entry.st_mode)

    assert owner_and_mode("var/lib/edgenvr") == (int(service_user[2]), groups["edgenvr-view"], 0o2750)
    assert settings["ReadWritePaths"] == "/var/lib/edgenvr"  # the one directory the sandbox lets it write
    assert owner_and_mode("etc/edgenvr") == (0, groups[settings["Group"]], 0o750)
    assert owner_and_mode("etc/edgenvr/edgenvr.toml") == (0, groups[settings["Group"]], 0o640)
    # the unit's own modes agree with the tmpfiles lines (systemd warns at every start otherwise)
    assert settings["ConfigurationDirectoryMode"] == "0750" and settings["UMask"] == "0027"


def _syscall_groups() -> dict[str, list[str]]:
    """systemd's named system-call groups (@system-service, ...) with their members, some of them groups."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif not line.strip():
            members = None
        elif members is not None and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def _sandbox_rules(unit_text: str) -> dict[str, object]:
    """The system calls the unit allows, as systemd reads its SystemCallFilter= lines: the first is an allow
    list, each later one adds names or (with ~) takes them away, in order; plus the errno for the rest and
    RestrictAddressFamilies=."""
    groups = _syscall_groups()

    def expand(names: list[str]) -> set[str]:
        return set().union(*(expand(groups[n]) if n.startswith("@") else {n} for n in names))

    lines = re.findall(r"^SystemCallFilter=(.*)$", unit_text, flags=re.MULTILINE)
    assert lines and not lines[0].startswith("~"), "the filter must start as an allow list"
    allowed: set[str] = set()
    for line in lines:
        names = expand(line.removeprefix("~").split())
        allowed = allowed - names if line.startswith("~") else allowed | names
    settings = _unit_settings(unit_text)
    return {"syscalls": sorted(allowed), "errno": getattr(errno, settings["SystemCallErrorNumber"]),
            "address_families": settings["RestrictAddressFamilies"].split()}


SANDBOX_PROBE = """
import ctypes, errno, json, mmap, os, socket

def outcome(action):
    try:
        action()
        return "allowed"
    except OSError as exc:
        return errno.errorcode[exc.errno]

def adjtimex_read():
    timex = ctypes.create_string_buffer(256)  # struct timex, modes = 0: read only
    if ctypes.CDLL(None, use_errno=True).adjtimex(timex) < 0:
        raise OSError(ctypes.get_errno(), "adjtimex")

print(json.dumps({
    "rwx_memory": outcome(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)),
    "netlink_socket": outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()),
    "setpriority": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)),
    "adjtimex_read": outcome(adjtimex_read),
}))
"""


def test_recording_works_under_the_units_sandbox(tmp_path: Path, h264_clip: Path, simulator_ready: None) -> None:
    """MemoryDenyWriteExecute= and SystemCallFilter= can stop libav, numpy, OpenCV or zmq at run time, which
    no static check sees. `edgenvr run` records a camera with its recorder and motion processes under what can
    be applied without systemd as PID 1: the unit's system-call allow list and socket families (libseccomp,
    as systemd loads them), MemoryDenyWriteExecute= as the kernel's W^X rule (PR_SET_MDWE), no capabilities
    and no_new_privs (CapabilityBoundingSet=, NoNewPrivileges=), a user namespace of its own (PrivateUsers=).
    Not applied here: the file system and /proc views (ProtectSystem=, PrivateTmp=, ProtectProc=, ...),
    RestrictNamespaces=, RestrictRealtime=, RestrictSUIDSGID=, LockPersonality=, and a non-root user id."""
    unit_text = UNIT.read_text()
    assert "MemoryDenyWriteExecute=yes" in unit_text and "PrivateUsers=yes" in unit_text
    assert _unit_settings(unit_text)["CapabilityBoundingSet"] == ""
    sandbox = ["unshare", "--user", "--map-root-user",
               "setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
               sys.executable, str(SANDBOX), json.dumps(_sandbox_rules(unit_text)), "--"]
    # The sandbox has teeth: writable executable memory, netlink sockets and resource changes are refused;
    # reading the kernel clock's sync state (adjtimex, no change requested) is not.
    probe = subprocess.run([*sandbox, sys.executable, "-c", SANDBOX_PROBE], capture_output=True, text=True,
                           timeout=60)
    assert json.loads(probe.stdout or "{}") == {"rwx_memory": "EACCES", "netlink_socket": "EPERM",
                                                "setpriority": "EPERM", "adjtimex_read": "allowed"}, probe.stderr
    data_dir = tmp_path / "data"
    config = tmp_path / "edgenvr.toml"
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=tmp_path / "camera.log") as camera:
        config.write_text(config_text(data_dir, {"door": camera.url("cam")}, segment_seconds=2, motion=True))
        command = [*sandbox, sys.executable, "-m", "edgenvr", "run", "--config", str(config)]
        log_path = tmp_path / "edgenvr.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 45
            while len(list(data_dir.rglob("*.mp4"))) < 3 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)  # every wrapper exec()s: this is the supervisor
            assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    log = log_path.read_text()
    indexed = re.search(r"stopped; (\d+) segments indexed this run", log)
    assert indexed and int(indexed.group(1)) >= 3, log[-3000:]
    assert "Traceback" not in log and "exited with code" not in log and "no heartbeat" not in log, log[-3000:]
    status = subprocess.run([sys.executable, "-m", "edgenvr", "status", "--config", str(config), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["motion"]["state"] == "analysing", status.stdout + status.stderr
