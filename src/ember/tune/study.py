"""``optimize``: an Optuna study over a user function or an ``ember fit`` config, every trial in
its own directory, failures recorded and skipped, results easy to read back."""

from __future__ import annotations

import gc
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.tune._deps import import_optuna
from ember.tune.storage import open_storage, redact, sqlite_url
from ember.tune.trial import record_run, trial_dir

__all__ = [  # trial_dir and record_run live in ember.tune.trial; named here too, where they always were
    "DIRECTIONS",
    "PRUNERS",
    "SAMPLERS",
    "TrialResult",
    "best_result",
    "new_study_name",
    "optimize",
    "record_run",
    "resolve_study_name",
    "trial_dir",
    "trial_results",
]

DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
_ERROR_CHARS = 2000  # of an error message kept with a failed trial


def optimize(
    objective_or_config: Callable[[Any], float] | str | os.PathLike | Sequence[str | os.PathLike],
    space: Mapping[str, Any] | str | os.PathLike | None = None,
    monitor: str = "val_loss",
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: Any = None,
    study_name: str | None = None,
    direction: str = "minimize",
    sampler: Any = None,
    pruner: Any = None,
    *,
    root_dir: str | os.PathLike = "ember_tune",
    seed: int | None = None,
    connect_timeout: float = 10.0,
    callbacks: Iterable[Callable[[Any, Any], None]] = (),
    gc_after_trial: bool = False,
) -> Any:
    """Run (or join) an Optuna study and return it (an ``optuna.Study``).

    ``objective_or_config`` is either a function ``trial -> float`` or the config file(s) that
    ``ember fit --config`` takes, with ``space`` (a dict or YAML file, see :mod:`ember.tune.space`)
    saying which dotted config paths to search; a config trial's value is ``monitor`` from
    ``trainer.callback_metrics`` at the end of its fit, and a :class:`PruningCallback` reports it
    after every validation.

    Every trial gets its own directory ``root_dir/<study_name>/trial_NNNN`` (:func:`trial_dir`; a
    config trial's ``trainer.default_root_dir``). Its user attrs hold ``root_dir``, ``params``,
    ``value``, ``log_dir`` and, when the trainer has a checkpoint callback, ``checkpoint_path``.
    A trial that raises is recorded FAILED with its ``error`` and the study goes on; one that is
    pruned is recorded PRUNED. :func:`best_result` reads the best trial back.

    ``storage``: a URL (see :mod:`ember.tune.storage`) or an Optuna storage; ``None`` is the SQLite
    file ``root_dir/<study_name>/study.db``. Processes that pass the same ``storage`` and
    ``study_name`` join one study (each runs its own ``n_trials``). ``study_name=None`` makes a new,
    unique name. ``n_trials`` and ``timeout`` (seconds) both ``None``: run until interrupted.
    ``sampler``/``pruner``: Optuna objects, names (``"tpe"``, ``"random"``; ``"median"``,
    ``"hyperband"``, ``"successive_halving"``, ``"none"``) or ``None`` for Optuna's defaults (TPE,
    median); ``seed`` seeds a named sampler. ``callbacks`` are Optuna's ``(study, frozen_trial)``
    callbacks, called after each trial of this process; ``gc_after_trial`` runs the garbage collector
    after each (on a GPU, a finished trial's memory is collected before the next trial anyway).

    Example::

        study = ember.tune.optimize("config.yaml", {"model.init_args.lr": {"type": "float", "low": 1e-4,
                                    "high": 1e-1, "log": True}}, n_trials=20)
        best = ember.tune.best_result(study)
        print(best.value, best.params, best.checkpoint_path)
    """
    optuna = import_optuna()
    _check_args(monitor, n_trials, timeout, direction)
    objective = _objective(objective_or_config, space, monitor)
    study_name = resolve_study_name(study_name)
    sampler, pruner = _sampler(optuna, sampler, seed), _pruner(optuna, pruner)
    study_dir = Path(root_dir).resolve() / study_name
    if storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        storage = sqlite_url(study_dir / "study.db")
    where = redact(storage) if isinstance(storage, str) else type(storage).__name__
    study = _create_study(optuna, open_storage(storage, connect_timeout), where, study_name, direction, sampler, pruner)
    study.optimize(
        _TrialRunner(objective, study_dir),
        n_trials=n_trials,
        timeout=timeout,
        catch=(Exception,),
        callbacks=list(callbacks),
        gc_after_trial=gc_after_trial,
    )
    return study


@dataclass
class TrialResult:
    """One trial as :func:`trial_results` reads it back."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None
    log_dir: str | None = None
    error: str | None = None


def trial_results(study: Any) -> list[TrialResult]:
    """Every trial of ``study`` in trial-number order."""
    return [_result(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]


def best_result(study: Any) -> TrialResult | None:
    """The best completed trial (its value, params and checkpoint path), or None if none completed."""
    optuna = import_optuna()
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    return _result(study.best_trial)


# --------------------------------------------------------------------------- internals


class _TrialRunner:
    """Wraps the objective: gives the trial its directory and keeps the error of a failed trial."""

    def __init__(self, objective: Callable[[Any], float], study_dir: Path) -> None:
        self.objective = objective
        self.study_dir = study_dir

    def __call__(self, trial: Any) -> float:
        optuna = import_optuna()
        _free_accelerator_memory()
        trial.set_user_attr("root_dir", str(self.study_dir / f"trial_{trial.number:04d}"))
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:_ERROR_CHARS])
            raise
        if "value" not in trial.user_attrs and _finite(value):
            trial.set_user_attr("value", float(value))
        if "params" not in trial.user_attrs:
            trial.set_user_attr("params", dict(trial.params))
        return value


def _free_accelerator_memory() -> None:
    """A finished trial's Trainer and model form reference cycles; on a GPU, collect them before the
    next trial starts so it has the memory (the cycle collector alone may run much later)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _check_args(monitor: Any, n_trials: Any, timeout: Any, direction: Any) -> None:
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor={monitor!r} must be the non-empty name of a logged metric, e.g. 'val_loss'")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ValueError(f"n_trials={n_trials!r} must be a positive integer or None")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout={timeout!r} must be a positive number of seconds or None")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}; choose 'minimize' or 'maximize'")


def _objective(objective_or_config: Any, space: Any, monitor: str) -> Callable[[Any], float]:
    if callable(objective_or_config):
        if space is not None:
            raise ValueError("space is for a config objective; a function objective samples its own parameters")
        return objective_or_config
    if isinstance(objective_or_config, (str, os.PathLike)):
        configs = [objective_or_config]
    elif (
        isinstance(objective_or_config, Sequence)
        and objective_or_config
        and all(isinstance(c, (str, os.PathLike)) for c in objective_or_config)
    ):
        configs = list(objective_or_config)
    else:
        raise TypeError(
            f"objective_or_config must be a function trial -> float or config file path(s), got {type(objective_or_config).__name__}"
        )
    if space is None:
        raise ValueError(
            "a config objective needs a search space: space={'model.init_args.lr': {'type': 'float', ...}} or a YAML file"
        )
    from ember.tune.config_objective import ConfigObjective  # imports jsonargparse and the CLI when used
    from ember.tune.space import load_space

    return ConfigObjective(configs, load_space(space), monitor)


def new_study_name() -> str:
    """A fresh, unique study name: ``study-YYYYMMDD-HHMMSS-xxxxxx`` (what ``study_name=None`` gets)."""
    return f"study-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def resolve_study_name(name: Any) -> str:
    """``name`` checked (a ``ValueError`` names what is wrong), or :func:`new_study_name` for None."""
    if name is None:
        return new_study_name()
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or len(name) > 512
    ):
        raise ValueError(f"study_name={name!r} must be a non-empty name (at most 512 characters) without '/' or '\\'")
    return name


def _sampler(optuna: Any, sampler: Any, seed: int | None) -> Any:
    if sampler is None or isinstance(sampler, optuna.samplers.BaseSampler):
        if seed is not None and sampler is not None:
            raise ValueError("seed is for a sampler given by name; seed your sampler object yourself")
        return optuna.samplers.TPESampler(seed=seed) if sampler is None and seed is not None else sampler
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler={sampler!r}; use an optuna sampler, None or one of {', '.join(map(repr, SAMPLERS))}")


def _pruner(optuna: Any, pruner: Any) -> Any:
    if pruner is None or isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    named = {
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }
    if pruner not in named:
        raise ValueError(f"pruner={pruner!r}; use an optuna pruner, None or one of {', '.join(map(repr, PRUNERS))}")
    return named[pruner]()


def _create_study(optuna: Any, storage: Any, where: str, name: str, direction: str, sampler: Any, pruner: Any) -> Any:
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    existing = study.direction.name.lower()
    if existing != direction:  # Optuna would silently keep the stored direction
        raise ValueError(
            f"study {name!r} in {where} already exists with direction={existing!r}; you asked for {direction!r}"
        )
    return study


def _result(t: Any) -> TrialResult:
    attrs = t.user_attrs
    return TrialResult(
        number=t.number,
        state=t.state.name,
        value=t.value if t.values is not None and len(t.values) == 1 else None,
        params=dict(t.params),
        checkpoint_path=attrs.get("checkpoint_path"),
        log_dir=attrs.get("log_dir"),
        error=attrs.get("error"),
    )
