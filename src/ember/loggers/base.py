"""The ``Logger`` protocol every experiment logger implements."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


class Logger:
    """Receives metrics as plain floats with the step they belong to; written by rank zero only."""

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def version(self) -> int | str:
        raise NotImplementedError

    @property
    def log_dir(self) -> str | None:
        return None

    @property
    def experiment(self) -> Any:
        """The underlying client (a writer, a run), for what Ember does not wrap."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        return None

    def save(self) -> None:
        """Make everything logged so far durable (called at epoch end and on exit)."""

    def finalize(self, status: str) -> None:
        """Close the run; ``status`` is "success", "failed" or "interrupted"."""
        self.save()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def next_version(root: str | os.PathLike) -> int:
    """The first unused N among ``root/version_N`` directories."""
    root = Path(root)
    used = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(used) + 1 if used else 0
