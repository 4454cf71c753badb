"""benchmarks/gpu_check.py: the --dry-run (CPU, tiny sizes) prints a verdict per check and passes; the
synchronisation accounting names and places what it sees; a hanging check is killed. No wall-clock
assertions: time limits here only stop runaway processes."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ROW = re.compile(r"^(PASS|FAIL|SKIP|TIMEOUT)\s{2,}(\S+)\s+(.*)$")
SYNC = "called a synchronizing CUDA operation"  # torch's warning under set_sync_debug_mode("warn")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("ember_bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.mktemp("dry"),
    )  # fmt: skip
    return out


def verdict_rows(text: str) -> dict[str, tuple[str, str]]:
    """Verdict lines: result name -> (verdict, detail)."""
    return {m.group(2): (m.group(1), m.group(3)) for m in map(ROW.match, text.splitlines()) if m}


def summary_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The rows of the final summary table (details cut short there)."""
    return verdict_rows(stdout.partition("=== gpu_check summary")[2])


def streamed_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The verdict lines printed as the checks ran (whole details)."""
    return verdict_rows(stdout.partition("=== gpu_check summary")[0])


def test_dry_run_passes_with_a_verdict_per_check(dry_run, gpu_check):
    assert dry_run.returncode == 0, dry_run.stdout[-6000:] + dry_run.stderr[-3000:]
    rows = summary_rows(dry_run.stdout)
    for check in gpu_check.CHECK_LIMITS:
        assert any(name.split("/")[0] == check for name in rows), f"no verdict for {check}: {sorted(rows)}"
    assert not [name for name, (verdict, _) in rows.items() if verdict in ("FAIL", "TIMEOUT")], rows
    # what runs on CPU is really checked
    for name in ("precision/16-mixed", "precision/32-true", "ddp/gloo", "fsdp/train", "fsdp/full-checkpoint",
                 "fsdp/reload", "resume/exact"):  # fmt: skip
        assert rows[name][0] == "PASS", (name, rows[name])
    onnx_expected = "PASS" if importlib.util.find_spec("onnxruntime") else "SKIP"
    assert rows["onnx/cpu-export" if onnx_expected == "PASS" else "onnx/cuda-export"][0] == onnx_expected
    # what needs CUDA is skipped, saying so
    rows = streamed_rows(dry_run.stdout)
    for name in ("nosync/error-mode", "nosync/in-step", "ddp/nccl", "resume/cublas-config"):
        verdict, detail = rows[name]
        assert verdict == "SKIP" and "needs CUDA" in detail, (name, rows[name])
    assert rows["speed/eager"][0] == "SKIP" and "tokens/s" in rows["speed/eager"][1]
    assert re.search(r"^PASS \d+  FAIL 0  SKIP \d+  TIMEOUT 0", dry_run.stdout, re.MULTILINE), dry_run.stdout[-2000:]


def test_dry_run_verdict_lines_come_as_the_checks_run(dry_run):
    streamed, summary = streamed_rows(dry_run.stdout), summary_rows(dry_run.stdout)
    assert streamed.keys() == summary.keys()
    assert {k: v for k, (v, _) in streamed.items()} == {k: v for k, (v, _) in summary.items()}


def test_name_sync_names_allowed_functions_and_the_ember_frame(gpu_check):
    ember_file = os.path.join(gpu_check.EMBER_DIR, "trainer", "results.py")
    bar = [("/x/torch/_tensor.py", 10, "Tensor.tolist"), ("/y/progress.py", 70, "ProgressBar._refresh")]
    assert gpu_check.name_sync(bar) == ("progress bar refresh", True)
    fold = [(ember_file, 119, "LoggedValue._fold"), (ember_file, 106, "LoggedValue.add_epoch_value")]
    assert gpu_check.name_sync(fold) == ("ember/trainer/results.py:119 LoggedValue._fold", False)
    user = [("/u/model.py", 5, "Net.forward"), (ember_file, 50, "ResultStore.log")]
    assert gpu_check.name_sync(user) == (
        "ember/trainer/results.py:50 ResultStore.log -> u/model.py:5 Net.forward",
        False,
    )
    assert gpu_check.name_sync([]) == ("unknown (no Python frame)", False)


class SyncOnCall(nn.Module):
    """Wraps a net; on its ``at``-th call it warns as torch does under sync_debug_mode("warn"), or
    raises as under "error"."""

    def __init__(self, net: nn.Module, at: int, raise_: bool = False) -> None:
        super().__init__()
        self.net, self.at, self.raise_, self.calls = net, at, raise_, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            if self.raise_:
                raise RuntimeError(SYNC)
            warnings.warn(SYNC, stacklevel=1)
        return self.net(x)


def cpu_context(gpu_check, tmp_path):
    return gpu_check.Context(True, torch.device("cpu"), gpu_check.DRY_SIZES, tmp_path)


def test_sync_watch_places_and_names_syncs(gpu_check, tmp_path, monkeypatch):
    import ember.trainer.logging as trainer_logging

    host = trainer_logging.to_float_tensors

    def syncing_to_float_tensors(values):  # what .tolist() of a CUDA tensor makes torch say
        warnings.warn(SYNC, stacklevel=1)
        return host(values)

    monkeypatch.setattr(trainer_logging, "to_float_tensors", syncing_to_float_tensors)
    ctx = cpu_context(gpu_check, tmp_path)
    net = SyncOnCall(ctx.net(ctx.sizes.big), at=3)
    watch, error = gpu_check.sync_run(ctx, net, strict=False)
    assert error is None
    assert watch.steps == ctx.sizes.nosync_batch[2]
    bad = watch.disallowed()
    assert len(bad) == 1, bad
    ((name, count),) = bad.items()
    assert count == 1 and name.endswith("[step]") and "SyncOnCall.forward" in name, bad
    good = watch.allowed()
    assert good.get("progress bar refresh [epoch end]", 0) >= 1, good
    assert good.get("epoch-end log reduction [epoch end]", 0) >= 1, good
    assert not any("SyncOnCall" in n for n in good), good


def test_a_sync_error_in_a_step_is_reported_with_its_place(gpu_check, tmp_path):
    ctx = cpu_context(gpu_check, tmp_path)
    net = SyncOnCall(ctx.net(ctx.sizes.big), at=2, raise_=True)
    watch, error = gpu_check.sync_run(ctx, net, strict=True)
    assert isinstance(error, RuntimeError) and SYNC in str(error)
    assert watch.steps == 2
    assert "SyncOnCall.forward" in gpu_check.where_raised(error)


def test_run_child_collects_results(gpu_check):
    row = {"check": "demo/x", "verdict": "PASS", "detail": "fine"}
    code = f"import json; print('hello'); print({gpu_check.RESULT_TAG!r} + json.dumps({row!r}))"
    rows = []
    status, last = gpu_check.run_child([sys.executable, "-c", code], 120, "demo", rows)
    assert status == 0 and last == "hello"
    assert rows == [row]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return True


def test_run_child_kills_a_hanging_check_and_what_it_started(gpu_check):
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    rows = []
    status, last = gpu_check.run_child([sys.executable, "-c", code], 3, "hang", rows)
    assert status is None and rows == []
    grandchild = int(last)
    for _ in range(100):  # SIGKILL is immediate; give the kernel a moment to show it
        if _gone(grandchild):
            break
        time.sleep(0.05)
    assert _gone(grandchild)


def test_a_check_past_its_limit_is_reported_timeout(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--only", "onnx", "--timeout-per-check", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert summary_rows(out.stdout)["onnx"][0] == "TIMEOUT", out.stdout


def test_unknown_checks_are_refused(gpu_check, capsys):
    args = argparse.Namespace(only="nosync,bogus", dry_run=True, budget=None, timeout_per_check=None)
    assert gpu_check.parent_main(args) == 2
    assert "bogus" in capsys.readouterr().err
