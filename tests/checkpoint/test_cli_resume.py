"""``ember fit --config ... --ckpt_path last`` continues a crashed run exactly (the installed
console script, in a subprocess, as users run it)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from resume_kit import assert_same_state

import ember
from ember.checkpoint import load_checkpoint

EMBER = shutil.which("ember", path=str(Path(sys.executable).parent)) or "ember"

MODULE = textwrap.dedent(
    """
    import os
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    import ember

    class Net(ember.Module):
        def __init__(self, lr: float = 0.05, dropout: float = 0.2):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 1))

        def training_step(self, batch, batch_idx):
            if self.global_step == int(os.environ.get("CRASH_AT_STEP", "-1")):
                raise RuntimeError("simulated crash")
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

        def on_fit_end(self):
            torch.save(self.state_dict(), os.environ["FINAL_WEIGHTS"])

    class Data(ember.DataModule):
        def __init__(self, n: int = 48):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n, 3, generator=g)
            self.ds = TensorDataset(x, x.sum(1, keepdim=True).sin())

        def train_dataloader(self):
            return DataLoader(self.ds, batch_size=4, shuffle=True)
    """
)

CONFIG = """\
seed_everything: 7
trainer:
  max_epochs: 3
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - class_path: ember.callbacks.model_checkpoint.ModelCheckpoint
      init_args:
        every_n_train_steps: 5
model:
  class_path: cliresume.Net
data:
  class_path: cliresume.Data
"""


def ember_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [EMBER, "fit", "--config", "cfg.yaml", "--trainer.default_root_dir", str(tmp_path / "run"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "FINAL_WEIGHTS": str(tmp_path / "final.pt"), **env},
    )  # fmt: skip


def test_ember_fit_ckpt_path_last_continues_a_crashed_run(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cliresume.py").write_text(MODULE)
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    crashed = ember_cli(tmp_path, CRASH_AT_STEP="23")  # 12 steps an epoch: in the middle of epoch 2
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    saved = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch=1-step=20.ckpt"]
    assert load_checkpoint(saved[0])["loops"]["fit"]["batches"] == 8
    resumed = ember_cli(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    # as Lightning: the file the run resumed from is kept even though it left the top k
    assert sorted(p.name for p in (tmp_path / "run").rglob("*.ckpt")) == ["epoch=1-step=20.ckpt", "epoch=2-step=35.ckpt"]

    # the same run, uninterrupted, here
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FINAL_WEIGHTS", str(tmp_path / "reference.pt"))
    module = importlib.import_module("cliresume")
    ember.seed_everything(7)
    trainer = ember.Trainer(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, logger=False,
                            enable_checkpointing=False, default_root_dir=tmp_path / "ref")  # fmt: skip
    trainer.fit(module.Net(), datamodule=module.Data())
    assert_same_state(
        torch.load(tmp_path / "final.pt", weights_only=True),
        torch.load(tmp_path / "reference.pt", weights_only=True),
        "cli",
    )
