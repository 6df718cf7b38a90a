"""End-to-end fixtures: a PKI made at test time, the real stub backend, a real gateway, real TLS.

Everything listens on 127.0.0.1 with OS-chosen ports. The gateway runs the same path as the CLI:
an ARM template on disk → ``load_template`` → ``build_gateway_config`` → ``Gateway``.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import trio

import backend_stub
from emulator.arm.template import load_template, select_gateway
from emulator.core.limits import ProxyLimits
from emulator.demo import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.pki import CA, IssuedCert, self_signed_client
from emulator.runtime.gateway import Gateway

PFX_PASSWORD = "test-pfx-password"


@dataclass(frozen=True)
class PkiBundle:
    """The certificates the end-to-end tests need, generated once per session."""

    root: CA
    intermediate: CA
    server_root: CA
    server: IssuedCert
    client: IssuedCert
    expired: IssuedCert
    not_yet_valid: IssuedCert
    unrelated: IssuedCert
    self_signed: IssuedCert
    directory: Path

    @property
    def upload_pem(self) -> bytes:
        """The SSL profile's trusted client CA upload: root + intermediate, public only."""
        return self.root.cert_pem + self.intermediate.cert_pem

    def client_files(
        self, cert: IssuedCert, name: str, *, with_chain: bool = False
    ) -> tuple[Path, Path]:
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.chain_pem if with_chain else cert.cert_pem)
        key_path.write_bytes(cert.key_pem)
        return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiBundle:
    root = CA("e2e Client Root CA")
    intermediate = root.intermediate("e2e Client Issuing CA")
    server_root = CA("e2e Server Root CA")
    unrelated_root = CA("e2e Unrelated Root CA")
    directory = tmp_path_factory.mktemp("pki")
    pki = PkiBundle(
        root=root,
        intermediate=intermediate,
        server_root=server_root,
        server=server_root.issue_server("localhost", "127.0.0.1"),
        client=intermediate.issue_client("e2e-client"),
        expired=intermediate.issue_client("e2e-expired", expired=True),
        not_yet_valid=intermediate.issue_client("e2e-future", not_yet_valid=True),
        unrelated=unrelated_root.issue_client("e2e-unrelated"),
        self_signed=self_signed_client("e2e-self-signed"),
        directory=directory,
    )
    (directory / "server-root-ca.pem").write_bytes(server_root.cert_pem)
    return pki


def template_parameters(pki: PkiBundle) -> list[str]:
    return [
        "certData=" + base64.b64encode(pki.server.pfx(PFX_PASSWORD)).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(pki.upload_pem).decode(),
    ]


@dataclass
class Stack:
    """A running backend + gateway pair and what the backend recorded."""

    gateway: Gateway
    backend_port: int
    recorded: list[backend_stub.RecordedRequest] = field(default_factory=list)

    def url(self, listener: str) -> str:
        return self.gateway.url(listener)

    def port(self, listener: str) -> int:
        return self.gateway.ports[listener]


async def start_stack(
    nursery: trio.Nursery,
    template: Mapping[str, Any] | Path,
    parameters: Sequence[str],
    *,
    tmp_path: Path,
    listen: Mapping[int, int],
    backend_pool: str | None = None,
    **options: Any,
) -> Stack:
    """Start the stub backend and a gateway for ``template`` (a dict is written to disk first);
    ``options`` go to :class:`Gateway` (``limits=ProxyLimits(...)`` for short timeouts)."""
    recorded: list[backend_stub.RecordedRequest] = []
    _host, backend_port = await nursery.start(
        functools.partial(
            backend_stub.serve,
            backend_stub.StubConfig(),
            host="127.0.0.1",
            port=0,
            recorder=recorded.append,
        )
    )
    if isinstance(template, Path):
        path = template
    else:
        path = tmp_path / "gateway.json"
        path.write_text(json.dumps(template))
    config = build_gateway_config(select_gateway(load_template(path, parameters), None))
    if backend_pool is not None:
        config = with_backend_overrides(
            config, {backend_pool: (BackendAddress("127.0.0.1", backend_port),)}
        )
    gateway = Gateway(config, listen=listen, **options)
    await nursery.start(gateway.serve)
    return Stack(gateway, backend_port, recorded)


@pytest.fixture
async def demo_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The `up` gateway: Strict and Passthrough listeners forwarding the client certificate."""
    return await start_demo_stack(nursery, pki, tmp_path)


async def start_demo_stack(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, **options: Any
) -> Stack:
    """:func:`demo_stack` with ``options`` for :class:`Gateway` (say, short ``limits``)."""
    template = demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    return await start_stack(
        nursery,
        template,
        template_parameters(pki),
        tmp_path=tmp_path,
        listen={8443: 0, 9443: 0},
        backend_pool="stub-backend",
        **options,
    )


# -- a real client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def client_context(
    pki: PkiBundle,
    cert: IssuedCert | None = None,
    *,
    with_chain: bool = False,
    tls_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
    if cert is not None:
        name = f"client-{id(cert)}-{int(with_chain)}"
        cert_path, key_path = pki.client_files(cert, name, with_chain=with_chain)
        ctx.load_cert_chain(cert_path, key_path)
    if tls_version is not None:
        ctx.minimum_version = tls_version
        ctx.maximum_version = tls_version
    return ctx


def _request_blocking(
    port: int,
    ctx: ssl.SSLContext,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes | None,
    repeat: int,
) -> list[Reply]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    replies = []
    try:
        for _ in range(repeat):
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            replies.append(Reply(resp.status, resp.getheaders(), resp.read()))
    finally:
        conn.close()
    return replies


async def https_request(
    port: int,
    ctx: ssl.SSLContext,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One HTTPS request with the stdlib client, run in a worker thread."""
    replies = await trio.to_thread.run_sync(
        _request_blocking, port, ctx, method, path, headers or {}, body, 1
    )
    return replies[0]


async def https_requests(
    port: int, ctx: ssl.SSLContext, count: int, path: str = "/"
) -> list[Reply]:
    """``count`` requests over one keep-alive connection."""
    return await trio.to_thread.run_sync(_request_blocking, port, ctx, "GET", path, {}, None, count)


def forwarded(reply: Reply, name: str) -> list[str]:
    """Values of header ``name`` that the backend received (from the stub's JSON echo)."""
    return [v for k, v in reply.json()["headers"] if k.lower() == name.lower()]


TLS_VERSIONS: Sequence[ssl.TLSVersion] = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
LISTENERS = {"strict": STRICT_LISTENER, "passthrough": PASSTHROUGH_LISTENER}


@pytest.fixture(params=TLS_VERSIONS, ids=["tls12", "tls13"])
def tls_version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


# -- raw sockets, for what http.client hides (framing, 100-continue, garbage) ------------------

#: Seconds a raw test socket waits for the gateway before the test fails instead of hanging.
RAW_SOCKET_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_tls_socket(
    port: int, ctx: ssl.SSLContext, *, timeout: float = RAW_SOCKET_TIMEOUT_S
) -> ssl.SSLSocket:
    """A TLS connection to the gateway, handshake done, for writing HTTP bytes by hand."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a TLS close without close_notify counts)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_head(sock: socket.socket) -> bytes:
    """Bytes up to and including the first blank line (one response head), read byte-wise so
    nothing after it is consumed."""
    data = bytearray()
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"connection closed inside a response head: {bytes(data)!r}")
        data += byte
    return bytes(data)


def parse_responses(data: bytes, *, bodyless: Sequence[bool] = ()) -> list[Reply]:
    """Split raw HTTP/1.1 bytes into responses (Content-Length, chunked, or no body).

    ``bodyless[i]`` says response ``i`` answers a HEAD request; 1xx, 204 and 304 never have a
    body. A response without framing takes the rest of the data (read-until-close).
    """
    replies: list[Reply] = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {head[:200]!r}")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        names = {k.lower(): v for k, v in headers}
        head_only = len(replies) < len(bodyless) and bodyless[len(replies)]
        if head_only or status < 200 or status in (204, 304):
            body = b""
        elif "content-length" in names:
            length = int(names["content-length"])
            body, rest = rest[:length], rest[length:]
        elif names.get("transfer-encoding", "").lower() == "chunked":
            body, rest = _dechunk(rest)
        else:
            body, rest = rest, b""
        replies.append(Reply(status, headers, body))
    return replies


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _trailers, _, data = data.partition(b"\r\n")
            return bytes(body), data
        body += data[:size]
        data = data[size + 2 :]


#: How often :func:`wait_for_access_records` looks at the log, and for how long at most.
ACCESS_POLL_S = 0.02
ACCESS_WAIT_S = 5.0


async def wait_for_access_records(gateway: Gateway, count: int = 1) -> None:
    """Wait until the gateway logged ``count`` requests; for connections that end without a
    response the client could wait for (the gateway offers no event to wait on)."""
    for _ in range(int(ACCESS_WAIT_S / ACCESS_POLL_S)):
        if len(gateway.access_log) >= count:
            return
        await trio.sleep(ACCESS_POLL_S)
    raise AssertionError(f"{len(gateway.access_log)} access records after {ACCESS_WAIT_S} s")


#: For clients that send everything at once: after a 400 the gateway reads on until the client
#: has been silent for ``linger_idle_s``, so a short silence ends the lingering close sooner.
SHORT_LINGER: Final = ProxyLimits(linger_idle_s=0.05)
