"""Exact resume of ``fit``: the training data as the train engine sees it, what a checkpoint records
about the loop, and how a run continues from it (see :mod:`ember.trainer.checkpointing` for the
whole checkpoint).

The train engine iterates an :class:`EpochData`: every pass over it records the RNG states that
decide the epoch's data order just before the loader's iterator is made, so a checkpoint saved
mid-epoch can rebuild that order, skip the batches already consumed, and put back the RNG states of
the checkpoint moment.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import IterableDataset

from ember.checkpoint.rng import restore_rng_states
from ember.engine import Events
from ember.trainer.checkpointing import epoch_start_rng, loader_generator, restore_epoch_start_rng
from ember.trainer.progress import FitProgress


@dataclass
class ResumePoint:
    """What a checkpoint says about where to continue; applied when the first epoch starts."""

    batches: int  # batches of the current epoch already consumed (0: at an epoch boundary)
    epoch: int  # at an epoch boundary: epochs completed
    finished: bool  # saved as the run ended: nothing is left to train
    epoch_rng: dict[str, Any] | None
    epoch_end_pending: bool  # saved between on_train_epoch_end and the epoch schedulers' step
    rng: dict[str, Any] = field(default_factory=dict)
    grads: dict[str, torch.Tensor] | None = None
    dataset: Any = None
    loader_generator: Any = None


class EpochData:
    """The training loader as the train engine iterates it: one fresh pass per ``iter()``, with the
    RNG states that decide its order recorded first (``epoch_rng``). ``start_epoch(point)`` continues a
    checkpoint's epoch: it restores the state of the checkpoint moment at once (RNG states,
    accumulated gradients) and the next pass starts where the checkpoint was saved."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch_rng: dict[str, Any] | None = None
        self._module: Any = None
        self._next: Iterator | None = None
        self._live: Iterator | None = None

    def start_epoch(self, point: ResumePoint | None, module: Any) -> None:
        """A new epoch: a fresh pass, or (``point``) the rest of a checkpoint's epoch."""
        self._next = None
        if point is not None:
            self._module = module
            self.epoch_rng = point.epoch_rng
            self._next = self._resumed_iterator(point)

    def peek(self) -> bool:
        """Open this epoch's pass now and fetch its first batch (kept for the pass): False when
        the pass yields nothing (data without a length may be empty in some epoch)."""
        data_iter = iter(self)
        try:
            first = next(data_iter)
        except StopIteration:
            return False
        self._next = itertools.chain((first,), data_iter)
        return True

    def exhausted(self) -> bool:
        """Whether the running pass has no batch left (it takes one if it has: for a run that is stopping)."""
        try:
            next(self._live)  # type: ignore[arg-type]
        except StopIteration:
            return True
        return False

    def __iter__(self) -> Iterator:
        resumed, self._next = self._next, None
        if resumed is None:
            self.epoch_rng = epoch_start_rng(self.loader)
            resumed = iter(self.loader)
        self._live = resumed
        return resumed

    def __len__(self) -> int:
        try:
            return len(self.loader)
        except NotImplementedError as err:  # a length that raises this means "none", as a TypeError does
            raise TypeError(f"{type(self.loader).__name__} has no length") from err

    def _resumed_iterator(self, point: ResumePoint) -> Iterator:
        data = self.loader
        dataset = getattr(data, "dataset", None)
        if isinstance(dataset, IterableDataset):
            if point.dataset is not None and callable(getattr(dataset, "load_state_dict", None)):
                dataset.load_state_dict(point.dataset)
            else:
                warnings.warn(
                    "resuming mid-epoch over an IterableDataset without state_dict/load_state_dict: "
                    "the interrupted epoch's data starts again from its beginning",
                    stacklevel=2,
                )
            data_iter = iter(data)
        else:
            restore_epoch_start_rng(data, point.epoch_rng)
            data_iter = iter(data)
            for _ in range(point.batches):
                next(data_iter)
        restore_rng_states(point.rng)
        if point.grads:  # gradients accumulated since the last optimizer step
            params = dict(self._module.named_parameters())
            for name, grad in point.grads.items():
                params[name].grad = grad.to(params[name].device)
        return data_iter


def fit_state_dict(
    progress: FitProgress, engine: Any, data: EpochData | None, model: Any, callback_metrics: dict
) -> dict[str, Any]:
    """Where the run stands, for an exact resume."""
    engine_state = engine.state_dict()
    state: dict[str, Any] = {
        "engine": engine_state,
        **progress.state_dict(),
        # saved while this batch's ITERATION_COMPLETED runs (on_train_batch_end, validation): the resumed
        # run continues after it, so it counts as counted (its row is written before, see checkpointing)
        "batches_stepped": progress.batches_stepped + batch_end_pending(progress, engine),
        "batches": engine_state["epoch_iteration"],
        "epoch_rng": data.epoch_rng if data is not None else None,
        "callback_metrics": {k: float(v) for k, v in callback_metrics.items()},
    }
    loader = data.loader if data is not None else None
    gen = loader_generator(loader)
    if gen is not None:  # a loader's own generator is not among the global RNG states
        state["loader_generator"] = gen.get_state()
    if progress.micro:  # gradients accumulated since the last optimizer step
        state["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, IterableDataset) and callable(getattr(dataset, "state_dict", None)):
        state["dataset"] = dataset.state_dict()
    return state


def batch_end_pending(progress: FitProgress, engine: Any) -> bool:
    """Whether a checkpoint saved now is inside the ITERATION_COMPLETED of a batch that ended an
    optimizer window and is not counted in ``progress.batches_stepped`` yet."""
    return engine.last_event_name == Events.ITERATION_COMPLETED and progress.batch_end_pending(engine.state.iteration)


def load_fit_state(
    state: dict[str, Any], rng_states: dict[str, Any] | None, progress: FitProgress, engine: Any
) -> ResumePoint:
    """Set ``progress`` and ``engine`` to continue where ``state`` was saved; returns the rest,
    applied when the first epoch starts."""
    # this fit's max_epochs decides where the run ends (it may extend a finished one), not the saved run's
    engine.load_state_dict({**state["engine"], "max_epochs": progress.max_epochs or 2**62, "max_iters": None})
    progress.load_state_dict(state)
    progress.counted_iteration = int(state["engine"].get("iteration", 0))
    batches = int(state.get("batches", 0))
    epoch = int(state["engine"]["epoch"])
    finished = False
    if not batches:  # at an epoch boundary: would the run have stopped after this epoch?
        saved_epoch, progress.current_epoch = progress.current_epoch, epoch
        finished = progress.stop_reason(at_epoch_end=True) is not None
        progress.current_epoch = saved_epoch
    point = ResumePoint(
        batches=batches,
        epoch=epoch,
        finished=finished,
        epoch_rng=state.get("epoch_rng"),
        epoch_end_pending=bool(state.get("epoch_end_pending", False)),
        rng=rng_states or {},
        grads=state.get("grads"),
        dataset=state.get("dataset"),
        loader_generator=state.get("loader_generator"),
    )
    if point.batches and point.epoch_rng is None:
        raise ValueError("the checkpoint was saved mid-epoch without the epoch's RNG states; it cannot resume there")
    return point
