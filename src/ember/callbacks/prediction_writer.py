"""``BasePredictionWriter``: Lightning's callback for writing ``predict_step`` outputs as they come.

Subclass it and override ``write_on_batch_end`` (``write_interval="batch"``), ``write_on_epoch_end``
(``"epoch"``) or both (``"batch_and_epoch"``); the arguments are Lightning's::

    write_on_batch_end(trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx)
    write_on_epoch_end(trainer, pl_module, predictions, batch_indices)

``batch_indices`` are the dataset indices of the samples in the batch, as the loader's batch sampler
drew them (shuffled or split over processes, they say which sample each prediction is for). To know
them, the predict loop runs a loader through :func:`prepare_predict_loaders`, which gives it a batch
sampler that records what it yields; this happens only when a prediction writer is among the
callbacks, so ``trainer.predict`` costs nothing more without one. A loader that is not a
``DataLoader`` with a batch sampler has no indices: ``[]``, with one warning, as in Lightning.

At epoch end, ``predictions`` are the batches' outputs moved to the CPU: a list of batches, or for
several predict loaders a list of such lists, one per loader; ``batch_indices`` is always one list
per loader (Lightning's shapes).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ember.callbacks.callback import Callback
from ember.tree import tree_map


class WriteInterval(StrEnum):
    """When a :class:`BasePredictionWriter` writes: after each batch, at the end, or both."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        """Whether ``write_on_batch_end`` is called."""
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        """Whether ``write_on_epoch_end`` is called."""
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class IndexBatchSampler:
    """Wraps a batch sampler and records the batches of indices it yields (``seen_batch_indices``,
    restarted with each pass), so the n-th batch a loader produced can be traced to its samples."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.seen_batch_indices: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        self.seen_batch_indices = []
        for batch in self.batch_sampler:
            indices = [int(i) for i in batch]
            self.seen_batch_indices.append(indices)
            yield indices

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def indices_of(self, batch_idx: int) -> list[int] | None:
        """The indices of batch ``batch_idx`` of the current pass, or None when it has not been drawn."""
        seen = self.seen_batch_indices
        return seen[batch_idx] if 0 <= batch_idx < len(seen) else None


def with_batch_indices(loader: Any) -> tuple[Any, IndexBatchSampler | None]:
    """``(loader', sampler)``: a shallow copy of ``loader`` whose batch sampler records its indices,
    or ``(loader, None)`` when it has none to record (not a ``DataLoader``, an ``IterableDataset``,
    or ``batch_size=None``). The user's loader is left as it is."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None or isinstance(loader.dataset, IterableDataset):
        return loader, None
    sampler = IndexBatchSampler(loader.batch_sampler)
    new = copy.copy(loader)
    # DataLoader refuses to set batch_sampler after construction (to keep it consistent with
    # batch_size, sampler and drop_last); the wrapper yields the same batches, so they still agree
    object.__setattr__(new, "batch_sampler", sampler)
    return new, sampler


def prepare_predict_loaders(loaders: Sequence[Any], callbacks: Sequence[Any]) -> list[Any]:
    """What the predict loop calls before a run: when a :class:`BasePredictionWriter` is among
    ``callbacks``, ``loaders`` with index-recording batch samplers (each writer is told where to
    read them); otherwise ``loaders`` unchanged."""
    writers = [c for c in callbacks if isinstance(c, BasePredictionWriter)]
    if not writers:
        return list(loaders)
    wrapped = [with_batch_indices(dl) for dl in loaders]
    for writer in writers:
        writer.index_samplers = [sampler for _, sampler in wrapped]
    return [dl for dl, _ in wrapped]


def _to_cpu(value: Any) -> Any:
    return value.cpu() if isinstance(value, torch.Tensor) else value


class BasePredictionWriter(Callback):
    """Base class for writing predictions (Lightning's ``BasePredictionWriter``; see the module docs).

    Args:
        write_interval: ``"batch"`` (``write_on_batch_end`` after every predict batch), ``"epoch"``
            (``write_on_epoch_end`` once, with every prediction) or ``"batch_and_epoch"``.

    Example::

        class NumpyWriter(BasePredictionWriter):
            def __init__(self, out_dir):
                super().__init__(write_interval="batch")
                self.out_dir = out_dir

            def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                                   dataloader_idx):
                np.save(f"{self.out_dir}/{dataloader_idx}-{batch_idx}.npy", prediction.cpu().numpy())

        trainer = ember.Trainer(callbacks=[NumpyWriter("preds")])
        trainer.predict(model, loader)
    """

    def __init__(self, write_interval: str = "batch") -> None:
        allowed = [i.value for i in WriteInterval]
        if write_interval not in allowed:
            raise ValueError(f"write_interval={write_interval!r}; choose one of {allowed}")
        self.interval = WriteInterval(write_interval)
        #: per predict loader, the sampler recording its batches' indices (None: the loader has none);
        #: set by :func:`prepare_predict_loaders` before each predict run
        self.index_samplers: list[IndexBatchSampler | None] = []
        self._predictions: list[list[Any]] = []
        self._batch_indices: list[list[list[int]]] = []
        self._warned = False

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Override to write one batch's ``prediction`` (``batch_indices``: its samples' dataset indices)."""
        raise NotImplementedError(f"{type(self).__name__} has write_interval={self.interval.value!r}: override write_on_batch_end")

    def write_on_epoch_end(
        self, trainer: Any, pl_module: Any, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        """Override to write every prediction at once (shapes in the module docs)."""
        raise NotImplementedError(f"{type(self).__name__} has write_interval={self.interval.value!r}: override write_on_epoch_end")

    # ------------------------------------------------------------------ hooks

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        n = len(trainer.num_predict_batches)
        self._predictions = [[] for _ in range(n)] if self.interval.on_epoch else []
        self._batch_indices = [[] for _ in range(n)] if self.interval.on_epoch else []
        self._warned = False

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        indices = self._indices_of(batch_idx, dataloader_idx)
        if self.interval.on_batch:
            self.write_on_batch_end(trainer, pl_module, outputs, indices or [], batch, batch_idx, dataloader_idx)
        if self.interval.on_epoch:
            if indices is not None:
                self._batch_indices[dataloader_idx].append(indices)
            self._predictions[dataloader_idx].append(tree_map(_to_cpu, outputs))

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.interval.on_epoch:
            return
        predictions = self._predictions[0] if len(self._predictions) == 1 else self._predictions
        batch_indices = self._batch_indices
        self._predictions, self._batch_indices = [], []
        self.write_on_epoch_end(trainer, pl_module, predictions, batch_indices)

    def _indices_of(self, batch_idx: int, dataloader_idx: int) -> list[int] | None:
        samplers = self.index_samplers
        sampler = samplers[dataloader_idx] if dataloader_idx < len(samplers) else None
        indices = sampler.indices_of(batch_idx) if sampler is not None else None
        if indices is None and not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__}: the batch indices of predict loader {dataloader_idx} are not known "
                "(only a torch DataLoader over a map-style dataset, with a batch sampler, records them); batch_indices is empty",
                stacklevel=2,
            )
        return indices
