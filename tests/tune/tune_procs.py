"""Running ``ember tune`` and Python workers as real subprocesses (one CPU thread each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def subprocess_env() -> dict[str, str]:
    """The environment for worker subprocesses: one thread each, ``tune_tiny`` importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def ember_command() -> str:
    exe = Path(sys.executable).parent / "ember"
    return str(exe) if exe.exists() else "ember"


def run_ember(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ember_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )
