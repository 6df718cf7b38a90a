"""HTTP/2 on an HTTPS listener: the connection driver between the TLS stream and the codec.

A connection whose handshake negotiated ALPN ``h2`` (offered only with ``enableHttp2: true``)
is handed here by :meth:`emulator.runtime.proxy.ClientConnection.run` after the TLS handshake
and the client-certificate decision, which are the connection's: every stream carries the same
certificate variables and the same Strict verdict. :class:`H2Driver` feeds the bytes to the
sans-I/O :class:`~emulator.core.http.http2.Http2Connection` and runs one task per stream
(:class:`H2Stream`), which goes through the same request plan
(:meth:`~emulator.core.request.plan.PortPlanner.plan`, the 421 rule re-run per stream's host)
and the same :class:`~emulator.runtime.exchange.BackendExchange` as an HTTP/1.1 request: the backend
leg is HTTP/1.1 from the pool, one backend connection per concurrent stream, so a backend
error touches one stream only. :class:`StreamHttp` is the per-stream stand-in for the HTTP/1.1
codec the exchange frames through.

What the codec's design note asks of the pump, and where it is done here:

- its output is written before each read (:meth:`H2Driver._read_loop`): a client that does not
  read our frames stops being read (the flood bound relies on it);
- one writer: every task's frames leave through :meth:`H2Driver.flush`, one write at a time,
  the frames of concurrent streams gathered into the same write;
- request body bytes are acknowledged as the exchange consumes them (:meth:`H2Stream.read_body`),
  so a stream's buffered body never exceeds its 64 KiB window;
- response bodies honour flow control: a stream sends what the window allows and waits for
  the codec's ``WindowOpened``, within ``client_send_timeout_s``;
- a client RST_STREAM cancels that stream's task (its backend connection is closed, not
  reused; the access log says 499 when no response had started, as nginx does);
- drain and reload (:meth:`H2Driver.shutdown`) send GOAWAY NO_ERROR and serve the streams in
  flight; keep-alive idle (``keepalive_idle_s`` with no open stream) does the same.

Strict without a certificate answers every stream with the 400 page and keeps the connection
(the codec's module docstring gives nginx's source for it).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from emulator.core.access import RequestMeter
from emulator.core.http.codec import Framing, HttpError, RequestHead
from emulator.core.http.http2 import (
    BodyEnded,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    Http2Connection,
    RequestReceived,
    RequestRefused,
    StreamReset,
    WindowOpened,
)
from emulator.core.http.pages import (
    SERVER_TOKEN,
    GatewayPage,
    http_date,
    page_for_status,
    render_page,
)
from emulator.core.request.plan import Fail, Note, Respond, explained
from emulator.core.request.rewrite import RequestFacts
from emulator.core.request.routing import Route
from emulator.errors import BackendError, ProxyError
from emulator.logsafe import escaped_logger
from emulator.model import Listener as ListenerConfig
from emulator.model import RoutingRule
from emulator.runtime.access_log import access_record
from emulator.runtime.backend import BackendClient
from emulator.runtime.exchange import (
    CLIENT_CLOSED_REQUEST,
    BackendExchange,
    ClientGone,
    answer_request_error,
)

if TYPE_CHECKING:
    from emulator.runtime.listener import PortRuntime
    from emulator.runtime.proxy import ClientConnection

__all__ = ["H2Driver", "H2Stream", "StreamHttp"]

LOGGER = escaped_logger("emulator.proxy")

RECEIVE_SIZE: Final = 65536
#: The request-time errors a stream answers with a page (as the HTTP/1.1 path does).
_ANSWERED: Final = (HttpError, ProxyError)
#: Request fields that frame the body for the backend: replaced by the framing it gets.
_BACKEND_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "expect"})


class StreamHttp:
    """One stream's side of the exchange's codec interface
    (:class:`~emulator.runtime.exchange.ExchangeHttp`): the response head goes to the codec
    at once (HEADERS frames are not flow controlled), body bytes pass unframed (DATA frames
    frame them), and the end of the stream is the driver's (:meth:`H2Stream.finish`)."""

    __slots__ = ("_conn", "_head", "_stream_id", "close_after_response", "responded")

    def __init__(self, conn: Http2Connection, stream_id: int, head: RequestHead) -> None:
        self._conn = conn
        self._stream_id = stream_id
        self._head = head
        #: Set by the exchange when the backend failed after the response head went out:
        #: the stream is reset (INTERNAL_ERROR, as nginx does) instead of ended.
        self.close_after_response = False
        self.responded = False

    @property
    def request(self) -> RequestHead:
        return self._head

    @property
    def has_body(self) -> bool:
        return self._head.framing is not Framing.NONE

    @property
    def buffered(self) -> bool:
        # Streamed bodies: the head goes to the backend first, then the body as it comes.
        return False

    @property
    def they_closed(self) -> bool:
        # A stream the client abandons is reset, which cancels its task (never a half-close).
        return False

    @property
    def will_close(self) -> bool:
        return False

    def backend_headers(
        self, headers: list[tuple[str, str]], *, length: int | None = None
    ) -> list[tuple[str, str]]:
        """The rewritten headers with the body framed for the HTTP/1.1 backend: a buffered
        body's length, else the client's content-length, else (a body of unknown length,
        streamed) ``Transfer-Encoding: chunked``; ``Expect`` is the gateway's business."""
        head = self._head
        kept = [(k, v) for k, v in headers if k.lower() not in _BACKEND_FRAMING]
        if length is not None:
            kept.append(("Content-Length", str(length)))
        elif head.framing is Framing.LENGTH:
            kept.append(("Content-Length", str(head.length)))
        elif head.framing is Framing.CHUNKED:
            kept.append(("Transfer-Encoding", "chunked"))
        return kept

    def response_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
        """Send the backend's response head as HTTP/2 fields (connection-specific ones
        dropped by the codec); nothing is left to queue."""
        self._conn.send_response(self._stream_id, status, headers)
        self.responded = True
        return b""

    def switching_protocols(self, reason: str, headers: list[tuple[str, str]]) -> bytes:
        # HTTP/2 has no Upgrade (RFC 9113 section 8.6) and extended CONNECT is not offered.
        raise BackendError("a backend switched protocols on an HTTP/2 stream")

    def body_bytes(self, data: bytes) -> bytes:
        return data

    def end_of_body(self) -> bytes:
        return b""

    def take_buffered(self) -> bytes:
        return b""


class H2Stream:
    """One request stream: planned, answered or forwarded, recorded (the exchange's client,
    :class:`~emulator.runtime.exchange.ExchangeClient`)."""

    def __init__(
        self, driver: H2Driver, stream_id: int, head: RequestHead | None, refused: int = 0
    ) -> None:
        self.driver = driver
        self.stream_id = stream_id
        self.head = head
        #: The codec's status for a refused head (400, 431); 0 for a request.
        self.refused = refused
        self.scope = trio.CancelScope()
        self.routed = ""
        self.forwarded_to = ""
        self._http: StreamHttp | None = None
        if head is not None:
            self._http = StreamHttp(driver.conn, stream_id, head)
        self._rule: RoutingRule | None = None
        self._route: Route | None = None
        self._body: deque[bytes] = deque()
        self._body_ended = False
        self._body_changed = trio.Event()
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0
        self._recorded = False
        self._started = time.perf_counter()
        #: The stream's bytes, times and backend leg, for its access record.
        self.meter = RequestMeter()

    # -- what the exchange reads ------------------------------------------------------------

    @property
    def runtime(self) -> PortRuntime:
        return self.driver.client.runtime

    @property
    def http(self) -> StreamHttp:
        assert self._http is not None
        return self._http

    @property
    def backend(self) -> BackendClient:
        return self.driver.client.backend

    @property
    def peer(self) -> tuple[str, int]:
        return self.driver.client.peer

    @property
    def stream(self) -> trio.abc.Stream:
        return self.driver.client.stream

    @property
    def listener(self) -> ListenerConfig:
        for rule in (self._rule, self.driver.client.tls_rule):
            if rule is not None:
                return rule.listener
        return self.runtime.listener

    # -- the request body, fed by the driver ------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._body.append(data)
        self._wake_body()

    def end_body(self) -> None:
        self._body_ended = True
        self._wake_body()

    def _wake_body(self) -> None:
        self._body_changed.set()
        self._body_changed = trio.Event()

    async def read_body(self, idle_s: float, *, until: float = math.inf) -> bytes | None:
        """The stream's next body bytes (None at its end), acknowledged to the codec as they
        are taken, so the client may send as much more.

        Raises:
            trio.TooSlowError: nothing within ``idle_s``, or ``until`` passed.
        """
        while not self._body:
            if self._body_ended:
                return None
            deadline = min(trio.current_time() + idle_s, until)
            with trio.move_on_at(deadline):
                await self._body_changed.wait()
            if not self._body and not self._body_ended and trio.current_time() >= deadline:
                raise trio.TooSlowError
        data = self._body.popleft()
        self.driver.conn.acknowledge(self.stream_id, len(data))
        return data

    async def send_continue(self) -> None:
        head = self.head
        if head is not None and head.expect_continue and not self._body and not self._body_ended:
            self.driver.conn.send_informational(self.stream_id)
            await self.driver.flush()

    # -- the response -----------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        if data:
            self._outgoing.append(data)
            self._outgoing_bytes += len(data)

    async def queue_body(self, data: bytes) -> None:
        self.queue(data)
        if self._outgoing_bytes >= RECEIVE_SIZE:
            await self.flush()

    async def flush(self, *, last: bool = False, stream: trio.abc.Stream | None = None) -> None:
        """Send the queued body bytes as DATA frames, as the flow-control windows allow,
        waiting for them to open.

        Raises:
            ClientGone: the stream or the connection went away, or the client opened no
                window for ``client_send_timeout_s``.
        """
        driver = self.driver
        conn = driver.conn
        data = b"".join(self._outgoing)
        self._outgoing = []
        self._outgoing_bytes = 0
        timeout_s = self.runtime.limits.client_send_timeout_s
        while True:
            if data:
                data = data[conn.send_data(self.stream_id, data) :]
            await driver.flush()
            if not data:
                return
            if conn.sendable(self.stream_id) > 0:
                continue  # the window opened while the frames were written
            if conn.terminated or self.scope.cancel_called:
                raise ClientGone("the HTTP/2 connection ended")
            with trio.move_on_after(timeout_s) as waited:
                await driver.window_opened()
            if waited.cancelled_caught:
                raise ClientGone(f"no flow-control window for {timeout_s:g} s")

    async def finish(self) -> None:
        """End the stream after a forwarded response (reset it when the backend failed
        after the head went out)."""
        conn = self.driver.conn
        if self.http.close_after_response:
            conn.reset_stream(self.stream_id, ErrorCode.INTERNAL_ERROR)
        else:
            await self.flush()
            conn.end_stream(self.stream_id)
        await self.driver.flush()

    # -- the stream's life ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                try:
                    if self.head is None:
                        await self._refused_page()
                    else:
                        await self._serve(self.head)
                except ClientGone:
                    LOGGER.debug(
                        "h2.stream_gone stream=%s client=%s:%s", self.stream_id, *self.peer
                    )
                    self.driver.conn.reset_stream(self.stream_id, ErrorCode.INTERNAL_ERROR)
                    with contextlib.suppress(ClientGone):
                        await self.driver.flush()
                except Exception:
                    # A bug met by one stream: logged with its traceback, the stream reset
                    # (or answered 500 before its response started), the connection kept.
                    LOGGER.exception(
                        "h2.stream_internal_error listener=%s client=%s:%s stream=%s",
                        self.listener.name,
                        *self.peer,
                        self.stream_id,
                    )
                    await self._internal_error()
            if self.scope.cancelled_caught and not self._recorded and self.head is not None:
                # The client reset the stream (or the connection ended) before an answer:
                # nginx's 499.
                facts = self.driver.client._facts(
                    self.head.method,
                    self.head.target,
                    "2.0",
                    self.head.headers,
                    self.driver.client.decision,
                )
                self.record(
                    facts, CLIENT_CLOSED_REQUEST, self._started, routed="", server_status=""
                )
        finally:
            self.driver.stream_done(self.stream_id)

    async def _internal_error(self) -> None:
        http = self._http
        if http is not None and http.responded:
            self.driver.conn.reset_stream(self.stream_id, ErrorCode.INTERNAL_ERROR)
            await self.driver.flush()
            return
        page = GatewayPage.INTERNAL_ERROR
        with trio.move_on_after(self.runtime.limits.linger_total_s):
            await self._send_page(page, ())

    async def _refused_page(self) -> None:
        page = page_for_status(self.refused)
        client = self.driver.client
        facts = client._facts("", "", "2.0", (), client.decision)
        self._note(Note("http.bad_request", f"reason=HTTP/2 request refused ({self.refused})"))
        await self._send_page(page, ())
        self.record(facts, page.status, self._started, routed="", server_status="")

    async def _serve(self, head: RequestHead) -> None:
        """Plan the request, then answer it or forward it (as ClientConnection._serve)."""
        client = self.driver.client
        decision = client.decision
        assert decision is not None
        facts = client._facts(head.method, head.target, "2.0", head.headers, decision)
        planner = self.runtime.planner
        host = head.host
        plan = planner.plan(
            facts,
            host=host,
            rule=planner.rule_for_host(host),
            tls_rule=client.tls_rule,
            decision=decision,
            upgrade_h2c=False,
        )
        self._rule, self._route = plan.rule, plan.route
        if isinstance(plan, Fail):
            await self._answer_error(plan.error, plan.facts)
            return
        for note in plan.notes:
            self._note(note)
        if isinstance(plan, Respond):
            await self._page(plan.page, plan.facts, plan.headers)
            return
        try:
            await BackendExchange(self).forward(plan, head, self._started)
        except _ANSWERED as exc:
            await self._answer_error(exc, plan.facts)
            return
        await self.finish()

    async def _answer_error(self, exc: Exception, facts: RequestFacts) -> None:
        """Answer a request-time error as HTTP/1.1 does (:func:`answer_for`); only the stream
        ends, whatever the answer says of the connection."""
        answer = answer_request_error(self, exc)
        self._note(answer.note)
        if self._http is not None and self._http.responded:
            # Too late for a page: the response head is out.
            self.driver.conn.reset_stream(self.stream_id, ErrorCode.INTERNAL_ERROR)
            await self.driver.flush()
        else:
            await self._send_page(answer.page, ())
        self.record(
            facts, answer.page.status, self._started, routed=answer.routed, server_status=""
        )

    async def _page(
        self, page: GatewayPage, facts: RequestFacts, headers: Sequence[tuple[str, str]]
    ) -> None:
        if self.runtime.explain:
            headers = explained(page, headers, self.driver.client.decision)
        await self._send_page(page, headers)
        self.record(facts, page.status, self._started, routed="", server_status="")

    async def _send_page(self, page: GatewayPage, headers: Sequence[tuple[str, str]]) -> None:
        """One of the gateway's pages on this stream (the head only for HEAD)."""
        body = render_page(page)
        self.meter.page_sent(page)
        # HTTP/2 has no Connection header (RFC 9113 section 8.2.2): the rest in nginx's order.
        fields = [
            ("Server", SERVER_TOKEN),
            ("Date", http_date(time.time())),
            ("Content-Type", "text/html"),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        conn = self.driver.conn
        head_only = self.head is not None and self.head.method == "HEAD"
        conn.send_response(self.stream_id, page.status, fields, end=head_only)
        if self._http is not None:
            self._http.responded = True
        if not head_only:
            self.queue(body)
            await self.flush()
            conn.end_stream(self.stream_id)
        await self.driver.flush()

    # -- records ----------------------------------------------------------------------------

    def _note(self, note: Note) -> None:
        LOGGER.log(
            note.level,
            "%s listener=%s client=%s:%s stream=%s %s",
            note.event,
            self.listener.name,
            *self.peer,
            self.stream_id,
            note.detail,
        )

    def record(
        self, facts: RequestFacts, status: int, started: float, *, routed: str, server_status: str
    ) -> None:
        """The stream's access record (``httpVersion`` HTTP/2.0 from the facts)."""
        self._recorded = True
        client = self.driver.client
        client.on_access(
            access_record(
                facts,
                status,
                time.perf_counter() - started,
                listener=self.listener.name,
                rule=self._rule,
                route=self._route,
                decision=client.decision,
                cert=client.cert,
                tls=True,
                routed=routed,
                server_status=server_status,
                meter=self.meter,
            )
        )


class H2Driver:
    """One HTTP/2 connection: the reader loop, the one writer, and the stream tasks."""

    def __init__(self, client: ClientConnection) -> None:
        assert client.tls is not None
        self.client = client
        self.tls = client.tls
        self.conn = Http2Connection()
        self.streams: dict[int, H2Stream] = {}
        self._writing = False
        self._written = trio.Event()
        self._window = trio.Event()
        self._reader = trio.CancelScope()
        self._poked = False
        self._nursery: trio.Nursery | None = None

    @property
    def idle(self) -> bool:
        """No stream in progress."""
        return not self.streams

    def shutdown(self) -> None:
        """Drain or reload: GOAWAY NO_ERROR; the streams in flight finish, then it closes."""
        if not self.conn.goaway_sent:
            self.conn.start_shutdown()
        self._poke()

    def _poke(self) -> None:
        """Wake the reader: the codec has output (a GOAWAY) or the connection may be done."""
        self._poked = True
        self._reader.cancel()

    async def run(self) -> None:
        """Serve the connection until the codec says it is over; the caller closes the stream.

        Raises:
            ClientGone: the client broke the connection.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._read_loop()
            finally:
                # Drained (no stream left), ended by the codec, or the client is gone: no
                # stream task outlives the reader.
                nursery.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        conn = self.conn
        limits = self.client.runtime.limits
        while True:
            self._poked = False
            try:
                # The codec's output goes out before the next read (see the module docstring).
                await self.flush(wait=True)
            except ClientGone:
                return
            if conn.should_close:
                return
            scope = self._reader = trio.CancelScope()
            if self._poked:
                continue
            data: bytes | None = None
            idle = not self.streams
            deadline = trio.current_time() + limits.keepalive_idle_s if idle else math.inf
            with scope:
                try:
                    data = await self.tls.receive_some(RECEIVE_SIZE, deadline=deadline)
                except trio.TooSlowError:
                    LOGGER.debug("h2.idle client=%s:%s: GOAWAY", *self.client.peer)
                    conn.start_shutdown()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if data is not None:
                self._dispatch(conn.receive_data(data))

    def _dispatch(self, events: list[Event]) -> None:
        nursery = self._nursery
        assert nursery is not None
        for event in events:
            if isinstance(event, RequestReceived):
                stream = H2Stream(self, event.stream_id, event.head)
                self.streams[event.stream_id] = stream
                nursery.start_soon(stream.run)
            elif isinstance(event, DataReceived):
                target = self.streams.get(event.stream_id)
                if target is None or target.head is None:
                    # Nobody reads it (answered already): the window must not stay spent.
                    self.conn.acknowledge(event.stream_id, len(event.data))
                else:
                    target.feed(event.data)
            elif isinstance(event, BodyEnded):
                target = self.streams.get(event.stream_id)
                if target is not None:
                    target.end_body()
            elif isinstance(event, RequestRefused):
                refused = H2Stream(self, event.stream_id, None, refused=event.status)
                self.streams[event.stream_id] = refused
                nursery.start_soon(refused.run)
            elif isinstance(event, StreamReset):
                target = self.streams.get(event.stream_id)
                if target is not None:
                    target.scope.cancel()
            elif isinstance(event, WindowOpened):
                self._window.set()
                self._window = trio.Event()
            elif isinstance(event, ConnectionTerminated):
                LOGGER.info(
                    "h2.connection_ended client=%s:%s code=%s remote=%s reason=%s",
                    *self.client.peer,
                    event.error_code,
                    event.remote,
                    event.reason,
                )
                for target in self.streams.values():
                    target.scope.cancel()
                self._window.set()

    def stream_done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.conn.should_close or not self.streams:
            # Drained; or idle now, and the read in progress started without the keep-alive
            # deadline (there were streams then): the reader starts it over with one.
            self._poke()

    async def window_opened(self) -> None:
        await self._window.wait()

    async def flush(self, *, wait: bool = False) -> None:
        """Write what the codec has for the client: the one writer of the connection.

        A task that finds another one writing leaves its frames to it (the writer loops until
        the codec has nothing left), so the frames of concurrent streams share TLS records and
        system calls. ``wait``: return only once everything is written (the reader, so that a
        client that does not read stops being read). The write itself is shielded: a stream
        reset that cancels the writing task must not cut a TLS record in half; it is bounded
        by ``client_send_timeout_s`` instead.

        Raises:
            ClientGone: the client broke the connection or took nothing in time.
        """
        if self._writing:
            if wait:
                await self._written.wait()
            return
        self._writing = True
        self._written = trio.Event()
        try:
            # Let the other ready streams add their frames to this write first.
            await trio.lowlevel.checkpoint()
            while data := self.conn.data_to_send():
                await self._send(data)
        finally:
            self._writing = False
            self._written.set()

    async def _send(self, data: bytes) -> None:
        timeout_s = self.client.runtime.limits.client_send_timeout_s
        with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout_s) as limit:
            try:
                await self.tls.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ClientGone from exc
        if limit.cancelled_caught:
            raise ClientGone(f"send timed out after {timeout_s:g} s")
