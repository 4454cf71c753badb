"""PruningCallback: what it reports, when, and that a diverging configuration is pruned early."""

from __future__ import annotations

import optuna
import pytest
from tune_tiny import write_config

import ember.tune
from ember.tune import PruningCallback
from helpers import LinearModel, loader, quiet_trainer


class Recorder:
    """A trial stand-in that records reports and prunes when told to."""

    number = 7

    def __init__(self, prune_at: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_at is not None and len(self.reports) > self.prune_at


def test_reports_every_validation_of_fit_but_not_the_sanity_check(tmp_path):
    trial = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=3, num_sanity_val_steps=2, callbacks=[PruningCallback(trial)])
    trainer.fit(LinearModel(lr=0.05), loader(), loader(n=16))
    assert [step for step, _ in trial.reports] == [0, 1, 2]
    assert trial.reports[-1][1] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    trainer.validate(trainer.model, loader(n=16), verbose=False)  # outside fit: nothing reported
    assert len(trial.reports) == 3


def test_mid_epoch_validations_get_their_own_steps(tmp_path):
    trial = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, val_check_interval=0.5, callbacks=[PruningCallback(trial)])
    trainer.fit(LinearModel(lr=0.05), loader(), loader(n=16))
    assert [step for step, _ in trial.reports] == [0, 1, 2, 3]


def test_prune_raises_trial_pruned_out_of_fit_and_stops_training(tmp_path):
    trial = Recorder(prune_at=0)
    model = LinearModel(lr=0.05)
    trainer = quiet_trainer(tmp_path, max_epochs=10, callbacks=[PruningCallback(trial)])
    with pytest.raises(optuna.TrialPruned, match=r"trial 7 pruned at validation 0 \(epoch 0\): val_loss="):
        trainer.fit(model, loader(), loader(n=16))
    assert trainer.current_epoch == 0 and model.training_step_calls == 8  # one epoch of 8 batches, not ten


def test_missing_monitor_and_bad_arguments_are_named(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[PruningCallback(Recorder(), monitor="val_acc")])
    with pytest.raises(ValueError, match=r"PruningCallback\(monitor='val_acc'\).*logged: \['val_loss'\]"):
        trainer.fit(LinearModel(), loader(), loader(n=16))
    with pytest.raises(TypeError, match=r"must be an optuna\.Trial"):
        PruningCallback(object())
    with pytest.raises(ValueError, match="monitor=''"):
        PruningCallback(Recorder(), monitor="")


def test_a_diverging_learning_rate_is_pruned_after_its_first_epoch(tmp_path):
    """The grid runs lr=0.05 (converges) then lr=5.0 (SGD diverges: val_loss explodes in epoch 0);
    the threshold pruner stops the second at its first report, of eight epochs."""
    config = write_config(tmp_path, max_epochs=8)
    grid = optuna.samplers.GridSampler({"model.init_args.lr": [0.05, 5.0]})
    study = ember.tune.optimize(
        config,
        {"model.init_args.lr": {"type": "categorical", "choices": [0.05, 5.0]}},
        n_trials=2,
        sampler=grid,
        pruner=optuna.pruners.ThresholdPruner(upper=100.0),
        root_dir=tmp_path / "runs",
        study_name="prune",
    )
    good, bad = sorted(study.trials, key=lambda t: t.params["model.init_args.lr"])
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good.intermediate_values) == list(range(8)) and good.value < 1.0
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert list(bad.intermediate_values) == [0]
    first = bad.intermediate_values[0]
    assert not first < 100.0  # the value that triggered the pruner (huge, inf or nan)
    assert bad.user_attrs["epochs"] == 0  # stopped inside its first epoch: no epoch completed
    assert "error" not in bad.user_attrs
