"""End to end: the routing example (examples/routing/gateway.json) walked route by route.

Real TLS clients (stdlib ``ssl``) connect to 127.0.0.1 and choose the SNI and the Host header
themselves, so each test can name the host names of the template without DNS. Three named echo
backends stand in for the pools: ``orders-1`` and ``orders-2`` (plain HTTP, the orders pool)
and ``inventory`` (HTTPS with its own CA, the inventory pool). Every test checks the status,
which backend answered, and which server certificate the client was given.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.pki import CA, IssuedCert
from emulator.runtime.gateway import Gateway
from tests.e2e.stack import Reply, parse_responses, read_to_eof

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing" / "gateway.json"
PASSWORD = "routing-example"
INVENTORY_HOST = "inventory.backend.test"
SOCKET_TIMEOUT_S = 10.0


# -- the certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingPki:
    server_root: CA
    client_root: CA
    issuing: CA
    backend_root: CA
    partners: IssuedCert
    api: IssuedCert
    www: IssuedCert
    inventory: IssuedCert
    client: IssuedCert
    expired: IssuedCert

    def parameters(self) -> dict[str, object]:
        return {
            "partnersCertData": self.partners.pfx(PASSWORD),
            "apiCertData": self.api.pfx(PASSWORD),
            "wwwCertData": self.www.pfx(PASSWORD),
            "certPassword": PASSWORD,
            "trustedClientCaData": self.client_root.cert_pem + self.issuing.cert_pem,
            "backendRootCaData": self.backend_root.cert_pem,
        }


@pytest.fixture(scope="module")
def rpki() -> RoutingPki:
    server_root = CA("Routing Server Root")
    client_root = CA("Routing Client Root")
    issuing = client_root.intermediate("Routing Issuing CA")
    backend_root = CA("Routing Backend Root")
    return RoutingPki(
        server_root=server_root,
        client_root=client_root,
        issuing=issuing,
        backend_root=backend_root,
        partners=server_root.issue_server("partners.contoso.test"),
        api=server_root.issue_server("api.contoso.test", "*.api.contoso.test"),
        www=server_root.issue_server("www.contoso.test", "localhost"),
        inventory=backend_root.issue_server(INVENTORY_HOST),
        client=issuing.issue_client("partner-app"),
        expired=issuing.issue_client("partner-expired", expired=True),
    )


# -- echo backends ----------------------------------------------------------------------------


@dataclass
class EchoBackend:
    """Answers with JSON naming itself; ``/health`` answers ``health_status``; an Upgrade
    request gets 101 and then every byte echoed back."""

    name: str
    tls: ssl.SSLContext | None = None
    health_status: int = 200
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if self.tls is not None:
            stream = trio.SSLStream(tcp, self.tls, server_side=True)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next(conn, stream)
                if not isinstance(request, h11.Request):
                    return
                while not isinstance(await _next(conn, stream), h11.EndOfMessage):
                    pass
                headers = [(k.decode(), v.decode()) for k, v in request.headers.raw_items()]
                target = request.target.decode()
                if target == "/health":
                    await _answer(conn, stream, self.health_status, b"ok")
                elif any(k.lower() == "upgrade" for k, _ in headers):
                    self.requests.append({"target": target, "headers": headers})
                    await stream.send_all(
                        conn.send(
                            h11.InformationalResponse(
                                status_code=101,
                                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                            )
                        )
                        or b""
                    )
                    rest = conn.trailing_data[0]
                    if rest:
                        await stream.send_all(rest)
                    while data := await stream.receive_some(65536):
                        await stream.send_all(data)
                    return
                else:
                    self.requests.append({"target": target, "headers": headers})
                    body = json.dumps(
                        {"backend": self.name, "target": target, "headers": headers}
                    ).encode()
                    await _answer(conn, stream, 200, body)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)


async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(65536)))


async def _answer(conn: h11.Connection, stream: trio.abc.Stream, status: int, body: bytes) -> None:
    data = conn.send(
        h11.Response(
            status_code=status,
            headers=[("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
    )
    await stream.send_all((data or b"") + (conn.send(h11.Data(data=body)) or b""))
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


@dataclass
class Routing:
    gateway: Gateway
    orders: tuple[EchoBackend, EchoBackend]
    inventory: EchoBackend
    pki: RoutingPki

    @property
    def https_port(self) -> int:
        return self.gateway.port("api-listener")

    @property
    def http_port(self) -> int:
        return self.gateway.port("http-listener")


def _inventory_tls(pki: RoutingPki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.inventory.configure_ssl_context(ctx)
    return ctx


@asynccontextmanager
async def running(
    pki: RoutingPki, template: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[Routing]:
    orders = (EchoBackend("orders-1"), EchoBackend("orders-2"))
    inventory = EchoBackend("inventory", tls=_inventory_tls(pki))
    async with trio.open_nursery() as nursery:
        for backend in (*orders, inventory):
            await nursery.start(backend.serve)
        source: Any = template if template is not None else json.loads(EXAMPLE.read_text())
        gateway = Gateway.from_config(
            source,
            pki.parameters(),
            backends={
                "orders-pool": [f"127.0.0.1:{b.port}" for b in orders],
                "inventory-pool": f"127.0.0.1:{inventory.port}",
            },
            listen={443: 0, 80: 0},
            **options,
        )
        async with gateway:
            yield Routing(gateway, orders, inventory, pki)
        nursery.cancel_scope.cancel()


# -- a client that picks SNI and Host ---------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    reply: Reply
    #: The CN of the server certificate the client was given ("" over plain HTTP).
    server_cn: str

    @property
    def status(self) -> int:
        return self.reply.status

    @property
    def backend(self) -> str | None:
        try:
            return str(self.reply.json()["backend"])
        except (ValueError, KeyError):
            return None

    def forwarded(self, name: str) -> list[str]:
        return [v for k, v in self.reply.json()["headers"] if k.lower() == name.lower()]


def _client_ctx(pki: RoutingPki, cert: IssuedCert | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
    # The test checks the certificate's name itself (it connects to 127.0.0.1 by address).
    ctx.check_hostname = False
    if cert is not None:
        cert.configure_ssl_context(ctx)
    return ctx


def _request_blocking(
    port: int,
    ctx: ssl.SSLContext | None,
    sni: str | None,
    raw: bytes,
) -> Seen:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    server_cn = ""
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=sni)
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            cert = x509.load_der_x509_certificate(der)
            server_cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        sock.sendall(raw)
        data = read_to_eof(sock)
    finally:
        sock.close()
    replies = parse_responses(data)
    assert replies, f"no response: {data!r}"
    return Seen(replies[-1], server_cn)


async def get(
    routing: Routing,
    path: str,
    *,
    sni: str | None,
    host: str | None = None,
    cert: IssuedCert | None = None,
    https: bool = True,
    headers: dict[str, str] | None = None,
) -> Seen:
    """One request on its own connection (``Connection: close``)."""
    host = host if host is not None else (sni or "localhost")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    port = routing.https_port if https else routing.http_port
    ctx = _client_ctx(routing.pki, cert) if https else None
    return await trio.to_thread.run_sync(_request_blocking, port, ctx, sni, raw)


# -- the routes -------------------------------------------------------------------------------

ORDERS = {"orders-1", "orders-2"}


async def test_strict_host_with_a_valid_certificate_reaches_orders_with_its_own_certificate(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/partners/1", sni="partners.contoso.test", cert=rpki.client)

    assert seen.status == 200
    assert seen.server_cn == "partners.contoso.test"
    assert seen.backend in ORDERS
    assert seen.forwarded("X-Client-Cert-Verification") == ["SUCCESS"]
    assert routing.gateway.access_log[-1].listenerName == "partners-listener"


async def test_strict_host_without_a_certificate_gets_400_and_no_backend_is_contacted(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/partners/1", sni="partners.contoso.test")

    assert seen.status == 400
    assert b"No required SSL certificate was sent" in seen.reply.body
    assert seen.server_cn == "partners.contoso.test"
    assert all(not b.requests for b in (*routing.orders, routing.inventory))


async def test_passthrough_host_forwards_an_expired_certificate_on_the_same_port(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/orders/7", sni="api.contoso.test", cert=rpki.expired)

    assert seen.status == 200
    assert seen.server_cn == "api.contoso.test"
    assert seen.backend in ORDERS
    assert seen.forwarded("X-Client-Cert-Verification") == ["PASSTHROUGH"]


async def test_wildcard_host_name_selects_the_multi_site_listener(rpki: RoutingPki) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/orders/7", sni="eu.api.contoso.test")

    assert seen.status == 200
    assert seen.server_cn == "api.contoso.test"
    assert seen.forwarded("X-Client-Cert-Verification") == ["NONE"]
    assert routing.gateway.access_log[-1].listenerName == "api-listener"


async def test_path_rule_sends_inventory_to_the_https_backend_with_the_override_path(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/inventory/items?sku=9", sni="api.contoso.test")

    assert seen.status == 200
    assert seen.backend == "inventory"
    assert seen.reply.json()["target"] == "/v2/items?sku=9"
    assert seen.forwarded("Host") == [INVENTORY_HOST]
    record = routing.gateway.access_log[-1]
    assert (record.ruleName, record.backendPoolName) == ("api-rule", "inventory-pool")


async def test_path_rule_redirect_keeps_the_query_but_not_the_path(rpki: RoutingPki) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/legacy/page?id=3", sni="api.contoso.test")
        exact = await get(routing, "/old-home", sni="api.contoso.test")

    assert seen.status == 302
    assert seen.reply.header("Location") == "https://www.contoso.test/new?id=3"
    assert seen.reply.header("Server") == "Microsoft-Azure-Application-Gateway/v2"
    assert exact.status == 302
    assert all(not b.requests for b in (*routing.orders, routing.inventory))


async def test_reroute_re_evaluates_the_path_map_with_the_rewritten_path(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/shop/cart", sni="api.contoso.test")

    assert seen.status == 200
    assert seen.backend == "inventory"
    assert seen.reply.json()["target"] == "/v2/cart"
    assert seen.forwarded("X-Original-URL") == ["/shop/cart"]


async def test_unknown_host_and_no_sni_fall_to_the_basic_listener_and_its_certificate(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        unknown = await get(routing, "/", sni="shop.fabrikam.test")
        no_sni = await get(routing, "/", sni=None, host="127.0.0.1")

    for seen in (unknown, no_sni):
        assert seen.status == 200
        assert seen.server_cn == "www.contoso.test"
        assert seen.backend in ORDERS
    assert routing.gateway.access_log[-1].listenerName == "www-listener"


async def test_http_port_redirects_permanently_to_the_https_listener(rpki: RoutingPki) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/a/b?c=1", sni=None, host="www.contoso.test:80", https=False)
        https_port = routing.https_port

    assert seen.status == 301
    assert seen.reply.header("Location") == f"https://www.contoso.test:{https_port}/a/b?c=1"
    assert b"301 Moved Permanently" in seen.reply.body


@pytest.mark.parametrize(
    ("sni", "host"),
    [("api.contoso.test", "partners.contoso.test"), ("www.contoso.test", "partners.contoso.test")],
)
async def test_host_naming_a_strict_listener_over_another_handshake_gets_421(
    rpki: RoutingPki, sni: str, host: str
) -> None:
    async with running(rpki) as routing:
        seen = await get(routing, "/partners/1", sni=sni, host=host, cert=rpki.expired)

    assert seen.status == 421
    assert all(not b.requests for b in (*routing.orders, routing.inventory))


async def test_no_listener_for_the_host_is_404_when_every_listener_is_multi_site(
    rpki: RoutingPki,
) -> None:
    template = json.loads(EXAMPLE.read_text())
    gw = template["resources"][0]["properties"]
    gw["requestRoutingRules"] = [r for r in gw["requestRoutingRules"] if r["name"] != "www-rule"]
    async with running(rpki, template) as routing:
        seen = await get(routing, "/", sni="api.contoso.test", host="nobody.fabrikam.test")

    assert seen.status == 404
    assert seen.server_cn == "api.contoso.test"
    assert b"404 Not Found" in seen.reply.body


async def test_affinity_cookie_pins_the_client_to_one_orders_backend(rpki: RoutingPki) -> None:
    async with running(rpki) as routing:
        first = await get(routing, "/", sni="www.contoso.test")
        cookie = first.reply.header("Set-Cookie")
        assert cookie is not None
        value = cookie.split(";")[0]
        pinned = [
            await get(routing, "/", sni="www.contoso.test", headers={"Cookie": value})
            for _ in range(4)
        ]
        unpinned = [await get(routing, "/", sni="www.contoso.test") for _ in range(4)]

    assert value.startswith("ApplicationGatewayAffinity=")
    cookies = [v for k, v in first.reply.headers if k.lower() == "set-cookie"]
    cors = [c for c in cookies if c.startswith("ApplicationGatewayAffinityCORS=")]
    assert len(cors) == 1
    assert "SameSite=None; Secure" in cors[0]
    assert {s.backend for s in pinned} == {first.backend}
    assert all(s.reply.header("Set-Cookie") is None for s in pinned)
    assert {s.backend for s in unpinned} == ORDERS  # round-robin without the cookie


async def test_websocket_upgrade_is_spliced_through_to_the_backend(rpki: RoutingPki) -> None:
    def talk(port: int, ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
        raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
        with ctx.wrap_socket(raw, server_hostname="www.contoso.test") as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: www.contoso.test\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            sock.sendall(b"ping-frame")
            echoed = b""
            while len(echoed) < len(b"ping-frame"):
                echoed += sock.recv(64)
            return head, echoed

    async with running(rpki) as routing:
        ctx = _client_ctx(rpki, None)
        head, echoed = await trio.to_thread.run_sync(talk, routing.https_port, ctx)
        backend_saw = [r for b in routing.orders for r in b.requests]

    assert head.startswith(b"HTTP/1.1 101 ")
    assert echoed == b"ping-frame"
    assert [r["target"] for r in backend_saw] == ["/ws"]
    assert ("Upgrade", "websocket") in backend_saw[0]["headers"]


async def test_https_backend_with_an_untrusted_certificate_is_a_502(rpki: RoutingPki) -> None:
    template = json.loads(EXAMPLE.read_text())
    params = rpki.parameters()
    params["backendRootCaData"] = CA("Someone Else's Root").cert_pem
    orders = (EchoBackend("orders-1"), EchoBackend("orders-2"))
    inventory = EchoBackend("inventory", tls=_inventory_tls(rpki))
    async with trio.open_nursery() as nursery:
        for backend in (*orders, inventory):
            await nursery.start(backend.serve)
        gateway = Gateway.from_config(
            template,
            params,
            backends={
                "orders-pool": [f"127.0.0.1:{b.port}" for b in orders],
                "inventory-pool": f"127.0.0.1:{inventory.port}",
            },
            listen={443: 0, 80: 0},
        )
        async with gateway:
            routing = Routing(gateway, orders, inventory, rpki)
            seen = await get(routing, "/inventory/x", sni="api.contoso.test")
        nursery.cancel_scope.cancel()

    assert seen.status == 502
    assert inventory.requests == []


async def test_probe_takes_an_unhealthy_backend_out_and_502_when_none_is_left(
    rpki: RoutingPki,
) -> None:
    template = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    gw = template["resources"][0]["properties"]
    gw["probes"].append(
        {
            "name": "orders-probe",
            "properties": {
                "protocol": "Http",
                "host": "orders.internal",
                "path": "/health",
                "interval": 1,
                "timeout": 1,
                "unhealthyThreshold": 1,
            },
        }
    )
    orders_settings = gw["backendHttpSettingsCollection"][0]["properties"]
    orders_settings["probe"] = {"id": "[concat(variables('gatewayId'), '/probes/orders-probe')]"}
    orders_settings["cookieBasedAffinity"] = "Disabled"
    async with running(rpki, template) as routing:
        routing.orders[1].health_status = 503
        await trio.sleep(1.3)  # one probe round after the change
        healthy_only = [await get(routing, "/", sni="www.contoso.test") for _ in range(3)]
        routing.orders[0].health_status = 500
        await trio.sleep(1.3)
        none_left = await get(routing, "/", sni="www.contoso.test")

    assert {s.backend for s in healthy_only} == {"orders-1"}
    assert none_left.status == 502


async def test_strict_host_checks_the_partner_ca_even_though_it_is_not_the_port_default(
    rpki: RoutingPki,
) -> None:
    stranger = CA("Stranger Root").issue_client("stranger")
    async with running(rpki) as routing:
        seen = await get(routing, "/partners/1", sni="partners.contoso.test", cert=stranger)

    assert seen.status == 400
    assert b"The SSL certificate error" in seen.reply.body
    assert routing.gateway.access_log[-1].sslClientVerify.startswith("FAILED:")


async def test_http10_client_without_host_is_served_by_the_basic_listener(
    rpki: RoutingPki,
) -> None:
    async with running(rpki) as routing:
        ctx = _client_ctx(rpki, None)
        seen = await trio.to_thread.run_sync(
            _request_blocking, routing.https_port, ctx, None, b"GET /v1 HTTP/1.0\r\n\r\n"
        )

    assert seen.status == 200
    assert seen.backend in ORDERS
    assert seen.server_cn == "www.contoso.test"
