"""The box's audit trail goes up to the city hub as it grows, over the box's channel, each record checked by the
hub against the box's enrolled key; a box whose own trail is later cut back (here: its file replaced by an
older copy of itself, which the box alone cannot notice) is flagged in the fleet view (issue 12, point 4).
The box and the hub are real processes."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import config_text, edgenvr, start_supervisor
from tests.hub_site import Hub, running_hub
from tests.web_site import free_port

pytestmark = pytest.mark.slow

BOX = "gudang-kpu-02"


def _fleet_entry(hub: Hub) -> dict:
    result = hub.cli("boxes", "--json")
    assert result.returncode == 0, result.stderr
    return next((b for b in map(json.loads, result.stdout.splitlines()) if b["box"] == BOX), {})


def _box_head(data_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0)
    finally:
        conn.close()


def _wait(what: str, check, log, timeout: float = 40) -> None:   # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s:\n{log()[-4000:]}"
        time.sleep(0.3)


def _hold(config: Path, reason: str) -> None:
    result = edgenvr("hold", "add", "--config", str(config), "--camera", "gate", "--from", "@1000000",
                     "--to", "@1000060", "--reason", reason, "--by", "operator-rt08")
    assert result.returncode == 0, result.stderr


def test_the_audit_trail_reaches_the_hub_and_a_box_whose_trail_went_back_is_flagged(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        data_dir, config = tmp_path / "data", tmp_path / "edgenvr.toml"
        config.write_text(f'[box]\nid = "{BOX}"\nname = "Gudang KPU 02"\n'
                          + config_text(data_dir, {"gate": f"rtsp://127.0.0.1:{free_port()}/gate"})
                          + f'[sync]\nhub_url = "{hub.url}"\nenrolment_token = "{hub.token(BOX)}"\n')
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        logs = lambda: supervisor.log() + hub.log.read_text()   # noqa: E731
        try:
            # Records made while the box runs (its start-up, holds an operator adds) reach the hub's copy.
            _wait("the box's channel", lambda: _fleet_entry(hub).get("last_report_ms"), logs)
            _hold(config, "incident 1")
            _hold(config, "incident 2")
            _wait("the copy to catch up", lambda: _fleet_entry(hub)["audit_seq"] == _box_head(data_dir) >= 2, logs)
            assert _fleet_entry(hub)["audit_problem"] == ""
            older = tmp_path / "audit-older.sqlite3"
            with sqlite3.connect(data_dir / "audit.sqlite3") as source, sqlite3.connect(older) as copy:
                source.backup(copy)   # the trail as it is now
            _hold(config, "incident 3")
            _hold(config, "incident 4")
            head = _box_head(data_dir)
            _wait("the copy to catch up again", lambda: _fleet_entry(hub)["audit_seq"] == head, logs)
            assert supervisor.stop() == 0

            # Someone puts the older file back: the box's own check cannot tell; the hub can.
            for leftover in data_dir.glob("audit.sqlite3*"):
                leftover.unlink()
            shutil.copy(older, data_dir / "audit.sqlite3")
            assert _box_head(data_dir) < head
            supervisor = start_supervisor(config, tmp_path / "edgenvr-2.log")
            _wait("the hub to flag the trail", lambda: _fleet_entry(hub)["audit_problem"], logs)
            problem = _fleet_entry(hub)["audit_problem"]
            assert f"the hub holds up to {head}" in problem and "older copy" in problem, problem
            assert _fleet_entry(hub)["audit_seq"] == head    # the hub's copy is kept as it was received
            assert "AUDIT:" in hub.cli("boxes").stdout
        finally:
            if supervisor.process.poll() is None:
                supervisor.process.kill()
