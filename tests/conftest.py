"""Shared by every test: ``tests/`` on ``sys.path`` (so ``helpers`` imports anywhere) and one CPU
thread per test (tiny models; the suite stays fast and deterministic on 2 cores)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
