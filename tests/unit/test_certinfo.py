"""ClientCertInfo and the OpenSSL/nginx formats behind Azure's mTLS server variables.

The installed ``openssl`` command is the oracle: Azure's gateway is nginx on OpenSSL, and
``openssl x509 -nameopt RFC2253 -subject -serial -startdate ...`` runs the same printing code
(``X509_NAME_print_ex``, ``i2a_ASN1_INTEGER``, ``ASN1_TIME_print``) as nginx's ``$ssl_client_*``
variables. Certificates are generated here with ``cryptography``, one per case.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from emulator.core.tls.certinfo import (
    CERTIFICATE_VARIABLES,
    ClientCertInfo,
    escape_uri_component,
    openssl_serial,
    openssl_time,
)
from emulator.core.tls.dn import OPENSSL_SHORT_NAMES, dotnet_dn, openssl_rfc2253

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="the openssl command is the oracle for OpenSSL's output formats"
)

# One key signs and is certified everywhere: key generation is the slow part and the formats
# under test do not depend on the key.
KEY = ec.generate_private_key(ec.SECP256R1())

ISSUER = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso Test"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Contoso Test Root Ü"),
    ]
)

NOT_BEFORE = datetime(2024, 1, 6, 3, 4, 5, tzinfo=UTC)
NOT_AFTER = datetime(2045, 1, 16, 13, 41, 9, tzinfo=UTC)


def attr(
    oid: x509.ObjectIdentifier, value: str, kind: _ASN1Type | None = None
) -> x509.NameAttribute[str]:
    if kind is None:
        return x509.NameAttribute(oid, value)
    return x509.NameAttribute(oid, value, _type=kind)


def rdn(
    *attributes: x509.NameAttribute[str] | x509.NameAttribute[bytes],
) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName(attributes)


def make_cert(
    subject: x509.Name | Sequence[x509.RelativeDistinguishedName],
    *,
    issuer: x509.Name = ISSUER,
    serial: int = 0x1234,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
) -> x509.Certificate:
    name = subject if isinstance(subject, x509.Name) else x509.Name(list(subject))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(KEY, hashes.SHA256())
    )


def openssl_view(cert: x509.Certificate, tmp_path: Path) -> dict[str, str]:
    """What ``openssl x509`` prints for ``cert``, by field, prefixes stripped."""
    assert OPENSSL is not None
    pem_file = tmp_path / f"cert-{cert.serial_number:x}.pem"
    pem_file.write_bytes(cert.public_bytes(Encoding.PEM))
    result = subprocess.run(
        [
            OPENSSL, "x509", "-in", str(pem_file), "-noout", "-nameopt", "RFC2253",
            "-subject", "-issuer", "-serial", "-startdate", "-enddate", "-fingerprint", "-sha1",
        ],
        check=True,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )  # fmt: skip
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        # OpenSSL 3 says "sha1 Fingerprint", 1.1 "SHA1 Fingerprint".
        fields[key.lower() if key.lower().endswith("fingerprint") else key] = value
    return {
        "subject": fields["subject"],
        "issuer": fields["issuer"],
        "serial": fields["serial"],
        "start_date": fields["notBefore"],
        "end_date": fields["notAfter"],
        "fingerprint_sha1": fields["sha1 fingerprint"].replace(":", "").lower(),
    }


def ours(info: ClientCertInfo) -> dict[str, str]:
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "start_date": info.start_date,
        "end_date": info.end_date,
        "fingerprint_sha1": info.fingerprint_sha1,
    }


SUBJECTS: dict[str, list[x509.RelativeDistinguishedName]] = {
    "non_ascii_utf8": [
        rdn(attr(NameOID.COUNTRY_NAME, "DE")),
        rdn(attr(NameOID.LOCALITY_NAME, "München")),
        rdn(attr(NameOID.ORGANIZATION_NAME, "Müller GmbH")),
        rdn(attr(NameOID.COMMON_NAME, "Jürgen 日本 😀")),
    ],
    "multi_valued_rdn": [
        rdn(attr(NameOID.ORGANIZATION_NAME, "Contoso")),
        rdn(attr(NameOID.COMMON_NAME, "alice"), attr(NameOID.USER_ID, "a123")),
    ],
    "multi_valued_rdn_three_types": [
        rdn(
            attr(NameOID.SURNAME, "Smith"),
            attr(NameOID.GIVEN_NAME, "Ann"),
            attr(NameOID.SERIAL_NUMBER, "42"),
        ),
    ],
    "email_and_two_ous": [
        rdn(attr(NameOID.COUNTRY_NAME, "US")),
        rdn(attr(NameOID.STATE_OR_PROVINCE_NAME, "Arizona")),
        rdn(attr(NameOID.ORGANIZATION_NAME, "Contoso")),
        rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Eng")),
        rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops")),
        rdn(attr(NameOID.COMMON_NAME, "user1")),
        rdn(attr(NameOID.EMAIL_ADDRESS, "user1@contoso.example")),
    ],
    "rfc2253_specials": [
        rdn(attr(NameOID.ORGANIZATION_NAME, "Acme, Inc.")),
        rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "#hash at start, # inside")),
        rdn(attr(NameOID.COMMON_NAME, " spaces  around ")),
        rdn(attr(NameOID.TITLE, 'say "hi"')),
        rdn(attr(NameOID.PSEUDONYM, "a+b<c>d;e\\f=g")),
    ],
    "one_character_values": [
        rdn(attr(NameOID.ORGANIZATION_NAME, "#")),
        rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, " ")),
        rdn(attr(NameOID.COMMON_NAME, ",")),
        rdn(attr(NameOID.TITLE, "x")),
    ],
    "control_characters": [
        rdn(attr(NameOID.COMMON_NAME, "tab\there\nnew\x7fdel")),
    ],
    "string_types": [
        rdn(attr(NameOID.COUNTRY_NAME, "NZ", _ASN1Type.PrintableString)),
        rdn(attr(NameOID.ORGANIZATION_NAME, "Grüße €", _ASN1Type.BMPString)),
        rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Grüße 😀", _ASN1Type.UniversalString)),
        rdn(attr(NameOID.LOCALITY_NAME, "Tëst", _ASN1Type.T61String)),
        rdn(attr(NameOID.EMAIL_ADDRESS, "a@b.example", _ASN1Type.IA5String)),
        rdn(attr(NameOID.SERIAL_NUMBER, "0042", _ASN1Type.NumericString)),
        # No VisibleString: OpenSSL refuses to load a certificate whose name uses it.
    ],
    "unknown_attribute_types": [
        rdn(attr(NameOID.COMMON_NAME, "known")),
        rdn(attr(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "private, ü")),
        rdn(
            attr(NameOID.COMMON_NAME, "mixed"),
            attr(x509.ObjectIdentifier("2.999.7"), "x", _ASN1Type.PrintableString),
        ),
    ],
    "bit_string_value_is_dumped": [
        rdn(
            x509.NameAttribute(
                NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xa5", _type=_ASN1Type.BitString
            )
        ),
        rdn(attr(NameOID.COMMON_NAME, "with unique id")),
    ],
    "every_known_short_name": [
        rdn(attr(x509.ObjectIdentifier(oid), f"{index:02d}"))
        # Every row of the short-name table, so a wrong row fails here, not in production.
        for index, oid in enumerate(sorted(OPENSSL_SHORT_NAMES))
    ],
}


@needs_openssl
@pytest.mark.parametrize("case", sorted(SUBJECTS))
def test_subject_and_issuer_match_openssl_rfc2253(case: str, tmp_path: Path) -> None:
    cert = make_cert(SUBJECTS[case])
    assert ours(ClientCertInfo.from_certificates(cert)) == openssl_view(cert, tmp_path)


@needs_openssl
def test_subject_escapes_utf8_bytes_as_uppercase_hex(tmp_path: Path) -> None:
    cert = make_cert(SUBJECTS["non_ascii_utf8"])
    info = ClientCertInfo.from_certificates(cert)
    assert info.subject.startswith("CN=J\\C3\\BCrgen ")
    assert ",O=M\\C3\\BCller GmbH," in info.subject
    assert info.issuer == "CN=Contoso Test Root \\C3\\9C,O=Contoso Test,C=US"
    assert info.subject == openssl_view(cert, tmp_path)["subject"]


@needs_openssl
def test_issuer_is_printed_from_the_issuer_name(tmp_path: Path) -> None:
    issuer = x509.Name(
        [rdn(attr(NameOID.DOMAIN_COMPONENT, "com")), rdn(attr(NameOID.DOMAIN_COMPONENT, "ex"))]
    )
    cert = make_cert(SUBJECTS["multi_valued_rdn"], issuer=issuer)
    info = ClientCertInfo.from_certificates(cert)
    assert info.issuer == "DC=ex,DC=com"
    assert info.subject == "UID=a123+CN=alice,O=Contoso"
    assert ours(info) == openssl_view(cert, tmp_path)


@needs_openssl
@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        pytest.param(0x80 << 144 | 0xABCDEF, "80" + "00" * 15 + "ABCDEF", id="top-bit-set"),
        pytest.param(0xFF, "FF", id="one-byte-top-bit-set"),
        pytest.param(0x0ABC, "0ABC", id="leading-zero-nibble"),
        pytest.param(0x000102, "0102", id="leading-zero-byte-dropped"),
        pytest.param(1, "01", id="one"),
        pytest.param(0x184487C4436B56824CCCA9B809653FC9, "184487C4436B56824CCCA9B809653FC9",
                     id="azure-doc-example"),
    ],
)  # fmt: skip
def test_serial_matches_openssl_whole_bytes_uppercase(
    serial: int, expected: str, tmp_path: Path
) -> None:
    cert = make_cert(SUBJECTS["multi_valued_rdn"], serial=serial)
    info = ClientCertInfo.from_certificates(cert)
    assert info.serial == expected
    assert info.serial == openssl_view(cert, tmp_path)["serial"]


def test_serial_formats_zero_and_negative_like_i2a_asn1_integer() -> None:
    assert openssl_serial(0) == "00"
    assert openssl_serial(-0x80) == "-80"


@needs_openssl
@pytest.mark.parametrize(
    ("not_before", "not_after", "start", "end"),
    [
        pytest.param(
            datetime(2024, 1, 6, 3, 4, 5, tzinfo=UTC),
            datetime(2045, 1, 16, 13, 41, 9, tzinfo=UTC),
            "Jan  6 03:04:05 2024 GMT",
            "Jan 16 13:41:09 2045 GMT",
            id="utctime-day-padded",
        ),
        pytest.param(
            datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC),
            "Dec 31 23:59:59 2049 GMT",
            "Jan  1 00:00:00 2050 GMT",
            id="utctime-to-generalizedtime-boundary",
        ),
        pytest.param(
            datetime(1999, 9, 9, 9, 9, 9, tzinfo=UTC),
            datetime(2107, 2, 28, 12, 0, 0, tzinfo=UTC),
            "Sep  9 09:09:09 1999 GMT",
            "Feb 28 12:00:00 2107 GMT",
            id="last-century-and-next",
        ),
    ],
)
def test_validity_dates_match_asn1_time_print(
    not_before: datetime, not_after: datetime, start: str, end: str, tmp_path: Path
) -> None:
    cert = make_cert(
        SUBJECTS["multi_valued_rdn"], not_before=not_before, not_after=not_after, serial=7
    )
    info = ClientCertInfo.from_certificates(cert)
    assert (info.start_date, info.end_date) == (start, end)
    oracle = openssl_view(cert, tmp_path)
    assert (info.start_date, info.end_date) == (oracle["start_date"], oracle["end_date"])


def test_openssl_time_takes_naive_as_utc_and_converts_aware() -> None:
    east = datetime(2030, 3, 1, 1, 0, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    assert openssl_time(east) == "Mar  1 01:00:00 2030 GMT"
    assert openssl_time(datetime(2030, 3, 1, 1, 0, 0)) == "Mar  1 01:00:00 2030 GMT"


@needs_openssl
def test_pem_is_what_openssl_writes(tmp_path: Path) -> None:
    assert OPENSSL is not None
    cert = make_cert(SUBJECTS["email_and_two_ous"])
    info = ClientCertInfo.from_certificates(cert)
    pem_file = tmp_path / "leaf.pem"
    pem_file.write_bytes(cert.public_bytes(Encoding.PEM))
    rewritten = subprocess.run(
        [OPENSSL, "x509", "-in", str(pem_file)], check=True, capture_output=True, text=True
    ).stdout
    assert info.pem == rewritten
    body = info.pem.splitlines()[1:-1]
    assert all(len(line) == 64 for line in body[:-1])
    assert info.pem.endswith("-----END CERTIFICATE-----\n")


def test_escape_uri_component_matches_hand_written_sample() -> None:
    sample = "-----BEGIN CERTIFICATE-----\nab+/=\n"
    assert escape_uri_component(sample) == "-----BEGIN%20CERTIFICATE-----%0Aab%2B%2F%3D%0A"


def test_escape_uri_component_leaves_only_unreserved_characters() -> None:
    every_ascii = "".join(chr(code) for code in range(128)) + "ü€"
    # Python's quote() with no safe characters escapes exactly RFC 3986's non-"unreserved" set,
    # which is nginx's uri_component table; both write uppercase hex.
    assert escape_uri_component(every_ascii) == quote(every_ascii, safe="")
    assert escape_uri_component("AZaz09-._~") == "AZaz09-._~"


def test_client_certificate_is_escaped_pem_that_decodes_back() -> None:
    cert = make_cert(SUBJECTS["multi_valued_rdn"])
    info = ClientCertInfo.from_certificates(cert)
    assert info.escaped_pem.startswith("-----BEGIN%20CERTIFICATE-----%0AMI")
    assert info.escaped_pem.endswith("%0A-----END%20CERTIFICATE-----%0A")
    assert unquote(info.escaped_pem) == info.pem
    assert not set(info.escaped_pem) & set(" \n+/=")


def test_fingerprint_is_lowercase_sha1_of_der() -> None:
    cert = make_cert(SUBJECTS["multi_valued_rdn"])
    info = ClientCertInfo.from_certificates(cert)
    assert info.fingerprint_sha1 == cert.fingerprint(hashes.SHA1()).hex()
    assert len(info.fingerprint_sha1) == 40
    assert info.fingerprint_sha1 == info.fingerprint_sha1.lower()


def test_info_is_frozen_and_keeps_the_chain_sent_after_the_leaf() -> None:
    leaf = make_cert(SUBJECTS["multi_valued_rdn"])
    intermediate = make_cert(SUBJECTS["email_and_two_ous"], serial=99)
    info = ClientCertInfo.from_certificates(leaf, [intermediate])
    assert info.leaf is leaf
    assert info.chain == (intermediate,)
    assert ClientCertInfo.from_certificates(leaf).chain == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.subject = "CN=forged"  # type: ignore[misc]


def test_server_variables_use_azure_names() -> None:
    info = ClientCertInfo.from_certificates(make_cert(SUBJECTS["multi_valued_rdn"]))
    variables = info.server_variables()
    assert set(variables) == set(CERTIFICATE_VARIABLES)
    assert variables["client_certificate"] == info.escaped_pem
    assert variables["client_certificate_subject"] == "UID=a123+CN=alice,O=Contoso"
    assert "client_certificate_verification" not in variables


def test_openssl_rfc2253_accepts_a_cryptography_name() -> None:
    name = x509.Name(SUBJECTS["email_and_two_ous"])
    assert openssl_rfc2253(name) == (
        "emailAddress=user1@contoso.example,CN=user1,OU=Ops,OU=Eng,O=Contoso,ST=Arizona,C=US"
    )
    # Not the same as cryptography's own RFC 4514 rendering, which is why this module exists.
    assert name.rfc4514_string() != openssl_rfc2253(name)


def test_dotnet_dn_is_most_specific_first_with_windows_keywords() -> None:
    name = x509.Name(
        [
            rdn(attr(NameOID.COUNTRY_NAME, "US")),
            rdn(attr(NameOID.STATE_OR_PROVINCE_NAME, "Arizona")),
            rdn(attr(NameOID.ORGANIZATION_NAME, "Contoso, Ltd")),
            rdn(attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Eng")),
            rdn(attr(NameOID.COMMON_NAME, "User1"), attr(NameOID.EMAIL_ADDRESS, "u@c.example")),
        ]
    )
    assert dotnet_dn(name) == (
        'CN=User1 + E=u@c.example, OU=Eng, O="Contoso, Ltd", S=Arizona, C=US'
    )


def test_core_modules_do_not_import_trio() -> None:
    code = (
        "import sys, emulator.core.tls.certinfo, emulator.core.tls.dn; "
        "sys.exit(1 if 'trio' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
