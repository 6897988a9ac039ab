"""`core` stays pure: no Celery, Redis or SQLAlchemy, and it never reads the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("celery", "redis", "sqlalchemy", "kombu", "alembic", "db", "tasks", "workers")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_sources_import_nothing_forbidden() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "core").rglob("*.py")
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders, f"core imports forbidden modules: {sorted(offenders)}"


def test_core_sources_do_not_read_the_environment() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "core").rglob("*.py")
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    ]
    assert not offenders, f"core reads the environment in {offenders}"


def test_importing_core_loads_no_forbidden_module() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "core").rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"importing core loaded: {done.stdout.strip()}"


def _core_import_graph(unit: Callable[[str], str]) -> dict[str, set[str]]:
    """Edges between `core` units from every import in `core`: top-level, function-local and
    type-checking-only alike (a hidden cycle is still a cycle)."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "core").rglob("*.py")
    }
    edges: dict[str, set[str]] = {unit(m): set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                if name in modules and unit(name) != unit(module):
                    edges[unit(module)].add(unit(name))
    return edges


def _a_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (its nodes in order, the first repeated), or [] when acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def _package_of(module: str) -> str:
    """`core.video.probe` -> `core.video`; a top-level module (`core.errors`) is its own unit."""
    parts = module.split(".")
    if len(parts) > 1 and (ROOT / "core" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def test_core_packages_import_only_downwards() -> None:
    edges = _core_import_graph(_package_of)
    assert not _a_cycle(edges), f"core packages import each other: {' -> '.join(_a_cycle(edges))}"
    # The shared leaves import no other part of core.
    for leaf in ("core.errors", "core.status", "core.traits", "core.timing"):
        assert not edges[leaf], f"{leaf} imports {sorted(edges[leaf])}"


def test_core_modules_form_no_import_cycle() -> None:
    edges = _core_import_graph(lambda module: module)
    assert not _a_cycle(edges), f"an import cycle in core: {' -> '.join(_a_cycle(edges))}"
