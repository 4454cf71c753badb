"""Read logged values back from real files: TensorBoard event files (tensorboard's
``EventAccumulator``), an MLflow SQLite store (``MlflowClient``) and CSV."""

from __future__ import annotations

import csv
from typing import Any


def tb_scalars(log_dir: Any) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``log_dir``: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_metrics(logger: Any) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the logger's MLflow run, read back from its store: ``{key: [(step, value)]}``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=logger.tracking_uri)
    run = client.get_run(logger.run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(logger.run_id, key))
        for key in run.data.metrics
    }


def csv_rows(path: Any) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_series(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
