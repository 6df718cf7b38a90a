"""The command line's ``--certificate``, ``--certificate-password``, ``--loose`` and ``--certs``.

The I/O half of :mod:`emulator.arm.keyvault`: reads the files the options name, issues
``--loose`` development certificates from the demo PKI's server CA, and builds the model with
the substitutions' warnings in front of the model's own. Placeholder parameter values that
broke the build are restated as the parameter (:mod:`emulator.arm.placeholders`).
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from emulator.arm.keyvault import Minter, SuppliedCertificate, apply_certificates
from emulator.arm.placeholders import name_placeholders, placeholder_parameters
from emulator.arm.template import GatewayResource
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError
from emulator.model import GatewayConfig, build_gateway_config

__all__ = [
    "add_certificate_arguments",
    "build_config",
    "demo_minter",
    "read_supplied_certificates",
]

#: Each ``--certificate`` file may be at most this big: a PFX with a long chain is a few KB;
#: anything this size is the wrong file, and reading it all would be pointless.
MAX_CERTIFICATE_FILE_BYTES: Final = 1024 * 1024
_CODE: Final = "EmulatorCertificateOptionInvalid"
_PASSWORD_BYTES: Final = 18
DEFAULT_CERTS_DIR: Final = Path("certs")


def _pair(text: str, what: str) -> tuple[str, str]:
    # Split at the first '=': a Windows path or a password may hold ':' and '='.
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME={what}")
    return name.strip(), value


def _certificate_arg(text: str) -> tuple[str, str]:
    return _pair(text, "FILE")


def _password_arg(text: str) -> tuple[str, str]:
    return _pair(text, "PASSWORD")


def add_certificate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--certificate``, ``--certificate-password``, ``--loose``, ``--certs`` (run, validate)."""
    parser.add_argument(
        "--certificate",
        action="append",
        type=_certificate_arg,
        default=[],
        metavar="NAME=FILE",
        help="local file for the sslCertificates or trustedRootCertificates item NAME (a Key "
        "Vault certificate): a .pfx, a PEM with its key, or for a trusted root a PEM/.cer "
        "(repeatable)",
    )
    parser.add_argument(
        "--certificate-password",
        action="append",
        type=_password_arg,
        default=[],
        metavar="NAME=PASSWORD",
        help="password of the --certificate NAME .pfx",
    )
    parser.add_argument(
        "--loose",
        action="store_true",
        help="Key Vault listener certificates without --certificate get a development "
        "certificate from the demo PKI's server CA; other not-emulated features become "
        "warnings (see README)",
    )
    parser.add_argument(
        "--certs",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        metavar="DIR",
        help="demo PKI whose server CA issues --loose certificates (default ./certs; created "
        "when missing)",
    )


def read_supplied_certificates(
    certificates: Sequence[tuple[str, str]], passwords: Sequence[tuple[str, str]]
) -> dict[str, SuppliedCertificate]:
    """Read each ``--certificate`` file; every bad option is reported in one error."""
    problems: list[EmulatorError] = []
    by_name: dict[str, tuple[str, str]] = {}
    for name, file in certificates:
        by_name[name.lower()] = (name, file)  # later wins, as with --parameters
    pw_by_name = {name.lower(): (name, pw) for name, pw in passwords}
    out: dict[str, SuppliedCertificate] = {}
    for lowered, (name, file) in by_name.items():
        try:
            path = Path(file)
            size = path.stat().st_size
            if size > MAX_CERTIFICATE_FILE_BYTES:
                problems.append(
                    TemplateError(
                        f"--certificate {name}: the file is {size} bytes; a certificate file is "
                        f"at most {MAX_CERTIFICATE_FILE_BYTES}",
                        file=file,
                        fix="pass the .pfx, PEM or .cer file of that certificate",
                        code=_CODE,
                    )
                )
                continue
            data = path.read_bytes()
        except OSError as exc:
            problems.append(
                TemplateError(
                    f"--certificate {name}: cannot read the file: {exc.strerror or exc}",
                    file=file,
                    fix="check the path (relative paths are resolved from the current directory)",
                    code=_CODE,
                )
            )
            continue
        password = pw_by_name.get(lowered, (name, None))[1]
        out[name] = SuppliedCertificate(name=name, file=file, data=data, password=password)
    for lowered, (name, _pw) in pw_by_name.items():
        if lowered not in by_name:
            problems.append(
                TemplateError(
                    f"--certificate-password {name} has no --certificate {name}=FILE",
                    fix=f"add --certificate {name}=FILE, or fix the name",
                    code=_CODE,
                )
            )
    if problems:
        raise problems[0] if len(problems) == 1 else InvalidConfiguration(problems)
    return out


def demo_minter(directory: Path, *, note: Any = None) -> Minter:
    """A :data:`Minter` issuing from the demo PKI in ``directory`` (created when missing).

    The PKI is opened on the first certificate it issues, so a run without Key Vault items
    never touches the directory.
    """
    state: dict[str, Any] = {}

    def mint(name: str, hosts: tuple[str, ...]) -> tuple[bytes, str]:
        from emulator.pki import CA
        from emulator.pki.demo import SERVER_ROOT_CA, SERVER_ROOT_CA_KEY, ensure_demo_pki

        if "ca" not in state:
            pki, created = ensure_demo_pki(directory)
            if created and note is not None:
                note(f"demo PKI: created in {pki.directory} (for --loose certificates)")
            key_file = pki.directory / SERVER_ROOT_CA_KEY
            if not key_file.is_file():
                raise TemplateError(
                    f"--loose needs the demo PKI's server CA key ({SERVER_ROOT_CA_KEY}), which "
                    "this older demo PKI does not hold",
                    file=str(pki.directory),
                    fix=f"regenerate it: appgw-emulator certs init {pki.directory} --force, or "
                    f"pass --certificate {name}=FILE",
                    code=_CODE,
                )
            state["ca"] = CA.from_pem(
                (pki.directory / SERVER_ROOT_CA).read_bytes(), key_file.read_bytes()
            )
        ca: CA = state["ca"]
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        return ca.issue_server(*hosts).pfx(password), password

    return mint


def build_config(
    gateway: GatewayResource,
    *,
    parameters: Mapping[str, Any],
    certificates: Mapping[str, SuppliedCertificate] | None = None,
    loose: bool = False,
    mint: Minter | None = None,
    now: datetime,
) -> GatewayConfig:
    """Substitute local certificates, build the model, and name placeholder parameters.

    ``now`` is the time of the build (see :func:`emulator.model.build_gateway_config`).

    Raises:
        EmulatorError: every problem of the substitution, else of the model build; a problem
            caused by a placeholder parameter value names that parameter.
    """
    substituted = apply_certificates(
        gateway.resource,
        certificates or {},
        loose=loose,
        mint=mint,
        file=gateway.file,
        json_path=gateway.json_path,
    )
    resource = dataclasses.replace(gateway, resource=substituted.resource)
    try:
        config = build_gateway_config(resource, loose=loose, now=now)
    except EmulatorError as exc:
        placeholders = placeholder_parameters(parameters)
        if not placeholders:
            raise
        problems = exc.problems if isinstance(exc, InvalidConfiguration) else [exc]
        named = name_placeholders(
            problems,
            resource=resource.resource,
            json_path=resource.json_path,
            placeholders=placeholders,
        )
        if named == problems:
            raise
        raise (named[0] if len(named) == 1 else InvalidConfiguration(named)) from None
    if not substituted.warnings:
        return config
    return dataclasses.replace(config, warnings=(*substituted.warnings, *config.warnings))
