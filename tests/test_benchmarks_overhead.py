"""benchmarks/overhead.py: the Ember-calls-per-step count (sys.setprofile) is a whole number and
the same from run to run. No wall-clock assertions."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "overhead.py"


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("ember_bench_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _count(overhead, run):
    return overhead.count_calls(run, overhead.tiny_mlp, (32,), 8, start=20, steps=10)


@pytest.mark.parametrize("variant", ["run_trainer_lean", "run_trainer_default"])
def test_calls_per_step_is_a_stable_positive_integer(overhead, variant):
    run = getattr(overhead, variant)
    first, second = _count(overhead, run), _count(overhead, run)
    assert first.steps == 10
    assert isinstance(first.total, int) and first.total % first.steps == 0, first.per_function()
    assert first.per_step > 0
    assert first.per_step == second.per_step
    assert first.per_function() == second.per_function()
    assert sys.getprofile() is None  # the profiler is off again


def test_only_ember_code_is_counted(overhead):
    # the hand-written loop never enters ember: the benchmark's own code is not counted
    assert _count(overhead, overhead.run_raw).total == 0
    lean = _count(overhead, overhead.run_trainer_lean)
    assert all(where.startswith("ember") for where, _ in lean.per_function())
    assert not any("training_step" in where for where, _ in lean.per_function())
    # self.log is Ember code called from the user's training_step: it counts
    default = _count(overhead, overhead.run_trainer_default)
    assert any("Module.log" in where for where, _ in default.per_function())
    assert default.per_step > lean.per_step


def test_a_run_too_short_for_the_window_is_an_error(overhead):
    def two_steps(factory, loader, probe=None):
        for _ in range(2):
            probe()

    with pytest.raises(RuntimeError, match="window"):
        _count(overhead, two_steps)
    assert sys.getprofile() is None


def test_calls_only_prints_the_counts(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--calls-only", "--job", "MLP"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    counts = dict(re.findall(r"^  (\([a-e]\) .*?)\s+(\d+(?:\.\d)?)$", out.stdout, re.MULTILINE))
    assert counts["(a) hand-written loop"] == "0", out.stdout
    lean = counts["(c) ember Trainer, lean"]
    assert lean.isdigit() and int(lean) > 0, out.stdout
    assert "steps/s" not in out.stdout  # nothing was timed
