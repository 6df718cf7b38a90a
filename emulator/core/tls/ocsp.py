"""OCSP for ``verifyClientRevocation: OCSP``: requests, response checks, and the answer cache.

The gateway asks the responder named in the client certificate's Authority Information Access
extension (appgw-behaviour.md §3) and caches the answers. ``cryptography`` builds requests and
parses responses but verifies nothing about a response, so :func:`evaluate_response` does what
OpenSSL's ``OCSP_basic_verify`` + ``OCSP_check_validity`` do for nginx:

* the response is ``successful`` and has a single response for *this* certificate (same
  issuer name hash, issuer key hash and serial as the request's CertID);
* it is signed by the issuer itself, or by a delegated responder certificate that the issuer
  signed, that carries the id-kp-OCSPSigning EKU and is valid now (RFC 6960 §4.2.2.2);
* ``thisUpdate`` is not in the future and ``nextUpdate`` (when present) not in the past, each
  with ``CLOCK_SKEW_S`` of tolerance (nginx passes 300 s to ``OCSP_check_validity``).

Any failure is an :data:`OcspStatus.ERROR` outcome with the reason in words; like the gateway,
the caller fails closed on it.

The cache (:class:`OcspCache`) keeps good / revoked / unknown answers until their
``nextUpdate`` (at most ``MAX_CACHE_S``; ``DEFAULT_CACHE_S`` without one) and never keeps
errors, so an unreachable responder is asked again by the next connection. Azure says answers
are cached but not for how long; nginx's client OCSP cache keeps an answer until nextUpdate.

Pure: time is a parameter; the HTTP exchange is in ``emulator.runtime.ocsp_client``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

__all__ = [
    "CLOCK_SKEW_S",
    "DEFAULT_CACHE_S",
    "MAX_CACHE_S",
    "OcspCache",
    "OcspOutcome",
    "OcspStatus",
    "build_request",
    "evaluate_response",
    "responder_url",
]

#: Tolerance on thisUpdate / nextUpdate (nginx: ``OCSP_check_validity(..., 300, -1)``).
CLOCK_SKEW_S: Final = 300
#: How long an answer without nextUpdate stays cached (one hour, nginx's stapling default).
DEFAULT_CACHE_S: Final = 3600
#: Upper bound on caching any answer, so a revocation is seen within the hour at the latest.
MAX_CACHE_S: Final = 3600
#: CertID hash, as OpenSSL's OCSP_cert_to_id (and nginx) use by default.
_CERT_ID_HASH: Final = hashes.SHA1()


class OcspStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    #: No usable answer: unreachable responder, HTTP error, bad or unverifiable response.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class OcspOutcome:
    status: OcspStatus
    detail: str = ""
    revoked_at: datetime | None = None
    reason: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None

    @classmethod
    def error(cls, detail: str) -> OcspOutcome:
        return cls(OcspStatus.ERROR, detail)


def responder_url(cert: x509.Certificate) -> str | None:
    """The first OCSP URL of the certificate's AIA extension (what nginx uses), or None."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for description in aia:
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    return None


def _request(cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPRequest:
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, _CERT_ID_HASH).build()


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The DER OCSP request for ``cert`` (SHA-1 CertID, no nonce: nginx sends none)."""
    return _request(cert, issuer).public_bytes(serialization.Encoding.DER)


def _verify_signature(
    key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _signed_by(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    return _verify_signature(
        signer.public_key(), resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm
    )


def _delegated_signer(
    resp: ocsp.OCSPResponse, issuer: x509.Certificate, at: datetime
) -> x509.Certificate | None:
    for candidate in resp.certificates:
        try:
            candidate.verify_directly_issued_by(issuer)
            eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            continue
        if not candidate.not_valid_before_utc <= at <= candidate.not_valid_after_utc:
            continue
        if _signed_by(resp, candidate):
            return candidate
    return None


def evaluate_response(
    der: bytes, *, cert: x509.Certificate, issuer: x509.Certificate, at: datetime
) -> OcspOutcome:
    """Check a responder's DER answer for ``cert`` (issued by ``issuer``) at time ``at``."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        return OcspOutcome.error(f"the responder's answer is not an OCSP response ({exc})")
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspOutcome.error(
            f"the responder answered '{resp.response_status.name.lower()}' instead of a status"
        )
    if not _signed_by(resp, issuer) and _delegated_signer(resp, issuer, at) is None:
        return OcspOutcome.error(
            "the response's signature does not verify with the issuer's key or a delegated "
            "OCSP signing certificate of that issuer"
        )
    wanted = _request(cert, issuer)
    single = next(
        (
            r
            for r in resp.responses
            if r.serial_number == wanted.serial_number
            and r.issuer_key_hash == wanted.issuer_key_hash
            and r.issuer_name_hash == wanted.issuer_name_hash
        ),
        None,
    )
    if single is None:
        return OcspOutcome.error("the response is about another certificate (CertID mismatch)")
    skew = timedelta(seconds=CLOCK_SKEW_S)
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    if this_update > at + skew:
        return OcspOutcome.error(f"the response's thisUpdate {this_update} is in the future")
    if next_update is not None and next_update < at - skew:
        return OcspOutcome.error(f"the response expired (nextUpdate {next_update})")
    if single.certificate_status is ocsp.OCSPCertStatus.GOOD:
        return OcspOutcome(OcspStatus.GOOD, this_update=this_update, next_update=next_update)
    if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        return OcspOutcome(
            OcspStatus.REVOKED,
            revoked_at=single.revocation_time_utc,
            reason=reason.value if reason is not None else None,
            this_update=this_update,
            next_update=next_update,
        )
    return OcspOutcome(OcspStatus.UNKNOWN, this_update=this_update, next_update=next_update)


def _cache_key(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes, int]:
    request = _request(cert, issuer)
    return request.issuer_name_hash, request.issuer_key_hash, request.serial_number


@dataclass
class OcspCache:
    """Answers by CertID until they expire. Mutable by design; one per running gateway."""

    _entries: dict[tuple[bytes, bytes, int], tuple[OcspOutcome, datetime]] = field(
        default_factory=dict
    )

    def get(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime
    ) -> OcspOutcome | None:
        key = _cache_key(cert, issuer)
        entry = self._entries.get(key)
        if entry is None:
            return None
        outcome, expires = entry
        if at >= expires:
            del self._entries[key]
            return None
        return outcome

    def put(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        outcome: OcspOutcome,
        *,
        at: datetime,
    ) -> None:
        """Keep ``outcome`` until its nextUpdate (bounded); errors are never kept."""
        if outcome.status is OcspStatus.ERROR:
            return
        limit = at + timedelta(seconds=MAX_CACHE_S)
        expires = outcome.next_update or at + timedelta(seconds=DEFAULT_CACHE_S)
        self._entries[_cache_key(cert, issuer)] = (outcome, min(expires, limit))
