"""An engine run's bounds and position as plain values: when a run is done, how ``run()``'s
arguments set or extend its bounds, and what ``Engine.state_dict`` / ``load_state_dict`` exchange.

These are functions of :class:`~ember.engine.State` alone, kept apart from the loop that moves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.engine.state import State


def check_run_args(data: Any, max_epochs: Any, max_iters: Any, epoch_length: Any) -> None:
    """Reject ``run()`` arguments that are not data, positive integers or ``None``."""
    if data is not None and not isinstance(data, Iterable):
        raise TypeError(f"data must be iterable (a DataLoader, a list, ...), got {type(data).__name__}")
    for name, value in (("max_epochs", max_epochs), ("max_iters", max_iters), ("epoch_length", epoch_length)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}")
    if max_epochs is not None and max_iters is not None:
        raise ValueError("give `max_epochs` or `max_iters`, not both")


def start_bounds(
    state: State, data: Iterable, max_epochs: int | None, max_iters: int | None, epoch_length: int | None
) -> None:
    """Reset ``state`` to iteration 0 of a new run over ``data`` with these bounds (one epoch by default)."""
    if epoch_length is None:
        epoch_length = data_length(data)
        if epoch_length == 0:
            raise ValueError("data is empty: it has length 0")
    state.iteration = 0
    state.epoch = 0
    state.epoch_iteration = 0
    state.epoch_length = epoch_length
    state.max_iters = max_iters
    state.max_epochs = max_epochs if max_epochs is not None else (None if max_iters is not None else 1)
    if max_iters is not None and epoch_length is not None:
        state.max_epochs = math.ceil(max_iters / epoch_length)
    state.dataloader = data
    state.metrics = {}
    state.output = state.batch = None


def extend_bounds(state: State, max_epochs: int | None, max_iters: int | None) -> None:
    """Let a continued run go on to ``max_epochs`` or ``max_iters`` (not below where it is)."""
    if max_epochs is not None:
        if max_epochs < state.epoch:
            raise ValueError(
                f"`max_epochs`={max_epochs} is below the current epoch {state.epoch} of the run being continued"
            )
        state.max_epochs, state.max_iters = max_epochs, None
    if max_iters is not None:
        if max_iters < state.iteration:
            raise ValueError(f"`max_iters`={max_iters} is below the current iteration {state.iteration}")
        state.max_iters, state.max_epochs = max_iters, None


def run_is_done(state: State) -> bool:
    """Whether ``state`` has reached its run's ``max_iters`` or ``max_epochs``."""
    if state.max_iters is not None and state.iteration >= state.max_iters:
        return True
    if state.max_epochs is not None:
        if state.epoch >= state.max_epochs:
            return True
        if state.epoch_length is not None and state.iteration >= state.epoch_length * state.max_epochs:
            return True
    return False


def data_length(data: Iterable) -> int | None:
    """``len(data)``, or ``None`` for data without a length."""
    # a DataLoader over an IterableDataset has __len__ but raises TypeError when the dataset has none
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_dict(state: State, epoch_iteration: int, user_keys: list[str]) -> dict[str, Any]:
    """What ``Engine.state_dict()`` returns: the counters and bounds, ``epoch_iteration`` (iterations
    done in an unfinished epoch, else 0) and the state attributes named in ``user_keys``."""
    out: dict[str, Any] = {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "epoch_length": state.epoch_length,
        "max_epochs": state.max_epochs,
        "max_iters": state.max_iters,
        "epoch_iteration": epoch_iteration,
    }
    for k in user_keys:
        out[k] = getattr(state, k)
    return out


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues, read from what ``Engine.state_dict()`` wrote (see :func:`resume_point`).

    ``epoch`` is the last completed epoch and ``epoch_iteration`` the iterations already done in
    the next one (``None``: it starts from its beginning).
    """

    iteration: int
    epoch: int
    epoch_length: int | None
    max_epochs: int | None
    max_iters: int | None
    epoch_iteration: int | None
    user_values: dict[str, Any] = field(default_factory=dict)


def resume_point(state_dict: Mapping[str, Any], user_keys: list[str]) -> ResumePoint:
    """Validate a saved engine ``state_dict`` completely and derive where its run continues.

    Needs ``iteration`` or ``epoch``; with only ``epoch``, iteration is epoch * epoch_length.
    With ``epoch_iteration`` the position inside the epoch is exact, even when epochs were cut short
    or have no fixed length; without it, it is ``iteration % epoch_length``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = [k for k in user_keys if k not in state_dict]
    if missing:
        raise ValueError(f"state_dict lacks the user keys {missing}")
    iteration, epoch = state_dict.get("iteration"), state_dict.get("epoch")
    if iteration is None and epoch is None:
        raise ValueError("state_dict must hold 'iteration' or 'epoch'")
    epoch_length = state_dict.get("epoch_length")
    max_epochs, max_iters = state_dict.get("max_epochs"), state_dict.get("max_iters")
    if max_epochs is None and max_iters is None:
        raise ValueError("state_dict must hold 'max_epochs' or 'max_iters'")
    if iteration is None and epoch_length is None:
        raise ValueError("state_dict with only 'epoch' needs 'epoch_length' to derive the iteration")
    epoch_iteration = state_dict.get("epoch_iteration")
    inside: int | None = None
    if iteration is not None and epoch is not None and epoch_iteration is not None:
        iteration = int(iteration)
        epoch = int(epoch) - 1 if epoch_iteration else int(epoch)
        inside = int(epoch_iteration) or None
    elif iteration is not None:
        iteration = int(iteration)
        if epoch_length:
            epoch = iteration // epoch_length
            inside = iteration % epoch_length or None
        else:
            epoch = int(epoch or 0)
    else:
        epoch = int(epoch)
        iteration = epoch * epoch_length
    return ResumePoint(
        iteration=iteration,
        epoch=epoch,
        epoch_length=epoch_length,
        max_epochs=max_epochs,
        max_iters=max_iters,
        epoch_iteration=inside,
        user_values={k: state_dict[k] for k in user_keys},
    )
