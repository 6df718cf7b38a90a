"""Certificate material inside a gateway resource: server PFX files and trusted client CA uploads.

Both arrive base64-encoded in the template (``sslCertificates[].properties.data`` with a
``password``; ``trustedClientCertificates[].properties.data``). Azure checks them at deployment
time; we check them at load time with the same rules and error codes, so a file that Azure would
refuse never reaches a running listener here.

Rules for trusted client CA uploads (Azure "Troubleshoot mutual authentication" doc,
https://learn.microsoft.com/azure/application-gateway/mutual-authentication-troubleshooting):
the file holds the CA chain that issued the clients' certificates, public certificates only,
exactly one root, at least one CA certificate; leaves beside CA certificates are ignored.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from emulator.arm.pkcs12_bounds import MAX_PKCS12_ITERATIONS, Pkcs12TooCostly, load_pkcs12
from emulator.cert_facts import is_ca
from emulator.errors import CertificateError

__all__ = [
    "MAX_TRUSTED_CLIENT_CERT_BYTES",
    "PKCS12_TOO_COSTLY",
    "ServerCertificate",
    "TrustedClientCa",
    "base64_encode_if_not",
    "decode_base64_field",
    "decode_upload_field",
    "load_server_pfx",
    "load_trusted_client_ca",
]

#: Each trusted client CA file may be at most 25 KB (Azure mutual authentication overview,
#: "Certificates supported for mutual authentication").
MAX_TRUSTED_CLIENT_CERT_BYTES: Final = 25 * 1024
#: A PFX whose key derivation would cost more than the emulator allows (Azure has no code for
#: it; see :mod:`emulator.arm.pkcs12_bounds`).
PKCS12_TOO_COSTLY: Final = "EmulatorPkcs12TooManyIterations"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A listener's server certificate: the PFX's key, leaf and the chain sent with it."""

    name: str
    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class TrustedClientCa:
    """One trusted client CA upload: its certificates, in file order, CA certificates only."""

    name: str
    certificates: tuple[x509.Certificate, ...]

    @property
    def root(self) -> x509.Certificate:
        return next(c for c in self.certificates if _is_self_signed(c))


def decode_base64_field(value: str, *, what: str) -> bytes:
    """Decode a template's base64 ``data`` field; whitespace and line breaks are tolerated."""
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError(
            f"{what} is not valid base64 ({exc})",
            fix="put the base64 encoding of the file in 'data' (e.g. `base64 -w0 FILE`)",
        ) from exc


#: What marks a ``data`` value as PEM text rather than base64: base64 has no '-' or spaces.
_PEM_TEXT: Final = re.compile(r"^\s*-----BEGIN [A-Z0-9 ]+-----")


def decode_upload_field(value: str, *, what: str) -> tuple[bytes, bool]:
    """Decode a certificate upload's ``data``: base64 (of PEM or DER), or the PEM text itself.

    Bicep templates pass ``loadTextContent('ca.cer')`` there; whether ARM accepts the text is
    not documented, so it is accepted and the caller warns (``True`` in the result) that
    ``loadFileAsBase64`` is the documented form. The bytes then go through the same checks.
    """
    if _PEM_TEXT.match(value):
        return value.encode("utf-8"), True
    return decode_base64_field(value, what=what), False


def base64_encode_if_not(value: str) -> str:
    """azurerm's ``Base64EncodeIfNot``: ``value`` if it is standard base64 already, else its
    base64 (the provider does this to a trusted certificate's ``data``)."""
    try:
        # Go's decoder skips line breaks, so the provider sees wrapped base64 as base64.
        base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return base64.b64encode(value.encode("utf-8")).decode("ascii")
    return value


def load_server_pfx(
    name: str, data: bytes, password: str | None, *, cert_id: str
) -> ServerCertificate:
    """Open a listener's PFX like Azure does, with its error message for a bad file or password."""
    pw = password.encode() if password else None
    try:
        key, cert, extra = load_pkcs12(data, pw)
    except Pkcs12TooCostly as exc:
        raise CertificateError(
            f"certificate {cert_id}: {exc}",
            fix="export the .pfx again with the usual iteration counts, e.g. `openssl pkcs12 "
            f"-export -iter 2048 -maciter 2048 ...` (at most {MAX_PKCS12_ITERATIONS:,} in all)",
            code=PKCS12_TOO_COSTLY,
        ) from None
    except ValueError as exc:
        # Azure's message for every case; the fix says which one this is, which Azure does not.
        raise CertificateError(
            f"Data or Password for certificate {cert_id} is invalid.",
            fix=_pfx_failure_fix(data, password),
            code="EmulatorSslCertificateInvalidData",
        ) from exc
    if cert is None or key is None:
        # A PFX exported without its key still holds the certificate, but OpenSSL (and so
        # ``cryptography``) only reports a certificate as *the* one when a key matches it:
        # the missing key is the problem to name.
        raise CertificateError(
            f"the PFX of certificate {cert_id} holds no "
            + ("private key" if key is None else "certificate"),
            fix="export the server certificate together with its private key into the .pfx",
            code="EmulatorSslCertificateInvalidData",
        )
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateError(
            f"the PFX of certificate {cert_id} holds an unsupported key type {type(key).__name__}",
            fix="use an RSA or ECDSA server key",
            code="EmulatorSslCertificateInvalidData",
        )
    chain = tuple(c for c in extra if c != cert)
    return ServerCertificate(name=name, key=key, certificate=cert, chain=_order_chain(cert, chain))


def _looks_like_pfx(data: bytes) -> bool:
    """True when ``data`` has a PFX's outer shape: a DER SEQUENCE opening with INTEGER 3.

    RFC 7292 section 4: ``PFX ::= SEQUENCE { version INTEGER {v3(3)}, authSafe, macData }``.
    Enough to tell "this is a PFX the password does not open" from "this is not a PFX".
    """
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _pfx_failure_fix(data: bytes, password: str | None) -> str:
    """Which of the three failures it is: a PEM given, not a PFX at all, or a wrong password."""
    if _PEM_TEXT.match(data[:200].decode("latin-1")):
        return (
            "'data' holds a PEM file, not a PFX: bundle the certificate and its key into one "
            "(`openssl pkcs12 -export -in cert.pem -inkey key.pem -out cert.pfx`) and put its "
            "base64 in 'data'"
        )
    if not _looks_like_pfx(data):
        return (
            "'data' is not a PFX/PKCS#12 file: put the base64 of the .pfx in 'data' "
            "(`base64 -w0 cert.pfx`)"
        )
    given = "no password was given" if not password else "the password does not open it"
    return (
        f"'data' is a PFX, but {given} (MAC check failed): pass the PFX's password in "
        "'password' (`openssl pkcs12 -in cert.pfx -noout` asks for it)"
    )


def load_trusted_client_ca(name: str, data: bytes) -> TrustedClientCa:
    """Parse and check one trusted client CA upload (PEM or DER, one or more certificates)."""
    if not data.strip():
        raise CertificateError(
            "the trusted client certificate has no data",
            fix="upload the CA chain (root and intermediates) that issued your clients' "
            "certificates",
            code="ApplicationGatewayTrustedClientCertificateMustSpecifyData",
        )
    if len(data) > MAX_TRUSTED_CLIENT_CERT_BYTES:
        raise CertificateError(
            f"the trusted client certificate file is {len(data)} bytes; Azure accepts at most "
            f"{MAX_TRUSTED_CLIENT_CERT_BYTES}",
            fix="upload only the CA chain that issued the clients' certificates",
            code="ApplicationGatewayTrustedClientCertificateInvalidData",
        )
    if b"PRIVATE KEY-----" in data:
        raise CertificateError(
            "the trusted client certificate contains a private key",
            fix="upload only the public CA certificates (root + intermediates); never a key or PFX",
            code="ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
        )
    certs = _parse_certificates(data)
    cas = tuple(c for c in certs if is_ca(c))
    if not cas:
        raise CertificateError(
            "the trusted client certificate holds no CA certificate (only leaf certificates, "
            "without BasicConstraints CA:TRUE)",
            fix="ask the client for the CA chain that issued their certificate (root and "
            "intermediates), not their own certificate",
            code="ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
        )
    roots = [c for c in cas if _is_self_signed(c)]
    if len(roots) != 1:
        problem = "no root CA certificate" if not roots else f"{len(roots)} root CA certificates"
        raise CertificateError(
            f"the trusted client certificate holds {problem}; exactly one is required",
            fix="upload one chain per entry: exactly one self-signed root plus its intermediates",
            code="ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
        )
    return TrustedClientCa(name=name, certificates=cas)


def _parse_certificates(data: bytes) -> list[x509.Certificate]:
    blocks = _PEM_BLOCK.findall(data)
    if blocks:
        certs: list[x509.Certificate] = []
        for label, body in blocks:
            if label != b"CERTIFICATE":
                raise CertificateError(
                    f"the trusted client certificate contains a '{label.decode()}' block",
                    fix="upload only '-----BEGIN CERTIFICATE-----' blocks",
                    code="ApplicationGatewayTrustedClientCertificateInvalidData",
                )
            if not body.strip():
                raise _invalid("a CERTIFICATE block is empty")
            try:
                certs.append(
                    x509.load_pem_x509_certificate(
                        b"-----BEGIN CERTIFICATE-----" + body + b"-----END CERTIFICATE-----"
                    )
                )
            except ValueError as exc:
                raise _invalid(f"a CERTIFICATE block does not decode ({exc})") from exc
        return certs
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    # DER (a PFX included) starts with a SEQUENCE. Opening the PFX would tell no more, and would
    # run its key derivation for nothing (see emulator.arm.pkcs12_bounds). A PKCS#7 bundle
    # needs no password, so it can be named (the file is at most 25 KB here).
    if data[:1] == b"\x30" and _is_der_pkcs7(data):
        raise CertificateError(
            "the trusted client certificate is a PKCS#7 bundle (.p7b/.p7c), not PEM or DER "
            "certificates",
            fix="convert it with `openssl pkcs7 -inform DER -print_certs -in FILE -out "
            "chain.cer` and upload chain.cer",
            code="ApplicationGatewayTrustedClientCertificateInvalidData",
        )
    if data[:1] == b"\x30":
        raise CertificateError(
            "the trusted client certificate looks like a PFX/PKCS#12 or other binary file, "
            "not a certificate",
            fix="this profile needs the CA chain that issued the client's certificate, public part "
            "only (PEM or .cer) — not the client's PFX",
            code="ApplicationGatewayTrustedClientCertificateInvalidData",
        )
    raise _invalid("no '-----BEGIN CERTIFICATE-----' block and not a DER certificate")


def _is_der_pkcs7(data: bytes) -> bool:
    try:
        pkcs7.load_der_pkcs7_certificates(data)
    except (ValueError, UnsupportedAlgorithm):  # not PKCS#7, or PKCS#7 without certificates
        return False
    return True


def _invalid(detail: str) -> CertificateError:
    return CertificateError(
        f"the trusted client certificate data is invalid: {detail}",
        fix="upload the PEM (or .cer) file of the CA chain, base64-encoded in 'data'",
        code="ApplicationGatewayTrustedClientCertificateInvalidData",
    )


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _order_chain(
    leaf: x509.Certificate, extra: tuple[x509.Certificate, ...]
) -> tuple[x509.Certificate, ...]:
    """Order a PFX's extra certificates from the leaf's issuer upwards; unrelated ones last."""
    ordered: list[x509.Certificate] = []
    remaining = list(extra)
    current = leaf
    while remaining:
        issuer = next((c for c in remaining if c.subject == current.issuer), None)
        if issuer is None or issuer in ordered:
            break
        ordered.append(issuer)
        remaining.remove(issuer)
        current = issuer
    return tuple(ordered + remaining)
