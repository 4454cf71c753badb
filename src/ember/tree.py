"""Walking nested containers: the one tree walk behind every "for each tensor in this batch/state".

A tree is a leaf or a ``dict`` / ``list`` / ``tuple`` (named tuples included) of trees. Containers
keep their type (an ``OrderedDict`` stays one, a named tuple keeps its fields); everything else is a
leaf. Imports nothing heavy, so any layer can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``tree`` with every leaf replaced by ``fn(leaf)``; containers are rebuilt with their own type."""
    if isinstance(tree, dict):
        items = [(k, tree_map(fn, v)) for k, v in tree.items()]
        return dict(items) if type(tree) is dict else _rebuild_mapping(tree, items)
    if isinstance(tree, tuple):
        values = [tree_map(fn, v) for v in tree]
        return type(tree)(*values) if hasattr(tree, "_fields") else type(tree)(values)
    if isinstance(tree, list):
        return type(tree)(tree_map(fn, v) for v in tree)
    return fn(tree)


def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree``, depth first, in container order."""
    out: list[Any] = []
    _collect(tree, out)
    return out


def tree_any(predicate: Callable[[Any], bool], tree: Any) -> bool:
    """Whether any leaf of ``tree`` satisfies ``predicate``."""
    return any(predicate(leaf) for leaf in tree_leaves(tree))


def _collect(tree: Any, out: list[Any]) -> None:
    if isinstance(tree, dict):
        for v in tree.values():
            _collect(v, out)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _collect(v, out)
    else:
        out.append(tree)


def _rebuild_mapping(tree: dict, items: list[tuple[Any, Any]]) -> dict:
    try:
        return type(tree)(items)
    except TypeError:  # e.g. defaultdict, whose first argument is its factory
        out = tree.copy()
        out.update(items)
        return out
