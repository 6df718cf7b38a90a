"""Client certificate verification as the gateway does it, with the reason in words.

Theory of operation
-------------------
The gateway is nginx on OpenSSL. Its verdict on a client certificate comes in three stages, and
each stage can only fail when the one before it passed:

1. **Chain** (OpenSSL ``X509_verify_cert`` with purpose ``sslclient``): build a path from the
   leaf to a self-signed root of the SSL profile's uploads, using the uploaded certificates and
   whatever the client sent; then check CA flags, path lengths, key usage / EKU (the purpose),
   signatures and validity. nginx's callback keeps going after an error, so the *last* error is
   the one ``$ssl_client_verify`` (the access log's ``sslClientVerify``) reports.
2. **Issuer DN** (``verifyClientCertIssuerDN``): the leaf's issuer must equal the
   ``clientCertIssuerDN`` of an upload (:mod:`emulator.core.tls.issuer_dn`).
3. **OCSP** (``verifyClientRevocation: OCSP``): ask the responder in the leaf's AIA. That needs
   I/O, so this module only says *what* to ask (:class:`OcspQuery`) and turns the answer into
   the final verdict (:func:`apply_ocsp`); ``emulator.runtime`` does the asking.

Where the handshake happened (the listener), stage 1's errors are the real ones OpenSSL gave
the verify callback, and the emulation below only runs to explain a failure in words: a chain
OpenSSL passed is not verified a second time (for OCSP only its path is built, to find the
leaf's issuer). Where it did not (``check-ca --client-cert``), :func:`verify_chain`
reproduces OpenSSL 3's ``verify_chain`` step by step (``crypto/x509/x509_vfy.c``: ``build_chain``,
``check_extensions``, ``internal_verify``), reporting every error as an always-continue callback
would see it. Why not just ``X509StoreContext``: pyOpenSSL's store context stops at the first
error (nginx's callback does not, and logs the last one) and cannot set the ``sslclient``
purpose, without which a server-auth-only certificate would pass. :func:`store_verify` still
runs OpenSSL's own verifier (with the time injected through ``X509Store.set_time``) as a
cross-check of the emulation's trust decision; the unit tests compare the emulation with real
handshakes for every case the acceptance list names.

Everything here is pure: time is a parameter, no I/O, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto

from emulator.arm.certdata import TrustedClientCa
from emulator.cert_facts import is_ca
from emulator.core.tls import verify as v
from emulator.core.tls.dn import openssl_rfc2253
from emulator.core.tls.issuer_dn import client_cert_issuer_dn, issuer_dn_matches
from emulator.core.tls.ocsp import OcspOutcome, OcspStatus, responder_url
from emulator.model import RevocationMode

__all__ = [
    "DEFAULT_VERIFY_DEPTH",
    "NO_AIA_FETCH_NOTE",
    "ChainResult",
    "ClientCertVerdict",
    "OcspQuery",
    "Stage",
    "VerifyProblem",
    "apply_ocsp",
    "assess_client_cert",
    "explain_chain",
    "store_verify",
    "verify_chain",
]

#: OpenSSL's default verify depth (``X509_VERIFY_PARAM`` default 100): the number of
#: intermediates allowed between the leaf and the trust anchor. Azure documents no limit ("as
#: many intermediate CA certificates as you'd like", mutual authentication overview), and the
#: listener context does not set one either, so the emulation uses OpenSSL's.
DEFAULT_VERIFY_DEPTH: Final = 100
#: Said whenever an issuer is missing: nginx never downloads intermediates (AIA "CA Issuers"),
#: unlike browsers; a client that does not send its intermediate fails unless it is uploaded.
NO_AIA_FETCH_NOTE: Final = (
    "the gateway does not download missing intermediates from the certificate's AIA URL"
)


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """One error as OpenSSL's verify callback sees it: error number and chain depth."""

    errno: int
    depth: int

    @property
    def text(self) -> str:
        return v.verify_error_text(self.errno)


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Stage 1's outcome: the path OpenSSL builds and the errors it reports on it, in order."""

    presented: tuple[x509.Certificate, ...]
    #: Leaf first, up to the last certificate found (a root when the chain is complete).
    path: tuple[x509.Certificate, ...]
    #: For each certificate of ``path``: True when it came from the uploads (the trust store).
    from_upload: tuple[bool, ...]
    trusted: bool
    errors: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def result(self) -> str:
        """``SUCCESS`` or ``FAILED:<last error>``, as ``$ssl_client_verify``."""
        return "SUCCESS" if not self.errors else "FAILED:" + self.errors[-1].text

    @property
    def issuer(self) -> x509.Certificate | None:
        """The certificate that issued the leaf on the built path (None when not found)."""
        return self.path[1] if len(self.path) > 1 else None


# --- certificate facts, with OpenSSL's definitions -----------------------------------------------


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        # A malformed extension: OpenSSL marks the certificate invalid; treat as absent here
        # and let the signature / purpose checks fail it.
        return None


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    bc = _ext(cert, x509.BasicConstraints)
    return bc if isinstance(bc, x509.BasicConstraints) else None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    ku = _ext(cert, x509.KeyUsage)
    return ku if isinstance(ku, x509.KeyUsage) else None


def _eku(cert: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...] | None:
    eku = _ext(cert, x509.ExtendedKeyUsage)
    return tuple(eku) if isinstance(eku, x509.ExtendedKeyUsage) else None


def _key_ids_match(issuer: x509.Certificate, subject: x509.Certificate) -> bool:
    aki = _ext(subject, x509.AuthorityKeyIdentifier)
    ski = _ext(issuer, x509.SubjectKeyIdentifier)
    if not isinstance(aki, x509.AuthorityKeyIdentifier) or aki.key_identifier is None:
        return True
    if not isinstance(ski, x509.SubjectKeyIdentifier):
        return True
    return aki.key_identifier == ski.digest


def _may_sign_certificates(cert: x509.Certificate) -> bool:
    ku = _key_usage(cert)
    return ku is None or ku.key_cert_sign


def _likely_issued(issuer: x509.Certificate, subject: x509.Certificate) -> bool:
    """``X509_check_issued``: names, key identifiers and keyCertSign; not the signature."""
    return (
        issuer.subject == subject.issuer
        and _key_ids_match(issuer, subject)
        and _may_sign_certificates(issuer)
    )


def _self_issued(cert: x509.Certificate) -> bool:
    """``X509_self_signed(cert, 0)``: names and key identifiers only; key usage is not asked."""
    return cert.subject == cert.issuer and _key_ids_match(cert, cert)


def _signature_error(issuer: x509.Certificate, subject: x509.Certificate) -> int | None:
    try:
        subject.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return v.CERT_SIGNATURE_FAILURE
    except TypeError:
        return v.UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
    except ValueError:
        # Names or algorithms that do not line up: the signature cannot be the issuer's.
        return v.CERT_SIGNATURE_FAILURE
    return None


def _time_error(cert: x509.Certificate, at: datetime) -> int | None:
    if cert.not_valid_before_utc > at:
        return v.CERT_NOT_YET_VALID
    if cert.not_valid_after_utc < at:
        return v.CERT_HAS_EXPIRED
    return None


def _purpose_ok(cert: x509.Certificate, *, as_ca: bool) -> bool:
    """``check_purpose_ssl_client``: EKU must allow clientAuth; a leaf's key must sign."""
    eku = _eku(cert)
    # OpenSSL's xku_reject only accepts the clientAuth bit: anyExtendedKeyUsage alone fails.
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return False
    if as_ca:
        return is_ca(cert)
    ku = _key_usage(cert)
    return ku is None or ku.digital_signature or ku.key_agreement


def _find_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate], at: datetime
) -> x509.Certificate | None:
    """The first likely issuer, preferring one valid at ``at`` (``X509_STORE_CTX_get1_issuer``)."""
    matches = [c for c in candidates if c != cert and _likely_issued(c, cert)]
    for match in matches:
        if _time_error(match, at) is None:
            return match
    return matches[0] if matches else None


# --- stage 1: the chain ---------------------------------------------------------------------


def _build_path(
    presented: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    at: datetime,
    max_depth: int,
) -> tuple[list[x509.Certificate], list[bool], bool]:
    """OpenSSL's ``build_chain``, trusted-first (the OpenSSL >= 1.1 default).

    Returns the path (leaf first), for each certificate whether it came from the uploads, and
    whether the path hit ``max_depth``. Names and key identifiers only, no signatures: cheap
    enough for the OCSP step, which needs the leaf's issuer even when OpenSSL found no error.
    """
    leaf = presented[0]
    untrusted = [c for c in presented[1:] if c != leaf]
    path = [leaf]
    from_upload = [False]
    too_long = False
    while True:
        top = path[-1]
        if _self_issued(top):
            break
        if len(path) > max_depth + 1:
            too_long = True
            break
        issuer = _find_issuer(top, trusted, at)
        came_from_upload = issuer is not None
        if issuer is None and not any(from_upload):
            issuer = _find_issuer(top, untrusted, at)
        if issuer is None or issuer in path:
            break
        path.append(issuer)
        from_upload.append(came_from_upload)
        if not came_from_upload:
            untrusted.remove(issuer)
    return path, from_upload, too_long


def verify_chain(
    presented: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    at: datetime,
    max_depth: int = DEFAULT_VERIFY_DEPTH,
) -> ChainResult:
    """OpenSSL's verification of ``presented`` (leaf first) against ``trusted`` at ``at``.

    Reports every error an always-continue verify callback would see, in OpenSSL's order.
    """
    if not presented:
        raise ValueError("verify_chain needs at least the leaf certificate")
    path, from_upload, too_long = _build_path(presented, trusted, at=at, max_depth=max_depth)
    errors: list[VerifyProblem] = []
    top = path[-1]
    # A self-signed top is a trust anchor only when it is one of the uploaded certificates.
    is_anchor = _self_issued(top) and top in trusted
    if is_anchor:
        from_upload[-1] = True
    num = len(path)
    if too_long:
        errors.append(VerifyProblem(v.CERT_CHAIN_TOO_LONG, num - 1))
    elif not is_anchor:
        if _self_issued(top):
            err = v.DEPTH_ZERO_SELF_SIGNED_CERT if num == 1 else v.SELF_SIGNED_CERT_IN_CHAIN
        elif any(from_upload):
            err = v.UNABLE_TO_GET_ISSUER_CERT
        else:
            err = v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        errors.append(VerifyProblem(err, num - 1))

    # check_extensions: CA flags, path lengths, purpose (sslclient).
    plen = 0
    for i, cert in enumerate(path):
        if i > 0 and not is_ca(cert):
            errors.append(VerifyProblem(v.INVALID_CA, i))
        # OpenSSL lets auxiliary trust settings of store certificates override the purpose;
        # uploads carry none (a "TRUSTED CERTIFICATE" block is refused), so it always applies.
        if not _purpose_ok(cert, as_ca=i > 0):
            errors.append(VerifyProblem(v.INVALID_PURPOSE, i))
        bc = _basic_constraints(cert)
        if i > 1 and bc is not None and bc.path_length is not None and plen > bc.path_length:
            errors.append(VerifyProblem(v.PATH_LENGTH_EXCEEDED, i))
        if i > 0 and not _self_issued(cert):
            plen += 1

    # internal_verify: signatures and validity, from the top down.
    n = num - 1
    xi = path[n]
    if _self_issued(xi):
        xs = xi
    elif n == 0:
        errors.append(VerifyProblem(v.UNABLE_TO_VERIFY_LEAF_SIGNATURE, 0))
        xs = xi
    else:
        n -= 1
        xs = path[n]
    while n >= 0:
        if xs is not xi:
            sig = _signature_error(xi, xs)
            if sig is not None:
                errors.append(VerifyProblem(sig, n))
        when = _time_error(xs, at)
        if when is not None:
            errors.append(VerifyProblem(when, n))
        n -= 1
        if n >= 0:
            xi, xs = xs, path[n]
    return ChainResult(
        presented=tuple(presented),
        path=tuple(path),
        from_upload=tuple(from_upload),
        trusted=is_anchor and not too_long,
        errors=tuple(errors),
    )


def store_verify(
    presented: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    at: datetime,
) -> VerifyProblem | None:
    """OpenSSL's own verifier (``X509StoreContext``) at ``at``: its first error, or None.

    Without the ``sslclient`` purpose (pyOpenSSL cannot set it) and stopping at the first
    error: a cross-check of :func:`verify_chain`'s trust decision, not the gateway's verdict.
    """
    store = crypto.X509Store()
    for cert in trusted:
        store.add_cert(crypto.X509.from_cryptography(cert))
    store.set_time(at)
    chain = [crypto.X509.from_cryptography(c) for c in presented[1:]]
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(presented[0]), chain)
    try:
        ctx.verify_certificate()
    except crypto.X509StoreContextError as exc:
        code, depth = exc.errors[0], exc.errors[1]
        return VerifyProblem(int(code), int(depth))
    return None


# --- explanations ------------------------------------------------------------------------------


def _dn(name: x509.Name) -> str:
    return openssl_rfc2253(name)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _roots_text(trusted: Sequence[x509.Certificate]) -> str:
    roots = [c for c in trusted if _self_issued(c)]
    if not roots:
        return "no root"
    return ", ".join(f"'{_dn(r.subject)}'" for r in roots)


def _eku_names(eku: Sequence[x509.ObjectIdentifier]) -> str:
    names = []
    for oid in eku:
        name = getattr(oid, "_name", None)
        names.append(name if isinstance(name, str) and name != "Unknown OID" else oid.dotted_string)
    return ", ".join(names) or "empty"


def explain_chain(
    result: ChainResult,
    trusted: Sequence[x509.Certificate],
    *,
    at: datetime,
    problem: VerifyProblem | None = None,
) -> str:
    """The sentence a human needs for stage 1's failure (``""`` when the chain passed).

    ``problem`` is the error to explain; by default the last one, which is what is logged.
    """
    if problem is None:
        if not result.errors:
            return ""
        problem = result.errors[-1]
    path = result.path
    depth = min(problem.depth, len(path) - 1)
    cert = path[depth]
    subject = _dn(cert.subject)
    what = "the client certificate" if depth == 0 else "the CA certificate"
    errno = problem.errno
    if errno in (
        v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        v.UNABLE_TO_GET_ISSUER_CERT,
        v.UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    ):
        top = path[-1]
        issuer = _dn(top.issuer)
        if len(result.presented) == 1 and len(path) == 1:
            head = (
                f"the client sent only its leaf; its issuer '{issuer}' is not in the uploaded "
                "chain; upload that intermediate or ask the client to send it"
            )
        else:
            head = (
                f"the chain stops at '{_dn(top.subject)}': its issuer '{issuer}' is neither in "
                f"the uploaded chain nor among the {len(result.presented)} certificate(s) the "
                "client sent; upload that CA (with its root) or ask the client to send it"
            )
        return (
            f"{head} ({NO_AIA_FETCH_NOTE}); the profile trusts the root(s) {_roots_text(trusted)}"
            ", so a certificate from another CA fails here too"
        )
    if errno == v.DEPTH_ZERO_SELF_SIGNED_CERT:
        return (
            f"the client certificate '{subject}' is self-signed; Strict only accepts "
            f"certificates issued by the uploaded chain (root {_roots_text(trusted)}); issue "
            "the client a certificate from that CA, or upload the CA chain that issued it"
        )
    if errno == v.SELF_SIGNED_CERT_IN_CHAIN:
        return (
            f"the client sent a chain that ends in the self-signed root '{_dn(path[-1].subject)}'"
            f", which is not the uploaded root ({_roots_text(trusted)}); its certificate comes "
            "from a CA this profile does not trust"
        )
    if errno == v.CERT_HAS_EXPIRED:
        return (
            f"{what} '{subject}' expired on {_when(cert.not_valid_after_utc)} (checked at "
            f"{_when(at)}); renew it"
        )
    if errno == v.CERT_NOT_YET_VALID:
        return (
            f"{what} '{subject}' is not valid before {_when(cert.not_valid_before_utc)} "
            f"(checked at {_when(at)}); wait, or check the issuer's and this machine's clocks"
        )
    if errno == v.INVALID_PURPOSE:
        return _explain_purpose(cert, depth)
    if errno == v.INVALID_CA:
        return (
            f"'{subject}' issues a certificate of the chain but is not a CA certificate "
            "(basicConstraints CA:TRUE is missing); it cannot be an intermediate"
        )
    if errno == v.PATH_LENGTH_EXCEEDED:
        bc = _basic_constraints(cert)
        limit = bc.path_length if bc is not None else None
        return (
            f"the CA '{subject}' allows {limit} intermediate(s) below it (pathLenConstraint), "
            "and the chain has more"
        )
    if errno == v.CERT_SIGNATURE_FAILURE and depth + 1 < len(path):
        return (
            f"the signature of '{subject}' does not verify with the key of "
            f"'{_dn(path[depth + 1].subject)}': a CA with the same name but another key issued "
            "it; upload the CA that really issued it"
        )
    if errno == v.CERT_CHAIN_TOO_LONG:
        return f"the chain is longer than OpenSSL's verify depth ({DEFAULT_VERIFY_DEPTH})"
    return f"OpenSSL reported '{problem.text}' for {what} '{subject}' (depth {depth})"


def _explain_purpose(cert: x509.Certificate, depth: int) -> str:
    subject = _dn(cert.subject)
    eku = _eku(cert)
    if depth == 0 and is_ca(cert):
        return (
            f"the client presented a CA certificate ('{subject}') as its own certificate; a CA "
            "certificate's key usage (certificate signing) does not allow TLS client "
            "authentication; the client must present the leaf certificate issued to it"
        )
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        owner = "the client certificate" if depth == 0 else "the CA certificate"
        return (
            f"{owner} '{subject}' has extended key usage {_eku_names(eku)} without clientAuth "
            "(1.3.6.1.5.5.7.3.2); a server certificate cannot be used as a client certificate: "
            "issue one for client authentication"
        )
    return (
        f"the key usage of '{subject}' allows neither digitalSignature nor keyAgreement, so it "
        "cannot authenticate a TLS client"
    )


# --- stages 2 and 3, and the verdict ---------------------------------------------------------


class Stage(enum.Enum):
    """Where a verdict was decided."""

    NO_CERT = "no-certificate"
    CHAIN = "chain"
    ISSUER_DN = "issuer-dn"
    OCSP = "ocsp"
    PASSED = "passed"


@dataclass(frozen=True, slots=True)
class OcspQuery:
    """What stage 3 must ask: the leaf, its issuer on the verified path, the responder URL."""

    certificate: x509.Certificate
    issuer: x509.Certificate
    url: str


@dataclass(frozen=True, slots=True)
class ClientCertVerdict:
    """The Strict verdict on one connection's client certificate."""

    #: ``NONE``, ``SUCCESS`` or ``FAILED:<reason>``: the access log's ``sslClientVerify``.
    ssl_client_verify: str
    #: The emulator-only ``clientCertFailureExplained``; empty when the certificate passed.
    explanation: str
    stage: Stage
    #: Set when stages 1 and 2 passed and OCSP must still answer; the verdict is provisional.
    ocsp: OcspQuery | None = None

    @property
    def passed(self) -> bool:
        return self.ssl_client_verify == "SUCCESS" and self.ocsp is None


NO_CERT_EXPLANATION: Final = (
    "no client certificate was sent; Strict requires one: configure the client with its "
    "certificate and key (curl --cert CERT --key KEY)"
)


def assess_client_cert(
    presented: Sequence[x509.Certificate],
    uploads: Sequence[TrustedClientCa],
    *,
    at: datetime,
    verify_issuer_dn: bool = False,
    revocation: RevocationMode = RevocationMode.NONE,
    openssl_errors: Sequence[tuple[int, int]] | None = None,
) -> ClientCertVerdict:
    """Stages 1 and 2, and what stage 3 needs, for a Strict profile.

    Args:
        presented: what the client sent, leaf first (empty: no certificate).
        uploads: the profile's trusted client CA uploads.
        at: the verification time.
        openssl_errors: the handshake's real verify errors ``(errno, depth)``; when None (no
            handshake, e.g. ``check-ca``) the emulation's errors are used.
    """
    if not presented:
        return ClientCertVerdict("NONE", NO_CERT_EXPLANATION, Stage.NO_CERT)
    trusted = [c for upload in uploads for c in upload.certificates]
    # After a handshake OpenSSL has already verified the chain: the emulation runs only to
    # explain a failure. A chain OpenSSL passed needs, at most, its path (OCSP asks about the
    # leaf's issuer on it), and building that checks no signature.
    result: ChainResult | None = None
    if openssl_errors is None:
        result = verify_chain(presented, trusted, at=at)
        errors = result.errors
    else:
        errors = tuple(VerifyProblem(e, d) for e, d in openssl_errors)
    if errors:
        last = errors[-1]
        if result is None:
            result = verify_chain(presented, trusted, at=at)
        return ClientCertVerdict(
            "FAILED:" + last.text,
            explain_chain(result, trusted, at=at, problem=last),
            Stage.CHAIN,
        )
    leaf = presented[0]
    if verify_issuer_dn:
        expected = [client_cert_issuer_dn(upload.certificates) for upload in uploads]
        if not any(issuer_dn_matches(leaf.issuer, name) for name in expected):
            wanted = ", ".join(f"'{_dn(name)}'" for name in expected)
            return ClientCertVerdict(
                "FAILED:" + v.ISSUER_DN_MISMATCH_TEXT,
                f"the chain verifies, but the client certificate's issuer '{_dn(leaf.issuer)}' "
                f"is not the issuer DN the gateway takes from the upload ({wanted}: the lowest "
                "CA of each uploaded chain); with verifyClientCertIssuerDN only certificates "
                "issued directly by that CA pass: upload a chain that ends at the certificate's "
                "issuer, or turn verifyClientCertIssuerDN off",
                Stage.ISSUER_DN,
            )
    if revocation is RevocationMode.OCSP:
        url = responder_url(leaf)
        if result is not None:
            issuer = result.issuer
        else:
            path, _, _ = _build_path(presented, trusted, at=at, max_depth=DEFAULT_VERIFY_DEPTH)
            issuer = path[1] if len(path) > 1 else None
        if url is None or issuer is None:
            return ClientCertVerdict(
                "FAILED:" + v.OCSP_FAILED_TEXT,
                "the client certificate names no OCSP responder (no OCSP URL in its Authority "
                "Information Access extension); with verifyClientRevocation OCSP the gateway "
                "cannot check it and rejects it (fail closed); issue certificates with an OCSP "
                "URL or set verifyClientRevocation to None",
                Stage.OCSP,
            )
        return ClientCertVerdict("SUCCESS", "", Stage.OCSP, OcspQuery(leaf, issuer, url))
    return ClientCertVerdict("SUCCESS", "", Stage.PASSED)


def apply_ocsp(verdict: ClientCertVerdict, outcome: OcspOutcome) -> ClientCertVerdict:
    """Stage 3: the final verdict once the responder (or the cache) answered."""
    query = verdict.ocsp
    if query is None:
        return verdict
    serial = format(query.certificate.serial_number, "X")
    if outcome.status is OcspStatus.GOOD:
        return ClientCertVerdict("SUCCESS", "", Stage.PASSED)
    if outcome.status is OcspStatus.REVOKED:
        when = f" on {_when(outcome.revoked_at)}" if outcome.revoked_at is not None else ""
        reason = f" (reason: {outcome.reason})" if outcome.reason else ""
        return ClientCertVerdict(
            "FAILED:" + v.verify_error_text(v.CERT_REVOKED),
            f"the OCSP responder {query.url} says the client certificate (serial {serial}) was "
            f"revoked{when}{reason}; the client needs a new certificate",
            Stage.OCSP,
        )
    if outcome.status is OcspStatus.UNKNOWN:
        detail = (
            f"the OCSP responder {query.url} does not know the client certificate (serial "
            f"{serial}, status 'unknown')"
        )
    else:
        detail = f"the OCSP check against {query.url} failed: {outcome.detail}"
    return ClientCertVerdict(
        "FAILED:" + v.OCSP_FAILED_TEXT,
        detail + "; with verifyClientRevocation OCSP the gateway rejects the certificate when "
        "it gets no 'good' answer (fail closed)",
        Stage.OCSP,
    )
