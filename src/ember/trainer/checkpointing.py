"""What a Trainer checkpoint holds, and how a run continues from one exactly.

Saving (``Trainer.save_checkpoint``, ``ModelCheckpoint``, preemption) dumps model, optimizers,
schedulers, scaler, loop progress (including the position inside the epoch and any gradients
accumulated since the last optimizer step), callback and logger states, hyperparameters and RNG
states — all plain values and tensors (see :mod:`ember.checkpoint.format`).

Resuming (``fit(ckpt_path=...)``) restores the model before the optimizers are built, the
optimizer/scheduler/scaler/callback states after, and the loop position and RNG states when the
first epoch starts. For a mid-epoch checkpoint, the epoch's data order is rebuilt from the RNG
states recorded when that epoch started, the batches already consumed are skipped, and then the
RNG states of the checkpoint moment are put back, so the resumed run sees the same batches, the
same dropout masks and the same updates as a run that was never interrupted. This holds for
map-style datasets with the standard samplers (shuffled or not, any ``num_workers``); an
``IterableDataset`` is resumed exactly when it provides ``state_dict``/``load_state_dict``,
otherwise the interrupted epoch restarts its data, with a warning.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from ember.checkpoint import io as ckpt_io
from ember.checkpoint import new_checkpoint
from ember.checkpoint.format import plain_data
from ember.checkpoint.loading import adapt_state_dict
from ember.engine import Events


def loader_generator(loader: Any) -> torch.Generator | None:
    """The generator that decides a DataLoader's shuffling, if it has its own."""
    for source in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None), loader):
        gen = getattr(source, "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
    return None


def epoch_start_rng(loader: Any) -> dict[str, Any]:
    """The RNG states that decide an epoch's data order (taken just before its iterator is made)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    gen = loader_generator(loader)
    if gen is not None:
        state["loader_generator"] = gen.get_state()
    return state


def restore_epoch_start_rng(loader: Any, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gen = loader_generator(loader)
    if gen is not None and "loader_generator" in state:
        gen.set_state(state["loader_generator"])


def _own_checkpoint_dirs(trainer: Any) -> list[str]:
    """Where this trainer's checkpoints go: its ModelCheckpoints' directories, or
    ``<log_dir>/checkpoints`` (the default one, and where a stop signal's checkpoint goes)."""
    dirs = [os.fspath(cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath]
    return list(dict.fromkeys(dirs)) or [os.path.join(trainer.log_dir, "checkpoints")]


class CheckpointConnector:
    """Dumps and restores the Trainer's state (Lightning's ``_checkpoint_connector``)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        #: whether the fit being set up continues the run whose checkpoint it loads (its loggers then
        #: go on in that run's folder, see :meth:`choose_run_folder`)
        self.continuing = False
        self.loaded_path: str | None = None  # the file the running (or last) stage loaded: trainer.ckpt_path

    # ------------------------------------------------------------------ saving

    def dump(self, weights_only: bool = False, sharded: bool = False) -> dict[str, Any]:
        """The checkpoint dict. Every process calls this under a strategy whose weights must be
        gathered (FSDP: ``strategy.collective_state_dict``); ``sharded`` keeps each rank's shards."""
        tr = self.trainer
        strategy = tr.strategy
        model = tr.model
        if model is None:
            raise RuntimeError("nothing to save: the trainer has no model yet (call fit/validate/test first)")
        ckpt = new_checkpoint()
        ckpt["epoch"] = tr.current_epoch
        ckpt["global_step"] = tr.global_step
        ckpt["state_dict"] = strategy.model_state_dict(model, sharded=sharded)
        if sharded:
            ckpt["sharded"] = True
        hparams = getattr(model, "hparams", None)
        if isinstance(hparams, dict) and hparams:
            ckpt["hyper_parameters"] = dict(hparams)
        dm = tr.datamodule
        if dm is not None and isinstance(getattr(dm, "hparams", None), dict) and dm.hparams:
            ckpt["datamodule_hyper_parameters"] = dict(dm.hparams)
        if not weights_only:
            ckpt["loops"] = {"fit": tr._fit_loop.state_dict()}
            ckpt["optimizer_states"] = [strategy.optimizer_state_dict(model, o, sharded=sharded) for o in tr.optimizers]
            ckpt["lr_schedulers"] = [c.scheduler.state_dict() for c in tr.lr_scheduler_configs]
            ckpt["precision"] = tr.precision_plugin.state_dict()
            ckpt["callbacks"] = {cb.state_key: state for cb in self._stateful_callbacks() if (state := cb.state_dict())}
            self._write_pending_row()
            ckpt["loggers"] = [
                lg.state_dict() if callable(getattr(lg, "state_dict", None)) else {} for lg in tr.loggers
            ]
            if dm is not None and callable(getattr(dm, "state_dict", None)):
                ckpt["datamodule"] = dm.state_dict()
            ckpt["rng_states"] = tr._fit_loop.training_rng_states()  # not validation's, if it is running
            for lg in tr.loggers:  # everything logged up to this checkpoint is on disk before it is
                lg.save()
        dispatch = tr._stage_dispatch
        if dispatch is not None:
            dispatch.call("on_save_checkpoint", ckpt)
        return plain_data(ckpt)  # a value that would not load with weights_only=True fails here, naming it

    def _write_pending_row(self) -> None:
        """Saved from ``on_train_batch_end``: hand this batch's step row to the loggers now (it would
        be written right after the hook, if due), so that it is on disk with the checkpoint; the
        resumed run starts after this batch and never logs it (issue: logs across a crash)."""
        tr = self.trainer
        progress = tr.fit_progress
        logging = tr._logging
        store = logging.stores.get("train")
        if (
            store is not None
            and store.step_dirty
            and logging.ctx.store is store
            and tr.train_engine.last_event_name == Events.ITERATION_COMPLETED
            and progress.batch_end_pending(tr.train_engine.state.iteration)
            and (progress.batches_stepped + 1) % tr.log_every_n_steps == 0  # the fit loop's rule
        ):
            logging.flush_steps(progress.batches_stepped, progress.current_epoch)

    def save(self, path: str | os.PathLike, weights_only: bool = False) -> None:
        """Every process calls this; the strategy writes (rank zero, or every rank's shards)."""
        strategy = self.trainer.strategy
        strategy.save_checkpoint(self.dump(weights_only, sharded=strategy.saves_sharded), path)

    def _stateful_callbacks(self) -> list[Any]:
        dispatch = self.trainer._stage_dispatch
        callbacks = dispatch.callbacks if dispatch is not None else self.trainer.callbacks
        return [cb for cb in callbacks if callable(getattr(cb, "state_dict", None)) and hasattr(cb, "state_key")]

    # ------------------------------------------------------------------ which run folder

    def choose_run_folder(self, ckpt_path: Any) -> None:
        """Before callbacks are set up for ``fit(ckpt_path=...)``: decide whether this fit continues
        the checkpoint's run, and if so make the loggers write to that run's folder, so that
        ``log_dir`` (and so ModelCheckpoint's default ``dirpath``) is the folder the checkpoint came
        from and logs, checkpoints and top-k tracking go on there (docs: checkpoints and exact resume).

        - a path inside a logger's ``<root>/version_K`` folder: loggers whose version was not given
          continue in ``version_K`` (the first logger decides whether the run continues);
        - ``"last"``: a run's own checkpoint by definition; with the default ``dirpath`` the newest
          ``version_K`` of the first logger that holds a checkpoint is continued (see
          :meth:`resolve`); with a ModelCheckpoint ``dirpath``, the loggers follow the checkpoint;
        - any other file (a downloaded or copied checkpoint): a new run folder, as in Lightning.
        """
        tr = self.trainer
        self.continuing = False
        if ckpt_path is None or ckpt_path == "best" or not isinstance(ckpt_path, (str, os.PathLike)):
            return
        if ckpt_path == "last":
            self.continuing = True
            if any(cb.dirpath for cb in tr.checkpoint_callbacks):  # "last" looks there, not in a version folder
                return
            first = tr.logger
            folder = first.last_run_dir() if callable(getattr(first, "last_run_dir", None)) else None
            if folder is None:
                return
            path = folder
        elif ckpt_io.is_url(ckpt_path):
            return
        else:
            path = os.fspath(ckpt_path)
        continued = [lg.continue_run(path) if callable(getattr(lg, "continue_run", None)) else False for lg in tr.loggers]
        self.continuing = self.continuing or bool(continued and continued[0])

    # ------------------------------------------------------------------ which file

    def resolve(self, ckpt_path: str | os.PathLike | None, stage: str) -> str | None:
        """Turn ``"last"``/``"best"``/a path into a file path (None: nothing to load).

        ``"last"`` is the newest ``*.ckpt`` where this run's own checkpoints go: the ``dirpath`` of
        each of its ``ModelCheckpoint`` callbacks (by default ``<log_dir>/checkpoints``, where
        ``log_dir`` is the run folder :meth:`choose_run_folder` chose), or
        ``<log_dir>/checkpoints`` (where a stop signal's checkpoint goes) without one. Nothing else
        under ``default_root_dir`` is considered. None found: ``fit`` starts from scratch with a
        warning, other stages raise (they would silently evaluate an untrained model).
        """
        self._stage = stage  # what the file that load() reads next must be able to do
        self.loaded_path = None
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            cb = self.trainer.checkpoint_callback
            if cb is None or not cb.best_model_path:
                raise ckpt_io.CheckpointError(
                    f'ckpt_path="best" ({stage}): this trainer knows no best checkpoint. "best" is the best file '
                    "a ModelCheckpoint of this Trainer saved during fit(); pass a checkpoint's path instead"
                )
            return cb.best_model_path
        if ckpt_path == "last":
            # distributed: every rank resumes from the file rank zero found (a new one may be appearing)
            found = self.trainer.strategy.broadcast(self._newest_checkpoint() or "") or None  # (None is not broadcast)
            if found is None:
                where = " or ".join(repr(d) for d in _own_checkpoint_dirs(self.trainer))
                if stage != "fit":
                    raise ckpt_io.CheckpointError(
                        f'ckpt_path="last" ({stage}): no checkpoint found in {where}, where this trainer\'s checkpoints go; '
                        f"refusing to {stage} an untrained model. Pass the checkpoint's path"
                    )
                warnings.warn(
                    f'ckpt_path="last": no checkpoint found in {where}, where this run\'s checkpoints go; starting from '
                    "scratch. To continue another run, pass its checkpoint's path",
                    stacklevel=4,
                )
            return found
        if not isinstance(ckpt_path, (str, os.PathLike)):
            raise TypeError(f'ckpt_path must be a path, "last", "best" or None; got {ckpt_path!r}')
        return os.fspath(ckpt_path)

    def _newest_checkpoint(self) -> str | None:
        """The newest ``*.ckpt`` (a regular file, or a sharded checkpoint's directory) in this run's own
        checkpoint directories (see :meth:`resolve`), or None."""
        found: list[tuple[str, float]] = []
        for directory in _own_checkpoint_dirs(self.trainer):
            if ckpt_io.is_url(directory):  # s3://, memory://, ...: ask the filesystem
                found += ckpt_io.listed_with_mtime(directory)
                continue
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.endswith(".ckpt") and not entry.name.startswith("."):
                    try:
                        found.append((os.path.join(directory, entry.name), entry.stat().st_mtime))
                    except OSError:  # a dangling symlink, or gone meanwhile
                        continue
        return max(found, key=lambda item: item[1])[0] if found else None

    # ------------------------------------------------------------------ restoring

    def load(self, path: str) -> dict[str, Any]:
        """Read the checkpoint at ``path`` (validated, see ``ember.checkpoint``), check that it can do
        what the stage :meth:`resolve` was last called for needs (weights; for ``fit``, the training
        state too), and say, on rank zero, which file it was."""
        checkpoint = self.trainer.strategy.load_checkpoint(path, map_location=self.trainer.root_device)
        name = os.fspath(path)
        self.loaded_path = name
        if "state_dict" not in checkpoint and not isinstance(checkpoint.get("sharded"), dict):
            raise ckpt_io.CheckpointError(f"{name!r} holds no model weights ('state_dict'): nothing to load")
        if getattr(self, "_stage", None) == "fit" and "loops" not in checkpoint:
            raise ckpt_io.CheckpointError(
                f"{name!r} holds weights only (save_weights_only=True): it cannot resume training. Load its weights "
                "with YourModule.load_from_checkpoint(...) and call fit() without ckpt_path"
            )
        if self.trainer.is_global_zero:
            shown = path if ckpt_io.is_url(path) else os.path.abspath(path)
            progress = [f"{k} {checkpoint[k]}" for k in ("epoch", "global_step") if k in checkpoint]
            print(f"ember: loaded checkpoint {shown!r}" + (f" ({', '.join(progress)})" if progress else ""))
        return checkpoint

    def restore_model(self, checkpoint: dict[str, Any]) -> None:
        """Every stage with a ``ckpt_path``, in Lightning's order: the module's ``on_load_checkpoint``
        (it may still edit the checkpoint, e.g. rename weights), the weights, the datamodule's state,
        then each callback's ``on_load_checkpoint`` and its ``load_state_dict``."""
        tr = self.trainer
        model = tr.model
        hook = getattr(model, "on_load_checkpoint", None)
        if callable(hook):
            hook(checkpoint)
        if "state_dict" not in checkpoint:
            raise ValueError("the checkpoint holds no model weights ('state_dict')")
        state = checkpoint["state_dict"]
        if not checkpoint.get("sharded"):  # a sharded checkpoint's weights are read in place by the strategy
            state = adapt_state_dict(model, state)
        tr.strategy.load_model_state_dict(model, state)
        dm = tr.datamodule
        if dm is not None and "datamodule" in checkpoint and callable(getattr(dm, "load_state_dict", None)):
            dm.load_state_dict(checkpoint["datamodule"])
        dispatch = tr._stage_dispatch
        if dispatch is not None:
            calls = dispatch.calls("on_load_checkpoint")  # the callbacks', then the module's (which ran first)
            for fn in calls[:-1] if dispatch.module_hook("on_load_checkpoint") is not None else calls:
                fn(checkpoint)
        saved_callbacks = checkpoint.get("callbacks", {})
        for cb in self._stateful_callbacks():
            if cb.state_key in saved_callbacks:
                cb.load_state_dict(saved_callbacks[cb.state_key])

    def restore_training_state(self, checkpoint: dict[str, Any]) -> None:
        """``fit`` only, after configure_optimizers: optimizers, schedulers, scaler, loggers and the loop
        (:meth:`restore_model` did the weights, the datamodule and the callbacks)."""
        tr = self.trainer
        if "loops" not in checkpoint:
            raise ValueError("this checkpoint holds weights only (save_weights_only=True): it cannot resume training")
        states = checkpoint.get("optimizer_states", [])
        if len(states) != len(tr.optimizers):
            raise ValueError(
                f"the checkpoint has {len(states)} optimizer states but configure_optimizers() gave {len(tr.optimizers)}"
            )
        for i, (opt, state) in enumerate(zip(tr.optimizers, states)):
            tr.strategy.load_optimizer_state_dict(tr.model, opt, state, index=i)
        scheds = checkpoint.get("lr_schedulers", [])
        if len(scheds) != len(tr.lr_scheduler_configs):
            raise ValueError(
                f"the checkpoint has {len(scheds)} scheduler states but configure_optimizers() gave {len(tr.lr_scheduler_configs)}"
            )
        for cfg, state in zip(tr.lr_scheduler_configs, scheds):
            cfg.scheduler.load_state_dict(state)
        tr.precision_plugin.load_state_dict(checkpoint.get("precision", {}))
        for lg, state in zip(tr.loggers, checkpoint.get("loggers", []) if self.continuing else []):
            if state and callable(getattr(lg, "load_state_dict", None)):  # the run goes on: so does its log
                lg.load_state_dict(state)
        tr._fit_loop.load_state_dict(checkpoint["loops"]["fit"], checkpoint.get("rng_states"))
        tr.strategy.restored()
