"""``appgw-emulator validate``: every problem of a template, or a summary of what would run."""

from __future__ import annotations

import argparse
import json

from emulator.cli.console import say
from emulator.cli.options import (
    add_config_arguments,
    add_listen_arguments,
    add_strip_argument,
)
from emulator.cli.serving import check_listen_ports, listen_warnings, load_cli_config
from emulator.errors import EmulatorError, InvalidConfiguration, UnsupportedFeature
from emulator.reports.summary import describe, render_text


def _problems(exc: EmulatorError) -> list[EmulatorError]:
    return exc.problems if isinstance(exc, InvalidConfiguration) else [exc]


def _problem_json(exc: EmulatorError) -> dict[str, str | None]:
    kind = "not-emulated" if isinstance(exc, UnsupportedFeature) else "error"
    return {
        "kind": kind,
        "code": exc.error_code,
        "file": exc.file,
        "path": exc.path,
        "message": exc.message,
        "fix": exc.fix,
    }


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate``: every problem, or OK and the summary. Never binds a port."""
    try:
        config, skipped = load_cli_config(args)
        listen = dict(args.listen)
        check_listen_ports(config, listen)
    except EmulatorError as exc:
        problems = _problems(exc)
        if args.output == "json":
            say(
                json.dumps(
                    {"ok": False, "problems": [_problem_json(p) for p in problems]}, indent=2
                )
            )
        else:
            for problem in problems:
                label = "not emulated" if isinstance(problem, UnsupportedFeature) else "error"
                say(f"{label}: {problem}")
            say(f"{len(problems)} problem(s) found")
        return 1
    description = describe(config)
    description["skippedResources"] = [{"type": t, "name": n} for t, n in skipped]
    for entry in description["listeners"]:
        if entry["port"] in listen:
            entry["localPort"] = listen[entry["port"]]
    port_warnings = listen_warnings(listen)
    if port_warnings:
        description["warnings"] = [*description.get("warnings", []), *port_warnings]
    if args.output == "json":
        say(json.dumps({"ok": True, "problems": [], "summary": description}, indent=2))
    else:
        say("OK")
        say(render_text(description))
        for rtype, name in skipped:
            say(f"  skipped resource {rtype} '{name}' (not part of the gateway)")
    return 0


def add_validate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``validate`` sub-command and its options."""
    validate = sub.add_parser(
        "validate",
        help="check a template the way Azure would, list every problem, summarise what would run",
    )
    add_config_arguments(validate)
    add_listen_arguments(validate)
    add_strip_argument(validate)
    validate.add_argument("--output", "-o", choices=["text", "json"], default="text")
