"""``appgw-emulator wait``: poll a running emulator's health endpoint until ready or timed out."""

from __future__ import annotations

import argparse
import os
from typing import Final

from emulator.cli.console import note, say
from emulator.cli.options import (
    UsageError,
    seconds_arg,
)

DEFAULT_HEALTH_URL: Final = "http://127.0.0.1:8000/health"
#: ``wait``: the default bound suits a cold container start on a slow CI runner.
DEFAULT_WAIT_S: Final = 30.0
#: ``wait``: pause between two looks at the health endpoint, and the bound of one look.
WAIT_POLL_S: Final = 0.2
WAIT_REQUEST_S: Final = 2.0


def cmd_wait(args: argparse.Namespace) -> int:
    """``wait``: poll the health endpoint until it answers 200 or the timeout passes.

    Standard library only (the container image has no curl); a refused connection, a 503 and
    a timeout all mean "not yet".
    """
    import time
    import urllib.error
    import urllib.request

    if args.url is None:
        port = next(
            (
                os.environ[name]
                for name in ("APPGW_EMULATOR_HEALTH_PORT", "APPGW_EMULATOR_DASHBOARD_PORT")
                if os.environ.get(name, "").strip()
            ),
            "8000",
        )
        args.url = f"http://127.0.0.1:{port.strip()}/health"
    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"'{args.url}' is not an http:// URL (e.g. {DEFAULT_HEALTH_URL})")
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(args.url, timeout=WAIT_REQUEST_S) as response:
                body = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.read().decode('utf-8', 'replace').strip()}"
        except (OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        else:
            if not args.quiet:
                say(f"ready: {args.url} {body.strip()}")
            return 0
        if time.monotonic() + WAIT_POLL_S >= deadline:
            break
        time.sleep(WAIT_POLL_S)
    note(f"error: {args.url} was not ready after {args.timeout:g} s (last: {last})")
    note("  fix: is the emulator running, and is the URL its dashboard or --health-port?")
    return 1


def add_wait_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``wait`` sub-command and its options."""
    wait = sub.add_parser(
        "wait",
        help="wait until a running emulator's health endpoint says ready (exit 0), or time out "
        "(exit 1); for CI scripts and container health checks",
    )
    wait.add_argument(
        "url",
        nargs="?",
        default=None,
        help="the health endpoint (default http://127.0.0.1:PORT/health with PORT from "
        "APPGW_EMULATOR_HEALTH_PORT, else APPGW_EMULATOR_DASHBOARD_PORT, else 8000: what the "
        "same environment's emulator serves)",
    )
    wait.add_argument(
        "--timeout",
        type=seconds_arg,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help=f"give up after S seconds (default {DEFAULT_WAIT_S:g})",
    )
    wait.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
