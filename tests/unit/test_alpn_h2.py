"""ALPN with HTTP/2 (emulator.core.tls.policy.offer_alpn).

Real TLS handshakes between pyOpenSSL connections over memory BIOs, certificates from the
project's PKI code (``tests.helpers.tls_memory``). A listener context offers ``http/1.1`` only
until the gateway adds h2 with ``enableHttp2: true`` (tests/e2e/test_http2_e2e.py drives that).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from emulator.core.tls.policy import (
    ALPN_H2,
    ALPN_HTTP11,
    alpn_protocols,
    build_port_contexts,
    build_server_context,
    offer_alpn,
    select_alpn,
)
from emulator.model import ClientAuthMode
from tests.helpers.pki import PkiBundle
from tests.helpers.tls_memory import client_context, handshake, make_listener, rule_for

#: (offered by the client, enableHttp2) → what the server picks (None: no ALPN).
SELECTION: dict[tuple[tuple[bytes, ...], bool], bytes | None] = {
    ((b"h2", b"http/1.1"), True): b"h2",
    # The server's order wins (nginx: SSL_select_next_proto with its own list first).
    ((b"http/1.1", b"h2"), True): b"h2",
    ((b"http/1.1",), True): b"http/1.1",
    ((b"h2",), True): b"h2",
    ((b"h2", b"http/1.1"), False): b"http/1.1",
    ((b"h2",), False): None,
    ((b"h3", b"spdy/3"), True): None,
    ((), True): None,
}


def test_offered_protocols_follow_enable_http2() -> None:
    assert alpn_protocols(enable_http2=True) == (ALPN_H2, ALPN_HTTP11)
    assert alpn_protocols(enable_http2=False) == (ALPN_HTTP11,)


@pytest.mark.parametrize(("key", "chosen"), SELECTION.items(), ids=str)
def test_select_alpn_table(key: tuple[tuple[bytes, ...], bool], chosen: bytes | None) -> None:
    offered, enabled = key
    assert select_alpn(list(offered), enable_http2=enabled) == chosen


@pytest.mark.parametrize(("key", "chosen"), SELECTION.items(), ids=str)
def test_handshake_negotiates_what_the_table_says(
    pki: PkiBundle,
    key: tuple[tuple[bytes, ...], bool],
    chosen: bytes | None,
) -> None:
    offered, enabled = key
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))
    offer_alpn(ctx, enable_http2=enabled)
    hs = handshake(ctx, client_context(alpn=list(offered)) if offered else client_context())
    assert hs.client.get_alpn_proto_negotiated() == (chosen or b"")
    assert hs.server.get_alpn_proto_negotiated() == (chosen or b"")


def test_every_context_of_a_multi_listener_port_needs_it(pki: PkiBundle) -> None:
    plain = replace(make_listener(pki, with_profile=False), name="plain")
    strict = replace(
        make_listener(pki, mode=ClientAuthMode.STRICT), name="strict", host_names=("strict.test",)
    )
    port_ctx, contexts = build_port_contexts([rule_for(strict), rule_for(plain)])
    offer_alpn(port_ctx, enable_http2=True)
    # Only the port context: the SNI-chosen listener's context still answers http/1.1.
    hs = handshake(port_ctx, client_context(alpn=[b"h2", b"http/1.1"]), server_name=b"strict.test")
    assert hs.server.get_context() is contexts["strict"]
    assert hs.client.get_alpn_proto_negotiated() == b"http/1.1"
    # Every context, before the first connection (pyOpenSSL freezes a used context).
    port_ctx, contexts = build_port_contexts([rule_for(strict), rule_for(plain)])
    for ctx in (port_ctx, *contexts.values()):
        offer_alpn(ctx, enable_http2=True)
    for name in (b"strict.test", None):
        hs = handshake(port_ctx, client_context(alpn=[b"h2", b"http/1.1"]), server_name=name)
        assert hs.client.get_alpn_proto_negotiated() == b"h2"


def test_a_listener_context_offers_http11_only_without_enable_http2(pki: PkiBundle) -> None:
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))
    hs = handshake(ctx, client_context(alpn=[b"h2", b"http/1.1"]))
    assert hs.client.get_alpn_proto_negotiated() == b"http/1.1"
