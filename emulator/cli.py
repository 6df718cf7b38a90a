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
from emulator.model import (
    BackendAddress,
    GatewayConfig,
    build_gateway_config,
    with_backend_overrides,
)
from emulator.summary import describe, render_text

__all__ = ["main"]

DEFAULT_CERTS_DIR: Final = Path("certs")
DEFAULT_STRICT_PORT: Final = 8443
DEFAULT_PASSTHROUGH_PORT: Final = 9443
DEFAULT_BACKEND_PORT: Final = 8080


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
    command.add_argument("--template-file", "-f", required=True, type=Path)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appgw-emulator",
        description="Local emulator of Azure Application Gateway (v2) mutual TLS.",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
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
    up.add_argument("--bind", default="127.0.0.1")
    up.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    _add_strip_argument(up)
    _add_verification_arguments(up)
    add_dashboard_arguments(up, command="up")

    run = sub.add_parser("run", help="run an ARM template's application gateway locally")
    _add_config_arguments(run)
    run.add_argument(
        "--listen",
        action="append",
        type=_listen_arg,
        default=[],
        metavar="TEMPLATE_PORT=LOCAL_PORT",
    )
    run.add_argument("--bind", default="127.0.0.1")
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
    validate.add_argument("--output", "-o", choices=["text", "json"], default="text")

    certs = sub.add_parser("certs", help="demo/test PKI")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser(
        "init", help="write a demo PKI (CAs, server PFX, client certs, parameters file)"
    )
    init.add_argument("directory", type=Path)
    init.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    init.add_argument("--force", action="store_true", help="regenerate an existing demo PKI")
    _add_certificate_commands(sub, certs_sub)
    from emulator.kit_commands import add_header_commands, add_verify_command

    add_verify_command(sub, _add_config_arguments)
    add_header_commands(sub)
    return parser


# -- helpers ----------------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _summary(config: GatewayConfig, skipped: Sequence[tuple[str, str]] = ()) -> None:
    for rtype, name in skipped:
        _note(f"note: resource {rtype} '{name}' is read and skipped (not part of the gateway)")
    if config.notes:
        _note("note: accepted but not emulated locally: " + ", ".join(config.notes))
    for warning in config.warnings:
        _note(f"warning: {warning}")


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


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- commands ---------------------------------------------------------------------------------


def _cmd_certs_init(args: argparse.Namespace) -> int:
    from emulator.demo_pki import write_demo_pki

    pki = write_demo_pki(args.directory, key_type=args.key_type, force=args.force)
    _say(f"demo PKI ({pki.key_type}) written to {pki.directory}:")
    for name, entry in sorted(pki.files.items()):
        _say(f"  {name:32} {entry.description}")
    return 0


def _load_config(args: argparse.Namespace) -> tuple[GatewayConfig, Sequence[tuple[str, str]]]:
    parameters = [item for group in args.parameters for item in group]
    scope = DeploymentScope(
        subscription_id=args.subscription,
        resource_group=args.resource_group,
        location=args.location,
    )
    loaded = load_template(args.template_file, parameters, scope=scope)
    config = build_gateway_config(select_gateway(loaded, args.gateway))
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
        "a worker that dies is restarted; the dashboard is not served with N > 1)",
    )


def _serve_workers(gateway: object, config: GatewayConfig, count: int) -> int:
    """``--workers N``: bind here, print the ready lines, then fork and supervise N workers."""
    from emulator.runtime.workers import WorkerGateway, run_workers

    assert isinstance(gateway, WorkerGateway)
    gateway.bind_in_parent()
    _note(f"serving from {count} worker processes (parent pid {os.getpid()})")

    def serve(index: int) -> int:
        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(gateway.serve)

        trio.run(_serve_until_signal, start)
        return 0

    _ready_lines(gateway, config)
    return run_workers(count, serve, note=_note)


def _add_strip_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strip-client-cert-headers",
        action="store_true",
        help="before the rewrite rules run, remove every client header that a rule fills from a "
        "client certificate variable, so a client can never forge one (Azure does not do this: "
        "off by default)",
    )


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
    listen = dict(args.listen)
    _check_listen_ports(config, listen)
    config, twin_ports = apply_compare_modes(args, config)
    listen.update(twin_ports)
    _summary(config, skipped)
    for template_port, local_port in sorted(listen.items()):
        _note(
            f"warning: frontend port {template_port} is served on local port "
            f"{local_port or 'chosen by the OS'} (--listen); headers and server variables still "
            f"carry {template_port}, as in Azure"
        )
    gateway = (WorkerGateway if args.workers > 1 else Gateway)(
        config,
        bind=args.bind,
        listen=listen,
        strip_client_cert_headers=args.strip_client_cert_headers,
        **_verification_options(args, config),
    )
    if args.workers > 1:
        if args.dashboard is not None:
            _note("note: the dashboard is not served with --workers (it shows one process)")
        return _serve_workers(gateway, config, args.workers)

    async def start(nursery: trio.Nursery) -> None:
        await nursery.start(gateway.serve)
        # Before the ready lines: a bad --pki or a busy dashboard port fails start-up first.
        await start_dashboard_for_cli(
            nursery, gateway, args, pki_dir=None, observations=None, say=_say, note=_note
        )
        _ready_lines(gateway, config)

    trio.run(_serve_until_signal, start)
    return 0


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
    from emulator.demo_pki import CLIENT_CERT, CLIENT_KEY, SERVER_ROOT_CA, ensure_demo_pki
    from emulator.runtime.gateway import Gateway

    strict_port, passthrough_port = _up_template_ports(args.strict_port, args.passthrough_port)
    pki, created = ensure_demo_pki(args.certs, key_type=args.key_type)
    _note(f"demo PKI: {'created in' if created else 'reusing'} {pki.directory}")
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
        config = build_gateway_config(select_gateway(load_template(template, parameters), None))
        _summary(config)
        gateway = Gateway(
            config,
            bind=args.bind,
            listen={strict_port: args.strict_port, passthrough_port: args.passthrough_port},
            strip_client_cert_headers=args.strip_client_cert_headers,
            **_verification_options(args, config),
        )
        try:
            await nursery.start(gateway.serve)
        except StartupError as exc:
            _with_up_fix(exc, gateway, config)
            raise
        _say(f"ready: stub backend http://{host}:{port}/")
        _ready_lines(gateway, config)
        await start_dashboard_for_cli(
            nursery,
            gateway,
            args,
            pki_dir=pki.directory,
            observations=observations,
            say=_say,
            note=_note,
        )
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
        metavar="PATH|-",
        help="append one JSON record per request, in App Gateway's access log shape, to PATH "
        "(- for stderr); adds clientCertFailureExplained",
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
    check.add_argument("file", type=Path, help="what the customer sent (PEM, .cer, bundle, ...)")
    check.add_argument("--client-cert", type=Path, metavar="CERT")
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

    from emulator.checkca import check_ca, render_text, report_json

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
    )
    if args.output == "json":
        _say(json.dumps(report_json(report), indent=2))
    else:
        _say(render_text(report))
    return report.exit_code


def _cmd_certs_ocsp_responder(args: argparse.Namespace) -> int:
    from emulator.ocsp_responder import DEFAULT_OCSP_PORT, load_responder

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
    from emulator.ocsp_responder import RESPONSE_VALIDITY, revoke

    entry = revoke(args.directory, args.name, reason=args.reason)
    reason = f" ({entry.reason.value})" if entry.reason is not None else ""
    _say(f"revoked {entry.name} serial {entry.serial:X}{reason} at {entry.revoked_at.isoformat()}")
    minutes = int(RESPONSE_VALIDITY.total_seconds() // 60)
    _say(
        "a running responder answers 'revoked' at once; a gateway that cached 'good' sees it "
        f"when that answer expires ({minutes} minutes at most)"
    )
    return 0


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
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
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
