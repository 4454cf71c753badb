"""Every public name that Ember's packages export has a docstring, and so does every public method,
property and hook of an exported class (issue: "the coverage of the public API is complete").

The public API is what a package lists in ``__all__`` (``ember`` and each ``ember.<package>``). A
method counts once, on the Ember class that defines it; methods inherited from PyTorch or another
library are theirs to document. An override that has no docstring of its own inherits the documented
one (``inspect.getdoc`` walks the base classes), as the reference pages show it.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil

import ember

SKIPPED_MEMBERS = {"__init__"}  # documented in the class docstring, as mkdocstrings merges them


def ember_packages() -> list[str]:
    """``ember`` and every ``ember.<package>`` that declares ``__all__``."""
    names = ["ember"]
    for info in pkgutil.iter_modules(ember.__path__):
        if info.ispkg:
            names.append(f"ember.{info.name}")
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def own_members(cls: type):
    """(name, object) for the public methods and properties ``cls`` defines itself."""
    for name, value in vars(cls).items():
        if name.startswith("_") or name in SKIPPED_MEMBERS:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            yield name, value


def has_doc(obj, cls: type | None = None, name: str | None = None) -> bool:
    if cls is not None and name is not None:
        # an override without a docstring shows the documented base method's
        return bool(inspect.getdoc(getattr(cls, name, obj)))
    return bool(inspect.getdoc(obj))


def undocumented() -> list[str]:
    """Qualified names of public API objects without a docstring."""
    missing: list[str] = []
    seen: set[int] = set()
    for package_name in ember_packages():
        package = importlib.import_module(package_name)
        for name in package.__all__:
            obj = getattr(package, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            if not (getattr(obj, "__module__", "") or "").startswith("ember"):
                continue  # re-exported from torch, torchmetrics, ...
            where = f"{obj.__module__}.{obj.__qualname__}"
            if not (obj.__doc__ or "").strip():
                missing.append(where)
            if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
                for member, value in own_members(obj):
                    if not has_doc(value, obj, member):
                        missing.append(f"{where}.{member}")
    return sorted(set(missing))


def test_public_api_is_documented():
    missing = undocumented()
    assert not missing, f"{len(missing)} public names lack a docstring:\n" + "\n".join(missing)


def test_the_check_can_fail():
    class Exported:
        def method(self):
            pass

    assert not has_doc(Exported.method)
    assert not has_doc(Exported.method, Exported, "method")


if __name__ == "__main__":  # `python tests/test_docstrings.py` lists what is missing
    gaps = undocumented()
    print("\n".join(gaps))
    print(f"{len(gaps)} undocumented")
