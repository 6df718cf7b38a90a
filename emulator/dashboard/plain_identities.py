"""``--pki DIR`` for a plain directory of client certificates and keys, not a ``certs init`` one.

Teams already hold their test clients as files (``alice.pem`` + ``alice.key``, ``partner.crt`` +
``partner.key``); the "try it" panel offers each pair as an identity. A certificate file may
carry intermediates after the leaf (they are sent with it). The key is the file with the same
stem and ``.key`` (or ``-key.pem`` / ``.key.pem``). CA certificates and certificates without a
key are not identities and are skipped; a key that does not belong to its certificate is an
error naming both files. ``server-root-ca.pem``, when present, is trusted for the listeners.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from emulator.cert_facts import is_ca
from emulator.core.tls.dn import openssl_rfc2253
from emulator.dashboard.identity import (
    IDENTITY_SPECS,
    NO_CERTIFICATE,
    DemoIdentities,
    Identity,
    IdentitySpec,
    validity_state,
)
from emulator.pki.demo import SERVER_ROOT_CA, DemoPkiError

__all__ = ["load_plain_identities"]

#: Certificate file suffixes looked at.
CERT_SUFFIXES: Final = (".pem", ".crt", ".cer")
#: Key file names tried beside ``STEM.<cert suffix>``.
KEY_NAMES: Final = ("{stem}.key", "{stem}-key.pem", "{stem}.key.pem")
#: The panel lists every identity as a row; a directory with more pairs is not a test PKI.
MAX_IDENTITIES: Final = 50
#: Files larger than this are not a client certificate (a leaf + chain is a few KB).
MAX_FILE_BYTES: Final = 256 * 1024


def _key_for(cert_path: Path) -> Path | None:
    for pattern in KEY_NAMES:
        candidate = cert_path.with_name(pattern.format(stem=cert_path.stem))
        if candidate.is_file() and candidate != cert_path:
            return candidate
    return None


def _leaf(path: Path) -> x509.Certificate | None:
    if path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        return None
    return certificates[0]


def _check_key(cert: x509.Certificate, cert_path: Path, key_path: Path) -> None:
    try:
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise DemoPkiError(
            f"cannot read the private key of {cert_path.name}: {exc}",
            file=str(key_path),
            fix="use an unencrypted PEM key (openssl pkey -in KEY -out KEY.plain)",
        ) from exc
    if key.public_key() != cert.public_key():
        raise DemoPkiError(
            f"{key_path.name} is not the key of {cert_path.name}",
            file=str(key_path),
            fix=f"put the key of {cert_path.name} in {cert_path.stem}.key",
        )


def load_plain_identities(directory: Path, *, now: datetime | None = None) -> DemoIdentities:
    """Every certificate/key pair in ``directory`` as an identity, plus "no certificate".

    Raises:
        DemoPkiError: not a directory, no pair in it, too many pairs, or a key that does not
            match its certificate.
    """
    if not directory.is_dir():
        raise DemoPkiError(
            "the --pki directory does not exist",
            file=str(directory),
            fix="pass a `certs init` directory or a directory of CERT.pem + CERT.key pairs",
        )
    moment = now or datetime.now(UTC)
    identities: dict[str, Identity] = {}
    for cert_path in sorted(directory.iterdir()):
        if cert_path.suffix.lower() not in CERT_SUFFIXES or cert_path.name == SERVER_ROOT_CA:
            continue
        if cert_path.name.endswith(("-key.pem", ".key.pem")):
            continue
        key_path = _key_for(cert_path)
        if key_path is None:
            continue
        cert = _leaf(cert_path)
        if cert is None or is_ca(cert):
            continue
        _check_key(cert, cert_path, key_path)
        state = validity_state(cert.not_valid_before_utc, cert.not_valid_after_utc, moment)
        spec = IdentitySpec(
            cert_path.stem,
            cert_path.stem,
            cert_path.name,
            key_path.name,
            f"{openssl_rfc2253(cert.subject)}, issued by {openssl_rfc2253(cert.issuer)} ({state})",
        )
        identities[spec.key] = Identity(spec, cert_path, key_path, cert)
        if len(identities) > MAX_IDENTITIES:
            raise DemoPkiError(
                f"more than {MAX_IDENTITIES} certificate/key pairs",
                file=str(directory),
                fix="point --pki at a directory holding only the test clients to try",
            )
    if not identities:
        raise DemoPkiError(
            "no client certificate with its key in the --pki directory",
            file=str(directory),
            fix="put each client as NAME.pem (leaf, then intermediates) next to NAME.key, or "
            "create a demo PKI with `appgw-emulator certs init DIR`",
        )
    none = next(spec for spec in IDENTITY_SPECS if spec.key == NO_CERTIFICATE)
    identities.setdefault(NO_CERTIFICATE, Identity(none))
    root = directory / SERVER_ROOT_CA
    return DemoIdentities(
        directory, identities, server_root_pem=root.read_bytes() if root.is_file() else b""
    )
