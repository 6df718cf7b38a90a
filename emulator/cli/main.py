"""``appgw-emulator``: the command line.

Exit codes: 0 on success and on Ctrl-C / SIGTERM, 1 for configuration and runtime errors
(printed as one ``error:`` block naming the file, the JSON path, the fix and the code; never a
traceback), 2 for command-line usage errors (argparse's own convention).

This module builds the parser from each command's module and dispatches to it; the commands
live beside it in :mod:`emulator.cli` (``up``, ``run``, ``validate``, ``certs``, ``check_ca``,
``wait``, ``verify``, ``headers``), the options several commands share in :mod:`.options`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Final

from emulator.cli.certs import (
    add_certificate_commands,
    add_certs_command,
    cmd_certs_init,
    cmd_certs_ocsp_responder,
    cmd_certs_revoke,
)
from emulator.cli.check_ca import add_check_ca_command, cmd_check_ca
from emulator.cli.console import configure_logging, note
from emulator.cli.options import (
    UsageError,
    add_config_arguments,
    add_log_arguments,
)
from emulator.cli.run import add_run_command, cmd_run
from emulator.cli.up import (
    DEFAULT_BACKEND_PORT,
    DEFAULT_PASSTHROUGH_PORT,
    DEFAULT_STRICT_PORT,
    add_up_command,
    cmd_up,
)
from emulator.cli.validate import add_validate_command, cmd_validate
from emulator.cli.wait import add_wait_command, cmd_wait
from emulator.errors import EmulatorError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appgw-emulator",
        description="Local emulator of Azure Application Gateway (v2) mutual TLS.",
        epilog="Every option can also be set by the environment variable shown beside it "
        "(APPGW_EMULATOR_<OPTION>); a flag on the command line wins; a variable for a "
        "repeatable option holds one value per line. `appgw-emulator COMMAND --help` lists "
        "each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"appgw-emulator {_version()}")
    add_log_arguments(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_up_command(sub)

    add_run_command(sub)
    add_validate_command(sub)
    certs_sub = add_certs_command(sub)
    add_wait_command(sub)
    add_certificate_commands(sub, certs_sub)
    add_check_ca_command(sub)
    from emulator.cli.headers import add_header_commands
    from emulator.cli.verify import add_verify_command

    add_verify_command(sub, add_config_arguments)
    add_header_commands(sub)
    for choices in (sub.choices, certs_sub.choices):
        for command_parser in choices.values():
            command_parser.set_defaults(command_parser=command_parser)
    # The log options are also accepted after the command (``up --log-format json``).
    for command in _leaf_parsers(parser):
        add_log_arguments(command, defaults=False)
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("appgw-emulator")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown (not installed)"


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
    from emulator.cli.envconfig import parse_with_environment

    parser = build_parser()
    args = parse_with_environment(parser, argv, os.environ)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.command == "wait":
            return cmd_wait(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        if args.command == "up":
            return cmd_up(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "check-ca":
            return cmd_check_ca(args)
        if args.command == "certs":
            if args.certs_command == "ocsp-responder":
                return cmd_certs_ocsp_responder(args)
            if args.certs_command == "revoke":
                return cmd_certs_revoke(args)
            return cmd_certs_init(args)
    except EmulatorError as exc:
        note(f"error: {exc}")
        return 1
    except BaseExceptionGroup as group:
        errors = _emulator_errors(group)
        if errors is None:
            raise
        for error in errors:
            note(f"error: {error}")
        return 1
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 0
    parser.error(f"unknown command {args.command}")
    return 2
