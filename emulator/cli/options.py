"""Options and argument types that several commands share (template, listen, log, TLS checks)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from emulator.arm.expressions import DeploymentScope
from emulator.cli.local_certs import (
    add_certificate_arguments,
)
from emulator.cli.terraform import add_arguments as add_terraform_arguments
from emulator.model import (
    BackendAddress,
)

DEFAULT_CERTS_DIR: Final = Path("certs")
#: ``wait --timeout``: at most an hour; a longer wait is a hung job, not a slow start.
MAX_WAIT_S: Final = 3600.0


class UsageError(Exception):
    """A command-line value that argparse's types cannot check alone (exit code 2)."""


# -- argument types ---------------------------------------------------------------------------


def _host_port(text: str) -> BackendAddress:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return BackendAddress(host.strip("[]"), int(port))


def _backend_arg(text: str) -> tuple[str, tuple[BackendAddress, ...]]:
    pool, sep, rest = text.partition("=")
    if not sep or not pool or not rest:
        raise argparse.ArgumentTypeError(f"'{text}' is not POOL=HOST:PORT[,HOST:PORT...]")
    return pool, tuple(_host_port(item) for item in rest.split(","))


def _listen_arg(text: str) -> tuple[int, int]:
    left, sep, right = text.partition("=")
    if not sep or not left.isdigit() or not right.isdigit() or int(right) > 65535:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not TEMPLATE_PORT=LOCAL_PORT (e.g. 444=8444; 0 picks a free port)"
        )
    return int(left), int(right)


def port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0-65535)")
    return int(text)


def add_config_arguments(command: argparse.ArgumentParser) -> None:
    """The arguments that say which gateway to load, shared by ``run`` and ``validate``."""
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--template-file", "-f", type=Path)
    add_terraform_arguments(source, command)
    command.add_argument(
        "--parameters",
        "-p",
        action="append",
        nargs="+",
        default=[],
        metavar="PARAM",
        help="@deploymentParameters.json or NAME=VALUE (repeatable; later wins, as az does)",
    )
    command.add_argument(
        "--backend",
        action="append",
        type=_backend_arg,
        default=[],
        metavar="POOL=HOST:PORT[,HOST:PORT]",
    )
    command.add_argument("--gateway", help="which gateway, when the template holds several")
    scope = DeploymentScope()
    command.add_argument(
        "--subscription",
        default=scope.subscription_id,
        help="subscription id for resourceId()/subscription() (default: all zeros)",
    )
    command.add_argument(
        "--resource-group",
        "-g",
        default=scope.resource_group,
        help=f"resource group for resourceId()/resourceGroup() (default: {scope.resource_group})",
    )
    command.add_argument(
        "--location",
        "-l",
        default=scope.location,
        help=f"resourceGroup().location (default: {scope.location})",
    )
    add_certificate_arguments(command)


def add_listen_arguments(command: argparse.ArgumentParser) -> None:
    """``--listen`` and ``--bind``: on ``run``, and on ``validate`` to check and show them."""
    command.add_argument(
        "--listen",
        action="append",
        type=_listen_arg,
        default=[],
        metavar="TEMPLATE_PORT=LOCAL_PORT",
    )
    add_bind_argument(command)


def add_log_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--log-level`` and ``--log-format``; a subcommand's copy leaves the defaults alone."""
    parser.add_argument(
        "--log-level",
        default="info" if defaults else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="least severe log record written to stderr (default info)",
    )
    parser.add_argument(
        "--log-format",
        default="text" if defaults else argparse.SUPPRESS,
        choices=["text", "json"],
        help="text lines, or one JSON object per line with the same fields (time, level, "
        "logger, message), for a log collector (default text)",
    )


def add_bind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the listeners bind (default 127.0.0.1; 0.0.0.0 or :: inside a container, "
        "so the host can reach them)",
    )


def add_server_name_argument(parser: argparse.ArgumentParser, *, when: str) -> None:
    parser.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name or IP address the listener certificate carries besides localhost, "
        "127.0.0.1 and ::1, e.g. a compose or Kubernetes service name (repeatable"
        + (f"; used {when})" if when else ")"),
    )


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds (0-{MAX_WAIT_S})")
    return value


def _workers(text: str) -> int:
    from emulator.runtime.workers import MAX_WORKERS

    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"'{text}' is not a worker count (1-{MAX_WORKERS})")
    return int(text)


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="serve from N processes sharing the listening sockets, one core each (default 1; "
        "a worker that dies is restarted; SIGHUP and --watch re-fork them with the new "
        "configuration; with N > 1 the dashboard is not served, and the supervisor answers "
        "/health on its port or --health-port)",
    )


def add_strip_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strip-client-cert-headers",
        action="store_true",
        help="before the rewrite rules run, remove every client header that a rule fills from a "
        "client certificate variable, so a client can never forge one (Azure does not do this: "
        "off by default)",
    )


def parameter_files(args: argparse.Namespace) -> list[Path]:
    """The ``@file`` parameters of ``run``: ``--watch`` reloads when one changes."""
    return [
        Path(item[1:])
        for group in args.parameters
        for item in group
        if item.startswith("@") and len(item) > 1
    ]


# -- certificates: check-ca, OCSP responder, revocation, access log (issue #6) -----------------


def add_verification_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--access-log",
        metavar="PATH|stdout|stderr",
        help="append one JSON record per request, in App Gateway's access log shape, to PATH, "
        "or write it to stdout or stderr (- is stderr too; ./stdout for a file of that name); "
        "adds clientCertFailureExplained",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="Strict 400s also carry why the client certificate failed, in the response header "
        "X-AppGW-Emulator-Client-Cert-Explained (off by default: responses stay as Azure's)",
    )
