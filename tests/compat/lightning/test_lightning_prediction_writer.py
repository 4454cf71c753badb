"""``BasePredictionWriter``, Lightning against Ember: the same writer subclass on both, and the calls
it receives (predictions, batch_indices, batch_idx, dataloader_idx) must be equal, with one and with
two predict loaders, shuffled and not, for every ``write_interval``."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_kit import BOTH, EMBER, Framework, regression_module
from torch.utils.data import DataLoader, TensorDataset

import ember.callbacks

WRITERS = {"lightning": pl.callbacks.BasePredictionWriter, "ember": ember.callbacks.BasePredictionWriter}


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", value.device.type, value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def recording_writer(fw: Framework, interval: str, calls: list) -> Any:
    class Recording(WRITERS[fw.name]):
        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
            calls.append(("batch", _plain(prediction), list(batch_indices), _plain(batch), batch_idx, dataloader_idx))

        def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
            calls.append(("epoch", _plain(predictions), _plain(batch_indices)))

    return Recording(write_interval=interval)


def predicting_module(fw: Framework) -> Any:
    class Predicting(regression_module(fw)):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            x = batch[0]
            return {"sum": x.sum(dim=1) + 100 * dataloader_idx, "first": x[:, :1]}

    return Predicting()


def loaders(n_loaders: int) -> list[DataLoader]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, 4, generator=g)
    shuffled = DataLoader(TensorDataset(x), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(7))
    in_order = DataLoader(TensorDataset(x[:7]), batch_size=2)
    return [shuffled, in_order][:n_loaders]


def predict_calls(fw: Framework, tmp_path: Any, interval: str, n_loaders: int) -> tuple[list, Any]:
    calls: list = []
    trainer = fw.trainer(tmp_path / fw.name, callbacks=[recording_writer(fw, interval, calls)])
    dls = loaders(n_loaders)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        returned = trainer.predict(predicting_module(fw), dataloaders=dls[0] if n_loaders == 1 else dls)
    return calls, _plain(returned)


@pytest.mark.parametrize("n_loaders", [1, 2])
@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
def test_writer_calls_match_lightning(tmp_path, interval, n_loaders):
    (lightning_calls, lightning_out), (ember_calls, ember_out) = (
        predict_calls(fw, tmp_path, interval, n_loaders) for fw in BOTH
    )
    assert ember_calls == lightning_calls
    kinds = [c[0] for c in ember_calls]
    batches = 4 if n_loaders == 1 else 8
    assert kinds.count("batch") == (batches if interval != "epoch" else 0)
    assert kinds.count("epoch") == (1 if interval != "batch" else 0)
    if n_loaders == 1 and interval != "epoch":  # the shuffled loader's indices: a permutation of the dataset
        assert sorted(i for c in ember_calls if c[0] == "batch" for i in c[2]) == list(range(11))
        assert [i for c in ember_calls if c[0] == "batch" for i in c[2]] != list(range(11))
    assert ember_out == lightning_out


def test_bad_write_interval_is_refused():
    with pytest.raises(ValueError, match=r"write_interval='step'; choose one of \['batch', 'epoch', 'batch_and_epoch'\]"):
        ember.callbacks.BasePredictionWriter("step")
    with pytest.raises(Exception, match="write_interval"):  # Lightning refuses it too
        pl.callbacks.BasePredictionWriter("step")


def test_users_loader_is_not_changed(tmp_path):
    dl = loaders(1)[0]
    sampler = dl.batch_sampler
    calls: list = []
    trainer = EMBER.trainer(tmp_path, callbacks=[recording_writer(EMBER, "batch", calls)])
    trainer.predict(predicting_module(EMBER), dataloaders=dl)
    assert dl.batch_sampler is sampler and len(calls) == 4


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(5)
        for _ in range(7):
            yield (torch.randn(4, generator=g),)


def test_no_batch_indices_without_a_sampler_as_lightning(tmp_path):
    """A loader over an IterableDataset has no sampler to trace: both give [] (and warn)."""
    results = []
    for fw in BOTH:
        calls: list = []
        trainer = fw.trainer(tmp_path / fw.name, callbacks=[recording_writer(fw, "batch_and_epoch", calls)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.predict(predicting_module(fw), dataloaders=DataLoader(_Stream(), batch_size=3))
        assert any("indices" in str(w.message) for w in caught), fw.name
        results.append(calls)
    assert results[1] == results[0]
    assert [c[2] for c in results[1] if c[0] == "batch"] == [[], [], []] and results[1][-1][2] == [[]]
