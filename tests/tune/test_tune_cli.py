"""``ember tune``: a real run as users run it (the console script in a subprocess), and its errors."""

from __future__ import annotations

import re
import socket

import pytest
from tune_procs import run_ember
from tune_tiny import write_config

from ember.cli import main

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
    out = run_ember(
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
        "--root-dir",
        str(tmp_path / "runs"),
        *extra,
    ]
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_unknown_parameter_type_is_a_clear_error(tmp_path, capsys):
    space = _space(tmp_path, "model.init_args.lr: {type: loguniform, low: 0.001, high: 0.1}\n")
    status, err = _tune(tmp_path, capsys, "--n-trials", "1", space=space)
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
    status, err = _tune(tmp_path, capsys, "--n-trials", "1", "--storage", storage)
    assert status == 2 and message in err and "secret" not in err


def test_unreachable_database_fails_fast(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, err = _tune(
        tmp_path,
        capsys,
        "--n-trials",
        "1",
        "--storage",
        f"postgresql://u:pw@127.0.0.1:{port}/db",
        "--connect-timeout",
        "2",
    )
    assert status == 2  # (the connect timeout is 2 s; no clock is asserted)
    assert f"cannot open the study storage postgresql://u:***@127.0.0.1:{port}/db" in err


def test_trials_or_timeout_are_required(tmp_path, capsys):
    status, err = _tune(tmp_path, capsys)
    assert status == 2 and "give --n-trials or --timeout" in err


def test_exit_status_1_when_no_trial_completed(tmp_path, capsys):
    space = _space(tmp_path, "model.init_args.fail: {type: categorical, choices: [true]}\n")
    status, output = _tune(tmp_path, capsys, "--n-trials", "2", space=space)
    assert status == 1 and "no trial of the study completed" in output
    assert "2 trials (2 fail)" in output and "RuntimeError: this configuration is broken on purpose" in output
