"""The package's layering (pyproject.toml's import-linter contract) holds, and would catch a lower layer
importing a higher one: the contract is run on a copy of the package with one such import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(repo / "pyproject.toml")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "edgenvr", copy / "edgenvr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy)
    return copy


def test_the_package_keeps_its_layers() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("lower, higher", [
    ("recording/segment_files.py", "edgenvr.retention.policy"),   # recording never imports retention
    ("core/records.py", "edgenvr.index.schema"),                  # core imports nothing of edgenvr
    ("index/writer.py", "edgenvr.cli.main"),                      # nothing imports the CLI
    ("detection/motion_worker.py", "edgenvr.recording.recorder"),  # detection reads cameras on its own
    ("retention/policy.py", "edgenvr.detection.motion_detector"),  # siblings stay independent
    ("evidence/bundle.py", "edgenvr.runtime.supervisor"),          # evidence is below the runtime
    ("retention/holds.py", "edgenvr.evidence.audit"),               # and above retention
])
def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path: Path, lower: str, higher: str) -> None:
    copy = _copy(tmp_path)
    module = copy / "edgenvr" / lower
    module.write_text(module.read_text() + f"\nimport {higher}  # added by the test\n")
    result = _lint(copy)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout or "broken" in result.stdout
    assert higher in result.stdout
