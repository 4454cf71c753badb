"""``name=""`` / ``name=None`` put the versions straight under ``save_dir``, as in Lightning."""

from __future__ import annotations

import pytest

from ember.loggers import CSVLogger, TensorBoardLogger
from helpers import LinearModel, loader, quiet_trainer


class Logging(LinearModel):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss


@pytest.mark.parametrize("name", ["", None])
def test_csv_logger_without_an_experiment_folder(tmp_path, name):
    logger = CSVLogger(tmp_path, name=name)
    quiet_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1).fit(Logging(), loader(16))
    assert logger.name == ""
    assert logger.log_dir == str(tmp_path / "version_0")
    assert (tmp_path / "version_0" / "metrics.csv").is_file()


@pytest.mark.parametrize("name", ["", None])
def test_tensorboard_logger_without_an_experiment_folder(tmp_path, name):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, name=name)
    assert logger.name == ""
    assert logger.log_dir == str(tmp_path / "version_0")


@pytest.mark.parametrize("name", ["a/b", 3])
def test_a_name_with_a_separator_or_not_a_str_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="name must be a directory name"):
        CSVLogger(tmp_path, name=name)
