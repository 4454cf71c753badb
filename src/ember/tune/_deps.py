"""Lazy imports of the optional ``tune`` dependencies, with an error that names the extra."""

from __future__ import annotations

import sys
from typing import Any

from ember.optional import require


def import_optuna() -> Any:
    """``optuna``, or an ``ImportError`` saying how to install it."""
    return require("optuna", "tune", "ember.tune", "Optuna")


def import_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (unless pyplot is already in use)."""
    matplotlib = require("matplotlib", "tune", "plotting", "matplotlib")
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only: no display, no browser
    import matplotlib.pyplot as plt

    return plt
