"""The structural rules of docs/architecture.md, checked on the source: no import cycles between Ember's files, no
reading or writing of another package's ``_private`` names, and no file over 500 lines.

The layer order itself is import-linter's contract in ``pyproject.toml`` (``lint-imports``, run by
``scripts/test.sh``); these checks cover what a layers contract cannot see.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import grimp

# read from the source tree, never imported: these checks also run while the package cannot import
SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE_DIR = SRC / "ember"
MAX_LINES = 500

# Private-looking names that Python documents as public API of the standard library.
PYTHON_PRIVATE_API = frozenset(
    {
        # collections.namedtuple / typing.NamedTuple
        "_asdict",
        "_field_defaults",
        "_fields",
        "_make",
        "_replace",
        # enum
        "_generate_next_value_",
        "_ignore_",
        "_member_map_",
        "_member_names_",
        "_missing_",
        "_name_",
        "_order_",
        "_value2member_map_",
        "_value_",
        # os._exit: the documented way for a child process to end without cleanup
        "_exit",
        # torchmetrics.Metric._forward_cache: the value of the metric's last forward() (the batch
        # value that self.log(name, metric) writes per step); torchmetrics has no public name for it
        "_forward_cache",
    }
)


def _source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


# ---------------------------------------------------------------------- import cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _a_cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle inside ``component``, as modules in import order, back to the first."""
    members = set(component)
    start = component[0]
    # breadth-first from start's imports back to start, staying inside the component
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return component


def _import_graph() -> dict[str, set[str]]:
    # every import statement counts: module level, inside functions, and under TYPE_CHECKING
    graph = grimp.build_graph(
        "ember", include_external_packages=False, exclude_type_checking_imports=False, cache_dir=None
    )
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def test_no_import_cycles_between_files():
    graph = _import_graph()
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    shown = "\n".join(
        f"  {' -> '.join(_a_cycle_through(c, graph))}   (all in the cycle: {', '.join(c)})" for c in cycles
    )
    assert not cycles, f"{len(cycles)} import cycle(s) between Ember files:\n{shown}"


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(c for c in _strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]
    assert _a_cycle_through(["a", "b", "c"], graph) == ["a", "b", "c", "a"]


# ---------------------------------------------------------------------- private access


def _package_of(path: Path) -> str:
    """The top-level package a file belongs to: ``engine`` for ``ember/engine/state.py``,
    ``module`` for ``ember/module.py``."""
    parts = path.relative_to(PACKAGE_DIR).parts
    return parts[0] if len(parts) > 1 else path.stem


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self_or_super(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _private_accesses(tree: ast.AST) -> Iterator[tuple[int, ast.expr, str]]:
    """``(line, object, name)`` for each ``obj._name`` and ``getattr/setattr/hasattr/delattr(obj, "_name")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            yield node.lineno, node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            yield node.lineno, node.args[0], node.args[1].value


def _defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a file defines: ``self._x`` / ``cls._x`` assignments, class attributes,
    module-level names, functions, methods and classes."""
    names: set[str] = set()

    def add_targets(target: ast.expr, *, bare_names: bool) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                add_targets(element, bare_names=bare_names)
        elif isinstance(target, ast.Starred):
            add_targets(target.value, bare_names=bare_names)
        elif isinstance(target, ast.Attribute) and _is_self_or_super(target.value):
            names.add(target.attr)
        elif bare_names and isinstance(target, ast.Name):
            names.add(target.id)

    def visit(body: list[ast.stmt], *, bare_names: bool) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    add_targets(target, bare_names=bare_names)
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                add_targets(stmt.target, bare_names=bare_names)

    module_body = tree.body if isinstance(tree, ast.Module) else []
    visit(module_body, bare_names=True)  # module-level names
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            visit(node.body, bare_names=True)  # class attributes and methods
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in ast.walk(node):
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(stmt.name)
                elif isinstance(stmt, ast.Assign):
                    for target in stmt.targets:
                        add_targets(target, bare_names=False)
                elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                    add_targets(stmt.target, bare_names=False)
    return names


def _private_access_violations(files: dict[Path, str]) -> list[str]:
    trees = {path: ast.parse(text, filename=str(path)) for path, text in files.items()}
    defined: dict[str, set[str]] = {}
    for path, tree in trees.items():
        defined.setdefault(_package_of(path), set()).update(_defined_private_names(tree))
    found = []
    for path, tree in trees.items():
        package = _package_of(path)
        own = defined[package]
        for line, obj, name in _private_accesses(tree):
            if _is_self_or_super(obj) or name in own or name in PYTHON_PRIVATE_API:
                continue
            found.append(
                f"{_relative(path)}:{line}: {ast.unparse(obj)}.{name}: {name} is private and not defined in ember.{package}"
            )
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            parts = node.module.split(".")
            if parts[0] != "ember" or len(parts) < 2 or parts[1] == package:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(
                        f"{_relative(path)}:{node.lineno}: imports {alias.name} from {node.module}, "
                        f"private to another package"
                    )
    return sorted(found, key=_by_file_and_line)


def _by_file_and_line(message: str) -> tuple[str, int]:
    file, line, _ = message.split(":", 2)
    return file, int(line)


def test_no_access_to_another_packages_private_names():
    files = {path: path.read_text(encoding="utf-8") for path in _source_files()}
    violations = _private_access_violations(files)
    assert not violations, f"{len(violations)} private access(es) across packages:\n" + "\n".join(violations)


def test_the_private_access_scan_tells_own_names_from_foreign_ones():
    engine, trainer = PACKAGE_DIR / "engine" / "x.py", PACKAGE_DIR / "trainer" / "y.py"
    files = {
        engine: "class E:\n    _k = 1\n    def __init__(self):\n        self._h = {}\n    def _f(self):\n        pass\n",
        trainer: (
            "from ember.engine.x import _helper\n"
            "from ember.trainer.z import _mine\n"
            "def run(e, p, t):\n"
            "    e._h.clear()\n"  # read of another package's attribute
            "    e._own = 1\n"  # write of another package's attribute
            "    getattr(e, '_k')\n"
            "    p._asdict()\n"  # a namedtuple's documented API
            "    t._mine_attr\n"
            "    super()._f()\n"
            "    e.__class__\n"
            "class T:\n"
            "    def __init__(self):\n"
            "        self._mine_attr = 0\n"
        ),
    }
    assert _private_access_violations(files) == [
        "ember/trainer/y.py:1: imports _helper from ember.engine.x, private to another package",
        "ember/trainer/y.py:4: e._h: _h is private and not defined in ember.trainer",
        "ember/trainer/y.py:5: e._own: _own is private and not defined in ember.trainer",
        "ember/trainer/y.py:6: e._k: _k is private and not defined in ember.trainer",
    ]


# ---------------------------------------------------------------------- file size


def test_no_file_over_500_lines():
    too_long = []
    for path in _source_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long.append(f"{_relative(path)}: {lines} lines")
    assert not too_long, f"files over {MAX_LINES} lines (each does two things: split it):\n" + "\n".join(too_long)
