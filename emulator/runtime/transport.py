"""The one module that works on file descriptors: TCP sockets, and the spools' temporary files.

Sockets. :class:`SocketTransport` reads and writes a non-blocking socket with ``os.read`` /
``os.write`` and waits with ``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the
kernel says "would block". trio's own socket methods add a context manager and a forced schedule
point to every call, several times the system call itself, and a proxied keep-alive request
makes one read and one write on each side. Every client connection's TLS stream
(:mod:`emulator.runtime.tls_stream`) and every plain backend connection
(:mod:`emulator.runtime.backend`) goes through it; memory streams in tests take trio's stream
interface instead, which callers fall back to when there is no socket.

The descriptor is looked up on every pass rather than kept: a closed socket says -1, and a
remembered number could meanwhile belong to another connection.

Errors are reported as trio's stream errors (``trio.BrokenResourceError``,
``trio.ClosedResourceError``, ``trio.TooSlowError`` past a deadline), so callers map one
family, whatever the transport.

Files. Spooled bodies are written and read at explicit offsets (``os.pwrite`` / ``os.pread``)
in a worker thread: one task appends while another reads, and a shared file position would
make them race.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import struct
from typing import IO, Final

import trio

__all__ = [
    "SocketTransport",
    "detach_socket",
    "read_at",
    "socket_closed_by_peer",
    "tcp_rtt_us",
    "truncate",
    "write_at",
]

_CLOSED_MESSAGE: Final = "the socket was closed"

#: ``struct tcp_info`` (linux/tcp.h): 8 one-byte fields, then 32-bit fields; ``tcpi_rtt`` (µs)
#: is the 16th of those.
_TCPI_RTT_OFFSET: Final = 8 + 15 * 4
_TCP_INFO_SIZE: Final = 104


def _transport_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """A socket error as trio's ``SocketStream`` would report it."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError(_CLOSED_MESSAGE)
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


#: recv flags of :meth:`SocketTransport.closed_by_peer`, as a plain int: combining the two
#: flags is an enum operation, which costs more than the system call it asks for.
_PEEK_NOW: Final = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)


class SocketTransport:
    """A non-blocking TCP socket read and written directly.

    The caller owns the socket and closes it (:meth:`close`, or the trio stream it came from);
    no two tasks may receive (or send) at the same time.
    """

    __slots__ = ("socket",)

    def __init__(self, sock: trio.socket.SocketType | socket.socket) -> None:
        #: The socket (trio's or the stdlib's: both give ``fileno()`` and readiness waits).
        self.socket = sock

    def _fd(self) -> int:
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError(_CLOSED_MESSAGE)
        return fd

    def receive_now(self, size: int) -> bytes | None:
        """The next bytes if the kernel has some (b"" at the peer's EOF), else None: a read
        that needs no wait, and no coroutine either.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: the socket failed or closed.
        """
        try:
            return os.read(self._fd(), size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _transport_error(exc) from exc

    async def receive(
        self, size: int, deadline: float = math.inf, *, wait_first: bool = False
    ) -> bytes:
        """The next bytes (b"" at the peer's EOF), waiting until ``deadline`` (trio's clock).

        ``wait_first``: the caller knows nothing can be there yet (a request just went out),
        so readiness is awaited before the first read instead of after a failed one. A read
        the kernel answers at once is not a schedule point.

        Raises:
            trio.TooSlowError: nothing by ``deadline``.
            trio.BrokenResourceError, trio.ClosedResourceError: the socket failed or closed.
        """
        sock = self.socket
        while True:
            if not wait_first:
                try:
                    return os.read(self._fd(), size)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise _transport_error(exc) from exc
            wait_first = False
            if deadline == math.inf:
                await trio.lowlevel.wait_readable(sock)
                continue
            # A bare scope and only while waiting: fail_at's generator-based context manager
            # would cost each waiting connection another frame.
            with trio.CancelScope(deadline=deadline) as waiting:
                await trio.lowlevel.wait_readable(sock)
            if waiting.cancelled_caught:
                raise trio.TooSlowError

    def send_now(self, data: bytes | memoryview) -> bytes | memoryview:
        """Write what the kernel takes without waiting; returns the rest (empty: all went).

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: the socket failed or closed.
        """
        rest = data
        try:
            while rest:
                sent = os.write(self._fd(), rest)
                rest = b"" if sent == len(rest) else memoryview(rest)[sent:]
        except BlockingIOError:
            pass
        except OSError as exc:
            raise _transport_error(exc) from exc
        return rest

    async def send_all(self, data: bytes | memoryview, deadline: float = math.inf) -> None:
        """Write all of ``data``; the kernel must have taken it by ``deadline``.

        Not a schedule point when the kernel takes it at once (the usual case).

        Raises:
            trio.TooSlowError: the peer stopped reading.
            trio.BrokenResourceError, trio.ClosedResourceError: the socket failed or closed.
        """
        sock = self.socket
        while data := self.send_now(data):
            if deadline == math.inf:
                await trio.lowlevel.wait_writable(sock)
                continue
            with trio.CancelScope(deadline=deadline) as waiting:
                await trio.lowlevel.wait_writable(sock)
            if waiting.cancelled_caught:
                raise trio.TooSlowError

    def closed_by_peer(self) -> bool:
        """True when the idle socket is readable: the peer closed it (EOF), failed, or sent
        bytes nobody asked for; either way it cannot carry another request."""
        try:
            self.socket.recv(1, _PEEK_NOW)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        """Close at once; a task waiting on the socket is woken (``notify_closing``)."""
        trio.lowlevel.notify_closing(self.socket)
        self.socket.close()


def detach_socket(stream: trio.SocketStream) -> SocketTransport:
    """Take the descriptor of a freshly connected ``stream`` over from trio (which never waited
    on it, so there is nothing to notify); the stream must not be used afterwards."""
    sock = socket.socket(fileno=stream.socket.detach())
    sock.setblocking(False)
    return SocketTransport(sock)


def socket_closed_by_peer(stream: trio.SocketStream) -> bool:
    """:meth:`SocketTransport.closed_by_peer` for a socket under another stream (TLS), asked
    without reading: a poll for input or the peer's hang-up."""
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLIN | select.POLLRDHUP)
    return bool(poller.poll(0))


def tcp_rtt_us(stream: trio.abc.Stream) -> int | None:
    """The kernel's smoothed RTT of a TCP connection (``client_tcp_rtt``), Linux only."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or not isinstance(stream, trio.SocketStream):
        return None
    try:
        raw = stream.socket.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(raw) < _TCPI_RTT_OFFSET + 4:
        return None
    return int(struct.unpack_from("=I", raw, _TCPI_RTT_OFFSET)[0])


async def write_at(file: IO[bytes], data: bytes, offset: int) -> None:
    """Write ``data`` at ``offset`` of ``file``, in a worker thread (the file position is not
    used, so a reader of the same file is not disturbed)."""
    await trio.to_thread.run_sync(os.pwrite, file.fileno(), data, offset)


async def read_at(file: IO[bytes], size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` of ``file``, read in a worker thread."""
    return await trio.to_thread.run_sync(os.pread, file.fileno(), size, offset)


def truncate(file: IO[bytes]) -> None:
    """Empty ``file`` (its blocks are given back at once)."""
    os.ftruncate(file.fileno(), 0)
