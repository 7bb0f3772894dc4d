"""`edgenvr discover` against small ONVIF cameras (tests/onvif_responder.py) on a LAN made of network
namespaces: what an installer relies on to fill in the [[cameras]] tables.

The LAN: two new namespaces, one for the box (`edgenvr discover` runs in it with `ip netns exec`) and one
for the cameras (each responder is a process there with its own address on the same interface), joined by
a veth pair, 10.213.0.0/24. Neither namespace has any route but the connected /24: no default route and no
route for 224.0.0.0/4. Multicast still works, and that is what the test shows, because both ends name the
interface instead of asking the routing table:
- the box sends each probe from a socket bound to the interface's address with IP_MULTICAST_IF set to
  the interface's index, so the kernel sends on that device without a route lookup (without it, sendto to
  239.255.255.250 fails with ENETUNREACH in a namespace without a default route);
- each camera joins 239.255.255.250 with IP_ADD_MEMBERSHIP naming the interface by index (without one, the
  kernel picks the interface from the route to the group and fails with ENODEV);
- ProbeMatches come back unicast to the box's address, which the connected route covers.
Several cameras in one namespace each bind 239.255.255.250:3702 with SO_REUSEADDR: the kernel hands every
multicast datagram to each of them, as every camera on a real LAN gets the probe.

Nothing leaves the namespaces: the box's side has only this veth, so no probe reaches the machine's real LAN.
Stream URIs are fixed strings (rtsp://<camera>:554/Streaming/Channels/10x): `check-config` checks their form,
and reading a real stream is the recorder's tests' business.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest

from edgenvr.cli.main import main as edgenvr_main
from edgenvr.config.checking import load_config
from tests.link_faults import _ip

pytestmark = pytest.mark.slow

RESPONDER = Path(__file__).with_name("onvif_responder.py")
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "kamera-Rahasia"
SUBNET = "10.213.0"


@dataclass
class CameraLan:
    box_namespace: str
    camera_namespace: str
    box_veth: str
    camera_veth: str
    tmp: Path
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    next_host: int = 2

    def start_camera(self, mode: str = "normal", *, clock_offset_s: float = 0, name: str = "gate",
                     port: int = 8080, endpoint: str | None = None) -> str:
        """Start a responder on a new address; returns that address once it answers (probes and HTTP)."""
        address = f"{SUBNET}.{self.next_host}"
        self.next_host += 1
        _ip("ip", "-n", self.camera_namespace, "addr", "add", f"{address}/24", "dev", self.camera_veth)
        password_file = self.tmp / f"camera-{address}.pw"
        password_file.write_text(PASSWORD + "\n")
        argv = ["ip", "netns", "exec", self.camera_namespace, sys.executable, str(RESPONDER),
                "--address", address, "--interface", self.camera_veth, "--port", str(port),
                "--password-file", str(password_file), "--mode", mode, "--name", name,
                "--clock-offset-s", str(clock_offset_s), "--endpoint", endpoint or f"urn:uuid:camera-{address}"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        ready = threading.Event()
        threading.Thread(target=lambda: process.stdout and process.stdout.readline() and ready.set(),
                         daemon=True).start()
        if not ready.wait(20):
            process.kill()
            raise RuntimeError(f"the ONVIF responder did not start: {process.communicate()[1][-2000:]}")
        return address

    def discover(self, *args: str, password: str | None = PASSWORD, password_how: str = "file",
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`edgenvr discover ARGS` run in the box's namespace; the password given the way named."""
        env = {key: value for key, value in os.environ.items() if key != "EDGENVR_CAMERA_PASSWORD"}
        extra: list[str] = []
        stdin = None
        if password is not None and password_how == "file":
            path = self.tmp / "box.pw"
            path.write_text(password + "\n")
            extra = ["--password-file", str(path)]
        elif password is not None and password_how == "env":
            env["EDGENVR_CAMERA_PASSWORD"] = password
        elif password is not None and password_how == "stdin":
            extra, stdin = ["--password-stdin"], password + "\n"
        argv = ["ip", "netns", "exec", self.box_namespace, sys.executable, "-m", "edgenvr", "discover", *args]
        if "--user" in args:
            argv += extra
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=REPO, stdin=None if stdin is not None else subprocess.DEVNULL)


@contextlib.contextmanager
def camera_lan(tmp: Path) -> Iterator[CameraLan]:
    tag = f"{os.getpid() % 10000}{random.randrange(1000):03d}"
    lan = CameraLan(f"onvb-{tag}", f"onvc-{tag}", f"onvb{tag}", f"onvc{tag}", tmp)
    try:
        _ip("ip", "netns", "add", lan.box_namespace)
        _ip("ip", "netns", "add", lan.camera_namespace)
    except (RuntimeError, OSError) as error:
        _ip("ip", "netns", "del", lan.box_namespace, check=False)
        pytest.skip(f"cannot create a network namespace: {error}")
    try:
        _ip("ip", "link", "add", lan.box_veth, "netns", lan.box_namespace, "type", "veth",
            "peer", "name", lan.camera_veth, "netns", lan.camera_namespace)
        _ip("ip", "-n", lan.box_namespace, "addr", "add", f"{SUBNET}.1/24", "dev", lan.box_veth)
        for namespace, veth in ((lan.box_namespace, lan.box_veth), (lan.camera_namespace, lan.camera_veth)):
            _ip("ip", "-n", namespace, "link", "set", veth, "up")
            _ip("ip", "-n", namespace, "link", "set", "lo", "up")
        yield lan
    finally:
        for process in lan.processes:
            process.kill()
            process.communicate()
        for namespace in (lan.box_namespace, lan.camera_namespace):
            for pid in _ip("ip", "netns", "pids", namespace, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("ip", "netns", "del", namespace, check=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[CameraLan]:
    with camera_lan(tmp_path) as made:
        yield made


def _tables(stdout: str) -> str:
    """The [[cameras]] tables discover printed (everything from their heading on)."""
    start = stdout.index("# [[cameras]] tables")
    return stdout[start:]


def _check_config(tmp: Path, tables: str) -> tuple[int, str]:
    """`edgenvr check-config` on a config made of a data dir and the pasted tables: (exit code, output)."""
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    path = tmp / "edgenvr.toml"
    path.write_text(f'[storage]\ndata_dir = "{data}"\nmin_free = "1MB"\n\n{tables}')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = edgenvr_main(["check-config", str(path)])
    return code, out.getvalue()


def test_finds_the_camera_and_prints_both_streams_as_a_config_table(lan: CameraLan, tmp_path: Path) -> None:
    # The camera's clock is 2 hours fast (no NTP): its tokens must be made on its time, not the box's.
    address = lan.start_camera(clock_offset_s=7200)

    found = lan.discover("--timeout", "2")
    assert found.returncode == 0, found.stderr
    assert f"http://{address}:8080/onvif/device_service" in found.stdout
    assert "urn:uuid:camera-" in found.stdout

    result = lan.discover("--timeout", "2", "--user", "admin")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"camera http://{address}:8080/onvif/device_service" in out
    assert "Acme TC-1, firmware 5.7.3" in out
    assert f"rtsp://{address}:554/Streaming/Channels/101" in out and "1920x1080" in out
    assert f"rtsp://{address}:554/Streaming/Channels/102" in out and "640x360" in out
    assert "AudioOnly" not in out   # nothing to record in it
    assert PASSWORD not in out + result.stderr

    code, said = _check_config(tmp_path, _tables(out))
    assert code == 0, said
    camera = load_config(tmp_path / "edgenvr.toml").cameras[0]
    assert camera.url == f"rtsp://admin:<password>@{address}:554/Streaming/Channels/101"   # highest resolution
    assert camera.detect_url == f"rtsp://admin:<password>@{address}:554/Streaming/Channels/102"   # lowest
    assert camera.id == f"cam-{address.replace('.', '-')}" and camera.name == f"Acme TC-1 ({address})"


def test_show_password_writes_it_percent_encoded_where_the_recorder_reads_it(lan: CameraLan,
                                                                            tmp_path: Path) -> None:
    address = lan.start_camera()
    result = lan.discover("--device", f"{address}:8080", "--user", "admin", "--show-password", password_how="env")
    assert result.returncode == 0, result.stderr
    code, said = _check_config(tmp_path, _tables(result.stdout))
    assert code == 0, said
    url = load_config(tmp_path / "edgenvr.toml").cameras[0].url
    assert unquote(urlsplit(url).password or "") == PASSWORD and urlsplit(url).hostname == address


def test_a_camera_that_wants_http_digest_is_read_too(lan: CameraLan) -> None:
    address = lan.start_camera("http-digest")
    result = lan.discover("--device", f"http://{address}:8080/onvif/device_service", "--user", "admin",
                          password_how="stdin")
    assert result.returncode == 0, result.stderr
    assert f"rtsp://admin:<password>@{address}:554/Streaming/Channels/101" in result.stdout


def test_wrong_password_is_said_plainly_and_fails(lan: CameraLan) -> None:
    address = lan.start_camera()
    wrong = "not-the-password"
    result = lan.discover("--timeout", "2", "--user", "admin", password=wrong)
    assert result.returncode == 1
    assert f"{address}:8080 refused user 'admin': wrong user name or password" in result.stderr
    assert "[[cameras]]" not in result.stdout and "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_two_cameras_are_two_entries(lan: CameraLan, tmp_path: Path) -> None:
    first = lan.start_camera(name="gate")
    second = lan.start_camera(name="yard", port=8081)

    result = lan.discover("--timeout", "2", "--user", "admin", "--json")
    assert result.returncode == 0, result.stderr
    cameras = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(camera["address"] for camera in cameras) == [first, second]   # each once, however many probes
    assert {camera["device_url"] for camera in cameras} == {f"http://{first}:8080/onvif/device_service",
                                                            f"http://{second}:8081/onvif/device_service"}
    assert all(camera["error"] is None and camera["camera"]["url"].endswith("/101") for camera in cameras)

    text = lan.discover("--timeout", "2", "--user", "admin")
    assert text.returncode == 0, text.stderr
    assert _tables(text.stdout).count("[[cameras]]\n") == 2
    code, said = _check_config(tmp_path, _tables(text.stdout))
    assert code == 0, said
    assert len(load_config(tmp_path / "edgenvr.toml").cameras) == 2


def test_nobody_answering_says_where_it_asked_and_fails(lan: CameraLan) -> None:
    started = time.monotonic()
    result = lan.discover("--timeout", "1")
    assert result.returncode == 1
    assert f"no ONVIF camera answered on {lan.box_veth} ({SUBNET}.1) within 1 s" in result.stderr
    assert "multicast" in result.stderr and "--device" in result.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("mode, said", [("bad-xml", "is not well-formed XML"), ("xml-bomb", "declares a DTD")])
def test_hostile_or_broken_xml_from_a_camera_is_refused_quickly(lan: CameraLan, mode: str, said: str) -> None:
    address = lan.start_camera(mode)
    started = time.monotonic()
    result = lan.discover("--device", f"{address}:8080", "--user", "admin")
    assert result.returncode == 1
    assert f"{address}:8080 answered GetProfiles with unusable XML: it {said}" in result.stderr
    assert "Traceback" not in result.stderr and "[[cameras]]" not in result.stdout
    assert time.monotonic() - started < 15   # a bomb expanded would take minutes and gigabytes


@pytest.mark.parametrize("mode, said", [("bad-probe-xml", "is not well-formed XML"), ("probe-bomb", "declares a DTD")])
def test_an_unreadable_probe_answer_is_skipped_and_reported(lan: CameraLan, mode: str, said: str) -> None:
    address = lan.start_camera(mode)
    result = lan.discover("--timeout", "1.5")
    assert result.returncode == 1
    assert f"an answer was skipped, from {address}: it {said}" in result.stderr
    assert "no ONVIF camera answered" in result.stderr


def test_a_device_that_is_not_onvif_or_not_there(lan: CameraLan) -> None:
    address = lan.start_camera("not-onvif")
    result = lan.discover("--device", f"{address}:8080", "--user", "admin")
    assert result.returncode == 1
    assert f"{address}:8080 is not an ONVIF device service at /onvif/device_service (HTTP 404, text/html, not a SOAP 1.2 envelope)" in result.stderr

    nothing = lan.discover("--device", f"{address}:9", "--user", "admin")
    assert nothing.returncode == 1
    assert re.search(rf"cannot connect to {re.escape(address)}:9: .*[Rr]efused", nothing.stderr), nothing.stderr


def test_unknown_interface_is_named(lan: CameraLan) -> None:
    result = lan.discover("--interface", "nope0", "--timeout", "1")
    assert result.returncode == 1
    assert "there is no network interface 'nope0'" in result.stderr and lan.box_veth in result.stderr


def test_no_password_source_is_refused_before_anything_is_asked(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGENVR_CAMERA_PASSWORD", raising=False)
    # Under pytest stdin is not a terminal, so nobody could be asked either.
    assert edgenvr_main(["discover", "--device", "192.0.2.1", "--user", "admin"]) == 2
    assert "no password for --user admin" in capsys.readouterr().err
    assert edgenvr_main(["discover", "--device", "192.0.2.1"]) == 2
    assert "need --user" in capsys.readouterr().err
