"""The architecture, checked: imports go one way, runtime → core → model → arm (style guide §1).

The rules, package by package:

- ``arm/`` imports nothing of ``core``, ``runtime`` or ``model``; ``cert_facts`` (``is_ca``) sits
  below every layer and imports nothing of the emulator.
- ``core/`` and ``model/`` import neither ``runtime``, trio nor h11; ``model/`` imports nothing
  of ``core`` and does no I/O (no files, sockets, processes, clock or printing). ``core/`` is
  ``tls/``, ``http/`` and ``request/`` plus a few shared modules, and ``core/http`` imports
  nothing of ``core/tls`` or ``core/request``.
- ``reports/`` is pure in the same way: values in, text or JSON-ready data out.
- trio is used only by ``runtime/``, the dashboard's shell (``server``, ``trying``),
  ``pki/ocsp_responder`` and ``cli/``,
  plus the modules listed in ``TRIO_USERS_TO_MOVE`` with the place each belongs.
- Nothing imports ``cli/`` except ``emulator/__main__.py`` (``python -m emulator``); the
  tests, examples and benchmarks may.

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
from typing import Final

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "emulator"


def _module_name(path: Path) -> str:
    """``emulator/model/builder/ssl.py`` → ``emulator.model.builder.ssl`` (a package by its
    ``__init__``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODEL_FILES = sorted((PACKAGE / "model").rglob("*.py"))
CORE_FILES = sorted((PACKAGE / "core").rglob("*.py"))
SANS_IO_MODULES = sorted(
    [
        *(_module_name(p) for p in sorted((PACKAGE / "core").rglob("*.py"))),
        *(f"emulator.arm.{p.stem}" for p in (PACKAGE / "arm").glob("*.py")),
        *(f"emulator.terraform.{p.stem}" for p in (PACKAGE / "terraform").glob("*.py")),
        *(_module_name(p) for p in sorted((PACKAGE / "model").rglob("*.py"))),
        *(_module_name(p) for p in sorted((PACKAGE / "reports").glob("*.py"))),
        "emulator.pki",
        "emulator.pki.ca",
        "emulator.pki.demo",
        "emulator.errors",
        "emulator.cert_facts",
        "emulator.loading",
    ]
)
FORBIDDEN_THIRD_PARTY = ("trio", "h11")
REPORT_FILES = sorted((PACKAGE / "reports").glob("*.py"))


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
    assert "emulator.core.tls.policy" in SANS_IO_MODULES
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
    [*CORE_FILES, *MODEL_FILES],
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_core_and_model_never_import_runtime_trio_or_h11(path: Path) -> None:
    bad = sorted(
        name
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN_THIRD_PARTY or name.startswith("emulator.runtime")
    )
    assert bad == []


#: core/'s top level: the shared pieces; everything else sits in tls/, http/ or request/.
CORE_TOP_LEVEL: Final = {"__init__.py", "access.py", "bounded_cache.py", "limits.py"}
CORE_SUBPACKAGES: Final = {"tls", "http", "request"}


def test_core_is_tls_http_and_request() -> None:
    """A new core module picks the part it belongs to rather than growing a flat directory."""
    top = {p.name for p in (PACKAGE / "core").glob("*.py")}
    packages = {p.parent.name for p in (PACKAGE / "core").glob("*/__init__.py")}
    assert (top, packages) == (CORE_TOP_LEVEL, CORE_SUBPACKAGES)


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "core" / "http").glob("*.py")),
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_core_http_knows_nothing_of_tls_or_requests(path: Path) -> None:
    """The HTTP codecs frame bytes; which certificate, rule or backend applies is decided above
    them (core/request), so they stay reusable for the backend leg and the fuzzers."""
    bad = sorted(
        name
        for name in _imported_modules(path)
        if name.startswith(("emulator.core.tls", "emulator.core.request", "emulator.core.access"))
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


# -- file descriptors ---------------------------------------------------------------------------

#: The one module that reads, writes or takes over file descriptors (issue 16).
TRANSPORT_MODULE = PACKAGE / "runtime" / "transport.py"
#: The ``--workers`` supervisor hands its listening sockets to the worker processes: a
#: process-management concern of its own, not the request path.
#: Its health endpoint (``plain_health``) runs in the supervisor's own selectors loop, which
#: cannot be trio's (the supervisor forks), so it registers sockets by descriptor.
DESCRIPTOR_EXEMPT = {
    TRANSPORT_MODULE,
    PACKAGE / "runtime" / "workers.py",
    PACKAGE / "runtime" / "plain_health.py",
}
#: ``os`` functions that work on a descriptor number.
DESCRIPTOR_CALLS = frozenset(
    {"read", "write", "pread", "pwrite", "readv", "writev", "sendfile", "ftruncate", "dup"}
)


def _descriptor_uses(path: Path) -> list[str]:
    """``os.read``/``os.write``-style calls, ``.fileno()``, ``.detach()`` and
    ``socket.socket(fileno=...)`` in one file, as ``line: text``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        if (
            (owner == "os" and func.attr in DESCRIPTOR_CALLS)
            or func.attr in ("fileno", "detach")
            or any(k.arg == "fileno" for k in node.keywords)
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_descriptor_check_sees_the_transport_module() -> None:
    uses = "\n".join(_descriptor_uses(TRANSPORT_MODULE))
    assert "os.read(" in uses
    assert "os.write(" in uses
    assert ".detach()" in uses


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


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p not in DESCRIPTOR_EXEMPT),
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_only_the_transport_module_touches_file_descriptors(path: Path) -> None:
    # pki/demo's fsync of the files it writes is the one other use: durability of a written
    # file, not I/O on a descriptor number.
    source = path.read_text(encoding="utf-8").splitlines()
    uses = [
        u for u in _descriptor_uses(path) if "os.fsync(" not in source[int(u.split(":")[0]) - 1]
    ]
    assert uses == []


def test_cert_facts_import_nothing_of_the_emulator() -> None:
    """``is_ca`` and its kind are read by every layer, arm included, so they import none."""
    bad = sorted(
        name
        for name in _imported_modules(PACKAGE / "cert_facts.py")
        if name.split(".")[0] == "emulator"
    )
    assert bad == []


# -- the packages of the new layout ---------------------------------------------------------------

#: Modules that touch the outside world; a pure module imports none of them.
IO_MODULES = ("socket", "ssl", "subprocess", "os", "shutil", "tempfile", "time", "select")
#: Calls that read a file, the clock or the terminal, or write one.
IO_CALLS = frozenset({"open", "print", "input"})
IO_METHODS = frozenset(
    {"now", "utcnow", "today", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir"}
)


def _io_uses(path: Path) -> list[str]:
    """What in ``path`` does I/O: an I/O module imported, or a file/clock/terminal call."""
    found = [
        f"import {name}"
        for name in _imported_modules(path)
        if name.split(".")[0] in (*IO_MODULES, *FORBIDDEN_THIRD_PARTY)
    ]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in IO_CALLS:
            found.append(f"line {node.lineno}: {node.func.id}()")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in IO_METHODS:
            found.append(f"line {node.lineno}: .{node.func.attr}()")
    return found


def test_the_io_check_sees_io() -> None:
    """The check itself: a module that reads the clock and a file is caught."""
    assert _io_uses(PACKAGE / "cli" / "wait.py") != []


@pytest.mark.parametrize(
    "path",
    [*CORE_FILES, *MODEL_FILES, *REPORT_FILES],
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_core_model_and_reports_do_no_io(path: Path) -> None:
    """The model is built from values (the caller passes the time, ``now=``); core decides from
    values too (an access record's time stamp comes from the shell); a report turns values into
    text or JSON-ready data, and the CLI or the dashboard prints it."""
    assert _io_uses(path) == []


def _package_of(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


#: Where trio may be used: the shell and the programs that run it.
#: The dashboard's shell is its server and its "try it" client (h11 over a TLS stream to the
#: gateway, the dashboard's own outbound leg), side by side; its views stay pure.
TRIO_USERS: Final = (
    "runtime/",
    "dashboard/server.py",
    "dashboard/trying.py",
    "pki/ocsp_responder.py",
    "cli/",
)
#: Today's other trio users, each with where it belongs; a module leaves this table when it
#: moves, and a new trio user outside ``TRIO_USERS`` fails the test below.
TRIO_USERS_TO_MOVE: Final = {
    # The public blocking API (LoopThread) and the pytest plugin run the gateway on trio by
    # design; both are public import paths (emulator.sync, emulator.testing) and stay.
    "sync.py": "stays: public path emulator.sync, the blocking wrapper around trio",
    "testing.py": "stays: public path emulator.testing, the pytest plugin",
}


def _uses_trio(path: Path) -> bool:
    return any(name.split(".")[0] == "trio" for name in _imported_modules(path))


ALL_FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", ALL_FILES, ids=_package_of)
def test_trio_is_used_only_by_the_shell_and_its_programs(path: Path) -> None:
    where = _package_of(path)
    allowed = where.startswith(TRIO_USERS) or where in TRIO_USERS_TO_MOVE
    assert allowed or not _uses_trio(path)


def test_the_trio_table_lists_only_trio_users() -> None:
    """An entry for a module that no longer uses trio (or no longer exists) is stale."""
    stale = [name for name in TRIO_USERS_TO_MOVE if not _uses_trio(PACKAGE / name)]
    assert stale == []


@pytest.mark.parametrize(
    "path",
    [p for p in ALL_FILES if not _package_of(p).startswith("cli/") and p.name != "__main__.py"],
    ids=_package_of,
)
def test_nothing_imports_the_cli(path: Path) -> None:
    """The command line is the top of the tree: it imports everything, nothing imports it
    (``emulator/__main__.py``, the ``python -m emulator`` entry point, aside)."""
    bad = sorted(
        name
        for name in _imported_modules(path)
        if name == "emulator.cli" or name.startswith("emulator.cli.")
    )
    assert bad == []


def test_the_entry_points_reach_the_cli() -> None:
    """``python -m emulator`` and the console script both run ``emulator.cli.main:main``."""
    assert "emulator.cli.main" in _imported_modules(PACKAGE / "__main__.py")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'appgw-emulator = "emulator.cli.main:main"' in pyproject


@pytest.mark.parametrize("package", ["model", "reports", "pki", "cli", "dashboard"])
def test_no_import_circles_inside_the_new_packages(package: str) -> None:
    """Two modules that import each other (even inside a function) cannot be read, tested or
    moved one at a time; the dashboard's identity loaders were such a pair."""
    prefix = f"emulator.{package}."
    files = sorted((PACKAGE / package).rglob("*.py"))
    graph = {
        _module_name(p): {n for n in _imported_modules(p) if n.startswith(prefix)} for p in files
    }
    circles = sorted(
        (a, b) for a, targets in graph.items() for b in targets if a < b and a in graph.get(b, ())
    )
    assert circles == []
