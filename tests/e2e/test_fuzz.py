"""Property-based fuzzing of the gateway's two entry points (issue #10, item 3), with hypothesis.

* TLS entry: arbitrary bytes where a ClientHello belongs (before one, instead of one, with the
  connection half-closed or left open). The gateway answers plain HTTP with its 400 page, says
  nothing in HTTP to anything else, closes within its handshake timeout, and stays up.
* HTTP entry: after a good handshake, request bytes from a grammar of *almost* valid requests
  (odd methods and versions, framing headers valid and invalid, obs-fold, bare LF and CR, NUL,
  forged certificate headers in many spellings, chunked bodies good and bad, a smuggled
  request inside the body), optionally followed by a well-formed request. Properties: every
  answer is a complete, well-framed HTTP/1.1 response; a gateway error page closes the
  connection; every request the backend received got exactly one answer (no desync); no
  client-chosen value reaches the backend in a certificate header; no internal error.
* The resumption path: sequences of connections to either listener, under fuzzed SNI, TLS 1.2
  or 1.3, with any of the test certificates or none, each offering the previous connection's
  session. Properties: no connection resumes, each gets what a fresh client gets, and the
  backend hears only of the requests that passed, with the verification they deserve.

The gateway and the stub backend run in their own trio loop on a thread
(:class:`emulator.sync.LoopThread`), shared by all examples, with short timeouts so a stalled
example ends in well under a second. CI runs ``FUZZ_EXAMPLES`` examples per property (50);
``python fuzz/run.py`` runs many more (see fuzz/README.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from emulator.arm.demo_template import CERT_HEADERS, PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.http.pages import GatewayPage, render_page
from emulator.core.limits import ProxyLimits
from emulator.sync import LoopThread
from tests.helpers.http import (
    SERVER_TOKEN,
    Reply,
    client_context,
    client_hello,
    raw_tls_socket,
    read_to_eof,
)
from tests.helpers.logs import ErrorRecords
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import Stack, start_demo

#: Examples per property: 50 in CI; ``fuzz/run.py`` raises it through the environment.
FUZZ_EXAMPLES: Final = int(os.environ.get("APPGW_FUZZ_EXAMPLES", "50"))
#: Seconds a fuzz client waits for the gateway; every gateway timeout below is far shorter,
#: so hitting this means the gateway hung.
CLIENT_TIMEOUT_S: Final = 10.0
#: The gateway's timeouts while fuzzing (seconds): a stalled example ends quickly.
SHORT_TIMEOUTS: Final = ProxyLimits(
    handshake_timeout_s=0.5,
    request_header_timeout_s=0.5,
    keepalive_idle_s=0.2,
    linger_idle_s=0.05,
    linger_total_s=0.5,
)
FORGED: Final = "FORGED-BY-FUZZ"
OWNED_HEADERS: Final = tuple(name for name, _ in CERT_HEADERS)
#: What ``_looks_like_http`` in tls_stream treats as plain HTTP on the TLS port.
PLAIN_HTTP_START: Final = re.compile(rb"[A-Z][A-Z-]{0,19}(?: |\Z)")

#: Hypothesis's example database: none in CI (nothing written into the checkout); fuzz/run.py
#: keeps one in fuzz/.hypothesis so a failure it found is replayed first next time.
_DATABASE_DIR: Final = os.environ.get("APPGW_FUZZ_DATABASE")

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=DirectoryBasedExampleDatabase(_DATABASE_DIR) if _DATABASE_DIR else None,
    # In the test suite the same examples every run (a red CI must mean a change broke
    # something); fuzz/run.py, which sets a database, explores new ones each time.
    derandomize=not _DATABASE_DIR,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class FuzzTarget:
    stack: Stack
    errors: ErrorRecords


@pytest.fixture(scope="module")
def target(pki: PkiBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """The demo gateway and the stub backend, served from a thread for blocking clients."""
    tmp_path = tmp_path_factory.mktemp("fuzz")

    @asynccontextmanager
    async def serve() -> AsyncIterator[Stack]:
        async with trio.open_nursery() as nursery:
            yield await start_demo(nursery, pki, tmp_path, limits=SHORT_TIMEOUTS)
            nursery.cancel_scope.cancel()

    errors = ErrorRecords()
    logger = logging.getLogger("emulator")
    logger.addHandler(errors)
    loop = LoopThread(serve, name="fuzz-gateway")
    try:
        yield FuzzTarget(loop.start(), errors)
    finally:
        loop.close()
        logger.removeHandler(errors)


@pytest.fixture(autouse=True)
def _alive_and_bug_free(target: FuzzTarget, pki: PkiBundle) -> Iterator[None]:
    """After each property: no internal error was logged, and a normal client is served."""
    yield
    assert target.errors.messages == []
    port = target.stack.port(STRICT_LISTENER)
    request = b"GET /alive HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with raw_tls_socket(port, client_context(pki, pki.client), timeout=CLIENT_TIMEOUT_S) as tls:
        tls.sendall(request)
        assert read_to_eof(tls).startswith(b"HTTP/1.1 200 ")


# -- the TLS entry ----------------------------------------------------------------------------

HELLO = client_hello()


@FUZZ_SETTINGS
@given(
    prefix=st.binary(max_size=3000),
    then=st.sampled_from(["nothing", "client-hello", "truncated-hello"]),
    cut=st.integers(min_value=1, max_value=len(HELLO) - 1),
    half_close=st.booleans(),
    listener=st.sampled_from([STRICT_LISTENER, PASSTHROUGH_LISTENER]),
)
def test_tls_entry_survives_any_bytes_before_or_instead_of_a_client_hello(
    target: FuzzTarget, prefix: bytes, then: str, cut: int, half_close: bool, listener: str
) -> None:
    data = prefix + {"nothing": b"", "client-hello": HELLO, "truncated-hello": HELLO[:cut]}[then]
    port = target.stack.port(listener)
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        if data:
            sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = read_to_eof(sock)  # a hang raises socket.timeout and fails the example
    plain_http = bool(data) and data[0] != 0x16 and PLAIN_HTTP_START.match(data) is not None
    if plain_http:
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:80]
        assert answer.endswith(render_page(GatewayPage.PLAIN_HTTP_TO_HTTPS))
    else:
        assert b"HTTP/" not in answer


# -- the HTTP entry: a grammar of almost-valid requests ---------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"

methods = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"PUT",
        b"DELETE",
        b"OPTIONS",
        b"PATCH",
        b"get",
        b"G\x00T",
        b"",
        b"M-SEARCH",
        b"CONNECT",
        b"TRACE",
    ]
)
targets = st.sampled_from(
    [
        b"/",
        b"/a/b?c=d",
        b"/%2e%2e/x",
        b"*",
        b"http://localhost/abs",
        b"https://localhost:9443?abs",
        b"http://user@localhost/abs",
        b"http://[::1/abs",
        b"/a b",
        b"",
        b"/\x7f",
        b"//double//slash",
        b"/" + b"x" * 3000,
    ]
)
versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1", b""]
)
line_ends = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n"])


def _forged_name(name: str, style: int) -> bytes:
    variants = [name, name.lower(), name.upper(), name.replace("-", "_"), name.swapcase()]
    return variants[style % len(variants)].encode()


header_lines = st.one_of(
    st.sampled_from(
        [
            b"User-Agent: fuzz",
            b"Accept: */*",
            b"Host: localhost",
            b"Host: other.example",
            b"Host: localhost:9443:1",
            b"Host: localhost/x",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Expect: 100-continue",
            b"Content-Length: 0",
            b"Content-Length: 5",
            b"Content-Length: 5, 5",
            b"Content-Length: -1",
            b"Content-Length: 99999999999999999999",
            b"Content-Length : 5",
            b"Content-Length:5",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: xchunked",
            b"Transfer-Encoding: chunked, identity",
            b"Transfer-Encoding:\tchunked",
            b" folded-continuation",
            b"\tfolded-tab",
            b"X-Nul: a\x00b",
            b"Bad Name: x",
            b": empty",
            b"X-Forwarded-For: 203.0.113.9",
            b"Upgrade: websocket",
        ]
    ),
    st.builds(
        lambda name, style, value: _forged_name(name, style) + b": " + value,
        st.sampled_from(OWNED_HEADERS),
        st.integers(0, 4),
        st.sampled_from([FORGED.encode(), b"", FORGED.encode() + b"\x00"]),
    ),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["none", "raw", "chunked", "bad-chunked", "smuggle"]))
    if kind == "none":
        return b""
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "smuggle":
        return draw(st.sampled_from([b"", b"0\r\n\r\n", b"hello"])) + SMUGGLED
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    if kind == "bad-chunked":
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.sampled_from([b"zz\r\n", b"\n", b"-1\r\n", b"0x5\r\n"]))
    return body


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    end = draw(line_ends)
    request_line = b" ".join([draw(methods), draw(targets), draw(versions)])
    lines = [request_line, b"Host: localhost", *draw(st.lists(header_lines, max_size=8))]
    head = b"".join(line + (draw(line_ends) if i else end) for i, line in enumerate(lines))
    return head + draw(line_ends) + draw(bodies())


FOLLOW_UP = b"GET /follow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
#: The other follow-up: a cheap request that also ends the connection (both are forwarded).
CLOSING_REQUEST = b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def parse_strictly(data: bytes) -> list[Reply]:
    """Responses in ``data``; fails unless every one is complete per its framing."""
    replies = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head[:120]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert re.fullmatch(r"HTTP/1\.1 \d{3} .*", status_line), status_line
        status = int(status_line[9:12])
        headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines)]
        names = {k.lower(): v for k, v in headers}
        if status < 200 or status in (204, 304):
            body = b""
        elif "content-length" in names:
            length = int(names["content-length"])
            assert len(rest) >= length, f"body cut short: {len(rest)} of {length} bytes"
            body, rest = rest[:length], rest[length:]
        else:
            assert names.get("transfer-encoding", "").lower() == "chunked", headers
            body, rest = _dechunk_strictly(rest)
        replies.append(Reply(status, headers, body))
    return replies


def _dechunk_strictly(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "chunked body cut short"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert data.startswith(b"\r\n"), "chunked body without its final CRLF"
            return bytes(body), data[2:]
        assert len(data) >= size + 2, "chunk cut short"
        body += data[:size]
        data = data[size + 2 :]


def _is_gateway_page(reply: Reply) -> bool:
    return reply.header("Server") == SERVER_TOKEN and reply.body.startswith(b"<html>")


@FUZZ_SETTINGS
@given(
    request=requests(),
    follow_up=st.booleans(),
    listener=st.sampled_from([STRICT_LISTENER, PASSTHROUGH_LISTENER]),
)
def test_http_entry_answers_almost_valid_requests_with_framed_responses_and_no_forgery(
    target: FuzzTarget, pki: PkiBundle, request: bytes, follow_up: bool, listener: str
) -> None:
    stack = target.stack
    before = len(stack.recorded)
    # The follow-up ends the connection (Connection: close) when the gateway reads it as a
    # request; otherwise the gateway's short timeouts do.
    data = request + (FOLLOW_UP if follow_up else CLOSING_REQUEST)
    with raw_tls_socket(
        stack.port(listener), client_context(pki, pki.client), timeout=CLIENT_TIMEOUT_S
    ) as tls:
        tls.sendall(data)
        answer = read_to_eof(tls)
    replies = parse_strictly(answer)
    recorded = stack.recorded[before:]
    for index, reply in enumerate(replies):
        assert reply.status != 500, reply.body[:200]
        if _is_gateway_page(reply) and reply.status in (400, 408, 431):
            assert reply.header("Connection") == "close"
            assert index == len(replies) - 1, "an answer after a gateway error page"
    # A `100 Continue` is the gateway's own interim answer to `Expect: 100-continue`, not a
    # response from the backend.
    answered_by_backend = [r for r in replies if r.status >= 200 and not _is_gateway_page(r)]
    assert len(answered_by_backend) == len(recorded), (replies, recorded)
    for seen in recorded:
        for name in OWNED_HEADERS:
            assert all(FORGED not in value for value in seen.header_values(name)), seen.headers
        assert not any("_" in name for name, _ in seen.headers)


# -- the HTTP entry: Host values and request targets (issue 15, findings 3 and 4) ------------

#: Host values a client may send, and characters that make one malformed when inserted.
HOST_SEEDS: Final = (
    b"localhost",
    b"LocalHost.",
    b"api.contoso.test:9443",
    b"10.0.0.1:80",
    b"my_host-1",
    b"[::1]",
    b"[2001:db8::1]:443",
    b"a:",
)
HOST_MUTATIONS: Final = (
    b":",
    b":1",
    b"/",
    b"\\",
    b",",
    b" ",
    b"@",
    b"[",
    b"]",
    b"\x01",
    b"\x7f",
    b"\xe9",
    b"%",
    b".",
    b"%eth0",
    b"9",
)


@st.composite
def host_values(draw: st.DrawFn) -> bytes:
    value = draw(st.sampled_from(HOST_SEEDS))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(HOST_MUTATIONS)) + value[at:]
    return value


def _valid_host(value: bytes) -> bool:
    """The test's own reading of ``host[:port]`` (RFC 3986 section 3.2.2, restricted as the
    README's "Security model" says): an oracle written apart from the codec's."""
    text = value.decode("latin-1").lower()
    if text.startswith("["):
        close = text.find("]")
        address, rest = text[1:close], text[close + 1 :]
        if close < 0 or not address or set(address) - set("0123456789abcdef:."):
            return False
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
        labels = (name[:-1] if name.endswith(".") else name).split(".")
        if not all(re.fullmatch(r"[a-z0-9_-]+", label) for label in labels):
            return False
    if not rest:
        return True
    port = rest[1:]
    return (
        rest[0] == ":"
        and re.fullmatch(r"[0-9]{0,5}", port) is not None
        and (not port or int(port) <= 65535)
    )


@FUZZ_SETTINGS
@given(
    host=host_values(),
    authority=st.one_of(st.none(), host_values()),
    scheme=st.sampled_from([b"http", b"https", b"HTTPS"]),
    path=st.sampled_from([b"", b"/", b"/a/b", b"?q=1", b"/x?y=z"]),
)
def test_host_and_target_parsing_forwards_only_one_well_formed_host_in_origin_form(
    target: FuzzTarget,
    pki: PkiBundle,
    host: bytes,
    authority: bytes | None,
    scheme: bytes,
    path: bytes,
) -> None:
    stack = target.stack
    before = len(stack.recorded)
    if authority is None:
        request_target = b"/" + path.lstrip(b"/")
    else:
        request_target = scheme + b"://" + authority + path
    request = (
        b"GET " + request_target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    )
    with raw_tls_socket(
        stack.port(PASSTHROUGH_LISTENER), client_context(pki), timeout=CLIENT_TIMEOUT_S
    ) as tls:
        tls.sendall(request)
        answer = read_to_eof(tls)
    # The request line's grammar (visible ASCII, no spaces) refuses some authorities first;
    # RFC 3986 section 3.2: the authority ends at the first "/", "?" or "#".
    line_ok = all(0x21 <= byte <= 0x7E for byte in request_target)
    if authority is not None:
        cut = re.search(rb"[/?#]", authority + path)
        whole = authority + path
        authority, rest = (whole[: cut.start()], whole[cut.start() :]) if cut else (whole, b"")
        origin = rest if rest.startswith(b"/") else b"/" + rest
    host = host.strip(b" \t")  # optional whitespace around a field value is not the value
    valid = _valid_host(host) and (authority is None or (line_ok and _valid_host(authority)))
    (reply,) = parse_strictly(answer)
    recorded = stack.recorded[before:]
    if not valid:
        assert reply.status == 400, (request, reply.status)
        assert recorded == []
        return
    assert reply.status == 200, (request, reply.status)
    (seen,) = recorded
    # RFC 9112 section 3.2.2: origin form, and the authority (when given) as the only Host.
    assert seen.target == (request_target if authority is None else origin).decode()
    assert seen.header_values("Host") == ((authority or host).decode("latin-1"),)


# -- the resumption path: every connection offers the session of the one before ---------------

#: The client certificates a resumption example may present (None: no certificate), and
#: whether Strict accepts each.
RESUMPTION_CERTS: Final = ("valid", "expired", "unrelated", "self-signed", None)
SERVER_NAMES: Final = ("localhost", "other.example", "admin.localhost")


def _resumption_client(pki: PkiBundle, cert: str | None, version: ssl.TLSVersion) -> ssl.SSLContext:
    chosen = {
        "valid": pki.client,
        "expired": pki.expired,
        "unrelated": pki.unrelated,
        "self-signed": pki.self_signed,
        None: None,
    }[cert]
    ctx = client_context(pki, chosen)
    ctx.minimum_version = ctx.maximum_version = version
    # The SNI is fuzzed; the server certificate names localhost only (its chain is checked).
    ctx.check_hostname = False
    return ctx


@FUZZ_SETTINGS
@given(
    cert=st.sampled_from(RESUMPTION_CERTS),
    version=st.sampled_from([ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]),
    hops=st.lists(
        st.tuples(
            st.sampled_from([STRICT_LISTENER, PASSTHROUGH_LISTENER]), st.sampled_from(SERVER_NAMES)
        ),
        min_size=2,
        max_size=4,
    ),
)
def test_resumption_path_offering_earlier_sessions_never_resumes_or_skips_strict(
    target: FuzzTarget,
    pki: PkiBundle,
    cert: str | None,
    version: ssl.TLSVersion,
    hops: list[tuple[str, str]],
) -> None:
    """Any sequence of connections to either listener, under any SNI, each offering the last
    connection's session (TLS 1.2 id or ticket, TLS 1.3 ticket): every one is a full
    handshake, gets what a fresh client with that certificate gets, and the backend hears only
    of the requests that passed, with the verification the certificate deserves."""
    stack = target.stack
    before = len(stack.recorded)
    ctx = _resumption_client(pki, cert, version)
    session: ssl.SSLSession | None = None
    statuses = []
    for index, (listener, server_name) in enumerate(hops):
        raw = socket.create_connection(
            ("127.0.0.1", stack.port(listener)), timeout=CLIENT_TIMEOUT_S
        )
        with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as tls:
            assert not tls.session_reused, (index, listener)
            tls.sendall(
                f"GET /resume/{index} HTTP/1.1\r\nHost: localhost\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            (reply,) = parse_strictly(read_to_eof(tls))
            session = tls.session
        strict = listener == STRICT_LISTENER
        if strict and cert != "valid":
            page = GatewayPage.NO_CLIENT_CERT if cert is None else GatewayPage.CLIENT_CERT_ERROR
            assert reply.status == page.status
            assert reply.body == render_page(page)
        else:
            assert reply.status == 200
        statuses.append((index, listener, reply.status))
    recorded = stack.recorded[before:]
    assert [r.path for r in recorded] == [f"/resume/{i}" for i, _, s in statuses if s == 200]
    for seen, (_, listener, _) in zip(recorded, [s for s in statuses if s[2] == 200], strict=True):
        expected = (
            "SUCCESS"
            if listener == STRICT_LISTENER
            else ("NONE" if cert is None else "PASSTHROUGH")
        )
        assert seen.header_values("X-Client-Cert-Verification") == (expected,)
