"""``BasePredictionWriter`` beyond what the differential test compares with Lightning, and
``PredictionFileWriter`` used from Python (the callback behind ``ember predict --output``)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from ember.callbacks import BasePredictionWriter
from ember.callbacks.prediction_files import PredictionFileWriter, rank_path, sample_rows
from ember.callbacks.prediction_writer import IndexBatchSampler, with_batch_indices
from helpers import LinearModel, Stream, loader, quiet_trainer


class Predicting(LinearModel):
    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])


class Recorder(BasePredictionWriter):
    def __init__(self, interval: str) -> None:
        super().__init__(interval)
        self.calls: list = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.calls.append(("batch", list(batch_indices), batch_idx, dataloader_idx))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.calls.append(("epoch", len(predictions), batch_indices))


def test_a_loader_without_a_batch_sampler_has_no_indices(tmp_path):
    writer = Recorder("batch_and_epoch")
    stream = DataLoader(Stream(12), batch_size=4)  # an IterableDataset: no sampler to record
    with pytest.warns(UserWarning, match="batch indices of predict loader 0 are not known"):
        quiet_trainer(tmp_path, callbacks=[writer]).predict(Predicting(), stream)
    assert writer.calls == [("batch", [], 0, 0), ("batch", [], 1, 0), ("batch", [], 2, 0), ("epoch", 3, [[]])]


def test_with_batch_indices_copies_the_loader():
    dl = loader(10, batch_size=4, shuffle=True)
    new, sampler = with_batch_indices(dl)
    assert new is not dl and dl.batch_sampler is not sampler and isinstance(sampler, IndexBatchSampler)
    batches = [b[0].shape[0] for b in new]
    assert batches == [4, 4, 2] and len(new) == 3
    assert sorted(i for b in sampler.seen_batch_indices for i in b) == list(range(10))
    assert sampler.indices_of(3) is None
    assert with_batch_indices([1, 2]) == ([1, 2], None)


def test_a_writer_that_does_not_override_its_method_says_so(tmp_path):
    with pytest.raises(NotImplementedError, match="write_interval='batch': override write_on_batch_end"):
        quiet_trainer(tmp_path, callbacks=[BasePredictionWriter()]).predict(Predicting(), loader(8))


def test_file_writer_from_python(tmp_path):
    path = tmp_path / "out.jsonl"
    writer = PredictionFileWriter(path)
    trainer = quiet_trainer(tmp_path, callbacks=[writer])
    preds = trainer.predict(Predicting(), loader(10, batch_size=4))
    rows = [json.loads(line) for line in open(path)]
    assert writer.written == str(path) and [r["index"] for r in rows] == list(range(10))
    torch.testing.assert_close(torch.tensor([r["prediction"] for r in rows]), torch.cat(preds))
    with pytest.raises(ValueError, match="exists already"):  # a second run refuses before predicting
        trainer.predict(Predicting(), loader(10, batch_size=4))
    PredictionFileWriter(path, overwrite=True)  # allowed
    with pytest.raises(ValueError, match=r"unknown format '\.npy'"):
        PredictionFileWriter(tmp_path / "out.npy")


def test_sample_rows_and_rank_paths():
    assert sample_rows({"a": torch.tensor([1, 2]), "b": torch.tensor([[0.5], [1.5]])}) == [
        {"a": 1, "b": [0.5]},
        {"a": 2, "b": [1.5]},
    ]
    with pytest.raises(TypeError, match="0-d tensor"):
        sample_rows(torch.tensor(1.0))
    assert rank_path("p.csv", 0, 1) == "p.csv"
    assert rank_path(os.path.join("d", "p.csv"), 1, 2) == os.path.join("d", "p.rank1.csv")


def test_return_predictions_false_keeps_none_but_an_epoch_writer_still_gets_them(tmp_path):
    writer = Recorder("epoch")
    trainer = quiet_trainer(tmp_path, callbacks=[writer])
    model = Predicting()
    assert trainer.predict(model, loader(32, batch_size=8), return_predictions=False) is None
    assert trainer._eval["predict"].predictions == [[]]  # nothing held for the caller
    assert writer.calls[0][:2] == ("epoch", 4)  # the writer kept its own
    kept = trainer.predict(model, loader(32, batch_size=8))
    assert len(kept) == 4 and all(p.device.type == "cpu" and not p.requires_grad for p in kept)
