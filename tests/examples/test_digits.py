"""Ember's main job, end to end: the README's first command minus the environment set-up."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_digits_example_reaches_95_percent_under_a_minute(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits" / "main.py"), "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stdout + out.stderr
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out.stdout).group(1))
    fit_seconds = float(re.search(r"steps in ([0-9.]+) s", out.stdout).group(1))
    assert accuracy >= 0.95
    assert fit_seconds < 60, f"training took {fit_seconds:.1f} s"
    assert elapsed < 120
    log_dir = tmp_path / re.search(r"logs: (\S+)", out.stdout).group(1)
    assert log_dir.is_dir() and any(log_dir.iterdir())  # the default logger wrote there
