"""On the wire and in the access log like Azure (issue 21, items 4-6), end to end: real TLS
clients, the demo gateway, the stub backend.

- Pages carry ``Date`` and nginx's header order; ``Connection`` says keep-alive or close, on
  proxied responses too (nginx's header filter writes it on every HTTP/1.x response).
- TRACE is nginx's 405 "Not Allowed" page, the connection kept, nothing forwarded.
- Access records: receivedBytes/sentBytes as the bytes on the wire, error_info with the
  monitoring reference's codes.
"""

from __future__ import annotations

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.core.http.pages import GatewayPage
from tests.helpers.http import (
    assert_gateway_page,
    client_context,
    parse_responses,
    tcp_exchange,
    tls_exchange,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import Stack, wait_for_access_records

pytestmark = pytest.mark.usefixtures("no_internal_errors")

LAST = b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def exchange(stack: Stack, pki: PkiBundle, data: bytes) -> bytes:
    return await trio.to_thread.run_sync(
        tls_exchange, stack.port(PASSTHROUGH_LISTENER), client_context(pki), data
    )


async def test_trace_gets_nginx_405_keeps_the_connection_and_is_never_forwarded(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    trace = b"TRACE /echo HTTP/1.1\r\nHost: localhost\r\nX-Secret: s\r\n\r\n"
    refused, after = parse_responses(await exchange(demo_stack, pki, trace + LAST))
    assert_gateway_page(refused, GatewayPage.NOT_ALLOWED)
    assert (refused.status, refused.header("Connection")) == (405, "keep-alive")
    assert b"<title>405 Not Allowed</title>" in refused.body
    assert after.status == 200
    assert [r.target for r in demo_stack.recorded] == ["/after"]
    record = demo_stack.gateway.access_log[0]
    assert (record.httpMethod, record.httpStatus) == ("TRACE", 405)
    assert record.error_info == "ERRORINFO_INVALID_METHOD_TRACE"


async def test_a_proxied_response_says_keep_alive_and_the_last_one_close(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    first = b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n"
    kept, closed = parse_responses(await exchange(demo_stack, pki, first + LAST))
    assert (kept.status, kept.header("Connection")) == (200, "keep-alive")
    assert (closed.status, closed.header("Connection")) == (200, "close")
    assert [name.lower() for name, _ in kept.headers].count("connection") == 1


async def test_received_and_sent_bytes_are_the_bytes_on_the_wire(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    body = b"x" * 1000
    request = (
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Length: 1000\r\n\r\n" + body
    )
    data = await exchange(demo_stack, pki, request)
    (reply,) = parse_responses(data)
    assert reply.status == 200
    record = demo_stack.gateway.access_log[-1]
    assert record.receivedBytes == len(request)
    assert record.sentBytes == len(data)
    assert record.clientResponseTime >= 0
    assert record.error_info == "ERRORINFO_NO_ERROR"


async def test_received_bytes_of_a_chunked_body_count_its_framing(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    request = (
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    (reply,) = parse_responses(await exchange(demo_stack, pki, request))
    assert reply.status == 200
    assert demo_stack.gateway.access_log[-1].receivedBytes == len(request)


@pytest.mark.parametrize(
    ("request_bytes", "status", "error_info"),
    [
        (b"GET123 / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "ERRORINFO_INVALID_METHOD"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "ERRORINFO_HTTP_NO_HOST_HEADER"),
        (b"GET / HTTP/0.3\r\nHost: localhost\r\n\r\n", 400, "ERRORINFO_INVALID_VERSION"),
        (
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
            400,
            "ERRORINFO_INVALID_CONTENT_LENGTH",
        ),
    ],
    ids=["method", "no-host", "version", "content-length"],
)
async def test_a_refused_request_logs_the_references_reason_code(
    demo_stack: Stack, pki: PkiBundle, request_bytes: bytes, status: int, error_info: str
) -> None:
    data = await exchange(demo_stack, pki, request_bytes + LAST)
    replies = parse_responses(data)
    assert replies[0].status == status
    await wait_for_access_records(demo_stack.gateway, len(replies))
    record = demo_stack.gateway.access_log[0]
    assert (record.httpStatus, record.error_info, record.contentType) == (
        status,
        error_info,
        "text/html",
    )
    assert record.receivedBytes > 0
    # Every byte the client got belongs to one record or the other.
    assert sum(r.sentBytes for r in demo_stack.gateway.access_log) == len(data)


async def test_plain_http_on_the_https_port_is_logged_as_http_to_https_port(
    demo_stack: Stack,
) -> None:
    request = b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = await trio.to_thread.run_sync(
        tcp_exchange, demo_stack.port(PASSTHROUGH_LISTENER), request
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.PLAIN_HTTP_TO_HTTPS)
    await wait_for_access_records(demo_stack.gateway)
    record = demo_stack.gateway.access_log[-1]
    assert (record.httpStatus, record.error_info) == (400, "ERRORINFO_HTTP_TO_HTTPS_PORT")
    assert (record.httpMethod, record.requestUri) == ("GET", "/plain")
    assert demo_stack.recorded == []
