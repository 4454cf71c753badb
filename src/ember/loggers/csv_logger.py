"""``CSVLogger``: metrics to ``<save_dir>/<name>/version_N/metrics.csv``, hyperparameters to ``hparams.yaml``.

Rows are kept in memory (tensor values moved to the host in batches) and appended and fsynced at
each ``save()`` (epoch end, exit). When a new metric name appears, or a resumed run drops the rows
its predecessor wrote after the checkpoint, the file is rewritten whole, atomically, so a crash
never leaves a torn file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember.io.atomic import atomic_write_text
from ember.loggers.base import (
    Logger,
    VersionedRun,
    check_dir_name,
    check_params,
    check_path,
    check_step,
    check_version,
    is_rank_zero,
    next_version,
    scalar_row,
    version_dir,
    yaml_safe,
)
from ember.loggers.buffer import to_host

_HOST_EVERY = 1024  # rows: move pending tensor values to the host this often, to bound memory


class CSVLogger(VersionedRun, Logger):
    """Write metrics as CSV: one row per ``log_metrics`` call, one column per metric name.

    Args:
        save_dir: root directory; the run goes to ``save_dir/name/version_N``.
        name: experiment directory under ``save_dir`` (``""`` or None: none, as in Lightning).
        version: an int (``version_<int>``), a directory name, or None for the next free number.
    """

    accepts_tensors = True

    def __init__(
        self, save_dir: str | os.PathLike = ".", name: str | None = "ember_logs", version: int | str | None = None
    ):
        self._save_dir = check_path("save_dir", save_dir)
        self._name = check_dir_name("name", name, allow_empty=True)  # "" / None: save_dir/version_N
        self._version = check_version(version)
        self._version_given = version is not None
        self._columns: list[str] = []
        self._column_set: set[str] = set()
        self._names: dict[str, str] = {}
        self._rows: list[dict[str, Any]] = []  # not yet on disk; values may still be tensors
        self._on_host = 0  # how many of _rows hold floats only
        self._needs_rewrite = False
        self._purge_after: int | None = None
        self._last_step: int | None = None

    @property
    def name(self) -> str:
        """The experiment's folder under ``save_dir`` (``"ember_logs"`` by default)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The version given, or the next free ``version_<n>`` number under ``save_dir/name``."""
        if self._version is None:
            self._version = next_version(self._save_dir / self._name)
        return self._version

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: where the version directories are."""
        return str(self._save_dir / self._name)

    @property
    def log_dir(self) -> str:
        return str(self._save_dir / self._name / version_dir(self.version))

    @property
    def metrics_file(self) -> Path:
        """``<log_dir>/metrics.csv``, where the rows go."""
        return Path(self.log_dir) / "metrics.csv"

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Keep a row for ``step`` (numbers or 0-d tensors); written at ``save()`` by rank zero only."""
        row = {"step": check_step(step), **scalar_row(metrics, self._names, str)}
        if not self._column_set.issuperset(row):
            self._columns += [key for key in row if key not in self._column_set]
            self._column_set.update(row)
            self._needs_rewrite = True
        self._rows.append(row)
        self._last_step = row["step"]
        if len(self._rows) - self._on_host >= _HOST_EVERY:
            self._to_host()

    def _to_host(self) -> None:
        if not is_rank_zero():  # checked here rather than per row: other ranks keep nothing
            self._rows, self._on_host = [], 0
            return
        pending = self._rows[self._on_host :]
        converted = to_host([(0, 0.0, tuple(row), tuple(row.values())) for row in pending])
        for row, (_, _, keys, values) in zip(pending, converted):
            row.update(zip(keys, values))
            row["step"] = int(row["step"])
        self._on_host = len(self._rows)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Write ``params`` to ``hparams.yaml`` in ``log_dir`` (non-plain values as text)."""
        if not is_rank_zero():
            return
        import yaml

        plain = yaml_safe(check_params(params))
        atomic_write_text(Path(self.log_dir) / "hparams.yaml", yaml.safe_dump(plain, sort_keys=False))

    def save(self) -> None:
        """Append the rows logged since the last save to ``metrics.csv`` and fsync it."""
        if not is_rank_zero() or (not self._rows and not self._needs_rewrite and self._purge_after is None):
            return
        self._to_host()
        path = self.metrics_file
        if not self._rows and not path.exists():  # nothing to write, nothing to rewrite
            self._needs_rewrite, self._purge_after = False, None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._needs_rewrite or self._purge_after is not None or not path.exists():
            old: list[dict[str, Any]] = []
            if path.exists():
                with open(path, newline="") as f:
                    reader = csv.DictReader(f)
                    old = list(reader)
                old_columns = list(reader.fieldnames or [])
                self._columns = old_columns + [c for c in self._columns if c not in old_columns]
                self._column_set = set(self._columns)
            if self._purge_after is not None:
                old = [r for r in old if not r.get("step") or int(r["step"]) <= self._purge_after]
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
        self._on_host = 0
        self._needs_rewrite = False
        self._purge_after = None

    def state_dict(self) -> dict[str, Any]:
        """``name``, ``version`` and the last ``step`` logged: plain values for a checkpoint."""
        return {"name": self._name, "version": self.version, "step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved run's file: unless this logger was given another ``version`` (or has
        another ``name``), write to the saved version's ``metrics.csv`` again, and drop the rows its
        predecessor wrote after the saved step (the file is rewritten atomically, header kept, at
        the next ``save()``)."""
        if state.get("name") != self._name or state.get("version") is None:
            return
        version = check_version(state["version"])
        if self._version_given and version != self._version:
            return
        if version != self._version:
            self._switch_version(version)
        if state.get("step") is not None:
            self._last_step = self._purge_after = int(state["step"])
            self._needs_rewrite = True

    def _switch_version(self, version: int | str) -> None:
        self.save()  # what was logged so far stays in the old file
        self._version = version
        self._columns, self._column_set = [], set()
        self._needs_rewrite = True
