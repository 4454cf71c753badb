"""Real multi-process runs with ``gloo`` on 127.0.0.1: Ember starting its own processes, torchrun
(one machine and two "machines"), ddp_spawn, ``ember.distributed.Parallel``, FSDP2, and faults.

Every job is ``dist_job.py`` in a fresh process tree; each start costs seconds, so one job checks
several things and the tests read what it wrote. Everything is compared with the single-process
run on the same global batch (``dist_common.reference``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_common import GLOBAL_BATCH, make_model, reference, train_loader, trainer_options, val_loader

import ember
from ember.distributed.cluster import free_port, threads_per_process

HERE = Path(__file__).resolve().parent
JOB = str(HERE / "dist_job.py")
TOL = 2e-5  # float32 sums in another order: DDP averages two half-batch gradients


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables (the test itself may run under one)."""
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK",
                     "GROUP_RANK", "TORCHELASTIC_RUN_ID", "OMP_NUM_THREADS", "EMBER_TEST_KILL_EPOCH")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=HERE, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def torchrun(*args: str) -> list[str]:
    # one thread per worker: torchrun sets OMP_NUM_THREADS=1 only with --nproc_per_node > 1
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *args,
    ]


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Single-process runs on the global batch: 2 epochs (weights, metrics) and 3 epochs (weights)."""
    torch.set_num_threads(1)
    weights, trainer = reference(tmp_path_factory.mktemp("ref2"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    weights3, _ = reference(tmp_path_factory.mktemp("ref3"), epochs=3)
    return {"weights": weights, "metrics": metrics, "weights3": weights3}


# ---------------------------------------------------------------------- Ember starts the processes


def test_trainer_devices_2_from_a_plain_script_matches_one_process(tmp_path, ref):
    proc = run([sys.executable, JOB, "launcher", str(tmp_path)])
    assert_ok(proc)
    out = torch.load(tmp_path / "launcher.pt")
    assert max_diff(out["weights"], ref["weights"]) < TOL
    # sync_dist=True: the epoch means over both processes are the one-process means
    assert out["metrics"] == pytest.approx(ref["metrics"], rel=1e-5)
    ranks = [json.loads((tmp_path / f"launcher_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["global_rank"], r["local_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
    assert all(r["sampler"] == "ShardedSampler" for r in ranks)
    # the started process gets cores / processes threads (torch.multiprocessing would give it all of them)
    expected = threads_per_process(2)
    assert (
        ranks[1]["omp"] == str(expected) and ranks[1]["threads"] == expected and ranks[0]["threads"] <= max(expected, 1)
    )
    # a second Trainer in the script joins the same processes; evaluation shards are exact (13 samples)
    again = torch.load(tmp_path / "launcher_validate.pt")
    assert again["pid"] == ranks[0]["pid"]
    assert again["results"][0]["val_loss"] == pytest.approx(ref["metrics"]["val_loss"], rel=1e-5)


def test_a_stop_decided_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    proc = run([sys.executable, JOB, "rank_local_stop", str(tmp_path)], timeout=240)
    assert_ok(proc)
    ranks = [json.loads((tmp_path / f"stop_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["validation"]["global_step"] < 5 * 4  # it stopped early (not max_epochs)
    assert ranks[0]["batch"]["global_step"] <= 2 + 3  # agreed within log_every_n_steps of the request


def test_a_failing_rank_ends_every_process_with_its_error(tmp_path):
    # the collective timeout is 900 s: a job that waited for it would run past this bounded wait and fail
    proc = run([sys.executable, JOB, "fault", str(tmp_path)], timeout=300)
    assert proc.returncode != 0
    assert "RuntimeError: boom on rank 1 at step 3" in proc.stderr
    assert "[ember] raised on global rank 1 of 2" in proc.stderr
    for pid_file in tmp_path.glob("pid_*"):
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no process left behind


def test_ddp_spawn_and_parallel(tmp_path, ref):
    proc = run([sys.executable, JOB, "spawn", str(tmp_path)])
    assert_ok(proc)
    out = torch.load(tmp_path / "spawn.pt")
    assert max_diff(out["weights"], ref["weights"]) < TOL  # rank zero's weights came back into this model
    assert out["step"] == 16 and out["metrics"] == pytest.approx(ref["metrics"], rel=1e-5)
    infos = sorted((json.loads(p.read_text()) for p in tmp_path.glob("parallel_rank*.json")), key=lambda i: i["rank"])
    assert [(i["rank"], i["local_rank"], i["world"], i["backend"]) for i in infos] == [
        (0, 0, 2, "gloo"),
        (1, 1, 2, "gloo"),
    ]
    for info in infos:
        assert info["sum"] == 3.0 and info["max"] == 1 and info["gather"] == [0, 0, 1, 1]
        assert info["gather_obj"] == [{"r": 0}, {"r": 1}] and info["bcast"] == "hello"
        assert info["omp"] == str(threads_per_process(2))


# ---------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory):
    """One torchrun job: DDP, accumulation, a single-process checkpoint resumed, FSDP2 (full and sharded)."""
    out = tmp_path_factory.mktemp("torchrun")
    torch.set_num_threads(1)
    single = ember.Trainer(**trainer_options(out / "single", max_epochs=1))
    single.fit(make_model(), train_loader(GLOBAL_BATCH), val_loader())
    single.save_checkpoint(out / "single_epoch0.ckpt")
    proc = run(torchrun("--nproc_per_node=2", JOB, "torchrun", str(out)), env=clean_env(OMP_NUM_THREADS="1"))
    assert_ok(proc)
    return out


def test_torchrun_ddp_matches_one_process(torchrun_job, ref):
    out = torch.load(torchrun_job / "ddp.pt")
    assert max_diff(out["weights"], ref["weights"]) < TOL
    assert out["metrics"] == pytest.approx(ref["metrics"], rel=1e-5)
    ranks = [json.loads((torchrun_job / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["global_rank"] for r in ranks] == [0, 1]
    assert all(r["broadcast"] == 100 and r["reduced"] == 3.0 for r in ranks)  # strategy.broadcast / reduce
    assert ranks[1]["metrics"] == ranks[0]["metrics"]  # synced values agree on every rank


def test_only_rank_zero_writes_logs_checkpoints_and_the_progress_bar(torchrun_job):
    assert (torchrun_job / "bar_rank0.txt").stat().st_size > 0
    assert (torchrun_job / "bar_rank1.txt").stat().st_size == 0
    assert sorted(p.name for p in (torchrun_job / "logs" / "ddp").iterdir()) == ["version_0"]
    rows = (torchrun_job / "logs" / "ddp" / "version_0" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and len(set(rows)) == len(rows)  # header; a validation and a training row per epoch, once
    assert sorted(p.name for p in (torchrun_job / "ckpt_ddp").iterdir()) == [
        "epoch=0-step=8.ckpt",
        "epoch=1-step=16.ckpt",
    ]


def test_accumulation_with_no_sync_equals_the_unaccumulated_run(torchrun_job, ref):
    out = torch.load(torchrun_job / "accumulate.pt")
    assert max_diff(out["weights"], ref["weights"]) < TOL
    assert out["steps"] == 16 and out["allreduces"] == 16  # one gradient all-reduce per optimizer step, not per batch


def test_checkpoints_move_between_one_and_two_processes(torchrun_job, ref, tmp_path):
    resumed_in_two = torch.load(torchrun_job / "from_single.pt")  # saved by 1 process, resumed by 2
    assert resumed_in_two["step"] == 16 and max_diff(resumed_in_two["weights"], ref["weights"]) < TOL
    model = make_model()  # saved by 2 processes, resumed by 1
    trainer = ember.Trainer(**trainer_options(tmp_path))
    trainer.fit(
        model, train_loader(GLOBAL_BATCH), val_loader(), ckpt_path=torchrun_job / "ckpt_ddp" / "epoch=0-step=8.ckpt"
    )
    assert trainer.global_step == 16 and max_diff(model.state_dict(), ref["weights"]) < TOL


def test_fsdp2_trains_on_cpu_and_its_full_checkpoint_loads_anywhere(torchrun_job, ref, tmp_path):
    out = torch.load(torchrun_job / "fsdp.pt")
    assert max_diff(out["weights"], ref["weights"]) < TOL
    assert out["metrics"]["train_loss"] == pytest.approx(ref["metrics"]["train_loss"], rel=1e-5)
    full = torch.load(torchrun_job / "fsdp_full.ckpt", weights_only=True)  # plain tensors, one file
    ddp = torch.load(torchrun_job / "ckpt_ddp" / "epoch=1-step=16.ckpt", weights_only=True)
    assert max_diff(full["state_dict"], ref["weights"]) < TOL
    fsdp_opt, ddp_opt = full["optimizer_states"][0], ddp["optimizer_states"][0]
    assert fsdp_opt["param_groups"] == ddp_opt["param_groups"]  # torch's indexed layout, not parameter names
    for i, state in ddp_opt["state"].items():
        assert torch.allclose(fsdp_opt["state"][i]["momentum_buffer"], state["momentum_buffer"], atol=TOL)
    last = torch.load(torchrun_job / "ckpt_fsdp" / "last.ckpt", weights_only=True)  # ModelCheckpoint under FSDP
    assert max_diff(last["state_dict"], ref["weights"]) < TOL
    model = make_model()  # ... and continues in one process, momentum included
    trainer = ember.Trainer(**trainer_options(tmp_path, max_epochs=3))
    trainer.fit(model, train_loader(GLOBAL_BATCH), ckpt_path=torchrun_job / "fsdp_full.ckpt")
    assert max_diff(model.state_dict(), ref["weights3"]) < TOL


def test_fsdp2_sharded_checkpoint_needs_trust_to_load(torchrun_job, ref):
    out = torch.load(torchrun_job / "fsdp_sharded.pt")
    assert "trusted_sharded_checkpoints=True" in out["refused"]
    assert out["step"] == 16 and max_diff(out["weights"], ref["weights"]) < TOL  # 1 epoch, saved sharded, resumed
    written = sorted(p.name for p in (torchrun_job / "fsdp_sharded").iterdir())
    assert ".metadata" in written and "ember.ckpt" in written and any(n.endswith(".distcp") for n in written)
    assert not [p for p in torchrun_job.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_two_torchrun_nodes_rendezvous_on_loopback(tmp_path, ref):
    port = free_port()
    env = clean_env(OMP_NUM_THREADS="1")

    def node(rank: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
               "--master_addr=127.0.0.1", f"--master_port={port}", JOB, "nodes", str(tmp_path)]  # fmt: skip
        return subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    nodes = [node(0), node(1)]
    outputs = [p.communicate(timeout=180)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-4000:] for o in outputs)
    infos = [json.loads((tmp_path / f"nodes_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(i["global_rank"], i["local_rank"], i["node_rank"]) for i in infos] == [(0, 0, 0), (1, 0, 1)]
    assert max_diff(torch.load(tmp_path / "nodes.pt")["weights"], ref["weights"]) < TOL


def test_sigkill_under_torchrun_ends_the_job_and_last_checkpoint_resumes(tmp_path, ref):
    # 1. rank 1 is SIGKILLed in epoch 1: torchrun ends the job, non-zero, promptly
    first = run(torchrun("--nproc_per_node=2", "--max-restarts=0", JOB, "kill", str(tmp_path)),
                env=clean_env(OMP_NUM_THREADS="1", EMBER_TEST_KILL_EPOCH="1"))  # fmt: skip  (a bounded wait)
    assert first.returncode != 0
    assert "SIGKILL" in first.stderr and not list(tmp_path.glob("kill_*.pt"))
    # 2. the same command again, ckpt_path="last": resumes from epoch 0's checkpoint; killed again in
    #    epoch 2, torchrun --max-restarts=1 restarts the workers, which resume from epoch 1's by themselves
    second = run(torchrun("--nproc_per_node=2", "--max-restarts=1", JOB, "kill", str(tmp_path)),
                 env=clean_env(OMP_NUM_THREADS="1", EMBER_TEST_KILL_EPOCH="2"))  # fmt: skip
    assert_ok(second)
    assert "exitcode: -9" in second.stderr  # the kill did happen, and the restart recovered from it
    out = torch.load(tmp_path / "kill_1.pt")  # written by the restarted attempt
    assert out["step"] == 24 and max_diff(out["weights"], ref["weights3"]) < TOL  # as if never interrupted
