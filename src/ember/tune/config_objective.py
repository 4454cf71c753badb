"""The objective of a config-file study: one ``ember fit`` run per trial, with the sampled values
written over the base config, scored by a metric from ``trainer.callback_metrics``."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ember.callbacks.model_summary import ModelSummary
from ember.io.atomic import atomic_write_text
from ember.tune.pruning import PruningCallback
from ember.tune.space import Param, nested_overrides
from ember.tune.trial import record_run, trial_dir

OVERRIDES_FILE = "overrides.yaml"


class ConfigObjective:
    """``trial -> float``: fit the model of ``configs`` (the YAML files ``ember fit --config`` takes,
    later ones win) with the trial's values for ``space``, and return ``monitor`` at the end of fit.

    Each trial runs in its own directory (``trainer.default_root_dir``, given by
    :func:`ember.tune.trial_dir`), which also keeps the trial's values as ``overrides.yaml``, so
    ``ember fit --config BASE.yaml --config trial_0003/overrides.yaml`` re-runs the trial.
    A :class:`PruningCallback` reports ``monitor`` after every validation. The model summary is
    printed for the first trial this objective runs, not for every trial.
    """

    def __init__(self, configs: Sequence[str | os.PathLike], space: Mapping[str, Param], monitor: str) -> None:
        self.configs = [str(c) for c in configs]
        if not self.configs:
            raise ValueError("a config study needs at least one config file")
        for c in self.configs:
            if not Path(c).is_file():
                raise FileNotFoundError(f"config file {c!r} does not exist")
        if "trainer.default_root_dir" in space:
            raise ValueError("the search space cannot set trainer.default_root_dir: each trial gets its own directory")
        self.space = dict(space)
        self.monitor = monitor
        self.summarized = False  # the first trial's fit prints the model summary; the others do not
        self._check()

    def _fit_args(self, overrides: str) -> list[str]:
        args = ["fit"]
        for c in self.configs:
            args += ["--config", c]
        return [*args, "--config", overrides]

    def _check(self) -> None:
        """Parse the config with an example value of every parameter: a key the config does not
        have, or a value of the wrong kind, fails here rather than in every trial."""
        from jsonargparse import ArgumentError

        from ember.cli.main import build_parser

        if os.getcwd() not in sys.path:  # as EmberCLI does: users' classes live in the current directory
            sys.path.insert(0, os.getcwd())
        parser = build_parser()
        shown = ", ".join(self.configs)
        try:
            parser.parse_args(self._fit_args("{}"))
        except (ArgumentError, ValueError, TypeError) as err:
            raise ValueError(f"config {shown} is not a valid `ember fit` config: {err}") from None
        examples = nested_overrides({name: p.example() for name, p in self.space.items()})
        try:
            parser.parse_args(self._fit_args(yaml.safe_dump(examples)))
        except (ArgumentError, ValueError, TypeError) as err:
            raise ValueError(f"the search space does not fit the config {shown}: {err}") from None

    def __call__(self, trial: Any) -> float:
        from ember.cli.main import EmberCLI

        values = {name: p.suggest(trial) for name, p in self.space.items()}
        root = trial_dir(trial)
        root.mkdir(parents=True, exist_ok=True)
        overrides = root / OVERRIDES_FILE
        atomic_write_text(
            overrides, yaml.safe_dump(nested_overrides({**values, "trainer.default_root_dir": str(root)}))
        )
        cli = EmberCLI(self._fit_args(str(overrides)), run=False)
        trainer = cli.trainer
        trainer.callbacks.append(PruningCallback(trial, self.monitor))
        if self.summarized:
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, ModelSummary)]
        self.summarized = self.summarized or any(isinstance(c, ModelSummary) for c in trainer.callbacks)
        try:
            cli.run()
        finally:
            record_run(trial, trainer)
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise ValueError(f"monitor={self.monitor!r} was not logged by the end of fit; logged: {sorted(metrics)}")
        value = float(metrics[self.monitor])
        if math.isfinite(value):
            trial.set_user_attr("value", value)
        return value
