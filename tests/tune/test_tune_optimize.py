"""ember.tune.optimize: function and config objectives, per-trial isolation, failures, results."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from tune_tiny import write_config

import ember
from ember.tune import PruningCallback, best_result, format_results, optimize, save_plots, trial_dir, trial_results

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits" / "config.yaml"
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def test_function_objective_failures_are_recorded_and_the_study_goes_on(tmp_path):
    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        if trial.number == 1:
            raise RuntimeError("boom in trial 1")
        return (x - 1) ** 2

    study = optimize(objective, n_trials=4, root_dir=tmp_path, study_name="f", sampler="random", seed=0)
    assert [t.state for t in study.trials] == [COMPLETE, FAIL, COMPLETE, COMPLETE]
    failed = study.trials[1]
    assert failed.user_attrs["error"] == "RuntimeError: boom in trial 1"
    done = [t for t in study.trials if t.state == COMPLETE]
    best = best_result(study)
    assert best.value == min(t.value for t in done) and best.params == study.best_trial.params
    for t in study.trials:
        assert t.user_attrs["root_dir"] == str(tmp_path.resolve() / "f" / f"trial_{t.number:04d}")
    assert study.trials[0].user_attrs["value"] == study.trials[0].value
    table = format_results(study, "loss")
    assert "FAIL" in table and "RuntimeError: boom in trial 1" in table and f"Best trial: #{best.number}" in table
    assert [r.number for r in trial_results(study)] == [0, 1, 2, 3]


def test_function_objective_with_trainer_in_its_own_trial_dir(tmp_path):
    from helpers import LinearModel, loader

    def objective(trial):
        lr = trial.suggest_float("lr", 0.01, 0.1, log=True)
        trainer = ember.Trainer(
            max_epochs=2, default_root_dir=trial_dir(trial), enable_progress_bar=False, enable_model_summary=False,
            callbacks=[PruningCallback(trial)],
        )  # fmt: skip
        trainer.fit(LinearModel(lr=lr), loader(), loader(n=16))
        ember.tune.record_run(trial, trainer)
        return trainer.callback_metrics["val_loss"].item()

    study = optimize(objective, n_trials=2, root_dir=tmp_path, study_name="fit", pruner="none")
    dirs = {t.user_attrs["log_dir"] for t in study.trials}
    assert len(dirs) == 2
    for t in study.trials:
        assert t.state == COMPLETE and t.user_attrs["log_dir"].startswith(t.user_attrs["root_dir"])
        assert sorted(t.intermediate_values) == [0, 1] and t.user_attrs["epochs"] == 2


def test_config_objective_isolates_trials_and_records_paths(tmp_path):
    config = write_config(tmp_path, max_epochs=2)
    space = tmp_path / "space.yaml"
    space.write_text(
        "model.init_args.lr: {type: float, low: 1e-3, high: 1e-1, log: true}\n"
        "model.init_args.width: {type: int, low: 1, high: 4}\n"
        "data.init_args.batch_size: {type: categorical, choices: [16, 32]}\n"
    )
    study = optimize(config, space, n_trials=3, root_dir=tmp_path / "runs", study_name="cfg", sampler="random", seed=1)
    assert all(t.state == COMPLETE for t in study.trials)
    roots = set()
    for t in study.trials:
        root = Path(t.user_attrs["root_dir"])
        roots.add(root)
        assert root == tmp_path.resolve() / "runs" / "cfg" / f"trial_{t.number:04d}"
        overrides = yaml.safe_load((root / "overrides.yaml").read_text())
        assert overrides["model"]["init_args"]["lr"] == t.params["model.init_args.lr"]
        assert overrides["data"]["init_args"]["batch_size"] == t.params["data.init_args.batch_size"]
        assert overrides["trainer"]["default_root_dir"] == str(root)
        assert Path(t.user_attrs["log_dir"]).is_relative_to(root)
        assert t.user_attrs["params"] == t.params and t.user_attrs["value"] == t.value
        assert t.user_attrs["epochs"] == 2 and sorted(t.intermediate_values) == [0, 1]
        checkpoint = t.user_attrs.get("checkpoint_path")
        if checkpoint is not None:  # a Trainer with a checkpoint callback records its best checkpoint
            assert Path(checkpoint).is_file() and Path(checkpoint).is_relative_to(root)
    assert len(roots) == 3
    best = best_result(study)
    assert best.value == min(t.value for t in study.trials)


def test_a_failing_config_trial_is_recorded_with_its_error(tmp_path):
    config = write_config(tmp_path, max_epochs=1)
    study = optimize(
        config,
        {"model.init_args.fail": {"type": "categorical", "choices": [False, True]}},
        n_trials=2,
        sampler=optuna.samplers.GridSampler({"model.init_args.fail": [False, True]}, seed=0),
        root_dir=tmp_path / "runs",
        study_name="failing",
    )
    by_fail = {t.params["model.init_args.fail"]: t for t in study.trials}
    assert by_fail[False].state == COMPLETE
    assert by_fail[True].state == FAIL
    assert by_fail[True].user_attrs["error"] == "RuntimeError: this configuration is broken on purpose"


def test_digits_example_config_and_space_with_tiny_limits_and_plots(tmp_path):
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        "trainer:\n  max_epochs: 2\n  limit_train_batches: 3\n  limit_val_batches: 1\n  num_sanity_val_steps: 0\n"
        "  enable_progress_bar: false\n  enable_model_summary: false\n"
    )
    space = {
        "model.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.init_args.channels": {"type": "int", "low": 4, "high": 8, "step": 4},
    }
    study = optimize(
        [DIGITS, limits], space, monitor="val_acc", direction="maximize", n_trials=2, root_dir=tmp_path / "runs",
        study_name="digits", sampler="random", seed=0,
    )  # fmt: skip
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]
    assert all(0.0 <= t.value <= 1.0 for t in study.trials)
    assert best_result(study).value == max(t.value for t in study.trials)
    written = save_plots(study, tmp_path / "plots")
    assert set(written) >= {"optimization_history", "param_importances"}
    for path in written.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_space_is_checked_against_the_config_before_any_trial(tmp_path):
    config = write_config(tmp_path)
    with pytest.raises(
        ValueError, match=r"(?s)the search space does not fit the config .*tiny.yaml.*'lrr' is not accepted"
    ):
        optimize(
            config, {"model.init_args.lrr": {"type": "float", "low": 0.1, "high": 1.0}}, n_trials=1, root_dir=tmp_path
        )
    with pytest.raises(ValueError, match=r"(?s)does not fit the config.*max_epochz"):
        optimize(config, {"trainer.max_epochz": {"type": "int", "low": 1, "high": 2}}, n_trials=1, root_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        optimize(
            tmp_path / "missing.yaml", {"model.init_args.lr": {"type": "float", "low": 0.1, "high": 1.0}}, n_trials=1
        )
    with pytest.raises(ValueError, match=r"cannot set trainer\.default_root_dir"):
        optimize(
            config,
            {"trainer.default_root_dir": {"type": "categorical", "choices": ["a"]}},
            n_trials=1,
            root_dir=tmp_path,
        )
    assert not (tmp_path / "ember_tune").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, "n_trials=0 must be a positive integer"),
        ({"timeout": -1}, "timeout=-1 must be a positive number"),
        ({"direction": "up"}, "direction='up'; choose 'minimize' or 'maximize'"),
        ({"monitor": ""}, "monitor=''"),
        ({"sampler": "annealing"}, "sampler='annealing'"),
        ({"pruner": "sometimes"}, "pruner='sometimes'"),
        ({"study_name": "a/b"}, "study_name='a/b'"),
        ({"space": {"x": {"type": "int", "low": 0, "high": 1}}}, "space is for a config objective"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        optimize(lambda t: 0.0, **{"n_trials": 1, "root_dir": tmp_path, **kwargs})
    assert message in str(info.value)


def test_a_config_objective_needs_a_space(tmp_path):
    with pytest.raises(ValueError, match="needs a search space"):
        optimize(write_config(tmp_path), n_trials=1, root_dir=tmp_path)
    with pytest.raises(TypeError, match="objective_or_config must be"):
        optimize(42, n_trials=1, root_dir=tmp_path)
