"""Loading a config from the command line and serving it until a signal (one process or workers)."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import load_template, select_gateway
from emulator.cli.console import note, print_ready_lines, say
from emulator.cli.local_certs import (
    build_config,
    demo_minter,
    read_supplied_certificates,
)
from emulator.cli.options import parameter_files
from emulator.cli.terraform import load_config as load_terraform_config
from emulator.cli.terraform import wants_terraform
from emulator.errors import EmulatorError, StartupError
from emulator.model import (
    GatewayConfig,
    with_backend_overrides,
)


async def serve_until_signal(
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
                    note(f"stopping ({signal.Signals(signum).name})")
                    break
                else:
                    return
                async with trio.open_nursery() as draining:

                    async def _second_signal() -> None:
                        async for again in signals:
                            note(f"stopping now ({signal.Signals(again).name})")
                            draining.cancel_scope.cancel()
                            return

                    draining.start_soon(_second_signal)
                    await drain_serving(gateways, DRAIN_GRACE_S)
                    draining.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

            nursery.start_soon(_wait_signal)


def load_cli_config(args: argparse.Namespace) -> tuple[GatewayConfig, Sequence[tuple[str, str]]]:
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
        mint=demo_minter(args.certs, note=note) if args.loose else None,
        now=datetime.now(UTC),
    )
    if args.backend:
        config = with_backend_overrides(config, dict(args.backend))
    return config, loaded.skipped


def serve_workers(
    args: argparse.Namespace,
    gateway: object,
    load: Callable[[], GatewayConfig],
    make_gateway: Callable[[GatewayConfig], object],
) -> int:
    """``--workers N``: the supervisor binds here, forks and supervises N workers, reloads.

    The supervisor answers ``/health`` itself (``--health-port``, or the ``--dashboard`` port,
    which serves no dashboard here) and prints the ready lines once every worker accepts.
    """
    from emulator.cli.dashboard import _is_loopback
    from emulator.runtime.health import bind_plain
    from emulator.runtime.plain_health import health_url
    from emulator.runtime.workers import WorkerGateway, WorkerPool

    assert isinstance(gateway, WorkerGateway)
    count = args.workers
    health_port = args.health_port if args.health_port is not None else args.dashboard
    health = None
    if args.dashboard is not None:
        where = "its port" if args.health_port is None else "--health-port"
        note(
            "note: the dashboard is not served with --workers (it shows one process); "
            f"{where} answers /health and /health/live, from the supervisor"
        )
    if health_port is not None:
        flag = "--health-port" if args.health_port is not None else "--dashboard"
        # Bound before the listeners, as without --workers: "not ready yet" can be seen.
        health = bind_plain(args.dashboard_bind, health_port, port_flag=flag)
        if not _is_loopback(args.dashboard_bind):
            note(
                f"warning: the health endpoint listens on {args.dashboard_bind}, not on "
                "loopback: anyone who can reach this address can read the listeners' addresses"
            )
    try:
        sockets = gateway.bind_in_parent()
    except BaseException:
        if health is not None:
            health.close()
        raise
    note(f"serving from {count} worker processes (supervisor pid {os.getpid()})")

    def serve(serving: WorkerGateway, _index: int, ready: Callable[[], None]) -> int:
        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(serving.serve)
            ready()

        trio.run(serve_until_signal, start)
        return 0

    def load_gateway() -> WorkerGateway:
        built = make_gateway(load())
        assert isinstance(built, WorkerGateway)
        return built

    def on_ready(serving: WorkerGateway, reloaded: bool) -> None:
        if reloaded:
            note(f"reloaded {args.template_file}: new connections use the new configuration")
        print_ready_lines(serving, serving.config)
        if not reloaded and health is not None:
            say(f"ready: health {health_url(health)}")

    def on_error(problem: EmulatorError) -> None:
        note(f"error: reload refused, the previous configuration keeps serving: {problem}")

    pool = WorkerPool(
        count,
        gateway,
        sockets,
        serve,
        load=load_gateway,
        watched=[args.template_file, *parameter_files(args)] if args.watch else [],
        on_ready=on_ready,
        on_error=on_error,
        note=note,
        health=health,
    )
    try:
        return pool.run()
    finally:
        if health is not None:
            health.close()


def listen_warnings(listen: Mapping[int, int]) -> list[str]:
    return [
        f"frontend port {template_port} is served on local port "
        f"{local_port or 'chosen by the OS'} (--listen); headers and server variables still "
        f"carry {template_port}, as in Azure"
        for template_port, local_port in sorted(listen.items())
    ]


def check_listen_ports(config: GatewayConfig, listen: Mapping[int, int]) -> None:
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


def verification_options(args: argparse.Namespace, config: GatewayConfig) -> dict[str, Any]:
    """Gateway keyword arguments for ``--access-log`` and ``--explain``."""
    from emulator.runtime.access_log import AccessLogWriter

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
