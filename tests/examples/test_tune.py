"""examples/tune: an Optuna study through ember.tune, with pruning, a results table and plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_tune_example_runs_a_study_and_saves_plots(example, tmp_path: Path) -> None:
    root = tmp_path / "study"
    out = example("tune", "--fast", "--root-dir", str(root))
    assert "Study 'digits' (minimize val_loss): 3 trials" in out.stdout
    assert re.search(r"^Best trial: #\d+ with val_loss=[0-9.]+$", out.stdout, re.M)
    assert (root / "digits" / "study.db").is_file()
    assert sorted(p.name for p in (root / "digits").glob("trial_*")) == ["trial_0000", "trial_0001", "trial_0002"]
    for name in ("optimization_history", "param_importances"):
        path = Path(re.search(rf"plot {name}: (\S+)", out.stdout).group(1))
        assert path.read_bytes().startswith(PNG)
