"""The layers hold: `core` stays pure (no Celery, Redis or SQLAlchemy, never the environment);
services import no front end, the API no CLI, the broker module no service; and no import
cycle joins the project's own modules, function-level imports included."""

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


PROJECT = ("core", "db", "tasks", "workers")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PROJECT for p in (ROOT / pkg).rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: read by type checkers only, never run."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            for child in node.body:
                hidden.update(id(n) for n in ast.walk(child))
    return hidden


def _project_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports when it runs, at any depth of its code."""

    def known(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    tree = ast.parse(path.read_text(), filename=str(path))
    hidden = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(t for alias in node.names if (t := known(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: None if path.name == "__init__.py" else -1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] not in PROJECT:
                continue
            for alias in node.names:
                whole = f"{source}.{alias.name}"
                target = whole if whole in modules else known(source)
                if target:
                    found.add(target)
    found.discard(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _project_imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _offenders(graph: dict[str, set[str]], importer: str, imported: tuple[str, ...]) -> list[str]:
    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if under(name, importer)
        for target in targets
        if any(under(target, package) for package in imported)
    )


def test_no_import_cycle_between_project_modules() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (each a group of modules importing each other): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_services_import_no_front_end() -> None:
    offenders = _offenders(_import_graph(), "workers.services", ("workers.cli", "workers.api"))
    assert not offenders, f"services import a front end: {offenders}"


def test_the_api_imports_no_cli() -> None:
    offenders = _offenders(_import_graph(), "workers.api", ("workers.cli",))
    assert not offenders, f"the API imports the CLI: {offenders}"


def test_the_broker_module_imports_no_service() -> None:
    offenders = _offenders(_import_graph(), "workers.broker", ("workers.services",))
    assert not offenders, f"workers/broker imports services: {offenders}"


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
