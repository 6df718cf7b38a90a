"""The floor of the stack: the cheapest mTLS reverse proxy trio + pyOpenSSL allow (bench/run.py).

A measuring stick, not a product: it does only the transport work that the emulator and nginx
both do on the benchmark's path, so ``bench/run.py --targets nginx,emulator,floor`` shows how much
of the emulator's cost is the stack (Python, trio, pyOpenSSL) and how much the gateway built on it.

Done as the emulator does it: one process and trio loop; TLS 1.2/1.3 through
``SSL.Connection(ctx, None)`` and memory BIOs; the client socket read and written with
``os.read`` / ``os.write`` on its non-blocking descriptor, ``wait_readable`` / ``wait_writable``
only on EAGAIN; a client certificate requested (CA names from ``--client-ca``, ``VERIFY_PEER``
with a callback that accepts anything); the leaf forwarded as ``X-Client-Cert`` (URL-escaped PEM
like nginx's ``$ssl_client_escaped_cert``, built once per connection); one keep-alive backend
connection per client connection. Session cache and tickets off, as in bench/nginx-mtls.conf.in.

Left out, compared with the emulator: template listeners and routing, the rewrite engine and
server variables, Strict verdicts (any certificate or none is accepted) and error pages, HTTP
validation (h11), chunked bodies, timeouts, connection limits, backend pools / health / 502s, JA4
and ClientHello capture, access records and logging, graceful drain. Anything malformed just
closes the connection.

Usage: python bench/floor_proxy.py --port P --backend-port B --cert-chain PEM --key PEM
       --client-ca PEM [--host 127.0.0.1]          (prints ``ready: floor https://HOST:PORT/ …``)
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

#: Bytes per os.read / SSL_read / bio_read: larger than any record or benchmark response.
READ_SIZE: Final = 64 * 1024
#: Listen backlog, as nginx's ``backlog=4096`` in the benchmark's config.
LISTEN_BACKLOG: Final = 4096
_END_OF_HEAD: Final = b"\r\n\r\n"
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def make_context(cert_chain: str, key: str, client_ca: str) -> SSL.Context:
    """Server context: TLS 1.2/1.3, client certificate requested and never refused."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate_chain_file(cert_chain)
    ctx.use_privatekey_file(key)
    ctx.check_privatekey()
    ctx.load_verify_locations(client_ca)  # OpenSSL builds the chain, as the emulator's does
    ctx.load_client_ca(client_ca.encode())
    ctx.set_verify(SSL.VERIFY_PEER, lambda _conn, _cert, _err, _depth, _ok: True)
    return ctx


async def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


async def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


class _Tls:
    """pyOpenSSL over memory BIOs on a non-blocking descriptor: the emulator's TLS layer, bare."""

    __slots__ = ("conn", "fd")

    def __init__(self, ctx: SSL.Context, fd: int) -> None:
        self.conn, self.fd = SSL.Connection(ctx, None), fd
        self.conn.set_accept_state()

    async def flush(self) -> None:
        """Send what OpenSSL wrote to the outgoing BIO (a short bio_read means it is empty)."""
        out = b""
        try:
            while len(chunk := self.conn.bio_read(READ_SIZE)) == READ_SIZE:
                out += chunk
            out += chunk
        except SSL.WantReadError:
            pass  # the BIO was empty (or exactly a multiple of READ_SIZE)
        if out:
            await _write(self.fd, out)

    async def handshake(self) -> bool:
        while True:
            try:
                self.conn.do_handshake()
            except SSL.WantReadError:
                await self.flush()
                if not (data := await _read(self.fd)):
                    return False
                self.conn.bio_write(data)
            else:
                await self.flush()
                return True

    async def recv(self) -> bytes:
        """Decrypted bytes; b"" at close_notify or EOF. Post-handshake output waits for send."""
        while True:
            try:
                return self.conn.recv(READ_SIZE)
            except SSL.WantReadError:
                if not (data := await _read(self.fd)):
                    return b""
                self.conn.bio_write(data)
            except SSL.ZeroReturnError:
                return b""

    async def send(self, data: bytes) -> None:
        self.conn.sendall(data)
        await self.flush()


def _cert_header(conn: SSL.Connection) -> bytes:
    cert = conn.get_peer_certificate(as_cryptography=True)
    if not isinstance(cert, x509.Certificate):
        return b""  # nginx sends no header for an empty $ssl_client_escaped_cert
    pem = cert.public_bytes(Encoding.PEM).decode("ascii")
    return b"X-Client-Cert: " + quote(pem, safe="").encode("ascii") + b"\r\n"


async def _connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if sock.connect_ex((host, port)) == errno.EINPROGRESS:
        await trio.lowlevel.wait_writable(sock)
    if code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        sock.close()
        raise OSError(code, os.strerror(code))
    return sock


async def _read_message(
    buf: bytes, receive: Callable[[], Awaitable[bytes]]
) -> tuple[bytes, bytes] | None:
    """One head + Content-Length body off ``buf`` (reading more as needed) and what follows it;
    None at end of stream."""
    stop = -1
    while stop < 0 or len(buf) < stop:
        if stop < 0 and (end := buf.find(_END_OF_HEAD)) >= 0:
            length = _CONTENT_LENGTH.search(buf, 0, end)
            stop = end + len(_END_OF_HEAD) + (int(length.group(1)) if length else 0)
        elif data := await receive():
            buf += data
        else:
            return None
    return buf[:stop], buf[stop:]


async def serve_client(sock: socket.socket, ctx: SSL.Context, backend: tuple[str, int]) -> None:
    """One client connection: handshake, then request → backend → response until either ends."""
    upstream: socket.socket | None = None
    tls = _Tls(ctx, sock.fileno())
    try:
        if not await tls.handshake():
            return
        cert_header = _cert_header(tls.conn)
        upstream = await _connect(*backend)
        read_backend = functools.partial(_read, upstream.fileno())
        pending, from_backend, close = b"", b"", False
        while not close:
            if (request := await _read_message(pending, tls.recv)) is None:
                return
            message, pending = request
            end = message.find(_END_OF_HEAD)
            lines = message[:end].split(b"\r\n")
            out = [lines[0]]
            for line in lines[1:]:
                name = line.partition(b":")[0].strip().lower()
                if name == b"connection":
                    close = b"close" in line.lower()
                elif name != b"x-client-cert":
                    out.append(line)
            head = b"\r\n".join(out) + b"\r\n" + cert_header + b"\r\n"
            await _write(upstream.fileno(), head + message[end + len(_END_OF_HEAD) :])
            if (response := await _read_message(from_backend, read_backend)) is None:
                return
            answer, from_backend = response
            await tls.send(answer)
        tls.conn.shutdown()  # the client asked for Connection: close: close_notify, then close
        await tls.flush()
    except (SSL.Error, OSError, ValueError):
        return  # a measuring stick: any failure just ends the connection
    finally:
        if upstream is not None:
            upstream.close()
        sock.close()


async def serve(args: argparse.Namespace) -> None:
    ctx = make_context(args.cert_chain, args.key, args.client_ca)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"ready: floor https://{host}:{port}/ (transport only)", flush=True)
    backend = (args.host, args.backend_port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:  # take every pending connection before waiting again
                try:
                    client, _ = listener.accept()
                except BlockingIOError:
                    break
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(serve_client, client, ctx, backend)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="listen and backend address")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--backend-port", type=int, required=True)
    for name in ("--cert-chain", "--key", "--client-ca"):  # PEM files, as nginx is given
        parser.add_argument(name, required=True)
    trio.run(serve, parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
