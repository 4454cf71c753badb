"""User errors on the ``ember`` command line end in one ``ember: error: ...`` line and exit status 2,
never a traceback (issue 13, item 12; issue 14, item 3); ``ember fit`` writes the resolved
``config.yaml`` into the run's log folder, and that file repeats the run (issue 14, item 3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    import ember

    class Net(ember.Module):
        def __init__(self, lr: float = 0.05, dropout: float = 0.3):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    class Tested(Net):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_mse", nn.functional.mse_loss(self.net(x), y))

    class Data(ember.DataModule):
        def __init__(self, n: int = 64):
            super().__init__()
            x = torch.randn(n, 3)  # drawn from the seeded global generator
            self.ds = TensorDataset(x, x.sum(1, keepdim=True).sin())

        def train_dataloader(self):
            return DataLoader(self.ds, batch_size=8, shuffle=True)

        def test_dataloader(self):
            return DataLoader(self.ds, batch_size=32)
    """
)


def config(model: str = "Net", logger: str = "false") -> str:
    return (
        f"trainer:\n  max_epochs: 2\n  enable_progress_bar: false\n  enable_model_summary: false\n  logger: {logger}\n"
        f"model:\n  class_path: clierrors.{model}\ndata:\n  class_path: clierrors.Data\n"
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "clierrors.py").write_text(MODULE)
    (tmp_path / "plain.yaml").write_text(config())
    (tmp_path / "tested.yaml").write_text(config("Tested"))
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_epochs: [2\nmodel: clierrors.Net\n")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    return tmp_path


def ember(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMBER, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


CASES = {
    "missing ckpt_path": (["fit", "--config", "plain.yaml", "--ckpt_path", "nope.ckpt"], ["'nope.ckpt'", "no such file"]),
    "best with no best": (["test", "--config", "tested.yaml", "--ckpt_path", "best"], ['ckpt_path="best"', "no best"]),
    "last with no checkpoint": (["test", "--config", "tested.yaml", "--ckpt_path", "last"], ['ckpt_path="last"', "no checkpoint found"]),
    "test without test_step": (["test", "--config", "plain.yaml"], ["Net", "test_step()"]),
    "YAML syntax error": (["fit", "--config", "broken.yaml"], ["'broken.yaml'", "not valid YAML", "line 3"]),
    "not a checkpoint": (["test", "--config", "tested.yaml", "--ckpt_path", "garbage.ckpt"], ["garbage.ckpt", "not an Ember checkpoint"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_and_status_2(workdir: Path, case: str) -> None:
    args, expected = CASES[case]
    out = ember(workdir, *args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ember: error: ") and [line for line in out.stderr.splitlines() if "ember: error" in line] == [last]
    for text in expected:
        assert text in last, (text, last)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_fit_writes_the_resolved_config_and_it_repeats_the_run(workdir: Path) -> None:
    """No seed given: the one used is recorded, so the file repeats the run exactly."""
    (workdir / "logged.yaml").write_text(config(logger="true"))
    first = ember(workdir, "fit", "--config", "logged.yaml", "--model.init_args.lr", "0.02")
    assert first.returncode == 0, first.stderr
    run0 = workdir / "ember_logs" / "version_0"
    saved = yaml.safe_load((run0 / "config.yaml").read_text())
    assert isinstance(saved["seed_everything"], int)
    assert saved["model"] == {"class_path": "clierrors.Net", "init_args": {"lr": 0.02, "dropout": 0.3}}
    assert saved["data"]["class_path"] == "clierrors.Data"
    assert saved["trainer"]["max_epochs"] == 2 and saved["trainer"]["precision"] == "32-true"

    again = ember(workdir, "fit", "--config", str(run0 / "config.yaml"))
    assert again.returncode == 0, again.stderr
    run1 = workdir / "ember_logs" / "version_1"
    assert (run1 / "config.yaml").read_text() == (run0 / "config.yaml").read_text()
    (ckpt0,), (ckpt1,) = sorted((run0 / "checkpoints").glob("*.ckpt")), sorted((run1 / "checkpoints").glob("*.ckpt"))
    w0, w1 = weights(ckpt0), weights(ckpt1)
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)

    other = ember(workdir, "fit", "--config", "logged.yaml", "--model.init_args.lr", "0.02")  # another random seed
    assert other.returncode == 0, other.stderr
    (ckpt2,) = sorted((workdir / "ember_logs" / "version_2" / "checkpoints").glob("*.ckpt"))
    assert any(not torch.equal(w0[k], v) for k, v in weights(ckpt2).items())
