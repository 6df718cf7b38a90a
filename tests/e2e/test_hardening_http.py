"""Hostile requests end to end (issue 15, findings 3, 4, 5, 12, 16 and 18): what a request's
target, Host, lengths, body framing and Upgrade header can make the gateway forward.

Every request is written by hand on a real TLS (or TCP) connection. The backend records the
exact bytes it receives (:class:`tests.helpers.backends.RawBackend`), or, for the routing example,
the target and headers each named backend was sent; a refused request must leave it empty.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import h11
import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.arm.template import load_template, select_gateway
from emulator.core.http.pages import GatewayPage
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.runtime.gateway import Gateway
from tests.helpers.backends import RawBackend, raw_backend, send_response
from tests.helpers.http import (
    assert_gateway_page,
    client_context,
    parse_responses,
    raw_tls_socket,
    read_to_eof,
    tcp_exchange,
    tls_exchange,
)
from tests.helpers.logs import logged
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.resources import wait_until
from tests.helpers.routing import INVENTORY_HOST, ORDERS, RoutingPki, Seen, running
from tests.helpers.routing import exchange_blocking as _request_blocking
from tests.helpers.routing import sni_client_context as _client_ctx
from tests.helpers.stack import (
    SHORT_LINGER,
    Stack,
    demo_gateway_template,
    start_demo,
    start_stack,
    wait_for_access_records,
)

pytestmark = pytest.mark.usefixtures("no_internal_errors")

#: Sent after every refused request on the same connection: it must never reach the backend.
FOLLOW_UP = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
async def demo_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The demo gateway with a short lingering close: these clients send everything at once."""
    return await start_demo(nursery, pki, tmp_path, limits=SHORT_LINGER)


async def _ok(stream: trio.SocketStream, conn: h11.Connection, _number: int, _r: object) -> None:
    await send_response(stream, conn, b"ok")


class Demo:
    """The demo gateway in front of a backend that records every byte it receives."""

    def __init__(self, stack: Stack, backend: RawBackend, pki: PkiBundle) -> None:
        self.stack = stack
        self.backend = backend
        self.pki = pki

    def received(self) -> bytes:
        return b"".join(bytes(data) for data in self.backend.received)

    async def exchange(self, request: bytes, listener: str = PASSTHROUGH_LISTENER) -> bytes:
        return await trio.to_thread.run_sync(
            tls_exchange, self.stack.port(listener), client_context(self.pki), request
        )


@pytest.fixture
async def demo(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Demo:
    backend = await nursery.start(_serve_raw_backend)
    stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port, limits=SHORT_LINGER)
    return Demo(stack, backend, pki)


async def _serve_raw_backend(*, task_status: trio.TaskStatus[RawBackend]) -> None:
    async with raw_backend(_ok) as backend:
        task_status.started(backend)
        await trio.sleep_forever()


def _refused(data: bytes, page: GatewayPage = GatewayPage.BAD_REQUEST) -> None:
    """One gateway page, with ``Connection: close``, then the connection ended."""
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, page)
    assert reply.header("Connection") == "close"


# -- finding 4: Host values -------------------------------------------------------------------

#: Host values that are not ``host[:port]``. Azure documents the first as 400 "Invalid Host in
#: request line"; nginx's ngx_http_validate_host refuses "/", "\" and NUL; the others are
#: refused too (stricter than nginx, README "Security model").
BAD_HOSTS: dict[str, bytes] = {
    "two-colons": b"localhost:443:1",
    "slash": b"localhost/x",
    "backslash": b"localhost\\",
    "list": b"localhost, evil",
    "userinfo": b"user@localhost",
    "bracketed-name": b"[localhost]",
    "control-character": b"local\x01host",
    "escape-character": b"local\x1bhost",
    "non-ascii": b"caf\xc3\xa9",
    "empty": b"",
}


@pytest.mark.parametrize("case", list(BAD_HOSTS), ids=list(BAD_HOSTS))
async def test_malformed_host_is_400_and_nothing_is_forwarded(
    demo: Demo, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    request = b"GET /secret HTTP/1.1\r\nHost: " + BAD_HOSTS[case] + b"\r\n\r\n"
    _refused(await demo.exchange(request + FOLLOW_UP))
    assert demo.received() == b""
    assert any("invalid host" in line for line in logged(caplog, "http.bad_request"))
    await wait_for_access_records(demo.stack.gateway)
    assert demo.stack.gateway.access_log[-1].httpStatus == 400


@pytest.mark.parametrize(
    "target",
    [b"https://user@localhost/secret", b"http://localhost:1:2/secret", b"http://a\\b/secret"],
)
async def test_malformed_authority_in_an_absolute_target_is_400(demo: Demo, target: bytes) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    _refused(await demo.exchange(request + FOLLOW_UP))
    assert demo.received() == b""


async def test_well_formed_hosts_still_reach_a_basic_listener(demo: Demo) -> None:
    hosts = [b"localhost", b"LocalHost.:9443", b"[::1]:9443", b"10.0.0.1", b"my_host-1"]
    request = b"".join(b"GET /ok HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" for host in hosts)
    data = await demo.exchange(
        request + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert [reply.status for reply in parse_responses(data)] == [200] * (len(hosts) + 1)
    received = demo.received()
    for host in hosts:
        assert b"\r\nHost: " + host + b"\r\n" in received


# -- finding 5: Content-Length above 2^63-1 ---------------------------------------------------


@pytest.mark.parametrize("length", [b"9223372036854775808", b"18446744073709551621"])
async def test_content_length_above_2_63_minus_1_is_400_and_never_forwarded(
    demo: Demo, length: bytes
) -> None:
    request = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + length
    _refused(await demo.exchange(request + b"\r\n\r\n" + FOLLOW_UP))
    assert demo.received() == b""


# -- finding 12: malformed chunked bodies -----------------------------------------------------

#: Long enough for the gateway to forward the first chunk before the broken one arrives.
FORWARD_PAUSE_S = 0.3
CHUNKED_HEAD = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"

BAD_CHUNKED_BODIES: dict[str, bytes] = {
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "hex-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
    "size-above-2-63": b"8000000000000000\r\nhello\r\n0\r\n\r\n",
    "no-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_CHUNKED_BODIES), ids=list(BAD_CHUNKED_BODIES))
async def test_malformed_chunked_body_before_forwarding_is_400_with_a_400_record(
    demo: Demo, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    # Head and body in one write: the body is decoded before the head goes out.
    _refused(await demo.exchange(CHUNKED_HEAD + BAD_CHUNKED_BODIES[case] + FOLLOW_UP))
    assert demo.received() == b""
    await wait_for_access_records(demo.stack.gateway)
    record = demo.stack.gateway.access_log[-1]
    assert (record.httpStatus, record.serverRouted) == (400, "")
    assert logged(caplog, "http.bad_request")


def _good_chunk_then_bad(port: int, ctx: ssl.SSLContext) -> bytes:
    """A good chunk, a pause until the gateway has forwarded it, then a broken one."""
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(CHUNKED_HEAD + b"5\r\nhello\r\n")
        # The gateway forwards what it has at once; the broken chunk comes separately.
        time.sleep(FORWARD_PAUSE_S)
        tls.sendall(b"zz\r\nworld\r\n0\r\n\r\n" + FOLLOW_UP)
        return read_to_eof(tls)


@pytest.fixture
async def streaming_demo(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Demo:
    """The demo gateway with request buffering off (``enableRequestBuffering: false``), so
    a request body streams to the backend behind its head."""
    backend = await nursery.start(_serve_raw_backend)
    template = demo_gateway_template(backend_port=backend.port)
    template["resources"][0]["properties"]["globalConfiguration"] = {
        "enableRequestBuffering": False,
        "enableResponseBuffering": True,
    }
    path = tmp_path / "streaming.json"
    path.write_text(json.dumps(template))
    config = build_gateway_config(
        select_gateway(load_template(path, template_parameters(pki)), None), now=datetime.now(UTC)
    )
    config = with_backend_overrides(
        config, {"stub-backend": (BackendAddress("127.0.0.1", backend.port),)}
    )
    gateway = Gateway(config, listen={8443: 0, 9443: 0}, limits=SHORT_LINGER)
    await nursery.start(gateway.serve)
    return Demo(Stack(gateway, backend.port), backend, pki)


async def test_malformed_chunk_after_a_forwarded_one_aborts_the_backend_request(
    streaming_demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    demo = streaming_demo
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    data = await trio.to_thread.run_sync(
        _good_chunk_then_bad, demo.stack.port(PASSTHROUGH_LISTENER), client_context(demo.pki)
    )
    _refused(data)
    await wait_until(lambda: demo.backend.closed_by_peer == 1)
    (received,) = demo.backend.received
    # The head and the good chunk, then the connection was closed: no last chunk, nothing
    # of the broken chunk or of the follow-up request.
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"POST /upload HTTP/1.1\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert body == b"5\r\nhello\r\n"
    assert demo.backend.requests == []  # the backend never saw a complete request
    await wait_for_access_records(demo.stack.gateway)
    record = demo.stack.gateway.access_log[-1]
    assert record.httpStatus == 400
    assert record.serverRouted == f"127.0.0.1:{demo.backend.port}"
    (line,) = logged(caplog, "http.bad_body_midstream")
    assert "illegal chunk size line" in line
    assert "aborted" in line


# -- finding 18: h2c upgrades -----------------------------------------------------------------

H2C_UPGRADES: dict[str, bytes] = {
    "h2c": (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    ),
    "h2c-in-a-list": b"Connection: upgrade\r\nUpgrade: websocket, H2C\r\n",
    "h2c-without-connection-upgrade": b"Upgrade: h2c\r\n",
}


@pytest.mark.parametrize("case", list(H2C_UPGRADES), ids=list(H2C_UPGRADES))
@pytest.mark.parametrize("listener", [PASSTHROUGH_LISTENER, STRICT_LISTENER])
async def test_h2c_upgrade_is_403_on_https_listeners_and_the_connection_goes_on(
    demo: Demo, case: str, listener: str, pki: PkiBundle
) -> None:
    request = b"GET /h2 HTTP/1.1\r\nHost: localhost\r\n" + H2C_UPGRADES[case] + b"\r\n"
    last = b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    data = await trio.to_thread.run_sync(
        tls_exchange,
        demo.stack.port(listener),
        client_context(pki, pki.client if listener == STRICT_LISTENER else None),
        request + last,
    )
    forbidden, after = parse_responses(data)
    assert_gateway_page(forbidden, GatewayPage.FORBIDDEN)
    assert forbidden.header("Connection") == "keep-alive"  # nginx keeps it after a 403
    assert after.status == 200
    # Only the second request reached the backend, and without any Upgrade.
    assert [(method, target) for _, _, method, target in demo.backend.requests] == [
        ("GET", "/after")
    ]
    assert b"h2c" not in demo.received().lower()


async def test_h2c_upgrade_without_a_certificate_on_strict_is_still_the_strict_400(
    demo: Demo,
) -> None:
    request = b"GET /h2 HTTP/1.1\r\nHost: localhost\r\n" + H2C_UPGRADES["h2c"] + b"\r\n"
    _refused(await demo.exchange(request, STRICT_LISTENER), GatewayPage.NO_CLIENT_CERT)
    assert demo.received() == b""


async def test_h2c_upgrade_is_403_on_an_http_listener(rpki: RoutingPki) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: www.contoso.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n"
    )
    async with running(rpki, limits=SHORT_LINGER) as routing:
        data = await trio.to_thread.run_sync(tcp_exchange, routing.http_port, request)
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.FORBIDDEN)
    assert all(not b.requests for b in (*routing.orders, routing.inventory))
    assert routing.gateway.access_log[-1].httpStatus == 403


# -- finding 3: absolute-form targets ---------------------------------------------------------


async def _raw_request(port: int, ctx: ssl.SSLContext, sni: str, raw: bytes) -> Seen:
    return await trio.to_thread.run_sync(_request_blocking, port, ctx, sni, raw)


async def test_absolute_target_naming_a_strict_host_over_a_basic_handshake_gets_421(
    rpki: RoutingPki,
) -> None:
    # No certificate, SNI and Host of the basic www listener, but the target names partners.
    raw = (
        b"GET https://partners.contoso.test/secret HTTP/1.1\r\n"
        b"Host: www.contoso.test\r\nConnection: close\r\n\r\n"
    )
    async with running(rpki, limits=SHORT_LINGER) as routing:
        seen = await _raw_request(
            routing.https_port, _client_ctx(rpki, None), "www.contoso.test", raw
        )
    assert_gateway_page(seen.reply, GatewayPage.MISDIRECTED_REQUEST)
    assert all(not b.requests for b in (*routing.orders, routing.inventory))
    assert routing.gateway.access_log[-1].listenerName == "partners-listener"


async def test_absolute_target_authority_wins_over_host_and_the_backend_gets_origin_form(
    rpki: RoutingPki,
) -> None:
    # RFC 9112 section 3.2.2: the target's authority (www) wins over the Host (partners,
    # which over this handshake would be a 421).
    raw = (
        b"GET https://www.contoso.test/a/b?c=1 HTTP/1.1\r\n"
        b"Host: partners.contoso.test\r\nConnection: close\r\n\r\n"
    )
    async with running(rpki, limits=SHORT_LINGER) as routing:
        seen = await _raw_request(
            routing.https_port, _client_ctx(rpki, None), "www.contoso.test", raw
        )
    assert seen.status == 200
    assert seen.backend in ORDERS
    (sent,) = [r for b in routing.orders for r in b.requests]
    assert sent["target"] == "/a/b?c=1"
    hosts = [v for k, v in sent["headers"] if k.lower() == "host"]
    assert hosts == ["www.contoso.test"]
    assert routing.gateway.access_log[-1].listenerName == "www-listener"


# -- finding 16: backend path override on the normalised path ---------------------------------


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/%69nventory/x", "/v2/x"),
        ("/inventory/../admin/secret/%2e%2e/%2e%2e/inventory/x", "/v2/x"),
        ("/inventory/a/%2e%2e/b?q=1", "/v2/b?q=1"),
        ("/inventory//x", "/v2/x"),
        ("/inventory/%252e%252e/admin", "/v2/%252e%252e/admin"),
    ],
)
async def test_path_override_is_applied_to_the_normalised_path(
    rpki: RoutingPki, target: str, forwarded: str
) -> None:
    raw = f"GET {target} HTTP/1.1\r\nHost: api.contoso.test\r\nConnection: close\r\n\r\n"
    async with running(rpki, limits=SHORT_LINGER) as routing:
        seen = await _raw_request(
            routing.https_port, _client_ctx(rpki, None), "api.contoso.test", raw.encode()
        )
    assert seen.status == 200
    assert seen.backend == "inventory"
    (sent,) = routing.inventory.requests
    assert sent["target"] == forwarded
    assert [v for k, v in sent["headers"] if k.lower() == "host"] == [INVENTORY_HOST]
    assert [v for k, v in sent["headers"] if k.lower() == "x-original-url"] == [target]


# -- the host server variable follows the routing host ---------------------------------------


async def test_var_host_is_the_routing_host_never_a_host_inside_an_origin_form_target(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    template = demo_gateway_template()
    rule_set = template["resources"][0]["properties"]["rewriteRuleSets"][0]["properties"]
    rule_set["rewriteRules"].append(
        {
            "name": "host-variable",
            "ruleSequence": 200,
            "actionSet": {
                "requestHeaderConfigurations": [
                    {"headerName": "X-Host", "headerValue": "{var_host}"}
                ]
            },
        }
    )
    stack = await start_stack(
        nursery,
        template,
        template_parameters(pki),
        tmp_path=tmp_path,
        listen={8443: 0, 9443: 0},
        backend_pool="stub-backend",
        limits=SHORT_LINGER,
    )
    requests = [
        # Origin form with "://" in it: before, {var_host} read "evil.example" from it.
        b"GET //evil.example/a?u=http://x HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /proxy/http://evil.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        # Absolute form: its authority is the host, whatever Host says.
        b"GET https://LocalHost:9443/b HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ]
    data = await trio.to_thread.run_sync(
        tls_exchange, stack.port(PASSTHROUGH_LISTENER), client_context(pki), b"".join(requests)
    )
    assert [reply.status for reply in parse_responses(data)] == [200, 200, 200]
    assert [(r.target, r.header_values("X-Host")) for r in stack.recorded] == [
        ("//evil.example/a?u=http://x", ("localhost",)),
        ("/proxy/http://evil.example/", ("localhost",)),
        ("/b", ("localhost",)),
    ]
