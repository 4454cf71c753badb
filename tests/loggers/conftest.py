"""Shared setup for the logger tests: no MLflow settings from the environment, and MLflow stores
whose tables are made once per session. The readers of logged values are in ``logger_readback``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


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
