"""``appgw-emulator up``: the zero-config demo, Strict and Passthrough listeners before the stub."""

from __future__ import annotations

import argparse
import base64
import functools
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import trio

from emulator.arm.demo_template import (
    CERT_HEADERS,
    PASSTHROUGH_LISTENER,
    STRICT_LISTENER,
    write_demo_template,
)
from emulator.arm.template import load_template, select_gateway
from emulator.cli.console import note, print_ready_lines, print_summary, say
from emulator.cli.dashboard import (
    add_dashboard_arguments,
    backend_observations,
    start_dashboard_for_cli,
)
from emulator.cli.options import (
    DEFAULT_CERTS_DIR,
    UsageError,
    add_bind_argument,
    add_server_name_argument,
    add_strip_argument,
    add_verification_arguments,
    port_arg,
)
from emulator.cli.serving import serve_until_signal, verification_options
from emulator.errors import StartupError
from emulator.model import (
    GatewayConfig,
    build_gateway_config,
)

DEFAULT_STRICT_PORT: Final = 8443
DEFAULT_PASSTHROUGH_PORT: Final = 9443
DEFAULT_BACKEND_PORT: Final = 8080


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


def cmd_up(args: argparse.Namespace) -> int:
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
    note(f"demo PKI: {'created in' if created else 'reusing'} {pki.directory}")
    missing = [] if created else missing_server_names(pki, args.server_name)
    if missing:
        note(
            f"warning: the demo PKI in {pki.directory} was made without --server-name "
            f"{', '.join(missing)}; clients dialling that name fail hostname verification "
            f"(regenerate it with `appgw-emulator certs init {pki.directory} --force "
            + " ".join(f"--server-name {shlex.quote(n)}" for n in args.server_name)
            + "`)"
        )
    if not created and pki.key_type != args.key_type:
        note(
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
        print_summary(config, strip=args.strip_client_cert_headers)
        gateway = Gateway(
            config,
            bind=args.bind,
            listen={strict_port: args.strict_port, passthrough_port: args.passthrough_port},
            strip_client_cert_headers=args.strip_client_cert_headers,
            **verification_options(args, config),
        )
        announce = await start_dashboard_for_cli(
            nursery,
            gateway,
            args,
            pki_dir=pki.directory,
            observations=observations,
            say=say,
            note=note,
        )
        try:
            await nursery.start(gateway.serve)
        except StartupError as exc:
            _with_up_fix(exc, gateway, config)
            raise
        say(f"ready: stub backend http://{host}:{port}/")
        print_ready_lines(gateway, config)
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
        say("")
        say(f"gateway template: {template} (forwards {forwarded} and more)")
        say("try the four cases:")
        for args_text, outcome in (
            (f"{cert} {strict}", "Strict, valid cert -> 200, backend sees the cert"),
            (strict, "Strict, no cert -> 400 No required SSL certificate was sent"),
            (f"{cert} {passthrough}", "Passthrough, cert -> 200, verification PASSTHROUGH"),
            (passthrough, "Passthrough, no cert -> 200, no cert header"),
        ):
            say(f"  curl {cacert} {args_text}     # {outcome}")
        say(
            f"other client certs in {d}: client-expired, client-not-yet-valid, "
            "client-unrelated-ca, client-self-signed (.pem/.key)"
        )
        say("Ctrl-C stops.")

    trio.run(serve_until_signal, start)
    return 0


def add_up_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``up`` sub-command and its options."""
    up = sub.add_parser(
        "up", help="zero-config demo: Strict and Passthrough listeners in front of the stub backend"
    )
    up.add_argument(
        "--certs",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        help="demo PKI directory (default ./certs; created when missing)",
    )
    up.add_argument("--strict-port", type=port_arg, default=DEFAULT_STRICT_PORT)
    up.add_argument("--passthrough-port", type=port_arg, default=DEFAULT_PASSTHROUGH_PORT)
    up.add_argument("--backend-port", type=port_arg, default=DEFAULT_BACKEND_PORT)
    add_bind_argument(up)
    up.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    add_server_name_argument(up, when="when it creates the demo PKI")
    add_strip_argument(up)
    add_verification_arguments(up)
    add_dashboard_arguments(up, command="up")
