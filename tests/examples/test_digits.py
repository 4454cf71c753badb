"""Ember's main job, end to end: the README's first command minus the environment set-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_digits_example_reaches_95_percent(example, tmp_path: Path) -> None:
    out = example("digits", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path))
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out.stdout).group(1))
    assert accuracy >= 0.95
    log_dir = tmp_path / re.search(r"logs: (\S+)", out.stdout).group(1)
    assert log_dir.is_dir() and any(log_dir.iterdir())  # the default logger wrote there
