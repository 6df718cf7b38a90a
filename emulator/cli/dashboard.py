"""The dashboard's command-line flags and start-up, kept here so the CLI only calls a few.

``up`` serves the dashboard by default on 127.0.0.1:8000 (``--dashboard-port``, ``--no-dashboard``);
``run`` serves it only with ``--dashboard PORT`` and takes the "try it" identities from
``--pki DIR``. Both accept ``--dashboard-bind``; anything but loopback gets a warning, because
the dashboard has no authentication and can make the gateway send requests.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from emulator.dashboard.defaults import DEFAULT_DASHBOARD_PORT, DEFAULT_TRY_PATH, check_try_path
from emulator.errors import StartupError

if TYPE_CHECKING:
    from emulator.dashboard.server import Dashboard
    from emulator.dashboard.views import BackendObservations
    from emulator.runtime.gateway import Gateway, Readiness

__all__ = ["add_dashboard_arguments", "backend_observations", "start_dashboard_for_cli"]


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0-65535)")
    return int(text)


def _try_path(text: str) -> str:
    try:
        return check_try_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_dashboard_arguments(parser: argparse.ArgumentParser, *, command: str) -> None:
    """``up``: ``--dashboard-port``/``--no-dashboard``; ``run``: ``--dashboard``/``--pki``."""
    if command == "up":
        parser.add_argument(
            "--dashboard-port",
            type=_port,
            default=None,
            metavar="PORT",
            help=f"web dashboard port (default {DEFAULT_DASHBOARD_PORT}; 0 picks a free port)",
        )
        parser.add_argument(
            "--no-dashboard", action="store_true", help="do not serve the web dashboard"
        )
    else:
        parser.add_argument(
            "--dashboard",
            # Also spelt as under ``up``, so APPGW_EMULATOR_DASHBOARD_PORT serves both.
            "--dashboard-port",
            dest="dashboard",
            type=_port,
            default=None,
            metavar="PORT",
            help="serve the web dashboard on PORT (0 picks a free port)",
        )
        parser.add_argument(
            "--pki",
            type=Path,
            default=None,
            metavar="DIR",
            help="the client identities the dashboard's 'try it' panel presents: a `certs "
            "init` directory, or any directory of NAME.pem + NAME.key pairs",
        )
    parser.add_argument(
        "--try-path",
        type=_try_path,
        default=DEFAULT_TRY_PATH,
        metavar="PATH",
        help="path the 'try it' requests ask for (default /; e.g. /orders, so your API "
        "answers instead of a 404); a marker query parameter is appended",
    )
    parser.add_argument(
        "--dashboard-bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the dashboard and the health endpoint listen on (default 127.0.0.1; "
        "anything else is reachable from other machines)",
    )
    parser.add_argument(
        "--dashboard-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further name the dashboard answers to in Host/Origin, e.g. the compose or "
        "Kubernetes service name it is published under (repeatable; localhost and IP "
        "addresses are always allowed)",
    )
    parser.add_argument(
        "--health-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve GET /health (readiness) and /health/live alone on PORT, without the "
        "dashboard (the dashboard serves them too)",
    )


def backend_observations(args: argparse.Namespace) -> BackendObservations | None:
    """What to pass as the stub backend's ``recorder`` (``up`` with the dashboard on)."""
    if getattr(args, "no_dashboard", False):
        return None
    from emulator.dashboard.views import BackendObservations

    return BackendObservations()


def _is_loopback(bind: str) -> bool:
    if bind.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


async def start_dashboard_for_cli(
    nursery: trio.Nursery,
    gateway: Gateway,
    args: argparse.Namespace,
    *,
    pki_dir: Path | None,
    observations: BackendObservations | None,
    say: Callable[[str], None],
    note: Callable[[str], None],
    readiness: Callable[[], Readiness] | None = None,
) -> Callable[[], Dashboard | None]:
    """Start the dashboard and the health endpoint the flags ask for, before the gateway binds.

    Started first so that ``GET /health`` can answer 503 while the listeners are still being
    bound. Returns what prints their ready lines (and the dashboard), called once the
    listeners' own ready lines are out: the order of the ``ready:`` lines is part of the
    contract.

    Under ``up`` the default port is a convenience: when 8000 is taken, ``up`` still runs and
    says how to pick another port. A port the user chose must bind, or start-up fails.

    ``readiness`` is what ``--health-port`` reports (the reloader's, whose gateway changes);
    the gateway's own by default.

    Raises:
        StartupError: the chosen port is busy or the address cannot be bound.
        DemoPkiError: ``--pki`` is not a usable demo PKI.
    """
    lines: list[str] = []
    health_port = getattr(args, "health_port", None)
    if health_port is not None:
        from emulator.runtime.health import serve_health

        url = await nursery.start(
            functools.partial(
                serve_health,
                readiness or gateway.readiness,
                host=args.dashboard_bind,
                port=health_port,
            )
        )
        lines.append(f"ready: health {url}")
    dashboard = await _start_dashboard(
        nursery, gateway, args, pki_dir=pki_dir, observations=observations, note=note
    )
    if dashboard is not None:
        lines.append(f"ready: dashboard {dashboard.url}")
    if (dashboard is not None or health_port is not None) and not _is_loopback(args.dashboard_bind):
        note(
            f"warning: the dashboard listens on {args.dashboard_bind}, not on loopback: anyone "
            "who can reach this address can read the request log and make the gateway send "
            "requests (it has no authentication)"
        )

    def announce() -> Dashboard | None:
        for line in lines:
            say(line)
        return dashboard

    return announce


async def _start_dashboard(
    nursery: trio.Nursery,
    gateway: Gateway,
    args: argparse.Namespace,
    *,
    pki_dir: Path | None,
    observations: BackendObservations | None,
    note: Callable[[str], None],
) -> Dashboard | None:
    if args.command == "up":
        if args.no_dashboard:
            return None
        port, optional, flag = args.dashboard_port, args.dashboard_port is None, "--dashboard-port"
    else:
        if args.dashboard is None:
            if args.pki is not None:
                note("warning: --pki is only used by the dashboard; add --dashboard PORT")
            return None
        port, optional, flag = args.dashboard, False, "--dashboard"
        pki_dir = args.pki
    # Loaded only when a dashboard is served (a good part of a start-up otherwise).
    from emulator.dashboard.identities import load_identities
    from emulator.dashboard.server import Dashboard

    dashboard = Dashboard(
        gateway,
        identities=load_identities(pki_dir),
        observations=observations,
        bind=args.dashboard_bind,
        port=DEFAULT_DASHBOARD_PORT if port is None else port,
        port_flag=flag,
        allowed_hosts=tuple(getattr(args, "dashboard_allowed_host", ())),
        try_path=getattr(args, "try_path", DEFAULT_TRY_PATH),
    )
    try:
        await nursery.start(dashboard.serve)
    except StartupError as exc:
        if not optional or exc.error_code != "EmulatorPortInUse":
            raise
        note(
            f"warning: dashboard not started: port {DEFAULT_DASHBOARD_PORT} is in use; choose "
            f"another with {flag} PORT (0 picks a free one) or turn it off with --no-dashboard"
        )
        return None
    return dashboard
