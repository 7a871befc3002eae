"""The package's layers stay true (issue 19): surfaces -> runs -> snapshots -> storage -> core, never back
up, and no import cycle between modules.

Every import is read from the source (function-level imports too; ``if TYPE_CHECKING:`` imports count for
the layers, not for cycles, since they never run). ``refstore/__init__.py`` is the facade users import; no
module inside the layers imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "refstore"
#: Lowest first: a module may import from its own layer and the ones below.
LAYERS = ("core", "storage", "snapshots", "runs", "surfaces")
#: Top-level modules and the layer they count as (the facade and ``python -m refstore`` sit above all).
TOP = {"_version": "core", "__init__": None, "__main__": None}


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted names below the package (``storage.backends.s3``; a package is its folder's name)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, runs at import or call time)`` for each import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if name == "__init__":
        package = ""
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            type_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "refstore" or alias.name.startswith("refstore."):
                        target = alias.name.removeprefix("refstore").lstrip(".") or "__init__"
                        found.append((target, node.lineno, id(node) not in type_only))
            continue
        if node.level == 0:
            if not (node.module or "").startswith("refstore"):
                continue
            base = (node.module or "").removeprefix("refstore").lstrip(".")
        else:
            parts = package.split(".") if package else []
            parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
            base = ".".join([*parts, *([node.module] if node.module else [])])
        for alias in node.names:
            child = f"{base}.{alias.name}" if base else alias.name
            target = child if child in modules else (base or "__init__")
            found.append((target, node.lineno, id(node) not in type_only))
    return found


def _layer(name: str) -> str | None:
    head = name.split(".")[0]
    return TOP.get(head) if head in TOP else head


def check(root: Path) -> list[str]:
    """Every import in the package at ``root`` that runs up a layer or closes a cycle, one line each."""
    modules = _module_names(root)
    problems = []
    runtime: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in sorted(modules.items()):
        layer = _layer(name)
        for target, line, runs in _imports(name, path, modules):
            if target == name:
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            if layer is not None and layer not in LAYERS:
                problems.append(f"{where}: {name} is in no layer (put it in one of {', '.join(LAYERS)})")
            elif layer is not None:
                up = _layer(target)
                if up is None or (up in LAYERS and LAYERS.index(up) > LAYERS.index(layer)):
                    problems.append(f"{where}: {name} ({layer}) imports {target} ({up or 'the facade'})")
            if runs:
                runtime[name].add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(runtime)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append([*sorted(group), min(group)])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_runs_up_a_layer_or_closes_a_cycle() -> None:
    problems = check(PACKAGE)
    assert not problems, "\n".join(problems)


def test_every_module_is_in_a_layer() -> None:
    heads = {name.split(".")[0] for name in _module_names(PACKAGE)}
    assert heads - set(TOP) == set(LAYERS)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a back-arrow: core imports from storage
            {"core/meta.py": "from ..storage.store import Store\n", "storage/store.py": "Store = 1\n"},
            "core/meta.py:1: core.meta (core) imports storage.store (storage)",
        ),
        (  # a type-only back-arrow is still one
            {
                "core/meta.py": (
                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runs import x\n"
                ),
                "runs/__init__.py": "x = 1\n",
            },
            "core/meta.py:3: core.meta (core) imports runs (runs)",
        ),
        (  # a cycle inside one layer, through an import inside a function
            {
                "snapshots/a.py": "from .b import f\n",
                "snapshots/b.py": "def f():\n    from .a import g\n",
            },
            "import cycle: snapshots.a -> snapshots.b -> snapshots.a",
        ),
        (  # the facade from inside a layer
            {"storage/s.py": "from .. import Registry\n"},
            "storage/s.py:1: storage.s (storage) imports __init__ (the facade)",
        ),
    ],
)
def test_the_check_finds_what_it_forbids(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    root = tmp_path / "refstore"
    for relative, text in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            (root / folder / "__init__.py").touch()
        path.write_text(text)
    assert any(expected in problem for problem in check(root)), check(root)
