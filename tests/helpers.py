"""Tiny models, data and recorders shared by the Trainer/Module tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import ember
from ember.callbacks.callback import Callback

TRUE_W = torch.tensor([[2.0, -3.0, 0.5]])
TRUE_B = torch.tensor([1.5])


def quiet_trainer(tmp_path: Any, **kwargs: Any) -> ember.Trainer:
    """A Trainer with the bar, the summary, checkpointing and the logger off (override any of them in
    ``kwargs``)."""
    options = dict(
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return ember.Trainer(**options)


def regression_data(n: int = 64, noise: float = 0.0, seed: int = 0) -> TensorDataset:
    """``y = x @ TRUE_W.T + TRUE_B (+ noise)`` with 3 features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ TRUE_W.T + TRUE_B + noise * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def loader(n: int = 64, batch_size: int = 8, shuffle: bool = False, **kwargs: Any) -> DataLoader:
    return DataLoader(regression_data(n, **kwargs), batch_size=batch_size, shuffle=shuffle)


class LinearModel(ember.Module):
    """Linear regression with MSE; SGD without momentum (deterministic, exactly comparable by hand)."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.layer = nn.Linear(3, 1)
        self.train_losses: list[float] = []
        self.train_batch_sizes: list[int] = []
        self.training_step_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.training_step_calls += 1
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.train_losses.append(loss.detach().clone())
        self.train_batch_sizes.append(len(x))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


class Stream(IterableDataset):
    """``n`` (x, y) pairs of the regression problem, without a length."""

    def __init__(self, n: int = 40) -> None:
        super().__init__()
        self.data = regression_data(n)

    def __iter__(self):
        for i in range(len(self.data)):
            yield self.data[i]


class HookRecorder(Callback):
    """Records every Callback hook as ``(tag, hook_name)`` into a shared list."""

    def __init__(self, log: list, tag: str, priority: int = 0) -> None:
        self.log = log
        self.tag = tag
        self.priority = priority


def _make_callback_hook(name: str):
    def hook(self, trainer, module, *args, **kwargs):  # setup/teardown get stage= (as Lightning)
        self.log.append((self.tag, name))

    hook.__name__ = name
    return hook


def _make_module_hook(name: str):
    passes_batch = name in ("on_before_batch_transfer", "on_after_batch_transfer")

    def hook(self, *args, **kwargs):
        self.hook_log.append(("module", name))
        return args[0] if passes_batch else None

    hook.__name__ = name
    return hook


CALLBACK_HOOKS = [
    n
    for n in vars(Callback)
    if (n.startswith("on_") or n in ("setup", "teardown")) and n not in ("on_save_checkpoint", "on_load_checkpoint")
]
for _name in CALLBACK_HOOKS:
    setattr(HookRecorder, _name, _make_callback_hook(_name))


class HookModule(LinearModel):
    """A LinearModel that records every module hook (and its steps) into ``hook_log``."""

    def __init__(self, log: list) -> None:
        super().__init__()
        object.__setattr__(self, "hook_log", log)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.hook_log.append(("module", "training_step"))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.hook_log.append(("module", "validation_step"))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.hook_log.append(("module", "test_step"))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.hook_log.append(("module", "predict_step"))
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        self.hook_log.append(("module", "configure_optimizers"))
        return super().configure_optimizers()


MODULE_HOOKS = [
    n
    for n in vars(ember.Module)
    if (n.startswith("on_") or n in ("setup", "teardown"))
    and n not in ("on_save_checkpoint", "on_load_checkpoint")
]
for _name in MODULE_HOOKS:
    setattr(HookModule, _name, _make_module_hook(_name))
