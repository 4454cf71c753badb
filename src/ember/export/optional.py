"""Optional dependencies, imported when first used, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; if it is missing, raise an ``ImportError`` naming the ``ember[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f'{module!r} is needed for this feature but is not installed; install it with: pip install "ember[{extra}]"'
        ) from err
