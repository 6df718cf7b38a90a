"""``run --compare-modes``: each mTLS listener served twice, Strict and Passthrough, on the
user's own template (the model side is :mod:`emulator.model.mode_twins`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from emulator.errors import StartupError
from emulator.model import GatewayConfig

# -- run --compare-modes ------------------------------------------------------------------------


def add_compare_modes_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--compare-modes",
        action="store_true",
        help="serve each mTLS listener twice: as configured and with the other mode "
        "(Strict <-> Passthrough), each twin on a port of its own",
    )
    run.add_argument(
        "--client-ca",
        type=Path,
        metavar="CERT",
        help="with --compare-modes: the CA chain (root + intermediates, PEM) a Strict twin of a "
        "Passthrough listener trusts (default: the --pki demo PKI's chain, when there is one)",
    )


def apply_compare_modes(
    args: argparse.Namespace, config: GatewayConfig
) -> tuple[GatewayConfig, dict[int, int]]:
    """``config`` with the twins ``--compare-modes`` asks for, and their ``listen`` entries.

    Raises:
        StartupError: ``--client-ca`` cannot be read or holds no root certificate.
    """
    from cryptography import x509

    from emulator.arm.certdata import TrustedClientCa
    from emulator.model.mode_twins import with_mode_twins
    from emulator.pki.demo import TRUSTED_CLIENT_CA_CHAIN

    if not getattr(args, "compare_modes", False):
        return config, {}
    source: Path | None = args.client_ca
    if source is None and getattr(args, "pki", None) is not None:
        candidate = args.pki / TRUSTED_CLIENT_CA_CHAIN
        source = candidate if candidate.is_file() else None
    trust = None
    if source is not None:
        fix = "pass the PEM chain your clients' certificates come from, root included"
        try:
            certificates = x509.load_pem_x509_certificates(source.read_bytes())
        except (OSError, ValueError) as exc:
            raise StartupError(
                f"cannot read the client CA chain: {exc}",
                file=str(source),
                fix=fix,
                code="EmulatorCompareModesCa",
            ) from exc
        if not any(c.issuer == c.subject for c in certificates):
            raise StartupError(
                "the client CA chain holds no root certificate, so a Strict twin could trust "
                "nothing",
                file=str(source),
                fix=fix,
                code="EmulatorCompareModesCa",
            )
        trust = TrustedClientCa(f"compare-modes:{source.name}", tuple(certificates))
    twins = with_mode_twins(config, strict_trust=trust)
    return twins.config, twins.ports
