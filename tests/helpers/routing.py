"""The routing example (examples/routing/gateway.json) running in front of three echo backends.

``orders-1`` and ``orders-2`` (plain HTTP, the orders pool) and ``inventory`` (HTTPS with its own
CA, the inventory pool) answer with JSON naming themselves; the client picks SNI and Host
itself, so a test can name the template's host names without DNS.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.pki import CA, IssuedCert
from emulator.runtime.gateway import Gateway
from tests.helpers.http import RAW_SOCKET_TIMEOUT_S, Reply, forwarded, parse_responses, read_to_eof

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing" / "gateway.json"
PASSWORD = "routing-example"
INVENTORY_HOST = "inventory.backend.test"


# -- the certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingPki:
    """The routing example's certificates: one server certificate per host name, a client CA
    (root → issuing) for its Strict listener, and the inventory backend's own CA."""

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
        """The example template's parameters for these certificates."""
        return {
            "partnersCertData": self.partners.pfx(PASSWORD),
            "apiCertData": self.api.pfx(PASSWORD),
            "wwwCertData": self.www.pfx(PASSWORD),
            "certPassword": PASSWORD,
            "trustedClientCaData": self.client_root.cert_pem + self.issuing.cert_pem,
            "backendRootCaData": self.backend_root.cert_pem,
        }


def make_routing_pki() -> RoutingPki:
    """Server certificates for the example's host names, a client CA and a backend CA."""
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


def inventory_tls(pki: RoutingPki) -> ssl.SSLContext:
    """The inventory backend's server side (its certificate from the backend CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.inventory.configure_ssl_context(ctx)
    return ctx


@asynccontextmanager
async def running(
    pki: RoutingPki, template: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[Routing]:
    """The example (or ``template``) in front of the three echo backends, for the block."""
    orders = (EchoBackend("orders-1"), EchoBackend("orders-2"))
    inventory = EchoBackend("inventory", tls=inventory_tls(pki))
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
        return forwarded(self.reply, name)


def sni_client_context(pki: RoutingPki, cert: IssuedCert | None) -> ssl.SSLContext:
    """A client trusting the example's server root, presenting ``cert``; SNI is the caller's."""
    ctx = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
    # The test checks the certificate's name itself (it connects to 127.0.0.1 by address).
    ctx.check_hostname = False
    if cert is not None:
        cert.configure_ssl_context(ctx)
    return ctx


def exchange_blocking(
    port: int,
    ctx: ssl.SSLContext | None,
    sni: str | None,
    raw: bytes,
) -> Seen:
    """Send ``raw`` on one connection (TLS with ``sni`` when ``ctx`` is given) and read to EOF:
    the last response, and the CN of the server certificate the client was given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S)
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
    ctx = sni_client_context(routing.pki, cert) if https else None
    return await trio.to_thread.run_sync(exchange_blocking, port, ctx, sni, raw)


ORDERS = {"orders-1", "orders-2"}
