"""Logs across a crash (issue 13, item 7): a run SIGKILLed after it logged steps past its last
checkpoint, then resumed from that checkpoint in a new process, ends with every ``train_loss`` step
exactly once in the CSV file and in TensorBoard (read back with tensorboard's own
EventAccumulator), with the values of a run that was never interrupted.

The job is ``resume_logs_script.py`` (3 epochs of 10 steps, a checkpoint every 3 steps, logging
every step). It is killed twice: at step 11 (last checkpoint: step 9) and, once resumed, at step 23
(last checkpoint: step 21); each time it first makes everything logged so far durable, so the files
do hold rows past the checkpoint that the resumed run writes again.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import resume_logs_script as job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loggers"))
from logger_readback import csv_rows, csv_series, tb_scalars

from ember.checkpoint import load_checkpoint

SCRIPT = Path(job.__file__)
TIMEOUT = 120.0  # a bound on waiting for the child, not a time the test asserts
STEPS = job.EPOCHS * job.SAMPLES // 4


def start(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def read_until(proc: subprocess.Popen, prefix: str) -> list[str]:
    """The child's stdout lines up to the first that starts with ``prefix`` (bounded wait)."""
    deadline = time.monotonic() + TIMEOUT
    lines: list[str] = []
    buffer = b""
    fd = proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            pytest.fail(f"no {prefix!r} line from the training job; it printed {lines}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            proc.wait()
            pytest.fail(f"the job ended before {prefix!r}: {lines} {proc.stderr.read().decode()[-3000:]}")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode())
            if lines[-1].startswith(prefix):
                return lines


def newest_checkpoint(directory: Path) -> tuple[Path, int]:
    steps = {p: load_checkpoint(p)["global_step"] for p in directory.glob("*.ckpt")}
    path = max(steps, key=steps.get)
    return path, steps[path]


def logged_steps(root: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``train_loss`` as (step, value) from the CSV file and from TensorBoard's event files."""
    csv = csv_series(csv_rows(root / "csv" / "version_0" / "metrics.csv"), "train_loss")
    tb = tb_scalars(root / "tb" / "version_0").get("train_loss", [])
    return csv, tb


def kill_after_hang(root: Path, hang_at: int, resume: Path | None) -> Path:
    """Run the job until it hangs at ``hang_at``, check that its files hold steps past its newest
    checkpoint, SIGKILL it; returns that checkpoint."""
    proc = start(root, "--hang-at", str(hang_at), *(["--resume", str(resume)] if resume else []))
    try:
        lines = read_until(proc, "HANG")
        assert f"START {0 if resume is None else load_checkpoint(resume)['global_step']}" in lines
        ckpt, ckpt_step = newest_checkpoint(root / "csv" / "version_0" / "checkpoints")
        csv, tb = logged_steps(root)
        # the rows of batches 1..ckpt_step are steps 0..ckpt_step-1: the files hold steps after that
        assert ckpt_step < hang_at and max(s for s, _ in csv) >= ckpt_step and max(s for s, _ in tb) >= ckpt_step
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return ckpt


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, list]:
    root = tmp_path_factory.mktemp("reference")
    job.run(root)
    return logged_steps(root)


def test_sigkill_twice_then_resume_logs_every_step_once(tmp_path: Path, reference: tuple[list, list]) -> None:
    ref_csv, ref_tb = reference
    assert [s for s, _ in ref_csv] == list(range(STEPS)) == [s for s, _ in ref_tb]

    ckpt = kill_after_hang(tmp_path, 11, None)
    assert load_checkpoint(ckpt)["global_step"] == 9
    ckpt = kill_after_hang(tmp_path, 23, ckpt)
    assert load_checkpoint(ckpt)["global_step"] == 21
    proc = start(tmp_path, "--resume", str(ckpt))
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert out.decode().splitlines()[-1] == "DONE"

    csv, tb = logged_steps(tmp_path)
    assert [s for s, _ in csv] == list(range(STEPS))  # every step once: none lost, none twice
    assert [s for s, _ in tb] == list(range(STEPS))
    assert csv == ref_csv  # and the values of the run that was never interrupted
    assert tb == ref_tb
    # the resumed runs went on in the run's own folders: no other version was started
    assert sorted(os.listdir(tmp_path / "csv")) == ["version_0"] == sorted(os.listdir(tmp_path / "tb"))
