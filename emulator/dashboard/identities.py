"""The client identities the dashboard's "try it" panel can present: the demo PKI's client files.

The panel never hands a certificate to the browser: the emulator process itself loads the
certificate and key named here and makes the request. What the page and the JSON API get about an
identity is public (subject, issuer, validity, SHA-1 fingerprint, the ``.pem`` file name); the
key's path stays in this process and no key bytes are ever read into a response.

The same fingerprints let the live request table show the validity of a demo certificate: the
gateway's access record has the subject, issuer and fingerprint but not the dates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cryptography import x509

from emulator.dashboard.identity import IDENTITY_SPECS, DemoIdentities, Identity
from emulator.dashboard.plain_identities import load_plain_identities
from emulator.pki.demo import (
    MANIFEST,
    SERVER_ROOT_CA,
    load_demo_pki,
)

__all__ = ["NO_PKI_HOWTO", "load_identities"]

#: What the "try it" panel says under ``run`` without ``--pki``.
NO_PKI_HOWTO: Final = (
    "No demo PKI was given, so only 'no certificate' can be tried. Create one with "
    "`appgw-emulator certs init certs` and restart with `--pki certs`; for Strict to accept the "
    "valid identity, the template's trusted client CA must be certs/trusted-client-ca-chain.pem "
    "(certs/deploymentParameters.json fills it in for the Azure quickstart template)."
)


def load_identities(directory: Path | None) -> DemoIdentities:
    """The identities of the ``certs init`` directory ``directory``; "none" only without one.

    A directory without a demo PKI manifest is read as plain certificate/key pairs
    (:mod:`emulator.dashboard.plain_identities`).

    Raises:
        DemoPkiError: the directory is not a usable demo PKI (missing, foreign, stale); the
            message says which and how to fix it, as for ``up``.
    """
    if directory is None:
        none = IDENTITY_SPECS[-1]
        return DemoIdentities(None, {none.key: Identity(none)}, unavailable_reason=NO_PKI_HOWTO)
    if not (directory / MANIFEST).is_file():
        # Not a `certs init` directory: the user's own certificate/key pairs.
        return load_plain_identities(directory)
    load_demo_pki(directory)  # the same checks as `up`: a stale or foreign PKI is an error
    identities: dict[str, Identity] = {}
    for spec in IDENTITY_SPECS:
        if spec.cert_file is None or spec.key_file is None:
            identities[spec.key] = Identity(spec)
            continue
        cert_path = directory / spec.cert_file
        identities[spec.key] = Identity(
            spec,
            cert_path=cert_path,
            key_path=directory / spec.key_file,
            certificate=x509.load_pem_x509_certificate(cert_path.read_bytes()),
        )
    root = directory / SERVER_ROOT_CA
    return DemoIdentities(
        directory,
        identities,
        server_root_pem=root.read_bytes() if root.is_file() else b"",
    )
