"""One client connection, end to end: a pump between the socket and the pure request path.

:class:`ClientConnection` runs the TLS handshake (:mod:`emulator.runtime.tls_stream`; plain
HTTP on an HTTPS port gets nginx's 400 page in plain text), takes the listener the SNI chose
from the handshake's :class:`~emulator.core.tls.policy.VerifyLog` and makes the
client-certificate decision once per connection
(:func:`emulator.core.request.plan.client_auth_decision`;
an OCSP check waits here, before the first request, because the verify callback cannot do I/O).
Then, per request, :class:`~emulator.core.http.connection.Http1Connection` turns bytes into
the head, :meth:`emulator.core.request.plan.PortPlanner.plan` decides, and the plan is executed: a
gateway page here, a forward by :class:`emulator.runtime.exchange.BackendExchange`.

Responses leave through one writer (:meth:`ClientConnection.queue` and
:meth:`~ClientConnection.flush`), pages through one method (:meth:`~ClientConnection._page`),
and every error becomes a response in one place (:meth:`~ClientConnection._answer_error`, which
executes the pure :func:`~emulator.core.request.failures.answer_for`, by the error's
``status``): a page before the response started, an aborted connection after. Every
request that reached the HTTP layer gets an access record, also when the client left (499,
nginx's code). A bug met by one connection is logged with its traceback and answered 500; it
never reaches the gateway's nursery, where it would stop every listener.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import trio

from emulator.core.access import AccessRecord, RequestMeter
from emulator.core.http.codec import Framing, HttpError, RequestHead
from emulator.core.http.connection import Http1Connection, Http1Event
from emulator.core.http.pages import GatewayPage, http_date, render_page
from emulator.core.request.plan import (
    After,
    Fail,
    Note,
    Respond,
    client_auth_decision,
    explained,
)
from emulator.core.request.rewrite import RequestFacts
from emulator.core.request.routing import Route
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.core.tls.policy import (
    CertDecision,
    VerifyLog,
    negotiated_version_allowed,
    resolve_ocsp,
)
from emulator.errors import ProxyError
from emulator.logsafe import escaped_logger
from emulator.model import Listener as ListenerConfig
from emulator.model import RoutingRule
from emulator.runtime.access_log import access_record
from emulator.runtime.backend import BackendClient
from emulator.runtime.client_facts import ClientConnectionFacts, cert_info
from emulator.runtime.exchange import BackendExchange, ClientGone, answer_request_error
from emulator.runtime.listener import PortRuntime
from emulator.runtime.ocsp_client import OcspChecker
from emulator.runtime.tls_stream import PlainHttpOnTlsPort, TlsHandshakeError, TlsServerStream

if TYPE_CHECKING:
    from emulator.runtime.h2_serve import H2Driver

__all__ = ["ClientConnection"]

LOGGER = escaped_logger("emulator.proxy")

RECEIVE_SIZE: Final = 65536


#: The request-time errors :meth:`ClientConnection._answer_error` turns into pages.
_ANSWERED: Final = (HttpError, ProxyError)


class _Handshake(enum.Enum):
    SERVE = "serve"
    DROP = "drop"


@dataclass(slots=True)
class ClientConnection:
    """One accepted connection (mutable: it lives exactly as long as the connection)."""

    runtime: PortRuntime
    stream: trio.abc.Stream
    peer: tuple[str, int]
    backend: BackendClient
    on_access: Callable[[AccessRecord], None]
    http: Http1Connection = field(init=False)
    _exchange: BackendExchange = field(init=False)
    #: The TLS stream, once the handshake started; then also :attr:`stream`.
    tls: TlsServerStream | None = None
    cert: ClientCertInfo | None = None
    decision: CertDecision | None = None
    #: The rule whose listener the handshake selected by SNI (HTTPS ports only).
    tls_rule: RoutingRule | None = None
    #: The rule (listener) and route of the request being served, for logs and access records.
    _rule: RoutingRule | None = None
    _route: Route | None = None
    #: The last Host a request named, and the rule it selected (keep-alive requests of a
    #: connection nearly always name the same host).
    _routed_host: str | None = None
    _routed_rule: RoutingRule | None = None
    _connection_facts: ClientConnectionFacts | None = None
    #: The backend (``host:port``) chosen for the current request, and the one that received
    #: its head ("" before).
    routed: str = ""
    forwarded_to: str = ""
    #: Bounds the wait for a request head (its deadline is set only during that wait).
    _idle_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: Bytes for the client not sent yet (:meth:`queue`, :meth:`flush`), and their length.
    _outgoing: list[bytes] = field(default_factory=list)
    _outgoing_bytes: int = 0
    #: The current request's bytes, times and backend leg, for its access record.
    meter: RequestMeter = field(default_factory=RequestMeter)
    #: The HTTP/2 driver, once the handshake negotiated ALPN h2 (``enableHttp2: true``).
    _h2: H2Driver | None = None

    def __post_init__(self) -> None:
        limits = self.runtime.limits
        self.http = Http1Connection(
            max_head_bytes=limits.max_request_header_bytes,
            max_fields=limits.max_request_header_fields,
        )
        self._exchange = BackendExchange(self)

    @property
    def listener(self) -> ListenerConfig:
        """The listener serving right now: the request's, else the handshake's, else the port's."""
        for rule in (self._rule, self.tls_rule):
            if rule is not None:
                return rule.listener
        return self.runtime.listener

    @property
    def idle(self) -> bool:
        """No request in progress (also during the handshake): closing loses nothing. An
        HTTP/2 connection is never idle to the drain: it sends GOAWAY and closes itself."""
        return self._h2 is None and self.http.idle

    def close_after_response(self) -> None:
        """The gateway is reloading or stopping: the response in progress (or the next one)
        says ``Connection: close``, and the connection ends after it (HTTP/2: GOAWAY, and
        the streams in flight finish)."""
        self.http.close_after_response = True
        if self._h2 is not None:
            self._h2.shutdown()

    # -- the connection's life ----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes. Closes the stream in all cases."""
        try:
            if self.runtime.ssl_context is not None:
                if await self._handshake() is _Handshake.DROP:
                    return
                await self._check_revocation()
                if self.tls is not None and self.tls.alpn_protocol == "h2":
                    from emulator.runtime.h2_serve import H2Driver  # h2 loads on first use

                    self._h2 = H2Driver(self)
                    if self.http.close_after_response:
                        self._h2.shutdown()
                    await self._h2.run()
                    return
            else:
                self.decision = client_auth_decision(None)
            # The request loop runs in the idle scope, whose deadline bounds each wait for a
            # request head (see _read_head); inline here rather than in a method of its own,
            # because every idle connection keeps the frames of this await chain.
            with self._idle_scope:
                await self._request_loop()
            http = self.http
            if self._idle_scope.cancelled_caught and (http.buffered or not http.requests):
                # No complete head in time (a keep-alive connection with nothing of a next
                # request is closed silently instead): nginx's 408, logged like a request.
                await self._page(
                    GatewayPage.REQUEST_TIMEOUT,
                    After.CLOSE_NOW,
                    self._unparsed_facts(),
                    time.perf_counter(),
                )
        except ClientGone:
            LOGGER.debug("client.gone listener=%s client=%s:%s", self.listener.name, *self.peer)
        except Exception:
            # A bug met by one connection must not stop the gateway: the exception would
            # reach the listeners' nursery and take every listener down. Logged with the
            # traceback (it is a bug to report), answered 500 when nothing was sent yet.
            LOGGER.exception(
                "connection.internal_error listener=%s client=%s:%s",
                self.listener.name,
                *self.peer,
            )
            await self._internal_error_page()
        finally:
            # The TLS stream bounds its close_notify itself; a plain TCP close does not wait.
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _internal_error_page(self) -> None:
        http = self.http
        if http.responded or self._h2 is not None:
            return
        self._outgoing = []
        self._outgoing_bytes = 0
        self._queue_page(GatewayPage.INTERNAL_ERROR, close=True)
        try:
            await self.flush(last=True)
        except ClientGone as exc:
            LOGGER.debug("the 500 page could not be sent: %s", exc)

    async def _handshake(self) -> _Handshake:
        runtime = self.runtime
        assert runtime.ssl_context is not None
        log = VerifyLog()
        tls = TlsServerStream(self.stream, runtime.ssl_context, app_data=log)
        self.stream = self.tls = tls
        name = runtime.listener.name
        # A bare scope rather than fail_after, whose generator-based context manager costs as
        # much again, on every connection.
        limit = trio.CancelScope(deadline=trio.current_time() + runtime.limits.handshake_timeout_s)
        try:
            with limit:
                await tls.do_handshake()
        except PlainHttpOnTlsPort as exc:
            LOGGER.info("tls.plain_http listener=%s client=%s:%s", name, *self.peer)
            started = time.perf_counter()
            self.http.receive_data(exc.initial_data)
            self.meter.received_bytes = len(exc.initial_data)
            page = GatewayPage.PLAIN_HTTP_TO_HTTPS
            self._queue_page(page, close=True)
            try:  # nginx's answer goes out without TLS, on the socket itself
                await self.flush(stream=tls.transport_stream)
            except ClientGone:
                LOGGER.debug("client.gone before the plain-HTTP 400 was sent")
            # nginx logs this 400 like any request (ERRORINFO_HTTP_TO_HTTPS_PORT).
            self.meter.page_sent(page)
            self.record(self._unparsed_facts(), page.status, started, routed="", server_status="")
            return _Handshake.DROP
        except TlsHandshakeError as exc:
            LOGGER.info(
                "tls.handshake_failed listener=%s client=%s:%s reason=%s",
                name,
                *self.peer,
                exc.reason,
            )
            return _Handshake.DROP
        if limit.cancelled_caught:
            LOGGER.info("tls.handshake_timeout listener=%s client=%s:%s", name, *self.peer)
            return _Handshake.DROP
        self.tls_rule = log.rule or runtime.rules[0]
        listener = self.tls_rule.listener
        name = listener.name
        if listener.require_sni and not tls.server_name:
            # requireServerNameIndication: this listener serves only clients that name a host.
            LOGGER.info("tls.sni_required listener=%s client=%s:%s", name, *self.peer)
            return _Handshake.DROP
        if not negotiated_version_allowed(listener, tls.tls_version):
            # The version was negotiated before SNI chose the listener (OpenSSL picks it from
            # the port's widest range); a listener whose policy refuses it drops the connection.
            LOGGER.info(
                "tls.protocol_refused listener=%s client=%s:%s version=%s policy=%s",
                name,
                *self.peer,
                tls.tls_version,
                listener.ssl_policy.name,
            )
            return _Handshake.DROP
        chain = tls.peer_chain
        if chain:
            self.cert = cert_info(chain[0], chain[1:])
        self.decision = decision = client_auth_decision(
            listener, presented=chain, log=log, at=datetime.now(UTC), verdicts=runtime.verdicts
        )
        # The verify callback's record has been read; the connection need not keep it.
        tls.connection.set_app_data(None)
        if decision.explanation:
            LOGGER.info(
                "tls.client_cert_rejected listener=%s client=%s:%s reason=%s",
                name,
                *self.peer,
                decision.explanation,
            )
        LOGGER.info(
            "tls.client_cert listener=%s client=%s:%s sni=%s version=%s subject=%s issuer=%s "
            "verify=%s decision=%s",
            name,
            *self.peer,
            tls.server_name,
            tls.tls_version,
            self.cert.subject if self.cert else "-",
            self.cert.issuer if self.cert else "-",
            decision.ssl_client_verify,
            "allow" if decision.allowed else "reject",
        )
        return _Handshake.SERVE

    async def _check_revocation(self) -> None:
        """The OCSP step: after the handshake, before the first request is routed. A Strict
        decision whose chain and issuer DN passed waits for the checker (cache or responder)."""
        decision = self.decision
        if decision is None or decision.verdict is None or decision.verdict.ocsp is None:
            return
        # The gateway always passes a checker to listeners with OCSP; a runtime built by hand
        # without one gets a private checker rather than a silent pass.
        checker = self.runtime.ocsp or OcspChecker()
        outcome = await checker.check(decision.verdict.ocsp)
        self.decision = resolve_ocsp(decision, outcome)
        LOGGER.info(
            "tls.client_cert_ocsp listener=%s client=%s:%s status=%s verify=%s",
            self.listener.name,
            *self.peer,
            outcome.status.value,
            self.decision.ssl_client_verify,
        )

    async def _request_loop(self) -> None:
        """Serve requests until the connection ends (one with no complete head in time gets
        408 from :meth:`run`; an idle keep-alive one is closed)."""
        http = self.http
        while True:
            self.forwarded_to = self.routed = ""
            self._rule = self._route = None
            self.meter = RequestMeter()
            started = time.perf_counter()
            try:
                head = await self._read_head()
            except HttpError as exc:
                # Logged like any request (nginx logs its 400s too), with what the request
                # line says when it can be read; then a lingering close, as the client may
                # still be sending the rest of a too-large head.
                await self._answer_error(exc, self._unparsed_facts(), started)
                return
            if head is None:
                return
            await self._serve(head, started)
            if http.will_close:
                return

    async def _read_head(self) -> RequestHead | None:
        """The next request head, or None when the client closed between requests.

        The wait is bounded by the connection's idle scope, whose deadline is set for the wait
        and lifted afterwards. It is set once per head: ``request_header_timeout_s`` for a
        connection's first request, or from the first byte of a keep-alive one (which may
        first wait ``keepalive_idle_s``); bytes arriving now and then do not move it, as
        nginx's ``client_header_timeout``.

        Raises:
            HttpError: the head is malformed or too large (``status`` says 400, 414, 494 or 501).
        """
        http = self.http
        limits = self.runtime.limits
        idle = self._idle_scope
        # Waiting between two requests with nothing of the next one here: keep-alive idle.
        between = bool(http.requests) and not http.buffered
        idle.deadline = trio.current_time() + (
            limits.keepalive_idle_s if between else limits.request_header_timeout_s
        )
        try:
            while (event := http.next_request()) is Http1Event.NEED_DATA:
                if between and http.buffered:
                    # The first bytes of a keep-alive request: the head has its full timeout
                    # from now on, whatever trickles in after them.
                    between = False
                    idle.deadline = trio.current_time() + limits.request_header_timeout_s
                tls = self.tls
                if tls is not None:
                    # Straight to the TLS stream: every idle keep-alive connection waits
                    # here, and each frame of the chain is memory per connection.
                    try:
                        http.receive_data(await tls.receive_some(RECEIVE_SIZE))
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise ClientGone from exc
                else:
                    http.receive_data(await self._receive(None))
        finally:
            idle.deadline = math.inf
        return event if isinstance(event, RequestHead) else None

    async def _serve(self, head: RequestHead, started: float) -> None:
        """Plan the request, then answer it or forward it."""
        decision = self.decision
        assert decision is not None
        # received_bytes: the head as received, and with request buffering the body the
        # gateway reads before the backend request is built (its Content-Length). Streamed
        # (buffering off) or chunked, the body is not read yet when the rewrite runs: the
        # head only, as nginx's $request_length is at that point.
        received = self.http.received_bytes
        if head.framing is Framing.LENGTH and self.runtime.buffering.request:
            received += head.length
        facts = self._facts(
            head.method,
            head.target,
            head.version,
            head.headers,
            decision,
            received_bytes=received,
        )
        planner = self.runtime.planner
        host = head.host  # validated by the codec; an absolute-form target's authority
        if host != self._routed_host:
            self._routed_host = host
            self._routed_rule = planner.rule_for_host(host)
        plan = planner.plan(
            facts,
            host=host,
            rule=self._routed_rule,
            tls_rule=self.tls_rule,
            decision=decision,
            upgrade_h2c=head.upgrade_h2c,
        )
        self._rule, self._route = plan.rule, plan.route
        if isinstance(plan, Fail):
            await self._answer_error(plan.error, plan.facts, started)
            return
        for note in plan.notes:
            self._note(note)
        if isinstance(plan, Respond):
            await self._page(plan.page, plan.after, plan.facts, started, plan.headers)
            return
        try:
            await self._exchange.forward(plan, head, started)
        except _ANSWERED as exc:
            await self._answer_error(exc, plan.facts, started)

    def _note(self, note: Note) -> None:
        LOGGER.log(
            note.level,
            "%s listener=%s client=%s:%s %s",
            note.event,
            self.listener.name,
            *self.peer,
            note.detail,
        )

    # -- answering --------------------------------------------------------------------------

    async def _answer_error(self, exc: Exception, facts: RequestFacts, started: float) -> None:
        """Answer a request-time error (the one mapping: :func:`answer_for`)."""
        answer = answer_request_error(self, exc)
        self._note(answer.note)
        await self._page(answer.page, answer.after, facts, started, routed=answer.routed)

    async def _page(
        self,
        page: GatewayPage,
        after: After,
        facts: RequestFacts,
        started: float,
        headers: Sequence[tuple[str, str]] = (),
        *,
        routed: str = "",
    ) -> None:
        """Answer with one of the gateway's pages (unless a response has started already),
        record the request, and leave the connection as ``after`` says."""
        http = self.http
        if after is After.KEEP_ALIVE:
            close = not await self._discard_body()
        elif after is After.KEEP_IF_READ:
            # The body may still be unread; closing is the only safe way to resync.
            close = not http.body_done
        else:
            close = True
        if not http.responded:
            if self.runtime.explain:
                headers = explained(page, headers, self.decision)
            self._queue_page(page, close=close, headers=headers)
            await self.flush(last=http.will_close)
        self.meter.page_sent(page)
        self.record(facts, page.status, started, routed=routed, server_status="")
        if after is After.CLOSE:
            await self._linger()

    def _queue_page(
        self, page: GatewayPage, *, close: bool, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """The one way a page is written: the core's renderer, framed by the connection."""
        body = render_page(page)
        date = http_date(time.time())
        self.queue(
            self.http.page(
                page.status, page.reason, body, date=date, close=close, extra_headers=headers
            )
        )

    async def _discard_body(self) -> bool:
        """Read and drop a request body the gateway answers without forwarding; True when it
        was read whole, so the connection can serve the next request. A body over
        ``discard_body_bytes``, or one not whole within ``linger_total_s`` (one deadline, so
        a client trickling its body cannot keep the connection), closes it instead."""
        limits = self.runtime.limits
        seen = 0
        until = trio.current_time() + limits.linger_total_s
        try:
            while (data := await self.read_body(limits.linger_total_s, until=until)) is not None:
                seen += len(data)
                if seen > limits.discard_body_bytes:
                    return False
        except (trio.TooSlowError, HttpError, ClientGone):
            return False
        return True

    async def _linger(self) -> None:
        """Read and drop what the client still sends, so it reads our page, not a reset."""
        limits = self.runtime.limits
        with trio.move_on_after(limits.linger_total_s):
            while True:
                with trio.move_on_after(limits.linger_idle_s) as idle:
                    try:
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                if idle.cancelled_caught or not data:
                    return

    # -- reading from and writing to the client ---------------------------------------------

    async def _receive(self, idle_s: float | None) -> bytes:
        """The client's next bytes (b"" once it closed), waiting at most ``idle_s`` (None: as
        long as it takes; the caller bounds the wait some other way).

        Raises:
            trio.TooSlowError: nothing came in time.
            ClientGone: the connection broke.
        """
        tls = self.tls
        try:
            if tls is not None:
                # The TLS stream only starts a timer when it has to wait.
                deadline = math.inf if idle_s is None else trio.current_time() + idle_s
                return await tls.receive_some(RECEIVE_SIZE, deadline=deadline)
            if idle_s is None:
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
            with trio.fail_after(idle_s):
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone from exc

    async def read_body(self, idle_s: float, *, until: float = math.inf) -> bytes | None:
        """The current request's next body bytes; None once the whole body has been read.
        ``idle_s`` bounds each wait for the client; ``until`` (trio's clock) is one deadline
        for the whole call, which no trickle of bytes moves.

        Raises:
            HttpError: the body's framing is broken (answered 400).
            ClientGone: the client closed inside the body (nginx logs 499: it left).
            trio.TooSlowError: nothing within ``idle_s``, or ``until`` passed.
        """
        http = self.http
        while True:
            event = http.next_body()
            if event.__class__ is bytes:
                return event
            if event is Http1Event.END_OF_BODY:
                return None
            if event is Http1Event.CLOSED:
                raise ClientGone("the client closed the connection inside the request body")
            wait_s = idle_s
            if until != math.inf:
                wait_s = min(idle_s, until - trio.current_time())
                if wait_s <= 0:
                    raise trio.TooSlowError
            http.receive_data(await self._receive(wait_s))

    async def send_continue(self) -> None:
        data = self.http.continue_bytes()
        if data:
            self.queue(data)
            await self.flush()

    async def queue_body(self, data: bytes) -> None:
        """Response body bytes: queued, and sent once a read's worth has gathered."""
        self.queue(data)
        if self._outgoing_bytes >= RECEIVE_SIZE:
            await self.flush()

    def queue(self, data: bytes) -> None:
        """Bytes for the client; they go out with the next :meth:`flush` (a response's head,
        body and end usually travel in one TLS record and one system call this way)."""
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)
        self.meter.sent_bytes += len(data)

    async def flush(self, *, last: bool = False, stream: trio.abc.Stream | None = None) -> None:
        """Send what :meth:`queue` collected (nothing to do when it is empty): the one place
        that writes to the client. ``last``: nothing follows on this connection, so over TLS
        close_notify travels in the same write. ``stream``: another stream to write to (the
        plain-HTTP answer goes to the socket under the TLS stream).

        Raises:
            ClientGone: the client broke the connection or took nothing for
                ``client_send_timeout_s`` (one deadline per flush).
        """
        if not self._outgoing:
            return
        outgoing = self._outgoing
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        self._outgoing = []
        self._outgoing_bytes = 0
        tls = self.tls
        timeout_s = self.runtime.limits.client_send_timeout_s
        meter = self.meter
        if meter.first_sent is None:
            meter.first_sent = time.perf_counter()
        # The TLS stream bounds the wait itself, and only when it has to wait: no timeout
        # scope per response.
        deadline = trio.current_time() + timeout_s
        try:
            if stream is None and tls is not None:
                if last:
                    await tls.send_last(data, deadline=deadline)
                else:
                    await tls.send_all(data, deadline=deadline)
            else:
                with trio.fail_at(deadline):
                    await (stream or self.stream).send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone from exc
        except trio.TooSlowError:
            meter.last_sent = time.perf_counter()
            LOGGER.info(
                "client.send_timeout listener=%s client=%s:%s: the client took nothing for %g s",
                self.listener.name,
                *self.peer,
                timeout_s,
            )
            raise ClientGone(f"send timed out after {timeout_s:g} s") from None
        meter.last_sent = time.perf_counter()

    # -- facts and records ------------------------------------------------------------------

    def _unparsed_facts(self) -> RequestFacts:
        """The facts of a request whose head was refused: the connection's, and the method
        and target when the first line has the usual three parts."""
        method, target = self.http.refused_request_line()
        return self._facts(method, target, "1.1", (), self.decision)

    def _facts(
        self,
        method: str,
        target: str,
        version: str,
        headers: Sequence[tuple[str, str]],
        decision: CertDecision | None,
        *,
        received_bytes: int | None = None,
    ) -> RequestFacts:
        """One request's facts: the connection's (gathered once) and the request's own."""
        connection = self._connection_facts
        if connection is None:
            connection = self._connection_facts = ClientConnectionFacts(
                self.tls,
                self.stream,
                self.peer,
                listener=self.listener,
                server_port=self.runtime.port,
                certificate=self.cert,
            )
        verification = decision.verification if decision is not None else "NONE"
        return connection.request(
            method, target, version, headers, verification, received_bytes=received_bytes
        )

    def record(
        self, facts: RequestFacts, status: int, started: float, *, routed: str, server_status: str
    ) -> None:
        """The request's access record, to the access log and the gateway."""
        meter = self.meter
        http = self.http
        if meter.received_bytes == 0:
            meter.received_bytes = http.received_bytes
        self.on_access(
            access_record(
                facts,
                status,
                time.perf_counter() - started,
                listener=self.listener.name,
                rule=self._rule,
                route=self._route,
                decision=self.decision,
                cert=self.cert,
                tls=self.tls is not None,
                routed=routed,
                server_status=server_status,
                meter=meter,
            )
        )
