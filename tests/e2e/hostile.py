"""Helpers for the hostile-input tests (issue #10): a demo gateway with options, raw clients,
ClientHellos, misbehaving backends, and a stack served from a thread for blocking clients.

Everything listens on 127.0.0.1 (the slow-loris test also connects from 127.0.0.2, which Linux
routes over loopback too). The misbehaving backends are small trio servers written here, each
doing one wrong thing on purpose; the well-behaved backend is the project's stub.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import resource
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import h11
import pytest
import trio

import backend_stub
from emulator.arm.template import load_template, select_gateway
from emulator.core.pages import GatewayPage, render_page
from emulator.demo import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.runtime.gateway import Gateway
from tests.e2e.stack import (
    RAW_SOCKET_TIMEOUT_S,
    PkiBundle,
    Reply,
    Stack,
    raw_tls_socket,
    read_to_eof,
    template_parameters,
)

SERVER_TOKEN: Final = "Microsoft-Azure-Application-Gateway/v2"
TEMPLATE_PORTS: Final = {STRICT_LISTENER: 8443, PASSTHROUGH_LISTENER: 9443}
#: A second loopback address: on Linux the whole 127.0.0.0/8 is local, so a client can bind
#: its end to it and the gateway sees a different client address.
OTHER_LOOPBACK: Final = "127.0.0.2"
#: SO_LINGER {on, 0 s}: ``close()`` sends RST instead of FIN.
LINGER_RESET: Final = struct.pack("ii", 1, 0)


def demo_gateway_template(
    *,
    backend_port: int = 1,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``up`` demo template (Strict + Passthrough, certificate-forwarding rewrite), with
    ``global_configuration`` as the gateway's ``globalConfiguration`` when given."""
    template = copy.deepcopy(
        demo_template(
            strict_port=8443,
            passthrough_port=9443,
            backend_host="127.0.0.1",
            backend_port=backend_port,
        )
    )
    settings = template["resources"][0]["properties"]["backendHttpSettingsCollection"][0]
    settings["properties"]["requestTimeout"] = request_timeout_s
    if global_configuration is not None:
        template["resources"][0]["properties"]["globalConfiguration"] = dict(global_configuration)
    return template


def demo_gateway(
    pki: PkiBundle,
    tmp_path: Path,
    *,
    backend_port: int,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
    **options: Any,
) -> Gateway:
    """A gateway for the demo template with its pool on ``127.0.0.1:backend_port``.

    ``options`` go to :class:`Gateway` (connection limits, ``strip_client_cert_headers``...).
    """
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            demo_gateway_template(
                backend_port=backend_port,
                request_timeout_s=request_timeout_s,
                global_configuration=global_configuration,
            )
        )
    )
    config = build_gateway_config(
        select_gateway(load_template(path, template_parameters(pki)), None)
    )
    config = with_backend_overrides(
        config, {"stub-backend": (BackendAddress("127.0.0.1", backend_port),)}
    )
    return Gateway(config, listen={8443: 0, 9443: 0}, **options)


async def start_demo(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    *,
    backend_port: int | None = None,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
    **options: Any,
) -> Stack:
    """The stub backend (unless ``backend_port`` names another one) and a demo gateway."""
    recorded: list[backend_stub.RecordedRequest] = []
    if backend_port is None:
        _host, backend_port = await nursery.start(
            functools.partial(
                backend_stub.serve,
                backend_stub.StubConfig(),
                host="127.0.0.1",
                port=0,
                recorder=recorded.append,
            )
        )
    gateway = demo_gateway(
        pki,
        tmp_path,
        backend_port=backend_port,
        request_timeout_s=request_timeout_s,
        global_configuration=global_configuration,
        **options,
    )
    await nursery.start(gateway.serve)
    return Stack(gateway, backend_port, recorded)


@pytest.fixture
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail when the gateway logged an ERROR (how it reports a bug it survived)."""
    yield
    errors = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.name.startswith("emulator") and r.levelno >= logging.ERROR
    ]
    assert errors == []


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    """Messages of the emulator's log records that contain ``event``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("emulator") and event in r.getMessage()
    ]


def assert_gateway_page(reply: Reply, page: GatewayPage) -> None:
    assert reply.status == page.status
    assert reply.header("Server") == SERVER_TOKEN
    assert reply.body == render_page(page)


# -- raw clients ------------------------------------------------------------------------------


def tls_exchange(port: int, ctx: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` on one TLS connection; all bytes until the gateway closes it."""
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(request)
        return read_to_eof(tls)


def tcp_exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` over plain TCP; everything until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def client_hello(server_name: str = "localhost") -> bytes:
    """A real ClientHello from the stdlib client (TLS 1.2 and 1.3 offered), as sent on the wire."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # stops at once, waiting for a ServerHello that never comes
    return outgoing.read()


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to ``wanted`` (at most the hard limit), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after ``timeout_s``.

    For state the gateway changes without an event to wait on (open connection counts).
    """
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await trio.sleep(0.01)


def open_fds() -> int:
    """File descriptors this process has open (Linux /proc)."""
    return len(list(Path("/proc/self/fd").iterdir()))


# -- misbehaving backends ---------------------------------------------------------------------


#: A backend's behaviour: gets the connection and the request number on it (1 for the first),
#: after the request was read; answers (or not) as it likes.
Behaviour = Callable[[trio.SocketStream, h11.Connection, int, h11.Request], Awaitable[None]]


@dataclass
class RawBackend:
    """A tiny HTTP/1.1 backend that delegates each request to a :data:`Behaviour`."""

    behaviour: Behaviour
    port: int = 0
    #: (connection number, request number on it, method, target) for each request read.
    requests: list[tuple[int, int, str, str]] = field(default_factory=list)
    connections: int = 0
    #: Every byte received, per connection (in connection order): what the gateway sent.
    received: list[bytearray] = field(default_factory=list)
    #: Connections the gateway closed (the backend read EOF or a reset on them).
    closed_by_peer: int = 0


async def read_request(
    stream: trio.SocketStream, conn: h11.Connection, sink: bytearray | None = None
) -> h11.Request | None:
    """The next request's head, with its body read and dropped; None when the peer closed.

    ``sink``: every byte received is appended to it (the exact bytes the gateway sent).
    """
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if sink is not None:
                sink += data
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def send_response(
    stream: trio.SocketStream,
    conn: h11.Connection,
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> None:
    head = h11.Response(
        status_code=status,
        headers=[("Content-Length", str(len(body))), *(headers or {}).items()],
    )
    for event in (head, h11.Data(data=body), h11.EndOfMessage()):
        await stream.send_all(conn.send(event) or b"")


def reset(stream: trio.SocketStream) -> None:
    """Close ``stream`` with RST (SO_LINGER 0), the way a crashed process's socket ends."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    stream.socket.close()


@asynccontextmanager
async def raw_backend(behaviour: Behaviour) -> AsyncIterator[RawBackend]:
    """Serve ``behaviour`` on a free port of 127.0.0.1 for the duration of the block."""
    backend = RawBackend(behaviour)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    backend.port = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        backend.connections += 1
        number = backend.connections
        sink = bytearray()
        backend.received.append(sink)
        conn = h11.Connection(h11.SERVER)
        count = 0
        try:
            while True:
                request = await read_request(stream, conn, sink)
                if request is None:
                    backend.closed_by_peer += 1
                    return
                count += 1
                backend.requests.append(
                    (number, count, request.method.decode(), request.target.decode())
                )
                await backend.behaviour(stream, conn, count, request)
                if stream.socket.fileno() < 0 or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.ProtocolError:
            # The peer ended the connection inside a message (h11 saw EOF there).
            backend.closed_by_peer += 1
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            if stream.socket.fileno() >= 0:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        try:
            yield backend
        finally:
            nursery.cancel_scope.cancel()
