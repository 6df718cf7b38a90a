"""HTTP/2 streams against the backend, end to end over real TLS (``enableHttp2: true``).

Concurrent streams use concurrent backend connections; a backend failure touches one stream;
request bodies follow the buffering rule (with and without a content-length, buffered and
streamed); response bodies honour the client's flow-control window; a drain sends GOAWAY and
lets the stream in flight finish; the 421 rule holds per stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from emulator.arm.demo_template import STRICT_LISTENER
from emulator.core.http.pages import GatewayPage, render_page
from tests.helpers.h2client import RawH2, h2_template
from tests.helpers.http import client_context
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.resources import wait_until
from tests.helpers.routing import EXAMPLE, RoutingPki, running, sni_client_context
from tests.helpers.stack import DEMO_LISTEN, Stack, start_stack, wait_for_access_records

pytestmark = pytest.mark.usefixtures("no_internal_errors")


async def _stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, **template: Any) -> Stack:
    return await start_stack(
        nursery,
        h2_template(**template),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen=DEMO_LISTEN,
        backend_pool="stub-backend",
    )


@pytest.fixture
async def h2_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    return await _stack(pki, nursery, tmp_path, request_timeout_s=2)


def _client(pki: PkiBundle) -> httpx.AsyncClient:
    return httpx.AsyncClient(http2=True, verify=client_context(pki, pki.client), timeout=30)


async def test_concurrent_streams_use_concurrent_backend_connections(
    h2_stack: Stack, pki: PkiBundle
) -> None:
    url = h2_stack.url(STRICT_LISTENER).rstrip("/")
    replies: list[httpx.Response] = []
    async with _client(pki) as client:
        await client.get(f"{url}/warm")  # one connection, then eight streams on it
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(8):

                async def one() -> None:
                    replies.append(await client.get(f"{url}/delay/1"))

                nursery.start_soon(one)
        took = time.monotonic() - started
    assert [r.status_code for r in replies] == [200] * 8
    assert {r.http_version for r in replies} == {"HTTP/2"}
    # One after the other would take 8 s; side by side, about one.
    assert took < 5, took


async def test_a_backend_timeout_fails_one_stream_only(h2_stack: Stack, pki: PkiBundle) -> None:
    url = h2_stack.url(STRICT_LISTENER).rstrip("/")
    results: dict[str, int] = {}
    async with _client(pki) as client:
        await client.get(f"{url}/warm")
        async with trio.open_nursery() as nursery:
            for path in ("/delay/10", "/a", "/b"):

                async def one(path: str = path) -> None:
                    results[path] = (await client.get(f"{url}{path}")).status_code

                nursery.start_soon(one)
        # The same connection still serves.
        after = await client.get(f"{url}/after")
    assert results == {"/delay/10": 504, "/a": 200, "/b": 200}
    assert after.status_code == 200


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
async def test_request_bodies_reach_the_backend(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, buffered: bool, with_length: bool
) -> None:
    stack = await _stack(
        pki,
        nursery,
        tmp_path,
        global_configuration={
            "enableRequestBuffering": buffered,
            "enableResponseBuffering": buffered,
        },
    )
    body = bytes(range(256)) * 800  # 200 KiB: more than one 64 KiB stream window

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 30000):
            yield body[start : start + 30000]

    async with _client(pki) as client:
        content: Any = body if with_length else pieces()
        reply = await client.post(f"{stack.url(STRICT_LISTENER)}/upload", content=content)
    assert reply.status_code == 200
    echo = reply.json()
    assert echo["body_bytes"] == len(body)
    framing = {k.lower(): v for k, v in echo["headers"]}
    if with_length or buffered:
        # A buffered body goes with its length, also one the client sent without.
        assert framing["content-length"] == str(len(body))
    else:
        assert framing["transfer-encoding"] == "chunked"
    assert stack.recorded[-1].http_version == "1.1"


def _small_window_download(port: int, ctx: Any, size: int) -> tuple[int | None, int, bool]:
    """A client that opens its window 16 KiB at a time, only after reading."""
    with RawH2(port, ctx, window=16384, auto_window=False) as h2c:
        sid = h2c.request(f"/bytes/{size}")
        reply = h2c.replies[sid]
        until = time.monotonic() + 20
        while not reply.ended and time.monotonic() < until:
            before = len(reply.body)
            if not h2c.read():
                break
            got = len(reply.body) - before
            # The gateway never sends beyond the window the client opened.
            assert got <= 16384 + 65535, got
            if got:
                h2c.conn.acknowledge_received_data(got, sid)
                h2c.flush()
        return reply.status, len(reply.body), reply.ended


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
async def test_response_bodies_honour_the_client_window(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, buffered: bool
) -> None:
    stack = await _stack(
        pki, nursery, tmp_path, global_configuration={"enableResponseBuffering": buffered}
    )
    status, length, ended = await trio.to_thread.run_sync(
        _small_window_download,
        stack.port(STRICT_LISTENER),
        client_context(pki, pki.client),
        1_000_000,
    )
    assert (status, length, ended) == (200, 1_000_000, True)


def _drain_while_in_flight(port: int, ctx: Any, result: dict[str, Any]) -> None:
    with RawH2(port, ctx) as h2c:
        sid = h2c.request("/delay/1")
        result["opened"] = True
        (reply,) = h2c.wait(sid, timeout_s=15)
        h2c.read_until_closed(5)
        result["reply"] = reply
        result["goaway"] = h2c.goaway


async def test_drain_sends_goaway_and_finishes_the_stream_in_flight(
    h2_stack: Stack, pki: PkiBundle
) -> None:
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            trio.to_thread.run_sync,
            _drain_while_in_flight,
            h2_stack.port(STRICT_LISTENER),
            client_context(pki, pki.client),
            result,
        )
        # The backend has the request (it answers after a second): the stream is in flight.
        await wait_until(lambda: bool(h2_stack.recorded))
        await h2_stack.gateway.drain(grace_s=10)
    reply = result["reply"]
    assert (reply.status, reply.ended) == (200, True)
    goaway = result["goaway"]
    assert goaway == (1, 0)  # the stream in flight is served; NO_ERROR


@pytest.fixture
def routing_h2_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(EXAMPLE.read_text())
    for resource in template["resources"]:
        if resource["type"].endswith("applicationGateways"):
            resource["properties"]["enableHttp2"] = True
    return template


def _two_hosts(port: int, ctx: Any) -> list[Any]:
    with RawH2(port, ctx, sni="www.contoso.test") as h2c:
        first = h2c.request("/", authority="www.contoso.test")
        second = h2c.request("/", authority="partners.contoso.test")
        third = h2c.request("/again", authority="www.contoso.test")
        return h2c.wait(first, second, third)


async def test_421_rule_holds_per_stream(
    rpki: RoutingPki, routing_h2_template: dict[str, Any]
) -> None:
    async with running(rpki, routing_h2_template) as routing:
        replies = await trio.to_thread.run_sync(
            _two_hosts, routing.https_port, sni_client_context(rpki, None)
        )
        await wait_for_access_records(routing.gateway, 3)
        records = list(routing.gateway.access_log)[-3:]
    assert [r.status for r in replies] == [200, 421, 200]
    assert replies[1].body == render_page(GatewayPage.MISDIRECTED_REQUEST)
    assert {r.httpVersion for r in records} == {"HTTP/2.0"}
