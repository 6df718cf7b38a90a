"""``appgw-emulator check-ca``: is this the file to upload as an SSL profile's trusted client CA?

A customer sends "their certificate" and the question is always the same (the seed Q&A): the
SSL profile needs the CA chain that issued the client certificates — root plus intermediates,
public certificates only — not the client's PFX or key, and not the gateway's own server
certificate. This module looks at what was sent (PEM, DER/.cer, a bundle, a PKCS#7 .p7b/.p7c in
PEM or DER, a PFX with or without a key, the base64 text ``certs init`` writes, or by mistake a
private key or a leaf), lists each certificate in it, applies the upload rules and error codes
of ``validate`` (:func:`emulator.arm.certdata.load_trusted_client_ca`), and says what to ask for
instead. A bundle or PFX is not an upload, but the CA certificates inside get their own verdict;
a private key is reported only when one was seen. With a client certificate (PEM, DER or PFX) it
also says whether that client would pass Strict, using the same verification as the listener
(:mod:`emulator.core.tls.chain`), and whether a failure means "not issued by the uploaded chain" or
"an intermediate is missing". Every PFX is opened through the iteration cap
(:mod:`emulator.arm.pkcs12_bounds`).

Pure: bytes and a time in, a :class:`CheckReport` out; rendering as text or JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from emulator.arm.certdata import (
    MAX_TRUSTED_CLIENT_CERT_BYTES,
    TrustedClientCa,
    load_trusted_client_ca,
)
from emulator.arm.pkcs12_bounds import Pkcs12TooCostly, load_pkcs12
from emulator.cert_facts import is_ca
from emulator.core.tls.chain import Stage, assess_client_cert, verify_chain
from emulator.core.tls.dn import dotnet_dn, openssl_rfc2253
from emulator.core.tls.issuer_dn import client_cert_issuer_dn, issuer_dn_matches
from emulator.core.tls.ocsp import responder_url
from emulator.errors import CertificateError

__all__ = [
    "ASK_FOR_CHAIN",
    "ISSUER_MISSING",
    "KIND_TEXT",
    "NOT_ISSUED_BY_UPLOAD",
    "CertFacts",
    "CheckReport",
    "ClientCheck",
    "OpenedPfx",
    "ReadFile",
    "check_ca",
    "load_certificates",
    "looks_like_pfx",
    "open_pfx",
    "read_customer_file",
    "render_text",
    "report_json",
]

#: The answer to "which file do I ask my customer for?" (the seed Q&A, in our words).
ASK_FOR_CHAIN: Final = (
    "Ask the customer for the CA chain that issued their client certificate: the root CA and "
    "any intermediate CAs, public certificates only (PEM or .cer), not their PFX or private "
    "key, and not our server certificate."
)
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
#: Base64 text (what ``certs init`` writes as ``*.b64``, the template's ``data`` value): only
#: the base64 alphabet and whitespace.
_BASE64_TEXT: Final = re.compile(rb"^[A-Za-z0-9+/=\s]+$")

#: What ``kind`` names: how the file was read.
KIND_TEXT: Final = {
    "pem": "PEM certificate(s)",
    "pem-with-private-key": "PEM with a private key",
    "der": "a DER (.cer) certificate",
    "pem-pkcs7": "a PEM PKCS#7 bundle (.p7b/.p7c)",
    "der-pkcs7": "a DER PKCS#7 bundle (.p7b/.p7c)",
    "pfx": "a PFX/PKCS#12 file",
    "pfx-locked": "a PFX/PKCS#12 file that was not opened",
    "base64": "base64 text of a certificate file",
    "binary": "a binary file that is no certificate",
    "text": "text without a certificate",
    "empty": "an empty file",
}
#: Client diagnoses that differ in what to do.
NOT_ISSUED_BY_UPLOAD: Final = "not-issued-by-upload"
ISSUER_MISSING: Final = "issuer-missing"


def _sentence(text: str) -> str:
    """Messages start with a capital and end with a full stop (they are shown as sentences)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _dn(name: x509.Name) -> str:
    """The one DN format of the messages: OpenSSL's RFC 2253, as the gateway's variables show
    it. (``clientCertIssuerDN`` alone keeps Azure's .NET style: it is that property's value.)"""
    return openssl_rfc2253(name)


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
            subject=_dn(cert.subject),
            issuer=_dn(cert.issuer),
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
    #: :data:`NOT_ISSUED_BY_UPLOAD`, :data:`ISSUER_MISSING`, or None (passed, or another
    #: failure): the two chain failures a user fixes differently.
    diagnosis: str | None = None


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
    #: Whether the file holds a private key: known for PEM, PKCS#7 and an opened PFX; None for
    #: a PFX that was not opened (no or a wrong password), which is never claimed either way.
    has_private_key: bool | None = False
    #: For a PKCS#7 bundle, a PFX or base64 text: the verdict on the CA certificates inside.
    contents: CheckReport | None = None

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


def open_pfx(data: bytes, password: str | None) -> OpenedPfx:
    """Open ``data`` with ``password`` (None: without one), at a bounded cost
    (:func:`emulator.arm.pkcs12_bounds.load_pkcs12`, the iteration cap)."""
    try:
        key, cert, extra = load_pkcs12(data, password.encode("utf-8") if password else None)
    except Pkcs12TooCostly as exc:
        return OpenedPfx(opened=False, message=_sentence(f"{exc}: it was not opened"))
    except ValueError:
        message = (
            "The password does not open this PFX."
            if password
            else "This PFX needs a password: give it with --password (the dashboard has a "
            "password field) to see what it holds."
        )
        return OpenedPfx(opened=False, message=message)
    certs = tuple(c for c in (cert, *extra) if c is not None)
    return OpenedPfx(opened=True, has_key=key is not None, certificates=certs)


@dataclass(frozen=True, slots=True)
class ReadFile:
    """What a customer's file holds, however it came (PEM, DER, PKCS#7, PFX, base64 text)."""

    kind: str
    certificates: tuple[x509.Certificate, ...] = ()
    #: See :attr:`CheckReport.has_private_key`.
    has_private_key: bool | None = False
    #: Base64 text: the decoded bytes, on which the verdict is given.
    decoded: bytes | None = None
    #: Why a PFX was not opened.
    message: str = ""

    @property
    def is_container(self) -> bool:
        """A PKCS#7 bundle or a PFX: not an upload, but certificates can be taken out of it."""
        return self.kind in ("pem-pkcs7", "der-pkcs7", "pfx")


def looks_like_pfx(data: bytes) -> bool:
    """A DER SEQUENCE opening with INTEGER 3 (RFC 7292 section 4, ``PFX ::= SEQUENCE {
    version INTEGER {v3(3)}, ...}``): tells a PFX from other DER before any password is tried."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _read_pem(data: bytes) -> ReadFile:
    certs: list[x509.Certificate] = []
    pkcs7_seen = False
    for label, body in _PEM_BLOCK.findall(data):
        block = b"-----BEGIN " + label + b"-----" + body + b"-----END " + label + b"-----"
        try:
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(block))
            elif label == b"PKCS7":
                certs.extend(pkcs7.load_pem_pkcs7_certificates(block))
                pkcs7_seen = True
        except (ValueError, UnsupportedAlgorithm):  # UnsupportedAlgorithm: not signed-data
            continue
    has_key = b"PRIVATE KEY-----" in data
    kind = "pem-with-private-key" if has_key else "pem-pkcs7" if pkcs7_seen else "pem"
    return ReadFile(kind, tuple(certs), has_private_key=has_key)


def read_customer_file(
    data: bytes, *, password: str | None = None, pfx: OpenedPfx | None = None, _depth: int = 0
) -> ReadFile:
    """Read ``data`` the ways customers send certificates, without trusting any of them.

    A PFX is opened once, through the iteration cap (:func:`open_pfx`); ``pfx`` is one already
    opened (the dashboard opens it off the event loop before this runs, so never twice).
    """
    if not data.strip():
        return ReadFile("empty")
    if _PEM_BLOCK.search(data):
        return _read_pem(data)
    try:
        return ReadFile("der", (x509.load_der_x509_certificate(data),))
    except ValueError:
        pass
    if looks_like_pfx(data):
        opened = pfx if pfx is not None else open_pfx(data, password)
        if not opened.opened:
            return ReadFile("pfx-locked", has_private_key=None, message=opened.message)
        return ReadFile("pfx", opened.certificates, has_private_key=opened.has_key)
    if data[:1] == b"\x30":
        try:
            return ReadFile("der-pkcs7", tuple(pkcs7.load_der_pkcs7_certificates(data)))
        except (ValueError, UnsupportedAlgorithm):
            return ReadFile("binary")
    if _depth == 0 and _BASE64_TEXT.match(data):
        try:
            decoded = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            return ReadFile("text")
        inner = read_customer_file(decoded, password=password, _depth=1)
        if inner.certificates or inner.kind == "pfx-locked":
            return ReadFile(
                "base64",
                inner.certificates,
                has_private_key=inner.has_private_key,
                decoded=decoded,
                message=inner.message,
            )
    return ReadFile("text")


def load_certificates(
    data: bytes, *, pfx: OpenedPfx | None = None, password: str | None = None
) -> tuple[str, list[x509.Certificate]]:
    """The kind of ``data`` (see :data:`KIND_TEXT`) and every certificate it holds."""
    read = read_customer_file(data, password=password, pfx=pfx)
    return read.kind, list(read.certificates)


def _container_advice(read: ReadFile, name: str) -> str:
    if read.kind in ("pem-pkcs7", "der-pkcs7"):
        form = "" if read.kind == "pem-pkcs7" else " -inform DER"
        return (
            "This is a PKCS#7 bundle (.p7b/.p7c), which holds certificates only (no private "
            "key); Azure takes the chain as PEM or .cer. Convert it with `openssl pkcs7"
            f"{form} -print_certs -in {name} -out chain.cer` and upload chain.cer; the "
            "verdict on the certificates inside is below."
        )
    if read.has_private_key:
        return (
            "This is a PFX/PKCS#12 file that bundles a private key: never upload it, and "
            "treat a private key that left its owner as exposed. The verdict on the CA "
            f"certificates inside is below. {ASK_FOR_CHAIN}"
        )
    return (
        "This is a PFX/PKCS#12 file with certificates only (no private key); Azure takes the "
        f"chain as PEM or .cer. Export it with `openssl pkcs12 -in {name} -nokeys -out "
        "chain.cer` and upload chain.cer; the verdict on the certificates inside is below."
    )


def _advice(
    error: CertificateError, read: ReadFile, certs: Sequence[x509.Certificate], size: int
) -> str:
    code = error.error_code
    names = ", ".join(f"'{_dn(c.subject)}'" for c in certs)
    if read.kind == "pfx-locked":
        return (
            f"This looks like a PFX/PKCS#12 file, which is never uploaded; it was not opened "
            f"({read.message.rstrip('.')}), so whether it holds a private key is not known. "
            f"{ASK_FOR_CHAIN}"
        )
    if read.kind == "binary":
        return f"This is a binary file, neither a certificate nor a PFX. {ASK_FOR_CHAIN}"
    if code.endswith("MustNotHavePrivateKey"):
        return (
            "This file holds a private key: never upload it, and treat a private key that "
            f"left its owner as exposed. {ASK_FOR_CHAIN}"
        )
    if code.endswith("DoesNotContainAnyCACertificate"):
        leaf = certs[0] if certs else None
        server = (
            " It looks like a server certificate (serverAuth only): the SSL profile needs the "
            "clients' CA chain, not the listener's certificate."
            if leaf is not None and _server_auth_only(leaf)
            else ""
        )
        issuer = f" Its issuer is '{_dn(leaf.issuer)}'." if leaf is not None else ""
        return (
            f"This holds only leaf certificate(s) ({names}): a certificate issued to someone, "
            f"not the CA that issued it.{server}{issuer} {ASK_FOR_CHAIN}"
        )
    if code.endswith("OnlyOneRootCAAllowedInTrustedClientCertificate"):
        roots = [c for c in certs if is_ca(c) and c.issuer == c.subject]
        if roots:
            listed = ", ".join(f"'{_dn(r.subject)}'" for r in roots)
            return (
                f"This holds {len(roots)} root CAs ({listed}): upload each chain as its own "
                "trusted client certificate entry (one root per file, with that root's "
                "intermediates)."
            )
        tops = [c for c in certs if is_ca(c)]
        missing = ", ".join(sorted({f"'{_dn(c.issuer)}'" for c in tops}))
        return (
            f"This holds intermediate CA(s) only ({names}) and no root: add the root CA "
            f"{missing} to the same file. {ASK_FOR_CHAIN}"
        )
    if code.endswith("MustSpecifyData"):
        return f"The file is empty. {ASK_FOR_CHAIN}"
    if size > MAX_TRUSTED_CLIENT_CERT_BYTES:
        return (
            f"The file is {size} bytes and holds {len(certs)} certificate(s); Azure takes at most "
            f"{MAX_TRUSTED_CLIENT_CERT_BYTES} bytes per entry: keep only the chain that issued "
            "the client certificates (root + intermediates) and put other chains in separate "
            "entries."
        )
    return f"{_sentence(error.fix or 'upload the PEM (or .cer) of the CA chain')} {ASK_FOR_CHAIN}"


def _notes(upload: TrustedClientCa, certs: Sequence[x509.Certificate], at: datetime) -> list[str]:
    notes = []
    leaves = [c for c in certs if not is_ca(c)]
    if leaves:
        listed = ", ".join(f"'{_dn(c.subject)}'" for c in leaves)
        notes.append(f"Leaf certificate(s) {listed} beside the CAs are ignored by Azure.")
    for ca in upload.certificates:
        if ca.not_valid_after_utc < at:
            notes.append(
                f"CA '{_dn(ca.subject)}' expired on {ca.not_valid_after_utc:%Y-%m-%d}: every "
                "client chain through it fails."
            )
        if ca.issuer != ca.subject and not any(
            other.subject == ca.issuer for other in upload.certificates
        ):
            notes.append(
                f"Intermediate '{_dn(ca.subject)}' is not issued by a CA of the file (its "
                f"issuer is '{_dn(ca.issuer)}'): it does not chain to the root."
            )
    return notes


def _diagnose(
    presented: Sequence[x509.Certificate], upload: TrustedClientCa, *, at: datetime
) -> tuple[str | None, str]:
    """Tell "not issued by the uploaded chain" from "an intermediate is missing" where the
    certificates show which it is, and say plainly when they cannot (a leaf alone whose issuer
    is nowhere: only that issuer's certificate would tell)."""
    trusted = list(upload.certificates)
    roots = ", ".join(f"'{_dn(c.subject)}'" for c in trusted if c.issuer == c.subject)
    result = verify_chain(presented, trusted, at=at)
    if result.ok:
        return None, ""
    top = result.path[-1]
    top_is_root = top.issuer == top.subject
    if top_is_root and not result.from_upload[-1]:
        return NOT_ISSUED_BY_UPLOAD, (
            f"Not issued by the uploaded chain: the certificate chains to the root "
            f"'{_dn(top.subject)}', and the upload's root is {roots}. Issue the client a "
            "certificate from the uploaded CA, or upload the CA chain that issued this one."
        )
    if not top_is_root and not any(c.subject == top.issuer for c in (*trusted, *presented)):
        return ISSUER_MISSING, (
            f"The issuer '{_dn(top.issuer)}' of '{_dn(top.subject)}' is neither in the upload "
            "nor sent by the client. If it is an intermediate CA under the uploaded root "
            f"{roots}, an intermediate is missing: add it to the upload or have the client "
            "send it (check with --client-chain; the gateway does not download intermediates "
            "from the AIA URL). If it is not, the certificate is not issued by the uploaded "
            "chain: ask for the chain that issued it."
        )
    return None, ""


def _client_check(
    upload: TrustedClientCa,
    client_cert: bytes,
    client_chain: bytes | None,
    *,
    at: datetime,
    password: str | None,
) -> ClientCheck:
    read = read_customer_file(client_cert, password=password)
    if not read.certificates:
        why = (
            f"The client certificate file is a PFX that was not opened: {read.message}"
            if read.kind == "pfx-locked"
            else "The client certificate file holds no readable certificate."
        )
        return ClientCheck(
            subject="",
            passes=False,
            ssl_client_verify="NONE",
            explanation=why,
            issuer_dn_matches=None,
            ocsp_url=None,
        )
    sent = list(read.certificates)
    # A PFX (or a bundle) is what the client sends: its leaf first, then its chain.
    leaves = [c for c in sent if not is_ca(c)]
    if leaves:
        sent = [leaves[0], *[c for c in sent if c is not leaves[0]]]
    extra = list(read_customer_file(client_chain).certificates) if client_chain else []
    presented = list(dict.fromkeys([*sent, *extra]))
    verdict = assess_client_cert(presented, (upload,), at=at)
    leaf = presented[0]
    expected = client_cert_issuer_dn(upload.certificates)
    diagnosis, diagnosed = (None, "")
    if verdict.stage is not Stage.PASSED:
        diagnosis, diagnosed = _diagnose(presented, upload, at=at)
    return ClientCheck(
        subject=_dn(leaf.subject),
        passes=verdict.stage is Stage.PASSED,
        ssl_client_verify=verdict.ssl_client_verify,
        explanation=diagnosed or _sentence(verdict.explanation),
        issuer_dn_matches=issuer_dn_matches(leaf.issuer, expected),
        ocsp_url=responder_url(leaf),
        diagnosis=diagnosis,
    )


def check_ca(
    data: bytes,
    *,
    name: str,
    at: datetime,
    client_cert: bytes | None = None,
    client_chain: bytes | None = None,
    pfx: OpenedPfx | None = None,
    password: str | None = None,
) -> CheckReport:
    """Inspect a would-be trusted client CA upload (and optionally a client certificate).

    A PKCS#7 bundle or a PFX is not an upload (``valid`` is False, with Azure's code), but its
    CA certificates are taken out and checked as the upload they should be (``contents``); the
    client, when given, is checked against those. Base64 text is decoded and checked as the
    file it encodes. ``password`` opens a PFX (the file or the client certificate); ``pfx``:
    see :func:`read_customer_file`.
    """
    read = read_customer_file(data, password=password, pfx=pfx)
    if read.kind == "base64" and read.decoded is not None and not read.is_container:
        inner = check_ca(
            read.decoded,
            name=name,
            at=at,
            client_cert=client_cert,
            client_chain=client_chain,
            password=password,
        )
        note = (
            "The file is base64 text (the value of a template's 'data', as `certs init` "
            "writes it); the verdict is on the decoded file."
        )
        return replace(inner, kind="base64", size=len(data), notes=(note, *inner.notes))
    certs = read.certificates
    facts = tuple(CertFacts.of(c, at=at) for c in certs)
    contents: CheckReport | None = None
    client: ClientCheck | None = None
    if read.is_container:
        cas_pem = b"".join(c.public_bytes(Encoding.PEM) for c in certs if is_ca(c))
        contents = check_ca(
            cas_pem,
            name=f"the CA certificates inside {name}",
            at=at,
            client_cert=client_cert,
            client_chain=client_chain,
            password=password,
        )
        client = contents.client
    try:
        upload = load_trusted_client_ca(name, data)
    except CertificateError as exc:
        return CheckReport(
            file=name,
            size=len(data),
            kind=read.kind,
            certificates=facts,
            valid=False,
            code=exc.error_code,
            message=_sentence(exc.message),
            advice=_container_advice(read, name)
            if read.is_container
            else _advice(exc, read, certs, len(data)),
            has_private_key=read.has_private_key,
            contents=contents,
            client=client,
        )
    issuer_dn = client_cert_issuer_dn(upload.certificates)
    if client_cert is not None:
        client = _client_check(upload, client_cert, client_chain, at=at, password=password)
    return CheckReport(
        file=name,
        size=len(data),
        kind=read.kind,
        certificates=facts,
        valid=True,
        code=None,
        message=None,
        advice="This is the right kind of file: upload it as the SSL profile's trusted client "
        "certificate (base64 of the file in trustedClientCertificates[].properties.data).",
        notes=tuple(_notes(upload, certs, at)),
        client_cert_issuer_dn=dotnet_dn(issuer_dn),
        client=client,
        has_private_key=read.has_private_key,
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
        "hasPrivateKey": report.has_private_key,
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
        "contents": None if report.contents is None else report_json(report.contents),
        "client": None
        if client is None
        else {
            "subject": client.subject,
            "passesStrict": client.passes,
            "sslClientVerify": client.ssl_client_verify,
            "explanation": client.explanation,
            "diagnosis": client.diagnosis,
            "issuerDnMatches": client.issuer_dn_matches,
            "ocspUrl": client.ocsp_url,
        },
        "exitCode": report.exit_code,
    }


def _render_upload(report: CheckReport, indent: str = "") -> list[str]:
    kind = KIND_TEXT.get(report.kind, report.kind)
    lines = [f"{indent}{report.file}: {report.size} bytes, {kind}"]
    if report.has_private_key is None:
        lines.append(f"{indent}  private key: not known (the PFX was not opened)")
    elif report.has_private_key:
        lines.append(f"{indent}  private key: present (it is not shown)")
    if not report.certificates:
        lines.append(f"{indent}  no readable certificate")
    for index, cert in enumerate(report.certificates, 1):
        flags = [cert.role, cert.validity]
        if cert.self_signed:
            flags.append("self-signed")
        if cert.server_auth_only:
            flags.append("server certificate (serverAuth only)")
        lines.append(f"{indent}  [{index}] {cert.subject}")
        lines.append(f"{indent}      issuer: {cert.issuer}")
        lines.append(f"{indent}      {', '.join(flags)}; {cert.not_before} .. {cert.not_after}")
    if report.valid:
        lines.append(f"{indent}VALID trusted client CA upload")
        lines.append(
            f"{indent}  clientCertIssuerDN (as Azure shows it): {report.client_cert_issuer_dn}"
        )
    else:
        lines.append(f"{indent}NOT VALID: {report.message} [{report.code}]")
    lines += [f"{indent}  note: {note}" for note in report.notes]
    lines.append(f"{indent}advice: {report.advice}")
    return lines


def render_text(report: CheckReport) -> str:
    """The human-readable report."""
    lines = _render_upload(report)
    if report.contents is not None:
        lines.append("inside the file:")
        lines += _render_upload(report.contents, indent="  ")
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
