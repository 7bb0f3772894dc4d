"""Tamper detection benchmark: precision and recall over labelled scenes and real footage, time to a camera's
first reference view, and what a busy camera costs.

Every case is fed to the real TamperDetector as the motion worker does (analysis pictures of 320 px, each
analysed; without a reference the proposed background view is taken: first commissioning), once with a
sub-stream (5 pictures a second) and once on key frames only (one every 2 s):

  * the synthetic scenes of ``edgenvr.simulator.labelled_scenes``: calm ones with nothing to raise (noise,
    light changes, the IR switch, people walking, someone in front of the lens), the covered, defocused and
    turned camera, and the busy ones (busy_street, busy_night_rain, busy_to_calm, busy_to_busy);
  * real footage of a plaza camera (``edgenvr.simulator.real_footage``): left alone for 5 minutes, and turned
    after a minute to another part of the plaza or into a private room.

A raised condition of the truth's kind within 45 s of the truth's start counts as right (recall); anything
else raised is wrong (precision). In the same run, the rule this replaces is measured as the baseline for
the time to a first reference: the first picture after 10 calm ones in a row (the motion detector saw
nothing move).

    python benchmarks/tamper.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgenvr.config.records import MotionConfig  # noqa: E402
from edgenvr.detection.motion_detector import MotionDetector  # noqa: E402
from edgenvr.detection.tamper_detector import TamperChange, TamperDetector  # noqa: E402
from edgenvr.simulator import (  # noqa: E402
    CLIP_CACHE,
    FURTHER_ALONG,
    ROOM,
    SCENES,
    STREET,
    analysis_frames,
    counter_ignore_polygon,
    fetch_street_footage,
    make_scene_clip,
    street_views,
)

WITHIN_MS = 45_000
CALM_PICTURES = 10   # the rule this replaces: a reference after this many calm analysed pictures in a row
SYNTHETIC = MotionConfig(ignore=(counter_ignore_polygon(640, 360),))
REAL = MotionConfig()


@dataclass
class Case:
    name: str
    pictures: list[tuple[int, np.ndarray]]
    truth: list[tuple[str, int]]        # (kind, start ms)
    config: MotionConfig
    reference_ms: int | None = None
    calm_rule_ms: int | None = None
    changes: list[TamperChange] = field(default_factory=list)
    cpu_ms: float = 0.0


def run(case: Case) -> None:
    height, width = case.pictures[0][1].shape
    tamper = TamperDetector(case.config, width, height)
    motion = MotionDetector(case.config, width, height)
    calm = 0
    started = time.process_time()
    for time_ms, grey in case.pictures:
        case.changes += tamper.analyse(time_ms, grey)
        proposed = tamper.proposed_reference()
        if proposed is not None:
            tamper.set_reference(proposed)
            case.reference_ms = time_ms
    case.cpu_ms = (time.process_time() - started) * 1000 / len(case.pictures)
    for time_ms, grey in case.pictures:   # the baseline rule, on the same pictures
        result = motion.analyse(grey)
        calm = calm + 1 if not (result.motion or result.global_change) else 0
        if calm >= CALM_PICTURES:
            case.calm_rule_ms = time_ms
            break


def score(case: Case) -> tuple[int, int, int, list[str]]:
    """(right, wrong, missed, notes)."""
    opened = [c for c in case.changes if c.opened]
    right = wrong = 0
    notes = []
    unmatched = list(case.truth)
    for change in opened:
        match = next(((k, s) for k, s in unmatched if k == change.kind and 0 <= change.time_ms - s <= WITHIN_MS), None)
        if match is not None:
            unmatched.remove(match)
            right += 1
            notes.append(f"{change.kind} after {(change.time_ms - match[1]) / 1000:.0f} s")
        else:
            wrong += 1
            notes.append(f"WRONG {change.kind} at {change.time_ms / 1000:.0f} s")
    notes += [f"MISSED {kind} at {start / 1000:.0f} s" for kind, start in unmatched]
    return right, wrong, len(unmatched), notes


def cases(fps: float, mode: str) -> list[Case]:
    found = []
    for name in SCENES:
        if name in ("zones",):
            continue
        truth = make_scene_clip(CLIP_CACHE / "scenes" / f"{name}.h264", name)
        pictures = list(analysis_frames(truth.path, truth.fps, fps=fps))
        if name in ("busy_street", "noise", "brightness_jump", "person_in_front"):   # long enough to commission
            length = pictures[-1][0] + pictures[1][0] - pictures[0][0]
            pictures = [(n * length + t, g) for n in range(max(1, round(300_000 / length))) for t, g in pictures]
        found.append(Case(f"{name} ({mode})", pictures,
                          [(t.kind, round(t.start_s * 1000)) for t in truth.tamper], SYNTHETIC))
    footage = fetch_street_footage(CLIP_CACHE / "real")
    for label, plan, truth in (("plaza left alone", [(300, STREET)], []),
                               ("plaza turned further along", [(60, STREET), (120, FURTHER_ALONG)], [("moved", 60_000)]),
                               ("plaza turned into a room", [(60, STREET), (120, ROOM)], [("moved", 60_000)])):
        found.append(Case(f"{label} ({mode})", street_views(footage, plan, fps), truth, REAL))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="all figures as one JSON object on the last line")
    args = parser.parse_args()
    totals = [0, 0, 0]
    figures = []
    for fps, mode in ((5.0, "sub-stream"), (0.5, "key frames")):
        for case in cases(fps, mode):
            run(case)
            right, wrong, missed, notes = score(case)
            totals = [totals[0] + right, totals[1] + wrong, totals[2] + missed]
            calm_rule = "never" if case.calm_rule_ms is None else f"{case.calm_rule_ms / 1000:.0f} s"
            reference = "never" if case.reference_ms is None else f"{case.reference_ms / 1000:.0f} s"
            print(f"{case.name:<38} first reference {reference:>6} (calm-picture rule: {calm_rule:>6})"
                  f"  {case.cpu_ms:.2f} ms/picture  {'; '.join(notes) or 'nothing raised'}")
            figures.append({"case": case.name, "reference_ms": case.reference_ms, "calm_rule_ms": case.calm_rule_ms,
                            "right": right, "wrong": wrong, "missed": missed, "cpu_ms_per_picture": case.cpu_ms})
    right, wrong, missed = totals
    precision, recall = right / max(1, right + wrong), right / max(1, right + missed)
    print(f"precision {precision:.2f}, recall {recall:.2f} ({right} right, {wrong} wrong, {missed} missed; a tamper"
          f" counts if raised within {WITHIN_MS // 1000} s)")
    if args.json:
        print(json.dumps({"precision": precision, "recall": recall, "cases": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
