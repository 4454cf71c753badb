"""The ``ember`` command, run as users run it: the installed console script in a subprocess."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "digits" / "config.yaml"
EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"


def run_ember(*args: str, cwd: Path = ROOT, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([EMBER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_fit_from_config_with_overrides_trains_and_logs(tmp_path: Path) -> None:
    out = run_ember(
        "fit", "--config", str(CONFIG),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", f'{{"class_path": "ember.loggers.CSVLogger", "init_args": {{"save_dir": "{tmp_path}"}}}}',
        "--model.init_args.lr", "0.01",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    log_dir = tmp_path / "ember_logs" / "version_0"
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    train_steps = [int(r["step"]) for r in rows if r.get("train_loss")]
    assert train_steps == list(range(0, 10))  # 2 epochs x 5 batches, logged every step (Lightning's steps, from 0)
    val_rows = [r for r in rows if r.get("val_acc")]
    assert len(val_rows) == 2 and all(0.0 <= float(r["val_acc"]) <= 1.0 for r in val_rows)
    hparams = yaml.safe_load(open(log_dir / "hparams.yaml"))
    assert hparams["lr"] == 0.01 and hparams["batch_size"] == 64


def test_print_config_shows_resolved_values() -> None:
    out = run_ember("fit", "--config", str(CONFIG), "--trainer.max_epochs", "3", "--print_config")
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["trainer"]["max_epochs"] == 3
    assert config["trainer"]["precision"] == "32-true"
    assert config["model"]["class_path"] == "examples.digits.model.DigitsCNN"
    assert config["model"]["init_args"]["lr"] == 0.003


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--trainer.max_epochs", "-2"], "max_epochs=-2"),
        (["--trainer.precision", "17"], "precision='17'"),
        (["--trainer.accumulate_grad_batches", "0"], "accumulate_grad_batches=0"),
        (["--trainer.no_such_option", "1"], "no_such_option"),
        (["--model.class_path", "nowhere.Nothing"], "nowhere"),
    ],
)
def test_bad_configuration_fails_cleanly(override: list[str], expected: str) -> None:
    out = run_ember("fit", "--config", str(CONFIG), *override)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


def test_users_own_classes_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from torch.utils.data import DataLoader, TensorDataset
            import ember

            class Regressor(ember.Module):
                def __init__(self, lr: float = 0.1):
                    super().__init__()
                    self.save_hyperparameters()
                    self.lin = nn.Linear(3, 1)

                def training_step(self, batch, batch_idx):
                    x, y = batch
                    loss = nn.functional.mse_loss(self.lin(x), y)
                    self.log("loss", loss)
                    return loss

                def test_step(self, batch, batch_idx):
                    x, y = batch
                    self.log("test_mse", nn.functional.mse_loss(self.lin(x), y))

                def configure_optimizers(self):
                    return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

            class Data(ember.DataModule):
                def __init__(self, n: int = 256):
                    super().__init__()
                    g = torch.Generator().manual_seed(0)
                    x = torch.randn(n, 3, generator=g)
                    self.ds = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))

                def train_dataloader(self):
                    return DataLoader(self.ds, batch_size=32)

                def test_dataloader(self):
                    return DataLoader(self.ds, batch_size=64)
            """
        )
    )
    (tmp_path / "cfg.yaml").write_text(
        "trainer:\n  max_epochs: 30\n  enable_progress_bar: false\n  enable_model_summary: false\n  logger: false\n"
        "model:\n  class_path: mymodel.Regressor\ndata:\n  class_path: mymodel.Data\n"
    )
    assert run_ember("fit", "--config", "cfg.yaml", cwd=tmp_path).returncode == 0
    out = run_ember("test", "--config", "cfg.yaml", "--trainer.max_epochs", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test_mse" in out.stdout  # the results table; an untrained model, so only the name is checked


def test_help_lists_subcommands() -> None:
    out = run_ember("--help")
    assert out.returncode == 0
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out.stdout


def test_test_subcommand_loads_weights_from_ckpt_path(tmp_path: Path) -> None:
    # without a logger, every run's checkpoints go to <default_root_dir>/checkpoints, where "last" looks
    common = ["--config", str(CONFIG), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    fit = run_ember("fit", *common, "--trainer.max_epochs", "3")
    assert fit.returncode == 0, fit.stderr
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 1 and checkpoints[0].name == "epoch=2-step=57.ckpt"
    out = run_ember("test", *common, "--ckpt_path", "last")
    assert out.returncode == 0, out.stderr
    assert f"ember: loaded checkpoint {str(checkpoints[0])!r} (epoch 2, global_step 57)" in out.stdout
    accuracy = float(next(line.split()[-1] for line in out.stdout.splitlines() if line.split()[:1] == ["test_acc"]))
    assert accuracy > 0.8  # an untrained model scores about 0.1: the trained weights were loaded
    untrained = run_ember("test", *common)
    untrained_acc = float(next(line.split()[-1] for line in untrained.stdout.splitlines() if line.split()[:1] == ["test_acc"]))
    assert untrained_acc < 0.5
