"""One client connection, end to end: TLS handshake, the SSL profile's decision, HTTP proxying.

The sequence for an HTTPS listener:

1. TLS handshake over the accepted socket (:mod:`emulator.runtime.tls_stream`), bounded by
   ``HANDSHAKE_TIMEOUT_S``. Plain HTTP on the port gets nginx's 400 page in plain text.
2. :func:`emulator.core.tls_policy.assess_handshake` turns what the client presented into a
   decision, once per connection (client certificates are per connection, not per request).
   With ``verifyClientRevocation: OCSP`` the decision stays pending until the OCSP checker has
   answered (cache or responder), which happens here, before the first request is routed: the
   handshake's verify callback cannot do I/O.
3. An HTTP/1.1 server loop (:mod:`emulator.core.http1` parses and writes the messages) serves
   requests. A Strict failure answers every request with the gateway's
   400 page and closes (``Connection: close``, a lingering read so a client still sending a body
   reads the 400 instead of a reset, then close_notify). Otherwise the request goes to the
   backend with the headers :mod:`emulator.core.rewrite` computed, and the response streams back.

Several listeners can share a port (:class:`ListenerRuntime` holds them all, in Azure's order).
The TLS handshake starts with the port's context and switches, in the SNI callback, to the
context of the listener the SNI picks (:func:`emulator.core.tls_policy.build_port_contexts`);
that listener's SSL profile makes the client-certificate decision. Each request then picks its
listener by Host, and its backend (or redirect) through the rule and its path map
(:mod:`emulator.core.routing`).

Every error becomes a response in one place, :meth:`ClientConnection._fail`: gateway pages for
what happened before the response started, an aborted connection after (nothing else is
honest once a status line has gone out). Every request that reached the HTTP layer gets an access
record, also when the client left (499, nginx's code) or the backend stalled mid-response. A bug
met by one connection is logged with its traceback and answered 500; it never reaches the
gateway's nursery, where it would stop every listener.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

import trio
from cryptography import x509
from OpenSSL import SSL

from emulator.core.certinfo import ClientCertInfo
from emulator.core.http1 import (
    LAST_CHUNK,
    BodyReader,
    Framing,
    HttpError,
    RequestHead,
    ResponseHead,
    chunk,
    parse_request_head,
    request_head_bytes,
    response_head_bytes,
)
from emulator.core.ja4 import ClientHello, ClientHelloError, parse_client_hello_records
from emulator.core.ja4 import ja4 as ja4_fingerprint
from emulator.core.limits import ProxyLimits
from emulator.core.pages import SERVER_TOKEN, GatewayPage, render_page
from emulator.core.rewrite import (
    RequestFacts,
    RequestRewrite,
    rewrite_request,
    rewrite_response_headers,
)
from emulator.core.routing import (
    AFFINITY_CORS_SUFFIX,
    MAX_REROUTES,
    Route,
    affinity_cookie_value,
    backend_target,
    cookie_value,
    misdirected,
    normalize_host,
    redirect_location,
    render_status_page,
    route,
    select_rule,
)
from emulator.core.server_variables import openssl_cipher_list
from emulator.core.tls_policy import (
    CertDecision,
    VerifyLog,
    assess_handshake,
    decide_client_cert,
    negotiated_version_allowed,
    resolve_ocsp,
    without_client_auth,
)
from emulator.errors import BackendConnectError, BackendError, BackendTimeout
from emulator.logsafe import escaped_logger
from emulator.model import (
    BackendAddress,
    BackendPool,
    BackendSettings,
    Buffering,
    ClientAuthMode,
    Listener,
    ListenerProtocol,
    RedirectConfig,
    RoutingRule,
)
from emulator.runtime.backend import (
    RETRY_METHODS,
    BackendClient,
    BackendConnection,
    receive_response_head,
)
from emulator.runtime.ocsp_client import OcspChecker
from emulator.runtime.probes import HealthTable, backend_tls
from emulator.runtime.spool import RequestBodySpool, ResponseSpool
from emulator.runtime.tls_stream import PlainHttpOnTlsPort, TlsHandshakeError, TlsServerStream
from emulator.runtime.transport import tcp_rtt_us

__all__ = ["AccessRecord", "ListenerRuntime", "serve_connection"]

LOGGER = escaped_logger("emulator.proxy")
ACCESS_LOGGER = escaped_logger("emulator.access")

#: Size of the reads from a spill file.
SPILL_READ_SIZE: Final = 256 * 1024
RECEIVE_SIZE: Final = 65536
#: The port a Host header leaves out (RFC 9110 section 7.2: the scheme's default).
DEFAULT_HTTP_PORT: Final = 80
#: nginx's access-log status for a request whose client closed the connection before the
#: response started (not sent on the wire; Azure's access log shows it too).
CLIENT_CLOSED_REQUEST: Final = 499
#: ``--explain`` only (off by default, so responses stay byte-identical to Azure's): the
#: response header that carries why a Strict client certificate was rejected.
EXPLAIN_HEADER: Final = "X-AppGW-Emulator-Client-Cert-Explained"
#: The gateway's own interim answer to ``Expect: 100-continue`` (nginx's wording).
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
HTTP_SWITCHING_PROTOCOLS: Final = 101
#: How much of a refused request head's first line the access record may show.
MAX_LOGGED_REQUEST_LINE: Final = 8 * 1024
#: Statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5).
_NO_BODY_STATUSES: Final = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class ListenerRuntime:
    """What a connection needs to know about the frontend port that accepted it.

    ``rules`` are the routing rules of every listener on the port, in the order Azure tries
    them (:func:`emulator.core.routing.ordered_rules`).
    """

    rules: tuple[RoutingRule, ...]
    #: The context every handshake starts with (None: an HTTP port); its SNI callback switches
    #: to the selected listener's own context, one of ``contexts``.
    ssl_context: SSL.Context | None
    #: Listener name → that listener's own context.
    contexts: Mapping[str, SSL.Context] = field(default_factory=dict)
    #: ``--strip-client-cert-headers``: drop client headers that rules fill from a certificate.
    strip_client_cert_headers: bool = False
    #: ``--explain``: Strict 400s carry the failure's explanation in ``EXPLAIN_HEADER``.
    explain: bool = False
    #: Revocation lookups for ``verifyClientRevocation: OCSP`` (one checker per gateway).
    ocsp: OcspChecker | None = None
    #: The local port a listener is reachable on (redirect Locations); None: not served here.
    local_port: Callable[[Listener], int | None] | None = None
    #: Backend health from the custom probes; None: every backend is healthy.
    health: HealthTable | None = None
    #: ``globalConfiguration``: buffer request bodies / responses (False: stream them).
    buffering: Buffering = field(default_factory=Buffering)
    #: Timeouts and size limits of the port's client connections.
    limits: ProxyLimits = field(default_factory=ProxyLimits)

    @property
    def listener(self) -> Listener:
        """The port's first listener (for messages about the port itself)."""
        return self.rules[0].listener

    @property
    def port(self) -> int:
        return self.listener.frontend_port

    @property
    def mode(self) -> ClientAuthMode | None:
        return self.listener.client_auth

    def rule_for_context(self, context: SSL.Context) -> RoutingRule:
        """The rule whose listener's context the handshake ended with (the SNI's choice)."""
        for rule in self.rules:
            if self.contexts.get(rule.listener.name) is context:
                return rule
        return self.rules[0]


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One served request, with the access log's field names where Azure has them."""

    listenerName: str
    ruleName: str
    backendPoolName: str
    clientIP: str
    clientPort: int
    httpMethod: str
    requestUri: str
    httpStatus: int
    sslEnabled: str
    sslProtocol: str
    sslCipher: str
    sslClientVerify: str
    sslClientCertificateFingerprint: str
    sslClientCertificateIssuerName: str
    serverRouted: str
    serverStatus: str
    timeTaken: float
    transactionId: str
    clientCertSubject: str = ""
    #: ISO 8601 UTC time the request completed (the envelope's ``timeStamp``).
    timeStamp: str = ""
    httpVersion: str = ""
    originalRequestUriWithArgs: str = ""
    requestQuery: str = ""
    userAgent: str = ""
    host: str = ""
    originalHost: str = ""
    backendSettingName: str = ""
    #: Emulator-only: why a Strict client certificate failed, in words (empty otherwise).
    clientCertFailureExplained: str = ""


class _ClientGone(Exception):
    """The client closed or broke the connection; nothing more can be sent to it."""


class _RequestTooLarge(Exception):
    """A streamed request body went past ``MAX_REQUEST_BODY_BYTES``."""


@dataclass(slots=True)
class ClientConnection:
    """State of one accepted connection (mutable: it lives exactly as long as the connection)."""

    runtime: ListenerRuntime
    stream: trio.abc.Stream
    peer: tuple[str, int]
    backend: BackendClient
    on_access: Callable[[AccessRecord], None]
    #: The TLS stream, once the handshake started; then also :attr:`stream`.
    tls: TlsServerStream | None = None
    cert: ClientCertInfo | None = None
    decision: CertDecision | None = None
    #: The rule whose listener the handshake selected by SNI (HTTPS ports only).
    tls_rule: RoutingRule | None = None
    #: The rule (listener) and route of the request being served, for logs and access records.
    current_rule: RoutingRule | None = None
    current: Route | None = None
    #: Facts of the connection that every request shares, computed at first use.
    _connection_facts: _ConnectionFacts | None = None
    #: Client bytes received and not used yet: a request head being read, body bytes, or the
    #: next pipelined request.
    _inbuf: bytes = b""
    #: The client closed its side of the connection.
    _eof: bool = False
    #: The request being served, and the decoder of its body (None: it has no body).
    _request: RequestHead | None = None
    _body: BodyReader | None = None
    #: The last Host a request named, and the rule it selected (:func:`select_rule` is pure).
    _routed_host: str | None = None
    _routed_rule: RoutingRule | None = None
    #: The backend (``host:port``) that received the current request's head; "" before.
    _forwarded_to: str = ""
    #: Bounds the wait for a request head (its deadline is set only during that wait).
    _idle_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: Requests whose head was read on this connection.
    _served: int = 0
    #: A response head for the current request is queued or sent: no gateway page after it.
    _responded: bool = False
    #: Bytes for the client not sent yet (:meth:`_queue`, :meth:`_flush`), and their length.
    _outgoing: list[bytes] = field(default_factory=list)
    _outgoing_bytes: int = 0

    @property
    def listener(self) -> Listener:
        """The listener serving right now: the request's, else the handshake's, else the port's."""
        for rule in (self.current_rule, self.tls_rule):
            if rule is not None:
                return rule.listener
        return self.runtime.listener

    # -- reading from the client --------------------------------------------------------------

    async def _receive(self, idle_s: float | None) -> bytes:
        """The client's next bytes (b"" once it closed), waiting at most ``idle_s`` (None: as
        long as it takes; the caller bounds the wait some other way).

        Raises:
            trio.TooSlowError: nothing came in time.
            _ClientGone: the connection broke.
        """
        tls = self.tls
        try:
            if tls is not None:
                # The TLS stream only starts a timer when it has to wait (most reads under load
                # find the request already there); a cancel scope per read costs ~5 µs.
                deadline = math.inf if idle_s is None else trio.current_time() + idle_s
                return await tls.receive_some(RECEIVE_SIZE, deadline=deadline)
            if idle_s is None:
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
            with trio.fail_after(idle_s):
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone from exc

    async def _read_head(self) -> RequestHead | None:
        """The next request head, or None when the client closed between requests.

        The wait is bounded by the connection's idle scope (see :meth:`run`), whose deadline
        is set for the wait and lifted afterwards: cheaper than a cancel scope per wait, and a
        head that does not come ends the connection anyway. The deadline is set once per head:
        ``REQUEST_HEADER_TIMEOUT_S`` for a connection's first request, or from the first byte
        of a keep-alive one (which may first wait ``KEEPALIVE_IDLE_S``); a byte arriving now
        and then does not move it, as nginx's ``client_header_timeout``.

        Raises:
            HttpError: the head is malformed or too large (``status`` says 400 or 431).
        """
        idle = self._idle_scope
        # Waiting between two requests with nothing of the next one here: keep-alive idle.
        between = bool(self._served) and not self._inbuf
        idle.deadline = trio.current_time() + (
            self.runtime.limits.keepalive_idle_s
            if between
            else self.runtime.limits.request_header_timeout_s
        )
        try:
            while True:
                parsed = (
                    parse_request_head(
                        self._inbuf,
                        max_size=self.runtime.limits.max_request_header_bytes,
                        max_fields=self.runtime.limits.max_request_header_fields,
                    )
                    if self._inbuf
                    else None
                )
                if parsed is not None:
                    head, used = parsed
                    self._inbuf = self._inbuf[used:]
                    return head
                if self._eof:
                    if self._inbuf:
                        raise HttpError("the client closed the connection inside a request head")
                    return None
                if between and self._inbuf:
                    # The first bytes of a keep-alive request: from now on the head has
                    # REQUEST_HEADER_TIMEOUT_S in all, whatever trickles in after them.
                    between = False
                    idle.deadline = (
                        trio.current_time() + self.runtime.limits.request_header_timeout_s
                    )
                tls = self.tls
                if tls is not None:
                    # Straight to the TLS stream, without _receive's frame: every idle
                    # keep-alive connection waits here, and each frame is memory per connection.
                    try:
                        data = await tls.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _ClientGone from exc
                else:
                    data = await self._receive(None)
                if data:
                    self._inbuf += data
                else:
                    self._eof = True
        finally:
            idle.deadline = math.inf

    async def _read_body(self, idle_s: float, *, until: float = math.inf) -> bytes | None:
        """The current request's next body bytes; None once the whole body has been read.

        ``idle_s`` bounds each wait for the client; ``until`` (trio's clock), when given, is
        one deadline for the whole call, which no trickle of bytes moves.

        Raises:
            HttpError: the body's framing is broken (answered 400).
            _ClientGone: the client closed inside the body (nginx logs 499: it left).
            trio.TooSlowError: nothing within ``idle_s``, or ``until`` passed.
        """
        reader = self._body
        while reader is not None and not reader.done:
            if self._inbuf:
                data, self._inbuf = self._inbuf, b""
                body, self._inbuf = reader.feed(data)
                if body:
                    return body
            elif self._eof:
                try:
                    reader.eof()
                except HttpError as exc:
                    raise _ClientGone from exc
            else:
                wait_s = idle_s
                if until != math.inf:
                    wait_s = min(idle_s, until - trio.current_time())
                    if wait_s <= 0:
                        raise trio.TooSlowError
                data = await self._receive(wait_s)
                if data:
                    self._inbuf = data
                else:
                    self._eof = True
        return None

    # -- writing to the client ----------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        """Bytes for the client; they go out with the next :meth:`_flush`.

        A response's head, its body and its end usually travel in one TLS record and one
        system call this way.
        """
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)

    def _queue_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self._queue(response_head_bytes(status, reason, headers))
        self._responded = True

    async def _flush(self, *, last: bool = False) -> None:
        """Send what :meth:`_queue` collected (nothing to do when it is empty).

        ``last``: nothing follows on this connection, so over TLS close_notify travels in the
        same write (:meth:`TlsServerStream.send_last`).
        """
        if not self._outgoing:
            return
        outgoing = self._outgoing
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        self._outgoing = []
        self._outgoing_bytes = 0
        tls = self.tls
        # A bare scope rather than fail_after (see _handshake): one per flush.
        limit = trio.CancelScope(
            deadline=trio.current_time() + self.runtime.limits.client_send_timeout_s
        )
        try:
            with limit:
                if last and tls is not None:
                    await tls.send_last(data)
                else:
                    await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone from exc
        if limit.cancelled_caught:
            LOGGER.info(
                "client.send_timeout listener=%s client=%s:%s: the client took nothing for %g s",
                self.listener.name,
                *self.peer,
                self.runtime.limits.client_send_timeout_s,
            )
            raise _ClientGone(
                f"send timed out after {self.runtime.limits.client_send_timeout_s:g} s"
            )

    @property
    def idle(self) -> bool:
        """No request in progress: before the first (also during the handshake) or between
        two, with none of the next one received. Closing the connection then loses nothing."""
        return self._request is None and not self._inbuf

    def _keep_alive(self) -> bool:
        """The client lets the connection carry another request (HTTP/1.1 without
        ``Connection: close``); False before a request head was read."""
        request = self._request
        return request is not None and request.keep_alive

    # -- the connection's life ----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes. Closes the stream in all cases."""
        try:
            if self.runtime.ssl_context is not None:
                if not await self._handshake():
                    return
                await self._check_revocation()
            else:
                self.decision = decide_client_cert(None, presented=False, log=None)
            # The request loop runs in the idle scope, whose deadline bounds each wait for a
            # request head (see _read_head); inline here rather than in a method of its own,
            # because every idle connection keeps the frames of this await chain.
            with self._idle_scope:
                await self._request_loop()
            if self._idle_scope.cancelled_caught and (self._inbuf or not self._served):
                # No complete head in time (a keep-alive connection with nothing of a next
                # request is closed silently instead): nginx's 408, logged like a request.
                started = time.perf_counter()
                facts = self._unparsed_facts()
                await self._send_page(GatewayPage.REQUEST_TIMEOUT, close=True)
                self._access(
                    facts, GatewayPage.REQUEST_TIMEOUT.status, started, routed="", server_status=""
                )
        except _ClientGone:
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
            # The TLS stream bounds its close_notify itself (CLOSE_NOTIFY_TIMEOUT_S); a plain
            # TCP close does not wait.
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _internal_error_page(self) -> None:
        if self._responded:
            return
        self._outgoing = []
        self._outgoing_bytes = 0
        try:
            await self._send_page(GatewayPage.INTERNAL_ERROR, close=True)
        except _ClientGone as exc:
            LOGGER.debug("the 500 page could not be sent: %s", exc)

    async def _handshake(self) -> bool:
        assert self.runtime.ssl_context is not None
        log = VerifyLog()
        tls = TlsServerStream(self.stream, self.runtime.ssl_context, app_data=log)
        self.stream = tls
        self.tls = tls
        name = self.runtime.listener.name
        # A bare scope rather than fail_after, whose generator-based context manager costs as
        # much again, on every connection.
        limit = trio.CancelScope(
            deadline=trio.current_time() + self.runtime.limits.handshake_timeout_s
        )
        try:
            with limit:
                await tls.do_handshake()
        except PlainHttpOnTlsPort:
            LOGGER.info("tls.plain_http listener=%s client=%s:%s", name, *self.peer)
            await self._plain_http_answer(tls)
            return False
        except TlsHandshakeError as exc:
            LOGGER.info(
                "tls.handshake_failed listener=%s client=%s:%s reason=%s",
                name,
                *self.peer,
                exc.reason,
            )
            return False
        if limit.cancelled_caught:
            LOGGER.info("tls.handshake_timeout listener=%s client=%s:%s", name, *self.peer)
            return False
        self.tls_rule = self.runtime.rule_for_context(tls.connection.get_context())
        listener = self.tls_rule.listener
        name = listener.name
        if listener.require_sni and not tls.server_name:
            # requireServerNameIndication: this listener serves only clients that name a host.
            LOGGER.info("tls.sni_required listener=%s client=%s:%s", name, *self.peer)
            return False
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
            return False
        chain = tls.peer_chain
        if chain:
            self.cert = _cert_info(chain[0], chain[1:])
        self.decision = assess_handshake(
            listener.ssl_profile,
            presented=chain,
            log=log,
            at=datetime.now(UTC),
        )
        # The verify callback's record has been read; the connection need not keep it.
        tls.connection.set_app_data(None)
        if self.decision.explanation:
            LOGGER.info(
                "tls.client_cert_rejected listener=%s client=%s:%s reason=%s",
                name,
                *self.peer,
                self.decision.explanation,
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
            self.decision.ssl_client_verify,
            "allow" if self.decision.allowed else "reject",
        )
        return True

    async def _check_revocation(self) -> None:
        """The OCSP step: after the handshake, before the first request is routed.

        The verify callback cannot wait for a responder, so a Strict decision whose chain and
        issuer DN passed stays pending until the checker (cache or responder) answers.
        """
        decision = self.decision
        if decision is None or decision.verdict is None or decision.verdict.ocsp is None:
            return
        checker = self.runtime.ocsp
        if checker is None:
            # The gateway always passes a checker to listeners with OCSP; a runtime built by
            # hand without one gets a private checker rather than a silent pass.
            checker = OcspChecker()
        outcome = await checker.check(decision.verdict.ocsp)
        self.decision = resolve_ocsp(decision, outcome)
        LOGGER.info(
            "tls.client_cert_ocsp listener=%s client=%s:%s status=%s verify=%s",
            self.listener.name,
            *self.peer,
            outcome.status.value,
            self.decision.ssl_client_verify,
        )

    def _explain_headers(self, page: GatewayPage) -> list[tuple[str, str]]:
        """``--explain``: the failure's sentence on a client-certificate 400, else nothing."""
        decision = self.decision
        if not self.runtime.explain or decision is None or not decision.explanation:
            return []
        if page not in (GatewayPage.NO_CLIENT_CERT, GatewayPage.CLIENT_CERT_ERROR):
            return []
        return [(EXPLAIN_HEADER, _header_safe(decision.explanation))]

    async def _plain_http_answer(self, tls: TlsServerStream) -> None:
        """nginx's answer to plain HTTP on an HTTPS port, sent without TLS."""
        page = GatewayPage.PLAIN_HTTP_TO_HTTPS
        body = render_page(page)
        data = response_head_bytes(page.status, page.reason, _page_headers(len(body), close=True))
        try:
            await tls.transport_stream.send_all(data + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            LOGGER.debug("client.gone before the plain-HTTP 400 was sent")

    async def _request_loop(self) -> None:
        """Serve requests until the connection ends (a client that sends no first request
        within ``REQUEST_HEADER_TIMEOUT_S`` gets 408 from :meth:`run`; an idle keep-alive one
        is closed)."""
        while True:
            self._request = None
            self._body = None
            self._responded = False
            self._forwarded_to = ""
            try:
                head = await self._read_head()
            except HttpError as exc:
                LOGGER.info(
                    "http.bad_request listener=%s client=%s:%s reason=%s",
                    self.listener.name,
                    *self.peer,
                    exc.reason,
                )
                page = (
                    GatewayPage.HEADERS_TOO_LARGE if exc.status == 431 else GatewayPage.BAD_REQUEST
                )
                started = time.perf_counter()
                await self._send_page(page, close=True)
                # Logged like any request (nginx logs its 400s too), with what the request
                # line says when it can be read.
                self._access(
                    self._unparsed_facts(), page.status, started, routed="", server_status=""
                )
                # The client may still be sending the rest of a too-large head; closing
                # with its bytes unread would reset the connection and lose our answer.
                await self._linger()
                return
            if head is None:
                return
            self._served += 1
            self._request = head
            if head.framing is not Framing.NONE:
                self._body = BodyReader(head.framing, head.length)
            keep_going = await self._handle_request(head)
            body = self._body
            if not keep_going or not head.keep_alive or (body is not None and not body.done):
                return

    async def _handle_request(self, request: RequestHead) -> bool:
        """Serve one request; True when the connection can carry the next one."""
        started = time.perf_counter()
        decision = self.decision
        assert decision is not None
        facts = self._facts(
            request.method,
            request.target,
            request.version,
            request.headers,
            decision.verification,
        )
        # Validated by the codec (http1.validate_host); an absolute-form target's authority
        # has replaced the Host header and the target is in origin form (RFC 9112 3.2.2).
        host = request.host
        if host != self._routed_host:
            # Keep-alive requests of a connection nearly always name the same host.
            self._routed_host = host
            self._routed_rule = select_rule(self.runtime.rules, host)
        rule = self._routed_rule
        self.current_rule = rule
        self.current = None
        if request.method == "CONNECT":
            # A tunnel request: the gateway is no forward proxy. Differs from Azure: nginx
            # answers 405, a status the gateway has no page for.
            LOGGER.info(
                "http.bad_request listener=%s client=%s:%s reason=%s",
                self.listener.name,
                *self.peer,
                "CONNECT is not supported",
            )
            return await self._refuse(GatewayPage.BAD_REQUEST, facts, started)
        if rule is None:
            # v2: no listener on this port takes the host (appgw-behaviour.md section 7).
            LOGGER.info(
                "http.no_listener port=%s client=%s:%s host=%s",
                self.runtime.port,
                *self.peer,
                host or "-",
            )
            return await self._status_page(HTTP_NOT_FOUND, facts, started)
        tls_rule = self.tls_rule
        if tls_rule is not None and misdirected(tls_rule.listener, rule.listener):
            LOGGER.info(
                "http.misdirected client=%s:%s sni_listener=%s host_listener=%s",
                *self.peer,
                tls_rule.listener.name,
                rule.listener.name,
            )
            return await self._status_page(GatewayPage.MISDIRECTED_REQUEST, facts, started)
        if (
            tls_rule is not None
            and rule.listener.client_auth is None
            and tls_rule.listener.client_auth is not None
        ):
            # Routed by Host to a listener that does not authenticate clients (one that does,
            # with another profile, got 421 above; with the same profile the decision stands).
            # It refuses nothing, but the verification is a fact of the connection, as nginx's
            # $ssl_client_verify: the backend learns the handshake's result, FAILED:<reason>
            # included, never NONE ("no certificate") for a certificate Strict rejected.
            decision = without_client_auth(decision)
            facts = replace(facts, verification=decision.verification)
        if not decision.allowed and decision.page is not None:
            return await self._refuse(decision.page, facts, started)
        if request.upgrade_h2c:
            # configuration-listeners, "HTTP/2 support": h2c upgrades get 403, after the
            # checks nginx makes before any location (a Strict failure stays a 400). On HTTPS
            # listeners too (the document speaks of HTTP ones): a backend that accepted the
            # upgrade would read HTTP/2 frames whose headers no rewrite rule ever saw.
            LOGGER.info(
                "http.h2c_refused listener=%s client=%s:%s upgrade=%s",
                self.listener.name,
                *self.peer,
                _header_safe(facts.header("upgrade") or ""),
            )
            return await self._status_page(GatewayPage.FORBIDDEN, facts, started)
        try:
            return await self._route(request, rule, facts, started)
        except HttpError as exc:
            # The request body's framing broke while it was read (the backend connection,
            # if one was opened, is closed by _proxy on the way out).
            return await self._refuse_body(exc, facts, started)

    async def _refuse_body(self, exc: HttpError, facts: RequestFacts, started: float) -> bool:
        """A malformed request body (say, a bad chunk size): 400, as nginx answers it.

        Nothing reached the backend: an ordinary 400. The head (and maybe some chunks) did:
        that backend request was aborted by closing its connection, and the log says so; the
        client still gets the 400 when no response has started (nginx does the same).
        """
        routed = self._forwarded_to
        if routed:
            LOGGER.warning(
                "http.bad_body_midstream listener=%s client=%s:%s backend=%s reason=%s: the "
                "request head was already forwarded; the backend request was aborted",
                self.listener.name,
                *self.peer,
                routed,
                exc.reason,
            )
        else:
            LOGGER.info(
                "http.bad_request listener=%s client=%s:%s reason=%s",
                self.listener.name,
                *self.peer,
                exc.reason,
            )
        if not self._responded:
            await self._send_page(GatewayPage.BAD_REQUEST, close=True)
        self._access(
            facts, GatewayPage.BAD_REQUEST.status, started, routed=routed, server_status=""
        )
        await self._linger()
        return False

    async def _refuse(self, page: GatewayPage, facts: RequestFacts, started: float) -> bool:
        """A gateway 400 before routing: the page, ``Connection: close``, a lingering close."""
        await self._send_page(page, close=True, extra_headers=self._explain_headers(page))
        self._access(facts, page.status, started, routed="", server_status="")
        await self._linger()
        return False

    async def _status_page(
        self,
        status: int | GatewayPage,
        facts: RequestFacts,
        started: float,
        *,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """A page routing produces (redirect, 404, 500) or a keep-alive gateway page (403,
        421: nginx keeps the connection for those); keeps the connection when it can."""
        if isinstance(status, GatewayPage):
            reason, body, status = status.reason, render_page(status), status.status
        else:
            reason, body = render_status_page(status)
        close = not await self._discard_body()
        close = await self._answer(status, reason, body, close=close, extra_headers=extra_headers)
        self._access(facts, status, started, routed="", server_status="")
        return not close

    async def _discard_body(self) -> bool:
        """Read and drop a request body the gateway answers without forwarding.

        True when the whole body was read, so the connection can serve the next request; a
        body over ``DISCARD_BODY_LIMIT`` or one that does not arrive whole within
        ``LINGER_TOTAL_S`` is not waited for (close instead): one deadline, so a client
        trickling its body cannot keep the connection.
        """
        seen = 0
        until = trio.current_time() + self.runtime.limits.linger_total_s
        try:
            while (
                data := await self._read_body(self.runtime.limits.linger_total_s, until=until)
            ) is not None:
                seen += len(data)
                if seen > self.runtime.limits.discard_body_bytes:
                    return False
        except (trio.TooSlowError, HttpError, _ClientGone):
            return False
        return True

    async def _route(
        self, request: RequestHead, rule: RoutingRule, facts: RequestFacts, started: float
    ) -> bool:
        """Path map, redirects and rewrites' ``reroute``, then the backend.

        A rewrite that sets ``reroute`` on a path-based rule sends the rewritten path through
        the path map again (rewrite-http-headers-url); more than ``MAX_REROUTES`` rounds is a
        loop, which ends with 500 as on the gateway.
        """
        current = route(rule, facts.uri_path)
        for _ in range(MAX_REROUTES + 1):
            self.current = current
            if current.redirect is not None:
                return await self._redirect(current.redirect, facts, started)
            assert current.settings is not None
            if not _may_reroute(current):
                return await self._proxy(request, facts, started, current)
            trial = rewrite_request(
                facts,
                current.rewrite_rule_set,
                host=current.settings.host_name,
                strip_client_cert_headers=self.runtime.strip_client_cert_headers,
            )
            if not _rerouted(current, trial):
                return await self._proxy(request, facts, started, current)
            LOGGER.debug(
                "rewrite.reroute listener=%s from=%s to=%s",
                self.listener.name,
                facts.uri_path,
                trial.facts.uri_path,
            )
            facts = trial.facts
            current = route(rule, facts.uri_path)
        LOGGER.warning(
            "rewrite.reroute_loop listener=%s client=%s:%s: more than %s re-evaluations",
            self.listener.name,
            *self.peer,
            MAX_REROUTES,
        )
        return await self._status_page(HTTP_INTERNAL_ERROR, facts, started)

    async def _redirect(
        self, redirect: RedirectConfig, facts: RequestFacts, started: float
    ) -> bool:
        target_port = None
        if redirect.target_listener is not None:
            local = self.runtime.local_port
            target_port = local(redirect.target_listener) if local is not None else None
            if target_port is None:
                target_port = redirect.target_listener.frontend_port
        raw_path, _, query = facts.target.partition("?")
        location = redirect_location(
            redirect,
            request_host=facts.header("host") or "",
            target_port=target_port,
            path=raw_path,
            query=query,
        )
        LOGGER.info(
            "http.redirect listener=%s redirect=%s status=%s location=%s",
            self.listener.name,
            redirect.name,
            redirect.redirect_type.status,
            location,
        )
        return await self._status_page(
            redirect.redirect_type.status,
            facts,
            started,
            extra_headers=[("Location", _header_safe(location))],
        )

    def _choose_backend(
        self, pool: BackendPool, settings: BackendSettings, facts: RequestFacts
    ) -> tuple[tuple[str, int], list[tuple[str, str]]]:
        """The backend address, and the affinity cookies to set on the response (if any).

        Unhealthy backends (custom probes) are skipped; a pool with addresses but none healthy
        is a 502. With ``cookieBasedAffinity`` a client whose cookie names a healthy backend of
        the pool goes there; any other client is placed round-robin and gets the cookie.
        """
        health = self.runtime.health

        def port_of(address: BackendAddress) -> int:
            return address.port if address.port is not None else settings.port

        healthy = tuple(
            a
            for a in pool.addresses
            if health is None or health.healthy(pool.name, a.host, port_of(a))
        )
        if pool.addresses and not healthy:
            raise BackendConnectError(f"no healthy backend in pool '{pool.name}' (health probe)")
        # The usual case, every address healthy, picks from the pool itself (no copy per request).
        candidates = (
            pool if len(healthy) == len(pool.addresses) else replace(pool, addresses=healthy)
        )
        if not settings.cookie_affinity:
            return self.backend.pick(candidates, settings.port), []
        name = settings.affinity_cookie_name
        wanted = cookie_value(facts.headers, name)
        for address in healthy:
            if affinity_cookie_value(pool.name, address.host, port_of(address)) == wanted:
                return (address.host, port_of(address)), []
        chosen = self.backend.pick(candidates, settings.port)
        value = affinity_cookie_value(pool.name, *chosen)
        cookies = [
            ("Set-Cookie", f"{name}={value}; Path=/"),
            ("Set-Cookie", f"{name}{AFFINITY_CORS_SUFFIX}={value}; Path=/; SameSite=None; Secure"),
        ]
        return chosen, cookies

    async def _proxy(
        self, request: RequestHead, facts: RequestFacts, started: float, current: Route
    ) -> bool:
        """Forward the request to a backend of the route and its response back.

        With request buffering (``enableRequestBuffering``, the default) the whole body is
        read first, so no backend connection waits for a slow upload: nginx does the same
        (``proxy_request_buffering``) and so does Azure (proxy-buffers).
        """
        if (
            request.framing is Framing.LENGTH
            and request.length > self.runtime.limits.max_request_body_bytes
        ):
            return await self._too_large(facts, started)
        spool = None
        if self._body is not None and request.upgrade is None and self.runtime.buffering.request:
            spool = RequestBodySpool(memory_limit=self.runtime.limits.request_body_memory_bytes)
        try:
            if spool is not None:
                refused = await self._buffer_request_body(spool, facts, started)
                if refused is not None:
                    return refused
            return await self._proxy_to_backend(request, facts, started, current, spool)
        finally:
            if spool is not None:
                spool.aclose()

    async def _too_large(self, facts: RequestFacts, started: float) -> bool:
        LOGGER.info(
            "http.request_too_large listener=%s client=%s:%s limit=%s",
            self.listener.name,
            *self.peer,
            self.runtime.limits.max_request_body_bytes,
        )
        return await self._refuse(GatewayPage.REQUEST_TOO_LARGE, facts, started)

    async def _buffer_request_body(
        self, spool: RequestBodySpool, facts: RequestFacts, started: float
    ) -> bool | None:
        """Read the whole request body into ``spool``; None when it is all there, else the
        request was answered with a gateway page (413, 408 or 400) and this is whether the
        connection continues (it does not)."""
        request = self._request
        assert request is not None
        if request.expect_continue and not self._inbuf:
            self._queue(CONTINUE)
            await self._flush()
        page = None
        reason = ""
        try:
            while (
                data := await self._read_body(self.runtime.limits.client_body_timeout_s)
            ) is not None:
                if spool.length + len(data) > self.runtime.limits.max_request_body_bytes:
                    return await self._too_large(facts, started)
                await spool.append(data)
        except trio.TooSlowError:
            # nginx answers a client_body_timeout with 408 when no response has started.
            page = GatewayPage.REQUEST_TIMEOUT
            reason = f"no body bytes for {self.runtime.limits.client_body_timeout_s:g} s"
        except HttpError as exc:
            if self._eof:
                # The client closed inside its body: nobody is left to read a page.
                self._access(facts, CLIENT_CLOSED_REQUEST, started, routed="", server_status="")
                raise _ClientGone from exc
            # Broken framing: the one mapping of a malformed body (_refuse_body) answers it.
            raise
        except _ClientGone:
            self._access(facts, CLIENT_CLOSED_REQUEST, started, routed="", server_status="")
            raise
        if page is None:
            if spool.spilled:
                LOGGER.debug(
                    "http.request_body_spilled listener=%s client=%s:%s bytes=%s",
                    self.listener.name,
                    *self.peer,
                    spool.length,
                )
            return None
        LOGGER.info(
            "http.request_body_failed listener=%s client=%s:%s status=%s reason=%s",
            self.listener.name,
            *self.peer,
            page.status,
            reason,
        )
        return await self._refuse(page, facts, started)

    async def _proxy_to_backend(
        self,
        request: RequestHead,
        facts: RequestFacts,
        started: float,
        current: Route,
        spool: RequestBodySpool | None,
    ) -> bool:
        settings = current.settings
        pool = current.pool
        assert settings is not None
        assert pool is not None
        try:
            address, cookies = self._choose_backend(pool, settings, facts)
        except BackendError as exc:
            return await self._fail(exc, facts, started, routed="")
        host_override = settings.host_name
        if settings.pick_host_name_from_backend_address:
            host_override = address[0]
        rewritten = rewrite_request(
            facts,
            current.rewrite_rule_set,
            host=host_override,
            strip_client_cert_headers=self.runtime.strip_client_cert_headers,
        )
        for header in rewritten.forgeable:
            LOGGER.warning(
                "rewrite.client_cert_header_forwarded listener=%s client=%s:%s header=%s: the "
                "client's own %s reached the backend, because the rule that fills it from the "
                "certificate did not fire (fix: an unconditional rule deleting it first, or "
                "--strip-client-cert-headers)",
                self.listener.name,
                *self.peer,
                header,
                header,
            )
        if rewritten.url_rewritten:
            LOGGER.debug(
                "rewrite.url listener=%s from=%s to=%s",
                self.listener.name,
                facts.target,
                rewritten.target,
            )
        target = backend_target(
            rewritten.target, rewritten.facts.uri_path, settings, current.matched_pattern
        )
        routed = f"{address[0]}:{address[1]}"
        headers, host_sent = _backend_headers(
            rewritten.headers, request, length=spool.length if spool is not None else None
        )
        if host_sent is None:
            # An HTTP/1.0 client may omit Host, but the backend request is HTTP/1.1, which
            # requires one: name the backend, as nginx's default ``Host $proxy_host`` does.
            host_sent = routed if address[1] != DEFAULT_HTTP_PORT else address[0]
            headers = [("Host", host_sent), *headers]
        upgrade = request.upgrade
        if upgrade is not None:
            # Hop-by-hop headers were dropped; an Upgrade request (WebSocket) carries them on.
            headers = [*headers, ("Connection", "Upgrade"), ("Upgrade", upgrade)]
        tls = None
        if settings.protocol is ListenerProtocol.HTTPS:
            tls = backend_tls(settings, normalize_host(host_sent) or address[0])
        request_head = request_head_bytes(request.method, target, headers)
        response: ResponseHead | None = None
        try:
            backend = await self.backend.acquire(address, tls=tls)
        except BackendError as exc:
            return await self._fail(exc, facts, started, routed=routed)
        reusable = False
        self._forwarded_to = ""

        released = False

        def release(reusable: bool) -> None:
            # Response buffering gives the connection back as soon as the backend is done,
            # while the client may still be reading; the finally below must not do it again.
            nonlocal released
            if not released:
                released = True
                self.backend.release(backend, reusable=reusable)

        try:
            backend.start_request(
                request_head,
                repeatable=self._body is None and request.method in RETRY_METHODS,
            )
            await self._forward_request(backend, request_head, spool, settings.request_timeout_s)
            response = await self._backend_response(backend, request, settings.request_timeout_s)
            out_headers = rewrite_response_headers(
                rewritten.facts,
                current.rewrite_rule_set,
                headers,
                response.headers,
                status=response.status,
            )
            if response.status == HTTP_SWITCHING_PROTOCOLS:
                await self._switch_protocols(backend, response, out_headers, rewritten)
                self._access(facts, 101, started, routed=routed, server_status="101")
                return False
            close, reusable = await self._forward_response(
                backend, response, out_headers + cookies, settings.request_timeout_s, release
            )
        except _RequestTooLarge:
            if self._responded:
                return False
            return await self._too_large(facts, started)
        except BackendError as exc:
            if response is not None and self._responded:
                LOGGER.warning(
                    "backend.error_midstream listener=%s backend=%s reason=%s",
                    self.listener.name,
                    routed,
                    exc,
                )
                # The status line is out; the log says what the client was told.
                status = response.status
                self._access(facts, status, started, routed=routed, server_status=str(status))
                return False
            return await self._fail(exc, facts, started, routed=routed)
        except _ClientGone:
            # Every request gets an access record, also one whose client left: nginx logs 499
            # when no response had started, else the status it was sending.
            self._access(
                facts,
                response.status
                if response is not None and self._responded
                else CLIENT_CLOSED_REQUEST,
                started,
                routed=routed,
                server_status=str(response.status) if response is not None else "",
            )
            raise
        finally:
            release(reusable)
        self._access(
            facts,
            response.status,
            started,
            routed=routed,
            server_status=str(response.status),
        )
        return not close

    async def _forward_request(
        self,
        backend: BackendConnection,
        head: bytes,
        spool: RequestBodySpool | None,
        timeout_s: int,
    ) -> None:
        """The request head, then its body, to the backend.

        A buffered body (``spool``) goes as it was read, framed by Content-Length. Otherwise
        the body streams (re-chunked when chunked): a body already received travels with the
        head in one send; an ``Expect: 100-continue`` client whose body has not come yet gets
        the gateway's own 100 first.

        Each send must be taken by the backend within ``timeout_s`` (requestTimeout).

        Raises:
            _RequestTooLarge: a streamed chunked body went past ``MAX_REQUEST_BODY_BYTES``.
            BackendTimeout: the backend stopped reading.
        """
        if spool is not None:
            whole = spool.in_memory()
            if whole is not None:
                await backend.send(head + whole, deadline=trio.current_time() + timeout_s)
                return
            await backend.send(head, deadline=trio.current_time() + timeout_s)
            async for piece in spool.pieces(SPILL_READ_SIZE):
                await backend.send(piece, deadline=trio.current_time() + timeout_s)
            return
        if self._body is None:
            self._forwarded_to = backend.addr_text
            await backend.send(head, deadline=trio.current_time() + timeout_s)
            return
        request = self._request
        assert request is not None
        chunked = request.framing is Framing.CHUNKED
        pending = head
        seen = 0
        if not self._inbuf:
            if request.expect_continue:
                self._queue(CONTINUE)
                await self._flush()
            self._forwarded_to = backend.addr_text
            await backend.send(head, deadline=trio.current_time() + timeout_s)
            pending = b""
        while True:
            # A malformed body (HttpError) propagates: _handle_request answers it with 400.
            try:
                data = await self._read_body(self.runtime.limits.client_body_timeout_s)
            except trio.TooSlowError as exc:
                raise _ClientGone from exc
            self._forwarded_to = backend.addr_text
            if data is None:
                if chunked:
                    pending += LAST_CHUNK
                if pending:
                    await backend.send(pending, deadline=trio.current_time() + timeout_s)
                return
            seen += len(data)
            if seen > self.runtime.limits.max_request_body_bytes:
                raise _RequestTooLarge
            await backend.send(
                pending + chunk(data) if chunked else pending + data,
                deadline=trio.current_time() + timeout_s,
            )
            pending = b""

    async def _backend_response(
        self, backend: BackendConnection, request: RequestHead, timeout_s: int
    ) -> ResponseHead:
        """The backend's final response head; or its 101 when the request asked for an
        upgrade. Interim responses (100, 103) are not forwarded, as nginx does not."""
        deadline = trio.current_time() + timeout_s
        try:
            while True:
                response = await receive_response_head(
                    backend, request_method=request.method, deadline=deadline
                )
                if response.status == HTTP_SWITCHING_PROTOCOLS:
                    if request.upgrade is None:
                        raise BackendConnectError(
                            f"backend {backend.addr_text} switched protocols unasked"
                        )
                    return response
                if response.status >= 200:
                    return response
        except trio.TooSlowError as exc:
            raise BackendTimeout(
                f"backend {backend.addr_text} did not answer within requestTimeout ({timeout_s} s)"
            ) from exc

    async def _forward_response(
        self,
        backend: BackendConnection,
        response: ResponseHead,
        headers: list[tuple[str, str]],
        timeout_s: int,
        release: Callable[[bool], None],
    ) -> tuple[bool, bool]:
        """Send the response head and the body to the client.

        Streamed (``enableResponseBuffering`` false): what is buffered is queued behind the
        head and sent whenever the backend has to be waited for, or the body ends. Buffered
        (the default): see :meth:`_forward_buffered`. Returns (close the client connection,
        the backend connection can be reused).
        """
        request = self._request
        assert request is not None
        headers, chunked, close = _client_framing(headers, request, response.status)
        self._queue_head(response.status, response.reason, headers)
        reader = BodyReader(response.framing, response.length)
        keep = response.keep_alive and response.framing is not Framing.CLOSE
        if reader.done or not self.runtime.buffering.response:
            reusable = await self._pull_response_body(
                backend, reader, chunked, timeout_s, self._queue_body, self._flush
            )
        else:
            reusable = await self._forward_buffered(
                backend, reader, chunked, timeout_s, lambda clean: release(clean and keep)
            )
        await self._flush(last=close)
        return close, reusable and keep

    async def _queue_body(self, data: bytes) -> None:
        self._queue(data)
        if self._outgoing_bytes >= RECEIVE_SIZE:
            await self._flush()

    async def _forward_buffered(
        self,
        backend: BackendConnection,
        reader: BodyReader,
        chunked: bool,
        timeout_s: int,
        release: Callable[[bool], None],
    ) -> bool:
        """Read the body from the backend as fast as it comes, send it as fast as the client
        takes it, and give the backend connection back as soon as the backend is done.

        Two tasks share a :class:`ResponseSpool` (memory, then a temporary file): a slow
        reader costs spool space, never a backend connection, as with nginx's
        ``proxy_buffering``. Either side failing stops the other: a broken backend aborts the
        client's response, a client that left aborts the backend's (it is then not reused).
        """
        spool = ResponseSpool(
            memory_limit=self.runtime.limits.response_buffer_memory_bytes,
            file_limit=self.runtime.limits.response_buffer_file_bytes,
        )
        failure: BackendError | _ClientGone | None = None
        reusable = False
        try:
            async with trio.open_nursery() as nursery:

                async def to_client() -> None:
                    nonlocal failure
                    try:
                        if not spool.pending:
                            await self._flush()  # the head, while the body is awaited
                        while (data := await spool.get(SPILL_READ_SIZE)) is not None:
                            self._queue(data)
                            await self._flush()
                    except _ClientGone as exc:
                        failure = exc
                        nursery.cancel_scope.cancel()

                nursery.start_soon(to_client)
                try:
                    reusable = await self._pull_response_body(
                        backend, reader, chunked, timeout_s, spool.put, None
                    )
                except BackendError as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
                else:
                    release(reusable)
                    spool.finish()
        finally:
            spool.aclose()
        if failure is not None:
            raise failure
        return reusable

    async def _pull_response_body(
        self,
        backend: BackendConnection,
        reader: BodyReader,
        chunked: bool,
        timeout_s: int,
        put: Callable[[bytes], Awaitable[None]],
        before_wait: Callable[[], Awaitable[None]] | None,
    ) -> bool:
        """Decode the response body from the backend and hand it to ``put`` (re-chunked when
        ``chunked``); ``before_wait`` runs before each wait for the backend. Returns whether
        nothing followed the body (the connection may carry another request).

        Raises:
            BackendConnectError: the body's framing is broken.
            BackendTimeout: nothing for ``timeout_s`` (requestTimeout; per read, as nginx's
                ``proxy_read_timeout``: a backend is trusted not to trickle).
        """
        while not reader.done:
            data = backend.buffer
            try:
                if data:
                    backend.buffer = b""
                    body, backend.buffer = reader.feed(data)
                    if body:
                        await put(chunk(body) if chunked else body)
                    continue
                if backend.eof:
                    reader.eof()
                    continue
            except HttpError as exc:
                raise BackendConnectError(
                    f"backend {backend.addr_text} broke its response body: {exc.reason}"
                ) from exc
            if before_wait is not None:
                await before_wait()
            try:
                data = await backend.receive(trio.current_time() + timeout_s)
            except trio.TooSlowError as exc:
                raise BackendTimeout(f"backend {backend.addr_text} stalled mid-response") from exc
            if data:
                backend.buffer = data
            else:
                backend.eof = True
        if chunked:
            await put(LAST_CHUNK)
        return not backend.buffer and not backend.eof

    async def _switch_protocols(
        self,
        backend: BackendConnection,
        response: ResponseHead,
        headers: list[tuple[str, str]],
        rewritten: RequestRewrite,
    ) -> None:
        """101 from the backend: tell the client, then copy bytes both ways until one side ends.

        App Gateway passes WebSocket (and other Upgrade) connections through; after the 101 the
        bytes are the two ends' business.
        """
        headers = [*headers, ("Connection", "Upgrade")]
        upgrade = next((v for k, v in response.headers if k.lower() == "upgrade"), None)
        if upgrade is not None:
            headers.append(("Upgrade", upgrade))
        self._queue_head(HTTP_SWITCHING_PROTOCOLS, response.reason, headers)
        await self._flush()
        client_rest, self._inbuf = self._inbuf, b""
        backend_rest, backend.buffer = backend.buffer, b""
        LOGGER.info(
            "http.upgraded listener=%s client=%s:%s backend=%s target=%s",
            self.listener.name,
            *self.peer,
            backend.addr_text,
            rewritten.target,
        )
        stream = self.stream
        async with trio.open_nursery() as nursery:

            async def client_to_backend() -> None:
                try:
                    if client_rest:
                        await backend.send(client_rest)
                    while data := await stream.receive_some(RECEIVE_SIZE):
                        await backend.send(bytes(data))
                except (trio.BrokenResourceError, trio.ClosedResourceError, BackendError):
                    pass
                nursery.cancel_scope.cancel()

            async def backend_to_client() -> None:
                try:
                    if backend_rest:
                        await stream.send_all(backend_rest)
                    while data := await backend.receive(math.inf):
                        await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, BackendError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(client_to_backend)
            nursery.start_soon(backend_to_client)

    def _unparsed_facts(self) -> RequestFacts:
        """The facts of a request whose head was refused: the connection's, and the method
        and target when the first line has the usual three parts."""
        line = self._inbuf[:MAX_LOGGED_REQUEST_LINE].split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        decision = self.decision
        verification = decision.verification if decision is not None else "NONE"
        return self._facts(method, target, "1.1", (), verification)

    def _facts(
        self,
        method: str,
        target: str,
        version: str,
        headers: Sequence[tuple[str, str]],
        verification: str,
    ) -> RequestFacts:
        """One request's facts: the connection's (computed once) and the request's own."""
        connection = self._connection_facts
        if connection is None:
            connection = self._connection_facts = _ConnectionFacts(
                self.tls, self.stream, self.runtime.listener.name
            )
        return RequestFacts(
            client_ip=self.peer[0],
            client_port=self.peer[1],
            server_port=self.runtime.port,
            scheme="https" if self.tls is not None else "http",
            method=method,
            target=target,
            http_version=version,
            headers=headers,
            trace_id=_trace_id(),
            tls_version=connection.tls_version,
            cipher=connection.cipher,
            certificate=self.cert,
            verification=verification,
            # X-Azure-JA4-Fingerprint comes with the 2022 policies, which are also the ones that
            # offer TLS 1.3 (CustomV2 too: the docs are silent, it is the same family).
            ja4=connection.ja4 if self.listener.ssl_policy.tls13 else None,
            connection=connection,
        )

    async def _fail(
        self, exc: BackendError, facts: RequestFacts, started: float, *, routed: str
    ) -> bool:
        page = (
            GatewayPage.GATEWAY_TIMEOUT
            if isinstance(exc, BackendTimeout)
            else GatewayPage.BAD_GATEWAY
        )
        LOGGER.warning(
            "backend.error listener=%s backend=%s status=%s reason=%s",
            self.listener.name,
            routed or "-",
            page.status,
            exc,
        )
        # The request body may still be unread; closing is the only safe way to resync.
        body = self._body
        close = body is not None and not body.done
        close = await self._send_page(page, close=close)
        self._access(facts, page.status, started, routed=routed, server_status="")
        return not close

    async def _send_page(
        self, page: GatewayPage, *, close: bool, extra_headers: list[tuple[str, str]] | None = None
    ) -> bool:
        """One of the gateway's pages; returns whether the connection closes after it."""
        return await self._answer(
            page.status, page.reason, render_page(page), close=close, extra_headers=extra_headers
        )

    async def _answer(
        self,
        status: int,
        reason: str,
        body: bytes,
        *,
        close: bool,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """A response the gateway writes itself, head and body in one send.

        ``Connection: close`` goes with it when ``close`` or when the client does not keep
        the connection; returns whether the connection closes after it. A HEAD request gets
        the head only.
        """
        close = close or not self._keep_alive()
        headers = _page_headers(len(body), close=False)
        if extra_headers:
            headers += extra_headers
        if close:
            headers.append(("Connection", "close"))
        self._queue_head(status, reason, headers)
        request = self._request
        if request is None or request.method != "HEAD":
            self._queue(body)
        await self._flush(last=close)
        return close

    async def _linger(self) -> None:
        """Read and drop what the client still sends, so it reads our 400 rather than a reset."""
        with trio.move_on_after(self.runtime.limits.linger_total_s):
            while True:
                with trio.move_on_after(self.runtime.limits.linger_idle_s) as idle:
                    try:
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                if idle.cancelled_caught or not data:
                    return

    def _access(
        self, facts: RequestFacts, status: int, started: float, *, routed: str, server_status: str
    ) -> None:
        decision = self.decision
        cert = self.cert
        rule = self.current_rule
        current = self.current
        tls_on = self.tls is not None
        user_agent = original_host = ""
        for name, value in facts.headers:  # one pass for both (the first of each, as nginx)
            lower = name.lower()
            if lower == "host":
                original_host = original_host or value
            elif lower == "user-agent":
                user_agent = user_agent or value
        record = AccessRecord(
            listenerName=self.listener.name,
            ruleName=rule.name if rule is not None else "",
            backendPoolName=current.pool.name if current and current.pool else "",
            clientIP=facts.client_ip,
            clientPort=facts.client_port,
            httpMethod=facts.method,
            requestUri=facts.path,
            httpStatus=status,
            sslEnabled="on" if tls_on else "off",
            sslProtocol=(facts.tls_version or "") if tls_on else "",
            sslCipher=(facts.cipher or "") if tls_on else "",
            sslClientVerify=decision.ssl_client_verify if decision else "NONE",
            sslClientCertificateFingerprint=cert.fingerprint_sha1 if cert else "",
            sslClientCertificateIssuerName=cert.issuer if cert else "",
            serverRouted=routed,
            serverStatus=server_status,
            timeTaken=round(time.perf_counter() - started, 4),
            transactionId=facts.trace_id,
            clientCertSubject=cert.subject if cert else "",
            timeStamp=_timestamp(),
            httpVersion=f"HTTP/{facts.http_version}",
            originalRequestUriWithArgs=facts.target,
            requestQuery=facts.target.partition("?")[2],
            userAgent=user_agent,
            host=original_host.rsplit(":", 1)[0],
            originalHost=original_host,
            backendSettingName=current.settings.name if current and current.settings else "",
            clientCertFailureExplained=decision.explanation if decision else "",
        )
        if ACCESS_LOGGER.isEnabledFor(logging.INFO):
            ACCESS_LOGGER.info(
                '%s %s:%s "%s %s HTTP/%s" %s verify=%s backend=%s %.1fms',
                record.listenerName,
                record.clientIP,
                record.clientPort,
                record.httpMethod,
                facts.target,
                facts.http_version,
                status,
                record.sslClientVerify,
                routed or "-",
                record.timeTaken * 1000,
            )
        self.on_access(record)


class _ConnectionFacts:
    """What every request of one connection shares, each computed once and only when needed.

    The ClientHello, the negotiated version and cipher do not change during a connection, so
    parsing the ClientHello for every keep-alive request (JA4, ``ciphers_supported``) would
    repeat the same work; ``ciphers_supported`` is only formatted when a rule reads it. The
    TCP round-trip time does change, so ``tcp_rtt_us`` asks the kernel at each read — which
    only happens when a rule uses ``client_tcp_rtt``. Implements
    :class:`emulator.core.server_variables.ConnectionFacts`.
    """

    __slots__ = (
        "_cipher_codes",
        "_ciphers",
        "_hello_done",
        "_ja4",
        "_listener",
        "_socket_stream",
        "_tls",
        "cipher",
        "tls_version",
    )

    def __init__(
        self, tls: TlsServerStream | None, stream: trio.abc.Stream, listener_name: str
    ) -> None:
        self._tls = tls
        self._socket_stream = tls.transport_stream if tls is not None else stream
        self._listener = listener_name
        self._hello_done = False
        self._ja4: str | None = None
        self._cipher_codes = b""
        self._ciphers: str | None = None
        self.tls_version = tls.tls_version if tls is not None else None
        self.cipher = tls.cipher if tls is not None else None

    def _take_client_hello(self) -> None:
        """Parse the ClientHello once and keep only what the variables need — the JA4 and the
        offered cipher codes (2 bytes each) — then let the stream drop the raw records: an
        idle connection should not hold the 0.5 to 2 KB it no longer needs."""
        if self._hello_done:
            return
        self._hello_done = True
        tls = self._tls
        if tls is None:
            return
        try:
            hello: ClientHello | None = parse_client_hello_records(tls.client_hello)
        except ClientHelloError as exc:
            LOGGER.debug("tls.client_hello_unparsed listener=%s reason=%s", self._listener, exc)
            hello = None
        tls.forget_client_hello()
        if hello is not None:
            self._ja4 = ja4_fingerprint(hello)
            codes = hello.cipher_suites
            self._cipher_codes = struct.pack(f">{len(codes)}H", *codes)

    @property
    def ja4(self) -> str | None:
        self._take_client_hello()
        return self._ja4

    @property
    def ciphers_supported(self) -> str:
        if self._ciphers is None:
            self._take_client_hello()
            codes = self._cipher_codes
            self._ciphers = (
                openssl_cipher_list(
                    struct.unpack(f">{len(codes) // 2}H", codes), _openssl_cipher_names()
                )
                if codes
                else ""
            )
        return self._ciphers

    @property
    def tcp_rtt_us(self) -> int | None:
        return tcp_rtt_us(self._socket_stream)


#: Client certificates whose server variables are kept computed. Clients reconnect with the
#: same certificate, and formatting the DNs and escaping the PEM costs ~70 µs per connection.
CERT_INFO_CACHE_SIZE: Final = 256


@functools.lru_cache(maxsize=CERT_INFO_CACHE_SIZE)
def _cert_info(leaf: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> ClientCertInfo:
    """:meth:`ClientCertInfo.from_certificates`, cached: certificates hash and compare by DER."""
    return ClientCertInfo.from_certificates(leaf, chain)


@functools.lru_cache(maxsize=2)
def _second_text(second: int) -> str:
    """``second`` (Unix time) as ISO 8601 UTC up to the seconds. Cached: a busy gateway stamps
    many records per second, and only their milliseconds differ."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _timestamp() -> str:
    """Now as the access record's ``timeStamp``: ISO 8601 UTC with milliseconds and ``Z``."""
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{_second_text(second)}.{nanoseconds // 1_000_000:03d}Z"


def _trace_id() -> str:
    """A fresh ``X-AppGW-Trace-Id``: 32 lowercase hex digits.

    It correlates a request's log lines and headers; it is not a secret, so the process's
    Mersenne Twister serves (no ``getrandom`` system call per request, as ``secrets`` makes).
    The ``random`` module reseeds itself in a forked child, so workers never share a sequence.
    """
    return f"{random.getrandbits(128):032x}"


@functools.cache
def _openssl_cipher_names() -> dict[int, str]:
    """Cipher suite code → OpenSSL name, for ``ciphers_supported`` (nginx ``$ssl_ciphers``).

    Read once from the local OpenSSL with every suite enabled; the two signalling values are
    added by hand because OpenSSL names them but lists them nowhere.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    except ssl.SSLError:
        LOGGER.debug("the local OpenSSL refuses 'ALL:COMPLEMENTOFALL'; using its defaults")
    # ``id`` is 0x0300XXXX: the protocol's 0x03 byte, then the 2-byte code.
    names = {int(c["id"]) & 0xFFFF: str(c["name"]) for c in ctx.get_ciphers()}
    names.setdefault(0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV")
    names.setdefault(0x5600, "TLS_FALLBACK_SCSV")
    return names


#: Statuses routing answers with itself (render_status_page has their reasons).
HTTP_NOT_FOUND: Final = 404
HTTP_INTERNAL_ERROR: Final = 500


def _may_reroute(current: Route) -> bool:
    """True when a rule of the route's rewrite set could send the request through the path map
    again (``reroute`` on a path-based rule); only then is the rewrite tried before proxying."""
    rule_set = current.rewrite_rule_set
    if rule_set is None or current.rule.url_path_map is None:
        return False
    return any(r.url is not None and r.url.reroute for r in rule_set.rules)


def _rerouted(current: Route, rewritten: RequestRewrite) -> bool:
    """True when a rule that fired rewrote the URL with ``reroute`` on a path-based rule."""
    rule_set = current.rewrite_rule_set
    if rule_set is None or current.rule.url_path_map is None or not rewritten.url_rewritten:
        return False
    fired = set(rewritten.fired)
    return any(r.url is not None and r.url.reroute and r.name in fired for r in rule_set.rules)


def _header_safe(text: str) -> str:
    """``text`` as a header value: Latin-1 only (escapes beyond), no control characters."""
    escaped = text.encode("latin-1", "backslashreplace").decode("latin-1")
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in escaped)


def _page_headers(length: int, *, close: bool) -> list[tuple[str, str]]:
    """The head of a gateway page whose rendered body is ``length`` bytes."""
    headers = [
        ("Server", SERVER_TOKEN),
        ("Content-Type", "text/html"),
        ("Content-Length", str(length)),
    ]
    if close:
        headers.append(("Connection", "close"))
    return headers


_FRAMING_HEADERS: Final = ("content-length", "transfer-encoding")


def _backend_headers(
    headers: list[tuple[str, str]], request: RequestHead, *, length: int | None = None
) -> tuple[list[tuple[str, str]], str | None]:
    """The rewritten headers as the backend gets them, and the Host among them (None: none).

    ``Expect`` is the gateway's business (it answers 100 itself). The body is framed as it
    will be sent — ``length`` for a buffered body, else the client's Content-Length, or
    ``Transfer-Encoding: chunked`` (it is re-chunked) — whatever a rewrite rule did to those
    two headers; in the usual case the list comes back as it was, after one pass.
    """
    host: str | None = None
    framing: list[tuple[str, str]] = []
    expect = False
    for name, value in headers:
        lower = name.lower()
        if lower == "host":
            if host is None:
                host = value
        elif lower in _FRAMING_HEADERS:
            framing.append((lower, value.lower()))
        elif lower == "expect":
            expect = True
    if length is not None:
        # A buffered body goes with its length, also one the client chunked (nginx does the
        # same with proxy_request_buffering on).
        wanted = [("content-length", str(length))]
    elif request.framing is Framing.LENGTH:
        wanted = [("content-length", str(request.length))]
    elif request.framing is Framing.CHUNKED:
        wanted = [("transfer-encoding", "chunked")]
    else:
        wanted = []
    if framing == wanted and not expect:
        return headers, host
    kept = [(k, v) for k, v in headers if k.lower() not in _BACKEND_DROPPED]
    return kept + [(k.title(), v) for k, v in wanted], host


#: Headers :func:`_backend_headers` rewrites.
_BACKEND_DROPPED: Final = frozenset({"expect", *_FRAMING_HEADERS})


def _client_framing(
    headers: list[tuple[str, str]], request: RequestHead, status: int
) -> tuple[list[tuple[str, str]], bool, bool]:
    """How a backend response goes to the client: (headers, chunk the body, close after).

    A body of known length keeps its Content-Length. One of unknown length (the backend
    chunked it, or ends it by closing) is chunked for an HTTP/1.1 client and ends with the
    connection for an HTTP/1.0 one. ``Connection: close`` is added whenever the connection
    ends after the response. 204 and 304 have no body whatever their headers say; the head
    of a HEAD response is framed as the GET response would be.
    """
    close = not request.keep_alive
    chunked = False
    if status not in _NO_BODY_STATUSES:
        has_length = has_encoding = False
        for name, _ in headers:
            lower = name.lower()
            if lower == "content-length":
                has_length = True
            elif lower == "transfer-encoding":
                has_encoding = True
        if has_encoding or not has_length:
            headers = [(k, v) for k, v in headers if k.lower() not in _FRAMING_HEADERS]
            if request.version == "1.1":
                headers.append(("Transfer-Encoding", "chunked"))
                chunked = request.method != "HEAD"
            elif request.method != "HEAD":
                close = True
    if close:
        headers = [(k, v) for k, v in headers if k.lower() != "connection"]
        headers.append(("Connection", "close"))
    return headers, chunked, close


async def serve_connection(
    stream: trio.SocketStream,
    runtime: ListenerRuntime,
    backend: BackendClient,
    on_access: Callable[[AccessRecord], None],
) -> None:
    """Serve one accepted TCP connection; closes it when done. Never raises for client faults."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        await trio.aclose_forcefully(stream)
        return
    conn = ClientConnection(runtime, stream, (str(peer[0]), int(peer[1])), backend, on_access)
    await conn.run()
