"""Real footage of a fixed outdoor camera, for tamper detection on a busy view: the pedestrian-plaza clip that
OpenCV's documentation ships (`vtest.avi`, 768x576, 10 fps, 79.5 s; Debian package `opencv-doc`), and the same
camera re-aimed, with its truth.

This module owns
  * ``fetch_street_footage``: the clip, taken out of the package with `apt-get download` (no root, nothing
    installed) into a cache directory, once;
  * ``street_views``: the analysis pictures (``detection.analysis_picture``'s size and luma) a detector would
    see from a camera watching that plaza through a 576-wide window of the frame, following a plan of where
    the camera points: the window at x = STREET (as installed), at x = FURTHER_ALONG (turned a quarter of its
    view), or at a private room (``labelled_scenes.private_room``: the calm view a city camera must never
    settle on). The clip loops as long as the plan needs (people jump at the loop point: motion, not tamper).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edgenvr.detection.analysis_picture import ANALYSIS_WIDTH
from edgenvr.simulator.labelled_scenes import private_room

__all__ = ["FURTHER_ALONG", "ROOM", "STREET", "FootageUnavailable", "fetch_street_footage", "street_views"]

PACKAGE = "opencv-doc"
MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"
CLIP_FPS = 10
VIEW_WIDTH = 576            # of the 768-wide frame: the window the "camera" sees
STREET, FURTHER_ALONG = 0, 192
ROOM = -1                   # the camera turned to look into a private room


class FootageUnavailable(RuntimeError):
    """The clip could not be fetched (no package repository reachable, `apt-get` missing)."""


def fetch_street_footage(cache: Path) -> Path:
    """`vtest.avi` in `cache`, fetched from the Debian package the first time."""
    target = cache / "vtest.avi"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        try:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=work, check=True, capture_output=True, timeout=600)
            (deb,) = Path(work).glob(f"{PACKAGE}_*.deb")
            with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as dpkg:
                with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
                    member = next((m for m in tar if m.name == MEMBER), None)
                    source = tar.extractfile(member) if member is not None else None
                    if source is None:
                        raise FootageUnavailable(f"{MEMBER} is not in {deb.name}")
                    with source, open(Path(work) / "vtest.avi", "wb") as out:
                        shutil.copyfileobj(source, out)
                dpkg.kill()   # the rest of the package is not needed
        except (OSError, subprocess.SubprocessError, tarfile.TarError, ValueError) as exc:
            raise FootageUnavailable(f"cannot fetch {MEMBER} from the {PACKAGE} package: {exc}") from exc
        shutil.move(Path(work) / "vtest.avi", target)
    return target


def street_views(path: Path, plan: list[tuple[float, int]], fps: float = 5.0,
                 width: int = ANALYSIS_WIDTH) -> list[tuple[int, np.ndarray]]:
    """(time_ms, grey picture) at `fps` for `plan`: (seconds, where the camera points: STREET,
    FURTHER_ALONG or ROOM) in turn, from time 0."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    height = frames[0].shape[0]
    size = (width, round(height * width / VIEW_WIDTH / 2) * 2)
    room = cv2.resize(private_room(VIEW_WIDTH, height), size, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(5)
    step = max(1, round(CLIP_FPS / fps))
    pictures: list[tuple[int, np.ndarray]] = []
    index = 0
    for seconds, view in plan:
        for _ in range(round(seconds * CLIP_FPS / step)):
            if view == ROOM:   # a still room, with the sensor's noise
                picture = np.clip(room + rng.normal(0, 2.0, room.shape), 0, 255).astype(np.uint8)
            else:
                window = frames[index % len(frames)][:, view:view + VIEW_WIDTH]
                picture = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
            pictures.append((round(index * 1000 / CLIP_FPS), picture))
            index += step
    return pictures
