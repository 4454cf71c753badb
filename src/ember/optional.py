"""Optional dependencies, imported when first used, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, needed_by: str | None = None, name: str | None = None) -> ModuleType:
    """Import ``module``; if it is missing, raise an ``ImportError`` naming the ``ember[extra]`` to
    install (and, when given, what needs it: ``require("mlflow", "mlflow", "MLFlowLogger")``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        needed = f"{needed_by} needs {name or module}" if needed_by else f"{module!r} is needed for this feature"
        raise ImportError(f'{needed}, which is not installed: pip install "ember[{extra}]"') from err
