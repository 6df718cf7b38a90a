"""``appgw-emulator check-ca``: the CLI side of :mod:`emulator.reports.check_ca`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emulator.cli.console import say
from emulator.cli.options import UsageError


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def cmd_check_ca(args: argparse.Namespace) -> int:
    """``check-ca``: exit 0 only when the upload is valid (and the client, if given, passes)."""
    from datetime import UTC, datetime

    from emulator.reports.check_ca import check_ca, render_text, report_json

    if args.client_chain is not None and args.client_cert is None:
        raise UsageError("--client-chain needs --client-cert")
    client_cert = client_chain = None
    if args.client_cert is not None:
        client_cert = _read_input(args.client_cert, "the client certificate")
    if args.client_chain is not None:
        client_chain = _read_input(args.client_chain, "the client chain")
    report = check_ca(
        _read_input(args.file, "the CA file"),
        name=str(args.file),
        at=datetime.now(UTC),
        client_cert=client_cert,
        client_chain=client_chain,
        password=args.password,
    )
    if args.output == "json":
        say(json.dumps(report_json(report), indent=2))
    else:
        say(render_text(report))
    return report.exit_code


def add_check_ca_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``check-ca`` sub-command and its options."""
    check = sub.add_parser(
        "check-ca",
        help="is this file a valid trusted client CA upload? what to ask for instead; would "
        "this client certificate pass Strict?",
    )
    check.add_argument(
        "file",
        type=Path,
        help="what the customer sent: PEM, .cer, a bundle, .p7b/.p7c, a PFX, or base64 text",
    )
    check.add_argument(
        "--client-cert", type=Path, metavar="CERT", help="a client certificate (PEM, DER or PFX)"
    )
    check.add_argument(
        "--password",
        metavar="PASSWORD",
        help="opens a PFX given as FILE or --client-cert; the environment variable keeps it "
        "out of the process list",
    )
    check.add_argument(
        "--client-chain",
        type=Path,
        metavar="BUNDLE",
        help="intermediates the client sends with its certificate",
    )
    check.add_argument("--output", "-o", choices=["text", "json"], default="text")
