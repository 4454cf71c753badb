"""``ember tune``: a real run as users run it (the console script in a subprocess), and its errors."""

from __future__ import annotations

import re
import socket

import optuna
import pytest
import yaml
from tune_procs import run_ember
from tune_tiny import write_config

from ember.cli import main
from ember.tune import plot_figures

PNG = b"\x89PNG\r\n\x1a\n"


def _space(tmp_path, text="model.init_args.lr: {type: float, low: 1e-3, high: 0.2, log: true}\n"):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_ember_tune_runs_trials_prints_a_table_and_saves_plots(tmp_path):
    config = write_config(tmp_path, max_epochs=2)
    space = _space(
        tmp_path,
        "model.init_args.lr: {type: float, low: 1e-3, high: 0.2, log: true}\nmodel.init_args.width: {type: int, low: 1, high: 3}\n",
    )
    out = run_ember(  # (the older dashed spellings, --n-trials and friends, still work)
        "tune", "--config", config, "--space", space, "--n-trials", "3", "--study-name", "cli",
        "--root-dir", str(tmp_path / "runs"), "--plots", str(tmp_path / "plots"), "--seed", "0",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^Study 'cli' \(minimize val_loss\): 3 trials \(3 complete\)$", out.stdout, re.M)
    assert re.search(r"^\s*trial\s+state\s+val_loss\s+model\.init_args\.lr\s+model\.init_args\.width", out.stdout, re.M)
    assert re.search(r"^Best trial: #\d with val_loss=", out.stdout, re.M)
    assert "This process ran 3 trial(s): #0, #1, #2" in out.stdout
    assert (tmp_path / "runs" / "cli" / "study.db").is_file()
    for name in ("optimization_history", "param_importances"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == PNG
    assert "plotly" not in out.stderr.lower()


def _tune(tmp_path, capsys, *extra: str, space: str | None = None) -> tuple[int, str]:
    """``ember tune`` in this process (the console script's entry point); returns (status, stderr)."""
    config = write_config(tmp_path, max_epochs=1)
    args = [
        "tune",
        "--config",
        config,
        "--space",
        space or _space(tmp_path),
        "--root_dir",
        str(tmp_path / "runs"),
        *extra,
    ]
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_unknown_parameter_type_is_a_clear_error(tmp_path, capsys):
    space = _space(tmp_path, "model.init_args.lr: {type: loguniform, low: 0.001, high: 0.1}\n")
    status, err = _tune(tmp_path, capsys, "--n_trials", "1", space=space)
    assert status == 2
    assert (
        "parameter 'model.init_args.lr' has unknown type 'loguniform'; use one of 'float', 'int', 'categorical'" in err
    )
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("localhost:5432/optuna", "is not a storage URL"),
        ("postgresql://me:secret@db:54x2/optuna", "is not a valid database URL"),
        ("redis://cache:6379/first", "the database 'first' must be a number"),
    ],
)
def test_malformed_storage_url_is_a_clear_error(tmp_path, capsys, storage, message):
    status, err = _tune(tmp_path, capsys, "--n_trials", "1", "--storage", storage)
    assert status == 2 and message in err and "secret" not in err


def test_unreachable_database_fails_fast(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, err = _tune(
        tmp_path,
        capsys,
        "--n_trials",
        "1",
        "--storage",
        f"postgresql://u:pw@127.0.0.1:{port}/db",
        "--connect_timeout",
        "2",
    )
    assert status == 2  # (the connect timeout is 2 s; no clock is asserted)
    assert f"cannot open the study storage postgresql://u:***@127.0.0.1:{port}/db" in err


def test_trials_or_timeout_are_required(tmp_path, capsys):
    status, err = _tune(tmp_path, capsys)
    assert status == 2 and "give --n_trials or --timeout" in err


def test_exit_status_1_when_no_trial_completed(tmp_path, capsys):
    space = _space(tmp_path, "model.init_args.fail: {type: categorical, choices: [true]}\n")
    status, output = _tune(tmp_path, capsys, "--n_trials", "2", space=space)
    assert status == 1 and "no trial of the study completed" in output
    assert "2 trials (2 fail)" in output and "RuntimeError: this configuration is broken on purpose" in output


def test_tune_takes_the_run_as_fit_does(tmp_path, capsys):
    """``--trainer.*``/``--model.*`` overrides and fit's flag spelling; the resolved run is saved once
    as the study's config.yaml; the model summary is printed for the first trial only."""
    config = write_config(tmp_path, max_epochs=3)
    status = main([
        "tune", "--config", config, "--trainer.max_epochs", "1", "--model.init_args.width", "2",
        "--trainer.enable_model_summary", "true", "--space", _space(tmp_path), "--n_trials", "2",
        "--study_name", "runargs", "--root_dir", str(tmp_path / "runs"), "--seed", "0",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    base = yaml.safe_load((tmp_path / "runs" / "runargs" / "config.yaml").read_text())
    assert base["trainer"]["max_epochs"] == 1 and base["model"]["init_args"]["width"] == 2
    assert not {"space", "n_trials", "study_name", "config"} & set(base)
    assert f"The run's config: {tmp_path / 'runs' / 'runargs' / 'config.yaml'}" in out
    assert out.count("total params") == 1 and "Sequential" in out  # width 2: a Sequential, summarized once
    study = optuna.load_study(study_name="runargs", storage=f"sqlite:///{tmp_path / 'runs' / 'runargs' / 'study.db'}")
    assert [len(t.intermediate_values) for t in study.trials] == [1, 1]  # one epoch, one validation each


def test_plots_name_the_metric_and_count_trials_in_whole_numbers():
    study = optuna.create_study()

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x / (step + 1), step)
        return x

    study.optimize(objective, n_trials=4)
    figures = plot_figures(study, monitor="val_acc")
    try:
        history, steps = figures["optimization_history"].axes[0], figures["intermediate_values"].axes[0]
        assert history.get_ylabel() == "val_acc" and steps.get_ylabel() == "val_acc"
        assert steps.get_xlabel() == "Validation run"
        for ax in (history, steps):
            ax.figure.canvas.draw()
            labels = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() if t.get_text()]
            assert labels and all(re.fullmatch(r"-?\d+", label) for label in labels), labels
    finally:
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)
