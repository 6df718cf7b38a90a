"""What a client identity of the "try it" panel is: its spec, its files, its public facts.

The identities come from a ``certs init`` directory (:mod:`emulator.dashboard.identities`) or
from a plain directory of certificate/key pairs (:mod:`emulator.dashboard.plain_identities`);
both loaders build the types defined here, so neither imports the other's module for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.core.tls.dn import openssl_rfc2253
from emulator.pki.demo import (
    CLIENT_CERT,
    CLIENT_EXPIRED_CERT,
    CLIENT_EXPIRED_KEY,
    CLIENT_KEY,
    CLIENT_NOT_YET_VALID_CERT,
    CLIENT_NOT_YET_VALID_KEY,
    CLIENT_SELF_SIGNED_CERT,
    CLIENT_SELF_SIGNED_KEY,
    CLIENT_UNRELATED_CA_CERT,
    CLIENT_UNRELATED_CA_KEY,
)

__all__ = [
    "IDENTITY_SPECS",
    "NO_CERTIFICATE",
    "DemoIdentities",
    "Identity",
    "IdentitySpec",
    "validity_state",
]

#: The identity that presents no certificate; it needs no PKI, so it is always offered.
NO_CERTIFICATE: Final = "none"


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """One demo client identity: its key in the API, its files in a ``certs init`` directory."""

    key: str
    label: str
    cert_file: str | None
    key_file: str | None
    description: str


IDENTITY_SPECS: Final = (
    IdentitySpec(
        "valid",
        "valid",
        CLIENT_CERT,
        CLIENT_KEY,
        "issued by the trusted issuing CA, within its validity period",
    ),
    IdentitySpec(
        "expired",
        "expired",
        CLIENT_EXPIRED_CERT,
        CLIENT_EXPIRED_KEY,
        "issued by the trusted issuing CA; its validity ended yesterday",
    ),
    IdentitySpec(
        "not-yet-valid",
        "not yet valid",
        CLIENT_NOT_YET_VALID_CERT,
        CLIENT_NOT_YET_VALID_KEY,
        "issued by the trusted issuing CA; its validity starts in 30 days",
    ),
    IdentitySpec(
        "unrelated-ca",
        "unrelated CA",
        CLIENT_UNRELATED_CA_CERT,
        CLIENT_UNRELATED_CA_KEY,
        "issued by a root CA that the SSL profile does not trust",
    ),
    IdentitySpec(
        "self-signed",
        "self-signed",
        CLIENT_SELF_SIGNED_CERT,
        CLIENT_SELF_SIGNED_KEY,
        "a self-signed leaf certificate",
    ),
    IdentitySpec(NO_CERTIFICATE, "no certificate", None, None, "no client certificate at all"),
)


def validity_state(not_before: datetime, not_after: datetime, now: datetime) -> str:
    """``valid``, ``expired`` or ``not yet valid`` at ``now`` (the words OpenSSL's reasons use)."""
    if now < not_before:
        return "not yet valid"
    if now > not_after:
        return "expired"
    return "valid"


@dataclass(frozen=True, slots=True)
class Identity:
    """An identity ready to present. ``cert_path``/``key_path`` are None for no certificate."""

    spec: IdentitySpec
    cert_path: Path | None = None
    key_path: Path | None = None
    certificate: x509.Certificate | None = None

    @property
    def fingerprint_sha1(self) -> str:
        """Lowercase hex SHA-1 of the DER: the access record's spelling of the fingerprint."""
        if self.certificate is None:
            return ""
        return hashlib.sha1(self.certificate.public_bytes(Encoding.DER)).hexdigest()

    def to_json(self, now: datetime) -> dict[str, object]:
        """Public facts only: never the key, never its path."""
        cert = self.certificate
        entry: dict[str, object] = {
            "key": self.spec.key,
            "label": self.spec.label,
            "description": self.spec.description,
            "file": self.spec.cert_file,
            "certificate": None,
        }
        if cert is not None:
            entry["certificate"] = {
                "subject": openssl_rfc2253(cert.subject),
                "issuer": openssl_rfc2253(cert.issuer),
                "notBefore": cert.not_valid_before_utc.isoformat(),
                "notAfter": cert.not_valid_after_utc.isoformat(),
                "validity": validity_state(
                    cert.not_valid_before_utc, cert.not_valid_after_utc, now
                ),
                "sha1Fingerprint": self.fingerprint_sha1,
            }
        return entry


@dataclass(frozen=True, slots=True)
class DemoIdentities:
    """The identities on offer, and why only "no certificate" is when there is no PKI."""

    directory: Path | None
    identities: Mapping[str, Identity]
    #: PEM of the demo's server root, which a client trusts for the listeners (may be empty).
    server_root_pem: bytes = b""
    unavailable_reason: str | None = None

    def by_fingerprint(self, fingerprint: str) -> Identity | None:
        """The demo identity whose certificate has this SHA-1 fingerprint, if any."""
        if not fingerprint:
            return None
        wanted = fingerprint.lower()
        for identity in self.identities.values():
            if identity.certificate is not None and identity.fingerprint_sha1 == wanted:
                return identity
        return None
