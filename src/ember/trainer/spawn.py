"""``strategy="ddp_spawn"``: a stage run in fresh processes, and rank zero's results copied back.

The launcher (:class:`ember.runtime.launcher.SpawnLauncher`) knows nothing of the Trainer: it runs
:func:`run_spawned_stage` in every process and hands rank zero's return value back; this module
decides what that value holds and puts it into the Trainer and model of the launching process.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.tree import tree_map


def _cpu(tree: Any) -> Any:
    return tree_map(lambda v: v.detach().cpu() if isinstance(v, torch.Tensor) else v, tree)


def run_spawned_stage(trainer: Any, stage: str, model: Any, datamodule: Any, ckpt_path: Any, loaders: dict) -> Any:
    """In a spawned process: run the stage; rank zero returns what the launching process needs."""
    if trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    out = trainer._run_stage(stage, model, datamodule, ckpt_path, **loaders)
    if not trainer.is_global_zero:
        return None
    logging = trainer._logging
    callbacks = {
        i: cb.state_dict()
        for i, cb in enumerate(trainer.callbacks)
        if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None))
    }
    loop = trainer._eval.get(stage)
    return {
        "state_dict": _cpu(trainer.strategy.model_state_dict(model)),
        "progress": trainer.fit_progress.state_dict(),
        "callback": _cpu(dict(logging.callback)),
        "logged": _cpu(dict(logging.logged)),
        "progress_bar": dict(logging.progress),
        "results": dict(loop.results) if loop is not None else {},
        "predictions": _cpu(trainer._eval["predict"].predictions) if stage == "predict" else None,
        "callbacks": callbacks,
        "num_loaders": 0 if stage == "fit" else len(out),
    }


def apply_spawned_results(trainer: Any, model: Any, stage: str, results: dict[str, Any]) -> list[Any]:
    """In the launching process: rank zero's weights, counters, metrics and callback states."""
    model.load_state_dict(results["state_dict"])
    trainer.model = model
    progress = trainer.fit_progress
    progress.global_step = results["progress"]["global_step"]
    progress.current_epoch = results["progress"]["current_epoch"]
    logging = trainer._logging
    logging.callback = results["callback"]
    logging.logged = results["logged"]
    logging.progress = results["progress_bar"]
    if stage in trainer._eval:
        trainer._eval[stage].results = results["results"]
    if results["predictions"] is not None:
        trainer._eval["predict"].predictions = results["predictions"]
    for i, state in results["callbacks"].items():
        trainer.callbacks[i].load_state_dict(state)
    return [] if stage == "fit" else [None] * results["num_loaders"]
