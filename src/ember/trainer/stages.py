"""One stage of a Trainer ('fit', 'validate', 'test', 'predict') set up, run and torn down in this
process: data, callbacks, hooks, checkpoint loading, optimizers, and the engine run."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.datamodule import DataModule
from ember.module import Module, attach_trainer
from ember.trainer import data as data_utils
from ember.trainer.arguments import check_state_keys, checkpoints_last
from ember.trainer.fit_report import report_fit_end
from ember.trainer.hooks import Dispatch, overrides
from ember.trainer.logging import log_hyperparams
from ember.trainer.optimization import parse_optimizers
from ember.trainer.preemption import Preempted
from ember.trainer.profiling import setup_stage
from ember.trainer.stepping import StepOptimizer
from ember.trainer.views import RunningStage, TrainerFn

#: ``trainer.state.stage`` from a stage's start (its ``setup``) to its end, as Lightning
STAGE_OF = {
    "fit": RunningStage.TRAINING,
    "validate": RunningStage.VALIDATING,
    "test": RunningStage.TESTING,
    "predict": RunningStage.PREDICTING,
}


def run_stage_here(
    trainer: Any, stage: str, model: Any, datamodule: Any, ckpt_path: Any = None, **loaders: Any
) -> list[Any]:
    """Set up, run and tear down one stage ('fit', 'validate', 'test', 'predict')."""
    first = "train_dataloaders" if stage == "fit" else "dataloaders"
    if isinstance(loaders.get(first), DataModule) and datamodule is None:  # as Lightning: fit(model, dm)
        datamodule, loaders[first] = loaders[first], None
    if datamodule is not None and any(v is not None for v in loaders.values()):
        raise ValueError(f"trainer.{stage}(): pass dataloaders or a datamodule, not both")
    if datamodule is not None and not callable(getattr(datamodule, "setup", None)):
        raise TypeError(f"datamodule must be an ember.DataModule (or provide setup()), got {type(datamodule).__name__}")
    trainer.model = model
    trainer.datamodule = datamodule
    attach_trainer(model, trainer)
    trainer.fit_progress.request_stop(False)
    trainer._handled_exception = None
    if datamodule is not None:
        datamodule.trainer = trainer
    extra = model.configure_callbacks() if callable(getattr(model, "configure_callbacks", None)) else []
    callbacks = _merge_callbacks(trainer, extra)
    dispatch = Dispatch(trainer, model, callbacks)
    trainer._stage_dispatch = dispatch
    _prepare_data(trainer, datamodule, model)
    if stage == "fit":  # before setup: log_dir, and so ModelCheckpoint's dirpath, follow a resumed run
        trainer._checkpoint.choose_run_folder(ckpt_path)
    fn = TrainerFn(stage)  # as Lightning: setup/teardown get stage=TrainerFn.X (a str, == "fit")
    if datamodule is not None:  # as Lightning: the datamodule's, the callbacks', then the module's
        datamodule.setup(stage=fn)
    for hook in dispatch.calls("setup"):
        hook(stage=fn)
    configure_model = getattr(model, "configure_model", None)
    if callable(configure_model):  # as Lightning: build (or shard) layers here, after setup
        configure_model()
    trainer.precision_plugin.convert_module(model)  # dtype before a distributed strategy wraps or shards it
    trainer.strategy.setup_module(model)
    path = trainer._checkpoint.resolve(ckpt_path, stage)
    checkpoint = trainer._checkpoint.load(path) if path is not None else None
    if checkpoint is not None:
        trainer._checkpoint.restore_model(checkpoint)
        if stage != "fit":
            trainer.strategy.restored()
    anomaly = torch.autograd.set_detect_anomaly(True) if trainer.detect_anomaly else None
    profiled = setup_stage(trainer, stage)  # None without a profiler (ember.trainer.profiling)
    ok = False
    try:
        if stage == "fit":
            _fit(trainer, model, dispatch, loaders["train_dataloaders"], loaders["val_dataloaders"], checkpoint)
            out: list[Any] = []
        else:
            out = _evaluate(trainer, stage, model, dispatch, loaders["dataloaders"])
        ok = True
        return out
    finally:
        try:
            if anomaly is not None:
                torch.autograd.set_detect_anomaly(False)
            if datamodule is not None:
                datamodule.teardown(stage=fn)
            for hook in dispatch.calls("teardown"):
                hook(stage=fn)
        finally:
            if profiled is not None:  # as Lightning: the report once the stage is torn down
                profiled(ok)


def _prepare_data(trainer: Any, datamodule: Any, model: Any) -> None:
    """The datamodule's, then the module's ``prepare_data`` (as Lightning: once per machine, on local
    rank zero, or only on global rank zero when its ``prepare_data_per_node`` is False, while the
    other ranks wait)."""
    objs = [obj for obj in (datamodule, model) if obj is not None and callable(getattr(obj, "prepare_data", None))]
    if not objs:
        return
    for obj in objs:
        rank = trainer.local_rank if getattr(obj, "prepare_data_per_node", True) else trainer.global_rank
        if rank == 0:
            obj.prepare_data()
    trainer.strategy.barrier("prepare_data")


def _merge_callbacks(trainer: Any, extra: Any) -> list[Any]:
    """As Lightning: the module's ``configure_callbacks()`` replace the Trainer's callbacks of their type
    (or, when none has it, of a class it derives from other than ``Callback``); ModelCheckpoints go
    last; the merged list becomes ``trainer.callbacks``."""
    extra = list(extra) if isinstance(extra, (list, tuple)) else ([extra] if extra else [])
    if not extra:
        return list(trainer.callbacks)
    present = {type(c) for c in trainer.callbacks} - {Callback}
    replaced: set[type] = set()
    for kind in {type(c) for c in extra}:
        replaced |= {kind} if kind in present else {t for t in present if issubclass(kind, t)}
    merged = checkpoints_last([c for c in trainer.callbacks if type(c) not in replaced] + extra)
    check_state_keys(merged)
    trainer.callbacks = merged
    return list(merged)


def _fit(trainer: Any, model: Any, dispatch: Dispatch, train: Any, val: Any, checkpoint: dict[str, Any] | None) -> None:
    trainer._fit_loop.sources = {"train": train, "validate": val}  # asked again to reload them (data.py)
    train = data_utils.find_loaders("train", train, trainer.datamodule, model)
    if train is None:
        raise ValueError(
            "trainer.fit() needs training data: pass train_dataloaders, a datamodule, or define train_dataloader()"
        )
    train_data, n_train, trainer.num_training_batches = data_utils.train_data(trainer, train)
    if trainer.num_training_batches == 0:
        warnings.warn("limit_train_batches gives 0 batches: nothing to train", stacklevel=3)
        return
    trainer._val_check_batch = data_utils.val_check_batch(
        trainer.val_check_interval, n_train, trainer.check_val_every_n_epoch
    )
    validates = callable(getattr(model, "validation_step", None)) and not (
        isinstance(model, Module) and not overrides(model, "validation_step", Module)
    )
    if validates and trainer.limits["validate"] == 0:  # as Lightning: val_dataloader() is not even asked for
        val_loaders = None
    elif validates:
        val_loaders = data_utils.find_loaders("validate", val, trainer.datamodule, model)
    else:  # as Lightning: a loader without its step is skipped, with a warning
        if val is not None:
            warnings.warn(
                f"val_dataloaders were given but {type(model).__name__} has no validation_step(): validation is skipped",
                stacklevel=3,
            )
        val_loaders = None
    trainer._val_loaders, trainer._val_counts = data_utils.eval_data(trainer, val_loaders, "validate", fitting=True)

    automatic = getattr(model, "automatic_optimization", True) is not False
    trainer.optimizers, trainer.lr_scheduler_configs = parse_optimizers(model.configure_optimizers(), automatic=automatic)
    if not trainer.optimizers:
        warnings.warn("configure_optimizers() returned None: training runs without an optimizer", stacklevel=3)
    trainer.step_optimizers = [StepOptimizer(o) for o in trainer.optimizers]
    trainer.fit_progress.start(distributed=trainer.world_size > 1)
    trainer._fit_loop.resume = None
    trainer._logging.reset_views()
    trainer.train_engine.state.max_epochs = None  # every fit() is a new run of the engine ...
    trainer.train_engine.state.max_iters = None
    if checkpoint is not None:  # ... unless it continues a checkpoint
        trainer._checkpoint.restore_training_state(checkpoint)
    if trainer.is_global_zero:
        log_hyperparams(trainer.loggers, model, trainer.datamodule)
    val_loop = trainer._eval["validate"]
    if validates:
        val_loop.attach(model, dispatch)
    trainer._fit_loop.attach(model, dispatch, train_data, n_train)
    trainer._fitting = True
    model.train()
    status = "failed"
    trainer._signals.install()  # the Trainer's one watch: the train loop's handlers hold it from attach()
    try:
        if trainer.max_epochs == 0:  # as Lightning: the fit hooks and the sanity check, no training
            trainer._fit_loop.fit_without_training()
        else:
            trainer.train_engine.run(
                trainer._fit_loop.data, max_epochs=trainer.max_epochs or 2**62, epoch_length=n_train
            )
        status = "success"
    except (KeyboardInterrupt, Preempted):
        status = "interrupted"
        raise
    finally:
        trainer._signals.uninstall()
        trainer._fitting = False
        trainer._fit_loop.detach()
        val_loop.detach()
        for lg in trainer.loggers:
            lg.finalize(status)
        report_fit_end(trainer, status)


def _evaluate(trainer: Any, stage: str, model: Any, dispatch: Dispatch, loaders: Any) -> list[Any]:
    found = data_utils.find_loaders(stage, loaders, trainer.datamodule, model)
    loader_list, counts = data_utils.eval_data(trainer, found, stage)
    if not loader_list:
        raise ValueError(
            f"trainer.{stage}() needs data: pass dataloaders, a datamodule, or define {data_utils.LOADER_METHODS[stage]}()"
        )
    loop = trainer._eval[stage]
    trainer._logging.reset_views()
    loop.attach(model, dispatch)
    status = "failed"
    try:
        loop.run(loader_list, counts)
        status = "success"
    finally:
        loop.detach()
        for lg in trainer.loggers:  # as Lightning: every stage closes its files (a later log reopens them)
            lg.finalize(status)
    return loader_list


def model_for(trainer: Any, model: Any, stage: str) -> Any:
    """The model a stage runs: the one given, else the trainer's last (a TypeError without either,
    as Lightning)."""
    if model is None:
        if trainer.model is None:
            raise TypeError(f"trainer.{stage}() needs a model: pass one, or call fit() first")
        return trainer.model
    return model


def eval_ckpt_path(trainer: Any, stage: str, model_given: bool, ckpt_path: Any) -> Any:
    """The ``ckpt_path`` an evaluation stage loads. As Lightning: called without a model and without
    a ``ckpt_path`` after a stage ran, it is ``"best"``, with a warning saying so. Unlike Lightning,
    when no ModelCheckpoint has saved a best file (none configured, ``fast_dev_run``, no ``fit`` yet)
    the current weights are evaluated, with a warning, where Lightning raises."""
    if model_given or ckpt_path is not None or trainer.model is None:
        return ckpt_path
    cb = trainer.checkpoint_callback
    if cb is not None and cb.best_model_path:
        warnings.warn(
            f"`.{stage}(ckpt_path=None)` was called without a model. The best model of the previous `fit` call "
            f"will be used. You can pass `.{stage}(ckpt_path='best')` to use the best model or "
            f"`.{stage}(ckpt_path='last')` to use the last model. If you pass a value, this warning will be silenced.",
            stacklevel=4,
        )
        return "best"
    warnings.warn(
        f"`.{stage}(ckpt_path=None)` was called without a model and no ModelCheckpoint of this trainer saved a best "
        f"checkpoint: the model's current weights are used. Pass `.{stage}(ckpt_path=...)` to load a checkpoint; "
        "passing the model silences this warning.",
        stacklevel=4,
    )
    return None


def check_model(model: Any, stage: str, required: Sequence[str]) -> None:
    """``model`` is an ``nn.Module`` that defines the methods ``stage`` calls."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"trainer.{stage}() needs a torch.nn.Module (e.g. an ember.Module), got {type(model).__name__}")
    for name in required:
        if not callable(getattr(model, name, None)) or (
            isinstance(model, Module) and not overrides(model, name, Module)
        ):
            raise TypeError(
                f"{type(model).__name__} cannot be used with trainer.{stage}(): it does not define {name}()"
            )
