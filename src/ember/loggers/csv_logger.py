"""``CSVLogger``: metrics to ``<save_dir>/<name>/version_N/metrics.csv``, hyperparameters to ``hparams.yaml``.

Rows are appended and flushed at each ``save()`` (epoch end, exit). When a new metric name appears,
the file is rewritten whole with the wider header, atomically, so a crash never leaves a torn file.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ember.io.atomic import atomic_write_text
from ember.loggers.base import Logger, next_version


class CSVLogger(Logger):
    """Write metrics as CSV (one row per step, one column per metric)."""

    def __init__(self, save_dir: str | os.PathLike = ".", name: str = "ember_logs", version: int | str | None = None):
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"save_dir must be a path, got {save_dir!r}")
        if not isinstance(name, str) or not name or os.sep in name:
            raise ValueError(f"name must be a non-empty directory name, got {name!r}")
        self._save_dir = Path(save_dir)
        self._name = name
        self._version = version if version is not None else next_version(self._save_dir / name)
        self._columns: list[str] = []
        self._rows: list[dict[str, Any]] = []  # not yet on disk
        self._needs_rewrite = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @property
    def log_dir(self) -> str:
        version = self._version if isinstance(self._version, str) else f"version_{self._version}"
        return str(self._save_dir / self._name / version)

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **metrics}
        for key in row:
            if key not in self._columns:
                self._columns.append(key)
                self._needs_rewrite = True
        self._rows.append(row)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(Path(self.log_dir) / "hparams.yaml", yaml.safe_dump(dict(params), sort_keys=False))

    def save(self) -> None:
        if not self._rows and not self._needs_rewrite:
            return
        path = self.metrics_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._needs_rewrite or not path.exists():
            old: list[dict[str, Any]] = []
            if path.exists():
                with open(path, newline="") as f:
                    old = list(csv.DictReader(f))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self._columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(old + self._rows)
            atomic_write_text(path, buf.getvalue())
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns, lineterminator="\n").writerows(self._rows)
                f.flush()
                os.fsync(f.fileno())
        self._rows = []
        self._needs_rewrite = False
