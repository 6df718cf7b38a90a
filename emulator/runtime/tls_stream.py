"""Server-side TLS over any trio stream, driven by pyOpenSSL memory BIOs.

Theory of operation
===================

BIO flow
--------
``OpenSSL.SSL.Connection(context, None)`` (no socket) gives a connection whose network side is two
in-memory buffers ("BIOs"):

* the *incoming* BIO, which we fill with ``bio_write(bytes)`` from whatever the transport received
  (and close with ``bio_shutdown()`` when the transport reports EOF, so OpenSSL sees EOF too);
* the *outgoing* BIO, which OpenSSL fills with records to send and we empty with ``bio_read(n)``.

The four TLS operations (``do_handshake``, ``recv``, ``send``, ``shutdown``) are synchronous and
never touch the network. Each either succeeds or raises ``SSL.WantReadError``: "I need more bytes
in the incoming BIO". Writing to a memory BIO always succeeds, so ``WantWriteError`` cannot happen.
Any operation may leave bytes in the outgoing BIO -- even ``recv`` (a TLS 1.3 KeyUpdate answer) --
so after every call we flush the outgoing BIO to the transport.

All of that lives in one loop, :meth:`TlsServerStream._retry`: call the operation; if there is
output, send it; else if OpenSSL wants input, receive from the transport and feed it; repeat until
the operation succeeds. Every SSL call and every network wait of this module goes through it.

Concurrency
-----------
The proxy reads a request body in one task while it streams a response in another, so one
``receive_some`` and one ``send_all`` may run at the same time. The pyOpenSSL calls themselves
never interleave (they are synchronous, and trio only switches tasks at ``await``), but the
network waits can:

* Transport sends are serialised by ``_send_lock``, a :class:`trio.StrictFIFOLock`. Bytes taken
  from the outgoing BIO must reach the wire in the order they were taken; a task takes its bytes
  and queues on the FIFO lock without yielding in between, so queue order is BIO order.
* Transport receives are serialised by a flag (``_transport_receiving``). A task that waited
  while another task received checks ``_recv_count``: if someone else already fed the incoming
  BIO, it retries its SSL call instead of waiting for bytes that may never come.
* Two tasks receiving at the same time (or sending at the same time) is a caller bug and raises
  :class:`trio.BusyResourceError`, as for every trio stream.

When both a send and a receive are needed, the send comes first; then the loop receives only if
no other task fed the incoming BIO meanwhile (``_recv_count`` unchanged), and otherwise goes round
again. Calling the operation again without new input would only repeat "want read": writing to a
memory BIO never waits, so an operation that asked for input has nothing else to do. For the
same reason a handshake receives the ClientHello before its first ``do_handshake``.

One handshake runs at a time: a task that needs it while another runs it waits for that one's
outcome (an event made per handshake), rather than queueing on a ``trio.Lock``, whose
``async with`` would add a schedule point to every connection.

A send that finds the lock free writes to the socket at once, without taking it: a write the
kernel takes whole contains no ``await``, so no other task can come in between. The lock is
taken (``acquire_nowait`` first) only when the kernel makes the send wait, or another send is
already waiting.

Cost per byte and per call
--------------------------
A keep-alive request is one receive and one send on this stream, so their fixed cost matters
as much as the cryptography:

* Over a TCP transport (``trio.SocketStream``) the socket is read and written directly,
  through :class:`emulator.runtime.transport.SocketTransport` (which says why). Any other
  transport (memory streams in tests) goes through its ``receive_some`` / ``send_all``.
* :meth:`TlsServerStream.receive_some` and :meth:`TlsServerStream.send_all` are always cancel
  points, and schedule points whenever they wait; an operation that completes at once does not
  yield. A proxy waits for its backend on every request, so no connection can hog the loop.
* The outgoing BIO is drained with reads as large as the BIO may hold, so a drain that finds
  bytes stops without the extra ``WantReadError`` an empty read raises. A ``recv`` that
  returned data does not drain at all: what it may have queued (a TLS 1.3 KeyUpdate answer)
  goes out in front of the next send, or before the stream next waits for input.

Verification
------------
This module verifies nothing. The caller's ``Context`` carries a ``set_verify`` callback (installed
by the gateway's TLS policy code); the callback records OpenSSL's verdict per certificate into
``connection.get_app_data()`` -- set from the ``app_data=`` argument -- and returns True, so that
the handshake completes even when the client certificate is missing, expired or untrusted. That
is what the gateway needs: Azure Application Gateway finishes the TLS handshake and the HTTP layer
decides (Strict answers 400 with an explanation, Passthrough forwards). This stream only exposes
the facts afterwards: ``peer_certificate``, ``peer_chain``, ``tls_version``, ``cipher``,
``alpn_protocol``, ``server_name`` and the raw ``client_hello``.

TLS 1.3 session tickets
-----------------------
A TLS 1.3 server's ``SSL_do_handshake`` writes NewSessionTicket messages as soon as it has read
the client's Finished (https://github.com/openssl/openssl/issues/7948). Sending them at that
moment can reach a client that is not reading yet; a client that then closes with unread data
makes the kernel send RST, which can destroy the request we have not read. Like trio's
``SSLStream`` (https://github.com/python-trio/trio/issues/819) we hold those bytes and put them
in front of the next transport send (the first response bytes, or close_notify). The gateway
never resumes a session (its contexts have no session cache and no tickets, see
:mod:`emulator.core.tls.policy`), yet OpenSSL still writes the tickets (pyOpenSSL has no binding
for ``SSL_CTX_set_num_tickets``): a client that offers one gets a full handshake. Client
certificates arrive before the client's Finished even in TLS 1.3, so ``peer_certificate`` is
already known when :meth:`TlsServerStream.do_handshake` returns.

Plain HTTP on the TLS port
--------------------------
Before the first received bytes are given to OpenSSL we look at them: a TLS connection starts
with a handshake record (content type 0x16); if instead they start with an HTTP method token,
:class:`PlainHttpOnTlsPort` is raised with those bytes so the proxy can answer 400 in plain text,
as a real HTTPS listener does. Other garbage goes to OpenSSL and fails as
:class:`TlsHandshakeError` (typically ``"wrong version number"``).

Errors
------
``SSL.Error`` (and its ``SysCallError``/``ZeroReturnError``) and the transport's
``trio.BrokenResourceError``/``trio.ClosedResourceError`` are mapped in one place,
:meth:`TlsServerStream._failure`: to :class:`TlsHandshakeError` during the handshake, to
``trio.BrokenResourceError`` afterwards, always chained with ``from``. After any failure the
stream is BROKEN and every later call raises ``trio.BrokenResourceError``.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
from collections.abc import Callable
from typing import Final, TypeVar

import trio
from cryptography import x509
from OpenSSL import SSL, crypto

from emulator.logsafe import escaped_logger
from emulator.runtime.transport import SocketTransport

__all__ = [
    "CERTIFICATE_CACHE_SIZE",
    "CLIENT_HELLO_CAPTURE_LIMIT",
    "CLOSE_NOTIFY_TIMEOUT_S",
    "DEFAULT_MAX_BYTES",
    "RECEIVE_SIZE",
    "SEND_CHUNK_SIZE",
    "PlainHttpOnTlsPort",
    "TlsHandshakeError",
    "TlsServerStream",
]

LOGGER = escaped_logger(__name__)

T = TypeVar("T")

#: Bytes asked from the transport per receive. 64 KiB rather than trio's 16 KiB starting size
#: because a TLS record carries up to 16 KiB of plaintext plus overhead, so 16 KiB reads would
#: split most full records in two; 64 KiB drains a loopback socket buffer in few system calls.
RECEIVE_SIZE: Final = 64 * 1024

#: Default plaintext bytes per ``receive_some`` when the caller gives no ``max_bytes``.
DEFAULT_MAX_BYTES: Final = 64 * 1024

#: Plaintext bytes handed to one ``SSL_write``. 64 KiB is four full records: large enough that
#: the per-call overhead does not matter, small enough that a 1 MiB body does not sit in the
#: outgoing BIO all at once and a concurrent receive gets a turn between chunks.
SEND_CHUNK_SIZE: Final = 64 * 1024

#: Bytes of outgoing BIO read per ``bio_read`` call; we loop until the BIO is empty.
_BIO_READ_SIZE: Final = 64 * 1024

#: Raw client bytes kept in :attr:`TlsServerStream.client_hello`. A ClientHello record is at most
#: 16 KiB + 5 bytes of header (RFC 8446 section 5.1); real ones are under 2 KiB (post-quantum
#: key shares make them ~1.8 KiB). 16 KiB is enough for a JA4 fingerprint and bounds memory.
CLIENT_HELLO_CAPTURE_LIMIT: Final = 16 * 1024

#: Seconds ``aclose`` waits to hand close_notify to the transport. A peer that stopped reading
#: must not keep a connection slot: close_notify is a courtesy (RFC 8446 section 6.1), so we give
#: up after one second and close the transport anyway.
CLOSE_NOTIFY_TIMEOUT_S: Final = 1.0

#: TLS record content type "handshake" (RFC 8446 section 5.1): the first byte of any ClientHello.
_TLS_HANDSHAKE_RECORD: Final = 0x16

#: An HTTP method token at the start of the stream (RFC 9110 section 9: methods are tokens; all
#: registered ones are upper-case letters, ``M-SEARCH`` has a dash). The token may be cut short
#: by a small first read, so a bare prefix like ``b"GE"`` also matches.
_HTTP_METHOD_PREFIX: Final = re.compile(rb"[A-Z][A-Z-]{0,19}(?: |\Z)")

#: Reason text when the peer went away during the handshake.
_PEER_CLOSED: Final = "peer closed connection"

_BROKEN_MESSAGE: Final = "the TLS stream is broken by an earlier error"
_CLOSED_MESSAGE: Final = "the TLS stream was closed"
_BUSY_RECEIVING: Final = "another task is already receiving on this TLS stream"
_BUSY_SENDING: Final = "another task is already sending on this TLS stream"
_BAD_MAX_BYTES: Final = "max_bytes must be at least 1"


class TlsHandshakeError(Exception):
    """The TLS handshake failed; a normal outcome to log and count, not a bug.

    Attributes:
        reason: OpenSSL's reason text (``"wrong version number"``, ``"no shared cipher"``,
            ``"tlsv1 alert unknown ca"``) or ``"peer closed connection"``. The original
            ``SSL.Error`` or trio error is the ``__cause__``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"TLS handshake failed: {self.reason}"


class PlainHttpOnTlsPort(Exception):
    """The client spoke plain HTTP to a TLS listener.

    Attributes:
        initial_data: everything received before the decision (at least the start of the
            request line; possibly only part of it if the client's first write was small).
    """

    def __init__(self, initial_data: bytes) -> None:
        super().__init__(initial_data)
        self.initial_data = initial_data

    def __str__(self) -> str:
        return f"plain HTTP on a TLS port: {self.initial_data[:32]!r}"


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


def _ssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's reason text of ``exc``, the part users can search for."""
    if isinstance(exc, SSL.ZeroReturnError):
        return _PEER_CLOSED
    if isinstance(exc, SSL.SysCallError):
        # (-1, "Unexpected EOF") when the BIO hit EOF mid-record; otherwise (errno, strerror).
        if exc.args and exc.args[0] == -1:
            return _PEER_CLOSED
        return str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    # SSL.Error.args[0] is OpenSSL's error queue: [(library, function, reason), ...].
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list) and queue:
        reasons = [str(entry[2]) for entry in queue if isinstance(entry, tuple) and len(entry) > 2]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return str(exc) or type(exc).__name__


def _is_unexpected_eof(exc: SSL.Error) -> bool:
    """True when OpenSSL failed only because the transport ended without close_notify."""
    if isinstance(exc, SSL.SysCallError):
        return bool(exc.args) and exc.args[0] == -1
    return "unexpected eof" in _ssl_reason(exc)


#: Client certificates kept parsed, by DER. A client reconnects with the same certificate: its
#: connections share one object instead of parsing it again and each holding a copy.
CERTIFICATE_CACHE_SIZE: Final = 256


@functools.lru_cache(maxsize=CERTIFICATE_CACHE_SIZE)
def _certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _looks_like_http(data: bytes) -> bool:
    return data[0] != _TLS_HANDSHAKE_RECORD and _HTTP_METHOD_PREFIX.match(data) is not None


class TlsServerStream(trio.abc.Stream):
    """The server side of a TLS connection over ``transport``.

    Args:
        transport: any trio stream (a TCP ``SocketStream`` in production, a memory stream in
            tests). The TLS stream owns it: :meth:`aclose` closes it.
        context: the server ``SSL.Context`` (certificate, key, verify callback, ALPN/SNI
            callbacks); shared between connections and never modified here.
        app_data: stored with ``Connection.set_app_data`` so that the context's callbacks can
            find per-connection state (the gateway's verify callback appends its results there).

    The handshake runs on the first :meth:`do_handshake`, :meth:`receive_some` or
    :meth:`send_all`. No method sets a timeout: wrap :meth:`do_handshake` in
    ``trio.fail_after(...)`` -- a cancelled handshake leaves the stream BROKEN.
    """

    # Slots: one of these lives for every open connection (idle keep-alive ones included).
    __slots__ = (
        "_client_hello",
        "_close_notify_sent",
        "_conn",
        "_delayed_outgoing",
        "_handshake_done",
        "_handshake_running",
        "_peer_certificate",
        "_peer_chain",
        "_plaintext_eof",
        "_receiving",
        "_recv_count",
        "_seen_bytes",
        "_send_lock",
        "_sending",
        "_server_spoke",
        "_socket",
        "_state",
        "_transport",
        "_transport_eof",
        "_transport_free",
        "_transport_receiving",
        "_undrained",
    )

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: SSL.Context,
        *,
        app_data: object = None,
    ) -> None:
        self._transport = transport
        #: The TCP socket under a ``trio.SocketStream`` transport, read and written directly.
        self._socket = (
            SocketTransport(transport.socket) if isinstance(transport, trio.SocketStream) else None
        )
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._conn.set_app_data(app_data)
        self._state = _State.OK

        self._send_lock = trio.StrictFIFOLock()
        self._transport_receiving = False  # a task is receiving from the transport
        self._transport_free: trio.Event | None = None  # set when it is done (if awaited)
        self._recv_count = 0
        self._handshake_running: trio.Event | None = None  # set when the running one ends
        self._handshake_done = False
        self._sending = False
        self._receiving = False

        self._transport_eof = False  # the transport returned b"" and the BIO was shut
        self._undrained = False  # a recv may have left bytes in the outgoing BIO
        self._plaintext_eof = False  # receive_some returned b"" once; keep returning it
        self._close_notify_sent = False  # send_last ended the sending side
        self._delayed_outgoing = b""  # TLS 1.3 session tickets waiting for the next send
        self._server_spoke = False  # the first server flight has been produced
        self._seen_bytes = 0
        self._client_hello = bytearray()

        self._peer_certificate: x509.Certificate | None = None
        self._peer_chain: tuple[x509.Certificate, ...] = ()

    # ----------------------------------------------------------------- facts

    @property
    def transport_stream(self) -> trio.abc.Stream:
        """The stream underneath (owned by this object)."""
        return self._transport

    @property
    def connection(self) -> SSL.Connection:
        """The pyOpenSSL connection, for what the typed properties do not cover.

        Calling its I/O methods directly would desynchronise the BIOs; read-only use only.
        """
        return self._conn

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The client's leaf certificate, or None if it sent none (or before the handshake)."""
        return self._peer_certificate

    @property
    def peer_chain(self) -> tuple[x509.Certificate, ...]:
        """The certificates the client sent, leaf first, without duplicates.

        This is what was on the wire, not a verified path: it may miss intermediates or contain
        unrelated certificates. Empty before the handshake or when no certificate was sent.
        """
        return self._peer_chain

    @property
    def tls_version(self) -> str | None:
        """``"TLSv1.3"``, ``"TLSv1.2"``, ...; None before the handshake."""
        if not self._handshake_done:
            return None
        return self._conn.get_protocol_version_name()

    @property
    def cipher(self) -> str | None:
        """The OpenSSL name of the negotiated cipher suite; None before the handshake."""
        if not self._handshake_done:
            return None
        return self._conn.get_cipher_name()

    @property
    def alpn_protocol(self) -> str | None:
        """The ALPN protocol the context's select callback chose, or None."""
        if not self._handshake_done:
            return None
        chosen = self._conn.get_alpn_proto_negotiated()
        return chosen.decode("ascii", errors="replace") if chosen else None

    @property
    def server_name(self) -> str | None:
        """The SNI host name the client sent, or None (clients connecting by IP send none)."""
        name = self._conn.get_servername()
        # SNI carries A-labels (RFC 6066 section 3), so ASCII; never fail on a hostile value.
        return name.decode("ascii", errors="replace") if name else None

    @property
    def client_hello(self) -> bytes:
        """The raw TLS records received before the server's first flight, at most 16 KiB.

        Normally exactly the ClientHello record(s); input for a JA4 fingerprint.
        """
        return bytes(self._client_hello)

    def forget_client_hello(self) -> None:
        """Drop the captured ClientHello (:attr:`client_hello` is empty afterwards): a caller
        that has taken what it needs from it spares every idle connection its bytes."""
        self._client_hello = bytearray()

    # ------------------------------------------------------------- the loop

    def _check_state(self) -> None:
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError(_BROKEN_MESSAGE)
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError(_CLOSED_MESSAGE)

    def _drain_outgoing(self) -> bytes:
        self._undrained = False
        try:
            first = self._conn.bio_read(_BIO_READ_SIZE)
        except SSL.WantReadError:
            return b""
        if len(first) < _BIO_READ_SIZE:
            return first  # a short read emptied the BIO: no second read to raise WantReadError
        chunks = [first]
        while True:
            try:
                chunk = self._conn.bio_read(_BIO_READ_SIZE)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < _BIO_READ_SIZE:
                break
        return b"".join(chunks)

    def _feed(self, data: bytes) -> None:
        """Give bytes received from the transport to OpenSSL (b"" means EOF)."""
        if not data:
            self._transport_eof = True
            self._conn.bio_shutdown()
            return
        if self._seen_bytes == 0 and _looks_like_http(data):
            self._mark_broken()
            raise PlainHttpOnTlsPort(data)
        self._seen_bytes += len(data)
        if not self._server_spoke:
            room = CLIENT_HELLO_CAPTURE_LIMIT - len(self._client_hello)
            self._client_hello += data[:room]
        self._conn.bio_write(data)

    async def _retry(
        self,
        fn: Callable[..., T],
        *args: object,
        is_handshake: bool = False,
        ignore_want_read: bool = False,
        drain_on_success: bool = True,
        deadline: float = math.inf,
    ) -> T | None:
        """Run one SSL operation to completion, moving bytes between the BIOs and the transport.

        Raises the operation's ``SSL.Error`` and the transport's errors unchanged (after sending
        whatever alert OpenSSL queued); the public methods map them via :meth:`_failure`.
        ``ignore_want_read`` runs ``fn`` once and only flushes its output (used for
        close_notify, where we do not wait for the peer's reply). ``drain_on_success=False``
        (``recv``) leaves the output of a successful call in the BIO for the next send or
        wait (see "Cost per byte and per call"). Waiting for the transport, to receive or to
        take what is sent, ends at ``deadline`` (trio's clock) with ``trio.TooSlowError``.

        Always a cancel point; a schedule point when it waits for the transport.
        Cancellation: safe while waiting for the transport to receive (nothing is lost); during
        a transport send the stream becomes BROKEN because part of a record may be on the wire.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if is_handshake and not self._seen_bytes and not self._transport_eof:
            # The client speaks first: before its ClientHello the handshake could only say
            # "want read" (and the empty outgoing BIO another), so receive it first.
            await self._receive_into_bio(deadline, self._recv_count)
        while True:
            want_read = False
            result: T | None = None
            seen = self._recv_count
            try:
                result = fn(*args)
            except SSL.WantReadError:
                want_read = not ignore_want_read
            except SSL.ZeroReturnError:
                raise  # close_notify received: the end of the data, not a failure
            except SSL.Error:
                await self._flush_alert()
                raise
            except BaseException:
                # An exception from one of the context's callbacks (pyOpenSSL re-raises it after
                # the SSL call): the connection's state is unknown, so it is unusable.
                self._mark_broken()
                raise

            if not drain_on_success and (not want_read or self._handshake_done):
                # A recv: what it may have queued (a TLS 1.3 KeyUpdate answer) waits for the
                # next send, which RFC 8446 section 4.6.3 allows ("prior to sending its next
                # Application Data record"); draining here would cost a failed bio_read per
                # request.
                self._undrained = True
                if not want_read:
                    return result
                to_send = b""
            else:
                to_send = self._drain_outgoing()
            if to_send:
                self._server_spoke = True
            if (
                is_handshake
                and not want_read
                and self._conn.get_protocol_version_name() == "TLSv1.3"
            ):
                # See "TLS 1.3 session tickets" above: hold them until the next send.
                self._delayed_outgoing += to_send
                to_send = b""

            if to_send:
                await self._send_to_transport(to_send, deadline)
            if not want_read:
                return result
            if seen != self._recv_count:
                continue  # another task fed the incoming BIO while we sent: try again
            if self._transport_eof:
                # OpenSSL reports EOF itself after bio_shutdown; this is only a guard
                # against looping on a transport that keeps returning b"".
                raise trio.BrokenResourceError(_PEER_CLOSED)
            # The operation wants input and nothing came since it said so: calling it again
            # after the send would only repeat "want read" (writes to a memory BIO never wait).
            await self._receive_into_bio(deadline, seen)

    async def _receive_into_bio(self, deadline: float, seen: int) -> None:
        """Feed the incoming BIO with the next bytes from the transport (one receiver at a time).

        ``seen`` is ``_recv_count`` when the caller's SSL call last ran. A task that had to wait
        for another task's receive checks it afterwards: when that task fed the BIO meanwhile,
        it returns so the caller retries its SSL call instead of waiting for bytes that may
        never come. A flag and an event made only when a second task has to
        wait, rather than a ``trio.Lock``: the lock's owner bookkeeping costs more than the
        read itself, on every request, for a contention that almost never happens.
        """
        while self._transport_receiving:
            if self._transport_free is None:
                self._transport_free = trio.Event()
            await self._transport_free.wait()
        if seen != self._recv_count:
            return
        self._transport_receiving = True
        try:
            sock = self._socket
            if sock is None:
                with trio.fail_at(deadline):
                    data = bytes(await self._transport.receive_some(RECEIVE_SIZE))
            else:
                # Under load the bytes are usually there already: no wait, no coroutine.
                got = sock.receive_now(RECEIVE_SIZE)
                data = (
                    got
                    if got is not None
                    else await sock.receive(RECEIVE_SIZE, deadline, wait_first=True)
                )
            self._feed(data)
            self._recv_count += 1
        finally:
            self._transport_receiving = False
            if self._transport_free is not None:
                self._transport_free.set()
                self._transport_free = None

    async def _send_to_transport(
        self, data: bytes | memoryview, deadline: float = math.inf
    ) -> None:
        # No await between taking `data` from the BIO and queueing on the FIFO lock (see
        # "Concurrency"), so records reach the wire in the order OpenSSL produced them.
        lock = self._send_lock
        if self._delayed_outgoing:
            data = self._delayed_outgoing + data
            self._delayed_outgoing = b""
        if not lock.locked():
            # Nobody is sending: a write the kernel takes whole involves no await, so no other
            # task can come in between, and no lock is needed (the common case).
            try:
                data = self._write_now(data)
            except BaseException:
                self._mark_broken()
                raise
            if not data:
                return
        try:
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                if self._delayed_outgoing:
                    data = self._delayed_outgoing + data
                    self._delayed_outgoing = b""
                await self._transport_send(data, deadline)
            finally:
                lock.release()
        except BaseException:
            # An unknown part of a record may have been sent: the TLS stream cannot continue.
            self._mark_broken()
            raise

    def _write_now(self, data: bytes | memoryview) -> bytes | memoryview:
        """Write what the socket takes without waiting; returns the rest (empty when all went).
        A transport that is not a socket takes nothing here."""
        sock = self._socket
        if sock is None:
            return data
        return sock.send_now(data)

    async def _transport_send(self, data: bytes | memoryview, deadline: float) -> None:
        sock = self._socket
        if sock is None:
            if deadline == math.inf:
                await self._transport.send_all(data)
            else:
                with trio.fail_at(deadline):
                    await self._transport.send_all(data)
            return
        await sock.send_all(data, deadline)

    def _mark_broken(self) -> None:
        if self._state is _State.OK:
            self._state = _State.BROKEN

    async def _flush_alert(self) -> None:
        """Best effort: send the alert OpenSSL queued with a failure, so the client sees why."""
        self._mark_broken()
        alert = self._drain_outgoing()
        if not alert:
            return
        try:
            async with self._send_lock:
                await self._transport.send_all(alert)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            LOGGER.debug("tls.alert_not_sent: %s", exc)

    def _failure(self, exc: BaseException, *, handshake: bool) -> Exception:
        """The one place that maps SSL and transport errors; marks the stream BROKEN.

        Returns the exception to raise ``from exc``.
        """
        closed_by_us = self._state is _State.CLOSED
        self._mark_broken()
        if isinstance(exc, SSL.Error):
            if self._transport_eof and _is_unexpected_eof(exc):
                reason = _PEER_CLOSED
            else:
                reason = _ssl_reason(exc)
        elif isinstance(exc, trio.ClosedResourceError) and closed_by_us:
            return trio.ClosedResourceError(_CLOSED_MESSAGE)
        else:
            reason = _PEER_CLOSED if self._transport_eof else f"transport failed: {exc}"
        if handshake:
            return TlsHandshakeError(reason)
        return trio.BrokenResourceError(f"TLS connection failed: {reason}")

    # ------------------------------------------------------------ public API

    async def do_handshake(self) -> None:
        """Run the server side of the handshake; a no-op once it has completed.

        Completes even with a missing or untrusted client certificate when the context's
        verify callback returns True (see the module docstring); the verdict is the callback's.
        No timeout here: use ``with trio.fail_after(...)`` around the call.

        Raises:
            TlsHandshakeError: the handshake failed (``reason`` says why); the stream is BROKEN.
            PlainHttpOnTlsPort: the client sent plain HTTP; the stream is BROKEN.
            trio.BrokenResourceError: an earlier call already failed.
            trio.ClosedResourceError: :meth:`aclose` was called.
        """
        self._check_state()
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        while self._handshake_running is not None:
            # Another task is running the handshake: its outcome is ours too.
            await self._handshake_running.wait()
            self._check_state()
            if self._handshake_done:
                return
        running = self._handshake_running = trio.Event()
        try:
            await self._retry(self._conn.do_handshake, is_handshake=True)
            self._handshake_done = True
            self._record_peer_certificates()
        except (SSL.Error, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._failure(exc, handshake=True) from exc
        except BaseException:
            # Cancelled (the caller's handshake timeout) or PlainHttpOnTlsPort.
            self._mark_broken()
            raise
        finally:
            self._handshake_running = None
            running.set()
        if LOGGER.isEnabledFor(logging.DEBUG):  # the arguments cost more than the call
            LOGGER.debug(
                "tls.handshake_done: version=%s cipher=%s sni=%s alpn=%s client_cert=%s",
                self.tls_version,
                self.cipher,
                self.server_name,
                self.alpn_protocol,
                self._peer_certificate.subject.rfc4514_string()
                if self._peer_certificate is not None
                else None,
            )

    def _record_peer_certificates(self) -> None:
        conn = self._conn
        leaf_x509 = conn.get_peer_certificate()
        sent = conn.get_peer_cert_chain()
        # On the server side SSL_get_peer_cert_chain has historically left out the leaf
        # (SSL_get_peer_cert_chain(3)); normalise to "leaf first, each certificate once".
        # Duplicates are dropped by DER, which is how certificates compare, and cheaper to
        # hash than the parsed objects; a dict keeps first positions.
        ders = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in sent] if sent else []
        if leaf_x509 is not None:
            ders.insert(0, crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf_x509))
        if len(ders) > 1:
            ders = list(dict.fromkeys(ders))
        chain = tuple(map(_certificate, ders))
        self._peer_certificate = chain[0] if leaf_x509 is not None else None
        self._peer_chain = chain

    async def receive_some(
        self, max_bytes: int | None = None, *, deadline: float = math.inf
    ) -> bytes:
        """Return up to ``max_bytes`` of plaintext, waiting for at least one byte.

        ``deadline`` (trio's clock, e.g. ``trio.current_time() + 60``) bounds the wait for the
        client: past it, ``trio.TooSlowError`` is raised and nothing is lost (a later call
        returns the data). It costs nothing when data is already there, unlike a
        ``trio.fail_after`` scope around every call, which a proxy would pay per request.

        Returns b"" at the end of the stream: after the client's close_notify, and also when the
        transport ends without one (common for HTTP clients; logged at debug level). OpenSSL
        treats the latter as a fatal error, so afterwards the stream can no longer send (and
        ``aclose`` skips close_notify). A reset connection raises ``trio.BrokenResourceError``.

        Runs the handshake first if needed (so it may raise what :meth:`do_handshake` raises).
        Cancellation is safe: no plaintext is lost.
        """
        if max_bytes is None:
            max_bytes = DEFAULT_MAX_BYTES
        elif max_bytes < 1:
            raise ValueError(_BAD_MAX_BYTES)
        if self._receiving:
            raise trio.BusyResourceError(_BUSY_RECEIVING)
        self._receiving = True
        try:
            if self._plaintext_eof:
                await trio.lowlevel.checkpoint()
                return b""
            if self._handshake_done:
                self._check_state()
            else:
                await self.do_handshake()
            try:
                data = await self._retry(
                    self._conn.recv, max_bytes, drain_on_success=False, deadline=deadline
                )
            except SSL.ZeroReturnError:
                self._plaintext_eof = True
                return b""
            except SSL.Error as exc:
                if not (self._transport_eof and _is_unexpected_eof(exc)):
                    raise self._failure(exc, handshake=False) from exc
                LOGGER.debug("tls.eof_without_close_notify: the client closed the transport")
                self._plaintext_eof = True
                return b""
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._failure(exc, handshake=False) from exc
            assert data is not None  # recv either returns bytes or raises
            return data
        finally:
            self._receiving = False

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, deadline: float = math.inf
    ) -> None:
        """Encrypt and send all of ``data``.

        Runs the handshake first if needed. The first send after a TLS 1.3 handshake also
        carries the delayed session tickets. Cancellation leaves the stream BROKEN (an unknown
        part of the data was sent), as for any trio stream. ``deadline`` (trio's clock) bounds
        the wait for the transport to take the data; like a timeout scope around the call, but
        free when the kernel takes the data at once (the usual case).

        Raises:
            trio.BrokenResourceError: the peer or the transport failed.
            trio.BusyResourceError: another task is sending.
            trio.TooSlowError: ``deadline`` passed; the stream is BROKEN, as after cancellation.
        """
        if self._sending:
            raise trio.BusyResourceError(_BUSY_SENDING)
        self._sending = True
        try:
            if self._handshake_done:
                self._check_state()
            else:
                await self.do_handshake()
            # The usual response is bytes that one SSL_write can take: no view needed. A
            # larger or other buffer is cut into chunks through a view (no copies).
            whole = isinstance(data, bytes) and len(data) <= SEND_CHUNK_SIZE
            view = data if whole else memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.checkpoint()
                return
            try:
                position = 0
                while position < len(view):
                    self._check_state()
                    # pyOpenSSL turns on SSL_MODE_ENABLE_PARTIAL_WRITE, so SSL_write may take
                    # fewer bytes than offered (as little as one record): go by its count.
                    chunk = (
                        view
                        if whole and not position
                        else view[position : position + SEND_CHUNK_SIZE]
                    )
                    written = await self._retry(self._conn.send, chunk, deadline=deadline)
                    assert written is not None  # send either returns a count or raises
                    position += written
            except (SSL.Error, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._failure(exc, handshake=False) from exc
        finally:
            self._sending = False

    async def send_last(self, data: bytes, *, deadline: float = math.inf) -> None:
        """:meth:`send_all`, then close_notify, in one transport write when possible: the last
        bytes of a connection the server ends (``Connection: close``), without a separate
        record, system call and packet for close_notify. Nothing can be sent afterwards;
        :meth:`aclose` then only closes the transport. Falls back to :meth:`send_all` (and
        close_notify at :meth:`aclose`) outside the common case.

        Raises:
            trio.BrokenResourceError: the peer or the transport failed.
            trio.BusyResourceError: another task is sending.
        """
        if (
            self._sending
            or not self._handshake_done
            or self._state is not _State.OK
            or len(data) > SEND_CHUNK_SIZE
        ):
            await self.send_all(data, deadline=deadline)
            return
        self._sending = True
        written = 0
        try:
            conn = self._conn
            try:
                while written < len(data):
                    # A memory BIO takes every record; with partial writes on, one call may
                    # still stop at a record boundary.
                    written += conn.send(data[written:] if written else data)
                conn.shutdown()
                self._close_notify_sent = True
            except SSL.WantReadError:
                # Cannot happen once the handshake is done (memory BIOs, renegotiation off);
                # should it, the rest goes the usual way below.
                pass
            except SSL.Error as exc:
                await self._flush_alert()
                raise self._failure(exc, handshake=False) from exc
            try:
                await self._send_to_transport(self._drain_outgoing(), deadline)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._failure(exc, handshake=False) from exc
        finally:
            self._sending = False
        if written < len(data):
            await self.send_all(data[written:], deadline=deadline)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport can take more data (see :class:`trio.abc.SendStream`)."""
        if self._sending:
            raise trio.BusyResourceError(_BUSY_SENDING)
        self._sending = True
        try:
            self._check_state()
            async with self._send_lock:
                await self._transport.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Send close_notify if possible, then close the transport.

        close_notify is best effort: skipped if the handshake never completed or the stream is
        broken, abandoned after ``CLOSE_NOTIFY_TIMEOUT_S``, and a dead peer is only logged at
        debug level. We do not wait for the client's close_notify (HTTP servers never do).
        The transport is closed in every case, also when cancelled. Never raises on a dead peer;
        calling it again is a no-op.
        """
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._state is _State.OK and self._handshake_done and not self._close_notify_sent:
                with trio.move_on_after(CLOSE_NOTIFY_TIMEOUT_S) as scope:
                    try:
                        await self._retry(self._conn.shutdown, ignore_want_read=True)
                    except (SSL.Error, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        LOGGER.debug("tls.close_notify_not_sent: %s", exc)
                if scope.cancelled_caught:
                    LOGGER.debug("tls.close_notify_timeout: peer did not take close_notify")
        finally:
            self._state = _State.CLOSED
            await self._transport.aclose()
