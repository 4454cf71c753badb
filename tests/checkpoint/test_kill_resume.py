"""Acceptance (issue 3, section 3): a training job killed with SIGKILL at many random moments,
some of them inside a checkpoint write, and resumed from "last" each time, ends with exactly the
weights of a run that was never interrupted; every checkpoint file that ever exists loads.
Preemption: SIGTERM / SIGINT make a real subprocess save and exit with a message; a second SIGINT
stops it at once.

The killed runs are forked from the test process (no second torch import per run, so a dozen
kills fit in seconds); the preemption runs are ``python train_script.py`` subprocesses.
"""

from __future__ import annotations

import io
import os
import random
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import train_script
from resume_kit import assert_same_state

from ember.checkpoint import load_checkpoint

SCRIPT = Path(train_script.__file__)
TIMEOUT = 60.0


def fork_run(root: Path, step_sleep: float = 0.0, slow_save: float = 0.0) -> tuple[int, int]:
    """``train_script.run(root, resume=True)`` in a forked child; returns (pid, fd of its event pipe)."""
    # the first optimizer built in a process imports a lot of torch (seconds): do it once, here,
    # so that the children inherit it
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: train, report events through the pipe, never return into pytest
        code = 1
        try:
            os.close(r)
            train_script.run(root, True, lambda line: os.write(w, (line + "\n").encode()), step_sleep, slow_save)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def events(fd: int, deadline: float) -> Iterator[str]:
    """Lines from ``fd`` as they come (EOF ends); fails the test past ``deadline``."""
    buffer = b""
    with io.FileIO(fd, "r", closefd=True) as pipe:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the training child hung"
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = pipe.read(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode()


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def checkpoint_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The .ckpt files, and anything else found (only hidden temporary files are allowed)."""
    if not directory.exists():
        return [], []
    ckpts = sorted(directory.glob("*.ckpt"))
    others = sorted(p.name for p in directory.iterdir() if p.suffix != ".ckpt")
    return ckpts, others


def check_all_load(directory: Path) -> int:
    """Every checkpoint file present loads (Ember's loader and plain weights_only torch.load);
    returns the global step of the newest one (0 when there is none)."""
    ckpts, others = checkpoint_files(directory)
    assert all(name.startswith(".") and name.endswith(".tmp") for name in others), others
    top_k = [p for p in ckpts if p.name != "last.ckpt"]
    assert len(top_k) <= 3, top_k  # save_top_k=2, plus one during the moment between save and delete
    newest, step = 0.0, 0
    for path in ckpts:
        ckpt = load_checkpoint(path)
        assert torch.load(path, weights_only=True)["global_step"] == ckpt["global_step"]
        if path.stat().st_mtime >= newest:
            newest, step = path.stat().st_mtime, ckpt["global_step"]
    return step


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run (forked too, so it runs in exactly the same process image)."""
    root = tmp_path_factory.mktemp("reference")
    pid, fd = fork_run(root)
    lines = list(events(fd, time.monotonic() + TIMEOUT))
    assert wait(pid) == 0 and lines[-1] == "DONE"
    final = torch.load(root / "final.pt", weights_only=True)
    assert final["global_step"] == train_script.EPOCHS * train_script.SAMPLES // 4
    return final


def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path: Path, reference: dict) -> None:
    rng = random.Random(20261123)
    ckpt_dir = tmp_path / "ckpts"
    kills: list[tuple[str, int, int]] = []  # (how, resumed from step, killed at step)
    mid_write = 0
    deadline = time.monotonic() + TIMEOUT
    while len(kills) < 12:
        resume_step = check_all_load(ckpt_dir)
        temp_before = len(checkpoint_files(ckpt_dir)[1])
        how = ("during a write", "after a write", "between steps")[len(kills) % 3]
        nth = rng.randint(1, 3)
        pid, fd = fork_run(tmp_path, step_sleep=0.003, slow_save=0.01)
        seen = {"SAVING": 0, "SAVED": 0}
        start = last_step = None
        for line in events(fd, deadline):
            kind, _, arg = line.partition(" ")
            if kind == "START":
                start = int(arg)
                assert start == resume_step  # resumed from the newest checkpoint on disk
            elif kind == "STEP":
                last_step = int(arg)
            seen[kind] = seen.get(kind, 0) + 1
            trigger = (
                (how == "during a write" and kind == "SAVING" and seen["SAVING"] == nth)
                or (how == "after a write" and kind == "SAVED" and seen["SAVED"] == nth)
                or (how == "between steps" and kind == "STEP" and last_step >= start + 2 * nth)
            )
            if trigger:
                if how != "after a write":
                    time.sleep(rng.uniform(0.0, 0.02))  # somewhere inside the 40 ms write / the next step
                os.kill(pid, signal.SIGKILL)
                break
            assert line != "DONE", "the run finished before it could be killed"
        assert wait(pid) == -signal.SIGKILL
        kills.append((how, start, last_step))
        if len(checkpoint_files(ckpt_dir)[1]) > temp_before:
            mid_write += 1  # the kill left a half-written temporary file behind
    assert mid_write >= 1, kills
    check_all_load(ckpt_dir)
    # the last run, to the end
    pid, fd = fork_run(tmp_path)
    lines = list(events(fd, time.monotonic() + TIMEOUT))
    assert wait(pid) == 0 and lines[-1] == "DONE", lines[-5:]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert_same_state(final, reference, f"after {len(kills)} kills {kills}")
    ckpts, _ = checkpoint_files(ckpt_dir)
    assert "last.ckpt" in [p.name for p in ckpts]
    (state,) = [v for k, v in load_checkpoint(ckpt_dir / "last.ckpt")["callbacks"].items() if "ModelCheckpoint" in k]
    top2 = {Path(p).name for p in state["topk"]["saved"]}
    assert len(top2) == 2 and top2 <= {p.name for p in ckpts}
    # nothing else left over but the files runs resumed from, which (as in Lightning) are never deleted
    resumed_from = {start for _, start, _ in kills} | {int(line.split()[1]) for line in lines if line.startswith("START ")}
    for extra in (p for p in ckpts if p.name != "last.ckpt" and p.name not in top2):
        assert load_checkpoint(extra)["global_step"] in resumed_from, (extra.name, resumed_from)
    assert load_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == reference["global_step"]


def start_script(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(root), "--resume", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_until_step(proc: subprocess.Popen, step: int) -> str:
    """The script's output up to and including its ``STEP step`` line."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("STEP") and int(line.split()[1]) >= step:
            return "".join(lines)
    pytest.fail(f"the script ended early: {proc.wait()} {proc.stderr.read()}")


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_preemption_signal_saves_and_exits_then_resume_is_exact(tmp_path: Path, reference: dict, signame: str) -> None:
    proc = start_script(tmp_path, "--step-sleep", "0.02")
    try:
        out = read_until_step(proc, 10)
        proc.send_signal(getattr(signal, signame))
        rest, err = proc.communicate(timeout=TIMEOUT)
        out += rest
    finally:
        proc.kill()
    assert proc.returncode != 0
    last = tmp_path / "ckpts" / "last.ckpt"
    assert f"received {signame}; saved a checkpoint to {str(last)!r}" in err
    assert "ckpt_path" in err and "Traceback" not in err
    ckpt = load_checkpoint(last)
    stopped = ckpt["global_step"]
    assert f"STEP {stopped}\n" in out and f"STEP {stopped + 1}\n" not in out  # finished its step, then stopped
    assert 10 <= stopped < 30  # at once, not at the end of the epoch
    assert ckpt["loops"]["fit"]["batches"] == stopped  # mid-epoch position
    train_script.run(tmp_path, True, lambda line: None)  # resume here, in-process
    assert_same_state(torch.load(tmp_path / "final.pt", weights_only=True), reference, signame)


def test_sigusr1_in_a_forked_child(tmp_path: Path, reference: dict) -> None:
    pid, fd = fork_run(tmp_path, step_sleep=0.005)
    for line in events(fd, time.monotonic() + TIMEOUT):
        if line == "STEP 40":
            os.kill(pid, signal.SIGUSR1)
    assert wait(pid) == 1  # Preempted is a SystemExit with a message: status 1
    assert 40 <= load_checkpoint(tmp_path / "ckpts" / "last.ckpt")["global_step"] <= 42
    pid, fd = fork_run(tmp_path)
    assert list(events(fd, time.monotonic() + TIMEOUT))[-1] == "DONE" and wait(pid) == 0
    assert_same_state(torch.load(tmp_path / "final.pt", weights_only=True), reference, "SIGUSR1")


def test_a_second_sigint_stops_at_once(tmp_path: Path) -> None:
    # from step 2 on, a step takes 600 s: a process that waited for it would outlive the bounded wait below
    proc = start_script(tmp_path, "--step-sleep", "600", "--sleep-from", "2")
    try:
        read_until_step(proc, 1)
        time.sleep(1.0)  # now well inside step 2
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)  # did not wait for the step to finish
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err and "saved a checkpoint" not in err
    assert "STEP 2" not in out
