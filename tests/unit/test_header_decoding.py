"""decode-header's recognition of each format and its warnings about the classic mistakes."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from emulator.core.tls.certinfo import ClientCertInfo
from emulator.pki import CA
from emulator.reports.header_decoding import decode_header, parse_openssl_dn, parse_openssl_time

#: Certificates to issue at most before one has a '+' in its base64 (each lacks one ~8% of times).
PLUS_ATTEMPTS = 40


@pytest.fixture(scope="module")
def info() -> ClientCertInfo:
    # The '+' test needs a '+' in the PEM's base64, which a random key leaves out about one time
    # in twelve: issue again (new key, new serial) until one is there.
    ca = CA("unit CA")
    for _ in range(PLUS_ATTEMPTS):
        leaf = ca.issue_client(
            "Jürgen", extra_name_attributes=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A, B")]
        )
        found = ClientCertInfo.from_certificates(leaf.cert)
        if "+" in found.pem:
            return found
    raise AssertionError(f"no certificate with a '+' in its PEM in {PLUS_ATTEMPTS} tries")


def test_app_gateway_value_is_parsed_and_the_converter_warning_given(info: ClientCertInfo) -> None:
    decoded = decode_header(info.escaped_pem)
    assert decoded.kind == "client_certificate"
    assert decoded.error is None
    assert decoded.parsed is not None
    assert decoded.parsed["subject"] == "CN=J\\C3\\BCrgen,O=A\\, B"
    assert decoded.parsed["subjectRdns"] == [
        [{"type": "CN", "value": "Jürgen"}],
        [{"type": "O", "value": "A, B"}],
    ]
    assert any("AddCertificateForwarding" in w for w in decoded.warnings)


def test_a_literal_plus_warns_that_form_decoding_corrupts_it(info: ClientCertInfo) -> None:
    # Another encoder that leaves '+' alone (the value still percent-decodes to the PEM).
    plus_kept = quote(info.pem, safe="+")
    assert "+" in plus_kept
    decoded = decode_header(plus_kept)
    assert decoded.error is None
    assert decoded.parsed is not None
    assert decoded.parsed["sha1Fingerprint"] == info.fingerprint_sha1
    assert any("'+' as space" in w and "corrupts" in w for w in decoded.warnings)
    assert any("does not parse" in w or "different certificate" in w for w in decoded.warnings)


def test_base64_der_and_raw_pem_are_recognised_as_not_app_gateway_format(
    info: ClientCertInfo,
) -> None:
    der = base64.b64encode(info.leaf.public_bytes(Encoding.DER)).decode()
    as_der = decode_header(der)
    assert as_der.kind == "base64-der"
    assert as_der.parsed is not None
    assert as_der.parsed["serialNumber"]["hex"] == info.serial
    assert "not App Gateway's format" in as_der.warnings[0]
    folded = decode_header(info.pem.replace("\n", " "))
    assert folded.kind == "pem"
    assert folded.parsed is not None
    assert any("line breaks were replaced" in w for w in folded.warnings)


def test_empty_value_means_no_certificate() -> None:
    decoded = decode_header("")
    assert decoded.kind == "empty"
    assert "deletes a header whose value is empty" in decoded.warnings[0]


@pytest.mark.parametrize(
    ("printed", "rdns"),
    [
        (
            "UID=42+CN=Jane,O=X",
            [
                [{"type": "UID", "value": "42"}, {"type": "CN", "value": "Jane"}],
                [{"type": "O", "value": "X"}],
            ],
        ),
        ("CN=a\\+b\\,c\\\\d", [[{"type": "CN", "value": "a+b,c\\d"}]]),
        ("CN=\\E6\\9D\\B1", [[{"type": "CN", "value": "東"}]]),
        # The escaped trailing space, after HTTP trimmed the space itself.
        ("CN=x,O=Ltd\\", [[{"type": "CN", "value": "x"}], [{"type": "O", "value": "Ltd "}]]),
    ],
)
def test_openssl_dn_parse(printed: str, rdns: list[list[dict[str, str]]]) -> None:
    assert parse_openssl_dn(printed) == rdns


def test_trimmed_trailing_space_is_warned_about() -> None:
    decoded = decode_header("CN=x,O=Ltd\\")
    assert any("lone backslash" in w for w in decoded.warnings)


def test_dates_serials_fingerprints_verification(info: ClientCertInfo) -> None:
    assert parse_openssl_time("Jan  6 13:41:09 2045 GMT").isoformat() == "2045-01-06T13:41:09+00:00"
    with pytest.raises(ValueError, match="not an OpenSSL date"):
        parse_openssl_time("2045-01-06")
    assert decode_header(info.start_date).kind == "date"
    assert decode_header("0ABC").parsed == {"hex": "0ABC", "decimal": str(0x0ABC)}
    assert decode_header(info.fingerprint_sha1).kind == "fingerprint"
    passthrough = decode_header("PASSTHROUGH")
    assert passthrough.parsed is not None
    assert "NOT verified" in passthrough.parsed["meaning"]


def _bad_version_der(info: ClientCertInfo) -> bytes:
    """The leaf's DER with its version field set to 8 (v1-v3 are 0-2): what a hostile client
    or proxy may put in a header, and a refusal cryptography raises as its own type."""
    der = bytearray(info.leaf.public_bytes(Encoding.DER))
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
    assert at > 0
    der[at + 4] = 7
    return bytes(der)


def test_a_certificate_with_an_invalid_version_is_an_error_not_a_crash(
    info: ClientCertInfo,
) -> None:
    der = _bad_version_der(info)
    body = base64.b64encode(der).decode()
    pem = (
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + "\n-----END CERTIFICATE-----\n"
    )
    escaped = decode_header(quote(pem, safe=""))
    assert escaped.parsed is None
    assert escaped.error is not None
    assert "not a valid X509 version" in escaped.error
    with_plus = decode_header(quote(pem, safe="+"))
    assert with_plus.parsed is None
    assert with_plus.error is not None
    raw = decode_header(pem)
    assert raw.parsed is None
    assert raw.error is not None
    # As base64 DER it is not recognised as a certificate at all, rather than crashing.
    assert decode_header(body).parsed is None
