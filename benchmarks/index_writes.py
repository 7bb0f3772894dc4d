"""Index write benchmark: what edgenvr's index costs an SD card, measured at the block device.

This script owns the measurement of index writes per camera-hour. It runs the real IndexWriter and
RetentionPolicy driven by the supervisor's own periodic work (`IndexHousekeeping.step()`: a sweep every
`sweep_seconds`, commits when `IndexWriter.commit_due` says so) under a simulated recording load
(`edgenvr.simulator.SimulatedRecordingLoad`: segments announced every 10 s per camera) on a simulated
clock, with the index on its own freshly made ext4 filesystem on a loop device. The figure is the sectors
that filesystem's block device wrote (WAL, checkpoints, -shm, the filesystem journal: everything the card
would see), per camera-hour, after a warm-up that fills the ring so that it deletes as much as is
recorded, which is what an NVR does for the rest of its life. Segment files are sparse stand-ins on another filesystem, so
only the index is counted.

Commits in a real run are minutes apart, so the kernel writes each one back on its own; here the
filesystem is synced after every simulated second that committed, to count them the same way (a slight
overestimate for the event commits a second apart, which a real page cache would merge).

Two rings are measured: one bounded by the quota (deleting for space), one by max_age_days (deleting
by age). Each for index_commit_seconds as configured (default: shipped default) and 30 s (the old
default), so the effect of batching is visible in the same run.

    python benchmarks/index_writes.py [--cameras 1,4,32] [--hours 1] [--commit-seconds 300]

Needs root (mount), e2fsprogs (mkfs.ext4) and loop devices; says so and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.simulator import SimulatedRecordingLoad

SEGMENT_SECONDS = 10
SEGMENT_BYTES = 5_000_000       # a 10 s segment of a 1080p 4 Mbit/s camera
SWEEP_SECONDS = 10
TARGET_KB_PER_CAMERA_HOUR = 300.0


@dataclass
class Result:
    cameras: int
    ring: str
    commit_seconds: float
    kb_per_camera_hour: float
    commits_per_hour: float
    deleted_per_hour: float


def block_device_sectors_written(device: str) -> int:
    return int(Path(f"/sys/block/{device}/stat").read_text().split()[6])


def config_for(root: Path, cameras: int, ring: str, commit_seconds: float) -> Config:
    ring_hours = 1.0  # the ring holds an hour of every camera
    if ring == "quota":
        storage = f'quota = "{int(cameras * ring_hours * 3600 / SEGMENT_SECONDS * SEGMENT_BYTES)}"\nmin_free = "0"'
    else:
        storage = f'quota = "100%"\nmin_free = "0"\nmax_age_days = {ring_hours / 24}'
    text = (f'[storage]\ndata_dir = "{root / "data"}"\n{storage}\nsweep_seconds = {SWEEP_SECONDS}\n'
            f'index_commit_seconds = {commit_seconds}\n[recording]\nsegment_seconds = {SEGMENT_SECONDS}\n'
            '[motion]\nenabled = false\ntamper = false\n')
    text += "".join(f'[[cameras]]\nid = "cam-{i}"\nurl = "rtsp://192.0.2.{i % 250 + 1}/stream"\n' for i in range(cameras))
    path = root / "edgenvr.toml"
    path.write_text(text)
    return load_config(path)


def run(mount: Path, device: str, scratch: Path, cameras: int, ring: str, commit_seconds: float,
        hours: float) -> Result:
    root = mount / f"run-{cameras}-{ring}-{commit_seconds:g}"
    segments = scratch / root.name
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(segments, ignore_errors=True)
    (root / "data" / "segments").mkdir(parents=True)
    segments.mkdir(parents=True)
    # stand-in files off the measured filesystem: a bind mount, since edgenvr deletes nothing through a
    # symlink inside its data dir (storage.deletion)
    subprocess.run(["mount", "--bind", str(segments), str(root / "data" / "segments")], check=True)
    config = config_for(root, cameras, ring, commit_seconds)

    warm_up_s = int(1.5 * 3600)   # the ring is full after an hour
    # the video disk: its files are stand-ins, so its usage is what the index says
    load = SimulatedRecordingLoad(config, SimulatedClock(epoch_ms=1_700_000_000_000, monotonic=0.0),
                                  segment_bytes=SEGMENT_BYTES, disk_bytes=10**13)
    writer, counts = load.writer, load.housekeeping.counts
    synced = 0

    def tick_by_tick(seconds: int) -> None:
        """The load a second at a time; the filesystem synced after every step that committed: commits
        minutes apart are written back one by one."""
        nonlocal synced
        for _ in load.ticks(seconds):
            if writer.commits != synced:
                synced = writer.commits
                os.sync()

    tick_by_tick(warm_up_s)
    writer.commit()
    os.sync()
    start_sectors = block_device_sectors_written(device)
    deleted_before, commits_before = counts.deleted, writer.commits
    tick_by_tick(int(hours * 3600) + 1)
    writer.commit()
    os.sync()
    written = (block_device_sectors_written(device) - start_sectors) * 512
    commits = writer.commits
    load.conn.close()
    subprocess.run(["umount", str(root / "data" / "segments")], check=True)
    shutil.rmtree(segments, ignore_errors=True)
    return Result(cameras, ring, commit_seconds, written / 1000 / cameras / hours,
                  (commits - commits_before) / hours, (counts.deleted - deleted_before) / hours)


def prepare_filesystem(workdir: Path) -> tuple[Path, str]:
    """A fresh 512 MB ext4 (mkfs defaults, like a card formatted by the installer) on a loop device."""
    image = workdir / "index.img"
    with open(image, "wb") as f:
        f.truncate(512 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount = workdir / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mount)], check=True, capture_output=True,
                            text=True).stdout.strip()
    return mount, Path(source).name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="1,4,32", help="comma-separated camera counts (default 1,4,32)")
    parser.add_argument("--hours", type=float, default=1.0, help="measured hours after the warm-up (default 1)")
    parser.add_argument("--commit-seconds", type=float, default=None,
                        help="index_commit_seconds to measure (default: the shipped default); 30 is always run too")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        print("index_writes.py needs root and mkfs.ext4 (e2fsprogs) to make a loop-mounted ext4", file=sys.stderr)
        return 2
    from edgenvr.config.records import StorageConfig
    shipped = StorageConfig(data_dir=Path("/")).index_commit_seconds
    commit_seconds = args.commit_seconds if args.commit_seconds is not None else shipped
    workdir = Path(tempfile.mkdtemp(prefix="edgenvr-index-writes-"))
    mount: Path | None = None
    try:
        mount, device = prepare_filesystem(workdir)
        print(f"index on a fresh ext4 on /dev/{device}; 10 s segments of {SEGMENT_BYTES / 1e6:g} MB; a sweep every "
              f"{SWEEP_SECONDS} s; ring full before measuring {args.hours:g} h; shipped index_commit_seconds = {shipped:g}")
        print(f"{'cameras':>7} {'ring':>6} {'commit s':>8} {'KB/camera-hour':>15} {'commits/h':>10} {'deleted/h':>10}  target")
        for cameras in (int(n) for n in args.cameras.split(",")):
            for ring in ("quota", "age"):
                for seconds in dict.fromkeys((commit_seconds, 30.0)):
                    r = run(mount, device, workdir, cameras, ring, seconds, args.hours)
                    verdict = "PASS" if r.kb_per_camera_hour <= TARGET_KB_PER_CAMERA_HOUR else "FAIL"
                    print(f"{r.cameras:>7} {r.ring:>6} {r.commit_seconds:>8g} {r.kb_per_camera_hour:>15.0f}"
                          f" {r.commits_per_hour:>10.0f} {r.deleted_per_hour:>10.0f}  [{verdict}] <= "
                          f"{TARGET_KB_PER_CAMERA_HOUR:g}", flush=True)
    finally:
        if mount is not None:
            subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
