"""Distinguished names printed the way the gateway's backends see them.

Azure Application Gateway v2 runs nginx on OpenSSL, and its ``client_certificate_subject`` /
``client_certificate_issuer`` server variables are nginx's ``$ssl_client_s_dn`` /
``$ssl_client_i_dn``: ``X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253)``. That is close to,
but not the same as, ``cryptography``'s ``rfc4514_string()``: OpenSSL escapes every byte >= 0x80
as ``\\XX`` (so ``ü`` becomes ``\\C3\\BC``), uses its own short names (``emailAddress``, ``UID``,
``GN``), joins multi-valued RDNs with ``+`` in reverse DER order, and dumps unknown attribute
types as ``1.2.3.4=#<hex DER>``. A backend that compares the header byte for byte (an allow-list
of subjects, a log parser) breaks on any of these differences, so this module re-implements the
relevant parts of OpenSSL's ``crypto/asn1/a_strex.c`` (``do_name_ex`` → ``do_print_ex`` →
``do_buf`` → ``do_esc_char``) over the name's DER.

The flags that matter, spelled out (``XN_FLAG_RFC2253``):

* ``XN_FLAG_DN_REV``: entries are printed last-to-first, so the most specific RDN comes first and
  the attributes *inside* a multi-valued RDN also come out in reverse DER order.
* ``XN_FLAG_SEP_COMMA_PLUS``: ``,`` between RDNs and ``+`` inside one, no spaces.
* ``XN_FLAG_FN_SN`` + ``XN_FLAG_DUMP_UNKNOWN_FIELDS``: OpenSSL's short name for attribute types it
  knows; dotted OID and ``#`` + hex of the whole DER value for the ones it does not.
* ``ASN1_STRFLGS_RFC2253`` = ESC_2253 | ESC_CTRL | ESC_MSB | UTF8_CONVERT | DUMP_UNKNOWN |
  DUMP_DER: ``,+"\\<>;`` get a backslash, so does a leading ``#`` or space and a trailing space;
  control characters and every byte >= 0x80 of the UTF-8 form become ``\\XX`` (uppercase hex);
  non-string value types are dumped as ``#`` + hex DER.

The value is read from the DER (not from ``cryptography``'s decoded ``str``) because OpenSSL
prints the string *types* differently: a UTF8String's bytes are escaped as they are, while a
T61String/PrintableString/IA5String is read as Latin-1 and a BMPString/UniversalString as
UCS-2/UCS-4, converted to UTF-8 and then escaped.

Pure functions over values: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "DerError",
    "NameEntry",
    "dotnet_dn",
    "issuer_and_subject_der",
    "name_entries",
    "openssl_rfc2253",
    "openssl_rfc2253_der",
]

# --- DER reading ---------------------------------------------------------------------------

_TAG_SEQUENCE: Final = 0x30
_TAG_SET: Final = 0x31
_TAG_OID: Final = 0x06
_TAG_INTEGER: Final = 0x02
#: ``[0] EXPLICIT Version`` at the start of a TBSCertificate (RFC 5280 §4.1).
_TAG_TBS_VERSION: Final = 0xA0


class DerError(ValueError):
    """The bytes are not the DER this module expects (a Name, or a TBSCertificate)."""


def _read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read one DER TLV at ``offset``.

    Returns ``(tag, content_start, end)``; the content is ``data[content_start:end]`` and the whole
    encoding is ``data[offset:end]``. Only low tag numbers (< 31) are supported, which covers
    every type that can appear in a Name or the head of a TBSCertificate.
    """
    if offset + 2 > len(data):
        raise DerError("truncated DER: no room for tag and length")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"high tag numbers are not supported (tag byte {tag:#04x})")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or pos + count > len(data):
            raise DerError("indefinite or truncated DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise DerError("DER length runs past the end of the data")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(tag, tlv_start, content_start, end)`` for each TLV in ``data[start:end]``."""
    pos = start
    while pos < end:
        tag, content, stop = _read_tlv(data, pos)
        if stop > end:
            raise DerError("child TLV runs past its parent")
        yield tag, pos, content, stop
        pos = stop


def _oid_dotted(content: bytes) -> str:
    """Decode OBJECT IDENTIFIER content octets to dotted form (``OBJ_obj2txt(..., 1)``)."""
    if not content:
        raise DerError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise DerError("OBJECT IDENTIFIER ends inside an arc")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


@dataclass(frozen=True, slots=True)
class NameEntry:
    """One attribute of a Name as stored in DER, in DER order.

    ``rdn_index`` numbers the RDN the entry belongs to, like OpenSSL's ``X509_NAME_ENTRY_set``;
    entries sharing an index form one multi-valued RDN. ``value_der`` is the complete TLV of the
    value (tag, length, content), which is what ``DUMP_DER`` prints.
    """

    rdn_index: int
    oid: str
    value_tag: int
    value_der: bytes
    value_content: bytes


def name_entries(der: bytes) -> tuple[NameEntry, ...]:
    """Split a DER ``Name`` (SEQUENCE OF SET OF AttributeTypeAndValue) into its entries.

    Raises:
        DerError: the bytes are not a DER Name.
    """
    tag, start, end = _read_tlv(der, 0)
    if tag != _TAG_SEQUENCE or end != len(der):
        raise DerError("a Name must be exactly one SEQUENCE")
    entries: list[NameEntry] = []
    for rdn_index, (set_tag, _, set_start, set_end) in enumerate(_children(der, start, end)):
        if set_tag != _TAG_SET:
            raise DerError("an RDN must be a SET")
        for atv_tag, _, atv_start, atv_end in _children(der, set_start, set_end):
            if atv_tag != _TAG_SEQUENCE:
                raise DerError("an AttributeTypeAndValue must be a SEQUENCE")
            parts = list(_children(der, atv_start, atv_end))
            if len(parts) != 2 or parts[0][0] != _TAG_OID:
                raise DerError("an AttributeTypeAndValue must be (OID, value)")
            _, _, oid_start, oid_end = parts[0]
            value_tag, value_tlv, value_start, value_end = parts[1]
            entries.append(
                NameEntry(
                    rdn_index=rdn_index,
                    oid=_oid_dotted(der[oid_start:oid_end]),
                    value_tag=value_tag,
                    value_der=der[value_tlv:value_end],
                    value_content=der[value_start:value_end],
                )
            )
    return tuple(entries)


def issuer_and_subject_der(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """Return the issuer and subject Names exactly as encoded in the certificate.

    ``cryptography``'s ``Name.public_bytes()`` re-encodes from decoded values, which can change
    string types and the order inside a SET; OpenSSL prints what the client sent, so the bytes
    are taken from the TBSCertificate (RFC 5280 §4.1: version?, serial, signature, issuer,
    validity, subject).
    """
    tbs = cert.tbs_certificate_bytes
    tag, start, end = _read_tlv(tbs, 0)
    if tag != _TAG_SEQUENCE:
        raise DerError("TBSCertificate must be a SEQUENCE")
    fields = list(_children(tbs, start, end))
    index = 1 if fields and fields[0][0] == _TAG_TBS_VERSION else 0
    # serial, signature algorithm, issuer, validity, subject
    if len(fields) < index + 5 or fields[index][0] != _TAG_INTEGER:
        raise DerError("TBSCertificate is missing its leading fields")
    issuer = fields[index + 2]
    subject = fields[index + 4]
    return tbs[issuer[1] : issuer[3]], tbs[subject[1] : subject[3]]


# --- OpenSSL's RFC 2253 printer -------------------------------------------------------------

#: OpenSSL short names (``OBJ_nid2sn``) of the attribute types it knows, from its
#: ``crypto/objects/objects.txt``. A type missing here is printed as an unknown one (dotted OID
#: + DER dump); the unit tests check every row against the installed ``openssl``.
OPENSSL_SHORT_NAMES: Final[dict[str, str]] = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.8": "unstructuredAddress",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

#: ``tag2nbyte`` in a_strex.c: universal string tags → bytes per character (0 = UTF-8).
#: Any other tag is "unknown" and dumped as hex DER (``ASN1_STRFLGS_DUMP_UNKNOWN``).
_CHAR_WIDTH_BY_TAG: Final[dict[int, int]] = {
    12: 0,  # UTF8String
    18: 1,  # NumericString
    19: 1,  # PrintableString
    20: 1,  # T61String
    22: 1,  # IA5String
    23: 1,  # UTCTime
    24: 1,  # GeneralizedTime
    26: 1,  # VisibleString
    28: 4,  # UniversalString
    30: 2,  # BMPString
}

#: RFC 2253 §2.4 specials that OpenSSL escapes with a backslash wherever they appear.
_BACKSLASH_ANYWHERE: Final = frozenset(b',+"\\<>;')
_SPACE: Final = 0x20
_HASH: Final = 0x23
_DEL: Final = 0x7F


def _escape_byte(byte: int, *, first: bool, last: bool) -> str:
    """``do_esc_char`` for one byte under ``ASN1_STRFLGS_RFC2253``."""
    if byte > _DEL:
        return f"\\{byte:02X}"
    if (
        byte in _BACKSLASH_ANYWHERE
        or (byte == _SPACE and (first or last))
        or (byte == _HASH and first)
    ):
        return "\\" + chr(byte)
    if byte < _SPACE or byte == _DEL:
        return f"\\{byte:02X}"
    return chr(byte)


def _characters(content: bytes, width: int) -> list[bytes]:
    """Split a string value into characters, each as the bytes ``do_esc_char`` will see.

    A UTF8String (width 0) is taken one byte per character, exactly as OpenSSL does under
    ``UTF8_CONVERT`` ("to avoid converting twice"); other widths are decoded to code points and
    re-encoded as UTF-8.

    Raises:
        ValueError: the content does not fit the width, or holds a code point UTF-8 cannot carry.
    """
    if width == 0:
        return [bytes((byte,)) for byte in content]
    if len(content) % width:
        raise ValueError(f"string length {len(content)} is not a multiple of {width}")
    chars: list[bytes] = []
    for pos in range(0, len(content), width):
        code_point = int.from_bytes(content[pos : pos + width], "big")
        chars.append(chr(code_point).encode("utf-8"))
    return chars


def _print_value(entry: NameEntry, *, known_type: bool) -> str:
    """``do_print_ex`` for one value: escaped text, or ``#`` + hex DER when it cannot be shown."""
    width = _CHAR_WIDTH_BY_TAG.get(entry.value_tag) if known_type else None
    if width is not None:
        try:
            chars = _characters(entry.value_content, width)
        except (ValueError, UnicodeEncodeError):
            # Differs from Azure: OpenSSL fails the whole print (nginx then has no value); a
            # dump keeps the header informative instead of empty.
            chars = None
        if chars is not None:
            out: list[str] = []
            for index, char in enumerate(chars):
                # do_buf sets "first" before reading a character and overwrites it with "last"
                # after, so a one-character value is only ever "last": a lone "#" is not escaped.
                last = index == len(chars) - 1
                first = index == 0 and not last
                out.extend(_escape_byte(byte, first=first, last=last) for byte in char)
            return "".join(out)
    return "#" + entry.value_der.hex().upper()


def openssl_rfc2253_der(der: bytes) -> str:
    """Print a DER Name as ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)`` does.

    Raises:
        DerError: ``der`` is not a DER Name.
    """
    parts: list[str] = []
    previous_rdn: int | None = None
    for entry in reversed(name_entries(der)):
        if previous_rdn is not None:
            parts.append("+" if entry.rdn_index == previous_rdn else ",")
        previous_rdn = entry.rdn_index
        short_name = OPENSSL_SHORT_NAMES.get(entry.oid)
        parts.append(short_name if short_name is not None else entry.oid)
        parts.append("=")
        parts.append(_print_value(entry, known_type=short_name is not None))
    return "".join(parts)


def openssl_rfc2253(name: x509.Name) -> str:
    """Print ``name`` exactly as ``openssl x509 -nameopt RFC2253`` / nginx ``$ssl_client_s_dn``.

    ``name`` is re-encoded with ``public_bytes()``; for a certificate's own names prefer
    :func:`issuer_and_subject_der` + :func:`openssl_rfc2253_der`, which read the bytes the
    client actually sent.
    """
    return openssl_rfc2253_der(name.public_bytes())


# --- .NET-style display ---------------------------------------------------------------------

#: Keywords of Windows ``CertNameToStr`` (``CERT_X500_NAME_STR``), which .NET's
#: ``X500DistinguishedName.Name`` follows; anything else is shown as ``OID.<dotted>``.
_DOTNET_KEYWORDS: Final[dict[x509.ObjectIdentifier, str]] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.COUNTRY_NAME: "C",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.TITLE: "T",
    NameOID.GIVEN_NAME: "G",
    NameOID.INITIALS: "I",
    NameOID.SURNAME: "SN",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "PostalCode",
    NameOID.DN_QUALIFIER: "dnQualifier",
}

#: Characters that make CertNameToStr wrap a value in double quotes.
_DOTNET_QUOTE_TRIGGERS: Final = frozenset(',+="\n<>#;')


def _dotnet_value(value: str) -> str:
    needs_quotes = (
        not value
        or value[0].isspace()
        or value[-1].isspace()
        or any(ch in _DOTNET_QUOTE_TRIGGERS for ch in value)
    )
    if not needs_quotes:
        return value
    return '"' + value.replace('"', '""') + '"'


def dotnet_dn(name: x509.Name) -> str:
    """Show ``name`` as .NET does (``X500DistinguishedName.Name``), for Azure's read-only
    ``clientCertIssuerDN`` property: ``CN=User1, OU=Eng, O=Contoso, S=Arizona, C=US``.

    Best effort, documented rather than verified: most specific RDN first, ``", "`` between RDNs,
    ``" + "`` inside a multi-valued one, Windows keywords (``S`` for ST, ``E`` for emailAddress),
    ``OID.<dotted>`` for the rest, and values with specials quoted with ``"`` (inner quotes
    doubled). It is display text only; nothing compares it byte for byte.
    """
    rdns: list[str] = []
    for rdn in reversed(name.rdns):
        attributes = []
        for attribute in rdn:
            keyword = _DOTNET_KEYWORDS.get(attribute.oid, f"OID.{attribute.oid.dotted_string}")
            value = attribute.value
            text = value if isinstance(value, str) else value.hex().upper()
            attributes.append(f"{keyword}={_dotnet_value(text)}")
        rdns.append(" + ".join(attributes))
    return ", ".join(rdns)
