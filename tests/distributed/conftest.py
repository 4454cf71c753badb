"""Distributed tests: real processes with ``gloo`` on 127.0.0.1. ``tests/distributed`` is put on
``sys.path`` so the tests and the jobs they launch share ``dist_common``; in-process code runs on
one CPU thread (tiny models; the suite stays fast on 2 cores)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
