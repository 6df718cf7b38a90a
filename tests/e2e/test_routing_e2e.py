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

import pytest
import trio

from emulator.pki import CA
from emulator.runtime.gateway import Gateway
from tests.helpers.http import RAW_SOCKET_TIMEOUT_S
from tests.helpers.routing import (
    EXAMPLE,
    INVENTORY_HOST,
    ORDERS,
    EchoBackend,
    Routing,
    RoutingPki,
    exchange_blocking,
    get,
    inventory_tls,
    running,
    sni_client_context,
)

# -- the routes -------------------------------------------------------------------------------


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
        raw = socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S)
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
        ctx = sni_client_context(rpki, None)
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
    inventory = EchoBackend("inventory", tls=inventory_tls(rpki))
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
        ctx = sni_client_context(rpki, None)
        seen = await trio.to_thread.run_sync(
            exchange_blocking, routing.https_port, ctx, None, b"GET /v1 HTTP/1.0\r\n\r\n"
        )

    assert seen.status == 200
    assert seen.backend in ORDERS
    assert seen.server_cn == "www.contoso.test"
