"""Shared fixtures of the differential tests against the real Ignite (helpers: ``ignite_kit``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from ignite_kit import SIDES, Side  # noqa: E402


@pytest.fixture(params=SIDES, ids=repr)
def side(request: pytest.FixtureRequest) -> Side:
    """Each side in turn, for tests that check one behaviour on both frameworks separately."""
    return request.param


@pytest.fixture(autouse=True)
def _quiet_ignite() -> None:
    """Ignite logs every exception a run meets at ERROR level; the tests compare them instead."""
    logger = logging.getLogger("ignite")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
