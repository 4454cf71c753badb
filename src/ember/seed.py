"""Seeding every random number generator a run uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_MAX_SEED = 2**32 - 1


def seed_everything(seed: int = 0, workers: bool = False) -> int:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) with ``seed`` and return it.

    DataLoader workers already get distinct seeds derived from torch's seed (torch seeds
    ``random``, NumPy and torch in each worker), so ``workers`` is accepted for Lightning
    compatibility and recorded in ``EMBER_SEED_WORKERS``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {_MAX_SEED}], got {seed!r}")
    os.environ["EMBER_GLOBAL_SEED"] = str(seed)
    os.environ["EMBER_SEED_WORKERS"] = "1" if workers else "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA generators as well
    return seed
