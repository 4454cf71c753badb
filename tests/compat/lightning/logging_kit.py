"""Helpers of the differential ``self.log`` tests (``test_lightning_logging_hooks.py`` and
``test_lightning_logging_values.py``): run one scenario on Lightning and on Ember with a CSVLogger
and collect what a user observes — the CSV rows (step, keys, values, ``epoch``), the metric views
after each stage and the results of ``validate()``/``test()`` — or the error raised."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning_kit import BOTH, Framework, data, regression_module
from torch.utils.data import DataLoader

TRAIN = dict(n=20, batch_size=8)  # batches of 8, 8 and 4: batch-size weighting shows
VAL = dict(n=12, batch_size=8, seed=1)


def floats(values: Any) -> dict[str, float]:
    return {k: round(float(v), 5) for k, v in values.items()}


def csv_rows(logger: Any) -> list[dict[str, float]]:
    """The rows of the logger's ``metrics.csv``, without the empty cells."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: round(float(v), 5) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def observe(
    fw: Framework,
    tmp_path: Path,
    module: Any,
    stages: tuple[str, ...] = ("fit",),
    callbacks: tuple = (),
    train: DataLoader | None = None,
    val: Any = None,
    **trainer_options: Any,
) -> dict[str, Any]:
    """Run ``stages`` on one trainer with a CSVLogger; the views after each stage, the results of
    validate/test and the CSV rows at the end — or the error of the first stage that raised."""
    options = dict(max_epochs=2, log_every_n_steps=1, num_sanity_val_steps=0)
    options.update(trainer_options)
    logger = fw.CSVLogger(str(tmp_path / fw.name / "csv"))
    trainer = fw.trainer(tmp_path / fw.name, logger=logger, callbacks=list(callbacks), **options)
    train = train if train is not None else data(**TRAIN)
    val = val if val is not None else data(**VAL)
    out: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for stage in stages:
                if stage == "fit":
                    trainer.fit(module, train, val)
                else:
                    results = getattr(trainer, stage)(module, val, verbose=False)
                    out[f"{stage} results"] = [floats(r) for r in results]
                out[f"{stage} views"] = {
                    "callback": floats(trainer.callback_metrics),
                    "logged": floats(trainer.logged_metrics),
                    "bar": floats(trainer.progress_bar_metrics),
                }
    except Exception as err:  # the error itself is what is compared
        return {"error": err}
    out["csv"] = csv_rows(logger)
    return out


def assert_same(expected: dict[str, Any], got: dict[str, Any]) -> None:
    assert "error" not in expected, f"Lightning raised {expected['error']!r}"
    assert "error" not in got, f"Ember raised {got['error']!r}"
    assert list(got) == list(expected)
    for part in expected:
        assert got[part] == expected[part], part


def both(tmp_path: Path, make: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``observe`` on Lightning and on Ember; ``make(fw)`` returns ``(module, callbacks)``."""
    runs = []
    for fw in BOTH:
        torch.manual_seed(0)
        module, callbacks = make(fw)
        runs.append(observe(fw, tmp_path, module, callbacks=callbacks, **kwargs))
    return runs[0], runs[1]



def refusal(fw: Framework, tmp_path: Path, make: Any, stages: tuple[str, ...], **options: Any) -> Exception:
    torch.manual_seed(0)
    module, callbacks = make(fw)
    result = observe(fw, tmp_path, module, stages, callbacks, num_sanity_val_steps=1, **options)
    assert "error" in result, f"{fw.name} did not refuse"
    return result["error"]


def mse(module: Any, batch: Any) -> torch.Tensor:
    x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch[-2:]
    return torch.nn.functional.mse_loss(module(x), y)


def scenario(attrs: Any = None, **methods: Any) -> Any:
    """``make(fw)`` for :func:`both`: the regression module with ``methods`` (written once, for both
    frameworks) and the attributes ``attrs()`` returns (metrics, parameters) set on the instance."""

    def make(fw: Framework) -> tuple[Any, tuple]:
        module = type("Logs", (regression_module(fw),), methods)()
        for name, value in (attrs() if attrs else {}).items():
            setattr(module, name, value)
        return module, ()

    return make


def train_step_logging(log: Any) -> Any:
    """A ``training_step`` that calls ``log(self, batch, batch_idx, loss)`` and returns the loss."""

    def training_step(self: Any, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = mse(self, batch)
        log(self, batch, batch_idx, loss)
        return loss

    return training_step


def val_step_logging(log: Any) -> Any:
    def validation_step(self: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        log(self, batch, batch_idx, mse(self, batch))

    return validation_step


FIT_VALIDATE_TEST = ("fit", "validate", "test")
