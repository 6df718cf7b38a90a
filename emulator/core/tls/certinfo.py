"""What the gateway knows about a client certificate, computed once after the handshake.

Rewrite rules read Azure's mTLS server variables (``{var_client_certificate_subject}``...) from a
:class:`ClientCertInfo`. Azure Application Gateway v2 is nginx on OpenSSL, and each variable is
the matching nginx ``$ssl_client_*`` variable, so every field here reproduces the bytes nginx
produces, not a "nicer" rendering:

==================================  =============================  ==============================
server variable                     nginx variable                 OpenSSL / nginx routine
==================================  =============================  ==============================
``client_certificate``              ``$ssl_client_escaped_cert``   ``PEM_write_bio_X509`` +
                                                                   ``ngx_escape_uri(URI_COMPONENT)``
``client_certificate_subject``      ``$ssl_client_s_dn``           ``X509_NAME_print_ex(RFC2253)``
``client_certificate_issuer``       ``$ssl_client_i_dn``           ``X509_NAME_print_ex(RFC2253)``
``client_certificate_serial``       ``$ssl_client_serial``         ``i2a_ASN1_INTEGER``
``client_certificate_fingerprint``  ``$ssl_client_fingerprint``    ``X509_digest(sha1)``, lower hex
``client_certificate_start_date``   ``$ssl_client_v_start``        ``ASN1_TIME_print``
``client_certificate_end_date``     ``$ssl_client_v_end``          ``ASN1_TIME_print``
==================================  =============================  ==============================

``client_certificate_verification`` is not here: it depends on the SSL profile's mode, which the
TLS policy decides (``SUCCESS`` / ``PASSTHROUGH`` / ``NONE``).

The variable names are :mod:`emulator.model.variables`' (re-exported here).

Sans-I/O: values in, values out; no clock (validity dates are printed, never judged here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.core.tls.dn import issuer_and_subject_der, openssl_rfc2253_der
from emulator.model.variables import (
    CERTIFICATE_VARIABLES,
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_END_DATE,
    CLIENT_CERTIFICATE_FINGERPRINT,
    CLIENT_CERTIFICATE_ISSUER,
    CLIENT_CERTIFICATE_SERIAL,
    CLIENT_CERTIFICATE_START_DATE,
    CLIENT_CERTIFICATE_SUBJECT,
)

__all__ = [
    "CERTIFICATE_VARIABLES",
    "CLIENT_CERTIFICATE",
    "CLIENT_CERTIFICATE_END_DATE",
    "CLIENT_CERTIFICATE_FINGERPRINT",
    "CLIENT_CERTIFICATE_ISSUER",
    "CLIENT_CERTIFICATE_SERIAL",
    "CLIENT_CERTIFICATE_START_DATE",
    "CLIENT_CERTIFICATE_SUBJECT",
    "ClientCertInfo",
    "escape_uri_component",
    "openssl_serial",
    "openssl_time",
]

# nginx's NGX_ESCAPE_URI_COMPONENT table (src/core/ngx_string.c, ``uri_component[]``) escapes
# everything except RFC 3986 "unreserved": ALPHA, DIGIT, "-", ".", "_", "~". Unlike
# ``urllib.parse.quote`` there is no ``safe="/"`` default, so "/" in base64 becomes %2F.
_URI_COMPONENT_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
#: One precomputed output per byte value; nginx writes uppercase hex ("0123456789ABCDEF").
_URI_COMPONENT_TABLE: Final = tuple(
    chr(byte) if byte in _URI_COMPONENT_UNRESERVED else f"%{byte:02X}" for byte in range(256)
)

#: ``ASN1_TIME_print``'s month names (crypto/asn1/a_time.c ``_asn1_mon``).
_MONTHS: Final = tuple(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
)


def escape_uri_component(data: str) -> str:
    """Percent-encode ``data`` as nginx's ``ngx_escape_uri(..., NGX_ESCAPE_URI_COMPONENT)``.

    The text is taken as UTF-8 bytes, like nginx's byte-wise loop; a PEM is pure ASCII anyway.
    """
    return "".join(_URI_COMPONENT_TABLE[byte] for byte in data.encode("utf-8"))


def openssl_time(dt: datetime) -> str:
    """Format a certificate time as ``ASN1_TIME_print``: ``Jan  6 13:41:09 2045 GMT``.

    The day is space-padded to two characters (``%2d``), the year is not padded. A naive
    ``datetime`` is taken as UTC (that is what ``cryptography``'s non-``_utc`` properties
    return); an aware one is converted to UTC first.

    Differs from Azure: a GeneralizedTime with fractional seconds (not valid DER for RFC 5280, so
    rare) prints its fraction in OpenSSL; ``cryptography`` drops it, so it is not shown here.
    """
    utc = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return (
        f"{_MONTHS[utc.month - 1]} {utc.day:2d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} {utc.year} GMT"
    )


def openssl_serial(serial: int) -> str:
    """Format a serial number as ``i2a_ASN1_INTEGER`` (nginx ``$ssl_client_serial``).

    OpenSSL prints the magnitude's whole bytes in uppercase hex without separators: the DER sign
    byte of a serial whose top bit is set is *not* printed (``ASN1_INTEGER`` stores the
    magnitude), a leading zero nibble *is* (``0ABC``), zero is ``00`` and a negative serial gets
    a ``-``.

    Differs from Azure: OpenSSL inserts ``\\`` + newline every 35 bytes; a conforming serial is
    at most 20 bytes (RFC 5280 §4.1.2.2) and a newline cannot travel in a header, so longer
    serials are printed on one line.
    """
    magnitude = abs(serial)
    octets = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big")
    return ("-" if serial < 0 else "") + octets.hex().upper()


@dataclass(frozen=True, slots=True)
class ClientCertInfo:
    """The client certificate and every server variable derived from it.

    Built once per connection right after the handshake (:meth:`from_certificates`) and then only
    read, so rules that use several variables never re-encode or re-hash the certificate.
    """

    leaf: x509.Certificate
    #: What the client sent after the leaf (intermediates), in the order sent; may be empty.
    chain: tuple[x509.Certificate, ...]
    #: The leaf as PEM: 64-character base64 lines, trailing newline (``PEM_write_bio_X509``).
    pem: str
    #: ``client_certificate``.
    escaped_pem: str
    #: ``client_certificate_subject``.
    subject: str
    #: ``client_certificate_issuer``.
    issuer: str
    #: ``client_certificate_serial``.
    serial: str
    #: ``client_certificate_fingerprint``.
    fingerprint_sha1: str
    #: ``client_certificate_start_date``.
    start_date: str
    #: ``client_certificate_end_date``.
    end_date: str

    @classmethod
    def from_certificates(
        cls, leaf: x509.Certificate, chain: Sequence[x509.Certificate] = ()
    ) -> ClientCertInfo:
        """Compute every field from the certificates the client presented.

        Raises:
            emulator.core.tls.dn.DerError: the leaf's issuer or subject is not parseable DER (a
                certificate ``cryptography`` loaded is always well-formed enough).
        """
        pem = leaf.public_bytes(Encoding.PEM).decode("ascii")
        issuer_der, subject_der = issuer_and_subject_der(leaf)
        return cls(
            leaf=leaf,
            chain=tuple(chain),
            pem=pem,
            escaped_pem=escape_uri_component(pem),
            subject=openssl_rfc2253_der(subject_der),
            issuer=openssl_rfc2253_der(issuer_der),
            serial=openssl_serial(leaf.serial_number),
            # SHA-1 because that is what nginx's $ssl_client_fingerprint hashes with; it
            # identifies the certificate, it is not a security check.
            fingerprint_sha1=hashlib.sha1(
                leaf.public_bytes(Encoding.DER), usedforsecurity=False
            ).hexdigest(),
            start_date=openssl_time(leaf.not_valid_before_utc),
            end_date=openssl_time(leaf.not_valid_after_utc),
        )

    def server_variables(self) -> Mapping[str, str]:
        """The certificate server variables by Azure name (without ``_verification``)."""
        return {
            CLIENT_CERTIFICATE: self.escaped_pem,
            CLIENT_CERTIFICATE_END_DATE: self.end_date,
            CLIENT_CERTIFICATE_FINGERPRINT: self.fingerprint_sha1,
            CLIENT_CERTIFICATE_ISSUER: self.issuer,
            CLIENT_CERTIFICATE_SERIAL: self.serial,
            CLIENT_CERTIFICATE_START_DATE: self.start_date,
            CLIENT_CERTIFICATE_SUBJECT: self.subject,
        }
