"""Read the client certificate a gateway forwarded to the backend in a request header.

Application Gateway forwards the client certificate only when a rewrite rule copies a server
variable into a request header, typically ``X-Client-Cert: {var_client_certificate}``. That
variable is the leaf in PEM, URL-encoded the way nginx's ``$ssl_client_escaped_cert`` is: space
``%20``, newline ``%0A``, ``+`` ``%2B``, ``/`` ``%2F``, ``=`` ``%3D``
(https://learn.microsoft.com/azure/application-gateway/rewrite-http-headers-url#mutual-authentication-server-variables).
Other proxies a user may put in front of the same backend send other spellings, so this module
accepts all the ones seen in practice:

* URL-encoded PEM (Azure, nginx ``$ssl_client_escaped_cert``);
* form-encoded PEM, where spaces became ``+`` and a base64 ``+`` became ``%2B``;
* raw PEM with real newlines (only possible when a client library folds nothing);
* PEM with the newlines replaced by spaces or tabs (what is left of a folded header such as
  nginx's deprecated ``$ssl_client_cert`` once it is unfolded);
* bare base64 DER, without PEM armour (several load balancers and API managers).

``urllib.parse.unquote`` is used, not ``unquote_plus``: in URL-encoded PEM a literal ``+`` can only
be a base64 digit (Azure encodes it as ``%2B`` anyway), and turning it into a space would corrupt
the certificate. Form encoding is recognised by its ``BEGIN+CERTIFICATE`` marker before any
decoding.

This is the backend's view, a user's program: subject and issuer use ``cryptography``'s
RFC 4514 rendering, which differs in detail from the OpenSSL RFC 2253 text the gateway puts in
``client_certificate_subject`` (see /work/shared/appgw-behaviour.md).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

__all__ = ["CertificateParseError", "ParsedCertificate", "parse_forwarded_certificate"]

#: Any PEM block, whatever its label; group 1 is the label, group 2 the body. The body may hold
#: newlines, spaces or nothing between base64 groups, depending on how the proxy mangled it.
_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----",
    re.DOTALL,
)
#: The form-encoded (``application/x-www-form-urlencoded``) spelling of the PEM header.
_FORM_ENCODED_MARKER: Final = "-----BEGIN+CERTIFICATE-----"
_BASE64_ONLY: Final = re.compile(r"[A-Za-z0-9+/=]+")
_WHITESPACE: Final = re.compile(r"\s+")
#: How much of a bad value goes into an error message: enough to recognise it, not a whole dump.
_ERROR_EXCERPT_CHARS: Final = 40


class CertificateParseError(ValueError):
    """The header value is not a certificate in any format a gateway forwards.

    ``problem`` is a short key (``"empty"``, ``"bad_base64"``...) a program can match on and
    ``detail`` the specifics; ``str()`` makes one sentence that reads on its own in a log or in the
    ``client_certificate_error`` member of the stub's JSON answer.
    """

    _TEMPLATES: ClassVar[dict[str, str]] = {
        "empty": "the header is present but empty",
        "unterminated_pem": "it starts a PEM block that never ends ({detail}); was it truncated?",
        "not_certificate_pem": "it holds PEM blocks of type {detail}, not CERTIFICATE",
        "not_pem_or_base64": "it is neither PEM nor base64 DER ({detail})",
        "bad_base64": "its base64 does not decode ({detail})",
        "bad_der": "its DER data does not decode as X.509 ({detail})",
    }

    def __init__(self, problem: str, detail: str = "") -> None:
        super().__init__(problem, detail)
        self.problem = problem
        self.detail = detail

    @property
    def reason(self) -> str:
        return self._TEMPLATES[self.problem].format(detail=self.detail)

    def __str__(self) -> str:
        return f"header value is not a certificate: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    """The facts about a forwarded certificate that a backend typically logs or authorises on.

    Attributes:
        subject: RFC 4514 string, most specific RDN first (``CN=client,O=Org``).
        issuer: RFC 4514 string.
        serial: uppercase hex, whole bytes, no separators (the gateway's
            ``client_certificate_serial`` spelling).
        not_before: ISO 8601 UTC, ``2025-01-31T12:00:00Z``.
        not_after: ISO 8601 UTC.
        sha1_fingerprint: SHA-1 of the DER, lowercase hex, no separators (the gateway's
            ``client_certificate_fingerprint`` spelling).
        certificate: the parsed certificate, for verification.
    """

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    sha1_fingerprint: str
    certificate: x509.Certificate

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> ParsedCertificate:
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            serial=format_serial(certificate.serial_number),
            not_before=format_utc(certificate.not_valid_before_utc),
            not_after=format_utc(certificate.not_valid_after_utc),
            # SHA-1 is what the gateway reports; it identifies, it does not protect anything.
            sha1_fingerprint=certificate.fingerprint(hashes.SHA1()).hex(),
            certificate=certificate,
        )


def format_serial(serial: int) -> str:
    """Uppercase hex padded to whole bytes, as OpenSSL prints a serial for nginx."""
    digits = f"{serial:X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def format_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, the form JSON consumers parse most readily."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_forwarded_certificate(value: str) -> ParsedCertificate:
    """Parse a forwarded client certificate header value.

    When the value holds several PEM certificates (a proxy forwarding the chain), the first one is
    the client's leaf and the others are ignored.

    Raises:
        CertificateParseError: the value is empty, holds no certificate, or its certificate does
            not decode.
    """
    text = value.strip()
    if not text:
        raise CertificateParseError("empty")
    if _FORM_ENCODED_MARKER in text:
        text = urllib.parse.unquote_plus(text)
    elif "%" in text:
        text = urllib.parse.unquote(text)
    der = _der_from_pem(text) if "-----BEGIN" in text else _der_from_base64(text)
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateParseError("bad_der", str(exc)) from exc
    return ParsedCertificate.from_certificate(certificate)


def _der_from_pem(text: str) -> bytes:
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        raise CertificateParseError("unterminated_pem", repr(_excerpt(text)))
    for label, body in blocks:
        if label == "CERTIFICATE":
            # Dropping every kind of whitespace re-wraps PEM whose newlines became spaces (or
            # CRLF, or nothing) in one go: base64 ignores line structure.
            return _decode_base64(_WHITESPACE.sub("", body), what="the PEM body")
    labels = ", ".join(sorted({label for label, _ in blocks}))
    raise CertificateParseError("not_certificate_pem", labels)


def _der_from_base64(text: str) -> bytes:
    compact = _WHITESPACE.sub("", text)
    if not _BASE64_ONLY.fullmatch(compact):
        raise CertificateParseError("not_pem_or_base64", repr(_excerpt(text)))
    return _decode_base64(compact, what="the base64 value")


def _decode_base64(data: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise CertificateParseError("bad_base64", f"{what}: {exc}") from exc


def _excerpt(text: str) -> str:
    if len(text) <= _ERROR_EXCERPT_CHARS:
        return text
    return text[:_ERROR_EXCERPT_CHARS] + "..."
