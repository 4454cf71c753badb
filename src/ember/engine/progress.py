"""An engine run's bounds and position as plain values: when a run is done, how ``run()``'s
arguments set or extend its bounds, and what ``Engine.state_dict`` / ``load_state_dict`` exchange.

These are functions of :class:`~ember.engine.State` alone, kept apart from the loop that moves it.
"""

from __future__ import annotations

from collections import OrderedDict
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


def plan_run(
    state: State, paused: bool, data: Any, max_epochs: int | None, max_iters: int | None, epoch_length: int | None
) -> bool:
    """Apply ``run()``'s arguments to ``state`` as Ignite does; returns True for a run from iteration 0.

    A run starts afresh when the state has no bounds yet (a new engine, or ``state.max_epochs``
    and ``state.max_iters`` set to ``None``), or when its run is done and not paused by
    ``interrupt()``; ``epoch_length`` then defaults to ``len(data)``, else to the last run's. Otherwise
    the run continues: ``max_epochs`` (or ``max_iters``) may move its end, never below where it is,
    and ``epoch_length`` must stay the same. A run bounded by epochs cannot switch to ``max_iters``
    (nor the reverse) without resetting the state first.
    """
    check_run_args(data, max_epochs, max_iters, epoch_length)
    if max_iters is not None and state.max_epochs is not None:
        raise ValueError(
            f"max_iters={max_iters} given to a run bounded by max_epochs={state.max_epochs}: "
            "set engine.state.max_epochs = None first to start a new run bounded by iterations"
        )
    if max_epochs is not None and state.max_iters is not None:
        raise ValueError(
            f"max_epochs={max_epochs} given to a run bounded by max_iters={state.max_iters}: "
            "set engine.state.max_iters = None first to start a new run bounded by epochs"
        )
    if state.max_epochs is not None and max_epochs is not None:
        if max_epochs < state.epoch:
            raise ValueError(
                f"`max_epochs`={max_epochs} is below the current epoch {state.epoch}: "
                "set engine.state.max_epochs = None to start a new run"
            )
        state.max_epochs = max_epochs
    if state.max_iters is not None and max_iters is not None:
        if max_iters < state.iteration:
            raise ValueError(
                f"`max_iters`={max_iters} is below the current iteration {state.iteration}: "
                "set engine.state.max_iters = None to start a new run"
            )
        state.max_iters = max_iters
    if (state.max_epochs is None and state.max_iters is None) or (run_is_done(state) and not paused):
        if epoch_length is None:
            epoch_length = data_length(data) if data is not None else None
            if epoch_length is None:
                epoch_length = state.epoch_length
        if data is None and epoch_length is None:
            raise ValueError("run() without data needs `epoch_length`: the number of iterations (batch=None) per epoch")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError("data is empty: it has length 0")
        state.iteration = 0
        state.epoch = 0
        state.epoch_iteration = 0
        state.epoch_length = epoch_length
        state.max_iters = max_iters
        state.max_epochs = None if max_iters is not None else (max_epochs or 1)
        return True
    if state.epoch_length is not None:
        if epoch_length is not None and epoch_length != state.epoch_length:
            raise ValueError(
                f"`epoch_length`={epoch_length} differs from the epoch length {state.epoch_length} of the run being "
                "continued: set engine.state.max_epochs = None to start a new run"
            )
    else:
        if epoch_length is None and data is not None:
            epoch_length = data_length(data)
        if epoch_length is not None:
            if epoch_length < 1:
                raise ValueError("data is empty: it has length 0")
            state.epoch_length = epoch_length
        if data is None and state.epoch_length is None and not paused:
            raise ValueError("continuing a run without data needs `epoch_length`")
    return False


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


def progress_dict(state: State, in_epoch: bool, user_keys: list[str]) -> OrderedDict[str, Any]:
    """What ``Engine.state_dict()`` returns: Ignite's keys (``epoch_length``, ``iteration``, the bound
    of the run, ``max_iters`` or ``max_epochs``, then the state attributes named in ``user_keys``) and
    Ember's two that make a mid-epoch resume exact: ``epoch_iteration`` (iterations done in an
    unfinished epoch, else 0) and ``epoch`` (that unfinished epoch; with ``epoch_iteration`` 0, the
    last epoch that ended)."""
    epoch_iteration = state.epoch_iteration if in_epoch else 0
    out: OrderedDict[str, Any] = OrderedDict(epoch_length=state.epoch_length, iteration=state.iteration)
    if state.max_iters is not None:
        out["max_iters"] = state.max_iters
    else:
        out["max_epochs"] = state.max_epochs
    for k in user_keys:
        out[k] = getattr(state, k)
    # with no iteration done yet in the current epoch (EPOCH_STARTED), the position is the end of the last one
    out["epoch"] = state.epoch - 1 if in_epoch and not epoch_iteration else state.epoch
    out["epoch_iteration"] = epoch_iteration
    return out


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues, read from a saved engine ``state_dict`` (see :func:`resume_point`).

    ``epoch`` is the last completed epoch and ``epoch_iteration`` the iterations already done in
    the next one (``None``: Ignite's rule when the run starts, ``iteration % epoch_length``).
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

    Ignite's dicts hold ``iteration`` or ``epoch`` (not both), ``epoch_length`` and one of
    ``max_epochs``/``max_iters``: the epoch is ``iteration // epoch_length`` (or the iteration
    ``epoch * epoch_length``). Ember's own dicts also hold ``epoch`` and ``epoch_iteration``, which
    place a mid-epoch position exactly even when epochs were cut short or have no fixed length.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = [k for k in user_keys if k not in state_dict]
    if missing:
        raise ValueError(f"state_dict lacks the user keys {missing} (engine.state_dict_user_keys)")
    if "max_epochs" not in state_dict and "max_iters" not in state_dict:
        raise ValueError(f"state_dict must hold 'max_epochs' or 'max_iters', got keys {list(state_dict)}")
    max_epochs, max_iters = state_dict.get("max_epochs"), state_dict.get("max_iters")
    if max_epochs is not None and max_iters is not None:
        raise ValueError(f"state_dict holds both max_epochs={max_epochs} and max_iters={max_iters}; keep one")
    epoch_length = state_dict.get("epoch_length")
    has_iteration, has_epoch = (state_dict.get(k) is not None for k in ("iteration", "epoch"))
    inside: int | None = None
    if has_iteration and has_epoch and "epoch_iteration" in state_dict:  # Ember's own
        iteration, epoch, inside = (int(state_dict[k]) for k in ("iteration", "epoch", "epoch_iteration"))
        if epoch_length and inside >= epoch_length:  # saved after the epoch's last iteration: it is done
            inside = 0
        epoch = epoch - 1 if inside else epoch
    elif has_iteration and has_epoch:
        raise ValueError(
            f"state_dict holds both iteration={state_dict['iteration']} and epoch={state_dict['epoch']} "
            "without 'epoch_iteration': keep one of them"
        )
    elif not (has_iteration or has_epoch):
        raise ValueError(f"state_dict must hold 'iteration' or 'epoch', got keys {list(state_dict)}")
    elif not state_dict["iteration" if has_iteration else "epoch"]:
        iteration = epoch = 0
    elif not epoch_length or epoch_length < 1:
        raise ValueError(
            f"state_dict needs a positive 'epoch_length' to derive the epoch from the iteration, got {epoch_length!r}"
        )
    elif has_epoch:
        epoch = int(state_dict["epoch"])
        iteration = epoch * epoch_length
    else:
        iteration = int(state_dict["iteration"])
        epoch = iteration // epoch_length
    for name, bound, counter, reached in (("max_epochs", max_epochs, "epoch", epoch), ("max_iters", max_iters, "iteration", iteration)):
        if bound is not None and (bound < 1 or bound < reached):
            raise ValueError(f"state_dict's {name}={bound} must be positive and not below the {counter} {reached}")
    return ResumePoint(
        iteration=iteration,
        epoch=epoch,
        epoch_length=epoch_length,
        max_epochs=max_epochs,
        max_iters=max_iters,
        epoch_iteration=inside,
        user_values={k: state_dict[k] for k in user_keys},
    )
