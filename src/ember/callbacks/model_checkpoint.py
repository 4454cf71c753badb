"""``ModelCheckpoint``: save checkpoints during fit, keep the best ``save_top_k`` by a monitored
metric, and optionally ``last.ckpt`` (Lightning's arguments and attributes).

Files are written atomically and an old top-k file is deleted only after its replacement is in
place (see :mod:`ember.checkpoint.topk`). Its own bookkeeping is saved in every checkpoint, so a
resumed run keeps pruning the same files. That bookkeeping is data from a file: a restored path is
used only if it resolves directly inside this callback's ``dirpath`` and has a name this callback
gives its files (its ``filename`` template, ``-vN`` and ``.ckpt``, or ``last.ckpt``); any other is
ignored with a warning, so a downloaded checkpoint cannot make Ember delete or overwrite a file.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from typing import Any

import torch

from ember.callbacks.callback import Callback
from ember.checkpoint import io as ckpt_io
from ember.checkpoint.topk import TopK, foreign_reason, unique_path
from ember.engine.events import Priority
from ember.io.atomic import remove_stale_temporaries

_GROUP = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


def _positive_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be a non-negative integer or None")
    return value


class ModelCheckpoint(Callback):
    """Save a checkpoint every ``every_n_epochs`` epochs (default 1), every ``every_n_train_steps``
    optimizer steps, or every ``train_time_interval``; keep the ``save_top_k`` best by ``monitor``
    (the latest ones without a monitor).

    Example::

        ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=3, save_last=True,
                        filename="{epoch}-{val_loss:.3f}")
    """

    # After every other callback, EarlyStopping included (as in Lightning): a checkpoint must hold
    # the state those callbacks reach at this moment, or a resumed run would redo or miss a decision.
    priority = Priority.EARLY_STOPPING - 1
    CHECKPOINT_EXT = ".ckpt"
    CHECKPOINT_NAME_LAST = "last"

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str = "{epoch}-{step}",
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: Any = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
    ) -> None:
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"dirpath must be a path or None, got {dirpath!r}")
        if not isinstance(filename, str) or not filename:
            raise ValueError(f"filename must be a non-empty format string, got {filename!r}")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"monitor must be a metric name or None, got {monitor!r}")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise ValueError(f"save_top_k={save_top_k} needs a monitor to rank checkpoints; without one use -1, 0 or 1")
        self.topk = TopK(save_top_k, mode if monitor is not None else "max")
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename[: -len(self.CHECKPOINT_EXT)] if filename.endswith(self.CHECKPOINT_EXT) else filename
        self.monitor = monitor
        self.mode = mode
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self.every_n_train_steps = _positive_or_none("every_n_train_steps", every_n_train_steps)
        self.every_n_epochs = _positive_or_none("every_n_epochs", every_n_epochs)
        self.train_time_interval = self._seconds(train_time_interval)
        if self.every_n_epochs is None and self.every_n_train_steps is None and self.train_time_interval is None:
            self.every_n_epochs = 1
        self.save_on_train_epoch_end = save_on_train_epoch_end
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.last_model_path = ""
        self.kth_best_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._last_step_saved = -1
        self._last_time = time.monotonic()
        self._bind_topk()

    def _bind_topk(self) -> None:
        """Tell the top-k where its files are and what they are called (what restored paths must match)."""
        self.topk.directory = self.dirpath
        self.topk.name_ok = self.is_own_name

    def is_own_name(self, name: str) -> bool:
        """Whether ``name`` (a file name, no directory) is one this callback gives its top-k files:
        its ``filename`` template filled with any values, an optional ``-vN``, and ``.ckpt``."""
        pattern = _name_pattern(self.filename, self.auto_insert_metric_name, self.CHECKPOINT_EXT)
        return pattern.fullmatch(name) is not None

    @staticmethod
    def _seconds(interval: Any) -> float | None:
        if interval is None:
            return None
        seconds = interval.total_seconds() if hasattr(interval, "total_seconds") else interval
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"train_time_interval={interval!r} must be a positive timedelta or number of seconds")
        return float(seconds)

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        return {p: torch.tensor(s) for p, s in self.topk.saved.items()} if self.monitor else {}

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.log_dir, "checkpoints")
        self._bind_topk()
        self._last_time = time.monotonic()
        if stage == "fit" and trainer.is_global_zero:
            remove_stale_temporaries(self.dirpath)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        due = self.every_n_train_steps and step and step % self.every_n_train_steps == 0 and step != self._last_step_saved
        if not due and self.train_time_interval is not None:
            due = time.monotonic() - self._last_time >= self.train_time_interval
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if self._save_at_epoch_end(trainer) and self._epoch_due(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.sanity_checking or not trainer.fitting or self._save_at_epoch_end(trainer):
            return
        if self.every_n_train_steps is None and self.train_time_interval is None:
            self._save(trainer)

    def _save_at_epoch_end(self, trainer: Any) -> bool:
        if self.save_on_train_epoch_end is not None:
            return self.save_on_train_epoch_end
        # as Lightning: after validation when it runs several times an epoch or not every epoch
        if trainer.check_val_every_n_epoch != 1:
            return False
        no_validation = all(count == 0 for count in trainer.num_val_batches)  # (None: a loader of unknown length)
        return no_validation or trainer.val_check_interval == 1.0

    def _epoch_due(self, trainer: Any) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # ------------------------------------------------------------------ saving

    def format_checkpoint_name(self, metrics: dict[str, Any]) -> str:
        """The file name (without directory) for these metrics, e.g. ``epoch=3-step=120.ckpt``."""

        def fill(m: re.Match) -> str:
            name, spec = m.group(1), m.group(2) or ""
            value = metrics.get(name, 0)
            if isinstance(value, torch.Tensor):
                value = value.item()
            text = format(value, spec[1:]) if spec else str(value)
            return f"{name}={text}" if self.auto_insert_metric_name else text

        return _GROUP.sub(fill, self.filename).replace("/", "_") + self.CHECKPOINT_EXT

    def _save(self, trainer: Any) -> None:
        if trainer.fast_dev_run:  # as Lightning: a fast_dev_run writes no checkpoint
            return
        step = trainer.global_step
        if step == self._last_step_saved:
            return
        metrics = self._metrics(trainer)
        score = self._score(metrics)
        self.current_score = torch.tensor(score)
        self._last_step_saved = step
        self._last_time = time.monotonic()
        collective = getattr(trainer.strategy, "collective_state_dict", False)
        if not trainer.is_global_zero and not collective:
            return
        top = self.topk.accepts(score) if trainer.is_global_zero else False
        if collective:  # FSDP: every rank helps gather the weights, so all follow rank zero's decision
            top = trainer.strategy.broadcast(top)
        if not top and not self.save_last:
            return
        if not trainer.is_global_zero:
            self._dump(trainer)  # its part of the gathering; rank zero writes
            return
        path = None
        if top:
            path = os.path.join(self.dirpath, self.format_checkpoint_name(metrics))
            if path not in self.topk.saved:
                path = unique_path(path)
        self._write_files(trainer, path, score)

    def _metrics(self, trainer: Any) -> dict[str, Any]:
        """The logged metrics with this moment's ``epoch`` and ``step`` (what file names are filled with)."""
        metrics = dict(trainer.callback_metrics)
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        return metrics

    def _score(self, metrics: dict[str, Any]) -> float:
        """The monitored value that ranks this checkpoint (the step without a monitor: latest is best)."""
        if self.monitor is None:
            return float(metrics["step"])
        if self.monitor not in metrics:
            raise ValueError(
                f"ModelCheckpoint(monitor={self.monitor!r}) found no such logged metric; logged metrics are: "
                f"{sorted(k for k in metrics if k not in ('epoch', 'step'))}"
            )
        return float(metrics[self.monitor])

    def _write_files(self, trainer: Any, path: str | None, score: float) -> None:
        """Dump the trainer's checkpoint into ``path`` (a new top-k file; None: not one) and ``last.ckpt``."""
        before = self._bookkeeping()
        if self.save_last:
            self.last_model_path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.CHECKPOINT_EXT)
        checkpoint: dict[str, Any] = {}

        def dump_and_write() -> None:
            # runs with the new file booked: the checkpoint then knows the file it is written to (and
            # which files it displaces), so a run resumed from it keeps pruning exactly the right files
            nonlocal checkpoint
            try:
                if path is not None:
                    self._track_best()
                checkpoint = self._dump(trainer)
                if path is not None:
                    _save_file(checkpoint, path)
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

    def _dump(self, trainer: Any) -> dict[str, Any]:
        return trainer.dump_checkpoint(weights_only=self.save_weights_only)

    def _track_best(self) -> None:
        best = self.topk.best()
        self.best_model_path = best or ""
        self.best_model_score = torch.tensor(self.topk.saved[best]) if best else None
        self.kth_best_model_path = self.topk.worst() or ""

    def _bookkeeping(self) -> tuple[Any, ...]:
        return (self.best_model_path, self.best_model_score, self.kth_best_model_path, self.last_model_path)

    def _restore_bookkeeping(self, saved: tuple[Any, ...]) -> None:
        self.best_model_path, self.best_model_score, self.kth_best_model_path, self.last_model_path = saved

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "dirpath": self.dirpath,
            "topk": self.topk.state_dict(),
            "best_model_path": self.best_model_path,
            "best_model_score": None if self.best_model_score is None else float(self.best_model_score),
            "last_model_path": self.last_model_path,
            "kth_best_model_path": self.kth_best_model_path,
            "last_step_saved": self._last_step_saved,
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
        step = state.get("last_step_saved", -1)
        self._last_step_saved = step if isinstance(step, int) and not isinstance(step, bool) else -1
        dropping = state.get("dropping", [])
        for old in dropping if isinstance(dropping, list) else [dropping]:  # the run stopped before it deleted them
            if self._own_path(old, "dropping") and old not in self.topk.saved:
                ckpt_io.remove(old)

    def _own_path(self, path: Any, field: str, last: bool = False) -> str:
        """``path`` if it is one of this callback's own files, else "" (with a warning naming the file and field)."""
        if path == "":
            return ""
        assert self.dirpath is not None
        name_ok = (lambda n: n == self.CHECKPOINT_NAME_LAST + self.CHECKPOINT_EXT) if last else self.is_own_name
        problem = foreign_reason(path, self.dirpath, name_ok)
        if problem is None:
            return path
        warnings.warn(
            f"ModelCheckpoint: ignoring {path!r} in the checkpoint's {field!r}: {problem}. Ember deletes or "
            f"replaces only files it wrote itself in {self.dirpath!r}, so this file is left alone",
            stacklevel=3,
        )
        return ""


#: a metric formatted as :meth:`ModelCheckpoint.format_checkpoint_name` does (``3``, ``-1.000``,
#: ``1e-05``, ``nan``, ``-inf``, ``12,345``, ``50.0%``, padded)
_NUMBER = "[-+ 0-9.,_%eEnaifNAIF]+"


def _name_pattern(template: str, insert_names: bool, ext: str) -> re.Pattern[str]:
    """What :meth:`ModelCheckpoint.format_checkpoint_name` can produce from ``template`` (then
    :func:`~ember.checkpoint.topk.unique_path`'s ``-vN``), as a regular expression."""
    parts, pos = [], 0
    for m in _GROUP.finditer(template):
        parts.append(re.escape(template[pos : m.start()].replace("/", "_")))
        prefix = re.escape(f"{m.group(1)}=".replace("/", "_")) if insert_names else ""
        parts.append(prefix + _NUMBER)
        pos = m.end()
    parts.append(re.escape(template[pos:].replace("/", "_")))
    return re.compile("".join(parts) + r"(?:-v[0-9]+)?" + re.escape(ext))


def _save_file(checkpoint: dict[str, Any], path: str) -> None:
    try:
        ckpt_io.save_object(checkpoint, path)
    except OSError as err:
        raise OSError(
            err.errno, f"saving checkpoint {path!r} failed: {err.strerror or err}; checkpoints written before are intact"
        ) from err
