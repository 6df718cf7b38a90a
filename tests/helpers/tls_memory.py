"""TLS handshakes in memory for the policy tests: listeners built from the suite's PKI, a
pyOpenSSL client context, and a handshake pumped between two memory BIOs."""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

from emulator.arm.certdata import TrustedClientCa
from emulator.arm.ssl_policies import PREDEFINED_POLICIES, SslPolicy
from emulator.core.tls.policy import VerifyLog
from emulator.model import (
    ClientAuthMode,
    Listener,
    ListenerProtocol,
    RevocationMode,
    RoutingRule,
    SslProfile,
)
from emulator.pki import IssuedCert
from tests.helpers.pki import PkiBundle

#: A handshake between two memory BIOs takes a handful of round trips; this bounds a bug's loop.
MAX_HANDSHAKE_ROUNDS = 50


# --- listeners -------------------------------------------------------------------


def make_listener(
    pki: PkiBundle,
    *,
    mode: ClientAuthMode | None = None,
    with_profile: bool = True,
    trusted: bool = True,
    policy: str | SslPolicy = "AppGwSslPolicy20220101",
) -> Listener:
    effective = PREDEFINED_POLICIES[policy] if isinstance(policy, str) else policy
    profile = None
    if with_profile:
        cas = (
            (TrustedClientCa("chain", (pki.client_root.cert, pki.client_ca.cert)),)
            if trusted and mode is ClientAuthMode.STRICT
            else ()
        )
        profile = SslProfile("profile", mode, False, RevocationMode.NONE, cas, None)
    return Listener(
        name="listener",
        protocol=ListenerProtocol.HTTPS,
        frontend_port=443,
        frontend_port_name="port",
        host_names=(),
        server_certificate=pki.server_certificate,
        ssl_profile=profile,
        ssl_policy=effective,
        require_sni=False,
        path="resources[0].properties.httpListeners[0]",
    )


def client_context(
    *,
    cert: IssuedCert | None = None,
    min_version: int | None = None,
    max_version: int | None = None,
    ciphers: bytes | None = None,
    alpn: list[bytes] | None = None,
) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if min_version is not None:
        ctx.set_min_proto_version(min_version)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if ciphers is not None:
        ctx.set_cipher_list(ciphers)
    if cert is not None:
        cert.configure_openssl_context(ctx)
    if alpn is not None:
        ctx.set_alpn_protos(alpn)
    return ctx


@dataclass
class Handshake:
    server: SSL.Connection
    client: SSL.Connection
    log: VerifyLog


def _step(conn: SSL.Connection) -> bool:
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        return False
    return True


def pump(src: SSL.Connection, dst: SSL.Connection) -> None:
    try:
        data = src.bio_read(65536)
    except SSL.WantReadError:
        return
    dst.bio_write(data)


def handshake(
    server_ctx: SSL.Context,
    client_ctx: SSL.Context,
    *,
    server_name: bytes | None = None,
    session: SSL.Session | None = None,
) -> Handshake:
    """Run a complete TLS handshake in memory; raises ``SSL.Error`` when either side fails.

    ``session``: a session of an earlier handshake for the client to offer (resumption)."""
    log = VerifyLog()
    server = SSL.Connection(server_ctx, None)
    server.set_app_data(log)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    if server_name is not None:
        client.set_tlsext_host_name(server_name)
    if session is not None:
        client.set_session(session)
    client.set_connect_state()
    client_done = server_done = False
    for _ in range(MAX_HANDSHAKE_ROUNDS):
        client_done = _step(client) or client_done
        pump(client, server)
        server_done = _step(server) or server_done
        pump(server, client)
        if client_done and server_done:
            # TLS 1.3 servers verify the client's certificate in their last flight.
            return Handshake(server, client, log)
    raise AssertionError("handshake did not finish")


def rule_for(listener: Listener) -> RoutingRule:
    return RoutingRule(f"rule-{listener.name}", None, listener, None, None, None)
