"""Every server variable, one table row each, computed from a request whose facts are all known.

The certificate has the fields whose printing differs between libraries: a non-ASCII subject, a
multi-valued RDN, ``emailAddress``, a serial with a leading zero nibble and one whose DER needs a
leading zero byte, a UTCTime start and a GeneralizedTime end. Expected values are written out
where they are fixed, and checked against ``openssl x509`` (the gateway's own printing code)
where the DER's ordering decides them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from emulator.core.request.server_variables import (
    VARIABLES,
    RequestFacts,
    openssl_cipher_list,
    server_variable,
)
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.model import SERVER_VARIABLE_NAMES

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is the oracle")

SERIAL_LEADING_ZERO_NIBBLE = 0x0A1B2C3D4E5F60718293A4B5C6D7E8F9
#: Top bit set: DER adds a 0x00 sign byte, which OpenSSL does not print.
SERIAL_NEEDS_SIGN_BYTE = 0x8A1B2C3D4E5F60718293A4B5C6D7E8F9
NOT_BEFORE = dt.datetime(2024, 3, 1, 9, 5, 0, tzinfo=dt.UTC)  # UTCTime (before 2050)
NOT_AFTER = dt.datetime(2051, 1, 6, 13, 41, 9, tzinfo=dt.UTC)  # GeneralizedTime (2050 on)


def make_cert(serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso, Ltd")]
            ),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "J\u00fcrgen"),
                    x509.NameAttribute(NameOID.USER_ID, "42"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "juergen@contoso.com")]
            ),
        ]
    )
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Contoso Issuing CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    return make_cert(SERIAL_LEADING_ZERO_NIBBLE)


def facts(cert: x509.Certificate | None = None, **changes: object) -> RequestFacts:
    base = RequestFacts(
        client_ip="203.0.113.7",
        client_port=51234,
        server_port=443,
        scheme="https",
        method="POST",
        target="/a/./b//c%20d/x/../e?x=1&y=%41",
        http_version="1.1",
        headers=(
            ("Host", "GW.Contoso.com:8443"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("Authorization", "Basic " + base64.b64encode(b"alice:pw:with:colons").decode()),
            ("Cookie", "Session=abc; theme=dark"),
        ),
        trace_id="0" * 32,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        certificate=ClientCertInfo.from_certificates(cert) if cert is not None else None,
        verification="PASSTHROUGH" if cert is not None else "NONE",
        ciphers_supported="0x2a2a:TLS_AES_128_GCM_SHA256",
        tcp_rtt_us=1234,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test overrides


def pem_escaped(cert: x509.Certificate) -> str:
    """The PEM, every byte outside A-Z a-z 0-9 - . _ ~ as %XX (written out independently)."""
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    pem = cert.public_bytes(Encoding.PEM)
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in pem)


def expected_values(cert: x509.Certificate) -> dict[str, str]:
    request_head = (
        "POST /a/./b//c%20d/x/../e?x=1&y=%41 HTTP/1.1\r\n"
        "Host: GW.Contoso.com:8443\r\n"
        "X-Forwarded-For: 198.51.100.1\r\n"
        f"Authorization: Basic {base64.b64encode(b'alice:pw:with:colons').decode()}\r\n"
        "Cookie: Session=abc; theme=dark\r\n\r\n"
    )
    return {
        "add_x_forwarded_for_proxy": "198.51.100.1, 203.0.113.7",
        "ciphers_supported": "0x2a2a:TLS_AES_128_GCM_SHA256",
        "ciphers_used": "TLS_AES_256_GCM_SHA384",
        "client_ip": "203.0.113.7",
        "client_port": "51234",
        "client_tcp_rtt": "1234",
        "client_user": "alice",
        "host": "gw.contoso.com",
        "http_method": "POST",
        "http_status": "000",
        "http_version": "HTTP/1.1",
        "query_string": "x=1&y=%41",
        "received_bytes": str(len(request_head)),
        "request_query": "x=1&y=%41",
        "request_scheme": "https",
        "request_uri": "/a/./b//c%20d/x/../e?x=1&y=%41",
        "sent_bytes": "0",
        "server_port": "443",
        "ssl_connection_protocol": "TLSv1.3",
        "ssl_enabled": "On",
        "uri_path": "/a/b/c d/e",
        "client_certificate": pem_escaped(cert),
        "client_certificate_end_date": "Jan  6 13:41:09 2051 GMT",
        "client_certificate_fingerprint": hashlib.sha1(
            cert.public_bytes(Encoding.DER), usedforsecurity=False
        ).hexdigest(),
        "client_certificate_issuer": "CN=Contoso Issuing CA,O=Contoso",
        "client_certificate_serial": "0A1B2C3D4E5F60718293A4B5C6D7E8F9",
        "client_certificate_start_date": "Mar  1 09:05:00 2024 GMT",
        # The multi-valued RDN's order inside follows the DER SET, so openssl decides it below.
        "client_certificate_subject": server_variable("client_certificate_subject", facts(cert)),
        "client_certificate_verification": "PASSTHROUGH",
    }


def test_the_table_covers_every_documented_variable() -> None:
    assert [v.name for v in VARIABLES] == list(SERVER_VARIABLE_NAMES)
    assert all(v.format and v.example for v in VARIABLES)


@pytest.mark.parametrize("name", SERVER_VARIABLE_NAMES)
def test_each_variable_has_its_documented_format(name: str, cert: x509.Certificate) -> None:
    assert server_variable(name, facts(cert)) == expected_values(cert)[name]


@pytest.mark.parametrize("name", SERVER_VARIABLE_NAMES)
def test_names_are_case_insensitive(name: str, cert: x509.Certificate) -> None:
    assert server_variable(name.upper(), facts(cert)) == server_variable(name, facts(cert))


@pytest.mark.parametrize("name", [n for n in SERVER_VARIABLE_NAMES if n.startswith("client_cert")])
def test_without_certificate_the_certificate_variables_are_empty_except_verification(
    name: str,
) -> None:
    expected = "NONE" if name.endswith("_verification") else ""

    assert server_variable(name, facts(None)) == expected


def test_subject_has_the_escapes_keywords_and_plus_of_openssl(cert: x509.Certificate) -> None:
    subject = server_variable("client_certificate_subject", facts(cert))

    assert subject.startswith("emailAddress=juergen@contoso.com,")
    assert "J\\C3\\BCrgen" in subject
    assert "+" in subject
    assert subject.endswith(",O=Contoso\\, Ltd,C=DE")


def openssl_field(cert: x509.Certificate, tmp_path: Path, *options: str) -> str:
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    assert OPENSSL is not None
    out = subprocess.run(
        [OPENSSL, "x509", "-in", str(path), "-noout", *options],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return out.split("=", 1)[1] if "=" in out else out


@needs_openssl
@pytest.mark.parametrize("serial", [SERIAL_LEADING_ZERO_NIBBLE, SERIAL_NEEDS_SIGN_BYTE])
def test_certificate_variables_match_openssl(serial: int, tmp_path: Path) -> None:
    cert = make_cert(serial)
    request = facts(cert)

    def var(name: str) -> str:
        return server_variable(name, request)

    assert var("client_certificate_subject") == openssl_field(
        cert, tmp_path, "-subject", "-nameopt", "RFC2253"
    )
    assert var("client_certificate_issuer") == openssl_field(
        cert, tmp_path, "-issuer", "-nameopt", "RFC2253"
    )
    assert var("client_certificate_serial") == openssl_field(cert, tmp_path, "-serial")
    assert var("client_certificate_start_date") == openssl_field(cert, tmp_path, "-startdate")
    assert var("client_certificate_end_date") == openssl_field(cert, tmp_path, "-enddate")
    fingerprint = openssl_field(cert, tmp_path, "-fingerprint", "-sha1")
    assert var("client_certificate_fingerprint") == fingerprint.replace(":", "").lower()


def test_a_serial_whose_der_has_a_sign_byte_prints_without_it() -> None:
    request = facts(make_cert(SERIAL_NEEDS_SIGN_BYTE))

    assert server_variable("client_certificate_serial", request) == (
        "8A1B2C3D4E5F60718293A4B5C6D7E8F9"
    )


# --- the general variables, case by case -----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host_header", "expected"),
    [
        ("/x", "Contoso.COM", "contoso.com"),
        ("/x", "contoso.com:8080", "contoso.com"),
        ("/x", "[2001:DB8::1]:443", "[2001:db8::1]"),
        ("http://Request-Line.example:8080/x?y", "other.example", "request-line.example"),
        ("http://u@a.example", "other.example", "a.example"),
        ("/x", None, ""),
        # Origin form holding "://" names no host (issue 15): the Host header's stays.
        ("//evil.example/a?u=http://x", "contoso.com", "contoso.com"),
        ("/proxy/http://evil.example/", "contoso.com", "contoso.com"),
    ],
)
def test_host_prefers_the_request_line_then_the_host_header(
    target: str, host_header: str | None, expected: str
) -> None:
    headers = (("Host", host_header),) if host_header is not None else ()

    assert server_variable("host", facts(target=target, headers=headers)) == expected


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/proxy/http://x/y?q", "/proxy/http://x/y"),
        ("http://a.example/p/q?r", "/p/q"),
        ("http://a.example?r", "/"),
        # A refused head is logged with its target as sent; a broken [..] must not raise.
        ("http://[::1%]@/x", "/x"),
    ],
)
def test_path_of_origin_and_absolute_targets(target: str, path: str) -> None:
    assert facts(target=target).path == path


@pytest.mark.parametrize(
    ("authorization", "user"),
    [
        ("Basic " + base64.b64encode(b"bob:secret").decode(), "bob"),
        ("basic " + base64.b64encode(b"bob").decode(), "bob"),
        ("Bearer abc.def", ""),
        ("Basic !!!not-base64", ""),
        (None, ""),
    ],
)
def test_client_user_is_the_basic_auth_user(authorization: str | None, user: str) -> None:
    headers = (("Authorization", authorization),) if authorization is not None else ()

    assert server_variable("client_user", facts(headers=headers)) == user


def test_http_status_is_the_response_status_in_the_response_phase() -> None:
    assert server_variable("http_status", facts(status=404)) == "404"


def test_plain_http_has_no_tls_variables() -> None:
    request = facts(scheme="http", tls_version=None, cipher=None, ciphers_supported="")

    assert server_variable("ssl_enabled", request) == ""
    assert server_variable("ssl_connection_protocol", request) == ""
    assert server_variable("ciphers_used", request) == ""
    assert server_variable("request_scheme", request) == "http"


def test_unknown_tcp_rtt_is_empty() -> None:
    assert server_variable("client_tcp_rtt", facts(tcp_rtt_us=None)) == ""


def test_cookie_names_compare_case_insensitively_as_in_nginx() -> None:
    assert server_variable("cookie_session", facts()) == "abc"
    assert server_variable("cookie_THEME", facts()) == "dark"
    assert server_variable("cookie_missing", facts()) == ""


def test_rewritten_path_and_query_replace_uri_path_and_query_but_not_request_uri() -> None:
    request = facts(rewritten_path="/new path", rewritten_query="a=1")

    assert server_variable("uri_path", request) == "/new path"
    assert server_variable("query_string", request) == "a=1"
    assert server_variable("request_uri", request) == "/a/./b//c%20d/x/../e?x=1&y=%41"


def test_cipher_list_names_known_suites_and_prints_others_as_hex() -> None:
    names = {0x1301: "TLS_AES_128_GCM_SHA256", 0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256"}

    assert openssl_cipher_list([0x2A2A, 0x1301, 0xC02B, 0x00FF], names) == (
        "0x2a2a:TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:0x00ff"
    )


def test_readme_table_is_this_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")

    for v in VARIABLES:
        row = f"| `{v.name}` | " + v.format.replace("|", "\\|") + f" | `{v.example}` |"
        assert row in readme, v.name
