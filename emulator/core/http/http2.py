"""The server side of HTTP/2, sans-I/O: bytes in, events out, frames to write.

Why h2: python-hyper's ``h2`` is the HTTP/2 state machine of the h11 family. It does no I/O
(feed it bytes, get events, take the bytes it wants written), owns HPACK, stream states and flow
control, and is what hypercorn and httpx build on. Writing that ourselves would be thousands of
lines of protocol code whose bugs are request-smuggling bugs. ``h2`` is imported when the first
:class:`Http2Connection` is made, so ``import emulator`` and start-up do not load it.

What this module adds on top of ``h2``
--------------------------------------
``h2`` answers every malformed request with a *connection* error: a request header it does not
like, a content-length that the DATA does not match and one stream too many each make it send
GOAWAY and drop every stream of the connection. RFC 9113 section 8.1.1 makes a malformed request
a *stream* error, and nginx (what the gateway runs) answers most of them with a 400 on the stream
and keeps the connection. So:

- ``h2``'s own header validation is off; :func:`request_head_from_fields` checks each request's
  fields with nginx's rules (``ngx_http_v2_validate_header``, ``ngx_http_v2_pseudo_header``,
  ``ngx_http_v2_construct_request_line`` and the checks in ``ngx_http_v2_run_request``) plus
  the RFC 9113 section 8.2 rules nginx leaves out, and the codec answers a refused request with
  a :class:`RequestRefused` event (the pump sends the page) while nothing of it is handed on.
- Received bytes are cut into frames here before ``h2`` sees them, so a DATA frame that would
  overrun the declared content-length (or end the stream short of it) is caught first and its
  stream reset with PROTOCOL_ERROR, before ``h2`` would turn it into a connection error; none of
  that frame is handed on. (``h2`` then answers any later DATA on that stream with RST_STREAM
  STREAM_CLOSED where RFC 9113 section 5.1 says to ignore it: harmless, and h2's.) The same cut
  counts header-block bytes (CONTINUATION flood) and control-frame bytes (flood detection).
- Trailers are read and dropped, as the HTTP/1.1 codec drops them: the backend leg is HTTP/1.1.
- ``h2`` would refuse a stream over SETTINGS_MAX_CONCURRENT_STREAMS with GOAWAY; a client may
  legitimately open more in its first flight, before our SETTINGS reach it. The limit ``h2``
  enforces is lifted and the advertised one is applied here with RST_STREAM REFUSED_STREAM, as
  nginx does (a refused stream is safe for the client to retry).
- ``h2`` refuses to send anything once a GOAWAY went out, so a graceful GOAWAY (request limit,
  shutdown) is written here as a frame of our own and ``h2`` keeps serving the streams in flight.

Where nginx and this codec differ, it is said where the decision is made; the h2-only ones
(a content-length that is not digits or two different content-lengths: ``h2`` checks those
before we can and sends GOAWAY PROTOCOL_ERROR; RFC 9113 section 5.4 lets a stream error be
treated as a connection error) are listed in :data:`CONNECTION_ERRORS_FROM_H2`.

Limits (:class:`Http2Limits`)
-----------------------------
Azure's limits page: a header field (name + value) of at most 8 KB and a header list of at most
16 KB ("Maximum header field size for HTTP/2", "Maximum header size for HTTP/2"); over either,
nginx ends the connection with ENHANCE_YOUR_CALM ("client sent too large header"), and so does
this. 1,000 requests per connection, then GOAWAY NO_ERROR naming the last stream served (nginx's
``keepalive_requests``). Where Azure says nothing, nginx's defaults: 128 concurrent streams, a
64 KiB stream window, 16 KiB frames. Abuse, each bounded as nginx bounds it:

- more streams at once than allowed, or more than twice that many opened in one read (the
  rapid-reset shape, CVE-2023-44487), or opened after a graceful GOAWAY: RST_STREAM
  REFUSED_STREAM (nginx skips those after GOAWAY; a refusal tells the client it may retry);
  the 130th refused stream ends the connection (nginx's ``refused_streams++ > max(streams,
  100)``, GOAWAY NO_ERROR, "client sent too many refused streams"). With the request limit, a
  connection costs the pump at most 1,000 request tasks whatever the client resets;
- a header block over :attr:`Http2Limits.max_header_block_bytes` across HEADERS and CONTINUATION
  frames (``h2`` also stops at 64 CONTINUATION frames): GOAWAY ENHANCE_YOUR_CALM; a frame over
  SETTINGS_MAX_FRAME_SIZE: GOAWAY FRAME_SIZE_ERROR from its 9-byte header, never buffered;
  HPACK bombs stop at ``h2``'s 64 KiB decoded-list bound (GOAWAY ENHANCE_YOUR_CALM);
- SETTINGS, PING, PRIORITY, empty or unknown frames that carry no request work: nginx's flood
  rule, ``received bytes / 8 > payload bytes + 1 MiB`` → GOAWAY NO_ERROR ("http2 flood
  detected"). The pump must also flush :meth:`Http2Connection.data_to_send` before it reads
  again, so a client that sends PINGs and never reads their ACKs stops being read (TCP
  back-pressure) instead of growing our output;
- a request body is held to the stream window: the client may send only what the pump has
  :meth:`acknowledged <Http2Connection.acknowledge>`; the connection window is
  ``max_concurrent_streams x initial_window`` (8 MiB), so buffered bodies are bounded too.

How the pump drives it (integration, after issue 16's restructured proxy lands)
----------------------------------------------------------------------------------
One reader loop per connection: ``events = conn.receive_data(await stream.receive_some())``,
then ``await stream.send_all(conn.data_to_send())`` before the next read. Per event:

- :class:`RequestReceived`: start one task for the stream. It feeds ``event.head`` (the same
  :class:`~emulator.core.http.codec.RequestHead` facts the HTTP/1.1 codec gives, ``version="2.0"``)
  to the same request plan as HTTP/1.1, with the connection's facts (listener from SNI, the
  client certificate decision: one per connection, so every stream carries the same certificate
  variables, and the 421 rule re-run per stream's host). Refused or answered: the page goes out
  with :meth:`~Http2Connection.send_response` / :meth:`~Http2Connection.send_data` /
  :meth:`~Http2Connection.end_stream`. Forwarded: the backend request is HTTP/1.1 from the
  pool (one backend connection per concurrent stream), framed from ``head.framing`` (LENGTH:
  Content-Length; CHUNKED: a body of unknown length, chunked or buffered and given a
  Content-Length, as the buffering rule says); the response head is mapped back with
  :meth:`~Http2Connection.send_response`, which drops HTTP/1.1's connection-specific headers.
- :class:`DataReceived` / :class:`BodyEnded`: into that stream's body channel; the task calls
  :meth:`~Http2Connection.acknowledge` as it consumes, which opens the client's window.
- :class:`StreamReset`: cancel that task (its backend connection is closed, not reused).
- :class:`WindowOpened`: wake tasks waiting in "send what :meth:`~Http2Connection.sendable`
  allows, then wait" (0 means every stream).
- :class:`RequestRefused`: the codec refused the head (``status`` 400 or 431); the pump sends
  that page on the stream (rendered like any other), with no plan and no backend.
- :class:`ConnectionTerminated`: cancel every stream task, flush, close.

The tasks share the one :class:`Http2Connection` (trio is single-threaded, so no lock); the
reader loop flushes after each batch of events and each task flushes after it sent. Graceful
shutdown: :meth:`~Http2Connection.start_shutdown`, keep serving until
:attr:`~Http2Connection.should_close`.

Strict without a certificate: every stream gets the 400 "No required SSL certificate was sent"
page and the connection stays open. nginx's source says so: ``ngx_http_process_request`` answers
``NGX_HTTPS_NO_CERT`` through ``ngx_http_finalize_request``, whose special-response handler only
clears ``r->keepalive``; the HTTP/2 module never reads ``keepalive`` (only ``keepalive_timeout``,
``keepalive_requests`` and ``keepalive_time``) and closes just the stream, so no GOAWAY follows.

No trio, no sockets, no clock here (style guide section 2); time-based limits (idle, SETTINGS
ACK timeout) belong to the pump.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from emulator.core.http.codec import MAX_BODY_LENGTH, Framing, HttpError, RequestHead, validate_host

if TYPE_CHECKING:  # pragma: no cover - h2 is imported lazily at run time
    import h2.events as h2e
    from h2.connection import H2Connection

__all__ = [
    "CONNECTION_ERRORS_FROM_H2",
    "DEFAULT_LIMITS",
    "BodyEnded",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "FieldTooLarge",
    "Http2Connection",
    "Http2Limits",
    "RequestReceived",
    "RequestRefused",
    "StreamReset",
    "WindowOpened",
    "request_head_from_fields",
    "response_fields",
]


class ErrorCode(enum.IntEnum):
    """HTTP/2 error codes (RFC 9113 section 7), so callers need not import h2."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


#: Malformed requests that end the connection (GOAWAY PROTOCOL_ERROR) instead of one stream,
#: because ``h2`` checks them while decoding, before this module sees the request. Differs from
#: Azure: nginx answers each with a 400 on the stream. Kept as data so the tests and the README
#: list the same cases.
CONNECTION_ERRORS_FROM_H2: Final = (
    "a content-length value that is not digits",
    "two content-length fields with different values",
    "a HEADERS frame without END_STREAM after the request head (trailers must end the stream)",
    "a request with a 1xx :status pseudo-header (h2 reads it as an interim response)",
)


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """What one HTTP/2 connection may use. Defaults: Azure's limits page, else nginx's."""

    #: Name + value of one field, bytes (Azure: "Maximum header field size for HTTP/2", 8 KB).
    max_field_bytes: int = 8 * 1024
    #: Sum of name + value over a request's fields (Azure: "Maximum header size for HTTP/2",
    #: 16 KB); counted like nginx's ``header_limit`` (no 32-byte HPACK overhead per field).
    max_header_list_bytes: int = 16 * 1024
    #: Fields per request; one more is a 431, like the HTTP/1.1 codec's limit.
    max_header_fields: int = 1000
    #: Encoded header block (HEADERS + CONTINUATION payloads) before END_HEADERS: a block that
    #: decodes within 16 KB cannot need more than four times that even fully Huffman-coded.
    max_header_block_bytes: int = 64 * 1024
    #: Streams per connection; then GOAWAY NO_ERROR (Azure: 1,000 requests per HTTP/2
    #: connection; nginx ``keepalive_requests``).
    max_requests: int = 1000
    #: SETTINGS_MAX_CONCURRENT_STREAMS (nginx ``http2_max_concurrent_streams``).
    max_concurrent_streams: int = 128
    #: SETTINGS_INITIAL_WINDOW_SIZE, bytes (nginx's 64 KiB ``http2_body_preread_size`` window).
    initial_window: int = 64 * 1024
    #: SETTINGS_MAX_FRAME_SIZE, bytes (the protocol's minimum, nginx's default).
    max_frame_size: int = 16 * 1024
    #: nginx's flood allowance: control bytes beyond ``8 x payload + 8 x this`` end the
    #: connection (``ngx_http_v2_read_handler``).
    flood_allowance_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 2**24 - 1:
            raise ValueError("max_frame_size must be 16384..16777215 (RFC 9113 section 6.5.2)")
        if not 0 < self.initial_window <= 2**31 - 1:
            raise ValueError("initial_window must be 1..2^31-1 (RFC 9113 section 6.9.2)")
        for name in ("max_field_bytes", "max_header_list_bytes", "max_header_fields"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_requests <= 0 or self.max_concurrent_streams <= 0:
            raise ValueError("max_requests and max_concurrent_streams must be positive")

    @property
    def connection_window(self) -> int:
        """The connection's receive window: every stream's window at once (8 MiB)."""
        return min(self.max_concurrent_streams * self.initial_window, 2**31 - 1)

    @property
    def max_refused_streams(self) -> int:
        """Refused streams after which the connection ends (nginx: ``max(streams, 100)``)."""
        return max(self.max_concurrent_streams, 100)


DEFAULT_LIMITS: Final = Http2Limits()


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A stream's request head, checked: plan it like an HTTP/1.1 request."""

    stream_id: int
    head: RequestHead


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A stream's request head was refused: answer ``status`` with its page; nothing of the
    request may be routed or forwarded. DATA that follows is discarded by the codec."""

    stream_id: int
    #: 400 (malformed) or 431 (too many fields).
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Request body bytes; :meth:`Http2Connection.acknowledge` them once consumed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnded:
    """The request is complete (its body, possibly empty, ended with the stream)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: the client reset it (``remote``) or the codec did (the request broke
    a rule mid-body). Stop its work; nothing more can be sent on it."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool
    reason: str


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """More may be sent on ``stream_id`` (0: on every stream) than :meth:`sendable` said."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over: the peer sent GOAWAY or closed, or the codec ended it with
    GOAWAY ``error_code``. Flush :meth:`Http2Connection.data_to_send`, then close."""

    error_code: ErrorCode | int
    remote: bool
    reason: str


Event: TypeAlias = (
    RequestReceived
    | RequestRefused
    | DataReceived
    | BodyEnded
    | StreamReset
    | WindowOpened
    | ConnectionTerminated
)


class FieldTooLarge(HttpError):
    """A field or the header list is over Azure's HTTP/2 limit: nginx ends the connection
    with ENHANCE_YOUR_CALM rather than answer (``ngx_http_v2_state_process_header``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 431)


# -- request heads ------------------------------------------------------------------------------

#: A field name as HTTP/2 allows it: a token in lower case (RFC 9113 section 8.2.1).
_NAME: Final = re.compile(r"[-!#$%&'*+.^_`|~0-9a-z]++")
#: Value bytes nginx refuses (NUL, LF, CR) plus VT and FF, which the HTTP/1.1 writer refuses
#: (so such a value could never be forwarded).
_BAD_VALUE: Final = re.compile(r"[\x00\n\r\x0b\x0c]")
_METHOD: Final = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]++")
#: :path characters: visible ASCII, as the HTTP/1.1 request line takes them. A space here
#: would split the backend's request line (the h2→h1 "path with spaces" desync).
_PATH: Final = re.compile(r"[\x21-\x7e]++")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*+")
_PSEUDO: Final = frozenset({":method", ":scheme", ":path", ":authority"})
#: RFC 9113 section 8.2.2: fields that only mean something on one HTTP/1.1 hop. nginx refuses
#: Connection, Keep-Alive, Transfer-Encoding and Upgrade; Proxy-Connection is the RFC's.
_CONNECTION_SPECIFIC: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
#: Response fields never sent over HTTP/2 (mapped from an HTTP/1.1 backend response).
_HOP_BY_HOP_RESPONSE: Final = _CONNECTION_SPECIFIC | {"te", "trailer"}


def request_head_from_fields(
    fields: Sequence[tuple[bytes, bytes]],
    *,
    end_stream: bool,
    limits: Http2Limits = DEFAULT_LIMITS,
) -> RequestHead:
    """The request head of an HTTP/2 request's decoded fields, as the HTTP/1.1 codec would
    give it: ``target`` from ``:path``, ``host`` from ``:authority`` (else Host), a Host field
    first when only ``:authority`` named one, cookies joined into one field with ``"; "`` (RFC
    9113 section 8.2.3), ``te: trailers`` dropped (hop-by-hop), ``version="2.0"``.

    ``framing`` says what the body is: NONE (the HEADERS frame ended the stream), LENGTH
    (content-length given; ``length`` is it) or CHUNKED (no content-length: the body runs to the
    end of the stream, so an HTTP/1.1 backend gets it chunked or buffered).

    Raises:
        FieldTooLarge: a field or the list is over the limits (the connection ends).
        HttpError: 400 for a malformed request, 431 for too many fields (the stream is answered).
    """
    total = 0
    for raw_name, raw_value in fields:
        size = len(raw_name) + len(raw_value)
        if size > limits.max_field_bytes:
            raise FieldTooLarge(f"header field of {size} bytes (limit {limits.max_field_bytes})")
        total += size
    if total > limits.max_header_list_bytes:
        raise FieldTooLarge(f"header list of {total} bytes (limit {limits.max_header_list_bytes})")
    if len(fields) > limits.max_header_fields:
        raise HttpError(f"more than {limits.max_header_fields} header fields", 431)

    pseudo: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    cookie_at = -1
    hosts: list[str] = []
    lengths: list[str] = []
    te: list[str] = []
    expect_continue = False
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if _BAD_VALUE.search(value) is not None:
            raise HttpError(f"header {_quote(name)} value has NUL, CR, LF, VT or FF")
        if name.startswith(":"):
            if headers or cookies or hosts:
                # nginx: "client sent out of order pseudo-headers"; RFC 9113 section 8.3.
                raise HttpError(f"pseudo-header {_quote(name)} after regular header fields")
            if name not in _PSEUDO:
                raise HttpError(f"unknown pseudo-header {_quote(name)}")
            if name in pseudo:
                raise HttpError(f"duplicate {name} pseudo-header")
            pseudo[name] = value
            continue
        if _NAME.fullmatch(name) is None:
            if name != name.lower():
                raise HttpError(f"header name {_quote(name)} has upper-case letters")
            raise HttpError(f"invalid header name {_quote(name)}")
        if value != value.strip(" \t"):
            # RFC 9113 section 8.2.1: malformed. nginx lets it through; h2 refuses it.
            raise HttpError(f"header {_quote(name)} value starts or ends with whitespace")
        if name in _CONNECTION_SPECIFIC:
            raise HttpError(f"connection-specific header {_quote(name)} in an HTTP/2 request")
        if name == "te":
            te.append(value)
            continue
        if name == "cookie":
            if cookie_at < 0:
                cookie_at = len(headers)
            cookies.append(value)
            continue
        if name == "host":
            hosts.append(value)
        elif name == "content-length":
            lengths.append(value)
        elif name == "expect":
            expect_continue = expect_continue or any(
                part.strip(" \t").lower() == "100-continue" for part in value.split(",")
            )
        headers.append((name, value))

    method = pseudo.get(":method")
    if method is None:
        raise HttpError("no :method pseudo-header")
    if _METHOD.fullmatch(method) is None:
        raise HttpError(f"invalid :method {_quote(method)}")
    if method == "CONNECT":
        # Differs from Azure: nginx answers 405 (or 400 when :scheme/:path are missing, as
        # RFC 9113 section 8.5 CONNECT has them). The HTTP/1.1 path answers CONNECT with 400,
        # and so does this; no tunnel is ever made.
        raise HttpError("CONNECT is not supported")
    scheme = pseudo.get(":scheme")
    if scheme is None:
        raise HttpError("no :scheme pseudo-header")
    if _SCHEME.fullmatch(scheme) is None:
        raise HttpError(f"invalid :scheme {_quote(scheme)}")
    path = pseudo.get(":path")
    if path is None:
        raise HttpError("no :path pseudo-header")
    if not path:
        raise HttpError("empty :path pseudo-header")
    if _PATH.fullmatch(path) is None:
        raise HttpError(f"invalid :path {_quote(path)} (whitespace, control or non-ASCII)")
    if not path.startswith("/") and not (path == "*" and method == "OPTIONS"):
        # RFC 9113 section 8.3.1: origin-form, or "*" for OPTIONS.
        raise HttpError(f":path {_quote(path)} is not origin-form")

    authority = pseudo.get(":authority")
    if len(hosts) > 1:
        raise HttpError("more than one Host header")
    if authority is not None and hosts and hosts[0] != authority:
        # nginx 1.29.1+ (ngx_http_v2_run_request): "client sent ":authority" and "Host"
        # headers with different values" is a 400, byte for byte, so no stage can route by
        # one and forward the other. (1.17.9 to 1.29.0 refused any Host next to :authority,
        # equal or not; before 1.17.9 :authority won.)
        raise HttpError(":authority and Host disagree")
    if authority is None and not hosts:
        raise HttpError("neither :authority nor Host")
    routed = authority if authority is not None else hosts[0]
    host = validate_host(routed, ":authority" if authority is not None else "Host header")
    crumbs = [cookie for cookie in cookies if cookie]
    if crumbs:
        # Empty crumbs are skipped: joined, they would leave a "; " with trailing whitespace
        # that an HTTP/1.1 parser strips (found by the fuzz property).
        headers.insert(cookie_at, ("cookie", "; ".join(crumbs)))
    if not hosts:
        headers.insert(0, ("host", routed))

    if len(te) > 1 or (te and te[0].lower() != "trailers"):
        # RFC 9113 section 8.2.2; nginx "client sent invalid "TE" header".
        raise HttpError(f"TE other than 'trailers': {_quote(', '.join(te))}")

    framing = Framing.NONE if end_stream else Framing.CHUNKED
    length = 0
    if lengths:
        if len(lengths) > 1:
            raise HttpError("Content-Length given more than once")
        value = lengths[0]
        if not value.isascii() or not value.isdigit() or len(value) > 20:
            raise HttpError(f"bad Content-Length {_quote(value)}")
        length = int(value)
        if length > MAX_BODY_LENGTH:
            raise HttpError(f"Content-Length {value} is larger than 2^63-1")
        if end_stream and length:
            # nginx: "client prematurely closed stream".
            raise HttpError(f"Content-Length {length} but the stream ended with the headers")
        framing = Framing.LENGTH
    return RequestHead(
        method=method,
        target=path,
        version="2.0",
        headers=headers,
        framing=framing,
        length=length,
        keep_alive=True,
        expect_continue=expect_continue,
        upgrade=None,
        host=host,
        upgrade_h2c=False,
    )


def response_fields(status: int, headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 response head as HTTP/2 fields: ``:status`` first, names lower-cased, and
    the connection-specific fields (RFC 9113 section 8.2.2) dropped, including every field the
    Connection header names.

    Raises:
        ValueError: status outside 100..999, or text that is not latin-1.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status {status} is not a three-digit code")
    pairs = [(name.lower(), value) for name, value in headers]
    drop = set(_HOP_BY_HOP_RESPONSE)
    for name, value in pairs:
        if name == "connection":
            drop.update(part.strip(" \t").lower() for part in value.split(","))
    try:
        return [(b":status", str(status).encode())] + [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in pairs
            if name not in drop
        ]
    except UnicodeEncodeError as exc:
        raise ValueError(f"HTTP head text must be latin-1: {exc}") from exc


def _quote(text: str) -> str:
    return repr(text[:80])


# -- the connection -----------------------------------------------------------------------------

#: The client connection preface (RFC 9113 section 3.4).
_PREFACE_LEN: Final = 24
_FRAME_HEADER_LEN: Final = 9
_DATA: Final = 0x0
_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_GOAWAY: Final = 0x7
_FLAG_END_STREAM: Final = 0x1
_FLAG_END_HEADERS: Final = 0x4
_FLAG_PADDED: Final = 0x8
#: The concurrent-stream limit ``h2`` itself enforces (as a connection error): out of reach, so
#: the advertised limit is applied per stream by this module instead.
_H2_STREAM_LIMIT: Final = 2**31 - 1


class _Stream:
    """What the codec remembers of one client stream until both sides are done."""

    __slots__ = ("expected", "handed_on", "received", "request_done", "response_started")

    def __init__(self, expected: int | None) -> None:
        #: The content-length ``h2`` parsed (it checks DATA against it); None without one.
        self.expected = expected
        self.received = 0
        #: RequestReceived was emitted (False: refused, its DATA is discarded).
        self.handed_on = False
        self.request_done = False
        self.response_started = False


class Http2Connection:
    """One client's HTTP/2 connection, server side (sans-I/O; see the module docstring).

    Owns an ``h2.connection.H2Connection``; nothing here waits or touches a socket. The
    server's preface (SETTINGS, the connection WINDOW_UPDATE) is ready in
    :meth:`data_to_send` as soon as the object exists.

    Sending on a stream that is already gone (reset by the client, or after the connection
    ended) does nothing: the pump learns of it from the :class:`StreamReset` or
    :class:`ConnectionTerminated` event, and a task may race that event.
    """

    def __init__(self, *, limits: Http2Limits = DEFAULT_LIMITS) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.settings import SettingCodes, Settings

        self._limits = limits
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            # Checked by request_head_from_fields, per stream (h2 would end the connection).
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=True,
            normalize_outbound_headers=True,
        )
        conn = H2Connection(config=config)
        conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            },
        )
        conn.initiate_connection()
        # The SETTINGS frame above advertises the limit; h2 must not enforce it itself (see
        # the module docstring). Settings.acknowledge makes the new value current at once.
        conn.local_settings.max_concurrent_streams = _H2_STREAM_LIMIT
        conn.local_settings.acknowledge()
        extra = limits.connection_window - 65535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self._conn: H2Connection = conn
        self._streams: dict[int, _Stream] = {}
        self._inbuf = bytearray()
        self._preface_left = _PREFACE_LEN
        self._out = bytearray()
        self._terminated = False
        #: Last stream id a graceful GOAWAY promised to serve, or None before one went out.
        self._goaway_last: int | None = None
        self._requests = 0
        self._refused = 0
        self._new_streams = 0
        self._header_block = 0
        self._total_bytes = 0
        self._payload_bytes = 0

    # -- facts ------------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        """The connection ended (GOAWAY with an error either way, or the peer closed)."""
        return self._terminated

    @property
    def goaway_sent(self) -> bool:
        """A graceful GOAWAY went out: no new streams, the ones in flight finish."""
        return self._goaway_last is not None

    @property
    def should_close(self) -> bool:
        """Nothing more will happen: ended, or drained after a graceful GOAWAY. Flush
        :meth:`data_to_send` and close the transport."""
        return self._terminated or (self._goaway_last is not None and not self._streams)

    @property
    def open_streams(self) -> int:
        """Streams the client opened that are not finished yet (refused ones included)."""
        return len(self._streams)

    @property
    def requests(self) -> int:
        """Streams accepted on this connection (the 1,000 limit counts these)."""
        return self._requests

    def sendable(self, stream_id: int) -> int:
        """Body bytes :meth:`send_data` would take now on ``stream_id`` (flow control)."""
        if self._terminated or stream_id not in self._streams:
            return 0
        return max(0, self._conn.local_flow_control_window(stream_id))

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; ``b""`` means it closed its side. Returns the events
        they caused, in order. After :class:`ConnectionTerminated`, returns ``[]``."""
        from h2.exceptions import ProtocolError

        if self._terminated:
            return []
        events: list[Event] = []
        if not data:
            self._terminated = True
            events.append(
                ConnectionTerminated(ErrorCode.NO_ERROR, True, "the client closed the connection")
            )
            return events
        self._new_streams = 0
        self._total_bytes += len(data)
        self._inbuf += data
        try:
            self._feed_frames(events)
        except ProtocolError as exc:
            # h2 has queued GOAWAY with the error's code already (not for a bad preface:
            # RFC 9113 section 3.4 lets that GOAWAY be omitted, and h2 omits it).
            code = getattr(exc, "error_code", ErrorCode.PROTOCOL_ERROR)
            self._end(events, code, f"{type(exc).__name__}: {exc}")
            return events
        if (
            not self._terminated
            and self._total_bytes // 8 > self._payload_bytes + self._limits.flood_allowance_bytes
        ):
            # nginx ngx_http_v2_read_handler: "http2 flood detected", GOAWAY NO_ERROR.
            self._abort(events, ErrorCode.NO_ERROR, "control-frame flood")
        return events

    def _feed_frames(self, events: list[Event]) -> None:
        buf = self._inbuf
        pos = 0
        size = len(buf)
        if self._preface_left:
            take = min(self._preface_left, size)
            self._process(bytes(buf[:take]), events)  # h2 checks the preface
            self._preface_left -= take
            pos = take
        max_frame = self._limits.max_frame_size
        while not self._terminated and size - pos >= _FRAME_HEADER_LEN:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if length > max_frame:
                # RFC 9113 section 4.2: FRAME_SIZE_ERROR, decided from the header alone (h2
                # would first wait for, and buffer, the whole oversized frame).
                self._abort(
                    events,
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"frame of {length} bytes over the {max_frame}-byte limit",
                )
                pos = size
                break
            end = pos + _FRAME_HEADER_LEN + length
            if end > size:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            frame = bytes(buf[pos:end])
            pos = end
            if kind == _DATA:
                self._before_data(stream_id, flags, frame, events)
            elif kind in (_HEADERS, _CONTINUATION):
                self._payload_bytes += length
                self._header_block = length if kind == _HEADERS else self._header_block + length
                if self._header_block > self._limits.max_header_block_bytes:
                    self._abort(
                        events,
                        ErrorCode.ENHANCE_YOUR_CALM,
                        f"header block over {self._limits.max_header_block_bytes} bytes",
                    )
                    break
                if flags & _FLAG_END_HEADERS:
                    self._header_block = 0
            elif kind == _GOAWAY:
                self._payload_bytes += length
            self._process(frame, events)
        del buf[:pos]

    def _before_data(self, stream_id: int, flags: int, frame: bytes, events: list[Event]) -> None:
        """Check a DATA frame against the stream's content-length before h2 sees it."""
        length = len(frame) - _FRAME_HEADER_LEN
        data_len = length
        if flags & _FLAG_PADDED:
            if not length:
                return  # h2 refuses the frame
            data_len = length - 1 - frame[_FRAME_HEADER_LEN]
            if data_len < 0:
                return
        self._payload_bytes += data_len
        stream = self._streams.get(stream_id)
        if stream is None or stream.expected is None:
            return
        total = stream.received + data_len
        stream.received = total
        if total > stream.expected or (flags & _FLAG_END_STREAM and total != stream.expected):
            # RFC 9113 section 8.1.1: malformed, a stream error of type PROTOCOL_ERROR. nginx
            # answers 400 when no response has started; the body may already be on its way to
            # the backend here, so the stream is reset and the pump abandons the backend request.
            self._reset(
                stream_id,
                ErrorCode.PROTOCOL_ERROR,
                f"content-length {stream.expected} but {total} bytes of DATA",
                events,
            )

    def _process(self, data: bytes, events: list[Event]) -> None:
        import h2.events as h2e
        from h2.settings import SettingCodes

        for event in self._conn.receive_data(data):
            if self._terminated:
                break
            if isinstance(event, h2e.RequestReceived):
                self._on_request(event, events)
            elif isinstance(event, h2e.DataReceived):
                self._on_data(event, events)
            elif isinstance(event, h2e.StreamEnded):
                self._on_end(event.stream_id, events)
            elif isinstance(event, h2e.StreamReset):
                assert event.stream_id is not None
                if self._streams.pop(event.stream_id, None) is not None:
                    events.append(
                        StreamReset(
                            event.stream_id,
                            _code(event.error_code),
                            True,
                            "the client reset the stream",
                        )
                    )
            elif isinstance(event, h2e.WindowUpdated):
                assert event.stream_id is not None
                if event.stream_id == 0 or event.stream_id in self._streams:
                    events.append(WindowOpened(event.stream_id))
            elif isinstance(event, h2e.RemoteSettingsChanged):
                if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                    events.append(WindowOpened(0))
            elif isinstance(event, h2e.ConnectionTerminated):
                self._terminated = True
                self._streams.clear()
                events.append(
                    ConnectionTerminated(
                        _code(event.error_code or 0), True, "the client sent GOAWAY"
                    )
                )
            # Everything else (PING, SETTINGS ACK, PRIORITY, trailers, unknown frames) needs
            # no action: h2 answers PINGs and SETTINGS itself, trailers are dropped like the
            # HTTP/1.1 codec drops them.

    def _on_request(self, event: h2e.RequestReceived, events: list[Event]) -> None:
        assert event.stream_id is not None
        stream_id = event.stream_id
        fields = [(bytes(name), bytes(value)) for name, value in event.headers or ()]
        # The length h2 checks DATA against (it already refused non-digit or conflicting ones).
        expected: int | None = None
        for name, value in fields:
            if name == b"content-length":
                expected = int(value)
        if self._goaway_last is not None and stream_id > self._goaway_last:
            self._refuse_stream(stream_id, events)
            return
        self._new_streams += 1
        if (
            len(self._streams) >= self._limits.max_concurrent_streams
            or self._new_streams > 2 * self._limits.max_concurrent_streams
        ):
            # nginx ngx_http_v2_state_headers: "concurrent streams exceeded" and "client sent
            # too many streams at once" (the CVE-2023-44487 mitigation) are REFUSED_STREAM.
            self._refuse_stream(stream_id, events)
            return
        self._requests += 1
        stream = _Stream(expected)
        self._streams[stream_id] = stream
        if self._requests >= self._limits.max_requests:
            self._send_goaway(stream_id)
        try:
            head = request_head_from_fields(
                fields, end_stream=event.stream_ended is not None, limits=self._limits
            )
        except FieldTooLarge as exc:
            self._abort(events, ErrorCode.ENHANCE_YOUR_CALM, exc.reason)
            return
        except HttpError as exc:
            events.append(RequestRefused(stream_id, exc.status, exc.reason))
            return
        stream.handed_on = True
        events.append(RequestReceived(stream_id, head))

    def _on_data(self, event: h2e.DataReceived, events: list[Event]) -> None:
        assert event.stream_id is not None
        stream_id = event.stream_id
        data = bytes(event.data or b"")
        flow = event.flow_controlled_length or 0
        stream = self._streams.get(stream_id)
        if stream is None or not stream.handed_on:
            # Refused (or already finished) stream: the bytes are dropped, the window reopened.
            if flow:
                self._conn.acknowledge_received_data(flow, stream_id)
            return
        if flow > len(data):
            # Padding is flow-controlled but not body: give it back at once.
            self._conn.acknowledge_received_data(flow - len(data), stream_id)
        if data:
            events.append(DataReceived(stream_id, data))

    def _on_end(self, stream_id: int, events: list[Event]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.request_done = True
        if not stream.handed_on:
            return
        if stream.expected is not None and stream.received != stream.expected:
            # Only reachable through trailers ending the stream early (a DATA frame that ends
            # it was checked in _before_data).
            self._reset(
                stream_id,
                ErrorCode.PROTOCOL_ERROR,
                f"content-length {stream.expected} but {stream.received} bytes of DATA",
                events,
            )
            return
        events.append(BodyEnded(stream_id))

    def _refuse_stream(self, stream_id: int, events: list[Event]) -> None:
        earlier = self._refused
        self._refused += 1
        if earlier > self._limits.max_refused_streams:
            # nginx: "client sent too many refused streams", GOAWAY NO_ERROR (its check is
            # ``refused_streams++ > max(...)``: the 130th refused stream with the defaults).
            self._abort(events, ErrorCode.NO_ERROR, "too many refused streams")
            return
        self._conn.reset_stream(stream_id, ErrorCode.REFUSED_STREAM)

    def _reset(self, stream_id: int, code: ErrorCode, reason: str, events: list[Event]) -> None:
        stream = self._streams.pop(stream_id, None)
        self._conn.reset_stream(stream_id, code)
        if stream is not None:
            events.append(StreamReset(stream_id, code, False, reason))

    def _send_goaway(self, last_stream_id: int) -> None:
        """A graceful GOAWAY, written here so that h2 goes on serving the streams in flight
        (its own ``close_connection`` would refuse every later frame). RFC 9113 section 6.8."""
        if self._goaway_last is not None:
            return
        self._goaway_last = last_stream_id
        payload = last_stream_id.to_bytes(4, "big") + int(ErrorCode.NO_ERROR).to_bytes(4, "big")
        header = len(payload).to_bytes(3, "big") + bytes((_GOAWAY, 0)) + bytes(4)
        self._out += self._conn.data_to_send()
        self._out += header + payload

    def _abort(self, events: list[Event], code: ErrorCode, reason: str) -> None:
        """End the connection with GOAWAY ``code`` (a limit was broken)."""
        self._conn.close_connection(error_code=code)
        self._end(events, code, reason)

    def _end(self, events: list[Event], code: ErrorCode | int, reason: str) -> None:
        self._terminated = True
        self._streams.clear()
        self._inbuf.clear()
        events.append(ConnectionTerminated(_code(code), False, reason))

    # -- output -----------------------------------------------------------------------------

    def _live(self, stream_id: int) -> _Stream | None:
        """The stream if it can still be written to; raises for ids never opened."""
        if stream_id <= 0 or stream_id % 2 == 0:
            raise ValueError(f"stream {stream_id} is not a client stream")
        if self._terminated:
            return None
        stream = self._streams.get(stream_id)
        if stream is None and stream_id > self._conn.highest_inbound_stream_id:
            raise ValueError(f"stream {stream_id} was never opened")
        return stream

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]], *, end: bool = False
    ) -> None:
        """Send the response head (HTTP/1.1 fields are mapped by :func:`response_fields`);
        ``end`` when there is no body (HEAD, 204, 304).

        Raises:
            ValueError: a bad status or field (nothing is sent).
        """
        from h2.exceptions import ProtocolError

        fields = response_fields(status, headers)
        stream = self._live(stream_id)
        if stream is None:
            return
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end)
        except ProtocolError as exc:
            raise ValueError(f"response head refused by h2: {exc}") from exc
        stream.response_started = True
        if end:
            self._response_done(stream_id, stream)

    def send_informational(self, stream_id: int, status: int = 100) -> None:
        """An interim 1xx head (``100 Continue`` for a request that expects it)."""
        if not 100 <= status <= 199:
            raise ValueError(f"status {status} is not informational")
        stream = self._live(stream_id)
        if stream is None or stream.response_started:
            return
        self._conn.send_headers(stream_id, [(b":status", str(status).encode())])

    def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> int:
        """Send as much of ``data`` as flow control allows now; returns how many bytes were
        taken. ``end`` ends the stream once all of ``data`` is taken (an empty ``data`` with
        ``end`` just ends it). Wait for :class:`WindowOpened` to send the rest."""
        stream = self._live(stream_id)
        if stream is None:
            return 0
        if not stream.response_started:
            raise ValueError(f"stream {stream_id}: send_response before send_data")
        window = max(0, self._conn.local_flow_control_window(stream_id))
        take = min(len(data), window)
        frame = self._conn.max_outbound_frame_size
        finish = end and take == len(data)
        view = memoryview(data)
        for start in range(0, take, frame):
            stop = min(start + frame, take)
            self._conn.send_data(stream_id, view[start:stop], end_stream=finish and stop == take)
        if finish:
            if not take:
                self._conn.end_stream(stream_id)
            self._response_done(stream_id, stream)
        return take

    def end_stream(self, stream_id: int) -> None:
        """End the response (after its body)."""
        self.send_data(stream_id, b"", end=True)

    def reset_stream(
        self, stream_id: int, error_code: ErrorCode = ErrorCode.INTERNAL_ERROR
    ) -> None:
        """Abandon a stream (the backend failed mid-response: nginx resets with
        INTERNAL_ERROR). No event follows."""
        stream = self._live(stream_id)
        if stream is None:
            return
        del self._streams[stream_id]
        self._conn.reset_stream(stream_id, error_code)

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """The pump consumed ``nbytes`` of the stream's body: let the client send as much
        more (WINDOW_UPDATE when h2 judges it worth a frame)."""
        if nbytes < 0:
            raise ValueError("cannot acknowledge a negative byte count")
        if self._terminated or not nbytes:
            return
        self._conn.acknowledge_received_data(nbytes, stream_id)

    def start_shutdown(self) -> None:
        """Graceful shutdown: GOAWAY NO_ERROR naming the last stream received; the streams in
        flight finish, new ones are refused; :attr:`should_close` turns True when drained."""
        if not self._terminated:
            self._send_goaway(self._conn.highest_inbound_stream_id)

    def data_to_send(self) -> bytes:
        """Bytes to write to the client, in order; empties the buffer."""
        out = bytes(self._out) + self._conn.data_to_send()
        self._out.clear()
        return out

    def _response_done(self, stream_id: int, stream: _Stream) -> None:
        del self._streams[stream_id]
        if not stream.request_done:
            # RFC 9113 section 8.1: a complete response before the complete request ends with
            # RST_STREAM NO_ERROR, so the client stops sending (nginx does the same).
            self._conn.reset_stream(stream_id, ErrorCode.NO_ERROR)


def _code(value: int) -> ErrorCode | int:
    try:
        return ErrorCode(value)
    except ValueError:
        return value
