"""A Forward plan executed: the request to the backend, the response back to the client.

:class:`BackendExchange` is the backend half of :class:`emulator.runtime.proxy.ClientConnection`
(one per connection, used by one request at a time): it reads the request body through the
connection (buffered into a spool, or streamed), sends the request to the backend the plan
chose (:mod:`emulator.runtime.backend`), and relays the response through the connection's one
writer, framed by the connection's :class:`~emulator.core.http.connection.Http1Connection`.
Errors before the response started propagate to the connection, which answers them with a page;
after it, the connection is ended (nothing else is honest once a status line has gone out).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

import trio

from emulator.core.http.codec import (
    LAST_CHUNK,
    BodyReader,
    Framing,
    HttpError,
    RequestHead,
    ResponseHead,
    chunk,
    request_head_bytes,
)
from emulator.core.http.connection import HTTP_SWITCHING_PROTOCOLS
from emulator.core.http.error_info import UPSTREAM_CLOSED_CONNECTION, UPSTREAM_TIMED_OUT
from emulator.core.request.failures import ErrorAnswer, answer_for
from emulator.core.request.plan import Forward
from emulator.core.request.rewrite import RequestFacts, rewrite_response_headers
from emulator.core.request.routing import normalize_host
from emulator.errors import (
    BackendConnectError,
    BackendError,
    BackendTimeout,
    RequestBodyTimeout,
    RequestTooLarge,
)
from emulator.logsafe import escaped_logger
from emulator.model import ListenerProtocol
from emulator.runtime.backend import RETRY_METHODS, BackendConnection, receive_response_head
from emulator.runtime.probes import backend_tls
from emulator.runtime.spool import RequestBodySpool, ResponseSpool

if TYPE_CHECKING:
    from emulator.core.access import RequestMeter
    from emulator.model import Listener
    from emulator.runtime.backend import BackendClient
    from emulator.runtime.listener import PortRuntime

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "BackendExchange",
    "ClientGone",
]

LOGGER = escaped_logger("emulator.proxy")

RECEIVE_SIZE: Final = 65536
#: Size of the reads from a spill file.
SPILL_READ_SIZE: Final = 256 * 1024
#: nginx's access-log status for a request whose client closed the connection before the
#: response started (not sent on the wire; Azure's access log shows it too).
CLIENT_CLOSED_REQUEST: Final = 499


class ClientGone(Exception):
    """The client closed or broke the connection; nothing more can be sent to it."""


class ExchangeHttp(Protocol):
    """The client-side codec the exchange frames through: one HTTP/1.1 connection
    (:class:`~emulator.core.http.connection.Http1Connection`) or one HTTP/2 stream
    (:class:`emulator.runtime.h2_serve.StreamHttp`)."""

    close_after_response: bool
    responded: bool

    @property
    def request(self) -> RequestHead | None: ...
    @property
    def has_body(self) -> bool: ...
    @property
    def buffered(self) -> bool: ...
    @property
    def they_closed(self) -> bool: ...
    @property
    def will_close(self) -> bool: ...
    def backend_headers(
        self, headers: list[tuple[str, str]], *, length: int | None = None
    ) -> list[tuple[str, str]]: ...
    def response_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes: ...
    def switching_protocols(self, reason: str, headers: list[tuple[str, str]]) -> bytes: ...
    def body_bytes(self, data: bytes) -> bytes: ...
    def end_of_body(self) -> bytes: ...
    def take_buffered(self) -> bytes: ...


class ExchangeClient(Protocol):
    """What the exchange needs of the client side: an HTTP/1.1 connection
    (:class:`~emulator.runtime.proxy.ClientConnection`) or one HTTP/2 stream
    (:class:`emulator.runtime.h2_serve.H2Stream`)."""

    routed: str
    forwarded_to: str
    #: The current request's bytes, times and backend leg (its access record reads them).
    meter: RequestMeter

    @property
    def runtime(self) -> PortRuntime: ...
    @property
    def http(self) -> ExchangeHttp: ...
    @property
    def backend(self) -> BackendClient: ...
    @property
    def listener(self) -> Listener: ...
    @property
    def peer(self) -> tuple[str, int]: ...
    @property
    def stream(self) -> trio.abc.Stream: ...
    def record(
        self, facts: RequestFacts, status: int, started: float, *, routed: str, server_status: str
    ) -> None: ...
    async def read_body(self, idle_s: float, *, until: float = math.inf) -> bytes | None: ...
    async def send_continue(self) -> None: ...
    def queue(self, data: bytes) -> None: ...
    async def queue_body(self, data: bytes) -> None: ...
    async def flush(self, *, last: bool = False, stream: trio.abc.Stream | None = None) -> None: ...


def answer_request_error(client: ExchangeClient, exc: Exception) -> ErrorAnswer:
    """How ``client`` answers ``exc`` (:func:`answer_for` with what the request went through);
    the request's reason code is noted on its meter. For HTTP/1.1 and HTTP/2 alike."""
    answer = answer_for(
        exc,
        routed=client.routed,
        forwarded_to=client.forwarded_to,
        backend_reached=client.meter.backend_sent is not None,
        body_limit=client.runtime.limits.max_request_body_bytes,
    )
    if answer.error_info:
        client.meter.error_info = answer.error_info
    return answer


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"the request body is longer than {limit} bytes")


class BackendExchange:
    """The backend side of one client connection (see the module docstring)."""

    __slots__ = ("client",)

    def __init__(self, client: ExchangeClient) -> None:
        self.client = client

    async def forward(self, plan: Forward, head: RequestHead, started: float) -> None:
        """Forward the request to the plan's backend and its response back.

        With request buffering (``enableRequestBuffering``, the default) the whole body is
        read first, so no backend connection waits for a slow upload: nginx does the same
        (``proxy_request_buffering``) and so does Azure (proxy-buffers).

        Raises:
            HttpError, RequestTooLarge, RequestBodyTimeout: the request body is refused.
            BackendError: the backend failed before the response started.
        """
        runtime = self.client.runtime
        limits = runtime.limits
        if head.framing is Framing.LENGTH and head.length > limits.max_request_body_bytes:
            raise _too_large(limits.max_request_body_bytes)
        spool = None
        if self.client.http.has_body and head.upgrade is None and runtime.buffering.request:
            spool = RequestBodySpool(memory_limit=limits.request_body_memory_bytes)
        try:
            if spool is not None:
                await self._buffer_body(spool, plan.facts, started)
            await self._exchange(plan, head, spool, started)
        finally:
            if spool is not None:
                spool.aclose()

    async def _buffer_body(
        self, spool: RequestBodySpool, facts: RequestFacts, started: float
    ) -> None:
        """Read the whole request body into ``spool``."""
        await self.client.send_continue()
        limits = self.client.runtime.limits
        try:
            while (data := await self.client.read_body(limits.client_body_timeout_s)) is not None:
                if spool.length + len(data) > limits.max_request_body_bytes:
                    raise RequestTooLarge(
                        f"request body over {limits.max_request_body_bytes} bytes"
                    )
                await spool.append(data)
        except trio.TooSlowError as exc:
            # nginx answers a client_body_timeout with 408 when no response has started.
            raise RequestBodyTimeout(
                f"no body bytes for {limits.client_body_timeout_s:g} s"
            ) from exc
        except HttpError as exc:
            if not self.client.http.they_closed:
                raise  # broken framing: answered 400 (_answer_error)
            # The client closed inside its body: nobody is left to read a page.
            self.client.record(facts, CLIENT_CLOSED_REQUEST, started, routed="", server_status="")
            raise ClientGone from exc
        except ClientGone:
            self.client.record(facts, CLIENT_CLOSED_REQUEST, started, routed="", server_status="")
            raise
        if spool.spilled:
            LOGGER.debug(
                "http.request_body_spilled listener=%s client=%s:%s bytes=%s",
                self.client.listener.name,
                *self.client.peer,
                spool.length,
            )

    async def _exchange(
        self, plan: Forward, head: RequestHead, spool: RequestBodySpool | None, started: float
    ) -> None:
        """One request to the backend and its response to the client."""
        http = self.client.http
        settings = plan.route.settings
        assert settings is not None
        choice = plan.backend
        self.client.routed = routed = choice.text
        rewrite = plan.rewrite
        for header in rewrite.forgeable:
            LOGGER.warning(
                "rewrite.client_cert_header_forwarded listener=%s client=%s:%s header=%s: the "
                "client's own %s reached the backend, because the rule that fills it from the "
                "certificate did not fire (fix: an unconditional rule deleting it first, or "
                "--strip-client-cert-headers)",
                self.client.listener.name,
                *self.client.peer,
                header,
                header,
            )
        if rewrite.url_rewritten:
            LOGGER.debug(
                "rewrite.url listener=%s from=%s to=%s",
                self.client.listener.name,
                plan.facts.target,
                rewrite.target,
            )
        headers = http.backend_headers(
            plan.headers, length=spool.length if spool is not None else None
        )
        if head.upgrade is not None:
            # Hop-by-hop headers were dropped; an Upgrade request (WebSocket) carries them on.
            headers = [*headers, ("Connection", "Upgrade"), ("Upgrade", head.upgrade)]
        tls = None
        if settings.protocol is ListenerProtocol.HTTPS:
            tls = backend_tls(settings, normalize_host(plan.host) or choice.host)
        request_head = request_head_bytes(head.method, plan.target, headers)
        meter = self.client.meter
        # The access log's requestUri and host are the request after the rewrite.
        meter.request_uri = rewrite.target.partition("?")[0]
        meter.host = plan.host
        backend = await self.client.backend.acquire((choice.host, choice.port), tls=tls)
        meter.backend_tls = tls is not None
        meter.upstream_port = backend.local_port
        timeout_s = settings.request_timeout_s
        response: ResponseHead | None = None
        reusable = released = False

        def release(clean: bool) -> None:
            # Response buffering gives the connection back as soon as the backend is done,
            # while the client may still be reading; the finally below must not do it again.
            nonlocal released
            if not released:
                released = True
                self.client.backend.release(backend, reusable=clean)

        try:
            backend.start_request(
                request_head, repeatable=not http.has_body and head.method in RETRY_METHODS
            )
            meter.backend_sent = time.perf_counter()
            await self._send_request(backend, request_head, spool, timeout_s)
            response = await self._backend_response(backend, head, timeout_s)
            meter.backend_answered = time.perf_counter()
            if not backend.reused:
                # A stale pooled connection may have been replaced by a new one on the way.
                meter.upstream_port = backend.local_port
            out_headers = rewrite_response_headers(
                rewrite.facts, plan.rule_set, headers, response.headers, status=response.status
            )
            if response.status == HTTP_SWITCHING_PROTOCOLS:
                await self._tunnel(backend, response, out_headers, rewrite.target)
                self.client.record(plan.facts, 101, started, routed=routed, server_status="101")
                return
            for name, value in out_headers:
                if name.lower() == "content-type":
                    meter.content_type = value
                    break
            reusable = await self._relay_response(
                backend, response, [*out_headers, *choice.set_cookies], timeout_s, release
            )
        except BackendError as exc:
            if response is None or not http.responded:
                raise
            # The status line is out; the log says what the client was told.
            LOGGER.warning(
                "backend.error_midstream listener=%s backend=%s reason=%s",
                self.client.listener.name,
                routed,
                exc,
            )
            http.close_after_response = True
            meter.error_info = (
                UPSTREAM_TIMED_OUT
                if isinstance(exc, BackendTimeout)
                else UPSTREAM_CLOSED_CONNECTION
            )
            status = response.status
            self.client.record(
                plan.facts, status, started, routed=routed, server_status=str(status)
            )
            return
        except ClientGone:
            # nginx logs 499 when no response had started, else the status it was sending.
            started_response = response is not None and http.responded
            self.client.record(
                plan.facts,
                response.status
                if response is not None and started_response
                else CLIENT_CLOSED_REQUEST,
                started,
                routed=routed,
                server_status=str(response.status) if response is not None else "",
            )
            raise
        finally:
            release(reusable)
        status = response.status
        self.client.record(plan.facts, status, started, routed=routed, server_status=str(status))

    async def _send_request(
        self,
        backend: BackendConnection,
        head: bytes,
        spool: RequestBodySpool | None,
        timeout_s: int,
    ) -> None:
        """The request head, then its body, to the backend; each send must be taken within
        ``timeout_s`` (requestTimeout).

        A buffered body (``spool``) goes as it was read, framed by Content-Length. Otherwise
        the body streams (re-chunked when chunked): a body already received travels with the
        head in one send; an ``Expect: 100-continue`` client whose body has not come yet gets
        the gateway's own 100 first.

        Raises:
            RequestTooLarge: a streamed body went past ``max_request_body_bytes``.
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
        http = self.client.http
        if not http.has_body:
            self.client.forwarded_to = backend.addr_text
            await backend.send(head, deadline=trio.current_time() + timeout_s)
            return
        limits = self.client.runtime.limits
        request = http.request
        assert request is not None
        chunked = request.framing is Framing.CHUNKED
        pending = head
        seen = 0
        if not http.buffered:
            await self.client.send_continue()
            self.client.forwarded_to = backend.addr_text
            await backend.send(head, deadline=trio.current_time() + timeout_s)
            pending = b""
        while True:
            # A malformed body (HttpError) propagates: it is answered with 400.
            try:
                data = await self.client.read_body(limits.client_body_timeout_s)
            except trio.TooSlowError as exc:
                raise ClientGone from exc
            self.client.forwarded_to = backend.addr_text
            if data is None:
                if chunked:
                    pending += LAST_CHUNK
                if pending:
                    await backend.send(pending, deadline=trio.current_time() + timeout_s)
                return
            seen += len(data)
            if seen > limits.max_request_body_bytes:
                raise _too_large(limits.max_request_body_bytes)
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

    async def _relay_response(
        self,
        backend: BackendConnection,
        response: ResponseHead,
        headers: list[tuple[str, str]],
        timeout_s: int,
        release: Callable[[bool], None],
    ) -> bool:
        """Send the response head and the body to the client; True when the backend
        connection can be reused.

        Streamed (``enableResponseBuffering`` false): what is buffered is queued behind the
        head and sent whenever the backend has to be waited for, or the body ends. Buffered
        (the default): see :meth:`_relay_buffered`.
        """
        http = self.client.http
        self.client.queue(http.response_head(response.status, response.reason, headers))
        reader = BodyReader(response.framing, response.length)
        keep = response.keep_alive and response.framing is not Framing.CLOSE
        if reader.done or not self.client.runtime.buffering.response:
            reusable = await self._pull_body(
                backend, reader, timeout_s, self.client.queue_body, self.client.flush
            )
        elif response.framing is Framing.LENGTH and len(backend.buffer) >= response.length:
            # Buffered, and the whole body came with the head (the usual small response): the
            # backend is done already, so it goes back before the client is written to, and
            # no second task is needed to decouple the two.
            reusable = await self._pull_body(backend, reader, timeout_s, self._queue, None)
            release(reusable and keep)
        else:
            reusable = await self._relay_buffered(
                backend, reader, timeout_s, lambda clean: release(clean and keep)
            )
        await self.client.flush(last=http.will_close)
        return reusable and keep

    async def _queue(self, data: bytes) -> None:
        self.client.queue(data)

    async def _relay_buffered(
        self,
        backend: BackendConnection,
        reader: BodyReader,
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
        limits = self.client.runtime.limits
        spool = ResponseSpool(
            memory_limit=limits.response_buffer_memory_bytes,
            file_limit=limits.response_buffer_file_bytes,
        )
        failure: BackendError | ClientGone | None = None
        reusable = False
        try:
            async with trio.open_nursery() as nursery:

                async def to_client() -> None:
                    nonlocal failure
                    try:
                        if not spool.pending:
                            await self.client.flush()  # the head, while the body is awaited
                        while (data := await spool.get(SPILL_READ_SIZE)) is not None:
                            self.client.queue(data)
                            await self.client.flush()
                    except ClientGone as exc:
                        failure = exc
                        nursery.cancel_scope.cancel()

                nursery.start_soon(to_client)
                try:
                    reusable = await self._pull_body(backend, reader, timeout_s, spool.put, None)
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

    async def _pull_body(
        self,
        backend: BackendConnection,
        reader: BodyReader,
        timeout_s: int,
        put: Callable[[bytes], Awaitable[None]],
        before_wait: Callable[[], Awaitable[None]] | None,
    ) -> bool:
        """Decode the response body from the backend and hand it to ``put`` as it goes on
        the wire; ``before_wait`` runs before each wait for the backend. Returns whether
        nothing followed the body (the connection may carry another request).

        Raises:
            BackendConnectError: the body's framing is broken.
            BackendTimeout: nothing for ``timeout_s`` (requestTimeout; per read, as nginx's
                ``proxy_read_timeout``: a backend is trusted not to trickle).
        """
        http = self.client.http
        while (data := backend.body_bytes(reader)) is not None:
            if data:
                await put(http.body_bytes(data))
                continue
            if before_wait is not None:
                await before_wait()
            try:
                await backend.fill(trio.current_time() + timeout_s)
            except trio.TooSlowError as exc:
                raise BackendTimeout(f"backend {backend.addr_text} stalled mid-response") from exc
        end = http.end_of_body()
        if end:
            await put(end)
        return backend.clean

    async def _tunnel(
        self,
        backend: BackendConnection,
        response: ResponseHead,
        headers: list[tuple[str, str]],
        target: str,
    ) -> None:
        """101 from the backend: tell the client, then copy bytes both ways until one side
        ends. App Gateway passes WebSocket (and other Upgrade) connections through; after the
        101 the bytes are the two ends' business."""
        headers = [*headers, ("Connection", "Upgrade")]
        upgrade = next((v for k, v in response.headers if k.lower() == "upgrade"), None)
        if upgrade is not None:
            headers.append(("Upgrade", upgrade))
        self.client.queue(self.client.http.switching_protocols(response.reason, headers))
        await self.client.flush()
        client_rest = self.client.http.take_buffered()
        backend_rest = backend.take_buffered()
        LOGGER.info(
            "http.upgraded listener=%s client=%s:%s backend=%s target=%s",
            self.client.listener.name,
            *self.client.peer,
            backend.addr_text,
            target,
        )
        stream = self.client.stream
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
