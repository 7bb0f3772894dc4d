"""A city hub for the tests: `edgenvr hub --config` in a process of its own on a loopback port (plain HTTP),
with its CLI at hand (`hub.cli("enrol", "--box", ...)`), stopped cleanly (exit 0) at the end."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import edgenvr
from tests.web_site import free_port


@dataclass
class Hub:
    config: Path
    data_dir: Path
    url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`edgenvr hub COMMAND --config HUB.toml ARGS...`"""
        return edgenvr("hub", *args[:1], "--config", str(self.config), *args[1:])

    def token(self, box: str, site: str = "Pos RT 08, Kuningan") -> str:
        result = self.cli("enrol", "--box", box, "--site", site)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@contextlib.contextmanager
def running_hub(root: Path) -> Iterator[Hub]:
    port = free_port()
    config = root / "hub.toml"
    config.write_text(f'[hub]\nlisten = "127.0.0.1:{port}"\ntls = false\ndata_dir = "{root / "hub-data"}"\n'
                      "max_clip_mb = 64\n")
    log_path = root / "hub.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "edgenvr", "hub", "--config", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/api/health", timeout=2).json()["status"] == "ok":
                    break
            except (requests.ConnectionError, ValueError):
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield Hub(config, root / "hub-data", url, port, log_path, process)
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, log_path.read_text()
