"""Command-line glue for the backend authors' kit: ``verify`` (and the header tools).

Kept out of :mod:`emulator.cli`, which only registers these commands: each ``add_*`` function
adds a sub-command whose ``handler`` default the CLI's ``main`` calls with the parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from emulator.errors import StartupError
from emulator.model import GatewayConfig

__all__ = [
    "add_compare_modes_arguments",
    "add_header_commands",
    "add_verify_command",
    "apply_compare_modes",
]


def _say(text: str = "") -> None:
    print(text, flush=True)


def add_verify_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    from emulator.verify_matrix import DEFAULT_CLIENT_CN, SCENARIOS

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
    from emulator.model import build_gateway_config, with_backend_overrides
    from emulator.model.mode_twins import with_mode_twins
    from emulator.verify_matrix import ClientMaterial, https_listeners, run_matrix
    from emulator.verify_report import (
        check_expectations,
        load_expectations,
        render_junit,
        render_table,
    )

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
        _say(json.dumps(document, indent=2))
    else:
        by_cell = {(m.listener, m.scenario): f"expected {m.expected}" for m in mismatches}
        _say(render_table(report, by_cell))
    if mismatches:
        stream = sys.stdout if args.output == "text" else sys.stderr
        print(f"{len(mismatches)} cell(s) differ from {args.expect}:", file=stream)
        for mismatch in mismatches:
            for line in mismatch.diff_lines():
                print(line, file=stream)
        stream.flush()
        return 1
    if expectations is not None:
        _say(f"all cells match {args.expect}")
    return 0


def add_header_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    decode = sub.add_parser(
        "decode-header",
        help="what a backend parses from a forwarded certificate header value, and the "
        "classic decoding mistakes to avoid",
    )
    decode.add_argument(
        "value", metavar="VALUE|-", help="the header value as received (- reads it from stdin)"
    )
    decode.add_argument("--output", "-o", choices=["text", "json"], default="text")
    decode.set_defaults(handler=_cmd_decode_header)
    vectors = sub.add_parser(
        "vectors",
        help="write test vectors (header values + expected parse results) for your decoder",
    )
    vectors.add_argument("directory", type=Path, metavar="DIR")
    vectors.set_defaults(handler=_cmd_vectors)


#: Read from stdin at most this much: a certificate header is a few KB.
_STDIN_LIMIT = 1024 * 1024


def _cmd_decode_header(args: argparse.Namespace) -> int:
    from emulator.reports.header_decoding import decode_header, render_text

    value = sys.stdin.read(_STDIN_LIMIT) if args.value == "-" else args.value
    if args.value == "-":
        # A shell pipeline adds a final newline (echo, a file); a header value never has one.
        value = value.rstrip("\r\n")
    decoded = decode_header(value)
    if args.output == "json":
        _say(json.dumps(decoded.to_json(), indent=2, ensure_ascii=False))
    else:
        _say(render_text(decoded))
    return 1 if decoded.error else 0


def _cmd_vectors(args: argparse.Namespace) -> int:
    from emulator.header_vectors import VECTORS_FILE, write_vectors

    written = write_vectors(args.directory)
    target = args.directory / VECTORS_FILE
    _say(f"wrote {len(written)} files to {args.directory}; the vectors: {target}")
    return 0


# -- run --compare-modes ------------------------------------------------------------------------


def add_compare_modes_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--compare-modes",
        action="store_true",
        help="serve each mTLS listener twice: as configured and with the other mode "
        "(Strict <-> Passthrough), each twin on a port of its own",
    )
    run.add_argument(
        "--client-ca",
        type=Path,
        metavar="CERT",
        help="with --compare-modes: the CA chain (root + intermediates, PEM) a Strict twin of a "
        "Passthrough listener trusts (default: the --pki demo PKI's chain, when there is one)",
    )


def apply_compare_modes(
    args: argparse.Namespace, config: GatewayConfig
) -> tuple[GatewayConfig, dict[int, int]]:
    """``config`` with the twins ``--compare-modes`` asks for, and their ``listen`` entries.

    Raises:
        StartupError: ``--client-ca`` cannot be read or holds no root certificate.
    """
    from cryptography import x509

    from emulator.arm.certdata import TrustedClientCa
    from emulator.model.mode_twins import with_mode_twins
    from emulator.pki.demo import TRUSTED_CLIENT_CA_CHAIN

    if not getattr(args, "compare_modes", False):
        return config, {}
    source: Path | None = args.client_ca
    if source is None and getattr(args, "pki", None) is not None:
        candidate = args.pki / TRUSTED_CLIENT_CA_CHAIN
        source = candidate if candidate.is_file() else None
    trust = None
    if source is not None:
        fix = "pass the PEM chain your clients' certificates come from, root included"
        try:
            certificates = x509.load_pem_x509_certificates(source.read_bytes())
        except (OSError, ValueError) as exc:
            raise StartupError(
                f"cannot read the client CA chain: {exc}",
                file=str(source),
                fix=fix,
                code="EmulatorCompareModesCa",
            ) from exc
        if not any(c.issuer == c.subject for c in certificates):
            raise StartupError(
                "the client CA chain holds no root certificate, so a Strict twin could trust "
                "nothing",
                file=str(source),
                fix=fix,
                code="EmulatorCompareModesCa",
            )
        trust = TrustedClientCa(f"compare-modes:{source.name}", tuple(certificates))
    twins = with_mode_twins(config, strict_trust=trust)
    return twins.config, twins.ports
