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

import psutil
import pytest
import requests
from conftest import config_text
from web_site import free_port

from edgenvr.core.process_setup import BACKGROUND_NICE
from edgenvr.simulator import SimulatedCamera
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts, SetupCodeSource
from tests.postgres_server import shared_postgres

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
    "sched_setaffinity": outcome(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
    "priority_lowered": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)),
    "priority_raised": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 0)),
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
    # The sandbox has teeth: writable executable memory, netlink sockets and resource changes are refused, and a
    # process may lower its own priority (the web and sync processes do) but never raise it again; reading the
    # kernel clock's sync state (adjtimex, no change requested) is allowed.
    probe = subprocess.run([*sandbox, sys.executable, "-c", SANDBOX_PROBE], capture_output=True, text=True,
                           timeout=60)
    assert json.loads(probe.stdout or "{}") == {"rwx_memory": "EACCES", "netlink_socket": "EPERM",
                                                "sched_setaffinity": "EPERM", "priority_lowered": "allowed",
                                                "priority_raised": "EACCES", "adjtimex_read": "allowed"}, probe.stderr
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
    assert json.loads(status.stdout.splitlines()[0])["motion"]["state"] == "analysing", status.stdout + status.stderr


# --- every unit the project ships: the box's, its boot-time helpers', the hub's ------------------------------

ALL_UNITS = sorted(path.name for path in SYSTEMD_DIR.glob("*.service"))


def _local_units(tmp_path: Path) -> Path:
    """All shipped units in one folder (so each finds the units it requires), run from this checkout."""
    binary = shutil.which("edgenvr", path=str(Path(sys.executable).parent))
    assert binary, "edgenvr console script not installed next to the test interpreter"
    folder = tmp_path / "units"
    folder.mkdir()
    for name in ALL_UNITS:
        (folder / name).write_text((SYSTEMD_DIR / name).read_text().replace(INSTALLED_BINARY, binary))
    return folder


def test_the_project_ships_the_units_of_the_box_its_first_boot_and_the_hub() -> None:
    assert {"edgenvr.service", "edgenvr-provision.service", "edgenvr-setup-code.service", "edgenvr-hub.service",
            "edgenvr-hub-migrate.service"} <= set(ALL_UNITS)


@pytest.mark.parametrize("name", ALL_UNITS)
def test_every_unit_is_accepted_and_rates_at_most_2(tmp_path: Path, name: str) -> None:
    unit = _local_units(tmp_path) / name
    assert _verify(unit) == ""
    exposure = _exposure(unit)
    assert exposure <= MAX_EXPOSURE, f"{name}: exposure {exposure}: `systemd-analyze security` shows what it counts"
    # what the header says is what systemd-analyze measures
    header = (SYSTEMD_DIR / name).read_text().replace("\n# ", " ")
    assert f"rates it {exposure}" in header, f"{name}: rated {exposure}"


def test_the_boot_units_come_before_the_recorder_and_its_web() -> None:
    provision = _unit_settings((SYSTEMD_DIR / "edgenvr-provision.service").read_text())
    assert provision["ConditionPathExists"] == "/boot/firmware/edgenvr-provision.toml"
    assert provision["Type"] == "oneshot" and "edgenvr.service" in provision["Before"].split()
    assert "--boot-dir /boot/firmware" in provision["ExecStart"]
    setup = _unit_settings((SYSTEMD_DIR / "edgenvr-setup-code.service").read_text())
    assert "edgenvr.service" in setup["Before"].split() and "edgenvr-provision.service" in setup["After"].split()
    assert setup["RuntimeDirectory"] == "edgenvr-setup" and setup["RuntimeDirectoryMode"] == "0700"
    hub = _unit_settings((SYSTEMD_DIR / "edgenvr-hub.service").read_text())
    assert hub["Requires"] == "edgenvr-hub-migrate.service" and "edgenvr-hub-migrate.service" in hub["After"]
    assert hub["KillMode"] == "mixed"   # SIGTERM to gunicorn's master, which stops its workers gracefully


def test_installed_hub_user_and_directories_and_the_setup_codes_console_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "edgenvr-hub").mkdir(parents=True)
    (root / "etc" / "edgenvr-hub" / "hub.toml").write_text("[hub]\n")
    for command in (["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "edgenvr-hub.sysusers.conf")],
                    ["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD_DIR / "edgenvr-hub.tmpfiles.conf"),
                     str(SYSTEMD_DIR / "edgenvr-setup-code.tmpfiles.conf")]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    hub_user = users["edgenvr-hub"]
    assert int(hub_user[2]) != 0 and hub_user[6].endswith("nologin")
    settings = _unit_settings((SYSTEMD_DIR / "edgenvr-hub.service").read_text())
    assert settings["User"] == "edgenvr-hub" and settings["ReadWritePaths"] == "/var/lib/edgenvr-hub"
    data = (root / "var" / "lib" / "edgenvr-hub").stat()
    assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (int(hub_user[2]), 0o750)
    config = (root / "etc" / "edgenvr-hub" / "hub.toml").stat()
    assert (config.st_uid, config.st_gid, stat.S_IMODE(config.st_mode)) == (0, int(hub_user[3]), 0o640)
    for link in ("etc/issue.d/50-edgenvr-setup.issue", "run/issue.d/50-edgenvr-setup.issue"):
        assert os.readlink(root / link) == "/run/edgenvr-setup/setup.issue"


def _sandboxed(unit_text: str) -> list[str]:
    """A command prefix applying what can be applied of `unit_text`'s sandbox without systemd as PID 1 (see
    test_recording_works_under_the_units_sandbox)."""
    assert "MemoryDenyWriteExecute=yes" in unit_text and "PrivateUsers=yes" in unit_text
    assert _unit_settings(unit_text)["CapabilityBoundingSet"] == ""
    return ["unshare", "--user", "--map-root-user", "setpriv", "--no-new-privs", "--inh-caps=-all",
            "--bounding-set=-all", sys.executable, str(SANDBOX), json.dumps(_sandbox_rules(unit_text)), "--"]


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/api/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.3)


def _proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def test_the_web_and_sync_children_work_under_the_recorders_sandbox(tmp_path: Path) -> None:
    """The web server and the sync process are children of edgenvr.service (docs/architecture.md says why), so
    its sandbox and its rating are theirs: each runs with the unit's system-call filter (Seccomp 2), no new
    privileges and no capabilities, and works so: the web makes the first admin with a setup code (Argon2id and
    the signed audit trail under MemoryDenyWriteExecute=), reads the clock's NTP state (busctl started from it),
    and the sync process keeps trying its unreachable hub."""
    port, data_dir = free_port(), tmp_path / "data"
    data_dir.mkdir()
    with Accounts(StorageLayout(data_dir)) as accounts:
        accounts.set_setup_code("SAND-BOXE-DWEB-2024", SetupCodeSource.CONSOLE)
    config = tmp_path / "edgenvr.toml"
    config.write_text(config_text(data_dir, {}) + f'[web]\nlisten = "127.0.0.1:{port}"\ntls = false\n'
                      f'[sync]\nhub_url = "https://127.0.0.1:{free_port()}"\nenrolment_token = "sandbox-token"\n')
    log_path = tmp_path / "edgenvr.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([*_sandboxed(UNIT.read_text()), sys.executable, "-m", "edgenvr", "run", "--config",
                                    str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_health(base, process, log_path)
        children = {child.name(): child.pid for child in psutil.Process(process.pid).children(recursive=True)}
        assert {"web", "sync"} <= set(children), children
        for name in ("web", "sync"):
            status = _proc_status(children[name])
            assert (status["Seccomp"], status["NoNewPrivs"], status["CapEff"]) == ("2", "1", "0000000000000000"), name
            # they yield the CPU to recording (core.process_setup.BACKGROUND_NICE), the filter allowing it
            assert psutil.Process(children[name]).nice() == psutil.Process(process.pid).nice() + BACKGROUND_NICE
        made = requests.post(base + "/api/setup", json={"code": "sand-boxe-dweb-2024", "name": "boss",
                                                         "password": "boss-password-1"}, timeout=30)
        assert made.status_code == 201, made.text
        session = requests.Session()
        assert session.post(base + "/api/login", json={"name": "boss", "password": "boss-password-1"},
                            timeout=30).status_code == 200
        clock = session.get(base + "/api/status", timeout=30).json()["time_sync"]
        assert clock["unknown"] is None or "cannot run" not in clock["unknown"], clock
        time.sleep(3)
        assert psutil.pid_exists(children["sync"]) and "sync" in log_path.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = log_path.read_text()
    assert "Traceback" not in log and "cannot lower this process's priority" not in log, log[-3000:]


def test_the_hub_and_its_workers_work_under_the_hubs_sandbox(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """gunicorn's master and two aiohttp workers on PostgreSQL, under edgenvr-hub.service's system-call filter,
    MemoryDenyWriteExecute=, no capabilities: the migration oneshot makes the tables, the hub answers, enrols a box
    (a database write) and stops cleanly on SIGTERM."""
    postgres = shared_postgres(request)
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nlisten = "127.0.0.1:{port}"\ntls = false\ndata_dir = "{tmp_path / "hub-data"}"\n'
                      f'database_url = "{postgres.new_database()}"\nworkers = 2\n')

    def hub_command(unit: str, *args: str) -> list[str]:
        return [*_sandboxed((SYSTEMD_DIR / unit).read_text()), sys.executable, "-m", "edgenvr", "hub", *args]

    migrate = subprocess.run(hub_command("edgenvr-hub-migrate.service", "migrate", "--config", str(config)),
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0 and "hub database ready (postgresql)" in migrate.stdout, migrate.stderr
    log_path = tmp_path / "hub.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(hub_command("edgenvr-hub.service", "--config", str(config)), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        _wait_for_health(f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + 30   # gunicorn's master forks its workers after it has bound the port
        while len(workers := psutil.Process(process.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2, log_path.read_text()[-3000:]
        for worker in workers:
            status = _proc_status(worker.pid)
            assert (status["Seccomp"], status["NoNewPrivs"], status["CapEff"]) == ("2", "1", "0000000000000000")
        enrol = subprocess.run(hub_command("edgenvr-hub.service", "enrol", "--config", str(config), "--box", "rt08",
                                           "--site", "Pos RT 08"), capture_output=True, text=True, timeout=60)
        assert enrol.returncode == 0 and enrol.stdout.strip(), enrol.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
