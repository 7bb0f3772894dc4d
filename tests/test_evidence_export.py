"""Evidence export as the police and a site admin use it: `edgenvr export` of a real recording gives a folder
that `edgenvr verify`, `sha256sum -c` and the openssl line of its VERIFY.txt all accept on any machine; any
change to it (a byte of video, the manifest, the key, a file removed or added) is named by verify; exports of
the same range give the same video bytes; the export is in the audit trail, and an export that cannot be
audited is not made; a range without video leaves nothing behind.

One real recording (the RTSP test camera, 2 s segments) shared by the tests of this module."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgenvr.core.time_format import format_ms
from edgenvr.simulator import SimulatedCamera
from tests.conftest import config_text, edgenvr, start_supervisor

RECORD_SECONDS = 14


@dataclass(frozen=True)
class Recorded:
    config: Path
    data_dir: Path
    first_ms: int
    last_ms: int


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Recorded:
    root = tmp_path_factory.mktemp("export")
    data_dir = root / "data"
    config = root / "edgenvr.toml"
    with SimulatedCamera({"gate": (h264_clip, "h264", 25)}, log_path=root / "camera.log") as camera:
        config.write_text('[box]\nid = "rt08-kuningan"\nname = "Pos RT 08 Kuningan"\n'
                          + config_text(data_dir, {"gate": camera.url("gate")}, segment_seconds=2))
        supervisor = start_supervisor(config, root / "edgenvr.log")
        try:
            supervisor.wait_for_log("recording 1 cameras")
            time.sleep(RECORD_SECONDS)
        finally:
            assert supervisor.stop() == 0
    rows = [json.loads(line) for line in edgenvr("segments", "--config", str(config), "--json").stdout.splitlines()]
    assert len(rows) >= 5, rows
    return Recorded(config, data_dir, rows[0]["start_ms"], rows[-1]["end_ms"])


def export(recorded: Recorded, out: Path, from_ms: int, to_ms: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return edgenvr("export", "--config", str(recorded.config), "--camera", "gate", "--from", f"{from_ms}ms",
                   "--to", f"{to_ms}ms", "--out", str(out), "--reason", "laporan polisi 12/XI", "--by", "ani",
                   *extra)


def middle(recorded: Recorded) -> tuple[int, int]:
    """A range across segment boundaries, away from the recording's ends."""
    return recorded.first_ms + 2500, recorded.last_ms - 2500


@pytest.fixture(scope="module")
def exported(recorded: Recorded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "kasus-12"
    result = export(recorded, out, *middle(recorded))
    assert result.returncode == 0, result.stderr
    return out


def test_an_export_verifies_with_edgenvr_and_by_hand_with_sha256sum_and_openssl(exported: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in exported.iterdir())
    assert {"manifest.json", "manifest.sig", "device.pub", "SHA256SUMS", "VERIFY.txt"} <= set(names)
    assert any(name.endswith(".mp4") for name in names)
    result = edgenvr("verify", str(exported))
    assert result.returncode == 0 and result.stdout.startswith("OK: camera gate"), result.stdout + result.stderr

    copy = tmp_path / "copied-to-a-usb-stick"   # a machine-independent copy of the folder
    shutil.copytree(exported, copy)
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert sums.returncode == 0 and sums.stdout.count(": OK") == len(names) - 1, sums.stdout + sums.stderr
    verify_text = (copy / "VERIFY.txt").read_text()
    openssl_line = next(line.split(maxsplit=1)[1] for line in verify_text.splitlines()
                        if line.strip().startswith("2. openssl pkeyutl -verify"))
    signature = subprocess.run(openssl_line, shell=True, cwd=copy, capture_output=True, text=True)
    assert signature.returncode == 0 and "Signature Verified Successfully" in signature.stdout, signature
    fingerprint = subprocess.run("openssl pkey -pubin -in device.pub -outform DER | tail -c 32 | sha256sum",
                                 shell=True, cwd=copy, capture_output=True, text=True).stdout.split()[0]
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["box"]["key_fingerprint"].replace(" ", "") == fingerprint
    assert manifest["box"]["key_fingerprint"] in verify_text


def test_the_manifest_says_what_was_exported_by_whom_and_why(recorded: Recorded, exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    from_ms, to_ms = middle(recorded)
    assert manifest["box"] == {"id": "rt08-kuningan", "name": "Pos RT 08 Kuningan",
                               "key_fingerprint": manifest["box"]["key_fingerprint"]}
    assert manifest["camera"]["id"] == "gate" and manifest["reason"] == "laporan polisi 12/XI"
    assert manifest["exported_by"] == "ani"
    assert manifest["requested"] == {"start_ms": from_ms, "end_ms": to_ms, "start": format_ms(from_ms),
                                     "end": format_ms(to_ms)}
    # from the key frame at or before the start (1 s GOP), to the end asked for
    assert from_ms - 1100 <= manifest["actual"]["start_ms"] <= from_ms
    assert to_ms - 100 <= manifest["actual"]["end_ms"] <= to_ms + 100
    sources = [s for f in manifest["files"] for s in f["sources"]]
    assert len(sources) >= 2 and not any(s["altered"] for s in sources)
    identity = edgenvr("identity", "--config", str(recorded.config))
    assert manifest["box"]["key_fingerprint"] in identity.stdout
    audit = [json.loads(line) for line in
             edgenvr("audit", "--config", str(recorded.config), "--json").stdout.splitlines()]
    (record,) = [r for r in audit if r["action"] == "export" and r["seq"] == manifest["audit_record"]["seq"]]
    assert record["hash"] == manifest["audit_record"]["hash"] and record["actor"] == "ani"
    assert record["reason"] == "laporan polisi 12/XI" and (record["from_ms"], record["to_ms"]) == (from_ms, to_ms)
    assert edgenvr("audit", "verify", "--config", str(recorded.config)).returncode == 0


def test_the_same_range_exported_twice_gives_the_same_video_bytes(recorded: Recorded, exported: Path,
                                                                  tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert export(recorded, again, *middle(recorded)).returncode == 0
    videos = sorted(p.name for p in exported.glob("*.mp4"))
    assert videos == sorted(p.name for p in again.glob("*.mp4"))
    for name in videos:
        assert (exported / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.parametrize("change, named", [
    ("flip a byte of video", "file altered: gate_"),
    ("edit the manifest", "file altered: manifest.json"),
    ("remove a file", "file missing: VERIFY.txt"),
    ("add a file", "file added: notes.txt"),
    ("re-sign with another key", "signature invalid"),
])
def test_any_change_to_an_export_is_named_by_verify(exported: Path, tmp_path: Path, change: str, named: str) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(exported, folder)
    pubkey = None
    if change == "flip a byte of video":
        video = next(folder.glob("*.mp4"))
        data = bytearray(video.read_bytes())
        data[len(data) // 2] ^= 0x01
        video.write_bytes(bytes(data))
    elif change == "edit the manifest":
        path = folder / "manifest.json"
        path.write_text(path.read_text().replace("laporan polisi 12/XI", "laporan polisi 13/XI"))
    elif change == "remove a file":
        (folder / "VERIFY.txt").unlink()
    elif change == "add a file":
        (folder / "notes.txt").write_text("an extra file")
    else:   # a forger edits the manifest, signs it with their own key and redoes the sums; the box's key is known
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pubkey = tmp_path / "box.pub"
        shutil.copy(exported / "device.pub", pubkey)
        from edgenvr.evidence.identity import fingerprint

        forger = Ed25519PrivateKey.generate()
        box_fingerprint = json.loads((folder / "manifest.json").read_text())["box"]["key_fingerprint"]
        manifest = (folder / "manifest.json").read_bytes().replace(b"laporan polisi 12/XI", b"laporan polisi 13/XI")
        manifest = manifest.replace(box_fingerprint.encode(), fingerprint(forger.public_key()).encode())
        (folder / "manifest.json").write_bytes(manifest)
        (folder / "manifest.sig").write_bytes(forger.sign(manifest))
        (folder / "device.pub").write_bytes(forger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        sums = subprocess.run("sha256sum $(ls | grep -v SHA256SUMS)", shell=True, cwd=folder, capture_output=True,
                              text=True, check=True).stdout
        (folder / "SHA256SUMS").write_text(sums)
        assert edgenvr("verify", str(folder)).returncode == 0, "without the box's key, a forger's folder is consistent"
    result = edgenvr("verify", str(folder), *(["--pubkey", str(pubkey)] if pubkey else []))
    assert result.returncode == 1 and named in result.stderr, result.stdout + result.stderr


def test_a_range_without_video_is_refused_and_leaves_nothing(recorded: Recorded, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    result = export(recorded, out, recorded.last_ms + 3_600_000, recorded.last_ms + 7_200_000)
    assert result.returncode == 1 and "nothing recorded" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_written_into(recorded: Recorded, exported: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in exported.iterdir()}
    result = export(recorded, exported, *middle(recorded))
    assert result.returncode == 1 and "exists" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in exported.iterdir()} == before


def test_no_export_without_its_audit_record(recorded: Recorded, tmp_path: Path) -> None:
    audit = recorded.data_dir / "audit.sqlite3"
    kept = tmp_path / "audit.kept"
    if audit.exists():
        audit.rename(kept)
    audit.write_bytes(b"not a database: the trail cannot be written")   # (as root, a read-only mode would not do)
    try:
        result = export(recorded, tmp_path / "unaudited", *middle(recorded))
    finally:
        audit.unlink()
        if kept.exists():
            kept.rename(audit)
    assert result.returncode == 1 and "audit" in result.stderr, result.stderr
    assert not (tmp_path / "unaudited").exists() and not list(tmp_path.glob("*unaudited*"))


def test_a_hold_with_the_export_keeps_the_source_and_is_audited(recorded: Recorded, tmp_path: Path) -> None:
    from_ms, to_ms = middle(recorded)
    assert export(recorded, tmp_path / "held", from_ms, to_ms, "--hold").returncode == 0
    holds = [json.loads(line) for line in edgenvr("hold", "list", "--config", str(recorded.config), "--json")
             .stdout.splitlines()]
    assert any(h["from_ms"] == from_ms and h["to_ms"] == to_ms for h in holds), holds
    actions = [json.loads(line)["action"] for line in
               edgenvr("audit", "--config", str(recorded.config), "--json").stdout.splitlines()]
    assert "hold_add" in actions


def test_the_config_in_force_at_start_up_is_in_the_audit_trail(recorded: Recorded) -> None:
    import hashlib

    records = [json.loads(line) for line in
               edgenvr("audit", "--config", str(recorded.config), "--json").stdout.splitlines()]
    changes = [r for r in records if r["action"] == "config_change"]
    assert len(changes) == 1 and changes[0]["actor"] == "edgenvr run", records
    assert json.loads(changes[0]["detail"])["sha256"] == hashlib.sha256(recorded.config.read_bytes()).hexdigest()


def test_an_export_killed_half_way_leaves_no_folder_that_could_pass_for_one(recorded: Recorded, tmp_path: Path) -> None:
    """kill -9 while the video is being written (each source made slow to read): the target never appears,
    and what is left is a hidden partial folder that verify refuses."""
    import os
    import signal
    import sys

    target = tmp_path / "kasus-13"
    from_ms, to_ms = middle(recorded)
    slow_export = """
import sys, time
import edgenvr.evidence.bundle as bundle
built = bundle.build_clip
def slowly(*args, progress=None, **kwargs):
    return built(*args, progress=lambda done, total: time.sleep(1), **kwargs)
bundle.build_clip = slowly
from edgenvr.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
    process = subprocess.Popen([sys.executable, "-c", slow_export, "export", "--config", str(recorded.config),
                                "--camera", "gate", "--from", f"{from_ms}ms", "--to", f"{to_ms}ms", "--out", str(target),
                                "--reason", "killed", "--by", "ani"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".kasus-13.partial-*/*.mp4")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".kasus-13.partial-*/*.mp4")), "the export never started writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    assert not target.exists()
    (partial,) = tmp_path.glob(".kasus-13.partial-*")
    result = edgenvr("verify", str(partial))
    assert result.returncode == 1 and "file missing: SHA256SUMS" in result.stderr, result.stderr


def test_an_export_on_a_terminal_shows_its_progress(recorded: Recorded, tmp_path: Path) -> None:
    import os
    import pty
    import sys

    from_ms, to_ms = middle(recorded)
    command = [sys.executable, "-m", "edgenvr", "export", "--config", str(recorded.config), "--camera", "gate",
               "--from", f"{from_ms}ms", "--to", f"{to_ms}ms", "--out", str(tmp_path / "shown"), "--reason", "tty"]
    pid, terminal = pty.fork()
    if pid == 0:   # the child: stdout and stderr are the terminal
        os.execv(command[0], command)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:   # the terminal closed: the export has exited
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    assert b"[########################################] 100%" in shown, shown
