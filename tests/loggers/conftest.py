"""Shared setup for the logger tests: one CPU thread, ``tests/`` on ``sys.path`` (for ``helpers``),
no MLflow settings from the environment, and MLflow stores whose tables are made once per session.
The readers of logged values are in ``logger_readback``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(autouse=True)
def _one_thread_no_mlflow_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made once (creating them takes seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_dir(tmp_path, _mlflow_template) -> Path:
    """A ``save_dir`` for MLFlowLogger holding a fresh copy of the template store."""
    directory = tmp_path / "mlruns-db"
    directory.mkdir()
    shutil.copy(_mlflow_template, directory / "mlflow.db")
    return directory
