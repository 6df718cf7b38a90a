"""``appgw-emulator certs``: ``init`` (the demo PKI), ``ocsp-responder`` and ``revoke``."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import trio

from emulator.cli.console import say
from emulator.cli.options import (
    add_server_name_argument,
    port_arg,
)
from emulator.cli.serving import serve_until_signal
from emulator.errors import StartupError

# -- commands ---------------------------------------------------------------------------------


def cmd_certs_init(args: argparse.Namespace) -> int:
    from emulator.pki.demo import write_demo_pki

    pki = write_demo_pki(
        args.directory, key_type=args.key_type, force=args.force, server_names=args.server_name
    )
    say(f"demo PKI ({pki.key_type}) written to {pki.directory}:")
    for name, entry in sorted(pki.files.items()):
        say(f"  {name:32} {entry.description}")
    return 0


def add_certificate_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    certs_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    responder = certs_sub.add_parser(
        "ocsp-responder", help="serve OCSP for a demo PKI (the AIA URL of its client certs)"
    )
    responder.add_argument("--ca", type=Path, required=True, metavar="DIR")
    responder.add_argument("--port", type=port_arg, default=None)
    responder.add_argument("--bind", default="127.0.0.1")

    revoke = certs_sub.add_parser(
        "revoke", help="mark a certificate of a demo PKI revoked for its OCSP responder"
    )
    revoke.add_argument("directory", type=Path)
    revoke.add_argument("name", help="certificate file in DIR, e.g. client or client.pem")
    revoke.add_argument("--reason", help="RFC 5280 reason, e.g. keyCompromise")


def cmd_certs_ocsp_responder(args: argparse.Namespace) -> int:
    from emulator.pki.ocsp_responder import DEFAULT_OCSP_PORT, load_responder

    responder = load_responder(args.ca)
    port = DEFAULT_OCSP_PORT if args.port is None else args.port

    async def start(nursery: trio.Nursery) -> None:
        try:
            bound = await nursery.start(
                functools.partial(responder.serve, host=args.bind, port=port)
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {args.bind}:{port}: {exc.strerror or exc}",
                fix="stop what uses the port, or choose another: --port PORT (the demo client "
                f"certificates name port {DEFAULT_OCSP_PORT} in their AIA)",
                code="EmulatorPortInUse",
            ) from exc
        say(f"ready: OCSP responder http://{args.bind}:{bound}/ for {args.ca}")
        say(f"revoke a certificate: appgw-emulator certs revoke {args.ca} client")

    trio.run(serve_until_signal, start)
    return 0


def cmd_certs_revoke(args: argparse.Namespace) -> int:
    from emulator.pki.ocsp_responder import RESPONSE_VALIDITY, revoke

    entry = revoke(args.directory, args.name, reason=args.reason)
    reason = f" ({entry.reason.value})" if entry.reason is not None else ""
    say(f"revoked {entry.name} serial {entry.serial:X}{reason} at {entry.revoked_at.isoformat()}")
    minutes = int(RESPONSE_VALIDITY.total_seconds() // 60)
    say(
        "a running responder answers 'revoked' at once; a gateway that cached 'good' sees it "
        f"when that answer expires ({minutes} minutes at most)"
    )
    return 0


def add_certs_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``certs`` sub-command and its ``init`` action; returns the actions' parsers, to which
    :func:`add_certificate_commands` adds ``ocsp-responder`` and ``revoke``."""
    certs = sub.add_parser("certs", help="demo/test PKI")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser(
        "init", help="write a demo PKI (CAs, server PFX, client certs, parameters file)"
    )
    init.add_argument("directory", type=Path)
    init.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    init.add_argument("--force", action="store_true", help="regenerate an existing demo PKI")
    add_server_name_argument(init, when="")
    return certs_sub
