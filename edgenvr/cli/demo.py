"""`edgenvr demo`: the embedded default. No config, no camera: starts the built-in test camera (GStreamer
RTSP server) showing a labelled warehouse scene where a person walks past twice a minute, writes a config
for it, records it with motion detection by the real supervisor until Ctrl-C, and serves the web UI over
HTTPS with a one-time admin login printed on the terminal (a new random password at every start; no
default password exists anywhere)."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from edgenvr.config.checking import load_config
from edgenvr.config.records import (
    CameraConfig,
    Config,
    MotionConfig,
    Quota,
    RecordingConfig,
    StorageConfig,
    WebConfig,
)
from edgenvr.config.writing import config_to_toml
from edgenvr.simulator import (
    SimulatedCamera,
    counter_ignore_polygon,
    make_scene_clip,
    simulator_unavailable_reason,
)

log = logging.getLogger(__name__)

CLIP_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgenvr" / "demo-clips"


DEMO_ADMIN = "admin"


def run_demo(data_dir: Path | None, seconds: float | None, port: int = 8443) -> int:
    from edgenvr.runtime.supervisor import SupervisorError, run_supervisor

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
        config_path = data_dir / "edgenvr.toml"
        config_path.write_text(config_to_toml(config))
        config = load_config(config_path)  # exactly what a user running `edgenvr run` with it would get
        password, fingerprint = _demo_login(config)
        print(f"""
  web UI      : https://localhost:{port}/   (or https://{socket.gethostname()}:{port}/ from the LAN)
                the browser warns about the box's own certificate; its fingerprint is
                {fingerprint}
  sign in     : {DEMO_ADMIN} / {password}   (made for this run only; more users: edgenvr user add --config {config_path} ...)
  test camera : {camera.url('main')}
  data        : {data_dir}
  config      : {config_path}
  segments    : {data_dir / 'segments' / 'demo-gate'}
  list them   : edgenvr segments --config {config_path}
  gaps/status : edgenvr gaps --config {config_path}   |   edgenvr status --config {config_path}
  events      : edgenvr events --config {config_path}   (someone walks past twice a minute)
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


def _demo_login(config: Config) -> tuple[str, str]:
    """A fresh random password for the demo's admin (made or reset), and the web certificate's fingerprint."""
    from edgenvr.storage.layout import StorageLayout
    from edgenvr.web.accounts import Accounts, Role
    from edgenvr.web.tls_certificate import ensure_certificate, fingerprint

    layout = StorageLayout(config.storage.data_dir)
    password = secrets.token_urlsafe(12)
    with Accounts(layout) as accounts:
        if accounts.user(DEMO_ADMIN) is None:
            accounts.add_user(DEMO_ADMIN, Role.ADMIN, password)
        else:
            accounts.set_password(DEMO_ADMIN, password)
    return password, fingerprint(ensure_certificate(layout, config.box.box_id))
