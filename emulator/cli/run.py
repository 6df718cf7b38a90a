"""``appgw-emulator run``: a template's (ARM or Terraform) gateway, served locally."""

from __future__ import annotations

import argparse

import trio

from emulator.cli.console import note, print_ready_lines, print_summary, say
from emulator.cli.dashboard import (
    add_dashboard_arguments,
    start_dashboard_for_cli,
)
from emulator.cli.options import (
    add_config_arguments,
    add_listen_arguments,
    add_strip_argument,
    add_verification_arguments,
    add_workers_argument,
    parameter_files,
)
from emulator.cli.serving import (
    check_listen_ports,
    listen_warnings,
    load_cli_config,
    serve_until_signal,
    serve_workers,
    verification_options,
)
from emulator.errors import EmulatorError
from emulator.model import (
    GatewayConfig,
)


def cmd_run(args: argparse.Namespace) -> int:
    from emulator.cli.compare_modes import apply_compare_modes
    from emulator.runtime.gateway import Gateway
    from emulator.runtime.workers import WorkerGateway

    config, skipped = load_cli_config(args)
    user_listen = dict(args.listen)
    listen = dict(user_listen)
    check_listen_ports(config, listen)
    config, twin_ports = apply_compare_modes(args, config)
    listen.update(twin_ports)
    print_summary(config, skipped, strip=args.strip_client_cert_headers)
    for warning in listen_warnings(listen):
        note(f"warning: {warning}")
    workers = args.workers > 1
    kind = WorkerGateway if workers else Gateway

    def load() -> GatewayConfig:
        """The configuration again, as at start-up (a reload's check runs all of it)."""
        new_config, _skipped = load_cli_config(args)
        check_listen_ports(new_config, user_listen)
        new_config, _twins = apply_compare_modes(args, new_config)
        return new_config

    def make_gateway(new_config: GatewayConfig) -> Gateway:
        return kind(
            new_config,
            bind=args.bind,
            listen=listen,
            strip_client_cert_headers=args.strip_client_cert_headers,
            **verification_options(args, new_config),
        )

    gateway = make_gateway(config)
    if workers:
        return serve_workers(args, gateway, load, make_gateway)

    from emulator.runtime.reload import Reloader

    shown: list[object] = []  # the dashboard, once it is up

    def on_ready(serving: Gateway) -> None:
        if reloader.reloads:
            note(f"reloaded {args.template_file}: new connections use the new configuration")
            for item in shown:
                if item is not None:
                    item.show(serving)  # type: ignore[attr-defined]
        print_ready_lines(serving, serving.config)

    def on_error(problem: EmulatorError) -> None:
        note(f"error: reload refused, the previous configuration keeps serving: {problem}")

    assert isinstance(gateway, Gateway)
    watched = [args.template_file, *parameter_files(args)] if args.watch else []
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
            say=say,
            note=note,
            readiness=reloader.readiness,
        )
        await reloader.run(nursery)
        shown.append(announce())

    trio.run(serve_until_signal, start)
    return 0


def add_run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``run`` sub-command and its options."""
    run = sub.add_parser("run", help="run an ARM template's application gateway locally")
    add_config_arguments(run)
    add_listen_arguments(run)
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload the template and @parameter files when one changes (SIGHUP reloads "
        "always): checked first, an invalid one leaves the running configuration serving",
    )
    add_workers_argument(run)
    add_strip_argument(run)
    add_verification_arguments(run)
    add_dashboard_arguments(run, command="run")
    from emulator.cli.compare_modes import add_compare_modes_arguments

    add_compare_modes_arguments(run)
