"""``--trainer.logger`` from an ``ember`` config file, run as users run it: the installed console
script in a subprocess, with TensorBoard, MLflow and CSV loggers given by class path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from logger_readback import csv_rows, csv_series, tb_scalars

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "digits" / "config.yaml"
EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"


def test_loggers_from_a_config_file(tmp_path, mlflow_dir):
    config = {
        "trainer": {
            "max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "default_root_dir": str(tmp_path),
            "logger": [
                {"class_path": "ember.loggers.TensorBoardLogger", "init_args": {"save_dir": str(tmp_path), "name": "tb"}},
                {"class_path": "MLFlowLogger", "init_args": {"experiment_name": "digits", "save_dir": str(mlflow_dir)}},
                {"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path), "name": "csv"}},
            ],
        }
    }  # fmt: skip
    (tmp_path / "loggers.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [EMBER, "fit", "--config", str(CONFIG), "--config", str(tmp_path / "loggers.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr

    rows = csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    train_loss = csv_series(rows, "train_loss")
    assert [step for step, _ in train_loss] == [0, 1, 2]  # Lightning's step: from 0
    scalars = tb_scalars(tmp_path / "tb" / "version_0")
    assert [s for s, _ in scalars["train_loss"]] == [0, 1, 2]  # Lightning's step: from 0
    assert [v for _, v in scalars["train_loss"]] == pytest.approx([v for _, v in train_loss], rel=1e-6)
    assert yaml.safe_load(open(tmp_path / "tb" / "version_0" / "hparams.yaml"))["lr"] == 0.003

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(mlflow_dir / 'mlflow.db').as_posix()}")
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.003"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert history == train_loss
