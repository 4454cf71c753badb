"""examples/char_gpt: a character-level GPT with accumulation, clipping, warmup+cosine and bf16-mixed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

# a hang guard above the 300 s default: on a loaded machine a subprocess run can take minutes
pytestmark = pytest.mark.timeout(900)


def test_char_gpt_example_learns_and_follows_its_schedule(example, tmp_path: Path) -> None:
    out = example("char_gpt", "--fast", "--out", str(tmp_path / "run"))
    found = re.search(r"(\d+) optimizer steps; val_loss ([0-9.]+); last learning rate ([0-9.e+-]+)", out.stdout)
    assert found, out.stdout
    steps, val_loss, lr = int(found.group(1)), float(found.group(2)), float(found.group(3))
    assert steps == 16  # max_steps counts optimizer steps: 32 batches with accumulate_grad_batches=2
    assert val_loss < math.log(128)  # better than a uniform guess over the 128 characters
    assert math.isclose(lr, 1e-3 * 0.1, rel_tol=1e-6)  # the cosine ends at min_lr_ratio * lr after max_steps
    assert re.search(r"sample:\ndef ", out.stdout)
    assert Path(re.search(r"logs: (\S+)", out.stdout).group(1)).is_dir()
