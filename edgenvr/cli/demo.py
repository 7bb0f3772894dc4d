"""`edgenvr demo`: the embedded default. No config, no camera: starts the built-in test camera (GStreamer
RTSP server) showing a labelled warehouse scene where a person walks past twice a minute, writes a config
for it, records it with motion detection by the real supervisor until Ctrl-C, and serves the web UI over
HTTPS with a one-time admin login printed on the terminal (a new random password at every start; no
default password exists anywhere).

`--with-hub` also runs a city hub on this machine (`edgenvr hub`, a process of its own, its data under the
demo's), enrols the box with it exactly as a site would be ([sync] with the one-time token and the hub's
certificate pinned), and prints the hub UI's address and a one-time admin login: each motion event reaches
the hub as a signed clip, the fleet view shows the box, and remote pulls can be tried from the hub's UI."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgenvr.config.checking import load_config
from edgenvr.config.records import (
    CameraConfig,
    Config,
    MotionConfig,
    Quota,
    RecordingConfig,
    StorageConfig,
    SyncConfig,
    WebConfig,
)
from edgenvr.config.writing import config_to_toml
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.simulator import (
    SimulatedCamera,
    counter_ignore_polygon,
    make_scene_clip,
    simulator_unavailable_reason,
)
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

CLIP_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgenvr" / "demo-clips"


DEMO_ADMIN = "admin"
HUB_START_S = 30.0   # a first start makes the hub's keys and tables


class DemoHubError(Exception):
    """The demo's hub did not come up; the reason, and where its log is."""


def run_demo(data_dir: Path | None, seconds: float | None, port: int = 8443, hub_port: int | None = None) -> int:
    """`hub_port`: also run a city hub on it (`--with-hub`)."""
    reason = simulator_unavailable_reason()
    if reason:
        log.error("the built-in test camera cannot start: %s", reason)
        return 1
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="edgenvr-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    print("edgenvr demo: preparing the test camera's video (first run only takes a few seconds)...", flush=True)
    scene = make_scene_clip(CLIP_CACHE / "demo-walk-640x360.h264", "walk")
    with SimulatedCamera({"main": (scene.path, "h264", scene.fps)}, log_path=data_dir / "test-camera.log") as camera:
        config = Config(
            storage=StorageConfig(data_dir=data_dir, quota=Quota(bytes=2 * 1000**3), max_age_days=1,
                                  index_commit_seconds=5),
            # 5 s segments: a newcomer sees the first file within about 8 s
            recording=RecordingConfig(segment_seconds=5),
            cameras=(CameraConfig(id="demo-gate", name="Demo camera (built-in test scene)", url=camera.url("main"),
                                  detect_url=camera.url("main"),
                                  # the frame counter at the top is an on-screen clock: masked, as on site
                                  motion=MotionConfig(ignore=(counter_ignore_polygon(scene.width, scene.height),))),),
        )
        config = replace(config, web=WebConfig(listen=f"0.0.0.0:{port}", tls=True, enabled=True))
        try:
            with _demo_hub(data_dir, hub_port, config.box.box_id) as hub:
                if hub is not None:
                    config = replace(config, sync=hub.sync)
                return _record(config, data_dir, camera.url("main"), port, seconds, hub)
        except DemoHubError as exc:
            log.error("%s", exc)
            return 1


def _record(config: Config, data_dir: Path, camera_url: str, port: int, seconds: float | None,
            hub: DemoHub | None) -> int:
    """Write the config, print how to get in, and record until stopped."""
    from edgenvr.runtime.supervisor import SupervisorError, run_supervisor

    config_path = data_dir / "edgenvr.toml"
    config_path.write_text(config_to_toml(config))
    config = load_config(config_path)  # exactly what a user running `edgenvr run` with it would get
    password, fingerprint = _demo_login(config)
    hub_lines = "" if hub is None else f"""
  city hub    : https://localhost:{hub.port}/   (its own certificate; fingerprint {hub.sync.hub_fingerprint})
  hub sign in : {DEMO_ADMIN} / {hub.password}   (fleet, clips as motion events reach it, video requests)
  hub config  : {hub.config_path}   (edgenvr hub clips --config {hub.config_path}; log: {hub.log_path})"""
    print(f"""
  web UI      : https://localhost:{port}/   (or https://{socket.gethostname()}:{port}/ from the LAN)
                the browser warns about the box's own certificate; its fingerprint is
                {fingerprint}
  sign in     : {DEMO_ADMIN} / {password}   (made for this run only; more users: edgenvr user add --config {config_path} ...)
  test camera : {camera_url}
  data        : {data_dir}
  config      : {config_path}
  segments    : {data_dir / 'segments' / 'demo-gate'}
  list them   : edgenvr segments --config {config_path}
  gaps/status : edgenvr gaps --config {config_path}   |   edgenvr status --config {config_path}
  events      : edgenvr events --config {config_path}   (someone walks past twice a minute){hub_lines}
Recording; the first segment appears within about 10 seconds. Ctrl-C stops.
""", flush=True)
    if seconds:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True   # a demo stopped sooner (Ctrl-C) must not wait for it
        timer.start()
    try:
        run_supervisor(config)
    except SupervisorError as exc:
        log.error("%s", exc)
        return 1
    print(f"edgenvr demo: stopped. Recordings stay in {data_dir}", flush=True)
    return 0


@dataclass(frozen=True)
class DemoHub:
    port: int
    config_path: Path
    log_path: Path
    password: str = field(repr=False)
    sync: SyncConfig = field(repr=False)   # the box's [sync]: this hub, the one-time token, the pinned certificate


@contextmanager
def _demo_hub(data_dir: Path, port: int | None, box_id: str) -> Iterator[DemoHub | None]:
    """A city hub on this machine for the demo's box (None without `port`); stopped (SIGTERM) at the end. Its
    failure to start ends the demo with the reason and its log (DemoHubError): the demo asked for it."""
    if port is None:
        yield None
        return
    from edgenvr.hub import hub_database
    from edgenvr.hub.box_enrolment import create_enrolment
    from edgenvr.hub.hub_accounts import hub_layout
    from edgenvr.hub.hub_config import load_hub_config
    from edgenvr.web.tls_certificate import (
        CertificateError,
        certificate_at,
        fingerprint,
    )

    home = data_dir / "hub"
    home.mkdir(exist_ok=True)
    config_path, log_path = home / "hub.toml", home / "hub.log"
    config_path.write_text(f'[hub]\nlisten = "0.0.0.0:{port}"\ntls = true\ndata_dir = "{home / "data"}"\n')
    config = load_hub_config(config_path)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "edgenvr", "hub", "--config", str(config_path)],
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + HUB_START_S
        while True:   # up once it accepts connections (its certificate and tables are made before it listens)
            if process.poll() is not None:
                raise DemoHubError(f"the demo's hub stopped at its start (exit {process.returncode}); see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise DemoHubError(f"the demo's hub did not listen on port {port} within {HUB_START_S:.0f} s; "
                                       f"see {log_path}") from None
                time.sleep(0.3)
        engine = hub_database.connect(hub_database.database_url(config.data_dir, config.database_url))
        try:
            token = create_enrolment(engine, box_id, "Demo site", SYSTEM_CLOCK)
        finally:
            engine.dispose()
        password = _one_time_admin(hub_layout(config))
        try:
            pin = fingerprint(certificate_at(config.tls_certificate_path))
        except CertificateError as exc:
            raise DemoHubError(f"the demo's hub has no certificate: {exc}") from None
        yield DemoHub(port, config_path, log_path, password,
                      SyncConfig(hub_url=f"https://127.0.0.1:{port}", enrolment_token=token, hub_fingerprint=pin,
                                 enabled=True))
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _demo_login(config: Config) -> tuple[str, str]:
    """A fresh random password for the demo's admin (made or reset), and the web certificate's fingerprint."""
    from edgenvr.web.tls_certificate import ensure_certificate, fingerprint

    layout = StorageLayout(config.storage.data_dir)
    return _one_time_admin(layout), fingerprint(ensure_certificate(layout, config.box.box_id))


def _one_time_admin(layout: StorageLayout) -> str:
    """A fresh random password for the demo's admin in the accounts of `layout` (the box's or the hub's)."""
    from edgenvr.web.accounts import Accounts, Role

    password = secrets.token_urlsafe(12)
    with Accounts(layout) as accounts:
        if accounts.user(DEMO_ADMIN) is None:
            accounts.add_user(DEMO_ADMIN, Role.ADMIN, password)
        else:
            accounts.set_password(DEMO_ADMIN, password)
    return password
