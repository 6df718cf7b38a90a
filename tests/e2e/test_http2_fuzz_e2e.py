"""The HTTP/2 entry point of the running gateway under fuzzed frame sequences (hypothesis).

A frame grammar like the codec fuzz's in ``tests/unit/test_http2_fuzz.py`` (HEADERS with and
without END_HEADERS or END_STREAM, CONTINUATION, DATA, RST_STREAM, PING, SETTINGS, WINDOW_UPDATE,
GOAWAY, unknown types, on a handful of stream ids), sent after the preface on a real TLS
connection that negotiated h2 with a gateway running ``enableHttp2: true``. Properties: the
gateway closes the connection within its short timeouts (it never hangs, which found a bug: an
idle connection whose last stream ended kept no keep-alive deadline), what it wrote is whole
HTTP/2 frames, no internal error is logged, nothing forged reaches the backend, and afterwards
a normal h2 client is served. Same
``APPGW_FUZZ_EXAMPLES`` and example database as the other fuzz tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import httpx
import pytest
import trio
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.limits import ProxyLimits
from emulator.sync import LoopThread
from tests.helpers.h2client import frame, h2_template
from tests.helpers.http import client_context
from tests.helpers.logs import ErrorRecords
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.stack import DEMO_LISTEN, Stack, start_stack
from tests.unit.h2peer import PREFACE

#: Seconds the fuzz client waits for the gateway to close; its timeouts below are far shorter.
CLIENT_TIMEOUT_S: Final = 10.0
SHORT_TIMEOUTS: Final = ProxyLimits(
    handshake_timeout_s=0.5,
    request_header_timeout_s=0.5,
    client_body_timeout_s=0.5,
    client_send_timeout_s=0.5,
    keepalive_idle_s=0.2,
    linger_idle_s=0.05,
    linger_total_s=0.5,
)


_DATABASE_DIR: Final = os.environ.get("APPGW_FUZZ_DATABASE")
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("APPGW_FUZZ_EXAMPLES", "50")),
    deadline=None,
    database=DirectoryBasedExampleDatabase(_DATABASE_DIR) if _DATABASE_DIR else None,
    derandomize=not _DATABASE_DIR,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_FIELDS: Final = (
    [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "localhost")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/p"), (":authority", "a.b")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/p"), ("content-length", "4")],
    [(":method", "GET"), (":path", "/"), ("te", "gzip"), ("x-client-cert", "FORGED")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("connection", "close")],
    [(":status", "200"), (":method", "GET")],
    [(":method", "CONNECT"), (":authority", "localhost:443")],
)
_SID = st.sampled_from([1, 1, 1, 3, 3, 5, 2, 0])
_SETTINGS_SID = st.sampled_from([0, 0, 1])
#: (frame type, flags, stream id, payload or None for a header block of these fields)
_SPEC = st.one_of(
    st.tuples(st.just(0x1), st.sampled_from([0, 1, 4, 5]), _SID, st.sampled_from(_FIELDS)),
    st.tuples(st.just(0x9), st.sampled_from([0, 4]), _SID, st.binary(max_size=40)),
    st.tuples(st.just(0x0), st.sampled_from([0, 1]), _SID, st.binary(max_size=300)),
    st.tuples(st.just(0x3), st.just(0), _SID, st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(0x6), st.sampled_from([0, 1]), st.just(0), st.binary(min_size=8, max_size=8)),
    st.tuples(
        st.just(0x4), st.sampled_from([0, 1]), st.sampled_from([0, 1]), st.binary(max_size=18)
    ),
    st.tuples(st.just(0x8), st.just(0), _SID, st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(0x7), st.just(0), st.just(0), st.binary(min_size=8, max_size=8)),
    st.tuples(st.integers(0xA, 0xFF), st.integers(0, 255), _SID, st.binary(max_size=30)),
)


def _wire(specs: list[tuple[int, int, int, object]]) -> bytes:
    encoder = Encoder()
    out = bytearray(PREFACE + frame(0x4, 0, 0, b""))
    for kind, flags, sid, payload in specs:
        if isinstance(payload, list):
            payload = bytes(encoder.encode(payload))
        assert isinstance(payload, bytes)
        out += frame(kind, flags, sid, payload)
    return bytes(out)


@dataclass
class FuzzTarget:
    stack: Stack
    errors: ErrorRecords


@pytest.fixture(scope="module")
def h2_target(pki: PkiBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    tmp_path = tmp_path_factory.mktemp("h2fuzz")

    @asynccontextmanager
    async def serve() -> AsyncIterator[Stack]:
        async with trio.open_nursery() as nursery:
            yield await start_stack(
                nursery,
                h2_template(),
                template_parameters(pki),
                tmp_path=tmp_path,
                listen=DEMO_LISTEN,
                backend_pool="stub-backend",
                limits=SHORT_TIMEOUTS,
            )
            nursery.cancel_scope.cancel()

    errors = ErrorRecords()
    logger = logging.getLogger("emulator")
    logger.addHandler(errors)
    loop = LoopThread(serve, name="h2-fuzz-gateway")
    try:
        yield FuzzTarget(loop.start(), errors)
    finally:
        loop.close()
        logger.removeHandler(errors)


def _whole_frames(data: bytes) -> int:
    """The number of frames in ``data``; fails on a frame cut short."""
    count = 0
    while data:
        assert len(data) >= 9, f"a frame header cut short: {data!r}"
        length = int.from_bytes(data[:3], "big")
        assert len(data) >= 9 + length, "a frame payload cut short"
        data = data[9 + length :]
        count += 1
    return count


def _exchange(port: int, pki: PkiBundle, wire: bytes) -> bytes:
    ctx = client_context(pki, pki.client)
    ctx.set_alpn_protocols(["h2"])
    received = bytearray()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        with contextlib.suppress(OSError):  # the gateway may end it while we write
            tls.sendall(wire)
        while True:
            try:
                chunk = tls.recv(65536)
            except TimeoutError as exc:
                raise AssertionError("the gateway kept the connection past its timeouts") from exc
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


@FUZZ_SETTINGS
@given(
    specs=st.lists(_SPEC, max_size=12),
    listener=st.sampled_from([STRICT_LISTENER, PASSTHROUGH_LISTENER]),
)
def test_fuzzed_frame_sequences_never_hang_or_break_the_gateway(
    h2_target: FuzzTarget, pki: PkiBundle, specs: list[tuple[int, int, int, object]], listener: str
) -> None:
    wire = _wire(specs)
    answer = _exchange(h2_target.stack.port(listener), pki, wire)
    assert _whole_frames(answer) >= 1  # at least the gateway's SETTINGS
    assert h2_target.errors.messages == []
    # Nothing forged reaches the backend in a certificate header.
    for seen in h2_target.stack.recorded:
        assert "FORGED" not in " ".join(seen.header_values("X-Client-Cert"))


def test_zz_a_normal_h2_client_is_served_after_the_fuzzing(
    h2_target: FuzzTarget, pki: PkiBundle
) -> None:
    port = h2_target.stack.port(STRICT_LISTENER)
    with httpx.Client(http2=True, verify=client_context(pki, pki.client), timeout=10) as client:
        reply = client.get(f"https://localhost:{port}/alive")
    assert (reply.status_code, reply.http_version) == (200, "HTTP/2")
    assert h2_target.errors.messages == []
