"""TlsServerStream against real TLS clients: trio's stdlib-``ssl`` SSLStream over memory streams,
and a blocking stdlib ``ssl`` socket over loopback TCP.

The server context is built the way the gateway builds it: ``set_verify(VERIFY_PEER, cb)`` where
the callback records ``(errno, depth)`` into the connection's app data and always returns True, so
the handshake completes and the verdict is left to the HTTP layer.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto

from emulator.runtime.tls_stream import PlainHttpOnTlsPort, TlsHandshakeError, TlsServerStream
from emulator.runtime.transport import SocketTransport

#: Every test finishes in well under a second; this only turns a hang into a failure.
TEST_TIMEOUT_S = 5.0

#: OpenSSL X509_V_ERR_* codes an untrusted client chain can produce, depending on its shape:
#: 18 self-signed leaf, 19 self-signed root in chain, 20 unable to get local issuer,
#: 21 unable to verify the first certificate.
UNTRUSTED_ERRNOS = {18, 19, 20, 21}


# --------------------------------------------------------------------------- test PKI


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    common_name: str,
    issuer: Issued | None,
    *,
    ca: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> Issued:
    """A certificate for ``common_name`` signed by ``issuer`` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.cert.subject if issuer is not None else name
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


@dataclass(frozen=True, slots=True)
class Pki:
    server_root: Issued
    server_leaf: Issued
    client_root: Issued
    client_intermediate: Issued
    client_leaf: Issued
    rogue_leaf: Issued
    directory: Path

    @property
    def server_root_file(self) -> Path:
        return self.directory / "server-root.pem"

    def client_files(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}-chain.pem", self.directory / f"{name}-key.pem"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    server_root = issue("Test Server Root", None, ca=True)
    server_leaf = issue(
        "localhost",
        server_root,
        ca=False,
        dns=("localhost",),
        ips=("127.0.0.1",),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_root = issue("Test Client Root", None, ca=True)
    client_intermediate = issue("Test Client Intermediate", client_root, ca=True)
    client_leaf = issue(
        "client-1", client_intermediate, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    rogue_root = issue("Rogue Root", None, ca=True)
    rogue_leaf = issue("rogue-client", rogue_root, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    directory = tmp_path_factory.mktemp("tls-stream-pki")
    pki = Pki(
        server_root,
        server_leaf,
        client_root,
        client_intermediate,
        client_leaf,
        rogue_leaf,
        directory,
    )
    pki.server_root_file.write_bytes(server_root.cert_pem())
    for name, leaf, extra in (
        ("trusted", client_leaf, client_intermediate.cert_pem()),
        ("rogue", rogue_leaf, b""),
    ):
        chain_file, key_file = pki.client_files(name)
        chain_file.write_bytes(leaf.cert_pem() + extra)
        key_file.write_bytes(leaf.key_pem())
    return pki


# --------------------------------------------------------------------------- contexts


def record_verify(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, preverify_ok: int
) -> bool:
    """The gateway's pattern: remember OpenSSL's verdict, never fail the handshake."""
    records = conn.get_app_data()
    assert isinstance(records, list)
    records.append((errno, depth))
    return True


def select_http11(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    if b"http/1.1" in offered:
        return b"http/1.1"
    # pyOpenSSL types its sentinel with a private class; there is no public name to annotate.
    return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


def server_context(pki: Pki) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate(pki.server_leaf.cert)
    ctx.use_privatekey(pki.server_leaf.key)
    store = ctx.get_cert_store()
    assert store is not None
    store.add_cert(crypto.X509.from_cryptography(pki.client_root.cert))
    ctx.set_verify(SSL.VERIFY_PEER, record_verify)
    ctx.set_alpn_select_callback(select_http11)
    return ctx


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def tls_version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    version: ssl.TLSVersion = request.param
    return version


def client_context(
    pki: Pki, version: ssl.TLSVersion, *, client_cert: str | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.server_root_file)
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if client_cert is not None:
        chain_file, key_file = pki.client_files(client_cert)
        ctx.load_cert_chain(chain_file, key_file)
    return ctx


# --------------------------------------------------------------------------- helpers


@dataclass(slots=True)
class Pair:
    server: TlsServerStream
    client: trio.SSLStream[trio.abc.Stream]
    client_transport: trio.abc.Stream
    verify_records: list[tuple[int, int]]


#: The two transports a TLS stream runs over: trio's memory streams (the stream's generic path)
#: and a connected socket pair (the descriptor read and written directly, ``runtime.transport``).
TRANSPORTS = ("memory", "socket")
MakePair = Callable[[SSL.Context, ssl.SSLContext], Pair]


def _pair_over(kind: str, server_ctx: SSL.Context, client_ctx: ssl.SSLContext) -> Pair:
    client_transport: trio.abc.Stream
    server_transport: trio.abc.Stream
    if kind == "memory":
        client_transport, server_transport = trio.testing.memory_stream_pair()
    else:
        server_sock, client_sock = trio.socket.socketpair()
        server_transport = trio.SocketStream(server_sock)
        client_transport = trio.SocketStream(client_sock)
    records: list[tuple[int, int]] = []
    server = TlsServerStream(server_transport, server_ctx, app_data=records)
    client: trio.SSLStream[trio.abc.Stream] = trio.SSLStream(
        client_transport, client_ctx, server_hostname="localhost"
    )
    return Pair(server, client, client_transport, records)


@pytest.fixture(params=TRANSPORTS)
def make_pair(request: pytest.FixtureRequest) -> MakePair:
    """Builds a server/client pair over each transport in turn."""
    kind: str = request.param
    return functools.partial(_pair_over, kind)


async def handshake(pair: Pair) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.server.do_handshake)
        nursery.start_soon(pair.client.do_handshake)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(buffer)} of {size} bytes"
        buffer += chunk
    return bytes(buffer)


@pytest.fixture
async def connected(
    pki: Pki, tls_version: ssl.TLSVersion, make_pair: MakePair
) -> AsyncIterator[Pair]:
    """A completed handshake, client presenting the trusted chain."""
    pair = make_pair(server_context(pki), client_context(pki, tls_version, client_cert="trusted"))
    with trio.fail_after(TEST_TIMEOUT_S):
        await handshake(pair)
    yield pair
    await pair.server.aclose()
    await trio.aclose_forcefully(pair.client)


# --------------------------------------------------------------------------- data transfer


async def test_echo_both_ways_after_handshake(connected: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        request = await receive_exactly(connected.server, 18)
        await connected.server.send_all(b"echo:" + request)
        assert await receive_exactly(connected.client, 23) == b"echo:GET / HTTP/1.1\r\n\r\n"


async def test_client_sending_before_server_speaks_is_served(
    pki: Pki, tls_version: ssl.TLSVersion, make_pair: MakePair
) -> None:
    # The request arrives glued to the client's last handshake flight; in TLS 1.3 the server's
    # delayed session tickets must then go out in front of the response.
    pair = make_pair(server_context(pki), client_context(pki, tls_version))
    with trio.fail_after(TEST_TIMEOUT_S):

        async def client_side() -> None:
            await pair.client.do_handshake()
            await pair.client.send_all(b"ping")
            assert await receive_exactly(pair.client, 4) == b"pong"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            assert await pair.server.receive_some() == b"ping"
            await pair.server.send_all(b"pong")


async def test_large_payloads_flow_both_ways_concurrently(connected: Pair) -> None:
    size = 1024 * 1024
    upload = bytes(range(256)) * (size // 256)
    download = upload[::-1]
    received: dict[str, bytes] = {}

    async def collect(name: str, stream: trio.abc.ReceiveStream) -> None:
        received[name] = await receive_exactly(stream, size)

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, "server", connected.server)
            nursery.start_soon(collect, "client", connected.client)
            nursery.start_soon(connected.client.send_all, upload)
            nursery.start_soon(connected.server.send_all, download)
    assert received["server"] == upload
    assert received["client"] == download


async def test_empty_send_is_a_no_op(connected: Pair) -> None:
    await connected.server.send_all(b"")
    await connected.server.send_all(b"x")
    assert await connected.client.receive_some() == b"x"


# --------------------------------------------------------------------------- negotiated facts


async def test_negotiated_facts_are_reported(connected: Pair, tls_version: ssl.TLSVersion) -> None:
    server = connected.server
    expected_version = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}
    assert server.tls_version == expected_version[tls_version]
    client_cipher = connected.client.cipher()
    assert client_cipher is not None
    assert server.cipher == client_cipher[0]
    assert server.alpn_protocol == "http/1.1"
    assert server.server_name == "localhost"
    assert server.connection.get_app_data() is connected.verify_records


async def test_client_hello_is_captured_raw(connected: Pair) -> None:
    hello = connected.server.client_hello
    assert hello[0] == 0x16  # handshake record
    assert hello[5] == 0x01  # handshake type ClientHello (RFC 8446 section 4)
    record_length = int.from_bytes(hello[3:5], "big")
    assert len(hello) == 5 + record_length  # exactly the ClientHello record, nothing after
    assert b"localhost" in hello  # the SNI extension
    assert b"http/1.1" in hello  # the ALPN extension


async def test_facts_are_empty_before_the_handshake(pki: Pki, make_pair: MakePair) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    assert pair.server.tls_version is None
    assert pair.server.cipher is None
    assert pair.server.alpn_protocol is None
    assert pair.server.peer_certificate is None
    assert pair.server.peer_chain == ()
    assert pair.server.client_hello == b""


async def test_handshake_is_idempotent(connected: Pair) -> None:
    await connected.server.do_handshake()
    assert connected.server.tls_version is not None


# --------------------------------------------------------------------------- client certificates


async def test_trusted_client_certificate_is_reported_with_its_chain(
    connected: Pair, pki: Pki
) -> None:
    # In TLS 1.3 the client's certificate arrives after the server's Finished; do_handshake
    # returns only after the client's Finished, so it is already there.
    server = connected.server
    assert server.peer_certificate == pki.client_leaf.cert
    common_names = server.peer_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_names[0].value == "client-1"
    assert server.peer_chain == (pki.client_leaf.cert, pki.client_intermediate.cert)
    assert connected.verify_records, "the verify callback was not called"
    assert all(errno == 0 for errno, _ in connected.verify_records)
    assert {depth for _, depth in connected.verify_records} == {0, 1, 2}


async def test_untrusted_client_certificate_still_completes_handshake(
    pki: Pki, tls_version: ssl.TLSVersion, make_pair: MakePair
) -> None:
    pair = make_pair(server_context(pki), client_context(pki, tls_version, client_cert="rogue"))
    with trio.fail_after(TEST_TIMEOUT_S):
        await handshake(pair)
        await pair.client.send_all(b"hi")
        assert await pair.server.receive_some() == b"hi"
    assert pair.server.peer_certificate == pki.rogue_leaf.cert
    assert pair.server.peer_chain == (pki.rogue_leaf.cert,)
    errnos = {errno for errno, _ in pair.verify_records}
    assert errnos & UNTRUSTED_ERRNOS, pair.verify_records


async def test_missing_client_certificate_still_completes_handshake(
    pki: Pki, tls_version: ssl.TLSVersion, make_pair: MakePair
) -> None:
    pair = make_pair(server_context(pki), client_context(pki, tls_version))
    with trio.fail_after(TEST_TIMEOUT_S):
        await handshake(pair)
        await pair.client.send_all(b"hi")
        assert await pair.server.receive_some() == b"hi"
    assert pair.server.peer_certificate is None
    assert pair.server.peer_chain == ()
    assert pair.verify_records == []


# --------------------------------------------------------------------------- closing


async def test_close_notify_from_client_gives_eof(connected: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.client.aclose()
        assert await connected.server.receive_some() == b""
        assert await connected.server.receive_some() == b""  # EOF is sticky
        await connected.server.aclose()  # the client's transport is gone; must not raise


async def test_transport_close_without_close_notify_gives_eof(connected: Pair) -> None:
    # HTTP clients often just close the socket; that ends the request stream, it is not an error.
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.client_transport.aclose()
        assert await connected.server.receive_some() == b""
        assert await connected.server.receive_some() == b""


async def test_aclose_after_peer_vanished_does_not_raise(connected: Pair) -> None:
    await connected.client_transport.aclose()
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.server.aclose()
        await connected.server.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await connected.server.send_all(b"late")


async def test_aclose_sends_close_notify(connected: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.server.send_all(b"bye")
        await connected.server.aclose()
        assert await receive_exactly(connected.client, 3) == b"bye"
        assert await connected.client.receive_some() == b""


async def test_send_last_puts_the_data_and_close_notify_in_one_transport_write(
    connected: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last response of a closing connection and close_notify leave together: the client
    # reads the data, then EOF, from that single write; aclose sends nothing more.
    writes: list[int] = []
    server_transport = connected.server.transport_stream
    if isinstance(server_transport, trio.StapledStream):
        memory_send = server_transport.send_stream
        assert isinstance(memory_send, trio.testing.MemorySendStream)
        original = memory_send.send_all_hook

        async def count_writes() -> None:
            writes.append(1)
            if original is not None:
                await original()

        memory_send.send_all_hook = count_writes
    else:
        # Over a socket every write is a SocketTransport.send_now (the kernel takes it whole).
        send_now = SocketTransport.send_now

        def counted(self: SocketTransport, data: bytes | memoryview) -> bytes | memoryview:
            writes.append(1)
            return send_now(self, data)

        monkeypatch.setattr(SocketTransport, "send_now", counted)
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.server.send_last(b"the end")
        assert len(writes) == 1
        assert await receive_exactly(connected.client, 7) == b"the end"
        assert await connected.client.receive_some() == b""
        await connected.server.aclose()
    assert len(writes) == 1
    with pytest.raises(trio.ClosedResourceError):
        await connected.server.send_all(b"more")


# --------------------------------------------------------------------------- handshake failures


async def test_plain_http_raises_plain_http_on_tls_port(pki: Pki, make_pair: MakePair) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    await pair.client_transport.send_all(request)
    with trio.fail_after(TEST_TIMEOUT_S), pytest.raises(PlainHttpOnTlsPort) as caught:
        await pair.server.do_handshake()
    assert caught.value.initial_data == request
    with pytest.raises(trio.BrokenResourceError):
        await pair.server.receive_some()


async def test_non_tls_garbage_raises_handshake_error(pki: Pki, make_pair: MakePair) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    await pair.client_transport.send_all(bytes([0x00, 0xFF, 0x01, 0x02, 0x03]) * 20)
    with trio.fail_after(TEST_TIMEOUT_S), pytest.raises(TlsHandshakeError) as caught:
        await pair.server.do_handshake()
    assert re.search("wrong version number|unexpected record|packet length", caught.value.reason)
    assert isinstance(caught.value.__cause__, SSL.Error)
    with pytest.raises(trio.BrokenResourceError):
        await pair.server.send_all(b"x")


async def test_peer_closing_during_handshake_raises_handshake_error(
    pki: Pki, make_pair: MakePair
) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    await pair.client_transport.aclose()
    with trio.fail_after(TEST_TIMEOUT_S), pytest.raises(TlsHandshakeError) as caught:
        await pair.server.do_handshake()
    assert caught.value.reason == "peer closed connection"


async def test_no_shared_cipher_fails_and_alerts_the_client(pki: Pki, make_pair: MakePair) -> None:
    # The server holds an ECDSA key; a TLS 1.2 client offering only RSA-authenticated suites
    # has nothing in common with it.
    client_ctx = client_context(pki, ssl.TLSVersion.TLSv1_2)
    client_ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    pair = make_pair(server_context(pki), client_ctx)
    server_errors: list[TlsHandshakeError] = []
    client_errors: list[trio.BrokenResourceError] = []

    async def server_side() -> None:
        try:
            await pair.server.do_handshake()
        except TlsHandshakeError as exc:
            server_errors.append(exc)

    async def client_side() -> None:
        try:
            await pair.client.do_handshake()
        except trio.BrokenResourceError as exc:
            client_errors.append(exc)

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            nursery.start_soon(client_side)
    assert len(server_errors) == 1
    assert server_errors[0].reason == "no shared cipher"
    assert isinstance(server_errors[0].__cause__, SSL.Error)
    # The server's alert reached the client, so the client can say why instead of "EOF".
    assert len(client_errors) == 1
    assert "HANDSHAKE_FAILURE" in str(client_errors[0].__cause__).upper()
    # The alert reached the client, so it can tell the user why instead of "EOF".
    assert client_errors
    assert "HANDSHAKE_FAILURE" in str(client_errors[0].__cause__).upper()


async def test_handshake_runs_on_first_receive(pki: Pki, make_pair: MakePair) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.client.send_all, b"auto")
            assert await pair.server.receive_some() == b"auto"
    assert pair.server.tls_version == "TLSv1.3"


async def test_cancelled_handshake_leaves_stream_broken_and_aclose_closes_transport(
    pki: Pki,
    make_pair: MakePair,
) -> None:
    # The caller's handshake timeout (trio.fail_after) cancels do_handshake; the stream must
    # not be reused, and closing it must still release the transport.
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.server.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        await pair.server.do_handshake()
    await pair.server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await pair.server.transport_stream.send_all(b"x")


async def test_concurrent_handshake_callers_share_one_handshake(
    pki: Pki, make_pair: MakePair
) -> None:
    # A receive that needs the handshake while do_handshake runs it waits for that handshake
    # instead of starting another one.
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    received: list[bytes] = []

    async def receive() -> None:
        received.append(await pair.server.receive_some())

    async def client() -> None:
        await pair.client.do_handshake()
        await pair.client.send_all(b"after")

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.server.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(receive)
            nursery.start_soon(client)
    assert received == [b"after"]
    assert pair.server.tls_version == "TLSv1.3"


async def test_waiter_on_a_failed_handshake_sees_the_stream_broken(
    pki: Pki, make_pair: MakePair
) -> None:
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_3))
    outcomes: list[type[BaseException]] = []

    async def attempt() -> None:
        try:
            await pair.server.do_handshake()
        except (TlsHandshakeError, trio.BrokenResourceError) as exc:
            outcomes.append(type(exc))

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(attempt)
            await trio.testing.wait_all_tasks_blocked()
            await pair.client_transport.send_all(bytes([0x00, 0xFF, 0x01, 0x02, 0x03]) * 20)
    assert outcomes == [TlsHandshakeError, trio.BrokenResourceError]


async def test_handshake_started_before_the_client_hello_completes(
    pki: Pki, make_pair: MakePair
) -> None:
    # The server waits for the ClientHello before its first SSL call; a client that connects
    # and only later starts the handshake is served the same.
    pair = make_pair(server_context(pki), client_context(pki, ssl.TLSVersion.TLSv1_2))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.server.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            assert pair.server.tls_version is None
            nursery.start_soon(pair.client.do_handshake)
    assert pair.server.tls_version == "TLSv1.2"
    assert pair.server.peer_certificate is None


# --------------------------------------------------------------------------- concurrency


async def test_cancelled_receive_loses_no_data(connected: Pair) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connected.server.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.client.send_all(b"still here")
        assert await receive_exactly(connected.server, 10) == b"still here"


async def test_two_concurrent_receives_are_refused(connected: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connected.server.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await connected.server.receive_some()
            await connected.client.send_all(b"x")


async def test_wait_send_all_might_not_block_returns_on_idle_stream(connected: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.server.wait_send_all_might_not_block()


# --------------------------------------------------------------------------- real TCP


def blocking_client(port: int, ctx: ssl.SSLContext, request: bytes) -> bytes:
    """A plain stdlib HTTPS-style client: connect, send at once, read the echo, close cleanly."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TEST_TIMEOUT_S) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        reply = b""
        while len(reply) < len(request):
            chunk = tls.recv(65536)
            if not chunk:
                break
            reply += chunk
        tls.unwrap()  # send close_notify and wait for the server's
        return reply


async def test_loopback_tcp_client_with_certificate(pki: Pki, tls_version: ssl.TLSVersion) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    client_ctx = client_context(pki, tls_version, client_cert="trusted")
    request = b"POST /upload HTTP/1.1\r\n\r\n" + b"z" * 100_000
    replies: list[bytes] = []

    async def run_client() -> None:
        replies.append(await trio.to_thread.run_sync(blocking_client, port, client_ctx, request))

    records: list[tuple[int, int]] = []
    with trio.fail_after(TEST_TIMEOUT_S):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(run_client)
            transport = await listener.accept()
            server = TlsServerStream(transport, server_context(pki), app_data=records)
            await server.do_handshake()
            assert server.peer_certificate == pki.client_leaf.cert
            while data := await server.receive_some():
                await server.send_all(data)
            await server.aclose()
    assert replies == [request]
    assert records
    assert all(errno == 0 for errno, _ in records)


# --------------------------------------------------------------------------- receive deadline


async def test_receive_deadline_raises_too_slow_and_loses_no_data(
    connected: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    # The gateway's real request-header timeout, waited out on the mock clock.
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await connected.server.receive_some(deadline=started + 60.0)
    assert trio.current_time() - started == pytest.approx(60.0)
    with trio.fail_after(TEST_TIMEOUT_S):
        await connected.client.send_all(b"late")
        assert await receive_exactly(connected.server, 4) == b"late"


@pytest.mark.parametrize("kind", ["lockstep", "socket"])
async def test_send_deadline_raises_too_slow_when_the_client_reads_nothing(
    pki: Pki, tls_version: ssl.TLSVersion, kind: str
) -> None:
    # A client that stops reading: the send gives up at its deadline (the gateway's
    # client_send_timeout_s, real time here) and the stream is unusable, as after a cancel.
    client_transport: trio.abc.Stream
    server_transport: trio.abc.Stream
    if kind == "lockstep":  # a memory transport that takes nothing until the peer reads
        client_transport, server_transport = trio.testing.lockstep_stream_pair()
    else:
        server_sock, client_sock = trio.socket.socketpair()
        server_transport = trio.SocketStream(server_sock)
        client_transport = trio.SocketStream(client_sock)
    server = TlsServerStream(server_transport, server_context(pki), app_data=[])
    client = trio.SSLStream(
        client_transport,
        client_context(pki, tls_version, client_cert="trusted"),
        server_hostname="localhost",
    )
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await server.send_all(b"x" * (8 << 20), deadline=started + 0.2)
        assert trio.current_time() - started >= 0.2
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"more")
        await server.aclose()
        await trio.aclose_forcefully(client)


async def test_socket_transport_is_read_and_written_directly_with_the_same_results(
    pki: Pki, tls_version: ssl.TLSVersion
) -> None:
    # Over a trio.SocketStream the stream reads and writes the descriptor itself (only waiting
    # when the kernel says so); the bytes, the deadline and EOF behave as over any transport.
    server_sock, client_sock = trio.socket.socketpair()
    records: list[tuple[int, int]] = []
    server = TlsServerStream(trio.SocketStream(server_sock), server_context(pki), app_data=records)
    client = trio.SSLStream(
        trio.SocketStream(client_sock),
        client_context(pki, tls_version, client_cert="trusted"),
        server_hostname="localhost",
    )
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
        with pytest.raises(trio.TooSlowError):
            await server.receive_some(deadline=trio.current_time() + 0.05)
        payload = bytes(range(256)) * 1024  # 256 KiB: several records, partial socket writes

        async def echo() -> None:
            received = await receive_exactly(server, len(payload))
            await server.send_all(received)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            await client.send_all(payload)
            assert await receive_exactly(client, len(payload)) == payload
        await client.aclose()
        assert await server.receive_some() == b""
        await server.aclose()
    assert records  # the verify callback saw the chain...
    assert all(errno == 0 for errno, _depth in records)  # ...and OpenSSL found no error
