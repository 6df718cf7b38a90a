"""One client's HTTP/1.1 connection as a state machine, in the spirit of h11's ``Connection``.

The proxy feeds it the bytes it receives (:meth:`Http1Connection.receive_data`) and asks for
the next event: a request head (:meth:`~Http1Connection.next_request`), then that request's
body bytes (:meth:`~Http1Connection.next_body`), each of which may instead be
:attr:`Http1Event.NEED_DATA` (receive more, then ask again) or :attr:`Http1Event.CLOSED` (the
client closed). Responses go the other way: the connection turns a status and headers into
the bytes to send, with the framing applied (``Content-Length`` or chunked, ``Connection:
close`` whenever the connection ends after the response), and says afterwards whether it
can carry the next request (:attr:`~Http1Connection.keep_alive`). It does no I/O and keeps
no clock; the codec itself is :mod:`emulator.core.http.codec`.

One request at a time: the next head is parsed only after the previous response, so
pipelined requests wait in the buffer (as h11 and nginx serve them).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from emulator.core.http.codec import (
    LAST_CHUNK,
    BodyReader,
    Framing,
    HttpError,
    RequestHead,
    chunk,
    parse_request_head,
    response_head_bytes,
)
from emulator.core.http.pages import page_headers

__all__ = ["CONTINUE", "HTTP_SWITCHING_PROTOCOLS", "Http1Connection", "Http1Event"]

#: The gateway's own interim answer to ``Expect: 100-continue`` (nginx's wording).
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
HTTP_SWITCHING_PROTOCOLS: Final = 101
#: How much of a refused request head's first line is looked at for the access record.
MAX_LOGGED_REQUEST_LINE: Final = 8 * 1024
#: Statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5).
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_FRAMING_HEADERS: Final = ("content-length", "transfer-encoding")
_KEEP_ALIVE: Final = ("Connection", "keep-alive")
#: Headers :meth:`Http1Connection.backend_headers` rewrites.
_BACKEND_DROPPED: Final = frozenset({"expect", *_FRAMING_HEADERS})


class Http1Event(enum.Enum):
    """What :meth:`Http1Connection.next_request` and :meth:`~Http1Connection.next_body` say
    when they have no head or body bytes to give."""

    #: More bytes from the client are needed.
    NEED_DATA = "need data"
    #: The whole request body has been read.
    END_OF_BODY = "end of body"
    #: The client closed its side: between requests a normal end, inside a body a client that
    #: left (nginx logs 499).
    CLOSED = "closed"


NEED_DATA: Final = Http1Event.NEED_DATA
END_OF_BODY: Final = Http1Event.END_OF_BODY
CLOSED: Final = Http1Event.CLOSED


class Http1Connection:
    """The server side of one HTTP/1.1 connection (mutable: it lives as long as the connection).

    Args:
        max_head_bytes: request line + headers at most (414 for a longer request line, nginx's
            "400 Request Header Or Cookie Too Large" for longer headers).
        max_fields: header fields per request at most (the same 400 past it).
    """

    __slots__ = (
        "_body",
        "_buffer",
        "_chunked",
        "_closing",
        "_continue_sent",
        "_eof",
        "_max_fields",
        "_max_head_bytes",
        "close_after_response",
        "received_bytes",
        "request",
        "requests",
        "responded",
    )

    def __init__(self, *, max_head_bytes: int, max_fields: int) -> None:
        self._max_head_bytes = max_head_bytes
        self._max_fields = max_fields
        #: Client bytes received and not used yet: a request head being read, body bytes, or
        #: the next pipelined request.
        self._buffer = b""
        #: The client closed its side of the connection.
        self._eof = False
        #: The request being served, and the decoder of its body (None: it has no body).
        self.request: RequestHead | None = None
        self._body: BodyReader | None = None
        #: Requests whose head was read on this connection.
        self.requests = 0
        #: A response head for the current request was produced: no gateway page after it.
        self.responded = False
        #: The response being sent is chunked by the gateway.
        self._chunked = False
        #: The connection ends after the current response.
        self._closing = False
        self._continue_sent = False
        #: Set by the gateway (a reload, a drain): the next response says ``Connection:
        #: close`` and the connection ends after it.
        self.close_after_response = False
        #: Bytes of the current request as received: its head (of a refused head, what was
        #: received of it), then its body bytes with their framing (nginx's
        #: ``$request_length``, the access log's ``receivedBytes``).
        self.received_bytes = 0

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means it closed its side."""
        if data:
            self._buffer = self._buffer + data if self._buffer else data
        else:
            self._eof = True

    @property
    def they_closed(self) -> bool:
        return self._eof

    @property
    def buffered(self) -> bool:
        """Client bytes are waiting (part of a head, body bytes, a pipelined request)."""
        return bool(self._buffer)

    @property
    def idle(self) -> bool:
        """No request in progress: before the first or between two, with none of the next one
        received. Closing the connection then loses nothing."""
        return self.request is None and not self._buffer

    def next_request(self) -> RequestHead | Http1Event:
        """The next request head, NEED_DATA, or CLOSED (the client closed between requests).

        Starts the next request/response cycle: the previous request is forgotten.

        Raises:
            HttpError: the head is malformed (400), too large (414, 494), or has a transfer coding
                the gateway does not implement (501).
        """
        self.request = None
        self._body = None
        self.responded = False
        self._chunked = False
        self._continue_sent = False
        buffer = self._buffer
        self.received_bytes = len(buffer)
        parsed = (
            parse_request_head(buffer, max_size=self._max_head_bytes, max_fields=self._max_fields)
            if buffer
            else None
        )
        if parsed is None:
            if not self._eof:
                return NEED_DATA
            if buffer:
                raise HttpError("the client closed the connection inside a request head")
            return CLOSED
        head, used = parsed
        self.received_bytes = used
        if head.method == "POST" and head.framing is Framing.NONE:
            # http-response-codes lists "POST request missing Content-Length header" among
            # the 400s; here, not in the codec, because it is a rule of HTTP/1.x framing (an
            # HTTP/2 request is framed by its stream, and its head is written as HTTP/1.1 for
            # the backend). Differs from nginx, which reads such a POST as one with no body
            # (nginx 0.x answered 411 Length Required).
            raise HttpError("POST without Content-Length or chunked framing")
        self._buffer = buffer[used:]
        self.request = head
        self.requests += 1
        self._closing = not head.keep_alive
        if head.framing is not Framing.NONE:
            self._body = BodyReader(head.framing, head.length)
        return head

    @property
    def has_body(self) -> bool:
        return self._body is not None

    @property
    def body_done(self) -> bool:
        """The current request's body has been read to its end (or it has none)."""
        body = self._body
        return body is None or body.done

    def next_body(self) -> bytes | Http1Event:
        """The current request's next body bytes, NEED_DATA, END_OF_BODY, or CLOSED (the
        client closed inside the body).

        Raises:
            HttpError: the body's framing is broken (400).
        """
        reader = self._body
        while reader is not None and not reader.done:
            if self._buffer:
                before = len(self._buffer)
                body, self._buffer = reader.feed(self._buffer)
                self.received_bytes += before - len(self._buffer)
                if body:
                    return body
            elif self._eof:
                return CLOSED
            else:
                return NEED_DATA
        return END_OF_BODY

    def continue_bytes(self) -> bytes:
        """The gateway's ``100 Continue`` when the client waits for it before sending its body
        (``Expect: 100-continue`` and nothing of the body here yet), once; else b""."""
        request = self.request
        if (
            request is None
            or not request.expect_continue
            or self._buffer
            or self._continue_sent
            or self.responded
        ):
            return b""
        self._continue_sent = True
        return CONTINUE

    def take_buffered(self) -> bytes:
        """The client bytes received and not used (after a 101, the tunnel's first bytes)."""
        data, self._buffer = self._buffer, b""
        return data

    def refused_request_line(self) -> tuple[str, str]:
        """(method, target) of a head that was refused, when its first line has the usual
        three parts; else ("", "")."""
        line = self._buffer[:MAX_LOGGED_REQUEST_LINE].split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        return (parts[0], parts[1]) if len(parts) == 3 else ("", "")

    # -- the backend request ----------------------------------------------------------------

    def backend_headers(
        self, headers: list[tuple[str, str]], *, length: int | None = None
    ) -> list[tuple[str, str]]:
        """The rewritten headers as the backend gets them: ``Expect`` is the gateway's
        business (it answers 100 itself), and the body is framed as it will be sent —
        ``length`` for a buffered body, else the client's Content-Length, or
        ``Transfer-Encoding: chunked`` (it is re-chunked) — whatever a rewrite rule did to
        those two headers. In the usual case the list comes back as it was, after one pass.
        """
        request = self.request
        assert request is not None
        framing: list[tuple[str, str]] = []
        expect = False
        for name, value in headers:
            lower = name.lower()
            if lower in _FRAMING_HEADERS:
                framing.append((lower, value.lower()))
            elif lower == "expect":
                expect = True
        if length is not None:
            # A buffered body goes with its length, also one the client chunked (nginx does
            # the same with proxy_request_buffering on).
            wanted = [("content-length", str(length))]
        elif request.framing is Framing.LENGTH:
            wanted = [("content-length", str(request.length))]
        elif request.framing is Framing.CHUNKED:
            wanted = [("transfer-encoding", "chunked")]
        else:
            wanted = []
        if framing == wanted and not expect:
            return headers
        kept = [(k, v) for k, v in headers if k.lower() not in _BACKEND_DROPPED]
        return kept + [(k.title(), v) for k, v in wanted]

    # -- responding -------------------------------------------------------------------------

    @property
    def keep_alive(self) -> bool:
        """After the current response the connection can carry the next request: the client
        keeps it, no response closed it, and the request body was read to its end."""
        return self.request is not None and not self._closing and self.body_done

    @property
    def will_close(self) -> bool:
        """The connection ends after the current response (the opposite of
        :attr:`keep_alive`, or the gateway asked to close)."""
        return self.close_after_response or not self.keep_alive

    def page(
        self,
        status: int,
        reason: str,
        body: bytes,
        *,
        date: str,
        close: bool = False,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A response the gateway writes itself (a page), head and body in one piece.

        ``date`` is the ``Date`` value (the caller reads the clock). ``Connection: close`` goes
        with it when ``close``, when the client does not keep the connection, or when the
        gateway asked to close, else ``Connection: keep-alive`` (nginx says one or the other
        on every response); a HEAD request gets the head only.
        """
        closing = close or self._closing or self.close_after_response or self.request is None
        self._closing = closing
        headers = page_headers(
            len(body), date=date, keep_alive=not closing, extra=tuple(extra_headers)
        )
        self.responded = True
        head = response_head_bytes(status, reason, headers)
        request = self.request
        if request is not None and request.method == "HEAD":
            return head
        return head + body

    def response_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
        """A backend's response head as the client gets it, framed for this client.

        A body of known length keeps its Content-Length. One of unknown length (the backend
        chunked it, or ends it by closing) is chunked for an HTTP/1.1 client and ends with the
        connection for an HTTP/1.0 one. ``Connection: close`` is added whenever the connection
        ends after the response, ``Connection: keep-alive`` otherwise. 204 and 304 have no body
        whatever their headers say; the head of a HEAD response is framed as the GET response
        would be. Body bytes then go through :meth:`body_bytes`, and the end through
        :meth:`end_of_body`.
        """
        request = self.request
        assert request is not None
        close = self._closing or self.close_after_response
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
        else:
            # nginx says keep-alive on every response whose connection stays open, proxied
            # ones too (ngx_http_header_filter); the backend's own Connection header is
            # hop-by-hop and was dropped with the others.
            headers = [*headers, _KEEP_ALIVE]
        self._chunked = chunked
        self._closing = close
        self.responded = True
        return response_head_bytes(status, reason, headers)

    def switching_protocols(self, reason: str, headers: list[tuple[str, str]]) -> bytes:
        """The 101 head; the connection is the tunnel's afterwards (it carries no request)."""
        self._closing = True
        self.responded = True
        return response_head_bytes(HTTP_SWITCHING_PROTOCOLS, reason, headers)

    def body_bytes(self, data: bytes) -> bytes:
        """Response body bytes as they go on the wire (one chunk when chunked)."""
        return chunk(data) if self._chunked else data

    def end_of_body(self) -> bytes:
        """What ends the response body on the wire (the last chunk when chunked)."""
        return LAST_CHUNK if self._chunked else b""
