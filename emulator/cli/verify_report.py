"""The scenario matrix as a terminal table, JSON and JUnit XML, and the ``--expect`` CI gate.

An expectations file is JSON: listener name (or ``"*"`` for every listener) → scenario → the
outcome that cell must give. An outcome is a string as :attr:`Cell.outcome` spells it
(``"backend 200"``, ``"gateway 400"``, ``"skipped"``) or a bare status code (``401``: the
status the client got, whoever answered). Keys starting with ``$`` are comments. A named
listener's entry wins over ``"*"``; cells the file says nothing about are not gated.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from emulator.cli.verify_matrix import Cell, MatrixReport, TrustMode, VerifyError
from emulator.cli.verify_scenarios import SCENARIOS

__all__ = [
    "Expectations",
    "Mismatch",
    "check_expectations",
    "load_expectations",
    "render_junit",
    "render_table",
]

WILDCARD: Final = "*"


def _headers_text(cell: Cell) -> str:
    if cell.backend_reached and not cell.backend_observed:
        return "(not observed)"
    if not cell.cert_headers:
        return "-" if cell.backend_reached else ""
    # The first name and a count: the values (a PEM, a DN) are in the JSON output, and the table
    # must stay one screen wide.
    first = cell.cert_headers[0][0]
    more = len(cell.cert_headers) - 1
    return f"{first} (+{more} more)" if more else first


def _gateway_text(cell: Cell) -> str:
    if cell.skipped is not None:
        return "skipped"
    if cell.error is not None:
        return "error"
    if cell.backend_reached:
        return "forwarded"
    page = cell.page or ""
    return page if page.startswith(str(cell.status)) else f"{cell.status} {page}".strip()


def render_table(
    report: MatrixReport, mismatches: Mapping[tuple[str, str], str] | None = None
) -> str:
    """One line per cell; under substitute trust every line says so."""
    header = (
        "listener",
        "mode",
        "scenario",
        "gateway",
        "sslClientVerify",
        "backend",
        "cert headers",
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    substitute = report.trust == TrustMode.SUBSTITUTE
    for cell in report.cells:
        backend = ""
        if cell.skipped is None and cell.error is None:
            backend = f"{cell.backend_status or '-'}" if cell.backend_reached else "not reached"
        row = (
            cell.listener,
            cell.mode,
            cell.scenario,
            _gateway_text(cell),
            cell.verification or "",
            backend,
            _headers_text(cell),
        )
        tail = []
        if substitute:
            tail.append("[substitute trust]")
        if cell.twin_of:
            tail.append(f"(twin of {cell.twin_of})")
        if cell.skipped:
            tail.append(f"({cell.skipped})")
        if cell.error:
            tail.append(f"({cell.error})")
        if cell.forged_header_reached_backend:
            tail.append("FORGED HEADER REACHED THE BACKEND")
        key = (cell.listener, cell.scenario)
        if mismatches and key in mismatches:
            tail.append(f"MISMATCH: {mismatches[key]}")
        rows.append(row)
        notes.append(" ".join(tail))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cols: tuple[str, ...], note: str = "") -> str:
        text = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
        return f"{text}  {note}".rstrip()

    out = [f"gateway {report.gateway}: {report.trust_note}"]
    out += [f"note: {n}" for n in report.notes]
    out.append(line(header))
    out += [line(row, note) for row, note in zip(rows, notes, strict=True)]
    return "\n".join(out)


# -- expectations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectations:
    file: str
    by_listener: Mapping[str, Mapping[str, str | int]]

    def expected(self, listener: str, scenario: str) -> str | int | None:
        for key in (listener, WILDCARD):
            entry = self.by_listener.get(key, {})
            if scenario in entry:
                return entry[scenario]
        return None


@dataclass(frozen=True, slots=True)
class Mismatch:
    listener: str
    scenario: str
    expected: str | int
    got: str
    status: int | None

    def diff_lines(self) -> list[str]:
        return [
            f"--- expected {self.listener} x {self.scenario}: {self.expected}",
            f"+++ got      {self.listener} x {self.scenario}: {self.got}",
        ]


def load_expectations(path: Path, listeners: set[str]) -> Expectations:
    """Read and check an expectations file against the run's listener names.

    Raises:
        VerifyError: unreadable JSON, an unknown listener or scenario, a value of the wrong
            type; the message names the file and the JSON path.
    """
    fix = (
        'write {"LISTENER or *": {"SCENARIO": "backend 200" | "gateway 400" | "skipped" | STATUS}}'
    )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VerifyError(
            f"cannot read the expectations: {exc.strerror or exc}", file=str(path), fix=fix
        ) from exc
    except ValueError as exc:
        raise VerifyError(f"the expectations are not JSON: {exc}", file=str(path), fix=fix) from exc
    if not isinstance(document, dict):
        raise VerifyError("the expectations must be a JSON object", file=str(path), fix=fix)
    out: dict[str, dict[str, str | int]] = {}
    for listener, entry in document.items():
        if listener.startswith("$"):
            continue
        if listener != WILDCARD and listener not in listeners:
            raise VerifyError(
                f"listener '{listener}' is not an HTTPS listener of the gateway "
                f"(listeners: {', '.join(sorted(listeners))})",
                file=str(path),
                path=listener,
                fix="use a listener name from the template, or * for every listener",
            )
        if not isinstance(entry, dict):
            raise VerifyError(
                "must map scenarios to outcomes", file=str(path), path=listener, fix=fix
            )
        checked: dict[str, str | int] = {}
        for scenario, value in entry.items():
            if scenario.startswith("$"):
                continue
            if scenario not in SCENARIOS:
                raise VerifyError(
                    f"unknown scenario '{scenario}'",
                    file=str(path),
                    path=f"{listener}.{scenario}",
                    fix=f"choose among {', '.join(SCENARIOS)}",
                )
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise VerifyError(
                    f"outcome must be a string or a status code, not {json.dumps(value)}",
                    file=str(path),
                    path=f"{listener}.{scenario}",
                    fix=fix,
                )
            checked[scenario] = value
        out[listener] = checked
    return Expectations(str(path), out)


def _matches(expected: str | int, cell: Cell) -> bool:
    if isinstance(expected, int):
        return (
            cell.skipped is None
            and cell.status == expected
            and not cell.forged_header_reached_backend
        )
    return expected.strip().lower() == cell.outcome.lower()


def check_expectations(report: MatrixReport, expectations: Expectations) -> list[Mismatch]:
    mismatches = []
    for cell in report.cells:
        expected = expectations.expected(cell.listener, cell.scenario)
        if expected is not None and not _matches(expected, cell):
            mismatches.append(
                Mismatch(cell.listener, cell.scenario, expected, cell.outcome, cell.status)
            )
    return mismatches


# -- JUnit --------------------------------------------------------------------------------


def render_junit(report: MatrixReport, expectations: Expectations | None = None) -> bytes:
    """One ``testcase`` per cell (classname: the listener, name: the scenario).

    A cell fails when it contradicts the expectations, or (without expectations) when it got no
    answer at all or a forged header reached the backend; skipped cells are ``skipped``.
    """
    suite = ET.Element("testsuite", name="appgw-emulator verify")
    failures = skipped = errors = 0
    for cell in report.cells:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{report.gateway}.{cell.listener}",
            name=cell.scenario,
        )
        expected = expectations.expected(cell.listener, cell.scenario) if expectations else None
        if expected is not None and not _matches(expected, cell):
            failures += 1
            failure = ET.SubElement(
                case, "failure", message=f"expected {expected}, got {cell.outcome}"
            )
            failure.text = cell.body
        elif cell.skipped is not None:
            skipped += 1
            ET.SubElement(case, "skipped", message=cell.skipped)
        elif cell.error is not None and expected is None:
            errors += 1
            ET.SubElement(case, "error", message=cell.error)
        elif cell.forged_header_reached_backend and expected is None:
            failures += 1
            ET.SubElement(
                case, "failure", message="a forged certificate header reached the backend"
            )
        out = ET.SubElement(case, "system-out")
        out.text = json.dumps(_facts(cell, report), indent=1)
    suite.set("tests", str(len(report.cells)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites")
    root.append(suite)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def _facts(cell: Cell, report: MatrixReport) -> dict[str, Any]:
    facts = cell.to_json()
    facts.pop("body", None)
    facts["trustNote"] = report.trust_note
    return facts
