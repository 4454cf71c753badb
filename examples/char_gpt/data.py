"""Characters of the Python standard library's own source files: text that is on every machine
with Python, so the example downloads nothing."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

import ember

VOCAB_SIZE = 128  # ASCII; any other character is read as "?"


def stdlib_text(max_chars: int) -> str:
    """The first ``max_chars`` characters of the standard library's top-level ``*.py`` files, in
    name order (the same text on every run of the same Python)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if total == 0:
        raise FileNotFoundError(f"no Python source files under {stdlib}")
    return "".join(parts)[:max_chars]


def encode(text: str) -> torch.Tensor:
    return torch.tensor([b if b < VOCAB_SIZE else ord("?") for b in text.encode("ascii", "replace")], dtype=torch.long)


def decode(ids: torch.Tensor) -> str:
    return "".join(chr(int(i)) for i in ids)


class CharWindows(Dataset):
    """Every window of ``block_size + 1`` characters starting at a multiple of ``stride``:
    inputs are the first ``block_size``, targets the same shifted by one."""

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int) -> None:
        if len(ids) <= block_size:
            raise ValueError(f"{len(ids)} characters are too few for block_size={block_size}")
        self.ids, self.block_size, self.stride = ids, block_size, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.stride
        chunk = self.ids[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class StdlibText(ember.DataModule):
    """The first 90% of the text for training, the rest for validation."""

    def __init__(self, max_chars: int = 1_000_000, block_size: int = 128, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.max_chars, self.block_size, self.batch_size, self.seed = max_chars, block_size, batch_size, seed
        self.train_set: CharWindows | None = None
        self.val_set: CharWindows | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        ids = encode(stdlib_text(self.max_chars))
        split = int(len(ids) * 0.9)
        self.train_set = CharWindows(ids[:split], self.block_size, stride=self.block_size // 2)
        self.val_set = CharWindows(ids[split:], self.block_size, stride=self.block_size)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)
