"""Lazy imports of the optional ``tune`` dependencies, with an error that names the extra."""

from __future__ import annotations

import sys
from typing import Any

_HINT = 'pip install "ember[tune]"'


def import_optuna() -> Any:
    """``optuna``, or an ``ImportError`` saying how to install it."""
    try:
        import optuna
    except ImportError as err:
        raise ImportError(f"ember.tune needs Optuna, which is not installed: {_HINT}") from err
    return optuna


def import_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (unless pyplot is already in use)."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(f"plots need matplotlib, which is not installed: {_HINT}") from err
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only: no display, no browser
    import matplotlib.pyplot as plt

    return plt
