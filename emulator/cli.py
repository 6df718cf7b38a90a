"""``appgw-emulator``: the command line.

Exit codes: 0 on success and on Ctrl-C / SIGTERM, 1 for configuration and runtime errors
(printed as one ``error:`` block naming the file, the JSON path, the fix and the code; never a
traceback), 2 for command-line usage errors (argparse's own convention).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import trio

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import load_template, select_gateway
from emulator.dashboard.wiring import (
    add_dashboard_arguments,
    backend_observations,
    start_dashboard_for_cli,
)
from emulator.demo import CERT_HEADERS, PASSTHROUGH_LISTENER, STRICT_LISTENER, write_demo_template
from emulator.errors import EmulatorError, InvalidConfiguration, StartupError, UnsupportedFeature
from emulator.local_certs import (
    add_certificate_arguments,
    build_config,
    demo_minter,
    read_supplied_certificates,
)
from emulator.model import (
    BackendAddress,
    GatewayConfig,
    build_gateway_config,
    with_backend_overrides,
)
from emulator.reports.summary import describe, forgeable_certificate_headers, render_text
from emulator.terraform.cli import add_arguments as add_terraform_arguments
from emulator.terraform.cli import load_config as load_terraform_config
from emulator.terraform.cli import wants_terraform

__all__ = ["main"]

DEFAULT_CERTS_DIR: Final = Path("certs")
DEFAULT_STRICT_PORT: Final = 8443
DEFAULT_PASSTHROUGH_PORT: Final = 9443
DEFAULT_BACKEND_PORT: Final = 8080
DEFAULT_HEALTH_URL: Final = "http://127.0.0.1:8000/health"
#: ``wait``: the default bound suits a cold container start on a slow CI runner.
DEFAULT_WAIT_S: Final = 30.0
#: ``wait --timeout``: at most an hour; a longer wait is a hung job, not a slow start.
MAX_WAIT_S: Final = 3600.0
#: ``wait``: pause between two looks at the health endpoint, and the bound of one look.
WAIT_POLL_S: Final = 0.2
WAIT_REQUEST_S: Final = 2.0


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


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0-65535)")
    return int(text)


def _add_config_arguments(command: argparse.ArgumentParser) -> None:
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


def _add_listen_arguments(command: argparse.ArgumentParser) -> None:
    """``--listen`` and ``--bind``: on ``run``, and on ``validate`` to check and show them."""
    command.add_argument(
        "--listen",
        action="append",
        type=_listen_arg,
        default=[],
        metavar="TEMPLATE_PORT=LOCAL_PORT",
    )
    _add_bind_argument(command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appgw-emulator",
        description="Local emulator of Azure Application Gateway (v2) mutual TLS.",
        epilog="Every option can also be set by the environment variable shown beside it "
        "(APPGW_EMULATOR_<OPTION>); a flag on the command line wins; a variable for a "
        "repeatable option holds one value per line. `appgw-emulator COMMAND --help` lists "
        "each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"appgw-emulator {_version()}")
    _add_log_arguments(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="zero-config demo: Strict and Passthrough listeners in front of the stub backend"
    )
    up.add_argument(
        "--certs",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        help="demo PKI directory (default ./certs; created when missing)",
    )
    up.add_argument("--strict-port", type=_port, default=DEFAULT_STRICT_PORT)
    up.add_argument("--passthrough-port", type=_port, default=DEFAULT_PASSTHROUGH_PORT)
    up.add_argument("--backend-port", type=_port, default=DEFAULT_BACKEND_PORT)
    _add_bind_argument(up)
    up.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    _add_server_name_argument(up, when="when it creates the demo PKI")
    _add_strip_argument(up)
    _add_verification_arguments(up)
    add_dashboard_arguments(up, command="up")

    run = sub.add_parser("run", help="run an ARM template's application gateway locally")
    _add_config_arguments(run)
    _add_listen_arguments(run)
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload the template and @parameter files when one changes (SIGHUP reloads "
        "always): checked first, an invalid one leaves the running configuration serving",
    )
    _add_workers_argument(run)
    _add_strip_argument(run)
    _add_verification_arguments(run)
    add_dashboard_arguments(run, command="run")
    from emulator.kit_commands import add_compare_modes_arguments

    add_compare_modes_arguments(run)

    validate = sub.add_parser(
        "validate",
        help="check a template the way Azure would, list every problem, summarise what would run",
    )
    _add_config_arguments(validate)
    _add_listen_arguments(validate)
    _add_strip_argument(validate)
    validate.add_argument("--output", "-o", choices=["text", "json"], default="text")

    certs = sub.add_parser("certs", help="demo/test PKI")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser(
        "init", help="write a demo PKI (CAs, server PFX, client certs, parameters file)"
    )
    init.add_argument("directory", type=Path)
    init.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    init.add_argument("--force", action="store_true", help="regenerate an existing demo PKI")
    _add_server_name_argument(init, when="")

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
        type=_seconds,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help=f"give up after S seconds (default {DEFAULT_WAIT_S:g})",
    )
    wait.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    _add_certificate_commands(sub, certs_sub)
    from emulator.kit_commands import add_header_commands, add_verify_command

    add_verify_command(sub, _add_config_arguments)
    add_header_commands(sub)
    for choices in (sub.choices, certs_sub.choices):
        for command_parser in choices.values():
            command_parser.set_defaults(command_parser=command_parser)
    # The log options are also accepted after the command (``up --log-format json``).
    for command in _leaf_parsers(parser):
        _add_log_arguments(command, defaults=False)
    _document(parser)
    return parser


#: Help for options declared without it, by flag (the same text wherever the flag appears).
_OPTION_HELP: Final = {
    "--strict-port": f"local port of the Strict listener (default {DEFAULT_STRICT_PORT}; 0 picks "
    "a free port)",
    "--passthrough-port": f"local port of the Passthrough listener (default "
    f"{DEFAULT_PASSTHROUGH_PORT}; 0 picks a free port)",
    "--backend-port": f"port of the stub backend, on loopback only (default "
    f"{DEFAULT_BACKEND_PORT}; 0 picks a free port)",
    "--key-type": "key algorithm of every generated key: ec (P-256, default) or rsa (2048)",
    "--template-file": "the ARM template (JSON) holding the Microsoft.Network/applicationGateways "
    "resource",
    "--backend": "send a backend pool's traffic to local addresses instead of the template's "
    "(repeatable, one per pool)",
    "--listen": "serve a template frontend port on another local port (repeatable; 0 picks a "
    "free port); headers keep the template's port",
    "--output": "text for people, json for scripts (default text)",
    "--ca": "the demo PKI directory whose issuing CA signs the OCSP answers",
    "--port": "port to listen on (default 8888, the port the demo certificates' AIA names)",
    "--bind": "address to listen on (default 127.0.0.1)",
    "--client-cert": "also check whether this client certificate (PEM) would pass Strict",
    "directory": "the demo PKI directory",
    "--client-key": "the private key of --client-cert (PEM, unencrypted)",
    "--client-ca-key": "the private key of --client-ca, to mint the negative variants from it",
}

#: A description and an example per command (shown by ``COMMAND --help``).
_EXAMPLES: Final = {
    "up": "appgw-emulator up --certs ./certs    # then curl the four cases it prints",
    "run": "appgw-emulator run -f azuredeploy.json -p @azuredeploy.parameters.json "
    "--backend pool1=127.0.0.1:8080 --listen 443=8443",
    "validate": "appgw-emulator validate -f azuredeploy.json -p @azuredeploy.parameters.json",
    "certs": "appgw-emulator certs init ./certs --server-name appgw-emulator",
    "init": "appgw-emulator certs init ./certs --server-name appgw-emulator",
    "ocsp-responder": "appgw-emulator certs ocsp-responder --ca ./certs",
    "revoke": "appgw-emulator certs revoke ./certs client --reason keyCompromise",
    "wait": "appgw-emulator wait --timeout 60 http://127.0.0.1:8000/health && ./run-tests.sh",
    "check-ca": "appgw-emulator check-ca customer-ca.cer --client-cert client.pem",
    "verify": "appgw-emulator verify -f azuredeploy.json -p @azuredeploy.parameters.json "
    "--backend pool1=127.0.0.1:8080 --junit matrix.xml --expect expectations.json",
    "decode-header": "appgw-emulator decode-header - < recorded-x-client-cert-header.txt",
    "vectors": "appgw-emulator vectors ./header-vectors",
}


def _document(parser: argparse.ArgumentParser) -> None:
    """Fill in help, descriptions and examples that were not given where an option is added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, command in action.choices.items():
                if command.description is None:
                    command.description = summaries.get(name)
                if command.epilog is None and name in _EXAMPLES:
                    command.epilog = f"example: {_EXAMPLES[name]}"
                _document(command)
        elif not action.help:
            key = max(action.option_strings, key=len) if action.option_strings else action.dest
            action.help = _OPTION_HELP.get(key)


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every subcommand that has no subcommands of its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in sub.choices.values() for leaf in _leaf_parsers(child)]


def _add_log_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
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


def _add_bind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the listeners bind (default 127.0.0.1; 0.0.0.0 or :: inside a container, "
        "so the host can reach them)",
    )


def _add_server_name_argument(parser: argparse.ArgumentParser, *, when: str) -> None:
    parser.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name or IP address the listener certificate carries besides localhost, "
        "127.0.0.1 and ::1, e.g. a compose or Kubernetes service name (repeatable"
        + (f"; used {when})" if when else ")"),
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds (0-{MAX_WAIT_S})")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("appgw-emulator")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown (not installed)"


# -- helpers ----------------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summary(
    config: GatewayConfig, skipped: Sequence[tuple[str, str]] = (), *, strip: bool = False
) -> None:
    """The start-up notes and warnings of ``run`` and ``up`` (stderr, before the ready lines).

    The forgeable-header warnings are the ones ``validate`` prints, in the same words. With
    ``--strip-client-cert-headers`` a conditional rule's header no longer reaches the backend
    with the client's value, so only the other shape (a listener that does not touch a header
    another listener fills for the same pool) is left to warn about.
    """
    for rtype, name in skipped:
        _note(f"note: resource {rtype} '{name}' is read and skipped (not part of the gateway)")
    if config.notes:
        _note("note: accepted but not emulated locally: " + ", ".join(config.notes))
    for warning in config.warnings:
        _note(f"warning: {warning}")
    for hole in forgeable_certificate_headers(config):
        if strip and hole["rewriteRule"]:
            continue
        _note(f"WARNING (listener {hole['listener']}): {hole['message']}")
        _note(f"  fix: {hole['fix']}")


def _ready_lines(gateway: object, config: GatewayConfig) -> None:
    from emulator.runtime.gateway import Gateway

    assert isinstance(gateway, Gateway)
    for rule in config.rules:
        listener = rule.listener
        profile = listener.ssl_profile
        mode = (
            profile.client_auth.value
            if profile is not None and profile.client_auth is not None
            else "no client auth"
        )
        _say(f"ready: {listener.name} ({mode}) {gateway.url(listener.name)} -> {rule.target_text}")


async def _serve_until_signal(
    start: Callable[[trio.Nursery], object],
) -> None:
    """Run ``start(nursery)`` (which starts the servers) until SIGINT/SIGTERM, then stop cleanly.

    The first signal drains the gateways started by ``start`` (no new connections, requests in
    flight may finish for up to ``DRAIN_GRACE_S``, idle connections close at once), then stops
    everything; a second signal during the drain stops at once.
    """
    from emulator.runtime.gateway import DRAIN_GRACE_S, drain_serving, serving_gateways

    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        serving_gateways() as gateways,
    ):
        async with trio.open_nursery() as nursery:
            await start(nursery)  # type: ignore[misc]

            async def _wait_signal() -> None:
                async for signum in signals:
                    _note(f"stopping ({signal.Signals(signum).name})")
                    break
                else:
                    return
                async with trio.open_nursery() as draining:

                    async def _second_signal() -> None:
                        async for again in signals:
                            _note(f"stopping now ({signal.Signals(again).name})")
                            draining.cancel_scope.cancel()
                            return

                    draining.start_soon(_second_signal)
                    await drain_serving(gateways, DRAIN_GRACE_S)
                    draining.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

            nursery.start_soon(_wait_signal)


class _JsonFormatter(logging.Formatter):
    """``--log-format json``: the text log's fields, one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def _configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


# -- commands ---------------------------------------------------------------------------------


def _cmd_certs_init(args: argparse.Namespace) -> int:
    from emulator.pki.demo import write_demo_pki

    pki = write_demo_pki(
        args.directory, key_type=args.key_type, force=args.force, server_names=args.server_name
    )
    _say(f"demo PKI ({pki.key_type}) written to {pki.directory}:")
    for name, entry in sorted(pki.files.items()):
        _say(f"  {name:32} {entry.description}")
    return 0


def _load_config(args: argparse.Namespace) -> tuple[GatewayConfig, Sequence[tuple[str, str]]]:
    if wants_terraform(args):
        return load_terraform_config(args)
    parameters = [item for group in args.parameters for item in group]
    scope = DeploymentScope(
        subscription_id=args.subscription,
        resource_group=args.resource_group,
        location=args.location,
    )
    loaded = load_template(args.template_file, parameters, scope=scope)
    config = build_config(
        select_gateway(loaded, args.gateway),
        parameters=loaded.parameters,
        certificates=read_supplied_certificates(args.certificate, args.certificate_password),
        loose=args.loose,
        mint=demo_minter(args.certs, note=_note) if args.loose else None,
        now=datetime.now(UTC),
    )
    if args.backend:
        config = with_backend_overrides(config, dict(args.backend))
    return config, loaded.skipped


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


def _cmd_validate(args: argparse.Namespace) -> int:
    """``validate``: every problem, or OK and the summary. Never binds a port."""
    try:
        config, skipped = _load_config(args)
        listen = dict(args.listen)
        _check_listen_ports(config, listen)
    except EmulatorError as exc:
        problems = _problems(exc)
        if args.output == "json":
            _say(
                json.dumps(
                    {"ok": False, "problems": [_problem_json(p) for p in problems]}, indent=2
                )
            )
        else:
            for problem in problems:
                label = "not emulated" if isinstance(problem, UnsupportedFeature) else "error"
                _say(f"{label}: {problem}")
            _say(f"{len(problems)} problem(s) found")
        return 1
    description = describe(config)
    description["skippedResources"] = [{"type": t, "name": n} for t, n in skipped]
    for entry in description["listeners"]:
        if entry["port"] in listen:
            entry["localPort"] = listen[entry["port"]]
    listen_warnings = _listen_warnings(listen)
    if listen_warnings:
        description["warnings"] = [*description.get("warnings", []), *listen_warnings]
    if args.output == "json":
        _say(json.dumps({"ok": True, "problems": [], "summary": description}, indent=2))
    else:
        _say("OK")
        _say(render_text(description))
        for rtype, name in skipped:
            _say(f"  skipped resource {rtype} '{name}' (not part of the gateway)")
    return 0


def _workers(text: str) -> int:
    from emulator.runtime.workers import MAX_WORKERS

    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"'{text}' is not a worker count (1-{MAX_WORKERS})")
    return int(text)


def _add_workers_argument(parser: argparse.ArgumentParser) -> None:
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


def _serve_workers(
    args: argparse.Namespace,
    gateway: object,
    load: Callable[[], GatewayConfig],
    make_gateway: Callable[[GatewayConfig], object],
) -> int:
    """``--workers N``: the supervisor binds here, forks and supervises N workers, reloads.

    The supervisor answers ``/health`` itself (``--health-port``, or the ``--dashboard`` port,
    which serves no dashboard here) and prints the ready lines once every worker accepts.
    """
    from emulator.dashboard.wiring import _is_loopback
    from emulator.runtime.health import bind_plain
    from emulator.runtime.plain_health import health_url
    from emulator.runtime.workers import WorkerGateway, WorkerPool

    assert isinstance(gateway, WorkerGateway)
    count = args.workers
    health_port = args.health_port if args.health_port is not None else args.dashboard
    health = None
    if args.dashboard is not None:
        where = "its port" if args.health_port is None else "--health-port"
        _note(
            "note: the dashboard is not served with --workers (it shows one process); "
            f"{where} answers /health and /health/live, from the supervisor"
        )
    if health_port is not None:
        flag = "--health-port" if args.health_port is not None else "--dashboard"
        # Bound before the listeners, as without --workers: "not ready yet" can be seen.
        health = bind_plain(args.dashboard_bind, health_port, port_flag=flag)
        if not _is_loopback(args.dashboard_bind):
            _note(
                f"warning: the health endpoint listens on {args.dashboard_bind}, not on "
                "loopback: anyone who can reach this address can read the listeners' addresses"
            )
    try:
        sockets = gateway.bind_in_parent()
    except BaseException:
        if health is not None:
            health.close()
        raise
    _note(f"serving from {count} worker processes (supervisor pid {os.getpid()})")

    def serve(serving: WorkerGateway, _index: int, ready: Callable[[], None]) -> int:
        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(serving.serve)
            ready()

        trio.run(_serve_until_signal, start)
        return 0

    def load_gateway() -> WorkerGateway:
        built = make_gateway(load())
        assert isinstance(built, WorkerGateway)
        return built

    def on_ready(serving: WorkerGateway, reloaded: bool) -> None:
        if reloaded:
            _note(f"reloaded {args.template_file}: new connections use the new configuration")
        _ready_lines(serving, serving.config)
        if not reloaded and health is not None:
            _say(f"ready: health {health_url(health)}")

    def on_error(problem: EmulatorError) -> None:
        _note(f"error: reload refused, the previous configuration keeps serving: {problem}")

    pool = WorkerPool(
        count,
        gateway,
        sockets,
        serve,
        load=load_gateway,
        watched=[args.template_file, *_parameter_files(args)] if args.watch else [],
        on_ready=on_ready,
        on_error=on_error,
        note=_note,
        health=health,
    )
    try:
        return pool.run()
    finally:
        if health is not None:
            health.close()


def _add_strip_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strip-client-cert-headers",
        action="store_true",
        help="before the rewrite rules run, remove every client header that a rule fills from a "
        "client certificate variable, so a client can never forge one (Azure does not do this: "
        "off by default)",
    )


def _listen_warnings(listen: Mapping[int, int]) -> list[str]:
    return [
        f"frontend port {template_port} is served on local port "
        f"{local_port or 'chosen by the OS'} (--listen); headers and server variables still "
        f"carry {template_port}, as in Azure"
        for template_port, local_port in sorted(listen.items())
    ]


def _check_listen_ports(config: GatewayConfig, listen: Mapping[int, int]) -> None:
    """Refuse a ``--listen`` for a port no listener uses: a typo must not go unnoticed."""
    frontend_ports = sorted({rule.listener.frontend_port for rule in config.rules})
    unknown = sorted(set(listen) - set(frontend_ports))
    if unknown:
        raise StartupError(
            f"--listen maps template port {', '.join(map(str, unknown))}, which no listener "
            "of the gateway uses",
            file=config.file,
            fix="map one of the template's frontend ports: "
            + ", ".join(f"--listen {port}=PORT" for port in frontend_ports),
            code="EmulatorUnknownListenPort",
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from emulator.kit_commands import apply_compare_modes
    from emulator.runtime.gateway import Gateway
    from emulator.runtime.workers import WorkerGateway

    config, skipped = _load_config(args)
    user_listen = dict(args.listen)
    listen = dict(user_listen)
    _check_listen_ports(config, listen)
    config, twin_ports = apply_compare_modes(args, config)
    listen.update(twin_ports)
    _summary(config, skipped, strip=args.strip_client_cert_headers)
    for warning in _listen_warnings(listen):
        _note(f"warning: {warning}")
    workers = args.workers > 1
    kind = WorkerGateway if workers else Gateway

    def load() -> GatewayConfig:
        """The configuration again, as at start-up (a reload's check runs all of it)."""
        new_config, _skipped = _load_config(args)
        _check_listen_ports(new_config, user_listen)
        new_config, _twins = apply_compare_modes(args, new_config)
        return new_config

    def make_gateway(new_config: GatewayConfig) -> Gateway:
        return kind(
            new_config,
            bind=args.bind,
            listen=listen,
            strip_client_cert_headers=args.strip_client_cert_headers,
            **_verification_options(args, new_config),
        )

    gateway = make_gateway(config)
    if workers:
        return _serve_workers(args, gateway, load, make_gateway)

    from emulator.runtime.reload import Reloader

    shown: list[object] = []  # the dashboard, once it is up

    def on_ready(serving: Gateway) -> None:
        if reloader.reloads:
            _note(f"reloaded {args.template_file}: new connections use the new configuration")
            for item in shown:
                if item is not None:
                    item.show(serving)  # type: ignore[attr-defined]
        _ready_lines(serving, serving.config)

    def on_error(problem: EmulatorError) -> None:
        _note(f"error: reload refused, the previous configuration keeps serving: {problem}")

    assert isinstance(gateway, Gateway)
    watched = [args.template_file, *_parameter_files(args)] if args.watch else []
    reloader = Reloader(gateway, load, make_gateway, on_ready, on_error, watched)

    async def start(nursery: trio.Nursery) -> None:
        # Before the listeners bind, so /health answers 503 until they are; a bad --pki or a
        # busy dashboard port fails start-up before any ready line.
        announce = await start_dashboard_for_cli(
            nursery,
            gateway,
            args,
            pki_dir=None,
            observations=None,
            say=_say,
            note=_note,
            readiness=reloader.readiness,
        )
        await reloader.run(nursery)
        shown.append(announce())

    trio.run(_serve_until_signal, start)
    return 0


def _parameter_files(args: argparse.Namespace) -> list[Path]:
    """The ``@file`` parameters of ``run``: ``--watch`` reloads when one changes."""
    return [
        Path(item[1:])
        for group in args.parameters
        for item in group
        if item.startswith("@") and len(item) > 1
    ]


def _up_template_ports(strict: int, passthrough: int) -> tuple[int, int]:
    """The template's frontend ports for ``up --strict-port S --passthrough-port P``.

    Port 0 ("any free port") cannot be a frontend port in a template: the template gets a
    default and the listen mapping picks the free port, as ``run --listen 8443=0`` would. The
    default is chosen so it never collides with the other listener's explicit port
    (``--strict-port 9443`` alone must not clash with the Passthrough default).
    """
    if strict and strict == passthrough:
        raise UsageError("--strict-port and --passthrough-port must differ")
    defaults = (DEFAULT_STRICT_PORT, DEFAULT_PASSTHROUGH_PORT)
    strict_port = strict or next(p for p in defaults if p != passthrough)
    passthrough_port = passthrough or next(p for p in reversed(defaults) if p != strict_port)
    return strict_port, passthrough_port


#: ``up`` has no ``--listen``: the fix for a listener that cannot bind names its own flag.
_UP_PORT_FLAGS: Final = {
    STRICT_LISTENER: "--strict-port",
    PASSTHROUGH_LISTENER: "--passthrough-port",
}


def _with_up_fix(error: StartupError, gateway: object, config: GatewayConfig) -> None:
    """Reword the gateway's start-up fix (written for ``run --listen``) in ``up``'s flags."""
    from emulator.runtime.gateway import Gateway

    assert isinstance(gateway, Gateway)
    # Listeners bind in rule order and every bound one is in ``gateway.ports``: the first one
    # missing is the one that failed.
    failed = next(
        (r.listener.name for r in config.rules if r.listener.name not in gateway.ports), None
    )
    flag = _UP_PORT_FLAGS.get(failed or "")
    if flag is None:
        return
    if error.error_code == "EmulatorPortInUse":
        error.fix = f"stop what uses it, or choose another port: {flag} PORT (0 picks a free one)"
    elif error.error_code == "EmulatorPrivilegedPort":
        error.fix = f"choose a port above 1023: {flag} PORT (0 picks a free one)"
    else:
        error.fix = f"check --bind and {flag}"


def _cmd_up(args: argparse.Namespace) -> int:
    import backend_stub
    from emulator.pki.demo import (
        CLIENT_CERT,
        CLIENT_KEY,
        SERVER_ROOT_CA,
        check_server_names,
        ensure_demo_pki,
        missing_server_names,
    )
    from emulator.runtime.gateway import Gateway

    strict_port, passthrough_port = _up_template_ports(args.strict_port, args.passthrough_port)
    pki, created = ensure_demo_pki(
        args.certs, key_type=args.key_type, server_names=check_server_names(args.server_name)
    )
    _note(f"demo PKI: {'created in' if created else 'reusing'} {pki.directory}")
    missing = [] if created else missing_server_names(pki, args.server_name)
    if missing:
        _note(
            f"warning: the demo PKI in {pki.directory} was made without --server-name "
            f"{', '.join(missing)}; clients dialling that name fail hostname verification "
            f"(regenerate it with `appgw-emulator certs init {pki.directory} --force "
            + " ".join(f"--server-name {shlex.quote(n)}" for n in args.server_name)
            + "`)"
        )
    if not created and pki.key_type != args.key_type:
        _note(
            f"warning: the demo PKI in {pki.directory} has {pki.key_type} keys, not "
            f"{args.key_type}; it is reused as it is (regenerate it with `appgw-emulator certs "
            f"init {pki.directory} --key-type {args.key_type} --force`)"
        )
    backend_host = "127.0.0.1"
    observations = backend_observations(args)  # what the stub received, for the dashboard
    parameters = [
        "certData=" + base64.b64encode(pki.server_pfx).decode(),
        "certPassword=" + pki.server_pfx_password,
        "trustedClientCaData=" + base64.b64encode(pki.trusted_client_ca_pem).decode(),
    ]

    async def start(nursery: trio.Nursery) -> None:
        try:
            host, port = await nursery.start(
                functools.partial(
                    backend_stub.serve,
                    backend_stub.StubConfig(),
                    host=backend_host,
                    port=args.backend_port,
                    recorder=observations.record if observations is not None else None,
                )
            )
        except backend_stub.StubStartupError as exc:
            raise StartupError(
                str(exc),
                fix="stop what uses the port, or choose another: --backend-port PORT",
                code="EmulatorPortInUse",
            ) from exc
        # The gateway is driven by a real template, written out for the user to read or deploy.
        template = write_demo_template(
            pki.directory,
            strict_port=strict_port,
            passthrough_port=passthrough_port,
            backend_host=backend_host,
            backend_port=port,
        )
        config = build_gateway_config(
            select_gateway(load_template(template, parameters), None), now=datetime.now(UTC)
        )
        _summary(config, strip=args.strip_client_cert_headers)
        gateway = Gateway(
            config,
            bind=args.bind,
            listen={strict_port: args.strict_port, passthrough_port: args.passthrough_port},
            strip_client_cert_headers=args.strip_client_cert_headers,
            **_verification_options(args, config),
        )
        announce = await start_dashboard_for_cli(
            nursery,
            gateway,
            args,
            pki_dir=pki.directory,
            observations=observations,
            say=_say,
            note=_note,
        )
        try:
            await nursery.start(gateway.serve)
        except StartupError as exc:
            _with_up_fix(exc, gateway, config)
            raise
        _say(f"ready: stub backend http://{host}:{port}/")
        _ready_lines(gateway, config)
        announce()
        d = pki.directory
        # Quoted for a POSIX shell: the commands are meant to be pasted as they are.
        cacert = f"--cacert {shlex.quote(str(d / SERVER_ROOT_CA))}"
        cert = (
            f"--cert {shlex.quote(str(d / CLIENT_CERT))} --key {shlex.quote(str(d / CLIENT_KEY))}"
        )
        strict = gateway.url(STRICT_LISTENER)
        passthrough = gateway.url(PASSTHROUGH_LISTENER)
        forwarded = ", ".join(name for name, _ in CERT_HEADERS[:2])
        _say("")
        _say(f"gateway template: {template} (forwards {forwarded} and more)")
        _say("try the four cases:")
        for args_text, outcome in (
            (f"{cert} {strict}", "Strict, valid cert -> 200, backend sees the cert"),
            (strict, "Strict, no cert -> 400 No required SSL certificate was sent"),
            (f"{cert} {passthrough}", "Passthrough, cert -> 200, verification PASSTHROUGH"),
            (passthrough, "Passthrough, no cert -> 200, no cert header"),
        ):
            _say(f"  curl {cacert} {args_text}     # {outcome}")
        _say(
            f"other client certs in {d}: client-expired, client-not-yet-valid, "
            "client-unrelated-ca, client-self-signed (.pem/.key)"
        )
        _say("Ctrl-C stops.")

    trio.run(_serve_until_signal, start)
    return 0


# -- certificates: check-ca, OCSP responder, revocation, access log (issue #6) -----------------


def _add_verification_arguments(parser: argparse.ArgumentParser) -> None:
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


def _verification_options(args: argparse.Namespace, config: GatewayConfig) -> dict[str, Any]:
    """Gateway keyword arguments for ``--access-log`` and ``--explain``."""
    from emulator.access_log import AccessLogWriter

    options: dict[str, Any] = {"explain": args.explain}
    if args.access_log:
        try:
            options["access_log_sink"] = AccessLogWriter(
                args.access_log, resource_id=config.resource_id
            )
        except OSError as exc:
            raise StartupError(
                f"cannot open the access log: {exc.strerror or exc}",
                file=args.access_log,
                fix="pass a writable file path, or - for stderr",
                code="EmulatorAccessLogUnwritable",
            ) from exc
    return options


def _add_certificate_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    certs_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
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

    responder = certs_sub.add_parser(
        "ocsp-responder", help="serve OCSP for a demo PKI (the AIA URL of its client certs)"
    )
    responder.add_argument("--ca", type=Path, required=True, metavar="DIR")
    responder.add_argument("--port", type=_port, default=None)
    responder.add_argument("--bind", default="127.0.0.1")

    revoke = certs_sub.add_parser(
        "revoke", help="mark a certificate of a demo PKI revoked for its OCSP responder"
    )
    revoke.add_argument("directory", type=Path)
    revoke.add_argument("name", help="certificate file in DIR, e.g. client or client.pem")
    revoke.add_argument("--reason", help="RFC 5280 reason, e.g. keyCompromise")


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _cmd_check_ca(args: argparse.Namespace) -> int:
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
        _say(json.dumps(report_json(report), indent=2))
    else:
        _say(render_text(report))
    return report.exit_code


def _cmd_certs_ocsp_responder(args: argparse.Namespace) -> int:
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
        _say(f"ready: OCSP responder http://{args.bind}:{bound}/ for {args.ca}")
        _say(f"revoke a certificate: appgw-emulator certs revoke {args.ca} client")

    trio.run(_serve_until_signal, start)
    return 0


def _cmd_certs_revoke(args: argparse.Namespace) -> int:
    from emulator.pki.ocsp_responder import RESPONSE_VALIDITY, revoke

    entry = revoke(args.directory, args.name, reason=args.reason)
    reason = f" ({entry.reason.value})" if entry.reason is not None else ""
    _say(f"revoked {entry.name} serial {entry.serial:X}{reason} at {entry.revoked_at.isoformat()}")
    minutes = int(RESPONSE_VALIDITY.total_seconds() // 60)
    _say(
        "a running responder answers 'revoked' at once; a gateway that cached 'good' sees it "
        f"when that answer expires ({minutes} minutes at most)"
    )
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
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
                _say(f"ready: {args.url} {body.strip()}")
            return 0
        if time.monotonic() + WAIT_POLL_S >= deadline:
            break
        time.sleep(WAIT_POLL_S)
    _note(f"error: {args.url} was not ready after {args.timeout:g} s (last: {last})")
    _note("  fix: is the emulator running, and is the URL its dashboard or --health-port?")
    return 1


def _emulator_errors(group: BaseExceptionGroup[BaseException]) -> list[EmulatorError] | None:
    """The EmulatorErrors inside a trio nursery's exception group, or None if anything else is."""
    found: list[EmulatorError] = []
    for exc in group.exceptions:
        if isinstance(exc, EmulatorError):
            found.append(exc)
        elif isinstance(exc, BaseExceptionGroup):
            inner = _emulator_errors(exc)
            if inner is None:
                return None
            found += inner
        else:
            return None
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``appgw-emulator`` command; returns the exit code."""
    from emulator.envconfig import parse_with_environment

    parser = _parser()
    args = parse_with_environment(parser, argv, os.environ)
    _configure_logging(args.log_level, args.log_format)
    try:
        if args.command == "wait":
            return _cmd_wait(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        if args.command == "up":
            return _cmd_up(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "check-ca":
            return _cmd_check_ca(args)
        if args.command == "certs":
            if args.certs_command == "ocsp-responder":
                return _cmd_certs_ocsp_responder(args)
            if args.certs_command == "revoke":
                return _cmd_certs_revoke(args)
            return _cmd_certs_init(args)
    except EmulatorError as exc:
        _note(f"error: {exc}")
        return 1
    except BaseExceptionGroup as group:
        errors = _emulator_errors(group)
        if errors is None:
            raise
        for error in errors:
            _note(f"error: {error}")
        return 1
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
