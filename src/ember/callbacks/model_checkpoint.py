"""``ModelCheckpoint``: save checkpoints during fit, keep the best ``save_top_k`` by a monitored
metric, and optionally ``last.ckpt`` (Lightning's arguments and attributes).

Files are written atomically and an old top-k file is deleted only after its replacement is in
place (see :mod:`ember.checkpoint.topk`); the checkpoint a run resumed from (``trainer.ckpt_path``)
is never deleted, as in Lightning. Its own bookkeeping is saved in every checkpoint, so a resumed
run keeps pruning the same files. That bookkeeping is data from a file: a restored path is used
only if it resolves directly inside this callback's ``dirpath`` and has a name this callback gives
its files (its ``filename`` or ``CHECKPOINT_NAME_LAST`` template, ``-vN`` and ``FILE_EXTENSION``);
any other is ignored with a warning, so a downloaded checkpoint cannot make Ember delete or
overwrite a file.

In a distributed run rank zero decides and writes, then sends its bookkeeping (``best_model_path``,
``best_model_score``, ...) to the other ranks, so every rank reports the same files.
"""

from __future__ import annotations

import datetime
import math
import os
import time
import warnings
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.callbacks.checkpoint_names import fill, local_dirpath, name_pattern
from ember.callbacks.checkpoint_schedule import (
    check_triggers,
    missing_monitor_message,
    saves_at_train_epoch_end,
    validation_follows,
)
from ember.checkpoint import io as ckpt_io
from ember.checkpoint.monitor import check_mode
from ember.checkpoint.topk import TopK, foreign_reason
from ember.engine.events import Priority
from ember.io.atomic import remove_stale_temporaries


class ModelCheckpoint(Callback):
    """Save a checkpoint every ``every_n_epochs`` epochs (default 1), every ``every_n_train_steps``
    optimizer steps, or every ``train_time_interval`` (one of the three); keep the ``save_top_k``
    best by ``monitor`` (the latest ones without a monitor).

    As Lightning 2.6, a step- or time-triggered save waits for the end of the next validation when
    ``monitor`` is not logged yet (a metric only validation logs), or, under automatic
    optimization, when it falls on an epoch's last batch and that epoch's validation follows (the
    logged value is about to be replaced). A ``monitor`` missing at a save is a warning while no
    validation has run in this fit (no top-k file is written), an error after.

    ``save_last=True`` also writes ``last.ckpt`` at each of those saves, and at the end of training
    if none was written; ``save_on_exception=True`` writes a checkpoint named by ``filename`` when
    fit raises. A file name that is taken gets ``-v1``, ``-v2``, ... (``enable_version_counter``), so
    a second run into the same folder writes ``last-v1.ckpt``. The class attributes
    ``CHECKPOINT_NAME_LAST`` (a template, e.g. ``"{epoch}-last"``) and ``FILE_EXTENSION`` can be
    changed, on the class or on an instance, as in Lightning.

    Example::

        ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=3, save_last=True,
                        filename="{epoch}-{val_loss:.3f}")
    """

    # After every other callback, EarlyStopping included (as in Lightning): a checkpoint must hold
    # the state those callbacks reach at this moment, or a resumed run would redo or miss a decision.
    priority = Priority.EARLY_STOPPING - 1
    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str = "{epoch}-{step}",
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: Any = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"dirpath must be a path or None, got {dirpath!r}")
        if not isinstance(filename, str) or not filename:
            raise ValueError(f"filename must be a non-empty format string, got {filename!r}")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"monitor must be a metric name or None, got {monitor!r}")
        check_mode(mode)  # with or without a monitor, as Lightning
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise ValueError(f"save_top_k={save_top_k} needs a monitor to rank checkpoints; without one use -1, 0 or 1")
        self.topk = TopK(save_top_k, mode if monitor is not None else "max")
        self.dirpath = local_dirpath(dirpath)
        self.filename = filename[: -len(".ckpt")] if filename.endswith(".ckpt") else filename
        self.monitor = monitor
        self.mode = mode
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self.every_n_train_steps, self.every_n_epochs, self.train_time_interval = check_triggers(
            every_n_train_steps, every_n_epochs, train_time_interval
        )
        self.save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = bool(enable_version_counter)
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.last_model_path = ""
        self.kth_best_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._last_step_saved = 0  # the global step of the last file written (none at step 0, as Lightning)
        self._last_checkpoint_saved = ""  # any file this callback wrote (Lightning: last.ckpt at train end if none)
        self._last_time = time.monotonic()
        self._deferred = False  # a step/time save waits for the end of the next validation
        self._validated = False  # a validation ran in this fit: a missing monitor is an error from now on
        self._stale: list[str] = []  # restored files a stopped run was about to delete (see on_train_start)
        self._bind_topk()

    def _bind_topk(self) -> None:
        """Tell the top-k where its files are and what they are called (what restored paths must match)."""
        self.topk.directory = self.dirpath
        self.topk.name_ok = self.is_own_name

    def is_own_name(self, name: str) -> bool:
        """Whether ``name`` (a file name, no directory) is one this callback gives its top-k files:
        its ``filename`` template filled with any values, an optional ``-vN``, and ``FILE_EXTENSION``."""
        return self._pattern(self.filename).fullmatch(name) is not None

    def _is_last_name(self, name: str) -> bool:
        return self._pattern(self.CHECKPOINT_NAME_LAST).fullmatch(name) is not None

    def _pattern(self, template: str) -> Any:
        return name_pattern(
            template, self.auto_insert_metric_name, self.FILE_EXTENSION, self.CHECKPOINT_JOIN_CHAR,
            self.CHECKPOINT_EQUALS_CHAR,
        )  # fmt: skip

    @property
    def state_key(self) -> str:
        """Lightning's key of this callback's state in a checkpoint: its monitor, mode and save triggers."""
        every = self.train_time_interval
        key = {"monitor": self.monitor, "mode": self.mode, "every_n_train_steps": self.every_n_train_steps or 0,
               "every_n_epochs": self.every_n_epochs or 0,
               "train_time_interval": None if every is None else datetime.timedelta(seconds=every)}  # fmt: skip
        return f"ModelCheckpoint{key!r}"

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        """The kept top-k files with their scores (empty without a monitor, as in Lightning)."""
        return {p: torch.tensor(s) for p, s in self.topk.saved.items()} if self.monitor else {}

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Choose ``dirpath`` (``<log_dir>/checkpoints`` unless given) and clear a crashed run's temporaries."""
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.log_dir, "checkpoints")
        self._bind_topk()
        if stage == "fit":
            self._deferred = self._validated = False
            if trainer.is_global_zero:
                remove_stale_temporaries(self.dirpath)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the ``train_time_interval`` clock; delete the files a resumed run was about to delete
        when it stopped (never the one resumed from)."""
        self._last_time = time.monotonic()
        self._protect_resumed(trainer)
        stale, self._stale = self._stale, []
        if trainer.is_global_zero:
            for old in stale:
                if old not in self.topk.saved and not self.topk.is_protected(old):
                    ckpt_io.remove(old)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save every ``every_n_train_steps`` optimizer steps or ``train_time_interval`` (or, see the
        class docstring, at the end of the next validation)."""
        every = self.every_n_train_steps
        due = bool(every) and trainer.global_step % every == 0  # (step 0 too, as Lightning: it may defer)
        if self.train_time_interval is not None:
            now = time.monotonic()
            if now - self._last_time >= self.train_time_interval:
                self._last_time, due = now, True  # as Lightning: the clock restarts when due, saved or deferred
        if due:
            self._save_or_defer(trainer, pl_module, batch_idx)

    def _save_or_defer(self, trainer: Any, pl_module: Any, batch_idx: int) -> None:
        """A step/time-triggered save, in Lightning's order (under manual optimization it checks
        for a save at this step first and has no last-batch rule)."""
        manual = getattr(pl_module, "automatic_optimization", True) is False
        if self.monitor is not None and not (manual and self._saved_at_this_step(trainer)):
            stale = not manual and validation_follows(trainer, batch_idx, self.save_on_train_epoch_end)
            if stale or self.monitor not in self._metrics(trainer):
                self._deferred = True
                return
        self._save(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Save every ``every_n_epochs`` epochs when there is no validation to wait for."""
        if self._save_at_epoch_end(trainer) and self._epoch_due(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Save every ``every_n_epochs`` epochs after the validation that logged the monitored metric,
        or make the step/time-triggered save that waited for it."""
        if trainer.sanity_checking or not trainer.fitting:
            return
        self._validated = True
        if self._save_at_epoch_end(trainer) or self._saved_at_this_step(trainer):
            return  # (a deferred save keeps waiting, as Lightning)
        if self._deferred or self._epoch_due(trainer):
            self._deferred = False
            self._save(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """As Lightning: with ``save_last``, write ``last.ckpt`` now if this run wrote no checkpoint
        (``every_n_epochs=0``, ``save_top_k=0``, or no save was due)."""
        if not self.save_last or self._last_checkpoint_saved or trainer.fast_dev_run:
            return
        metrics = self._metrics(trainer)
        self._write(trainer, metrics, None, None)
        self._share(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """With ``save_on_exception=True``: write a checkpoint named by ``filename`` (and ``last.ckpt``
        with ``save_last``) unless one was saved at this step or no step was taken, as Lightning. Rank zero writes alone:
        the other ranks may not have raised, so nothing here waits for them."""
        if not self.save_on_exception or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if trainer.global_step in (0, self._last_step_saved) or self.dirpath is None:  # (0: nothing trained)
            return
        if getattr(trainer.strategy, "collective_state_dict", False) and trainer.world_size > 1:
            warnings.warn("ModelCheckpoint(save_on_exception=True): a sharded model cannot be gathered after an "
                          "error on one process; no checkpoint was written", stacklevel=2)  # fmt: skip
            return
        self._last_step_saved = trainer.global_step
        if trainer.is_global_zero:
            metrics = self._metrics(trainer)
            path = self._free_path(self.format_checkpoint_name(metrics), ())
            self._write_files(trainer, None, 0.0, metrics, extra=path)
            if self.verbose:
                print(f"ModelCheckpoint: {type(exception).__name__} raised; saved {path}")

    def _save_at_epoch_end(self, trainer: Any) -> bool:
        return saves_at_train_epoch_end(trainer, self.save_on_train_epoch_end)

    def _saved_at_this_step(self, trainer: Any) -> bool:
        """As Lightning: no scheduled save at step 0, a second one at the same step, or in a fast_dev_run."""
        return bool(trainer.fast_dev_run) or trainer.global_step in (0, self._last_step_saved)

    def _epoch_due(self, trainer: Any) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # ------------------------------------------------------------------ saving

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None, prefix: str | None = None
    ) -> str:
        """The path (in ``dirpath``; the bare name while it is unknown) for these metrics and the
        ``filename`` template (default: this callback's), e.g. ``<dirpath>/epoch=3-step=120.ckpt``;
        ``ver`` appends ``-v<ver>``, ``prefix`` goes first. As Lightning's."""
        name = fill(filename or self.filename, metrics, self.auto_insert_metric_name, self.CHECKPOINT_EQUALS_CHAR)
        if prefix:
            name = f"{prefix}{self.CHECKPOINT_JOIN_CHAR}{name}"
        if ver is not None:
            name = f"{name}{self.CHECKPOINT_JOIN_CHAR}v{ver}"
        name += self.FILE_EXTENSION
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _free_path(self, path: str, reuse: Any) -> str:
        """``path``, or with ``-v1``, ``-v2``, ... while that file exists (unless it is in ``reuse``:
        a file of this run that is being replaced); as is with ``enable_version_counter=False``."""
        if not self._enable_version_counter:
            return path
        ext = self.FILE_EXTENSION
        stem = path[: len(path) - len(ext)]
        version = self.STARTING_VERSION
        candidate = path
        while candidate not in reuse and ckpt_io.exists(candidate):
            candidate = f"{stem}{self.CHECKPOINT_JOIN_CHAR}v{version}{ext}"
            version += 1
        return candidate

    def _save(self, trainer: Any) -> None:
        """A scheduled save: the top-k file if the score earns one, and ``last.ckpt``."""
        if self._saved_at_this_step(trainer):  # (a fast_dev_run writes no checkpoint, as Lightning documents)
            return
        metrics = self._metrics(trainer)
        score = self._score(metrics)
        top = score is not None and self.topk.accepts(score) if trainer.is_global_zero else False
        if getattr(trainer.strategy, "collective_state_dict", False):  # FSDP: all ranks gather the weights
            top = trainer.strategy.broadcast(top)
        if top or self.save_last:
            self._last_step_saved = trainer.global_step  # (only a written file counts, as Lightning)
            self._write(trainer, metrics, score if top else None, None)
        self._share(trainer)

    def _write(self, trainer: Any, metrics: dict[str, Any], score: float | None, extra: str | None) -> None:
        """Rank zero writes the top-k file (when ``score`` is not None) and ``last.ckpt``; under a
        strategy that gathers the weights (FSDP) the other ranks take part in the dump."""
        if not trainer.is_global_zero:
            if getattr(trainer.strategy, "collective_state_dict", False):
                self._dump(trainer)  # its part of the gathering; rank zero writes
            return
        self._protect_resumed(trainer)
        path = None
        if score is not None:
            path = self._free_path(self.format_checkpoint_name(metrics), self.topk.saved)
        self._write_files(trainer, path, score or 0.0, metrics, extra)

    def _metrics(self, trainer: Any) -> dict[str, Any]:
        """The logged metrics with this moment's ``epoch`` and ``step`` (what file names are filled with)."""
        metrics = dict(trainer.callback_metrics)
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        return metrics

    def _score(self, metrics: dict[str, Any]) -> float | None:
        """The value that ranks this checkpoint: the monitored one (NaN counts as the worst possible,
        as Lightning), or the step without a monitor (the latest is best). None: no top-k file, as
        ``save_top_k=0`` or a monitor not logged before any validation ran (a warning; an error after)."""
        if self.topk.k == 0:
            return None
        if self.monitor is None:
            return float(metrics["step"])
        if self.monitor not in metrics:
            message = missing_monitor_message(self.monitor, metrics)
            if self._validated:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
            return None
        score = float(metrics[self.monitor])
        return (math.inf if self.mode == "min" else -math.inf) if math.isnan(score) else score

    def _write_files(
        self, trainer: Any, path: str | None, score: float, metrics: dict[str, Any], extra: str | None = None
    ) -> None:
        """Dump the trainer's checkpoint into ``path`` (a new top-k file; None: not one), ``extra``
        (a file outside the top k) and, with ``save_last``, the last checkpoint."""
        before = self._bookkeeping()
        previous_last = self.last_model_path
        if self.save_last:
            last = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST)
            self.last_model_path = self._free_path(last, (previous_last,))
        checkpoint: dict[str, Any] = {}

        def dump_and_write() -> None:
            # runs with the new file booked: the checkpoint then knows the file it is written to (and
            # which files it displaces), so a run resumed from it keeps pruning exactly the right files
            nonlocal checkpoint
            try:
                if path is not None:
                    self._track_best(score)
                checkpoint = self._dump(trainer)
                for target in (path, extra):
                    if target is not None:
                        _save_file(checkpoint, target)
                        self._last_checkpoint_saved = target
            except BaseException:
                self._restore_bookkeeping(before)  # nothing was written
                raise

        if path is None:
            dump_and_write()
        else:
            self.topk.save(path, score, dump_and_write)
            if self.verbose:
                print(f"ModelCheckpoint: saved {path} ({self.monitor or 'step'}={score:.6g})")
        if self.save_last:
            _save_file(checkpoint, self.last_model_path)
            self._last_checkpoint_saved = self.last_model_path
            if previous_last and previous_last != self.last_model_path and not self.topk.is_protected(previous_last):
                ckpt_io.remove(previous_last)  # a templated name ("{epoch}-last") moved on

    def _dump(self, trainer: Any) -> dict[str, Any]:
        return trainer.dump_checkpoint(weights_only=self.save_weights_only)

    def _protect_resumed(self, trainer: Any) -> None:
        """As Lightning: the checkpoint this run resumed from is never deleted."""
        resumed = getattr(trainer, "ckpt_path", None)
        self.topk.protected = {resumed if ckpt_io.is_url(resumed) else os.path.abspath(resumed)} if resumed else set()

    def _track_best(self, score: float) -> None:
        best = self.topk.best()
        self.best_model_path = best or ""
        if self.monitor is None:  # as Lightning: without a monitor the best is the latest, with no score
            return
        self.current_score = torch.tensor(score)
        self.best_model_score = torch.tensor(self.topk.saved[best]) if best else None
        self.kth_best_model_path = self.topk.worst() or ""

    def _bookkeeping(self) -> tuple[Any, ...]:
        return (
            self.best_model_path, self.best_model_score, self.kth_best_model_path, self.last_model_path,
            self.current_score,
        )  # fmt: skip

    def _restore_bookkeeping(self, saved: tuple[Any, ...]) -> None:
        (self.best_model_path, self.best_model_score, self.kth_best_model_path, self.last_model_path,
         self.current_score) = saved  # fmt: skip

    def _share(self, trainer: Any) -> None:
        """Distributed: every rank takes rank zero's bookkeeping (one broadcast per save, never per step)."""
        if trainer.world_size <= 1:
            return
        mine = None
        if trainer.is_global_zero:
            mine = {
                "saved": dict(self.topk.saved),
                "paths": (self.best_model_path, self.kth_best_model_path, self.last_model_path, self._last_checkpoint_saved),
                "step": self._last_step_saved,  # every rank skips (or makes) the same saves
                "scores": tuple(None if t is None else float(t) for t in (self.best_model_score, self.current_score)),
            }
        got = trainer.strategy.broadcast(mine)
        if not trainer.is_global_zero:
            self.topk.saved = dict(got["saved"])
            self.best_model_path, self.kth_best_model_path, self.last_model_path, self._last_checkpoint_saved = got["paths"]
            self._last_step_saved = got["step"]
            self.best_model_score, self.current_score = (None if f is None else torch.tensor(f) for f in got["scores"])

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping a resumed run continues (which files it keeps, the best, the last)."""
        return {
            "monitor": self.monitor,
            "dirpath": self.dirpath,
            "topk": self.topk.state_dict(),
            "best_model_path": self.best_model_path,
            "best_model_score": None if self.best_model_score is None else float(self.best_model_score),
            "last_model_path": self.last_model_path,
            "kth_best_model_path": self.kth_best_model_path,
            "last_step_saved": self._last_step_saved,
            "deferred": self._deferred,  # (Lightning forgets a deferred save on resume; an exact resume keeps it)
            "validated": self._validated,
            "dropping": list(self.topk.dropping),  # out of the top k, deleted once the new file is in place
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the bookkeeping of a run that wrote to this ``dirpath``. Every restored path is
        checked first (see the module docstring): one that is not this callback's own is ignored with
        a warning naming the file and the field, and is never deleted or written."""
        if not isinstance(state, dict):
            raise ValueError(f"ModelCheckpoint state must be a dict, got {type(state).__name__}")
        if self.dirpath is None or state.get("dirpath") != self.dirpath:
            return  # another directory (or none chosen yet): start fresh bookkeeping, as Lightning does
        self._bind_topk()
        topk = state.get("topk", {})
        self.topk.load_state_dict(topk if isinstance(topk, dict) else {"saved": topk}, where="topk.saved")
        self.best_model_path = self._own_path(state.get("best_model_path", ""), "best_model_path")
        score = state.get("best_model_score")
        number = isinstance(score, (int, float)) and not isinstance(score, bool)
        self.best_model_score = torch.tensor(float(score)) if number and self.best_model_path else None
        last = self._own_path(state.get("last_model_path", ""), "last_model_path", last=True)
        self.last_model_path = last
        self.kth_best_model_path = self._own_path(state.get("kth_best_model_path", ""), "kth_best_model_path")
        step = state.get("last_step_saved", 0)
        self._last_step_saved = step if isinstance(step, int) and not isinstance(step, bool) else 0
        self._deferred, self._validated = (state.get(key) is True for key in ("deferred", "validated"))
        dropping = state.get("dropping", [])
        # the run stopped before it deleted them: on_train_start does, once it knows the resumed file
        self._stale = [old for old in (dropping if isinstance(dropping, list) else [dropping]) if self._own_path(old, "dropping")]

    def _own_path(self, path: Any, field: str, last: bool = False) -> str:
        """``path`` if it is one of this callback's own files, else "" (with a warning naming the file and field)."""
        if path == "":
            return ""
        assert self.dirpath is not None
        name_ok = self._is_last_name if last else self.is_own_name
        problem = foreign_reason(path, self.dirpath, name_ok)
        if problem is None:
            return path
        warnings.warn(
            f"ModelCheckpoint: ignoring {path!r} in the checkpoint's {field!r}: {problem}. Ember deletes or "
            f"replaces only files it wrote itself in {self.dirpath!r}, so this file is left alone",
            stacklevel=3,
        )
        return ""


def _save_file(checkpoint: dict[str, Any], path: str) -> None:
    try:
        ckpt_io.save_object(checkpoint, path)
    except OSError as err:
        raise OSError(
            err.errno, f"saving checkpoint {path!r} failed: {err.strerror or err}; checkpoints written before are intact"
        ) from err
