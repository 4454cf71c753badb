"""A resumed run continues in its own version folder (issue 14, item 3): logs, checkpoints and the
top-k tracking go on in ``version_K`` when ``fit(ckpt_path=...)`` is given a checkpoint from
``<root>/version_K/...`` (or ``"last"``), for loggers whose version was not set. A checkpoint from
anywhere else starts a new version, as in Lightning, and never touches another run's files.
(Lightning 2.6 always starts a new version: see ``test_lightning_starts_a_new_version``.)"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "callbacks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loggers"))
from logger_readback import csv_rows, tb_scalars
from scripted import Scripted, data, trainer

from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.checkpoint import load_checkpoint
from ember.loggers import CSVLogger, TensorBoardLogger

# val_loss per epoch: epochs 1 and 3 are the best two of the first four, epoch 5 beats them
VALUES = [5.0, 3.0, 4.0, 1.0, 6.0, 0.5]


def run(root: Path, max_epochs: int, ckpt_path: Any = None, logger: Any = None, **kwargs: Any) -> Any:
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    logger = CSVLogger(root, name="logs") if logger is None else logger
    tr = trainer(root, max_epochs=max_epochs, logger=logger, callbacks=[cb], log_every_n_steps=1, **kwargs)
    tr.fit(Scripted(VALUES), data(), data(), ckpt_path=ckpt_path)
    return tr


def steps(path: Path) -> list[int]:
    return [int(r["step"]) for r in csv_rows(path) if r.get("train_loss")]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_checkpoint_of_version_k_continues_version_k(tmp_path: Path) -> None:
    first = run(tmp_path, 4)
    v0 = tmp_path / "logs" / "version_0"
    assert names(v0 / "checkpoints") == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt", "last.ckpt"]

    resumed = run(tmp_path, 6, ckpt_path=v0 / "checkpoints" / "epoch=3-step=16.ckpt")
    assert names(tmp_path / "logs") == ["version_0"]  # no version_1: logs and checkpoints went on here
    assert Path(resumed.log_dir) == v0 and Path(resumed.checkpoint_callback.dirpath) == v0 / "checkpoints"
    # the top-k tracking went on: epoch 5 (0.5) joined epoch 3 (1.0); epoch 1 (3.0) was dropped
    cb = resumed.checkpoint_callback
    assert names(v0 / "checkpoints") == ["epoch=3-step=16.ckpt", "epoch=5-step=24.ckpt", "last.ckpt"]
    assert Path(cb.best_model_path).name == "epoch=5-step=24.ckpt" and float(cb.best_model_score) == 0.5
    assert sorted(Path(p).name for p in cb.best_k_models) == ["epoch=3-step=16.ckpt", "epoch=5-step=24.ckpt"]
    assert steps(v0 / "metrics.csv") == list(range(24))  # one file, every step once
    assert first.global_step == 16 and resumed.global_step == 24


def test_resuming_an_earlier_checkpoint_drops_the_later_rows(tmp_path: Path) -> None:
    run(tmp_path, 4)
    v0 = tmp_path / "logs" / "version_0"
    header = (v0 / "metrics.csv").read_text().splitlines()[0]
    assert steps(v0 / "metrics.csv") == list(range(16))
    run(tmp_path, 2, ckpt_path=v0 / "checkpoints" / "epoch=1-step=8.ckpt")  # already done: trains nothing
    assert steps(v0 / "metrics.csv") == list(range(8))  # the rows after the checkpoint are gone
    assert (v0 / "metrics.csv").read_text().splitlines()[0] == header
    run(tmp_path, 3, ckpt_path=v0 / "checkpoints" / "epoch=1-step=8.ckpt")
    assert steps(v0 / "metrics.csv") == list(range(12))
    assert names(tmp_path / "logs") == ["version_0"]


def test_last_continues_the_newest_version_holding_a_checkpoint(tmp_path: Path, capsys: Any) -> None:
    run(tmp_path, 2)  # version_0
    run(tmp_path, 3)  # version_1, a fresh run
    (tmp_path / "logs" / "version_2").mkdir()  # a run that died before its first checkpoint
    capsys.readouterr()
    resumed = run(tmp_path, 4, ckpt_path="last")
    v1 = tmp_path / "logs" / "version_1"
    assert f"ember: loaded checkpoint {str(v1 / 'checkpoints' / 'last.ckpt')!r}" in capsys.readouterr().out
    assert resumed.global_step == 16 and Path(resumed.log_dir) == v1
    assert names(tmp_path / "logs") == ["version_0", "version_1", "version_2"]
    assert steps(v1 / "metrics.csv") == list(range(16))
    assert steps(tmp_path / "logs" / "version_0" / "metrics.csv") == list(range(8))  # untouched


def test_last_with_the_default_tensorboard_logger(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run(tmp_path, 2, logger=True)
    resumed = run(tmp_path, 3, ckpt_path="last", logger=True)
    v0 = tmp_path / "ember_logs" / "version_0"
    assert names(tmp_path / "ember_logs") == ["version_0"] and Path(resumed.log_dir) == v0
    assert resumed.global_step == 12
    assert [s for s, _ in tb_scalars(v0)["train_loss"]] == list(range(12))


def test_a_checkpoint_from_elsewhere_starts_a_new_version(tmp_path: Path) -> None:
    run(tmp_path, 4)
    v0 = tmp_path / "logs" / "version_0"
    before = (v0 / "metrics.csv").read_bytes()
    copied = tmp_path / "downloads" / "model.ckpt"
    copied.parent.mkdir()
    shutil.copy(v0 / "checkpoints" / "epoch=1-step=8.ckpt", copied)
    resumed = run(tmp_path, 3, ckpt_path=copied)
    v1 = tmp_path / "logs" / "version_1"
    assert Path(resumed.log_dir) == v1 and Path(resumed.checkpoint_callback.dirpath) == v1 / "checkpoints"
    assert (v0 / "metrics.csv").read_bytes() == before  # another run's rows are never dropped
    assert steps(v1 / "metrics.csv") == list(range(8, 12))
    assert names(v1 / "checkpoints") == ["epoch=2-step=12.ckpt", "last.ckpt"]  # fresh top-k bookkeeping


def test_a_given_version_is_kept(tmp_path: Path) -> None:
    run(tmp_path, 4)
    v0 = tmp_path / "logs" / "version_0"
    before = (v0 / "metrics.csv").read_bytes()
    resumed = run(tmp_path, 3, ckpt_path=v0 / "checkpoints" / "epoch=1-step=8.ckpt",
                  logger=CSVLogger(tmp_path, name="logs", version="finetune"))  # fmt: skip
    assert Path(resumed.log_dir) == tmp_path / "logs" / "finetune"
    assert (v0 / "metrics.csv").read_bytes() == before
    # given the checkpoint's own version, the run continues there (rows after the checkpoint dropped)
    run(tmp_path, 3, ckpt_path=v0 / "checkpoints" / "epoch=1-step=8.ckpt", logger=CSVLogger(tmp_path, name="logs", version=0))
    assert steps(v0 / "metrics.csv") == list(range(12))


def test_a_second_logger_elsewhere_follows_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")

    def loggers() -> list[Any]:
        return [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path / "tb", name="runs")]

    run(tmp_path, 4, logger=loggers())
    run(tmp_path, 4, logger=loggers())  # version_1 of both
    ckpt = tmp_path / "csv" / "version_0" / "checkpoints" / "epoch=1-step=8.ckpt"
    assert load_checkpoint(ckpt)["loggers"][1]["version"] == 0
    resumed = run(tmp_path, 3, ckpt_path=ckpt, logger=loggers())
    tb = resumed.loggers[1]
    assert tb.version == 0  # the checkpoint's run of this logger, not a new version_2
    assert names(tmp_path / "tb" / "runs") == ["version_0", "version_1"]
    assert [s for s, _ in tb_scalars(tb.log_dir)["train_loss"]] == list(range(12))


def test_lightning_starts_a_new_version(tmp_path: Path) -> None:
    """What Lightning 2.6 does with the same resume (Ember's behaviour is a documented improvement)."""
    pl = pytest.importorskip("pytorch_lightning")
    import torch

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def fit(epochs: int, ckpt_path: Any = None) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = pl.Trainer(
                max_epochs=epochs, default_root_dir=tmp_path, enable_progress_bar=False,
                enable_model_summary=False, logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
            )  # fmt: skip
            tr.fit(Model(), data(), ckpt_path=ckpt_path)
        return tr

    fit(1)
    resumed = fit(2, tmp_path / "logs" / "version_0" / "checkpoints" / "epoch=0-step=4.ckpt")
    assert Path(resumed.log_dir) == tmp_path / "logs" / "version_1"
    assert names(tmp_path / "logs" / "version_1" / "checkpoints") == ["epoch=1-step=8.ckpt"]


def test_mlflow_continues_the_run_id_and_keeps_its_history(tmp_path: Path) -> None:
    """Next to a CSV logger (which decides the folder), MLflow logs into the checkpoint's run again.
    MLflow has no way to drop values: steps the interrupted run logged after the checkpoint appear
    twice in the metric's history (documented in docs/checkpoints.md)."""
    pytest.importorskip("mlflow")
    from ember.loggers import MLFlowLogger

    def loggers() -> list[Any]:
        return [CSVLogger(tmp_path, name="logs"), MLFlowLogger("exp", save_dir=tmp_path / "mlruns-db")]

    first = run(tmp_path, 4, logger=loggers())
    run_id = first.loggers[1].run_id
    resumed = run(tmp_path, 3, ckpt_path=tmp_path / "logs" / "version_0" / "checkpoints" / "epoch=1-step=8.ckpt",
                  logger=loggers())  # fmt: skip
    mlf = resumed.loggers[1]
    assert mlf.run_id == run_id
    history = mlf.experiment.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == sorted([*range(16), *range(8, 12)])
    assert steps(tmp_path / "logs" / "version_0" / "metrics.csv") == list(range(12))
    assert mlf.experiment.get_run(run_id).info.status == "FINISHED"
