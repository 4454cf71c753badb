"""examples/ddp: DDP from a plain `python` command on 2 CPU processes (gloo)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_ddp_example_runs_two_processes(example, tmp_path: Path) -> None:
    out = example("ddp", "--fast", "--out", str(tmp_path / "run"))
    assert out.stdout.count("training on 2 processes") == 1  # self.print: rank 0 only
    found = re.search(r"(\d+) processes, (\d+) optimizer steps each; (\{.*\})", out.stdout)
    assert found, out.stdout + out.stderr
    assert found.group(1) == "2" and found.group(2) == "8"
    assert "'val_acc'" in found.group(3)
    checkpoint = Path(re.search(r"checkpoint: (\S+)", out.stdout).group(1))
    assert checkpoint.is_file() and checkpoint.is_relative_to(tmp_path / "run")
