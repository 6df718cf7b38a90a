"""A drain (stop signal, reload) serves the connections it had just accepted, as nginx does.

nginx closes only keep-alive connections between requests when a worker stops gracefully; a
connection the worker had accepted but that has not had a request answered yet (in its TLS
handshake, or before its first request) keeps its chance to send one. The gateway's drain
does the same, within its grace: otherwise a reload under ``--workers`` fails the handshakes
the old workers accepted just before they were told to stop. Real TLS, the demo gateway, the
stub backend.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, write_demo_template
from emulator.pki.demo import DemoPki, write_demo_pki
from emulator.runtime.gateway import Gateway
from tests.helpers.processes import STUB_LISTENING, started

#: What the client waits between its handshake and its request, with the drain under way.
PAUSE_S: Final = 0.5


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Gateway, DemoPki, Path]]:
    pki = write_demo_pki(tmp_path / "certs")
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])
        template = write_demo_template(
            tmp_path,
            strict_port=8443,
            passthrough_port=9443,
            backend_host="127.0.0.1",
            backend_port=stub_port,
        )
        gateway = Gateway.from_template(
            template,
            {
                "certData": pki.server_pfx,
                "certPassword": pki.server_pfx_password,
                "trustedClientCaData": base64.b64encode(pki.trusted_client_ca_pem).decode(),
            },
            listen={8443: 0, 9443: 0},
        )
        yield gateway, pki, tmp_path / "certs" / "server-root-ca.pem"


def _handshake_then_request(port: int, cafile: Path, started: threading.Event) -> list[object]:
    """Connect and finish the TLS handshake; signal; wait; then send one request."""
    out: list[object] = []

    def run() -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
        try:
            conn.connect()  # TCP and TLS: a gateway worker task holds the connection now
            started.set()
            time.sleep(PAUSE_S)
            conn.request("GET", "/after-the-drain-began")
            response = conn.getresponse()
            response.read()
            out.append(response.status)
        except OSError as exc:
            out.append(exc)
        finally:
            started.set()
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    out.append(thread)
    return out


async def test_a_connection_accepted_before_the_drain_gets_its_first_request_answered(
    demo: tuple[Gateway, DemoPki, Path],
) -> None:
    gateway, _pki, cafile = demo
    async with gateway:
        port = gateway.port(PASSTHROUGH_LISTENER)
        handshaken = threading.Event()
        out = _handshake_then_request(port, cafile, handshaken)
        await trio.to_thread.run_sync(handshaken.wait, 10)
        began = time.monotonic()
        cancelled = await gateway.drain(grace_s=5)
        took = time.monotonic() - began
        thread = out.pop(0)
        assert isinstance(thread, threading.Thread)
        await trio.to_thread.run_sync(thread.join, 10)
    assert out == [200]
    assert cancelled == 0
    assert PAUSE_S * 0.8 < took < 4  # its request, then closed: not the 5 s grace
    # The listening socket closed when the drain began.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


async def test_a_new_connection_that_never_sends_a_request_is_cut_at_the_grace(
    demo: tuple[Gateway, DemoPki, Path],
) -> None:
    gateway, _pki, cafile = demo
    async with gateway:
        port = gateway.port(PASSTHROUGH_LISTENER)
        ctx = ssl.create_default_context(cafile=str(cafile))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls,
        ):
            await trio.to_thread.run_sync(tls.do_handshake)
            began = time.monotonic()
            cancelled = await gateway.drain(grace_s=1)
            took = time.monotonic() - began
            assert cancelled == 1
            assert 0.8 < took < 4
            assert await trio.to_thread.run_sync(tls.recv, 100) == b""  # closed, nothing sent
