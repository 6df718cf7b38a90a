"""The Strict / Passthrough behaviour table, end to end over real TLS sockets (issue #3).

| mode | client presents | client gets | backend |
|---|---|---|---|
| Strict | leaf (+ intermediate) from the uploaded CA | backend's response | sees the cert |
| Strict | no certificate | 400 "No required SSL certificate was sent" | not contacted |
| Strict | expired / not yet valid / unrelated / self-signed | 400 "The SSL certificate error" | — |
| Passthrough | no certificate | backend's response | no cert header |
| Passthrough | any certificate, valid or not | backend's response | cert, PASSTHROUGH |
| either | a forged X-Client-Cert header | — | never sees the client's value |
"""

from __future__ import annotations

import hashlib
import ssl
from urllib.parse import unquote

import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from tests.helpers.http import (
    client_context,
    forwarded,
    https_request,
    https_requests,
    raw_tls_socket,
    read_to_eof,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import Stack

NO_CERT_PAGE = (
    b"<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>No required SSL certificate was sent</center>\r\n"
    b"<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
)
BAD_CERT_TITLE = b"<title>400 The SSL certificate error</title>"
BAD_CERTS = ["expired", "not_yet_valid", "unrelated", "self_signed"]


def hex_serial(serial: int) -> str:
    """Whole bytes, uppercase, as the gateway and the stub print serials."""
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


async def test_strict_accepts_leaf_from_uploaded_intermediate_and_forwards_it(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion
) -> None:
    ctx = client_context(pki, pki.client, tls_version=tls_version)
    reply = await https_request(demo_stack.port(STRICT_LISTENER), ctx, "/api?x=1")
    assert reply.status == 200
    echoed = reply.json()
    assert echoed["path"] == "/api"
    assert echoed["client_certificate"]["serial"] == hex_serial(pki.client.cert.serial_number)
    pem = pki.client.cert.public_bytes(Encoding.PEM).decode()
    assert unquote(forwarded(reply, "X-Client-Cert")[0]) == pem
    assert forwarded(reply, "X-Client-Cert-Verification") == ["SUCCESS"]
    assert forwarded(reply, "X-Client-Cert-Fingerprint") == [
        hashlib.sha1(pki.client.cert.public_bytes(Encoding.DER)).hexdigest()
    ]
    record = demo_stack.gateway.access_log[-1]
    assert (record.httpStatus, record.sslClientVerify) == (200, "SUCCESS")
    expected_version = "TLSv1.3" if tls_version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    assert record.sslProtocol == expected_version


async def test_strict_accepts_leaf_sent_with_its_intermediate(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    ctx = client_context(pki, pki.client, with_chain=True)
    reply = await https_request(demo_stack.port(STRICT_LISTENER), ctx)
    assert reply.status == 200
    assert forwarded(reply, "X-Client-Cert-Verification") == ["SUCCESS"]


async def test_strict_without_certificate_answers_400_and_does_not_contact_backend(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion
) -> None:
    reply = await https_request(
        demo_stack.port(STRICT_LISTENER), client_context(pki, tls_version=tls_version)
    )
    assert reply.status == 400
    assert reply.body == NO_CERT_PAGE
    assert reply.header("Server") == "Microsoft-Azure-Application-Gateway/v2"
    assert reply.header("Connection") == "close"
    assert demo_stack.recorded == []
    assert demo_stack.gateway.access_log[-1].sslClientVerify == "NONE"


@pytest.mark.parametrize("which", BAD_CERTS)
async def test_strict_rejects_invalid_certificate_with_400(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion, which: str
) -> None:
    ctx = client_context(pki, getattr(pki, which), tls_version=tls_version)
    reply = await https_request(demo_stack.port(STRICT_LISTENER), ctx)
    assert reply.status == 400
    assert BAD_CERT_TITLE in reply.body
    assert demo_stack.recorded == []
    verify = demo_stack.gateway.access_log[-1].sslClientVerify
    expected = {
        "expired": "FAILED:certificate has expired",
        "not_yet_valid": "FAILED:certificate is not yet valid",
        # OpenSSL first reports 20 (no local issuer), then 21 when it cannot check the lone
        # leaf's signature; SSL_get_verify_result, which nginx logs, keeps the last one.
        "unrelated": "FAILED:unable to verify the first certificate",
        "self_signed": "FAILED:self-signed certificate",
    }[which]
    assert verify == expected


async def test_passthrough_without_certificate_forwards_without_cert_header(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion
) -> None:
    reply = await https_request(
        demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki, tls_version=tls_version)
    )
    assert reply.status == 200
    assert forwarded(reply, "X-Client-Cert") == []
    assert reply.json()["client_certificate"] is None
    assert forwarded(reply, "X-Client-Cert-Verification") == ["NONE"]


@pytest.mark.parametrize("which", ["client", *BAD_CERTS])
async def test_passthrough_forwards_any_certificate_unverified(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion, which: str
) -> None:
    cert = getattr(pki, which)
    reply = await https_request(
        demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki, cert, tls_version=tls_version)
    )
    assert reply.status == 200
    assert (
        unquote(forwarded(reply, "X-Client-Cert")[0])
        == cert.cert.public_bytes(Encoding.PEM).decode()
    )
    assert forwarded(reply, "X-Client-Cert-Verification") == ["PASSTHROUGH"]
    assert reply.json()["client_certificate"]["serial"] == hex_serial(cert.cert.serial_number)


@pytest.mark.parametrize("listener", [STRICT_LISTENER, PASSTHROUGH_LISTENER])
@pytest.mark.parametrize("with_cert", [True, False], ids=["with-cert", "no-cert"])
async def test_client_cannot_forge_the_certificate_header(
    demo_stack: Stack, pki: PkiBundle, listener: str, with_cert: bool
) -> None:
    ctx = client_context(pki, pki.client if with_cert else None)
    headers = {"X-Client-Cert": "forged", "x-client-cert-verification": "SUCCESS"}
    reply = await https_request(demo_stack.port(listener), ctx, headers=headers)
    if listener == STRICT_LISTENER and not with_cert:
        assert reply.status == 400
        assert demo_stack.recorded == []
        return
    assert reply.status == 200
    values = forwarded(reply, "X-Client-Cert")
    assert "forged" not in values
    assert len(values) == (1 if with_cert else 0)
    assert forwarded(reply, "X-Client-Cert-Verification") == (
        ["SUCCESS" if listener == STRICT_LISTENER else "PASSTHROUGH"] if with_cert else ["NONE"]
    )


async def test_keep_alive_serves_several_requests_on_one_connection(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    replies = await https_requests(
        demo_stack.port(STRICT_LISTENER), client_context(pki, pki.client), 5
    )
    assert [r.status for r in replies] == [200] * 5
    ports = {r.json()["headers"] and forwarded(r, "X-Forwarded-For")[0] for r in replies}
    assert len(ports) == 1  # same client connection each time


def _send_and_read_to_eof(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    """Write ``data`` (pipelined requests) on one TLS connection; return all bytes until EOF."""
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(data)
        return read_to_eof(tls)


async def test_strict_400_answers_once_then_closes_the_connection(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = await trio.to_thread.run_sync(
        _send_and_read_to_eof, demo_stack.port(STRICT_LISTENER), client_context(pki), request * 3
    )
    assert data.count(b"HTTP/1.1 400 Bad Request") == 1
    assert data.endswith(NO_CERT_PAGE)
    assert demo_stack.recorded == []


async def test_pipelined_requests_are_answered_in_order(demo_stack: Stack, pki: PkiBundle) -> None:
    last = b"Connection: close\r\n"
    requests = b"".join(
        b"GET /%d HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (i, last if i == 2 else b"X-N: 1\r\n")
        for i in range(3)
    )
    data = await trio.to_thread.run_sync(
        _send_and_read_to_eof, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), requests
    )
    assert data.count(b"HTTP/1.1 200 OK") == 3
