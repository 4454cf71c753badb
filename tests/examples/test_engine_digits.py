"""examples/engine_digits: Ignite-style training with the Engine, metrics, handlers and a logger."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_engine_example_trains_checkpoints_and_logs(example, tmp_path: Path) -> None:
    out = example("engine_digits", "--fast", "--out", str(tmp_path / "run"))
    assert re.findall(r"^epoch (\d+):", out.stdout, re.M) == ["1", "2"]
    accuracy = float(re.search(r"validation accuracy of the best model: ([0-9.]+)", out.stdout).group(1))
    assert accuracy > 0.8  # well above chance (0.1) after 2 epochs
    best = Path(re.search(r"best checkpoint: (\S+)", out.stdout).group(1))
    assert best.is_file() and best.name.startswith("best_model_") and "val_acc=" in best.name
    assert len(list(best.parent.glob("*.pt"))) == 2  # n_saved=2
    with open(Path(re.search(r"logs: (\S+)", out.stdout).group(1)) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"training/loss", "validation/loss", "validation/accuracy"} <= set(rows[0])
    assert sum(1 for r in rows if r["validation/accuracy"]) == 2  # once per epoch
