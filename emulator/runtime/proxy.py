"""One client connection, end to end: TLS handshake, the SSL profile's decision, HTTP proxying.

The sequence for an HTTPS listener:

1. TLS handshake over the accepted socket (:mod:`emulator.runtime.tls_stream`), bounded by
   ``HANDSHAKE_TIMEOUT_S``. Plain HTTP on the port gets nginx's 400 page in plain text.
2. :func:`emulator.core.tls_policy.assess_handshake` turns what the client presented into a
   decision, once per connection (client certificates are per connection, not per request).
   With ``verifyClientRevocation: OCSP`` the decision stays pending until the OCSP checker has
   answered (cache or responder), which happens here, before the first request is routed: the
   handshake's verify callback cannot do I/O.
3. An h11 server loop serves requests. A Strict failure answers every request with the gateway's
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
import random
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import h11
import trio
from cryptography import x509
from OpenSSL import SSL

from emulator.core.certinfo import ClientCertInfo
from emulator.core.ja4 import ClientHello, ClientHelloError, parse_client_hello_records
from emulator.core.ja4 import ja4 as ja4_fingerprint
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
)
from emulator.errors import BackendConnectError, BackendError, BackendTimeout
from emulator.model import (
    BackendAddress,
    BackendPool,
    BackendSettings,
    ClientAuthMode,
    Listener,
    ListenerProtocol,
    RedirectConfig,
    RoutingRule,
)
from emulator.runtime.backend import BackendClient, BackendConnection
from emulator.runtime.ocsp_client import OcspChecker
from emulator.runtime.probes import HealthTable, backend_tls
from emulator.runtime.tls_stream import PlainHttpOnTlsPort, TlsHandshakeError, TlsServerStream

__all__ = ["AccessRecord", "ListenerRuntime", "serve_connection"]

LOGGER = logging.getLogger("emulator.proxy")
ACCESS_LOGGER = logging.getLogger("emulator.access")

#: A client that has not finished its TLS handshake by then is dropped (nginx and hypercorn use
#: similar values; Azure does not document one).
HANDSHAKE_TIMEOUT_S: Final = 10.0
#: No request line and headers within this → 408 (appgw-behaviour.md §7: "no request within 60 s").
REQUEST_HEADER_TIMEOUT_S: Final = 60.0
#: An idle keep-alive connection is closed silently after this long.
KEEPALIVE_IDLE_S: Final = 120.0
#: Maximum request line + headers: 32 KB (Azure application gateway limits).
MAX_REQUEST_HEADER_BYTES: Final = 32 * 1024
#: Header fields per request; one more → 431. Differs from Azure: it documents no count (nginx
#: is bounded only by the 32 KB); 1,000 is far above what clients send (browsers send ~20) and
#: bounds the per-request work of rewrites and routing.
MAX_REQUEST_HEADER_FIELDS: Final = 1000
#: Lingering close after a gateway-generated 400: read and discard for at most this long,
#: stopping after ``LINGER_IDLE_S`` of silence (nginx lingering_close, shortened).
LINGER_TOTAL_S: Final = 2.0
LINGER_IDLE_S: Final = 0.5
RECEIVE_SIZE: Final = 65536
#: A request the gateway answers itself (redirect, 404, 421) keeps its connection when its body
#: is at most this long: it is read and dropped; a longer one closes the connection instead.
DISCARD_BODY_LIMIT: Final = 64 * 1024
#: The port a Host header leaves out (RFC 9110 section 7.2: the scheme's default).
DEFAULT_HTTP_PORT: Final = 80
#: nginx's access-log status for a request whose client closed the connection before the
#: response started (not sent on the wire; Azure's access log shows it too).
CLIENT_CLOSED_REQUEST: Final = 499
#: ``--explain`` only (off by default, so responses stay byte-identical to Azure's): the
#: response header that carries why a Strict client certificate was rejected.
EXPLAIN_HEADER: Final = "X-AppGW-Emulator-Client-Cert-Explained"
#: The blank line that ends a request head (h11 also accepts bare LF line endings).
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")


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


@dataclass
class ClientConnection:
    """State of one accepted connection (mutable: it lives exactly as long as the connection)."""

    runtime: ListenerRuntime
    stream: trio.abc.Stream
    peer: tuple[str, int]
    backend: BackendClient
    on_access: Callable[[AccessRecord], None]
    tls: TlsServerStream | None = None
    cert: ClientCertInfo | None = None
    decision: CertDecision | None = None
    #: The rule whose listener the handshake selected by SNI (HTTPS ports only).
    tls_rule: RoutingRule | None = None
    #: The rule (listener) and route of the request being served, for logs and access records.
    current_rule: RoutingRule | None = None
    current: Route | None = None
    h11conn: h11.Connection = field(
        default_factory=lambda: h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEADER_BYTES
        )
    )
    #: Facts of the connection that every request shares, computed at first use.
    _connection_facts: _ConnectionFacts | None = None
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

    async def _next_event(self, idle_s: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            if self.h11conn.their_state is h11.IDLE:
                self._check_head()
            event = self.h11conn.next_event()
            # Two tests rather than `is not NEED_DATA`, so the sentinel types narrow for mypy.
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return h11.PAUSED
            try:
                data = await self._receive(idle_s)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _ClientGone from exc
            if self._head_too_large(data):
                raise h11.RemoteProtocolError(
                    f"request line and headers exceed {MAX_REQUEST_HEADER_BYTES} bytes",
                    error_status_hint=431,
                )
            self.h11conn.receive_data(bytes(data))

    async def _receive(self, idle_s: float) -> bytes:
        """The client's next bytes, waiting at most ``idle_s``.

        Raises:
            trio.TooSlowError: nothing came in time.
        """
        tls = self.tls
        if tls is not None and self.stream is tls:
            # The TLS stream only starts a timer when it has to wait (most reads under load
            # find the request already there); a cancel scope per read costs ~5 µs.
            return await tls.receive_some(RECEIVE_SIZE, deadline=trio.current_time() + idle_s)
        with trio.fail_after(idle_s):
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))

    def _check_head(self) -> None:
        """Refuse a buffered request head that h11 would accept but a backend might read
        differently (issue #10): checked on the raw bytes, before h11 normalises them.

        Raises:
            h11.RemoteProtocolError: with the status (400 or 431) in ``error_status_hint``.
        """
        pending = self.h11conn.trailing_data[0]
        head_end = _HEAD_END.search(pending) if pending else None
        if head_end is None:
            return  # incomplete: the size limit covers it until it completes
        problem = _head_problem(pending[: head_end.end()])
        if problem is not None:
            reason, status = problem
            raise h11.RemoteProtocolError(reason, error_status_hint=status)

    def _head_too_large(self, data: bytes | bytearray) -> bool:
        """True when a request head being read, with ``data`` added, ends past the size limit.

        h11's ``max_incomplete_event_size`` only fires while the head is still incomplete when
        it is checked: a head that completes in the same read that takes it past the limit (a
        40 KB head arriving as 16 KB TLS records: 16, 32, 40) would be accepted. So the limit is
        checked here, on the head itself, before h11 sees the bytes.
        """
        if self.h11conn.their_state is not h11.IDLE:
            return False
        pending, _closed = self.h11conn.trailing_data
        if len(pending) + len(data) <= MAX_REQUEST_HEADER_BYTES:
            return False
        head_end = _HEAD_END.search(pending + data)
        return head_end is None or head_end.end() > MAX_REQUEST_HEADER_BYTES

    def _queue(self, event: h11.Event) -> None:
        """Serialise ``event`` for the client; the bytes go out with the next :meth:`_flush`.

        A response's head, its body and its end usually travel in one TLS record and one
        system call this way, instead of one of each per event.
        """
        data = self.h11conn.send(event)
        if data:
            self._outgoing.append(data)
            self._outgoing_bytes += len(data)

    async def _flush(self) -> None:
        """Send what :meth:`_queue` collected (nothing to do when it is empty)."""
        if not self._outgoing:
            return
        outgoing = self._outgoing
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        self._outgoing = []
        self._outgoing_bytes = 0
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone from exc

    async def _send(self, event: h11.Event) -> None:
        self._queue(event)
        await self._flush()

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
            await self._serve_requests()
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
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self.stream.aclose()

    async def _internal_error_page(self) -> None:
        if self.h11conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self._send_page(GatewayPage.INTERNAL_ERROR, close=True)
        except (_ClientGone, h11.LocalProtocolError) as exc:
            LOGGER.debug("the 500 page could not be sent: %s", exc)

    async def _handshake(self) -> bool:
        assert self.runtime.ssl_context is not None
        log = VerifyLog()
        tls = TlsServerStream(self.stream, self.runtime.ssl_context, app_data=log)
        self.stream = tls
        self.tls = tls
        name = self.runtime.listener.name
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
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
        except trio.TooSlowError:
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
        transport = tls.transport_stream
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        body = render_page(GatewayPage.PLAIN_HTTP_TO_HTTPS)
        data = conn.send(
            _page_response(GatewayPage.PLAIN_HTTP_TO_HTTPS, close=True, length=len(body))
        )
        data = (
            (data or b"")
            + (conn.send(h11.Data(data=body)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )
        try:
            await transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            LOGGER.debug("client.gone before the plain-HTTP 400 was sent")

    async def _serve_requests(self) -> None:
        first = True
        while True:
            try:
                event = await self._next_event(
                    KEEPALIVE_IDLE_S if not first else REQUEST_HEADER_TIMEOUT_S
                )
            except trio.TooSlowError:
                if first or self.h11conn.their_state is not h11.IDLE:
                    await self._send_page(GatewayPage.REQUEST_TIMEOUT, close=True)
                return
            except h11.RemoteProtocolError as exc:
                LOGGER.info(
                    "http.bad_request listener=%s client=%s:%s reason=%s",
                    self.listener.name,
                    *self.peer,
                    exc,
                )
                if self.h11conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status_page = (
                        GatewayPage.HEADERS_TOO_LARGE
                        if exc.error_status_hint == 431
                        else GatewayPage.BAD_REQUEST
                    )
                    await self._send_page(status_page, close=True)
                    # The client may still be sending the rest of a too-large head; closing
                    # with its bytes unread would reset the connection and lose our answer.
                    await self._linger()
                return
            first = False
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            keep_going = await self._handle_request(event)
            if not keep_going or self.h11conn.our_state is h11.MUST_CLOSE:
                return
            try:
                self.h11conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _handle_request(self, request: h11.Request) -> bool:
        started = time.perf_counter()
        decision = self.decision
        assert decision is not None
        facts = self._facts(request, decision)
        host = normalize_host(facts.header("host") or _target_authority(facts.target))
        rule = select_rule(self.runtime.rules, host)
        self.current_rule = rule
        self.current = None
        if _ambiguous_framing(request):
            # Content-Length beside Transfer-Encoding is the request-smuggling shape: h11 goes
            # by Transfer-Encoding, but forwarding both lets a backend frame by the other.
            # nginx (since 1.21.1), and so the gateway, answers 400 before anything else.
            LOGGER.info(
                "http.bad_request listener=%s client=%s:%s reason=%s",
                self.listener.name,
                *self.peer,
                "both Content-Length and Transfer-Encoding",
            )
            return await self._refuse(GatewayPage.BAD_REQUEST, facts, started)
        if request.method == b"CONNECT":
            # A tunnel request: the gateway is no forward proxy, and forwarded, a backend's 2xx
            # would switch h11 to tunnel mode mid-proxy. Differs from Azure: nginx answers 405,
            # a status the gateway has no page for.
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
            return await self._status_page(HTTP_MISDIRECTED, facts, started)
        if tls_rule is not None and tls_rule.listener.name != rule.listener.name:
            # Routed by Host to a listener that does not authenticate clients: the handshake's
            # profile does not apply to it.
            decision = decide_client_cert(None, presented=self.cert is not None, log=None)
            facts = replace(facts, verification=decision.verification)
        if not decision.allowed and decision.page is not None:
            return await self._refuse(decision.page, facts, started)
        return await self._route(request, rule, facts, started)

    async def _refuse(self, page: GatewayPage, facts: RequestFacts, started: float) -> bool:
        """A gateway 400 before routing: the page, ``Connection: close``, a lingering close."""
        await self._send_page(page, close=True, extra_headers=self._explain_headers(page))
        self._access(facts, page.status, started, routed="", server_status="")
        await self._linger()
        return False

    async def _status_page(
        self,
        status: int,
        facts: RequestFacts,
        started: float,
        *,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """A page routing produces (redirect, 404, 421, 500); keeps the connection when it can."""
        reason, body = render_status_page(status)
        close = not await self._discard_body()
        headers = [
            ("Server", SERVER_TOKEN),
            ("Content-Type", "text/html"),
            ("Content-Length", str(len(body))),
            *(extra_headers or []),
        ]
        if close:
            headers.append(("Connection", "close"))
        self._queue(h11.Response(status_code=status, headers=_encode(headers), reason=reason))
        self._queue(h11.Data(data=body))
        await self._send(h11.EndOfMessage())
        self._access(facts, status, started, routed="", server_status="")
        return not close

    async def _discard_body(self) -> bool:
        """Read and drop a request body the gateway answers without forwarding.

        True when the whole body was read, so the connection can serve the next request; a
        body over ``DISCARD_BODY_LIMIT`` or one that stalls is not waited for (close instead).
        """
        seen = 0
        try:
            while self.h11conn.their_state is h11.SEND_BODY:
                event = await self._next_event(LINGER_TOTAL_S)
                if isinstance(event, h11.Data):
                    seen += len(event.data)
                    if seen > DISCARD_BODY_LIMIT:
                        return False
                elif not isinstance(event, h11.EndOfMessage):
                    return False
        except (trio.TooSlowError, h11.RemoteProtocolError):
            return False
        return self.h11conn.their_state is h11.DONE

    async def _route(
        self, request: h11.Request, rule: RoutingRule, facts: RequestFacts, started: float
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
            request_host=facts.header("host") or _target_authority(facts.target),
            target_port=target_port,
            path=urlsplit(raw_path).path if "://" in raw_path else raw_path,
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
        self, request: h11.Request, facts: RequestFacts, started: float, current: Route
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
        target = backend_target(rewritten.target, settings, current.matched_pattern)
        headers = [(k, v) for k, v in rewritten.headers if k.lower() != "expect"]
        routed = f"{address[0]}:{address[1]}"
        if not any(k.lower() == "host" for k, _ in headers):
            # An HTTP/1.0 client may omit Host, but the backend request is HTTP/1.1, which
            # requires one: name the backend, as nginx's default ``Host $proxy_host`` does.
            headers.insert(0, ("Host", routed if address[1] != DEFAULT_HTTP_PORT else address[0]))
        upgrade = _upgrade_token(request)
        if upgrade is not None:
            # Hop-by-hop headers were dropped; an Upgrade request (WebSocket) carries them on.
            headers += [("Connection", "Upgrade"), ("Upgrade", upgrade)]
        tls = None
        if settings.protocol is ListenerProtocol.HTTPS:
            sent_host = next((v for k, v in headers if k.lower() == "host"), address[0])
            tls = backend_tls(settings, normalize_host(sent_host) or address[0])
        response: h11.Response | h11.InformationalResponse | None = None
        response_started = False
        try:
            async with self.backend.connection(address, tls=tls) as backend:
                await backend.send(
                    h11.Request(
                        method=request.method,
                        target=target.encode("latin-1"),
                        headers=_encode(headers),
                    )
                )
                await self._forward_request_body(backend)
                response = await self._backend_response(backend, settings.request_timeout_s)
                out_headers = rewrite_response_headers(
                    rewritten.facts,
                    current.rewrite_rule_set,
                    headers,
                    [
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in response.headers.raw_items()
                    ],
                    status=response.status_code,
                )
                if isinstance(response, h11.InformationalResponse):
                    response_started = True
                    await self._switch_protocols(backend, response, out_headers, rewritten)
                    self._access(facts, 101, started, routed=routed, server_status="101")
                    return False
                response_started = True
                # Queued: it goes out with the first body bytes (see _backend_event).
                self._queue(
                    h11.Response(
                        status_code=response.status_code,
                        headers=_encode(out_headers + cookies),
                        reason=response.reason,
                    )
                )
                await self._forward_response_body(backend, settings.request_timeout_s)
        except BackendError as exc:
            if response is not None and response_started:
                LOGGER.warning(
                    "backend.error_midstream listener=%s backend=%s reason=%s",
                    self.listener.name,
                    routed,
                    exc,
                )
                # The status line is out; the log says what the client was told.
                status = response.status_code
                self._access(facts, status, started, routed=routed, server_status=str(status))
                return False
            return await self._fail(exc, facts, started, routed=routed)
        except _ClientGone:
            # Every request gets an access record, also one whose client left: nginx logs 499
            # when no response had started, else the status it was sending.
            self._access(
                facts,
                response.status_code
                if response is not None and response_started
                else CLIENT_CLOSED_REQUEST,
                started,
                routed=routed,
                server_status=str(response.status_code) if response is not None else "",
            )
            raise
        self._access(
            facts,
            response.status_code,
            started,
            routed=routed,
            server_status=str(response.status_code),
        )
        return True

    async def _switch_protocols(
        self,
        backend: BackendConnection,
        response: h11.InformationalResponse,
        headers: list[tuple[str, str]],
        rewritten: RequestRewrite,
    ) -> None:
        """101 from the backend: tell the client, then copy bytes both ways until one side ends.

        App Gateway passes WebSocket (and other Upgrade) connections through; after the 101 the
        bytes are the two ends' business, so both h11 state machines step aside.
        """
        upgrade = response.headers
        names = {k.lower(): v for k, v in upgrade.raw_items()}
        headers = [*headers, ("Connection", "Upgrade")]
        if b"upgrade" in names:
            headers.append(("Upgrade", names[b"upgrade"].decode("latin-1")))
        await self._send(
            h11.InformationalResponse(status_code=101, headers=_encode(headers), reason=b"")
        )
        client_rest = self.h11conn.trailing_data[0]
        backend_rest = backend.conn.trailing_data[0]
        LOGGER.info(
            "http.upgraded listener=%s client=%s:%s backend=%s target=%s",
            self.listener.name,
            *self.peer,
            backend.addr_text,
            rewritten.target,
        )
        async with trio.open_nursery() as nursery:

            async def pump(
                source: trio.abc.ReceiveStream, sink: trio.abc.SendStream, first: bytes
            ) -> None:
                try:
                    if first:
                        await sink.send_all(first)
                    while data := await source.receive_some(RECEIVE_SIZE):
                        await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, self.stream, backend.stream, client_rest)
            nursery.start_soon(pump, backend.stream, self.stream, backend_rest)

    def _facts(self, request: h11.Request, decision: CertDecision) -> RequestFacts:
        connection = self._connection_facts
        if connection is None:
            connection = self._connection_facts = _ConnectionFacts(
                self.tls, self.stream, self.runtime.listener.name
            )
        tls = self.tls
        return RequestFacts(
            client_ip=self.peer[0],
            client_port=self.peer[1],
            server_port=self.runtime.port,
            scheme="https" if tls is not None else "http",
            method=request.method.decode("ascii"),
            target=request.target.decode("latin-1"),
            http_version=request.http_version.decode("ascii"),
            headers=[
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw_items()
            ],
            trace_id=_trace_id(),
            tls_version=connection.tls_version,
            cipher=connection.cipher,
            certificate=self.cert,
            verification=decision.verification,
            # X-Azure-JA4-Fingerprint comes with the 2022 policies, which are also the ones that
            # offer TLS 1.3 (CustomV2 too: the docs are silent, it is the same family).
            ja4=connection.ja4 if self.listener.ssl_policy.tls13 else None,
            connection=connection,
        )

    async def _forward_request_body(self, backend: BackendConnection) -> None:
        if self.h11conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            try:
                event = await self._next_event(REQUEST_HEADER_TIMEOUT_S)
            except trio.TooSlowError as exc:
                raise _ClientGone from exc
            except h11.RemoteProtocolError as exc:
                raise _ClientGone from exc
            if isinstance(event, h11.Data):
                await backend.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await backend.send(h11.EndOfMessage())
                return
            else:
                raise _ClientGone

    async def _backend_event(
        self, backend: BackendConnection, deadline: float
    ) -> h11.Event | type[h11.PAUSED]:
        """The backend's next event: at once when h11 already holds its bytes; otherwise the
        client's queued bytes go out first (a streamed body must not wait in our buffer) and
        the backend has until ``deadline`` (trio's clock) to send more.

        Raises:
            trio.TooSlowError: nothing by ``deadline``.
            BackendConnectError: the backend broke the protocol or the connection.
        """
        pending, closed = backend.conn.trailing_data
        if not pending and not closed and backend.conn.their_state is h11.SEND_RESPONSE:
            # A response head needs bytes, and none are buffered: skip asking h11 twice.
            await self._flush()
            with trio.fail_at(deadline):
                return await backend.next_event()
        try:
            event = backend.conn.next_event()
        except h11.RemoteProtocolError as exc:
            await self._flush()
            raise BackendConnectError(
                f"backend {backend.addr_text} sent an invalid HTTP response: {exc}"
            ) from exc
        if isinstance(event, h11.Event) and not isinstance(event, h11.ConnectionClosed):
            return event
        # NEED_DATA, PAUSED or ConnectionClosed: BackendConnection.next_event reads (or
        # reports) those itself.
        await self._flush()
        with trio.fail_at(deadline):
            return await backend.next_event()

    async def _backend_response(
        self, backend: BackendConnection, timeout_s: int
    ) -> h11.Response | h11.InformationalResponse:
        """The backend's final response; or its 101 when the request asked for an upgrade."""
        deadline = trio.current_time() + timeout_s
        try:
            while True:
                event = await self._backend_event(backend, deadline)
                if isinstance(event, h11.Response):
                    return event
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    return event
                if not isinstance(event, h11.InformationalResponse):
                    raise BackendTimeout(
                        f"backend {backend.addr_text} sent {event!r} instead of a response"
                    )
        except trio.TooSlowError as exc:
            raise BackendTimeout(
                f"backend {backend.addr_text} did not answer within requestTimeout ({timeout_s} s)"
            ) from exc

    async def _forward_response_body(self, backend: BackendConnection, timeout_s: int) -> None:
        """Copy the body to the client: what is already buffered is queued behind the head,
        and sent whenever the backend has to be waited for, or the body ends."""
        while True:
            try:
                event = await self._backend_event(backend, trio.current_time() + timeout_s)
            except trio.TooSlowError as exc:
                raise BackendTimeout(f"backend {backend.addr_text} stalled mid-response") from exc
            if isinstance(event, h11.Data):
                self._queue(h11.Data(data=event.data))
                if self._outgoing_bytes >= RECEIVE_SIZE:
                    await self._flush()
            elif isinstance(event, h11.EndOfMessage):
                await self._send(h11.EndOfMessage())
                return

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
        close = self.h11conn.their_state is not h11.DONE
        await self._send_page(page, close=close)
        self._access(facts, page.status, started, routed=routed, server_status="")
        return not close

    async def _send_page(
        self, page: GatewayPage, *, close: bool, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = render_page(page)
        response = _page_response(page, close=close, length=len(body))
        if extra_headers:
            response = h11.Response(
                status_code=response.status_code,
                headers=[*response.headers.raw_items(), *_encode(extra_headers)],
                reason=response.reason,
            )
        self._queue(response)
        self._queue(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _linger(self) -> None:
        """Read and drop what the client still sends, so it reads our 400 rather than a reset."""
        with trio.move_on_after(LINGER_TOTAL_S):
            while True:
                with trio.move_on_after(LINGER_IDLE_S) as idle:
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
        "_ciphers",
        "_ja4",
        "_ja4_done",
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
        self._ja4: str | None = None
        self._ja4_done = False
        self._ciphers: str | None = None
        self.tls_version = tls.tls_version if tls is not None else None
        self.cipher = tls.cipher if tls is not None else None

    def _client_hello(self) -> ClientHello | None:
        """The parsed ClientHello; not kept (an idle connection holds only the results)."""
        if self._tls is None:
            return None
        try:
            return parse_client_hello_records(self._tls.client_hello)
        except ClientHelloError as exc:
            LOGGER.debug("tls.client_hello_unparsed listener=%s reason=%s", self._listener, exc)
            return None

    @property
    def ja4(self) -> str | None:
        if not self._ja4_done:
            self._ja4_done = True
            hello = self._client_hello()
            self._ja4 = ja4_fingerprint(hello) if hello is not None else None
        return self._ja4

    @property
    def ciphers_supported(self) -> str:
        if self._ciphers is None:
            hello = self._client_hello()
            self._ciphers = (
                openssl_cipher_list(hello.cipher_suites, _openssl_cipher_names())
                if hello is not None
                else ""
            )
        return self._ciphers

    @property
    def tcp_rtt_us(self) -> int | None:
        return _tcp_rtt_us(self._socket_stream)


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
    now = time.time()
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1000):03d}Z"


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


#: ``struct tcp_info`` (linux/tcp.h): 8 one-byte fields, then 32-bit fields; ``tcpi_rtt`` (µs)
#: is the 16th of those.
_TCPI_RTT_OFFSET: Final = 8 + 15 * 4
_TCP_INFO_SIZE: Final = 104


def _tcp_rtt_us(stream: trio.abc.Stream) -> int | None:
    """The kernel's smoothed RTT of the client connection (``client_tcp_rtt``), Linux only."""
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


#: Statuses routing answers with itself (render_status_page has their reasons).
HTTP_NOT_FOUND: Final = 404
HTTP_MISDIRECTED: Final = 421
HTTP_INTERNAL_ERROR: Final = 500


def _target_authority(target: str) -> str:
    """The host of an absolute-form request target (``GET http://host/path``), else ''."""
    return urlsplit(target).netloc if "://" in target.split("?", 1)[0] else ""


def _rerouted(current: Route, rewritten: RequestRewrite) -> bool:
    """True when a rule that fired rewrote the URL with ``reroute`` on a path-based rule."""
    rule_set = current.rewrite_rule_set
    if rule_set is None or current.rule.url_path_map is None or not rewritten.url_rewritten:
        return False
    fired = set(rewritten.fired)
    return any(r.url is not None and r.url.reroute and r.name in fired for r in rule_set.rules)


def _upgrade_token(request: h11.Request) -> str | None:
    """The ``Upgrade`` value of a request that asks to switch protocols, else None."""
    names = {k.lower(): v for k, v in request.headers.raw_items()}
    connection = names.get(b"connection", b"").lower()
    upgrade = names.get(b"upgrade")
    if upgrade is None or b"upgrade" not in connection:
        return None
    return upgrade.decode("latin-1")


def _header_safe(text: str) -> str:
    """``text`` as a header value: Latin-1 only (escapes beyond), no control characters."""
    escaped = text.encode("latin-1", "backslashreplace").decode("latin-1")
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in escaped)


def _head_problem(head: bytes) -> tuple[str, int] | None:
    """Why a complete request head (through its blank line) is refused, with the status.

    h11 is lenient where RFC 9112 allows it to be, and these are the leniencies a smuggling
    attack relies on: obsolete line folding (section 5.2), bare LF line ends (section 2.2;
    nginx accepts them, the emulator does not), Content-Length given twice or as a list
    (section 6.3: h11 merges equal values; nginx refuses a duplicate line). Also the count of
    header fields (``MAX_REQUEST_HEADER_FIELDS``, 431).
    """
    lines = head.split(b"\n")[:-1]  # the split after the final LF leaves an empty item
    content_lengths = 0
    for index, line in enumerate(lines):
        if not line.endswith(b"\r"):
            return "bare LF line ending in the request head", 400
        if index == 0 or line == b"\r":
            continue
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding in the request head", 400
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            content_lengths += 1
            if content_lengths > 1 or b"," in value:
                return "Content-Length given more than once", 400
    if len(lines) - 2 > MAX_REQUEST_HEADER_FIELDS:  # minus the request line and the blank line
        return f"more than {MAX_REQUEST_HEADER_FIELDS} header fields", 431
    return None


def _ambiguous_framing(request: h11.Request) -> bool:
    # raw_items is a plain list; iterating h11's Headers goes through Sequence.__getitem__.
    names = {name.lower() for name, _ in request.headers.raw_items()}
    return b"content-length" in names and b"transfer-encoding" in names


def _page_response(page: GatewayPage, *, close: bool, length: int) -> h11.Response:
    """The head of a gateway page whose rendered body is ``length`` bytes."""
    headers = [
        ("Server", SERVER_TOKEN),
        ("Content-Type", "text/html"),
        ("Content-Length", str(length)),
    ]
    if close:
        headers.append(("Connection", "close"))
    return h11.Response(status_code=page.status, headers=_encode(headers), reason=page.reason)


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


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
