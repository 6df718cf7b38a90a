"""``appgw-emulator verify``: every HTTPS listener of a template against the client scenarios
that matter, as a table, JSON or JUnit XML, with the ``--expect`` gate for CI."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from emulator.cli.console import say
from emulator.errors import StartupError


def add_verify_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    from emulator.cli.verify_scenarios import DEFAULT_CLIENT_CN, SCENARIOS

    verify = sub.add_parser(
        "verify",
        help="run every HTTPS listener x client scenario (valid, expired, untrusted, none, "
        "forged header ...) against your template and backend; table, JSON, JUnit, CI gate",
    )
    add_config_arguments(verify)
    own = verify.add_argument_group("client certificates (default: substitute trust)")
    own.add_argument(
        "--client-cert",
        type=Path,
        metavar="CERT",
        help="your client certificate (PEM, intermediates may follow)",
    )
    own.add_argument("--client-key", type=Path, metavar="KEY")
    own.add_argument(
        "--client-ca",
        type=Path,
        metavar="CERT",
        help="your issuing CA; the variants are minted from it",
    )
    own.add_argument("--client-ca-key", type=Path, metavar="KEY")
    own.add_argument(
        "--substitute-trust",
        action="store_true",
        help="replace the uploaded trusted client CAs by the emulator's own CA for this run "
        "(the default when no client material is given; every report line says so)",
    )
    own.add_argument(
        "--client-cn",
        default=DEFAULT_CLIENT_CN,
        help=f"CN of minted clients (default {DEFAULT_CLIENT_CN})",
    )
    verify.add_argument(
        "--path", default="/", help="request path sent to every listener (default /)"
    )
    verify.add_argument(
        "--compare-modes",
        action="store_true",
        help="also run each mTLS listener's twin in the other mode (Strict <-> Passthrough)",
    )
    verify.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        default=[],
        help="run only these scenarios (repeatable; default: all)",
    )
    verify.add_argument("--output", "-o", choices=["text", "json"], default="text")
    verify.add_argument(
        "--junit", type=Path, metavar="FILE", help="also write JUnit XML, one testcase per cell"
    )
    verify.add_argument(
        "--expect",
        type=Path,
        metavar="FILE",
        help="JSON expectations; exit 1 with a diff when a cell differs",
    )
    verify.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from emulator.arm.certdata import TrustedClientCa
    from emulator.arm.expressions import DeploymentScope
    from emulator.arm.template import load_template, select_gateway
    from emulator.cli.verify_matrix import ClientMaterial, https_listeners, run_matrix
    from emulator.cli.verify_report import (
        check_expectations,
        load_expectations,
        render_junit,
        render_table,
    )
    from emulator.model import build_gateway_config, with_backend_overrides
    from emulator.model.mode_twins import with_mode_twins

    if args.log_level == "info":
        # The per-request log lines would bury the table; --log-level debug brings them back.
        logging.getLogger("emulator").setLevel(logging.WARNING)
    parameters = [item for group in args.parameters for item in group]
    scope = DeploymentScope(
        subscription_id=args.subscription,
        resource_group=args.resource_group,
        location=args.location,
    )
    config = build_gateway_config(
        select_gateway(load_template(args.template_file, parameters, scope=scope), args.gateway),
        now=datetime.now(UTC),
    )
    backends = dict(args.backend)
    with_backend_overrides(config, backends)  # unknown pool names fail here, before any port
    expectations = None
    if args.expect is not None:
        names = {listener.name for listener in https_listeners(config)}
        if args.compare_modes:
            # Every twin a run may add (its trust does not change the names).
            placeholder = TrustedClientCa("placeholder", ())
            names |= set(with_mode_twins(config, strict_trust=placeholder).twin_of)
        expectations = load_expectations(args.expect, names)
    material = ClientMaterial(
        client_cert=args.client_cert,
        client_key=args.client_key,
        client_ca=args.client_ca,
        client_ca_key=args.client_ca_key,
        substitute_trust=args.substitute_trust,
        client_cn=args.client_cn,
        compare_modes=args.compare_modes,
    )
    report = trio.run(
        lambda: run_matrix(
            config, material, backends=backends, path=args.path, scenarios=args.scenario
        )
    )
    mismatches = check_expectations(report, expectations) if expectations is not None else []
    if args.junit is not None:
        try:
            args.junit.write_bytes(render_junit(report, expectations))
        except OSError as exc:
            raise StartupError(
                f"cannot write the JUnit file: {exc.strerror or exc}",
                file=str(args.junit),
                fix="pass a writable path to --junit",
                code="EmulatorVerifyJunitUnwritable",
            ) from exc
    if args.output == "json":
        document = report.to_json()
        document["mismatches"] = [
            {"listener": m.listener, "scenario": m.scenario, "expected": m.expected, "got": m.got}
            for m in mismatches
        ]
        say(json.dumps(document, indent=2))
    else:
        by_cell = {(m.listener, m.scenario): f"expected {m.expected}" for m in mismatches}
        say(render_table(report, by_cell))
    if mismatches:
        stream = sys.stdout if args.output == "text" else sys.stderr
        print(f"{len(mismatches)} cell(s) differ from {args.expect}:", file=stream)
        for mismatch in mismatches:
            for line in mismatch.diff_lines():
                print(line, file=stream)
        stream.flush()
        return 1
    if expectations is not None:
        say(f"all cells match {args.expect}")
    return 0
