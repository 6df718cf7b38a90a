"""Command line: ``python -m backend_stub [--host H] [--port P] [--cert-header NAME] ...``.

Prints one ready line on stdout (``backend_stub listening on http://HOST:PORT``, with the real
port when ``--port 0``) so a script or test can wait for it, logs one line per request on stderr,
and exits 0 on Ctrl-C or SIGTERM, 1 with a one-line error when it cannot start.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from pathlib import Path
from typing import Final

import trio

from backend_stub.server import (
    DEFAULT_CERT_HEADER,
    StubConfig,
    StubError,
    load_trust_ca,
    serve,
)

logger = logging.getLogger("backend_stub")

_PROG: Final = "backend_stub"
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_PROG}",
        description=(
            "Echo backend for appgw-emulator: answers every request with JSON describing what it"
            " received, including the client certificate the gateway forwarded in a header."
            " Special paths: /status/<code>, /delay/<seconds>, /bytes/<n>."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on, 0 for any free one (%(default)s)"
    )
    parser.add_argument(
        "--cert-header",
        default=DEFAULT_CERT_HEADER,
        help="request header carrying the forwarded client certificate (%(default)s)",
    )
    parser.add_argument(
        "--trust-ca",
        type=Path,
        metavar="FILE",
        help=(
            "PEM bundle or DER file of CAs the backend trusts; when given, requests whose"
            " forwarded certificate is missing, expired or untrusted get 403"
        ),
    )
    parser.add_argument(
        "--log-level", choices=_LOG_LEVELS, default="info", help="stderr log level (%(default)s)"
    )
    return parser


def _print_error(error: StubError) -> None:
    print(f"{_PROG}: error: {error}", file=sys.stderr)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _run(config: StubConfig, *, host: str, port: int) -> int:
    # Signals are captured before binding so a SIGTERM that arrives during start-up also ends in
    # an orderly exit 0 instead of the default kill.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                bound_host, bound_port = await nursery.start(
                    functools.partial(serve, config, host=host, port=port)
                )
            except StubError as exc:
                _print_error(exc)
                return 1
            print(f"{_PROG} listening on {_url(bound_host, bound_port)}", flush=True)
            async for signum in signals:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the stub until a signal; return the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trust_ca = load_trust_ca(args.trust_ca) if args.trust_ca is not None else None
        config = StubConfig(cert_header=args.cert_header, trust_ca=trust_ca)
    except StubError as exc:
        _print_error(exc)
        return 1
    try:
        return trio.run(functools.partial(_run, config, host=args.host, port=args.port))
    except KeyboardInterrupt:
        # Only reachable if Ctrl-C lands before the signal receiver is installed.
        return 0


if __name__ == "__main__":
    sys.exit(main())
