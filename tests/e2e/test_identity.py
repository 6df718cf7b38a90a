"""The backend's view of the client's identity cannot be forged (issue #10, item 5).

On every listener whose rewrite rules unconditionally fill a header from a client certificate
variable (the demo gateway: Strict and Passthrough, eight ``X-Client-Cert*`` headers), no
client-chosen value may reach the backend in such a header, whatever the spelling, the
repetition, the connection reuse or the pipelining; and a request never carries the
certificate of another connection, even when the gateway sends the requests of two clients
over one pooled backend connection.

What the backend received is read from the stub backend's recorder, not from the response.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from urllib.parse import unquote

import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding

import backend_stub
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.model import GatewayConfig
from emulator.pki import IssuedCert
from tests.helpers.http import Reply, client_context, parse_responses, raw_tls_socket, tls_exchange
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import Stack

FORGED = "forged-by-the-client"


pytestmark = pytest.mark.usefixtures("no_internal_errors")


def owned_headers(config: GatewayConfig) -> dict[str, set[str]]:
    """Listener name → headers its rewrite rules set, without a condition, from a
    ``client_certificate*`` variable: the headers the backend may trust on that listener."""
    owned: dict[str, set[str]] = {}
    for rule in config.rules:
        for rule_set in rule.rewrite_rule_sets:
            for rewrite in rule_set.rules:
                if rewrite.conditions:
                    continue
                for action in rewrite.request_headers:
                    if "{var_client_certificate" in action.header_value:
                        owned.setdefault(rule.listener.name, set()).add(action.header_name)
    return owned


def _spellings(name: str) -> list[str]:
    """Ways a client might try to slip ``name`` past a case- or byte-exact comparison."""
    return [name.lower(), name.upper(), name.swapcase(), name.replace("-", "_")]


def forged_headers(names: set[str], trick: str) -> list[tuple[str, str]]:
    """Client headers imitating ``names`` with the given trick, each carrying ``FORGED``."""
    out: list[tuple[str, str]] = []
    for name in sorted(names):
        if trick == "exact":
            out.append((name, FORGED))
        elif trick == "case":
            out += [(spelling, FORGED) for spelling in _spellings(name)[:3]]
        elif trick == "duplicate":
            out += [(name, FORGED), (name.lower(), FORGED + "-2"), (name, FORGED + "-3")]
        elif trick == "underscore":
            out += [(name.replace("-", "_"), FORGED), (name.upper().replace("-", "_"), FORGED)]
        elif trick == "empty":
            out.append((name, ""))
    return out


TRICKS = ["exact", "case", "duplicate", "underscore", "empty"]


def request_bytes(path: str, headers: list[tuple[str, str]], *, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers)]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fingerprint(cert: IssuedCert) -> str:
    return hashlib.sha1(cert.cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest()


def assert_identity(
    seen: backend_stub.RecordedRequest, owned: set[str], cert: IssuedCert | None
) -> None:
    """The backend saw exactly the gateway's values for ``owned``: ``cert``'s, or none."""
    # Azure drops names with underscores, so no look-alike travels beside the real headers.
    assert not any("_" in name for name, _ in seen.headers), seen.headers
    for name in owned:
        values = seen.header_values(name)
        assert all(FORGED not in v for v in values), (name, values)
        if name.lower() == "x-client-cert-verification":
            assert len(values) == 1  # SUCCESS, PASSTHROUGH or NONE: always sent
            continue
        assert len(values) == (1 if cert is not None else 0), (name, values)
    if cert is not None:
        assert seen.header_values("X-Client-Cert-Fingerprint") == (fingerprint(cert),)
        assert unquote(seen.header_values("X-Client-Cert")[0]).encode() == cert.cert_pem


async def test_the_demo_gateway_owns_its_certificate_headers_on_both_listeners(
    demo_stack: Stack,
) -> None:
    owned = owned_headers(demo_stack.gateway.config)
    assert set(owned) == {STRICT_LISTENER, PASSTHROUGH_LISTENER}
    assert "X-Client-Cert" in owned[STRICT_LISTENER]
    assert len(owned[PASSTHROUGH_LISTENER]) == 8


@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize(
    ("listener", "with_cert"),
    [(STRICT_LISTENER, True), (PASSTHROUGH_LISTENER, True), (PASSTHROUGH_LISTENER, False)],
    ids=["strict-cert", "passthrough-cert", "passthrough-none"],
)
async def test_client_chosen_certificate_headers_never_reach_the_backend(
    demo_stack: Stack, pki: PkiBundle, listener: str, with_cert: bool, trick: str
) -> None:
    owned = owned_headers(demo_stack.gateway.config)[listener]
    cert = pki.client if with_cert else None
    request = request_bytes("/who", forged_headers(owned, trick), close=True)
    data = await trio.to_thread.run_sync(
        tls_exchange, demo_stack.port(listener), client_context(pki, cert), request
    )
    (reply,) = parse_responses(data)
    assert reply.status == 200
    (seen,) = demo_stack.recorded
    assert_identity(seen, owned, cert)


async def test_strict_without_certificate_forwards_nothing_whatever_the_headers(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    owned = owned_headers(demo_stack.gateway.config)[STRICT_LISTENER]
    headers = [h for trick in TRICKS for h in forged_headers(owned, trick)]
    data = await trio.to_thread.run_sync(
        tls_exchange,
        demo_stack.port(STRICT_LISTENER),
        client_context(pki),
        request_bytes("/who", headers) * 2,
    )
    assert [r.status for r in parse_responses(data)] == [400]
    assert demo_stack.recorded == []


@pytest.mark.parametrize(
    ("listener", "with_cert"),
    [(STRICT_LISTENER, True), (PASSTHROUGH_LISTENER, True), (PASSTHROUGH_LISTENER, False)],
    ids=["strict-cert", "passthrough-cert", "passthrough-none"],
)
@pytest.mark.parametrize("pipelined", [False, True], ids=["keep-alive", "pipelined"])
async def test_every_request_on_a_connection_gets_the_connections_identity(
    demo_stack: Stack, pki: PkiBundle, listener: str, with_cert: bool, pipelined: bool
) -> None:
    owned = owned_headers(demo_stack.gateway.config)[listener]
    cert = pki.client if with_cert else None
    requests = [
        request_bytes(f"/{i}", forged_headers(owned, trick), close=i == len(TRICKS) - 1)
        for i, trick in enumerate(TRICKS)
    ]
    ctx = client_context(pki, cert)
    port = demo_stack.port(listener)
    if pipelined:
        data = await trio.to_thread.run_sync(tls_exchange, port, ctx, b"".join(requests))
        replies = parse_responses(data)
    else:
        replies = await trio.to_thread.run_sync(_one_by_one, port, ctx, requests)
    assert [r.status for r in replies] == [200] * len(TRICKS)
    assert [r.path for r in demo_stack.recorded] == [f"/{i}" for i in range(len(TRICKS))]
    for seen in demo_stack.recorded:
        assert_identity(seen, owned, cert)
    # One client connection served them all.
    assert len({r.clientPort for r in demo_stack.gateway.access_log}) == 1


def _one_by_one(port: int, ctx: ssl.SSLContext, requests: list[bytes]) -> list[Reply]:
    """Send each request after the previous response was read in full, on one connection."""
    replies: list[Reply] = []
    with raw_tls_socket(port, ctx) as tls:
        for request in requests:
            tls.sendall(request)
            response = http.client.HTTPResponse(tls)
            response.begin()
            replies.append(Reply(response.status, response.getheaders(), response.read()))
    return replies


#: Clients of the interleaving test: name → certificate (None: no certificate).
ROUNDS = 4


def _interleave(
    port: int, contexts: dict[str, ssl.SSLContext], forged: list[tuple[str, str]]
) -> list[tuple[str, int]]:
    """Keep one connection per client; send one request per client in turn, round after round,
    each carrying forged headers. The gateway's backend pool mixes them on its connections."""
    sockets = {name: raw_tls_socket(port, ctx) for name, ctx in contexts.items()}
    statuses = []
    try:
        for round_number in range(ROUNDS):
            for name, tls in sockets.items():
                tls.sendall(request_bytes(f"/{name}/{round_number}", forged))
                response = http.client.HTTPResponse(tls)
                response.begin()
                response.read()
                statuses.append((name, response.status))
    finally:
        for tls in sockets.values():
            tls.close()
    return statuses


async def test_interleaved_clients_never_inherit_each_others_certificate(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    owned = owned_headers(demo_stack.gateway.config)[PASSTHROUGH_LISTENER]
    certs: dict[str, IssuedCert | None] = {
        "alice": pki.client,
        "nobody": None,
        "mallory": pki.expired,
    }
    contexts = {name: client_context(pki, cert) for name, cert in certs.items()}
    forged = forged_headers(owned, "case")
    statuses = await trio.to_thread.run_sync(
        _interleave, demo_stack.port(PASSTHROUGH_LISTENER), contexts, forged
    )
    assert {status for _, status in statuses} == {200}
    assert len(demo_stack.recorded) == ROUNDS * len(certs)
    for seen in demo_stack.recorded:
        sender = seen.path.split("/")[1]
        assert_identity(seen, owned, certs[sender])
        expected = "NONE" if certs[sender] is None else "PASSTHROUGH"
        assert seen.header_values("X-Client-Cert-Verification") == (expected,)
    # The test means something only if backend connections carried several clients' requests.
    senders_per_backend_connection: dict[object, set[str]] = {}
    for seen in demo_stack.recorded:
        senders_per_backend_connection.setdefault(seen.client, set()).add(seen.path.split("/")[1])
    assert max(len(s) for s in senders_per_backend_connection.values()) > 1
