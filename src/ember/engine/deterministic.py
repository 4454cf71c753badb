"""Reproducible runs, as Ignite's ``ignite.engine.deterministic``: a :class:`DeterministicEngine`
whose data order and random numbers are the same in a resumed run as in an uninterrupted one, and
:func:`keep_random_state` for code that must not move the random generators.

The dataflow is synchronised the Ignite way::

    at STARTED: seed = a random integer (drawn from torch's generator)
    whenever the data (re)starts: seed torch, random and numpy with seed + iteration // len(data),
        and for a DataLoader over a map-style dataset, draw the epoch's batch indices right away
        (ReproducibleBatchSampler), so that resuming at iteration i skips i % len(data) batches
        without loading them
    state_dict() also saves the random generators' states (``rng_states``), restored when the run
        resumes in the middle of the data

so the same seed gives Ignite's exact batches and random numbers. Randomness is seeded for
``random``, ``torch`` (all devices) and ``numpy`` when the program uses it.
"""

from __future__ import annotations

import functools
import random
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from ember.engine.engine import Engine
from ember.engine.events import Events

__all__ = ["DeterministicEngine", "ReproducibleBatchSampler", "keep_random_state", "update_dataloader"]


def update_dataloader(dataloader: DataLoader, new_batch_sampler: BatchSampler) -> DataLoader:
    """A copy of ``dataloader`` (same class, same public settings) that takes its batches from
    ``new_batch_sampler``."""
    skipped = {"batch_size", "sampler", "drop_last", "batch_sampler", "dataset_kind"}
    settings = {k: v for k, v in vars(dataloader).items() if not k.startswith("_") and k not in skipped}
    settings["batch_sampler"] = new_batch_sampler
    return type(dataloader)(**settings)


class ReproducibleBatchSampler(BatchSampler):
    """Draws all of an epoch's batches from ``batch_sampler`` when the epoch starts, so a run can
    start at any batch (``start_iteration``) of an epoch without loading the batches before it."""

    def __init__(self, batch_sampler: BatchSampler, start_iteration: int | None = None) -> None:
        if not isinstance(batch_sampler, BatchSampler):
            raise TypeError(f"batch_sampler must be a torch BatchSampler, got {type(batch_sampler).__name__}")
        self.batch_indices: list = []
        self.batch_sampler = batch_sampler
        self.start_iteration = start_iteration
        self.sampler = batch_sampler.sampler

    def setup_batch_indices(self) -> None:
        """Draw the epoch's batches (from ``start_iteration`` on, which is then forgotten)."""
        self.batch_indices = list(self.batch_sampler)
        if self.start_iteration is not None:
            self.batch_indices = self.batch_indices[self.start_iteration :]
            self.start_iteration = None

    def __iter__(self) -> Iterator:
        self.setup_batch_indices()
        yield from self.batch_indices

    def __len__(self) -> int:
        return len(self.batch_sampler)


def _rng_states() -> list[Any]:
    states: list[Any] = [random.getstate(), torch.get_rng_state()]
    np = sys.modules.get("numpy")  # its generator matters only to a program that uses numpy
    if np is not None:
        states.append(np.random.get_state())
    return states


def _set_rng_states(states: list[Any]) -> None:
    random.setstate(states[0])
    torch.set_rng_state(states[1].cpu())
    np = sys.modules.get("numpy")
    if np is not None and len(states) > 2:
        np.random.set_state(states[2])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # every device's generator
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed)


def keep_random_state(func: Callable) -> Callable:
    """Decorator: ``func`` runs and the random generators of ``random``, torch and numpy are left as
    they were before it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        states = _rng_states()
        try:
            return func(*args, **kwargs)
        finally:
            _set_rng_states(states)

    return wrapper


class DeterministicEngine(Engine):
    """An :class:`~ember.engine.Engine` whose dataflow (data order and random numbers) is the same
    when a run is resumed (from ``state_dict()`` or after ``terminate_epoch()``) as in one run; see the
    module docstring for how. ``state.seed`` is drawn at STARTED; ``state_dict()`` adds ``rng_states``.

    A DataLoader over a map-style dataset gets a :class:`ReproducibleBatchSampler`; other data is
    replayed from its start up to the resumed iteration. Runs without data are not supported.
    """

    def __init__(self, process_function: Callable[[Engine, Any], Any] | None) -> None:
        super().__init__(process_function)
        self.state_dict_user_keys.append("rng_states")
        self.state.seed = None
        if not hasattr(self.state, "rng_states"):
            self.state.rng_states = None
        self._data_len: int | None = None
        self.add_event_handler(Events.STARTED, self._init_run)
        self.add_event_handler(Events.DATALOADER_STOP_ITERATION | Events.TERMINATE_SINGLE_EPOCH, self._setup_seed)

    def state_dict(self) -> OrderedDict[str, Any]:
        state_dict = super().state_dict()
        state_dict["rng_states"] = _rng_states()
        return state_dict

    def _init_run(self) -> None:
        self.state.seed = int(torch.randint(0, int(1e9), (1,)).item())
        if torch.cuda.is_available():
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _setup_engine(self) -> None:
        s = self.state
        if s.dataloader is None:
            raise ValueError("DeterministicEngine needs data: run(data, ...) with an iterable, not data=None")
        try:
            self._data_len = len(s.dataloader)
        except TypeError:
            self._data_len = None
        loader = s.dataloader
        if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
            if self._data_len is not None and hasattr(loader.sampler, "epoch") and self._data_len != s.epoch_length:
                warnings.warn(
                    f"epoch_length={s.epoch_length} differs from the DataLoader's length {self._data_len}: "
                    "the distributed sampler's indices cannot be set up reproducibly",
                    stacklevel=2,
                )
            batch_sampler = loader.batch_sampler
            if batch_sampler is not None and not isinstance(batch_sampler, ReproducibleBatchSampler):
                s.dataloader = update_dataloader(loader, ReproducibleBatchSampler(batch_sampler))
        iteration = s.iteration
        self._data_iter = self._from_iteration(iteration)
        s.epoch_iteration = iteration % s.epoch_length if s.epoch_length else iteration
        in_the_middle = self._data_len is not None and iteration % self._data_len > 0
        if s.rng_states is not None and in_the_middle:
            _set_rng_states(s.rng_states)
            s.rng_states = None

    def _data_after_cut(self) -> Iterator | None:
        return self._iter_data()  # right after the TERMINATE_SINGLE_EPOCH handler reseeded

    def _from_iteration(self, iteration: int) -> Iterator:
        """An iterator over the data positioned at ``iteration`` (modulo the data's length)."""
        data = self.state.dataloader
        if isinstance(data, DataLoader) and isinstance(data.batch_sampler, ReproducibleBatchSampler):
            iteration %= len(data.batch_sampler)
            self._setup_seed()
            if iteration > 0:
                data.batch_sampler.start_iteration = iteration
            return iter(data)
        if self._data_len is not None:
            iteration %= self._data_len
        self._setup_seed(iteration=0)
        data_iter = iter(data)
        for _ in range(iteration):  # replay: the batches before the resumed one
            try:
                next(data_iter)
            except StopIteration:
                data_iter = iter(data)
        return data_iter

    def _setup_seed(self, _: Any = None, iter_counter: int | None = None, iteration: int | None = None) -> None:
        if iter_counter is None:
            length = self._data_len if self._data_len is not None else 1
        elif iter_counter < 1:
            raise ValueError(f"iter_counter must be positive, got {iter_counter}")
        else:
            length = iter_counter
        if iteration is None:
            iteration = self.state.iteration
        _seed_everything(self.state.seed + iteration // length)
