"""examples/lr_finder: the learning-rate range test, its plot, and a fit with the suggestion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_lr_finder_example_suggests_plots_and_fits(example, tmp_path: Path) -> None:
    out = example("lr_finder", "--fast", "--out", str(tmp_path / "run"))
    swept = int(re.search(r"swept (\d+) steps", out.stdout).group(1))
    assert 2 <= swept <= 20
    found = re.search(r"suggested learning rate: ([0-9.e+-]+) \(model.hparams.lr is now ([0-9.e+-]+)\)", out.stdout)
    suggestion, set_lr = float(found.group(1)), float(found.group(2))
    assert 1e-6 < suggestion < 1.0 and set_lr == suggestion
    assert Path(re.search(r"plot: (\S+)", out.stdout).group(1)).read_bytes().startswith(b"\x89PNG")
    assert re.search(r"after fit with that rate: val_loss [0-9.]+, val_acc [0-9.]+", out.stdout)
