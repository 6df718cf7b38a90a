"""``appgw-emulator check-ca``: is this the file to upload as an SSL profile's trusted client CA?

A customer sends "their certificate" and the question is always the same (the seed Q&A): the
SSL profile needs the CA chain that issued the client certificates — root plus intermediates,
public certificates only — not the client's PFX or key, and not the gateway's own server
certificate. This module looks at what was sent (PEM, DER/.cer, a bundle, or by mistake a PFX,
a private key or a leaf), lists each certificate in it, applies the upload rules and error codes
of ``validate`` (:func:`emulator.arm.certdata.load_trusted_client_ca`), and says what to ask for
instead. With a client certificate it also says whether that client would pass Strict, using the
same verification as the listener (:mod:`emulator.core.chain`).

Pure: bytes and a time in, a :class:`CheckReport` out; rendering as text or JSON.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from emulator.arm.certdata import (
    MAX_TRUSTED_CLIENT_CERT_BYTES,
    TrustedClientCa,
    load_trusted_client_ca,
)
from emulator.arm.pkcs12_bounds import Pkcs12TooCostly, load_pkcs12
from emulator.core.chain import Stage, assess_client_cert, is_ca
from emulator.core.dn import dotnet_dn, openssl_rfc2253
from emulator.core.issuer_dn import client_cert_issuer_dn, issuer_dn_matches
from emulator.core.ocsp import responder_url
from emulator.errors import CertificateError

__all__ = [
    "ASK_FOR_CHAIN",
    "CertFacts",
    "CheckReport",
    "ClientCheck",
    "OpenedPfx",
    "check_ca",
    "load_certificates",
    "open_pfx",
    "render_text",
    "report_json",
]

#: The answer to "which file do I ask my customer for?" (the seed Q&A, in our words).
ASK_FOR_CHAIN: Final = (
    "ask the customer for the CA chain that issued their client certificate: the root CA and "
    "any intermediate CAs, public certificates only (PEM or .cer) - not their PFX or private "
    "key, and not our server certificate"
)
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CertFacts:
    """One certificate of the file, as a human needs to see it."""

    subject: str
    issuer: str
    role: str
    is_ca: bool
    self_signed: bool
    not_before: str
    not_after: str
    validity: str
    sha1_fingerprint: str
    server_auth_only: bool

    @classmethod
    def of(cls, cert: x509.Certificate, *, at: datetime) -> CertFacts:
        ca = is_ca(cert)
        self_signed = cert.issuer == cert.subject
        role = "root CA" if ca and self_signed else "intermediate CA" if ca else "leaf"
        if cert.not_valid_before_utc > at:
            validity = "not yet valid"
        elif cert.not_valid_after_utc < at:
            validity = "expired"
        else:
            validity = "valid"
        return cls(
            subject=openssl_rfc2253(cert.subject),
            issuer=openssl_rfc2253(cert.issuer),
            role=role,
            is_ca=ca,
            self_signed=self_signed,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            validity=validity,
            sha1_fingerprint=hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest(),
            server_auth_only=_server_auth_only(cert),
        )


@dataclass(frozen=True, slots=True)
class ClientCheck:
    """Would this client certificate pass Strict with this upload?"""

    subject: str
    passes: bool
    ssl_client_verify: str
    explanation: str
    #: With verifyClientCertIssuerDN on: would the issuer match? (None: upload unusable)
    issuer_dn_matches: bool | None
    ocsp_url: str | None


@dataclass(frozen=True, slots=True)
class CheckReport:
    file: str
    size: int
    kind: str
    certificates: tuple[CertFacts, ...]
    valid: bool
    code: str | None
    message: str | None
    advice: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    client_cert_issuer_dn: str | None = None
    client: ClientCheck | None = None

    @property
    def exit_code(self) -> int:
        """0 when the upload is valid (and the client, when given, would pass), else 1."""
        if not self.valid:
            return 1
        return 0 if self.client is None or self.client.passes else 1


def _server_auth_only(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH not in eku


@dataclass(frozen=True, slots=True)
class OpenedPfx:
    """A PFX opened with its password, once: what :func:`check_ca` and the dashboard report.

    ``message`` says why it did not open (wrong password, or too costly to try). The key is
    never kept, only whether there was one.
    """

    opened: bool
    has_key: bool = False
    certificates: tuple[x509.Certificate, ...] = ()
    message: str = ""


def open_pfx(data: bytes, password: str) -> OpenedPfx:
    """Open ``data`` with ``password`` (bounded: :func:`load_pkcs12`)."""
    try:
        key, cert, extra = load_pkcs12(data, password.encode("utf-8"))
    except Pkcs12TooCostly as exc:
        return OpenedPfx(opened=False, message=f"{exc}: it was not opened")
    except ValueError:
        return OpenedPfx(opened=False, message="the password does not open this PFX")
    certs = tuple(c for c in (cert, *extra) if c is not None)
    return OpenedPfx(opened=True, has_key=key is not None, certificates=certs)


def load_certificates(
    data: bytes, *, pfx: OpenedPfx | None = None
) -> tuple[str, list[x509.Certificate]]:
    """What a file holds: its kind (``pem``, ``der``, ``pfx``, ``binary``, ``empty``, ``text``)
    and every certificate that can be read without a password.

    ``pfx``: the file already opened with its password (the dashboard's inspector), so it is
    not opened a second time; it reads as ``binary``, a PFX that needs a password.
    """
    if not data.strip():
        return "empty", []
    blocks = _PEM_BLOCK.findall(data)
    if blocks:
        certs = []
        for label, body in blocks:
            if label == b"CERTIFICATE":
                pem = b"-----BEGIN CERTIFICATE-----" + body + b"-----END CERTIFICATE-----"
                try:
                    certs.append(x509.load_pem_x509_certificate(pem))
                except ValueError:
                    continue
        return "pem", certs
    try:
        return "der", [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    if pfx is not None:
        return "binary", []
    try:
        _key, cert, extra = load_pkcs12(data, None)
    except (ValueError, Pkcs12TooCostly):
        # A password-protected PFX cannot be opened here; DER of any kind starts with 0x30.
        return ("binary" if data[:1] == b"\x30" else "text"), []
    return "pfx", [c for c in (cert, *extra) if c is not None]


def _advice(
    error: CertificateError, kind: str, certs: Sequence[x509.Certificate], size: int
) -> str:
    code = error.error_code
    names = ", ".join(f"'{openssl_rfc2253(c.subject)}'" for c in certs)
    if kind in ("pfx", "binary") or (kind == "pem" and code.endswith("MustNotHavePrivateKey")):
        what = (
            "a PFX/PKCS#12 file (it bundles a private key)"
            if kind in ("pfx", "binary")
            else "a private key"
        )
        return (
            f"this is {what}: never upload it, and a private key that left its owner should be "
            f"treated as exposed; {ASK_FOR_CHAIN}"
        )
    if code.endswith("DoesNotContainAnyCACertificate"):
        leaf = certs[0] if certs else None
        server = (
            " It looks like a server certificate (serverAuth only): the SSL profile needs the "
            "clients' CA chain, not the listener's certificate."
            if leaf is not None and _server_auth_only(leaf)
            else ""
        )
        issuer = f" Its issuer is '{openssl_rfc2253(leaf.issuer)}'." if leaf is not None else ""
        return (
            f"this holds only leaf certificate(s) ({names}): a certificate issued *to* someone, "
            f"not the CA that issued it.{server}{issuer} {ASK_FOR_CHAIN}"
        )
    if code.endswith("OnlyOneRootCAAllowedInTrustedClientCertificate"):
        roots = [c for c in certs if is_ca(c) and c.issuer == c.subject]
        if roots:
            listed = ", ".join(f"'{openssl_rfc2253(r.subject)}'" for r in roots)
            return (
                f"this holds {len(roots)} root CAs ({listed}): upload each chain as its own "
                "trusted client certificate entry (one root per file, with that root's "
                "intermediates)"
            )
        tops = [c for c in certs if is_ca(c)]
        missing = ", ".join(sorted({f"'{openssl_rfc2253(c.issuer)}'" for c in tops}))
        return (
            f"this holds intermediate CA(s) only ({names}) and no root: add the root CA "
            f"{missing} to the same file; {ASK_FOR_CHAIN}"
        )
    if code.endswith("MustSpecifyData"):
        return f"the file is empty; {ASK_FOR_CHAIN}"
    if size > MAX_TRUSTED_CLIENT_CERT_BYTES:
        return (
            f"the file is {size} bytes and holds {len(certs)} certificate(s); Azure takes at most "
            f"{MAX_TRUSTED_CLIENT_CERT_BYTES} bytes per entry: keep only the chain that issued "
            "the client certificates (root + intermediates) and put other chains in separate "
            "entries"
        )
    return f"{error.fix or 'upload the PEM (or .cer) of the CA chain'}; {ASK_FOR_CHAIN}"


def _notes(upload: TrustedClientCa, certs: Sequence[x509.Certificate], at: datetime) -> list[str]:
    notes = []
    leaves = [c for c in certs if not is_ca(c)]
    if leaves:
        listed = ", ".join(f"'{openssl_rfc2253(c.subject)}'" for c in leaves)
        notes.append(f"leaf certificate(s) {listed} beside the CAs are ignored by Azure")
    for ca in upload.certificates:
        if ca.not_valid_after_utc < at:
            notes.append(
                f"CA '{openssl_rfc2253(ca.subject)}' expired on {ca.not_valid_after_utc:%Y-%m-%d}"
                ": every client chain through it fails"
            )
        if ca.issuer != ca.subject and not any(
            other.subject == ca.issuer for other in upload.certificates
        ):
            notes.append(
                f"intermediate '{openssl_rfc2253(ca.subject)}' is not issued by a CA of the file "
                f"(its issuer is '{openssl_rfc2253(ca.issuer)}'): it does not chain to the root"
            )
    return notes


def _client_check(
    upload: TrustedClientCa,
    client_cert: bytes,
    client_chain: bytes | None,
    *,
    at: datetime,
) -> ClientCheck:
    _kind, sent = load_certificates(client_cert)
    if not sent:
        return ClientCheck(
            subject="",
            passes=False,
            ssl_client_verify="NONE",
            explanation="the client certificate file holds no readable certificate",
            issuer_dn_matches=None,
            ocsp_url=None,
        )
    extra = load_certificates(client_chain)[1] if client_chain else []
    presented = list(dict.fromkeys([*sent, *extra]))
    verdict = assess_client_cert(presented, (upload,), at=at)
    leaf = presented[0]
    expected = client_cert_issuer_dn(upload.certificates)
    return ClientCheck(
        subject=openssl_rfc2253(leaf.subject),
        passes=verdict.stage is Stage.PASSED,
        ssl_client_verify=verdict.ssl_client_verify,
        explanation=verdict.explanation,
        issuer_dn_matches=issuer_dn_matches(leaf.issuer, expected),
        ocsp_url=responder_url(leaf),
    )


def check_ca(
    data: bytes,
    *,
    name: str,
    at: datetime,
    client_cert: bytes | None = None,
    client_chain: bytes | None = None,
    pfx: OpenedPfx | None = None,
) -> CheckReport:
    """Inspect a would-be trusted client CA upload (and optionally a client certificate).

    ``pfx``: see :func:`load_certificates`.
    """
    kind, certs = load_certificates(data, pfx=pfx)
    if kind == "pem" and b"PRIVATE KEY-----" in data:
        kind = "pem-with-private-key"
    facts = tuple(CertFacts.of(c, at=at) for c in certs)
    try:
        upload = load_trusted_client_ca(name, data)
    except CertificateError as exc:
        return CheckReport(
            file=name,
            size=len(data),
            kind=kind,
            certificates=facts,
            valid=False,
            code=exc.error_code,
            message=exc.message,
            advice=_advice(
                exc, "pem" if kind == "pem-with-private-key" else kind, certs, len(data)
            ),
        )
    issuer_dn = client_cert_issuer_dn(upload.certificates)
    client = (
        _client_check(upload, client_cert, client_chain, at=at) if client_cert is not None else None
    )
    return CheckReport(
        file=name,
        size=len(data),
        kind=kind,
        certificates=facts,
        valid=True,
        code=None,
        message=None,
        advice="this is the right kind of file: upload it as the SSL profile's trusted client "
        "certificate (base64 of the file in trustedClientCertificates[].properties.data)",
        notes=tuple(_notes(upload, certs, at)),
        client_cert_issuer_dn=dotnet_dn(issuer_dn),
        client=client,
    )


def report_json(report: CheckReport) -> dict[str, Any]:
    """Plain data for ``--output json``."""
    client = report.client
    return {
        "file": report.file,
        "size": report.size,
        "kind": report.kind,
        "valid": report.valid,
        "code": report.code,
        "message": report.message,
        "advice": report.advice,
        "notes": list(report.notes),
        "clientCertIssuerDN": report.client_cert_issuer_dn,
        "certificates": [
            {
                "subject": c.subject,
                "issuer": c.issuer,
                "role": c.role,
                "isCA": c.is_ca,
                "selfSigned": c.self_signed,
                "notBefore": c.not_before,
                "notAfter": c.not_after,
                "validity": c.validity,
                "sha1Fingerprint": c.sha1_fingerprint,
            }
            for c in report.certificates
        ],
        "client": None
        if client is None
        else {
            "subject": client.subject,
            "passesStrict": client.passes,
            "sslClientVerify": client.ssl_client_verify,
            "explanation": client.explanation,
            "issuerDnMatches": client.issuer_dn_matches,
            "ocspUrl": client.ocsp_url,
        },
        "exitCode": report.exit_code,
    }


def render_text(report: CheckReport) -> str:
    """The human-readable report."""
    lines = [f"{report.file}: {report.size} bytes, {report.kind}"]
    if not report.certificates:
        lines.append("  no readable certificate")
    for index, cert in enumerate(report.certificates, 1):
        flags = [cert.role, cert.validity]
        if cert.self_signed:
            flags.append("self-signed")
        if cert.server_auth_only:
            flags.append("server certificate (serverAuth only)")
        lines.append(f"  [{index}] {cert.subject}")
        lines.append(f"      issuer: {cert.issuer}")
        lines.append(f"      {', '.join(flags)}; {cert.not_before} .. {cert.not_after}")
    if report.valid:
        lines.append("VALID trusted client CA upload")
        lines.append(f"  clientCertIssuerDN: {report.client_cert_issuer_dn}")
    else:
        lines.append(f"NOT VALID: {report.message} [{report.code}]")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append(f"advice: {report.advice}")
    client = report.client
    if client is not None:
        verdict = "PASSES" if client.passes else "FAILS"
        lines.append(f"client {client.subject or '(unreadable)'}: {verdict} Strict")
        lines.append(f"  sslClientVerify: {client.ssl_client_verify}")
        if client.explanation:
            lines.append(f"  why: {client.explanation}")
        if client.issuer_dn_matches is not None:
            state = "passes" if client.issuer_dn_matches else "would fail"
            lines.append(f"  with verifyClientCertIssuerDN: {state}")
        lines.append(
            f"  with verifyClientRevocation OCSP: the gateway asks {client.ocsp_url}"
            if client.ocsp_url
            else "  with verifyClientRevocation OCSP: would fail (no OCSP URL in the certificate)"
        )
    return "\n".join(lines)
