"""The tests' own layering: shared fixtures and helpers live in `tests/support/`.

No module under tests/ imports a test module (`test_*.py`) or a conftest, and a test package
imports, of the other folders of tests/, only `tests.support` and the clip generators that
the documentation runs as commands (`python -m tests.clips`, `python -m tests.synthetic`).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Top-level modules of tests/ that any test may import: data generators with command lines.
GENERATORS = {"clips", "people_clips", "audio_clips", "synthetic", "backbone_graph"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _tests_imports(path: Path, text: str | None = None) -> set[str]:
    """Every `tests.*` module `path` (or `text` as that file) imports, anywhere in the file,
    function-local imports too."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    if package is None:
        package = _module_name(path)
    found: set[str] = set()
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from tests.core import test_x` imports the module `tests.core.test_x`.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "tests" or name.startswith("tests.")}


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (TESTS.parent / relative).with_suffix(".py").exists() or (
        TESTS.parent / relative / "__init__.py"
    ).exists()


def _sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    offenders = sorted(
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in _sources()
        for name in _tests_imports(path)
        if _is_module(name)
        and (name.rsplit(".", 1)[-1].startswith("test_") or name.endswith("conftest"))
    )
    assert not offenders, "move what is shared to tests/support/:\n" + "\n".join(offenders)


def test_test_packages_share_code_only_through_support() -> None:
    offenders = []
    for path in _sources():
        parts = path.relative_to(TESTS).parts
        own = parts[0] if len(parts) > 1 else None
        for name in _tests_imports(path):
            if name == "tests" or not _is_module(name):
                continue  # the package, or a name imported from a module (checked as that)
            top = name.split(".")[1] if "." in name else ""
            if top in {"support", own} or top in GENERATORS:
                continue
            offenders.append(f"{path.relative_to(TESTS.parent)} imports {name}")
    assert not offenders, "shared helpers belong in tests/support/:\n" + "\n".join(
        sorted(offenders)
    )


def test_the_check_sees_a_forbidden_import() -> None:
    """The parser finds each form of importing a test module, function-local ones too."""
    text = (
        "def f():\n    from tests.core import test_faces\n    from tests.db.conftest import x\n"
        "    from .test_y import z\n"
    )
    names = _tests_imports(TESTS / "support" / "probe.py", text)
    assert "tests.support.test_y" in names
    assert "tests.core.test_faces" in names and "tests.db.conftest" in names
    assert _is_module("tests.core.test_faces") and not _is_module("tests.core.test_nothing")
