"""Data loading in the Trainer: overfit_batches, reload_dataloaders_every_n_epochs, loaders without a
length, an epoch without data, CombinedLoader (Lightning parity is in tests/compat/lightning)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import ember
from ember.utilities import CombinedLoader
from helpers import LinearModel, loader, quiet_trainer


class Counting(LinearModel):
    def __init__(self, sizes):
        super().__init__()
        self.sizes, self.calls = iter(sizes), []

    def train_dataloader(self):
        self.calls.append(("train", self.current_epoch))
        return loader(next(self.sizes))

    def val_dataloader(self):
        self.calls.append(("val", self.current_epoch))
        return loader(16)


def test_reload_every_two_epochs_asks_again_and_uses_the_new_length(tmp_path):
    model = Counting([16, 32, 48])
    trainer = quiet_trainer(tmp_path, max_epochs=5, reload_dataloaders_every_n_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model)
    assert [c for c in model.calls if c[0] == "train"] == [("train", 0), ("train", 2), ("train", 4)]
    assert [c for c in model.calls if c[0] == "val"] == [("val", 0), ("val", 2), ("val", 4)]
    assert model.training_step_calls == 2 + 2 + 4 + 4 + 6  # 16, 32, 48 samples in batches of 8
    assert trainer.num_training_batches == 6


def test_reload_off_asks_once(tmp_path):
    model = Counting([16])
    quiet_trainer(tmp_path, max_epochs=3).fit(model)
    assert [c[0] for c in model.calls] == ["train", "val"]


def test_overfit_batches_limits_and_orders_both_loaders(tmp_path):
    seen = []

    class Model(LinearModel):
        def training_step(self, batch, batch_idx):
            seen.append(("train", batch[0][0, 0].item()))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append(("val", batch[0][0, 0].item()))

    trainer = quiet_trainer(tmp_path, max_epochs=2, overfit_batches=2, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="turning off the train dataloader shuffling"):
        trainer.fit(Model(), loader(64, shuffle=True), loader(32, seed=1))
    first, second = seen[:4], seen[4:]
    assert first == second and [s[0] for s in first] == ["train", "train", "val", "val"]
    assert trainer.num_training_batches == 2 and trainer.num_val_batches == [2]


@pytest.mark.parametrize("value", [-1, 1.5, "2", None])
def test_overfit_batches_bad_values(tmp_path, value):
    with pytest.raises((TypeError, ValueError), match="overfit_batches"):
        ember.Trainer(overfit_batches=value, default_root_dir=tmp_path)


@pytest.mark.parametrize("value", [-1, 0.5, True])
def test_reload_bad_values(tmp_path, value):
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        ember.Trainer(reload_dataloaders_every_n_epochs=value, default_root_dir=tmp_path)


class Stream(IterableDataset):
    def __init__(self, n, empty=()):
        self.n, self.empty, self.passes = n, empty, 0

    def __iter__(self):
        this, self.passes = self.passes, self.passes + 1
        if this not in self.empty:
            for i in range(self.n):
                yield torch.full((3,), float(i)), torch.zeros(1)


def test_an_empty_epoch_runs_its_hooks_without_steps_or_validation(tmp_path):
    events = []

    class Spy(ember.Callback):
        def on_train_epoch_end(self, trainer, module):
            events.append(("end", trainer.current_epoch, trainer.global_step))

        def on_validation_end(self, trainer, module):
            events.append(("val", trainer.current_epoch))

    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[Spy()], num_sanity_val_steps=0)
    trainer.fit(LinearModel(), DataLoader(Stream(4, empty=(1,)), batch_size=2), loader(8))
    assert events == [("val", 0), ("end", 0, 2), ("end", 1, 2), ("val", 2), ("end", 2, 4)]


def test_combined_loader_counts_and_limits(tmp_path):
    combined = CombinedLoader({"a": loader(16), "b": loader(40)}, "max_size_cycle")
    assert len(combined) == 5
    combined.limits = [1, 3]
    assert len(combined) == 3
    with pytest.raises(ValueError, match="limits"):
        combined.limits = [1]
    with pytest.raises(ValueError, match="flattened"):
        combined.flattened = [loader(8)]


def test_combined_loader_trains_with_a_dict_batch(tmp_path):
    keys = []

    class Model(LinearModel):
        def training_step(self, batch, batch_idx):
            keys.append(sorted(batch))
            return super().training_step(batch["a"], batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Model(), CombinedLoader({"a": loader(16), "b": loader(40)}, "min_size"))
    assert keys == [["a", "b"]] * 2 and trainer.num_training_batches == 2
