"""What a backend parses from a forwarded certificate header, and the classic ways to get it wrong.

``appgw-emulator decode-header VALUE`` takes any value one of the gateway's certificate server
variables produces and prints what a correct decoder reads from it:

* ``client_certificate``: the leaf PEM with every byte but ``A-Z a-z 0-9 - . _ ~`` as ``%XX``
  (nginx's ``$ssl_client_escaped_cert``). Percent-decoding gives the PEM;
* ``client_certificate_subject`` / ``_issuer``: OpenSSL's RFC 2253 print, most specific RDN
  first, ``+`` inside a multi-valued RDN, UTF-8 bytes as ``\\XX``;
* ``client_certificate_serial`` (uppercase hex), ``_fingerprint`` (lowercase SHA-1 hex),
  ``_start_date`` / ``_end_date`` (``Jan  6 13:41:09 2045 GMT``), ``_verification``.

It also recognises what other proxies send (a raw PEM, base64 DER) and says so, and it warns
about the mistakes backend authors make with App Gateway's format:

* decoding with ``+`` as space (HTML form decoding: Python's ``unquote_plus``, Java's
  ``URLDecoder.decode``, .NET's ``HttpUtility.UrlDecode``) — harmless on App Gateway's own values,
  which spell ``+`` as ``%2B``, but it corrupts a value with a literal ``+`` (base64 in another
  proxy's header, or a value a script re-encoded);
* expecting base64 DER (ASP.NET Core's ``CertificateForwarding`` default converter does, and
  throws on App Gateway's URL-encoded PEM);
* parsing the DN by splitting on ``,`` (breaks on escaped commas and ``+``-joined RDNs) or
  comparing it with another library's rendering (``\\C3\\BC`` is not ``ü``).

Pure functions over strings; no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, unquote_plus

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.core.tls.certinfo import ClientCertInfo
from emulator.core.tls.dn import OPENSSL_SHORT_NAMES

__all__ = [
    "Decoded",
    "certificate_facts",
    "decode_header",
    "name_rdns",
    "parse_openssl_dn",
    "parse_openssl_time",
    "render_text",
]

#: A header value longer than this is no certificate header (a leaf PEM, escaped, is a few KB;
#: Azure's own header limit is 32 KB).
MAX_VALUE_CHARS: Final = 64 * 1024
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"
_PEM_BODY: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----"
)
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_OPENSSL_TIME: Final = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) (?P<y>\d{4}) GMT"
)
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_VERIFICATION: Final = re.compile(r"SUCCESS|PASSTHROUGH|NONE|FAILED:.*")
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{40}")
_SERIAL: Final = re.compile(r"(?:[0-9A-F]{2})+")
#: An RFC 2253 attribute type at the start of a DN: a short name or a dotted OID, then ``=``.
_DN_START: Final = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)=")

FIX_PERCENT_DECODE: Final = (
    "percent-decode only: Python urllib.parse.unquote, JavaScript decodeURIComponent, "
    "Go url.PathUnescape, .NET Uri.UnescapeDataString, Java URLDecoder.decode only after "
    'value.replace("+", "%2B")'
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What the value is, what it parses to, and what to watch out for."""

    kind: str
    description: str
    parsed: dict[str, Any] | None
    warnings: tuple[str, ...] = field(default=())
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "parsed": self.parsed,
            "warnings": list(self.warnings),
            "error": self.error,
        }


# -- certificates ---------------------------------------------------------------------------------


def _public_key(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return {"type": "RSA", "bits": key.key_size}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"type": "EC", "curve": key.curve.name, "bits": key.key_size}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"type": "Ed25519"}
    if isinstance(key, ed448.Ed448PublicKey):
        return {"type": "Ed448"}
    return {"type": type(key).__name__}


_SAN_PREFIXES: Final = {
    "DNSName": "DNS",
    "IPAddress": "IP",
    "RFC822Name": "email",
    "UniformResourceIdentifier": "URI",
}


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for name in ext:
        prefix = _SAN_PREFIXES.get(type(name).__name__, type(name).__name__)
        out.append(f"{prefix}:{name.value}")
    return out


def name_rdns(name: x509.Name) -> list[list[dict[str, str]]]:
    """The RDNs of ``name`` in the order the gateway prints them (most specific first, and
    reversed inside a multi-valued RDN), from the certificate itself, not from the print."""
    return [
        [
            {
                "type": OPENSSL_SHORT_NAMES.get(attr.oid.dotted_string, attr.oid.dotted_string),
                "value": str(attr.value),
            }
            for attr in reversed(list(rdn))
        ]
        for rdn in reversed(name.rdns)
    ]


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    """What a backend should read from a forwarded leaf (the vectors' ``expected``).

    DNs come twice: as the gateway's own ``client_certificate_subject`` string (what the
    subject header carries, for byte-for-byte allow-lists) and as decoded RDNs in that printed
    order (most specific first), Unicode values decoded.
    """
    info = ClientCertInfo.from_certificates(cert)
    return {
        "subject": info.subject,
        "subjectRdns": name_rdns(cert.subject),
        "issuer": info.issuer,
        "issuerRdns": name_rdns(cert.issuer),
        "serialNumber": {"hex": info.serial, "decimal": str(cert.serial_number)},
        "notBefore": cert.not_valid_before_utc.isoformat(),
        "notAfter": cert.not_valid_after_utc.isoformat(),
        "sha1Fingerprint": info.fingerprint_sha1,
        "sha256Fingerprint": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        "publicKey": _public_key(cert),
        "subjectAltNames": _sans(cert),
    }


def _load_pem(text: str) -> x509.Certificate:
    match = _PEM_BODY.search(text)
    if match is None:
        raise ValueError("no complete PEM certificate (BEGIN/END lines)")
    body = "".join(match.group("body").split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the PEM body is not base64 ({exc})") from exc
    return _load_der(der)


def _load_der(der: bytes) -> x509.Certificate:
    """``load_der_x509_certificate`` with every refusal as ValueError.

    A header value is the client's to shape: a version field other than v1-v3 is its own
    exception type in cryptography, not a ValueError like every other broken field.
    """
    try:
        return x509.load_der_x509_certificate(der)
    except x509.InvalidVersion as exc:
        raise ValueError(f"not a certificate ({exc})") from exc


def _escaped_pem(value: str) -> Decoded:
    decoded = unquote(value)
    warnings: list[str] = []
    if "+" in value:
        warnings.append(
            "the value holds a literal '+': decoding with '+' as space (HTML form decoding: "
            "unquote_plus, Java URLDecoder.decode, .NET HttpUtility.UrlDecode) corrupts its "
            f"base64; {FIX_PERCENT_DECODE}"
        )
    elif "%2B" in value and unquote_plus(value) == decoded:
        warnings.append(
            "'+' is spelled %2B here, so form decoding happens to work on App Gateway's value; "
            f"it breaks as soon as a literal '+' appears (another proxy, a re-encoded value): "
            f"{FIX_PERCENT_DECODE}"
        )
    warnings.append(
        "this is URL-encoded PEM, not base64 DER: ASP.NET Core's AddCertificateForwarding "
        "default converter expects base64 DER and throws on it; give it a HeaderConverter that "
        "percent-decodes and reads PEM (X509Certificate2.CreateFromPem)"
    )
    try:
        cert = _load_pem(decoded)
    except ValueError as exc:
        return Decoded(
            "client_certificate",
            "URL-encoded PEM (App Gateway's {var_client_certificate})",
            None,
            tuple(warnings),
            error=f"percent-decoded, but not a certificate: {exc}",
        )
    if "+" in value:
        try:
            _load_pem(unquote_plus(value))
        except ValueError as exc:
            warnings.insert(1, f"decoded with '+' as space it does not parse at all ({exc})")
        else:
            warnings.insert(1, "decoded with '+' as space it parses to a different certificate")
    return Decoded(
        "client_certificate",
        "URL-encoded PEM (App Gateway's {var_client_certificate})",
        certificate_facts(cert),
        tuple(warnings),
    )


def _raw_pem(value: str) -> Decoded:
    warnings = [
        "a raw PEM, not App Gateway's format: App Gateway sends the PEM URL-encoded "
        "({var_client_certificate}); a header cannot carry its line breaks as they are"
    ]
    if "\n" not in value:
        warnings.append(
            "the line breaks were replaced (by spaces?): join the base64 body before decoding"
        )
    try:
        cert = _load_pem(value)
    except ValueError as exc:
        return Decoded("pem", "PEM certificate", None, tuple(warnings), error=str(exc))
    return Decoded("pem", "PEM certificate", certificate_facts(cert), tuple(warnings))


def _base64_der(value: str) -> Decoded | None:
    compact = "".join(value.split())
    if len(compact) < 64 or not _BASE64.fullmatch(compact):
        return None
    try:
        cert = _load_der(base64.b64decode(compact, validate=True))
    except (binascii.Error, ValueError):
        return None
    return Decoded(
        "base64-der",
        "base64 DER certificate (what IIS ARR and ASP.NET Core's default converter use)",
        certificate_facts(cert),
        (
            "not App Gateway's format: App Gateway's {var_client_certificate} is URL-encoded "
            "PEM; a backend written for this value fails behind App Gateway",
        ),
    )


# -- the other variables ---------------------------------------------------------------------------


def parse_openssl_time(value: str) -> datetime:
    """``Jan  6 13:41:09 2045 GMT`` (OpenSSL's ``ASN1_TIME_print``) as an aware UTC datetime.

    Raises:
        ValueError: not that format.
    """
    match = _OPENSSL_TIME.fullmatch(value.strip())
    if match is None or match.group("mon") not in _MONTHS:
        msg = f"not an OpenSSL date (like 'Jan  6 13:41:09 2045 GMT'): {value!r}"
        raise ValueError(msg)
    return datetime(
        int(match.group("y")),
        _MONTHS.index(match.group("mon")) + 1,
        int(match.group("day")),
        int(match.group("h")),
        int(match.group("m")),
        int(match.group("s")),
        tzinfo=UTC,
    )


def parse_openssl_dn(value: str) -> list[list[dict[str, str]]]:
    """Split OpenSSL's RFC 2253 print into RDNs of ``{"type", "value"}``, in printed order.

    Escapes are undone: ``\\,`` → ``,``, ``\\C3\\BC`` → the UTF-8 bytes of ``ü``. A value
    printed as ``#`` + hex (a type OpenSSL does not know) is kept as that text. A lone
    backslash at the very end is an escaped trailing space whose space HTTP trimmed off.

    Raises:
        ValueError: an RDN without ``=``, bytes that are not UTF-8.
    """
    rdns: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    attr_type: str | None = None
    buffer = bytearray()
    i = 0
    text = value

    def finish_attribute() -> None:
        nonlocal attr_type, buffer
        if attr_type is None:
            msg = f"an RDN without '=' in {value!r}"
            raise ValueError(msg)
        try:
            decoded = buffer.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"the value of {attr_type} is not UTF-8 ({exc})"
            raise ValueError(msg) from exc
        current.append({"type": attr_type, "value": decoded})
        attr_type = None
        buffer = bytearray()

    while i < len(text):
        char = text[i]
        if char == "\\":
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789ABCDEFabcdef" for c in pair):
                buffer.append(int(pair, 16))
                i += 3
                continue
            if i + 1 >= len(text):
                # OpenSSL escapes a trailing space as "\ "; HTTP trims the space off the header
                # value, leaving the backslash. The space is part of the value.
                buffer += b" "
                i += 1
                continue
            buffer += text[i + 1].encode("utf-8")
            i += 2
            continue
        if char == "=" and attr_type is None:
            attr_type = buffer.decode("utf-8")
            buffer = bytearray()
        elif char in ",+":
            finish_attribute()
            if char == ",":
                rdns.append(current)
                current = []
        else:
            buffer += char.encode("utf-8")
        i += 1
    finish_attribute()
    rdns.append(current)
    return rdns


def _trailing_backslashes(value: str) -> int:
    return len(value) - len(value.rstrip("\\"))


def _dn(value: str) -> Decoded:
    warnings = [
        "do not split this DN on ',' alone: commas inside values are escaped as '\\,' and "
        "multi-valued RDNs are joined with '+'; bytes over 0x7F are \\XX (UTF-8), so "
        "'J\\C3\\BCrgen' is 'Jürgen'. To allow-list subjects, compare this exact string, or "
        "compare the forwarded certificate's parsed subject"
    ]
    if _trailing_backslashes(value) % 2:
        warnings.append(
            "the value ends in a lone backslash: the last attribute ends in a space, which "
            "OpenSSL escapes as '\\ ' and HTTP trims off the header; a decoder must restore it"
        )
    try:
        rdns = parse_openssl_dn(value)
    except ValueError as exc:
        return Decoded("dn", "distinguished name", None, tuple(warnings), error=str(exc))
    return Decoded(
        "dn",
        "distinguished name (client_certificate_subject / _issuer: OpenSSL RFC 2253, most "
        "specific first)",
        {"rdns": rdns},
        tuple(warnings),
    )


def decode_header(value: str) -> Decoded:
    """Recognise ``value`` as one of the certificate variables' formats and parse it."""
    raw = value.strip()
    if not raw:
        return Decoded(
            "empty",
            "empty: no client certificate",
            None,
            (
                "App Gateway deletes a header whose value is empty, so a backend sees no header "
                "at all when the client sent no certificate; treat both as 'no certificate'",
            ),
        )
    if len(raw) > MAX_VALUE_CHARS:
        return Decoded(
            "unknown", "too long", None, error=f"longer than {MAX_VALUE_CHARS} characters"
        )
    if raw.upper().startswith("-----BEGIN%20CERTIFICATE") or (
        "%" in raw and unquote(raw).startswith(_PEM_BEGIN)
    ):
        return _escaped_pem(raw)
    if raw.startswith(_PEM_BEGIN):
        return _raw_pem(value)
    der = _base64_der(raw)
    if der is not None:
        return der
    if _VERIFICATION.fullmatch(raw):
        meaning = {
            "SUCCESS": "Strict verified the certificate",
            "PASSTHROUGH": "Passthrough: a certificate was sent and NOT verified; verify it",
            "NONE": "no client certificate was sent",
        }.get(raw, "verification failed (only seen in logs: Strict answers 400 itself)")
        return Decoded(
            "verification",
            "client_certificate_verification",
            {"value": raw, "meaning": meaning},
        )
    if _OPENSSL_TIME.fullmatch(raw):
        try:
            moment = parse_openssl_time(raw)
        except ValueError as exc:
            return Decoded("date", "OpenSSL date", None, error=str(exc))
        return Decoded(
            "date",
            "client_certificate_start_date / _end_date (OpenSSL's ASN1_TIME_print, UTC)",
            {"utc": moment.isoformat()},
            ("the day is padded with a space, not a zero: 'Jan  6', parse with '%b %e'",),
        )
    if _FINGERPRINT.fullmatch(raw):
        return Decoded(
            "fingerprint",
            "client_certificate_fingerprint (SHA-1 of the DER, lowercase hex)",
            {"sha1": raw},
            ("SHA-1, not SHA-256: compare it with a SHA-1 thumbprint (case-insensitively)",),
        )
    if _SERIAL.fullmatch(raw):
        return Decoded(
            "serial",
            "client_certificate_serial (uppercase hex, whole bytes)",
            {"hex": raw, "decimal": str(int(raw, 16))},
            (
                "whole bytes of the magnitude: a leading zero nibble is printed (0ABC), the "
                "DER sign byte is not; compare serials as integers, not as strings",
            ),
        )
    if _DN_START.match(raw):
        return _dn(value.lstrip().rstrip("\r\n"))
    return Decoded(
        "unknown",
        "not a format of the gateway's certificate variables",
        None,
        error="expected URL-encoded PEM, a DN, a serial, a fingerprint, a date or a verification",
    )


def render_text(decoded: Decoded) -> str:
    lines = [f"kind: {decoded.kind} - {decoded.description}"]
    if decoded.error:
        lines.append(f"error: {decoded.error}")
    parsed = decoded.parsed or {}
    for key, item in parsed.items():
        if key.endswith("Rdns") or key == "rdns":
            shown = ", ".join(" + ".join(f"{a['type']}={a['value']}" for a in rdn) for rdn in item)
            lines.append(f"  {key}: {shown}")
        elif isinstance(item, dict):
            lines.append(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in item.items()))
        elif isinstance(item, list):
            lines.append(f"  {key}: {', '.join(map(str, item)) or '-'}")
        else:
            lines.append(f"  {key}: {item}")
    lines += [f"warning: {w}" for w in decoded.warnings]
    return "\n".join(lines)
