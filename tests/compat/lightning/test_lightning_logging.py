"""``self.log`` as a user observes it, Lightning against Ember: the rows a logger receives (step,
keys, values), ``callback_metrics``/``logged_metrics``/``progress_bar_metrics`` and the result
dicts of ``validate()``/``test()``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning_kit import BOTH, EMBER, LIGHTNING, Framework, data, quiet_fit, regression_module


def recording_logger(fw: Framework, rows: list) -> Any:
    """A logger of ``fw`` that records every ``log_metrics`` call as (step, {key: float})."""
    base = fw.CSVLogger

    class Recording(base):
        def log_metrics(self, metrics, step=None):
            rows.append((step, {k: round(float(v), 5) for k, v in metrics.items()}))

        def log_hyperparams(self, *args, **kwargs):
            return None

    return Recording


def logging_module(fw: Framework, **log_options: Any) -> Any:
    class Logs(regression_module(fw)):
        def on_train_start(self):
            self.log("start_value", 3.0)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss, **log_options)
            self.log("constant", 2.0, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("val_loss", loss, **log_options)
            self.log("val_mean", loss, prog_bar=True)

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self(x), y), **log_options)

        def on_train_epoch_end(self):
            self.log("epoch_end_value", float(self.current_epoch))

    return Logs()


def observed(fw: Framework, tmp_path: Any, trainer_options: dict, **log_options: Any) -> dict[str, Any]:
    rows: list = []
    logger = recording_logger(fw, rows)(str(tmp_path / fw.name / "logs"))
    torch.manual_seed(0)
    trainer = fw.trainer(tmp_path / fw.name, logger=logger, **trainer_options)
    module = logging_module(fw, **log_options)
    quiet_fit(trainer, module, data(32, batch_size=4), data(8, batch_size=4))
    after_fit = {
        "callback": {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()},
        "logged": {k: round(float(v), 5) for k, v in trainer.logged_metrics.items()},
        "bar": {k: round(float(v), 5) for k, v in trainer.progress_bar_metrics.items()},
    }
    validated = [{k: round(v, 5) for k, v in r.items()} for r in trainer.validate(module, data(8, batch_size=4), verbose=False)]
    tested = [{k: round(v, 5) for k, v in r.items()} for r in trainer.test(module, data(8, batch_size=4), verbose=False)]
    return {"rows": rows, "after fit": after_fit, "validate": validated, "test": tested}


SCENARIOS = {
    "step-and-epoch": (dict(max_epochs=2, log_every_n_steps=2, num_sanity_val_steps=0), dict(on_step=True, on_epoch=True)),
    "defaults": (dict(max_epochs=2, log_every_n_steps=3, num_sanity_val_steps=0), {}),
    "epoch-only": (dict(max_epochs=2, log_every_n_steps=1, num_sanity_val_steps=0), dict(on_step=False, on_epoch=True)),
    "step-only": (dict(max_epochs=1, log_every_n_steps=1, num_sanity_val_steps=0), dict(on_step=True, on_epoch=False)),
    "val-twice-an-epoch": (
        dict(max_epochs=1, log_every_n_steps=1, val_check_interval=0.5, num_sanity_val_steps=0),
        dict(on_step=True, on_epoch=True),
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_logged_rows_and_metric_views_match(tmp_path, scenario):
    trainer_options, log_options = SCENARIOS[scenario]
    expected = observed(LIGHTNING, tmp_path, trainer_options, **log_options)
    got = observed(EMBER, tmp_path, trainer_options, **log_options)
    for part in ("rows", "after fit", "validate", "test"):
        assert got[part] == expected[part], part


def test_several_loaders_without_the_dataloader_index_do_not_leak_keys(tmp_path):
    results = {}
    for fw in BOTH:

        class TwoLoaders(regression_module(fw)):
            def validation_step(self, batch, batch_idx, dataloader_idx=0):
                x, y = batch
                self.log(f"val_loss_{dataloader_idx}", torch.nn.functional.mse_loss(self(x), y), add_dataloader_idx=False)

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        torch.manual_seed(0)
        module = TwoLoaders()
        results[fw.name] = trainer.validate(module, [data(8, seed=1), data(8, seed=2)], verbose=False)
    assert [sorted(r) for r in results["ember"]] == [sorted(r) for r in results["lightning"]]
    for got, expected in zip(results["ember"], results["lightning"], strict=True):
        assert got == pytest.approx(expected)


@pytest.mark.parametrize("reduce_fx", ["SUM", max, min, "max"], ids=["SUM", "builtin-max", "builtin-min", "max"])
def test_reduce_fx_spellings_give_the_same_epoch_value(tmp_path, reduce_fx):
    values = {}
    for fw in BOTH:

        class Reduces(regression_module(fw)):
            def validation_step(self, batch, batch_idx):
                self.log("v", float(batch_idx) * 2.0 - 1.0, reduce_fx=reduce_fx)

        trainer = fw.trainer(tmp_path / fw.name, max_epochs=1)
        values[fw.name] = trainer.validate(Reduces(), data(24, batch_size=4), verbose=False)
    assert values["ember"] == values["lightning"]
