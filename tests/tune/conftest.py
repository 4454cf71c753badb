"""Shared setup for the tuning tests: one CPU thread, ``tests/`` and ``tests/tune/`` importable
(``helpers``, ``tune_tiny``), quiet Optuna logs, and the PostgreSQL and Redis servers that
``scripts/services.sh`` starts (``EMBER_TEST_POSTGRES_URL``, ``EMBER_TEST_REDIS_URL``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (str(HERE.parent), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

optuna = pytest.importorskip("optuna", reason='the tuning tests need Optuna: pip install "ember[tune]"')


@pytest.fixture(autouse=True)
def _one_thread_quiet_optuna():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)
    torch.set_num_threads(threads)


def _server(var: str, name: str) -> str:
    url = os.environ.get(var)
    if not url:
        message = f"{name} is not running: start it with `source scripts/services.sh` (bash scripts/test.sh does), or set {var}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but {message}")
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url() -> str:
    return _server("EMBER_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture
def redis_url() -> str:
    return _server("EMBER_TEST_REDIS_URL", "Redis")
