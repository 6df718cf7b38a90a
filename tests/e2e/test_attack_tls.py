"""Attacks on what the TLS handshake proves (issue #15, findings 1, 2, 6 and 17).

Each test attacks the gateway the way a hostile client would: real TLS from the stdlib client
over real sockets on 127.0.0.1, hand-made certificates, and a backend that records the exact
bytes it received. The promise under attack is Strict's: a client without a certificate from
the uploaded chain never reaches the backend, and what the backend is told about the client
certificate is what the handshake showed.

* Session resumption (findings 1 and 2): a client whose certificate Strict refused, or that
  got its session from a Passthrough host name of the same port, offers that session again
  (``session=``, a TLS 1.2 session id or ticket and a TLS 1.3 ticket). OpenSSL does not verify
  anything on a resumed handshake, so the gateway must not resume: the second connection is a
  full handshake (``session_reused`` false) and Strict judges the certificate again.
* Verification is a fact of the connection (finding 6): a certificate Strict refused in the
  handshake, then a request whose Host picks a listener without client authentication. The
  backend is told ``FAILED:<reason>``, never ``NONE`` (which means "no certificate").
* ``X-Azure-JA4-Fingerprint`` (finding 17): a ClientHello too large to fingerprint must not let
  the client's own header of that name through.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import pytest
import trio
from OpenSSL import SSL

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.http.pages import GatewayPage
from emulator.core.request.rewrite import JA4_HEADER
from emulator.core.tls import policy as tls_policy
from emulator.pki import CA, IssuedCert, self_signed_client
from emulator.runtime.tls_stream import CLIENT_HELLO_CAPTURE_LIMIT
from tests.helpers.http import (
    RAW_SOCKET_TIMEOUT_S,
    TLS_VERSIONS,
    Reply,
    assert_gateway_page,
    client_context,
    parse_responses,
    read_to_eof,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.routing import EXAMPLE, RoutingPki, running
from tests.helpers.routing import sni_client_context as _client_ctx
from tests.helpers.stack import SHORT_LINGER, Stack, start_demo

pytestmark = pytest.mark.usefixtures("no_internal_errors")

#: The forward-client-cert rule set of examples/routing/ fills these from the certificate.
VERIFICATION_HEADER: Final = "X-Client-Cert-Verification"
CERT_HEADER: Final = "X-Client-Cert"
SUBJECT_HEADER: Final = "X-Client-Cert-Subject"

TLS_IDS: Final = ["tls12", "tls13"]


@pytest.fixture
async def demo_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The demo gateway with a short lingering close: these clients send everything at once."""
    return await start_demo(nursery, pki, tmp_path, limits=SHORT_LINGER)


@dataclass(frozen=True)
class Attempt:
    """One connection of an attack: whether TLS resumed, and the gateway's answer."""

    reused: bool
    reply: Reply


def _connect(
    port: int, ctx: ssl.SSLContext, sni: str, host: str, session: ssl.SSLSession | None
) -> tuple[Attempt, ssl.SSLSession | None]:
    """One GET on its own connection, offering ``session``; the session to offer next."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S)
    with ctx.wrap_socket(raw, server_hostname=sni, session=session) as tls:
        reused = bool(tls.session_reused)
        tls.sendall(f"GET /resume HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        # Reading to the end also reads the TLS 1.3 tickets, which the server sends with the
        # first response bytes: only then does the session hold one.
        data = read_to_eof(tls)
        next_session = tls.session
    (reply,) = parse_responses(data)
    return Attempt(reused, reply), next_session


def _resume(port: int, ctx: ssl.SSLContext, hops: Sequence[tuple[str, str]]) -> list[Attempt]:
    """Connect once per (SNI, Host) in ``hops``, each connection offering the last one's
    session, with the same client context (the stdlib only resumes within one)."""
    attempts = []
    session = None
    for sni, host in hops:
        attempt, offered = _connect(port, ctx, sni, host, session)
        attempts.append(attempt)
        assert offered is not None
        session = offered
    return attempts


def _pinned(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


# -- finding 1: resuming a session Strict refused ---------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_resuming_a_refused_session_is_a_full_handshake_and_refused_again(
    demo_stack: Stack, pki: PkiBundle, version: ssl.TLSVersion
) -> None:
    admin = self_signed_client("admin")
    ctx = _pinned(client_context(pki), version)
    admin.configure_ssl_context(ctx)
    port = demo_stack.port(STRICT_LISTENER)
    first, second, third = await trio.to_thread.run_sync(
        _resume, port, ctx, [("localhost", "localhost")] * 3
    )
    for attempt in (first, second, third):
        assert not attempt.reused
        assert_gateway_page(attempt.reply, GatewayPage.CLIENT_CERT_ERROR)
    assert demo_stack.recorded == []
    verdicts = [r.sslClientVerify for r in demo_stack.gateway.access_log]
    assert len(verdicts) == 3
    assert all(v.startswith("FAILED:") for v in verdicts), verdicts


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_no_listener_of_either_kind_resumes_a_session(
    demo_stack: Stack, pki: PkiBundle, version: ssl.TLSVersion
) -> None:
    # A good certificate on both listeners: nothing is refused, and still nothing resumes.
    for listener in (STRICT_LISTENER, PASSTHROUGH_LISTENER):
        ctx = _pinned(client_context(pki, pki.client), version)
        port = demo_stack.port(listener)
        attempts = await trio.to_thread.run_sync(
            _resume, port, ctx, [("localhost", "localhost")] * 2
        )
        assert [a.reused for a in attempts] == [False, False]
        assert [a.reply.status for a in attempts] == [200, 200]
    assert len(demo_stack.recorded) == 4


def _resuming_contexts(ctx: SSL.Context) -> None:
    """OpenSSL's defaults, which resume: a server session cache, tickets, and the session id
    context OpenSSL needs before it resumes a session that holds a client certificate."""
    ctx.set_session_id(b"resuming-for-the-test")


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_a_resumed_handshake_is_refused_even_if_a_context_resumed(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    version: ssl.TLSVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second line of defence, with the first taken out: a gateway whose contexts resume
    (OpenSSL's defaults) still refuses a certificate the resumed handshake never verified."""
    monkeypatch.setattr(tls_policy, "_forbid_resumption", _resuming_contexts)
    stack = await start_demo(nursery, pki, tmp_path, limits=SHORT_LINGER)
    admin = self_signed_client("admin")
    ctx = _pinned(client_context(pki), version)
    admin.configure_ssl_context(ctx)
    full, resumed = await trio.to_thread.run_sync(
        _resume, stack.port(STRICT_LISTENER), ctx, [("localhost", "localhost")] * 2
    )
    assert (full.reused, resumed.reused) == (False, True)  # the attack really resumed
    for attempt in (full, resumed):
        assert_gateway_page(attempt.reply, GatewayPage.CLIENT_CERT_ERROR)
    assert stack.recorded == []
    first, second = stack.gateway.access_log
    assert first.sslClientVerify == "FAILED:self-signed certificate"
    assert second.sslClientVerify == "FAILED:unspecified certificate verification error"


# -- finding 2: a session from one listener offered to another of the same port ---------------


def _routing_ctx(rpki: RoutingPki, cert: IssuedCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    return _pinned(_client_ctx(rpki, cert), version)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_passthrough_session_resumed_under_the_strict_host_name_is_refused(
    rpki: RoutingPki, version: ssl.TLSVersion
) -> None:
    admin = self_signed_client("admin")
    async with running(rpki, limits=SHORT_LINGER) as routing:
        ctx = _routing_ctx(rpki, admin, version)
        passthrough, strict = await trio.to_thread.run_sync(
            _resume,
            routing.https_port,
            ctx,
            [
                ("api.contoso.test", "api.contoso.test"),
                ("partners.contoso.test", "partners.contoso.test"),
            ],
        )
        log = list(routing.gateway.access_log)

    assert passthrough.reply.status == 200
    assert passthrough.reply.json()["backend"].startswith("orders-")
    assert not strict.reused
    assert strict.reply.status == 400
    assert b"The SSL certificate error" in strict.reply.body
    assert [r.listenerName for r in log] == ["api-listener", "partners-listener"]
    assert log[1].sslClientVerify.startswith("FAILED:")
    # Only the Passthrough request reached a backend.
    assert sum(len(b.requests) for b in (*routing.orders, routing.inventory)) == 1


def _resource_id(path: str) -> str:
    return f"[concat(variables('gatewayId'), '/{path}')]"


def _two_strict_cas(template: dict[str, Any]) -> dict[str, Any]:
    """The routing example with api-listener made Strict too, trusting another CA."""
    changed = copy.deepcopy(template)
    gateway = changed["resources"][0]["properties"]
    gateway["trustedClientCertificates"].append(
        {"name": "other-ca", "properties": {"data": "[parameters('otherCaData')]"}}
    )
    gateway["sslProfiles"].append(
        {
            "name": "other-strict-profile",
            "properties": {
                "trustedClientCertificates": [
                    {"id": _resource_id("trustedClientCertificates/other-ca")}
                ],
                "clientAuthConfiguration": {"verifyClientAuthMode": "Strict"},
            },
        }
    )
    (api,) = [x for x in gateway["httpListeners"] if x["name"] == "api-listener"]
    api["properties"]["sslProfile"]["id"] = _resource_id("sslProfiles/other-strict-profile")
    changed["parameters"]["otherCaData"] = {"type": "string"}
    return changed


@dataclass(frozen=True)
class _WithOtherCa(RoutingPki):
    """The routing example's certificates plus the other Strict listener's CA."""

    other_ca: bytes = b""

    def parameters(self) -> dict[str, object]:
        return super().parameters() | {"otherCaData": self.other_ca}


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_session_of_one_strict_listener_is_not_resumed_by_another_trusting_another_ca(
    rpki: RoutingPki, version: ssl.TLSVersion
) -> None:
    other_root = CA("Other Partner Root")
    other_client = other_root.issue_client("other-partner-app")
    template = _two_strict_cas(json.loads(EXAMPLE.read_text()))
    both = _WithOtherCa(
        **{f.name: getattr(rpki, f.name) for f in fields(rpki)}, other_ca=other_root.cert_pem
    )
    async with running(both, template, limits=SHORT_LINGER) as routing:
        ctx = _routing_ctx(rpki, other_client, version)
        other, partners = await trio.to_thread.run_sync(
            _resume,
            routing.https_port,
            ctx,
            [
                ("api.contoso.test", "api.contoso.test"),
                ("partners.contoso.test", "partners.contoso.test"),
            ],
        )
        log = list(routing.gateway.access_log)

    # The other CA's client passes its own listener ...
    assert other.reply.status == 200
    assert log[0].sslClientVerify == "SUCCESS"
    # ... and its session does not carry it past the partners' CA.
    assert not partners.reused
    assert partners.reply.status == 400
    assert log[1].listenerName == "partners-listener"
    assert log[1].sslClientVerify.startswith("FAILED:")
    assert sum(len(b.requests) for b in (*routing.orders, routing.inventory)) == 1


# -- finding 6: a refused certificate keeps its verdict when Host picks another listener -------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=TLS_IDS)
async def test_certificate_strict_refused_is_forwarded_as_failed_to_a_listener_without_client_auth(
    rpki: RoutingPki, version: ssl.TLSVersion
) -> None:
    async with running(rpki, limits=SHORT_LINGER) as routing:
        ctx = _routing_ctx(rpki, rpki.expired, version)
        (attempt,) = await trio.to_thread.run_sync(
            _resume, routing.https_port, ctx, [("partners.contoso.test", "www.contoso.test")]
        )
        log = list(routing.gateway.access_log)
        (seen,) = [r for b in routing.orders for r in b.requests]

    assert attempt.reply.status == 200
    headers = dict(seen["headers"])
    assert headers[VERIFICATION_HEADER] == "FAILED:certificate has expired"
    # The certificate variables are what the handshake showed.
    assert "partner-expired" in headers[SUBJECT_HEADER]
    assert headers[CERT_HEADER].startswith("-----BEGIN%20CERTIFICATE-----")
    assert log[-1].listenerName == "www-listener"
    assert log[-1].sslClientVerify == "FAILED:certificate has expired"


async def test_certificate_strict_passed_is_forwarded_as_success_to_a_listener_without_client_auth(
    rpki: RoutingPki,
) -> None:
    async with running(rpki, limits=SHORT_LINGER) as routing:
        ctx = _client_ctx(rpki, rpki.client)
        (attempt,) = await trio.to_thread.run_sync(
            _resume, routing.https_port, ctx, [("partners.contoso.test", "www.contoso.test")]
        )
        (seen,) = [r for b in routing.orders for r in b.requests]

    assert attempt.reply.status == 200
    assert dict(seen["headers"])[VERIFICATION_HEADER] == "SUCCESS"


def _api_shares_the_strict_profile(template: dict[str, Any]) -> dict[str, Any]:
    """The routing example with api-listener under the partners' Strict profile too."""
    changed = copy.deepcopy(template)
    listeners = changed["resources"][0]["properties"]["httpListeners"]
    (api,) = [x for x in listeners if x["name"] == "api-listener"]
    api["properties"]["sslProfile"]["id"] = _resource_id("sslProfiles/strict-profile")
    return changed


async def test_host_picking_another_listener_of_the_same_strict_profile_is_still_refused(
    rpki: RoutingPki,
) -> None:
    # No 421 here (both listeners check clients with the same profile), so the handshake's
    # Strict decision is the one that applies to the Host's listener.
    template = _api_shares_the_strict_profile(json.loads(EXAMPLE.read_text()))
    async with running(rpki, template, limits=SHORT_LINGER) as routing:
        ctx = _client_ctx(rpki, self_signed_client("admin"))
        (attempt,) = await trio.to_thread.run_sync(
            _resume, routing.https_port, ctx, [("partners.contoso.test", "api.contoso.test")]
        )
        log = list(routing.gateway.access_log)

    assert attempt.reply.status == 400
    assert b"The SSL certificate error" in attempt.reply.body
    assert log[-1].sslClientVerify == "FAILED:self-signed certificate"
    assert all(not b.requests for b in (*routing.orders, routing.inventory))


# -- finding 17: the client's own X-Azure-JA4-Fingerprint -------------------------------------

FORGED_JA4: Final = "t13d0000h1_000000000000_000000000000"
#: ALPN names that make the ClientHello larger than the capture limit: 80 of 250 bytes.
BIG_ALPN: Final = [f"x-{i:03d}-".ljust(250, "p") for i in range(80)]


def _forge_ja4(port: int, ctx: ssl.SSLContext) -> Reply:
    raw = socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        request = (
            f"GET /ja4 HTTP/1.1\r\nHost: localhost\r\n{JA4_HEADER}: {FORGED_JA4}\r\n"
            "Connection: close\r\n\r\n"
        )
        tls.sendall(request.encode())
        (reply,) = parse_responses(read_to_eof(tls))
    return reply


@pytest.mark.parametrize("hello", ["normal", "over-16k"])
async def test_client_ja4_header_never_reaches_the_backend(
    demo_stack: Stack, pki: PkiBundle, hello: str
) -> None:
    ctx = client_context(pki)
    if hello == "over-16k":
        ctx.set_alpn_protocols([*BIG_ALPN, "http/1.1"])
        assert sum(len(name) + 1 for name in BIG_ALPN) > CLIENT_HELLO_CAPTURE_LIMIT
    reply = await trio.to_thread.run_sync(_forge_ja4, demo_stack.port(PASSTHROUGH_LISTENER), ctx)
    assert reply.status == 200
    (seen,) = demo_stack.recorded
    values = seen.header_values(JA4_HEADER)
    assert FORGED_JA4 not in values
    if hello == "normal":
        # The gateway's own fingerprint replaces it (the demo uses a 2022 policy).
        (value,) = values
        assert value.startswith("t13d")
    else:
        # Too large to fingerprint: no fingerprint at all, rather than the client's.
        assert values == ()
