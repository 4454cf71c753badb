"""scikit-learn's handwritten digits (1,797 8x8 images, shipped with the package: no download)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import ember


class DigitsDataModule(ember.DataModule):
    """A fixed, seeded split into train / val / test; pixels scaled to [0, 1]."""

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0):
        super().__init__()
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) and sum below 1")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
        n_test = int(len(y) * self.test_fraction)
        n_val = int(len(y) * self.val_fraction)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        self.splits = {name: TensorDataset(x[idx], y[idx]) for name, idx in parts.items()}

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=256)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
