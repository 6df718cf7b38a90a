"""A client that asks for a large response and then reads nothing (a slow-read attack): the
gateway gives up after ``client_send_timeout_s``, frees the connection and logs the request
with the status it was sending, over HTTP/1.1 with TLS.

The HTTP/2 side of the same attack is in ``test_http2_attacks.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h11
import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.core.limits import ProxyLimits
from tests.helpers.backends import raw_backend, send_response
from tests.helpers.http import client_context
from tests.helpers.logs import logged
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import start_demo, wait_for_access_records

pytestmark = pytest.mark.usefixtures("no_internal_errors")

#: Far more than the kernel's socket buffers on both sides hold, so the gateway must wait.
BIG_BODY = b"B" * (32 << 20)
SEND_TIMEOUT_S = 0.5
#: A hang fails the test instead of the suite.
WITHIN_S = 20.0


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.proxy")

    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        await send_response(stream, conn, BIG_BODY)

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(
            nursery,
            pki,
            tmp_path,
            backend_port=backend.port,
            limits=ProxyLimits(client_send_timeout_s=SEND_TIMEOUT_S, linger_idle_s=0.05),
            # Streamed: the gateway writes to the client while the backend is still sending.
            global_configuration={"enableResponseBuffering": False},
        )
        tcp = await trio.open_tcp_stream("127.0.0.1", stack.port(PASSTHROUGH_LISTENER))
        client = trio.SSLStream(tcp, client_context(pki), server_hostname="localhost")
        with trio.fail_after(WITHIN_S):
            await client.send_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first = await client.receive_some(16384)  # the status line is out...
            assert first.startswith(b"HTTP/1.1 200 ")
            # ...and then nothing more is read: the gateway must give up on its own.
            await wait_for_access_records(stack.gateway)
            # Reading again finds what the kernels had buffered, then the end: the gateway
            # closed the connection rather than keep waiting for this client.
            received = len(first)
            try:
                while data := await client.receive_some(1 << 20):
                    received += len(data)
            except trio.BrokenResourceError:
                pass
        await trio.aclose_forcefully(client)
    assert received < len(BIG_BODY)
    (line,) = logged(caplog, "client.send_timeout")
    assert f"{SEND_TIMEOUT_S:g} s" in line
    record = stack.gateway.access_log[-1]
    # nginx logs the status it was sending when the client stopped taking the response.
    assert record.httpStatus == 200
    assert 0 < record.sentBytes < len(BIG_BODY)
