"""Jobs the distributed tests launch: ``python dist_job.py MODE OUT`` (Ember starts the other
process) or ``torchrun ... dist_job.py MODE OUT``. Rank zero writes what the tests check under OUT.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ember
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.callbacks.progress import ProgressBar
from ember.loggers import CSVLogger
from ember.runtime import DDPStrategy, FSDPStrategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dist_common import GLOBAL_BATCH, make_model, train_loader, trainer_options, val_loader

PER_RANK_BATCH = GLOBAL_BATCH // 2


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save(out: Path, name: str, trainer: ember.Trainer, **extra: Any) -> None:
    if trainer.is_global_zero:
        torch.save(extra, out / f"{name}.pt")


def rank_info(out: Path, name: str, trainer: ember.Trainer, **extra: Any) -> None:
    info = {
        "global_rank": trainer.global_rank,
        "local_rank": trainer.local_rank,
        "world_size": trainer.world_size,
        "pid": os.getpid(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "threads": torch.get_num_threads(),
        **extra,
    }
    (out / f"{name}_rank{trainer.global_rank}.json").write_text(json.dumps(info))


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


# ---------------------------------------------------------------------- modes


def launcher(out: Path) -> None:
    """``python dist_job.py launcher OUT``: Trainer(devices=2, strategy="ddp") re-runs this script."""
    model = make_model()
    trainer = ember.Trainer(**trainer_options(out, devices=2, strategy="ddp"))
    trainer.fit(model, train_loader(PER_RANK_BATCH), val_loader())
    rank_info(out, "launcher", trainer, sampler=type(trainer._fit_loop.data.loader.sampler).__name__)
    save(out, "launcher", trainer, weights=weights(model), metrics=floats(trainer.callback_metrics))
    # a second Trainer in the same script joins the same processes (no second launch)
    again = ember.Trainer(**trainer_options(out, devices=2, strategy="ddp"))
    results = again.validate(model, val_loader(), verbose=False)
    save(out, "launcher_validate", again, results=results, pid=os.getpid())


def torchrun_main(out: Path) -> None:
    """``torchrun --nproc_per_node=2 dist_job.py torchrun OUT``: DDP, accumulation, resume, FSDP."""
    # DDP: weights, synced metrics, rank-zero-only files, barrier/broadcast
    model = make_model()
    rank = int(os.environ["RANK"])
    bar_file = open(out / f"bar_rank{rank}.txt", "w")
    trainer = ember.Trainer(
        **trainer_options(
            out,
            strategy="ddp",
            enable_checkpointing=True,
            enable_progress_bar=True,
            logger=CSVLogger(out / "logs", name="ddp"),
            callbacks=[
                ProgressBar(file=bar_file, force=True),
                ModelCheckpoint(dirpath=out / "ckpt_ddp", save_top_k=-1),
            ],
        )
    )
    trainer.fit(model, train_loader(PER_RANK_BATCH), val_loader())
    bar_file.close()
    got = trainer.strategy.broadcast(100 + trainer.global_rank)
    trainer.strategy.barrier()
    total = trainer.strategy.reduce(torch.tensor(float(trainer.global_rank + 1)), "sum")
    rank_info(out, "ddp", trainer, broadcast=got, reduced=float(total), metrics=floats(trainer.callback_metrics))
    save(out, "ddp", trainer, weights=weights(model), metrics=floats(trainer.callback_metrics))

    # gradient accumulation: half the batch, two micro-steps; one gradient all-reduce per optimizer step
    model = make_model()
    calls = {"n": 0}

    class CountAllReduce(ember.Callback):
        def on_fit_start(self, trainer: Any, module: Any) -> None:
            def hook(state, bucket):  # unannotated: DDP checks annotations against its own types
                state["n"] += 1
                work = torch.distributed.all_reduce(bucket.buffer().div_(trainer.world_size), async_op=True)
                return work.get_future().then(lambda fut: fut.value()[0])

            trainer.strategy._ddp.register_comm_hook(calls, hook)

    trainer = ember.Trainer(
        **trainer_options(out, strategy="ddp", accumulate_grad_batches=2, callbacks=[CountAllReduce()])
    )
    trainer.fit(model, train_loader(PER_RANK_BATCH // 2))
    save(out, "accumulate", trainer, weights=weights(model), allreduces=calls["n"], steps=trainer.global_step)

    # a single-process checkpoint resumes here, in two processes
    model = make_model()
    trainer = ember.Trainer(**trainer_options(out, strategy="ddp"))
    trainer.fit(model, train_loader(PER_RANK_BATCH), val_loader(), ckpt_path=out / "single_epoch0.ckpt")
    save(out, "from_single", trainer, weights=weights(model), step=trainer.global_step)

    # FSDP2: trains on CPU with gloo; full checkpoint by default
    model = make_model()
    fsdp = FSDPStrategy(auto_wrap_policy={nn.Linear})
    # ModelCheckpoint under FSDP: every rank helps gather the weights, rank zero writes
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt_fsdp", save_last=True)
    trainer = ember.Trainer(**trainer_options(out, strategy=fsdp, enable_checkpointing=True, callbacks=[checkpoint]))
    trainer.fit(model, train_loader(PER_RANK_BATCH), val_loader())
    full = fsdp.model_state_dict(model)  # gathered: every rank takes part, rank zero gets it
    trainer.save_checkpoint(out / "fsdp_full.ckpt")
    save(out, "fsdp", trainer, weights=full, metrics=floats(trainer.callback_metrics))

    # FSDP sharded checkpoint: written by every rank, loadable only when trusted
    model = make_model()
    trainer = ember.Trainer(**trainer_options(out, max_epochs=1, strategy=FSDPStrategy(state_dict_type="sharded")))
    trainer.fit(model, train_loader(PER_RANK_BATCH))
    trainer.save_checkpoint(out / "fsdp_sharded")
    refused = ""
    try:
        ember.Trainer(**trainer_options(out, strategy=FSDPStrategy())).fit(
            make_model(), train_loader(PER_RANK_BATCH), ckpt_path=out / "fsdp_sharded"
        )
    except ValueError as err:
        refused = str(err)
    model = make_model()
    fsdp = FSDPStrategy(trusted_sharded_checkpoints=True)
    trainer = ember.Trainer(**trainer_options(out, strategy=fsdp))
    trainer.fit(model, train_loader(PER_RANK_BATCH), ckpt_path=out / "fsdp_sharded")
    save(out, "fsdp_sharded", trainer, weights=fsdp.model_state_dict(model), refused=refused, step=trainer.global_step)


def two_nodes(out: Path) -> None:
    """Two torchrun "nodes" of one process each."""
    model = make_model()
    trainer = ember.Trainer(**trainer_options(out, devices=1, num_nodes=2, strategy="ddp"))
    trainer.fit(model, train_loader(PER_RANK_BATCH))
    rank_info(out, "nodes", trainer, node_rank=trainer.strategy.node_rank)
    save(out, "nodes", trainer, weights=weights(model))


def fault(out: Path) -> None:
    """Rank 1 raises in its 4th training step; rank 0 waits in the gradient all-reduce (a 900 s timeout
    it must not need: the failure ends every process at once)."""
    model = make_model(fail_at=3)
    (out / f"pid_{os.environ.get('LOCAL_RANK', '0')}").write_text(str(os.getpid()))
    trainer = ember.Trainer(**trainer_options(out, devices=2, strategy=DDPStrategy(timeout=900)))
    trainer.fit(model, train_loader(PER_RANK_BATCH))


def kill(out: Path) -> None:
    """Under torchrun: rank 1 SIGKILLs itself in epoch $EMBER_TEST_KILL_EPOCH (first attempt only);
    ``ckpt_path="last"`` resumes from the newest checkpoint, whoever started this run."""
    model = make_model()
    trainer = ember.Trainer(
        **trainer_options(
            out, max_epochs=3, strategy="ddp", enable_checkpointing=True,
            callbacks=[ModelCheckpoint(dirpath=out / "ckpt", save_last=True)],
        )
    )  # fmt: skip
    trainer.fit(model, train_loader(PER_RANK_BATCH), ckpt_path="last")
    save(
        out,
        f"kill_{os.environ.get('TORCHELASTIC_RESTART_COUNT')}",
        trainer,
        weights=weights(model),
        step=trainer.global_step,
    )


def spawn(out: Path) -> None:
    """ddp_spawn: the stage runs in two fresh processes and the results come back here."""
    model = make_model()
    trainer = ember.Trainer(**trainer_options(out, devices=2, strategy="ddp_spawn"))
    trainer.fit(model, train_loader(PER_RANK_BATCH), val_loader())
    torch.save(
        {"weights": weights(model), "metrics": floats(trainer.callback_metrics), "step": trainer.global_step},
        out / "spawn.pt",
    )
    from ember.distributed import Parallel

    with Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(collectives, str(out))


def collectives(local_rank: int, out: str) -> None:
    """Engine-level helpers inside ember.distributed.Parallel."""
    import ember.distributed as edist

    rank = edist.get_rank()
    info = {
        "rank": rank,
        "local_rank": local_rank,
        "world": edist.get_world_size(),
        "backend": edist.backend(),
        "sum": float(edist.all_reduce(torch.tensor(float(rank + 1)))),
        "max": edist.all_reduce(rank, op="MAX"),
        "gather": edist.all_gather(torch.tensor([rank, rank])).tolist(),
        "gather_obj": edist.all_gather({"r": rank}),
        "bcast": edist.broadcast("hello" if rank == 0 else None, src=0),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }
    edist.barrier()
    Path(out, f"parallel_rank{rank}.json").write_text(json.dumps(info))


def rank_local_stop(out: Path) -> None:
    """Only rank 0 asks to stop: after its second mid-epoch validation (an EarlyStopping on a metric
    that was not synced would do this) and, in the second fit, in on_train_batch_end of step 3.
    Every process must stop at the same step, with no collective left waiting."""
    rank = int(os.environ.get("RANK", "0"))

    class StopOnRankZero(ember.Callback):
        def __init__(self, at: str) -> None:
            self.at, self.validations = at, 0

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            self.validations += 1
            if self.at == "validation" and rank == 0 and self.validations == 2:
                trainer.should_stop = True

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.at == "batch" and rank == 0 and trainer.global_step == 3:
                trainer.should_stop = True

    found = {}
    for at in ("validation", "batch"):
        options = trainer_options(out, devices=2, strategy="ddp", max_epochs=5, val_check_interval=2, log_every_n_steps=2)
        trainer = ember.Trainer(**options, callbacks=[StopOnRankZero(at)])
        trainer.fit(make_model(), train_loader(PER_RANK_BATCH), val_loader())
        found[at] = {"global_step": trainer.global_step, "epoch": trainer.current_epoch}
    (out / f"stop_rank{rank}.json").write_text(json.dumps(found))


MODES = {
    "rank_local_stop": rank_local_stop,
    "launcher": launcher,
    "torchrun": torchrun_main,
    "nodes": two_nodes,
    "fault": fault,
    "kill": kill,
    "spawn": spawn,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](Path(sys.argv[2]))
