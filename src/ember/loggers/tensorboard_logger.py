"""``TensorBoardLogger``: scalars and hyperparameters to TensorBoard event files, at both levels.

Lightning's form writes to ``<save_dir>/<name>/version_<N>`` (N the next free number)::

    trainer = ember.Trainer(logger=TensorBoardLogger("runs", name="mnist"))

Ignite's form writes to ``log_dir`` itself (``TensorboardLogger`` is the same class)::

    tb = TensorboardLogger(log_dir="runs/exp1")
    tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="training",
                             output_transform=lambda loss: {"loss": loss})

Scalars are queued with their step (tensors on a device stay there) and written about every
``flush_secs``, a batch at a time (see :mod:`ember.loggers.tfevents` and
:mod:`ember.loggers.buffer`), so logging every step stays cheap; ``save()`` writes at once.
``experiment`` is a ``torch.utils.tensorboard.SummaryWriter`` on the same directory, made on first
use, for images, histograms and the rest.

This module also has Ignite's ``ignite.handlers.tensorboard_logger`` names: ``OutputHandler``,
``OptimizerParamsHandler``, ``WeightsScalarHandler``, ``WeightsHistHandler``, ``GradsScalarHandler``,
``GradsHistHandler`` and ``global_step_from_engine``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ember.io.atomic import atomic_write_text
from ember.loggers.base import (
    DummyExperiment,
    Logger,
    VersionedRun,
    check_dir_name,
    check_params,
    check_path,
    check_step,
    check_version,
    flatten_params,
    is_rank_zero,
    next_version,
    plain_param,
    version_dir,
    yaml_safe,
)
from ember.loggers.buffer import Entry, MetricBuffer
from ember.loggers.handlers import OptimizerParamsHandler, OutputHandler, global_step_from_engine
from ember.loggers.tfevents import EventFile, purge_event, scalar_records
from ember.loggers.weights_handlers import (
    GradsHistHandler,
    GradsScalarHandler,
    WeightsHistHandler,
    WeightsScalarHandler,
)
from ember.optional import require

_WRITER_KWARGS = ("comment", "purge_step", "max_queue", "filename_suffix")


class TensorBoardLogger(VersionedRun, Logger):
    """Write metrics and hyperparameters for TensorBoard.

    Args:
        save_dir: root directory (Lightning's form); the run goes to ``save_dir/name/version_N``.
        name: experiment directory under ``save_dir`` ("" for none).
        version: an int (``version_<int>``), a directory name, or None for the next free number.
        log_dir: Ignite's form: write to exactly this directory (instead of save_dir/name/version).
        prefix: prepended to every metric name as ``"<prefix>-<name>"``.
        sub_dir: an extra directory level under the version directory.
        flush_secs: how often queued scalars are written (the SummaryWriter flushes as often).
        default_hp_metric: log the placeholder ``hp_metric = -1`` with the hyperparameters (Lightning).
        writer_kwargs: ``comment``, ``purge_step``, ``max_queue``, ``filename_suffix`` (SummaryWriter's).
    """

    accepts_tensors = True

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        name: str | None = "ember_logs",
        version: int | str | None = None,
        *,
        log_dir: str | os.PathLike | None = None,
        prefix: str = "",
        sub_dir: str | None = None,
        flush_secs: float = 1.0,
        default_hp_metric: bool = False,
        **writer_kwargs: Any,
    ) -> None:
        require("tensorboard", "tensorboard", "TensorBoardLogger")
        unknown = sorted(set(writer_kwargs) - set(_WRITER_KWARGS))
        if unknown:
            raise TypeError(
                f"TensorBoardLogger got unknown arguments {unknown}; SummaryWriter options allowed: {list(_WRITER_KWARGS)}"
            )
        if log_dir is not None:
            if save_dir is not None:
                raise ValueError("TensorBoardLogger: pass save_dir (with name/version) or log_dir, not both")
            path = check_path("log_dir", log_dir).absolute()
            save_dir, name, version = path.parent, "", path.name
        self._save_dir = check_path("save_dir", "." if save_dir is None else save_dir)
        self._name = check_dir_name("name", name, allow_empty=True)
        self._version = check_version(version)
        self._version_given = version is not None
        self._sub_dir = None if sub_dir is None else check_dir_name("sub_dir", sub_dir)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {prefix!r}")
        self._prefix = prefix
        self._default_hp_metric = bool(default_hp_metric)
        self._writer_kwargs = writer_kwargs
        self._flush_secs = flush_secs
        self._buffer = self._new_buffer()
        self._file: EventFile | None = None
        self._writer: Any = None
        self._last_step: int | None = None
        self._purge_step: int | None = writer_kwargs.get("purge_step")
        self._hparams: tuple[Mapping[str, Any], Mapping[str, float] | None] | None = None

    def _new_buffer(self) -> MetricBuffer:
        return MetricBuffer(
            self._write_entries,
            self._flush_secs,
            name="TensorBoardLogger",
            inline=True,
            enabled=is_rank_zero,
            rename=self._metric_name,
        )

    def __getstate__(self) -> dict[str, Any]:
        # open files, the writer thread and the SummaryWriter stay with the original
        self.version  # noqa: B018 (fix the version now, so that the copy writes where the original does)
        state = dict(self.__dict__)
        state.update(_buffer=None, _file=None, _writer=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._buffer = self._new_buffer()

    # ------------------------------------------------------------------ where

    @property
    def name(self) -> str:
        """The experiment's folder under ``save_dir`` (``"ember_logs"`` by default)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The version given, or the next free ``version_<n>`` number under ``save_dir/name``."""
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: where the version directories are."""
        return str(self._save_dir / self._name) if self._name else str(self._save_dir)

    @property
    def log_dir(self) -> str:
        path = Path(self.root_dir) / version_dir(self.version)
        return str(path / self._sub_dir if self._sub_dir else path)

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter`` on ``log_dir`` (made on first use); a no-op object off rank zero."""
        if not is_rank_zero():
            return DummyExperiment()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            kwargs = {k: v for k, v in self._writer_kwargs.items() if k != "purge_step"}
            self._writer = SummaryWriter(log_dir=self.log_dir, flush_secs=self._flush_secs, **kwargs)
        return self._writer

    @property
    def writer(self) -> Any:
        """Ignite's name for :attr:`experiment`."""
        return self.experiment

    def __getattr__(self, name: str) -> Any:
        # Ignite's TensorboardLogger forwards the writer's methods: tb.add_image(...), tb.add_histogram(...)
        if name.startswith("add_") or name == "flush":
            return getattr(self.experiment, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ writing

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Queue scalars (numbers or 0-d tensors) for ``step``; written within ``flush_secs``
        (by rank zero only: other ranks drop them then)."""
        if type(step) is not int:
            step = check_step(step)
        self._last_step = step
        self._buffer.add(step, metrics)

    def _metric_name(self, key: str) -> str:
        return f"{self._prefix}-{key}" if self._prefix else key

    def log_hyperparams(self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Write ``params`` to ``hparams.yaml`` and to TensorBoard's HParams tab (nested keys as
        ``"a/b"``; values other than numbers, bools and strings as text), with optional ``metrics``."""
        if not is_rank_zero():
            return
        params = check_params(params)
        self._hparams = (params, metrics)
        flat = {k: plain_param(v) for k, v in flatten_params(params).items()}
        metric_dict = dict(metrics) if metrics is not None else ({"hp_metric": -1.0} if self._default_hp_metric else {})
        atomic_write_text(Path(self.log_dir) / "hparams.yaml", yaml.safe_dump(yaml_safe(params), sort_keys=False))
        self._write_hparams(flat, metric_dict)
        if metric_dict:
            self.log_metrics(metric_dict, 0)

    def _write_hparams(self, flat: dict[str, Any], metric_dict: dict[str, float]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from torch.utils.tensorboard.summary import hparams

        summaries = hparams(flat, metric_dict)
        with self._buffer.lock:  # the writer thread writes to the same file
            self._event_file().write([Event(step=0, summary=s) for s in summaries])

    def _event_file(self) -> EventFile:
        """The scalar event file, opened on first use (call with the buffer's lock held)."""
        if self._file is None:
            self._file = EventFile(self.log_dir, self._writer_kwargs.get("filename_suffix", ""))
            if self._purge_step is not None:
                self._file.write([purge_event(self._purge_step)])
                self._purge_step = None
        return self._file

    def _write_entries(self, entries: list[Entry]) -> None:
        self._event_file().write_records(scalar_records(entries))

    def save(self) -> None:
        """Write everything queued (to the OS: each write is flushed)."""
        self._buffer.flush()
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        """Write everything and close the files (a later log opens a new event file in ``log_dir``)."""
        self._buffer.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """``name``, ``version`` and the last ``step`` written: plain values for a checkpoint."""
        return {"name": self._name, "version": self.version, "step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved run: unless this logger was given another ``version`` (or ``log_dir``)
        or has another ``name``, write to the saved version's directory again, and make TensorBoard
        drop what that run wrote after the saved step (a ``SessionLog.START`` purge event, as
        ``SummaryWriter(purge_step=...)`` writes, first in the next event file)."""
        if state.get("name") != self._name or state.get("version") is None:
            return
        version = check_version(state["version"])
        if self._version_given and version != self._version:
            return
        if version != self._version:
            self._switch_version(version)
        step = state.get("step")
        if step is not None:
            self._last_step = int(step)
            self._purge_step = int(step) + 1
            with self._buffer.lock:
                if self._file is not None:  # already writing there: purge from here on
                    self._file.write([purge_event(self._purge_step)])
                    self._purge_step = None

    def _switch_version(self, version: int | str) -> None:
        self.finalize("success")  # what was logged so far stays in the old folder
        self._version = version
        if self._hparams is not None:  # logged before the checkpoint was loaded: log them here too
            self.log_hyperparams(*self._hparams)


TensorboardLogger = TensorBoardLogger

__all__ = [
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "TensorBoardLogger",
    "TensorboardLogger",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
]
