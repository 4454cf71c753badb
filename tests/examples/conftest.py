"""The ``example`` fixture: run an example in the test's temporary directory (see ``example_runner``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from example_runner import run_example


@pytest.fixture
def example(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Runs ``examples/<name>/main.py`` with the given arguments in ``tmp_path``."""

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        return run_example(name, *args, cwd=tmp_path)

    return run
