"""Where connections come in (:mod:`emulator.runtime.listener`): the connection limits'
counting and throttled refusal log, a busy port's error, and the accept loop's hand-off."""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest
import trio

from emulator.arm.ssl_policies import PREDEFINED_POLICIES
from emulator.errors import StartupError
from emulator.model import Listener, ListenerProtocol
from emulator.runtime.listener import ConnectionLimits, accept_loop, listen_socket

PLAIN = Listener(
    name="web",
    protocol=ListenerProtocol.HTTP,
    frontend_port=80,
    frontend_port_name="port80",
    host_names=(),
    server_certificate=None,
    ssl_profile=None,
    ssl_policy=PREDEFINED_POLICIES["AppGwSslPolicy20220101"],
    require_sni=False,
    path="resources[0].properties.httpListeners[0]",
)


async def test_limits_count_per_client_and_release() -> None:
    limits = ConnectionLimits(max_total=3, max_per_client=2)
    assert limits.admit(("10.0.0.1", 1), "web")
    assert limits.admit(("10.0.0.1", 2), "web")
    assert not limits.admit(("10.0.0.1", 3), "web")  # this client's share is used up
    assert limits.admit(("10.0.0.2", 1), "web")
    assert not limits.admit(("10.0.0.3", 1), "web")  # the gateway's total
    limits.release("10.0.0.1")
    assert limits.admit(("10.0.0.1", 4), "web")
    for _ in range(2):
        limits.release("10.0.0.1")
    limits.release("10.0.0.2")
    assert (limits.total, dict(limits.per_client)) == (0, {})


async def test_a_refusal_flood_logs_one_line_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = ConnectionLimits(max_total=0, max_per_client=0)
    with caplog.at_level(logging.WARNING, logger="emulator.gateway"):
        refused = [limits.admit(("10.0.0.9", port), "web") for port in range(50)]
    assert not any(refused)
    lines = [r.getMessage() for r in caplog.records if "connection.limit_reached" in r.getMessage()]
    assert len(lines) == 1
    assert "scope=gateway" in lines[0]
    assert limits.refused_unlogged == 49


async def test_a_busy_port_is_a_startup_error_that_names_the_listener() -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as caught:
            await listen_socket("127.0.0.1", port, PLAIN, file="gw.json")
        assert caught.value.error_code == "EmulatorPortInUse"
        assert "'web'" in str(caught.value)
    finally:
        taken.close()


async def test_the_loop_hands_admitted_connections_over_and_closes_refused_ones() -> None:
    sock = await listen_socket("127.0.0.1", 0, PLAIN, file=None)
    port = sock.getsockname()[1]
    sock_listener = trio.SocketListener(sock)
    limits = ConnectionLimits(max_total=1, max_per_client=1)
    admitted: list[tuple[str, int]] = []
    served: list[trio.SocketStream] = []
    arrived = trio.Event()

    def serve(stream: trio.SocketStream, peer: tuple[str, int]) -> None:
        admitted.append(peer)
        served.append(stream)
        arrived.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, sock_listener, "web", limits, serve)
        first = await trio.open_tcp_stream("127.0.0.1", port)
        first_port = first.socket.getsockname()[1]
        with trio.fail_after(5):
            await arrived.wait()
        second = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(5):  # refused: closed (or reset) on accept
            with contextlib.suppress(trio.BrokenResourceError):
                assert await second.receive_some(1) == b""
        nursery.cancel_scope.cancel()
    for stream in (first, second, *served):
        await stream.aclose()
    await sock_listener.aclose()
    assert admitted == [("127.0.0.1", first_port)]
