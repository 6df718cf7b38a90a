"""Imports go one way: runtime → core → model → arm (style guide §1).

The sans-I/O modules must not pull in the trio shell or the HTTP library, so they stay usable
(and testable) without an event loop. Checked two ways: by importing the modules in a fresh
interpreter and looking at ``sys.modules``, and by reading each module's import statements.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "emulator"


def _module_name(path: Path) -> str:
    """``emulator/model/builder/ssl.py`` → ``emulator.model.builder.ssl`` (a package by its
    ``__init__``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODEL_FILES = sorted((PACKAGE / "model").rglob("*.py"))
SANS_IO_MODULES = sorted(
    [
        *(f"emulator.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py")),
        *(f"emulator.arm.{p.stem}" for p in (PACKAGE / "arm").glob("*.py")),
        *(f"emulator.terraform.{p.stem}" for p in (PACKAGE / "terraform").glob("*.py")),
        *(_module_name(p) for p in sorted((PACKAGE / "model").rglob("*.py"))),
        "emulator.errors",
        "emulator.cert_facts",
    ]
)
FORBIDDEN_THIRD_PARTY = ("trio", "h11")


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_module_lists_are_not_empty() -> None:
    assert "emulator.core.tls_policy" in SANS_IO_MODULES
    assert "emulator.arm.template" in SANS_IO_MODULES


def test_sans_io_modules_never_load_trio_or_h11() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {SANS_IO_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    loaded = json.loads(result.stdout)

    leaked = [
        name
        for name in loaded
        if name.split(".")[0] in FORBIDDEN_THIRD_PARTY or name.startswith("emulator.runtime")
    ]
    assert leaked == []


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "arm").glob("*.py")), ids=lambda p: f"arm/{p.name}"
)
def test_arm_never_imports_core_runtime_or_model(path: Path) -> None:
    """Shared certificate facts (:mod:`emulator.cert_facts`) sit below arm, so arm may use them."""
    forbidden = ("emulator.core", "emulator.runtime", "emulator.model")
    bad = sorted(
        name
        for name in _imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
    assert bad == []


@pytest.mark.parametrize(
    "path",
    [*sorted((PACKAGE / "core").glob("*.py")), *MODEL_FILES],
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_core_and_model_never_import_runtime_trio_or_h11(path: Path) -> None:
    bad = sorted(
        name
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN_THIRD_PARTY or name.startswith("emulator.runtime")
    )
    assert bad == []


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_model_never_imports_core(path: Path) -> None:
    bad = sorted(name for name in _imported_modules(path) if name.startswith("emulator.core"))
    assert bad == []


# -- the suite's own layout -----------------------------------------------------------------------

REPO = PACKAGE.parent
TEST_SOURCES = sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "examples").rglob("*.py")])
#: Unit tests of the trio shell belong in tests/runtime/; this one moves there with the TLS
#: stream's restructuring, and leaves this set then.
UNIT_TESTS_OF_THE_SHELL = {"test_tls_stream.py"}


@pytest.mark.parametrize("path", TEST_SOURCES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_test_module_imports_another(path: Path) -> None:
    """Shared test code lives in tests/helpers (fixtures in conftest.py): a test module can then
    be renamed, moved or run alone without breaking another."""
    bad = sorted(
        name
        for name in _imported_modules(path)
        if name.startswith("tests.") and any(p.startswith("test_") for p in name.split("."))
    )
    assert bad == []


@pytest.mark.parametrize(
    "path",
    sorted(
        p for p in (REPO / "tests" / "unit").glob("*.py") if p.name not in UNIT_TESTS_OF_THE_SHELL
    ),
    ids=lambda p: p.name,
)
def test_unit_tests_run_without_an_event_loop(path: Path) -> None:
    """tests/unit covers the pure modules; a test that needs trio tests the shell and sits in
    tests/runtime/ (or, with real sockets end to end, in tests/e2e/)."""
    bad = sorted(name for name in _imported_modules(path) if name.split(".")[0] == "trio")
    assert bad == []


def test_cert_facts_import_nothing_of_the_emulator() -> None:
    """``is_ca`` and its kind are read by every layer, arm included, so they import none."""
    bad = sorted(
        name
        for name in _imported_modules(PACKAGE / "cert_facts.py")
        if name.split(".")[0] == "emulator"
    )
    assert bad == []
