"""The complete programs the documentation includes (docs/snippets/*.py) run as the pages say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from example_runner import HANG_GUARD_S, ROOT

SNIPPETS = sorted((ROOT / "docs" / "snippets").glob("*.py"))

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_there_are_snippets() -> None:
    assert {p.name for p in SNIPPETS} >= {"getting_started.py", "manual_optimization.py", "export.py"}


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: p.stem)
def test_docs_snippet_runs(snippet: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(snippet)], capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    if snippet.stem == "getting_started":
        val_acc = float(out.stdout.split("tensor(")[1].split(")")[0])
        assert val_acc > 0.9  # the rule x0 + x1 > 0 is learnt
        printed = [line.strip() for line in out.stdout.splitlines() if line.strip().endswith(".ckpt")]
        assert (tmp_path / printed[0]).is_file()  # the best checkpoint's path it printed
    if snippet.stem == "manual_optimization":
        assert out.stdout.strip().splitlines()[-1] == "8"  # two optimizer steps per batch, 4 batches
    if snippet.stem == "export":
        assert out.stdout.split()[:1] == ["True"] and "(5, 3)" in out.stdout and "torch.Size([5, 3])" in out.stdout
