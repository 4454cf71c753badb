"""Distributed tests: real processes with ``gloo`` on 127.0.0.1. ``tests/distributed`` is put on
``sys.path`` so the tests and the jobs they launch share ``dist_common`` (one CPU thread per test
comes from ``tests/conftest.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
