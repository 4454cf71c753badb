"""Running an example as its docstring says, in a subprocess, on a tiny budget (``--fast``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A hang guard only (no test asserts how long anything takes): far above what a --fast run needs.
HANG_GUARD_S = 600


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python examples/<name>/main.py ARGS`` from ``cwd``; fails the test with its output unless it exits 0."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "main.py"), *args],
        capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=cwd,
    )  # fmt: skip
    assert out.returncode == 0, f"examples/{name} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out
