"""The HTTP/2 codec (emulator.core.http.http2), driven as a client and an attacker would drive it.

Each test runs a real ``h2`` client connection object (or hand-made frames) against
:class:`Http2Connection` in memory: no sockets, no event loop. The h2→h1 desync classes are
checked at the only place they can be stopped: nothing of a refused request is handed on.
"""

from __future__ import annotations

import re
from typing import TypeVar

import h2.events
import pytest
from hpack import Encoder
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from emulator.core.http.codec import Framing, HttpError, parse_request_head, request_head_bytes
from emulator.core.http.http2 import (
    CONNECTION_ERRORS_FROM_H2,
    BodyEnded,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    FieldTooLarge,
    Http2Connection,
    Http2Limits,
    RequestReceived,
    RequestRefused,
    StreamReset,
    WindowOpened,
    request_head_from_fields,
    response_fields,
)
from tests.unit.h2peer import PREFACE, Fields, Peer, RawClient, request_fields, unknown_frame

E = TypeVar("E")


def _of(kind: type[E], events: list[Event]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def _ended(events: list[Event]) -> ConnectionTerminated:
    """The ConnectionTerminated that must close ``events``."""
    last = events[-1]
    assert isinstance(last, ConnectionTerminated)
    return last


def _stream_events(stream_id: int, events: list[Event]) -> list[Event]:
    return [e for e in events if getattr(e, "stream_id", None) == stream_id]


# -- request heads (the pure mapping) -----------------------------------------------------------


def test_request_head_carries_the_http1_codecs_facts() -> None:
    head = request_head_from_fields(
        request_fields(
            b"/api/items?x=1",
            method=b"POST",
            authority=b"App.Example.com:443",
            extra=[
                (b"cookie", b"a=1"),
                (b"x-trace", b"t"),
                (b"cookie", b"b=2"),
                (b"te", b"trailers"),
                (b"content-length", b"5"),
                (b"expect", b"100-continue"),
            ],
        ),
        end_stream=False,
    )
    assert (head.method, head.target, head.version) == ("POST", "/api/items?x=1", "2.0")
    assert head.host == "app.example.com"
    # Host first (from :authority), cookies joined where the first one was (RFC 9113 8.2.3),
    # TE dropped (hop-by-hop).
    assert head.headers == [
        ("host", "App.Example.com:443"),
        ("cookie", "a=1; b=2"),
        ("x-trace", "t"),
        ("content-length", "5"),
        ("expect", "100-continue"),
    ]
    assert (head.framing, head.length) == (Framing.LENGTH, 5)
    assert head.expect_continue
    assert head.keep_alive
    assert head.upgrade is None
    assert not head.upgrade_h2c


@pytest.mark.parametrize(
    ("end_stream", "extra", "framing"),
    [
        (True, [], Framing.NONE),
        (False, [], Framing.CHUNKED),
        (False, [(b"content-length", b"0")], Framing.LENGTH),
        (True, [(b"content-length", b"0")], Framing.LENGTH),
    ],
)
def test_body_framing_facts(end_stream: bool, extra: Fields, framing: Framing) -> None:
    head = request_head_from_fields(request_fields(extra=extra), end_stream=end_stream)
    assert head.framing is framing


def test_empty_cookie_crumbs_are_skipped_when_joining() -> None:
    """Found by the fuzz property: "a" + "" joined as "a; " would end in whitespace, which
    an HTTP/1.1 parser strips, so the backend would read another value."""
    fields = request_fields(extra=[(b"cookie", b"a=1"), (b"cookie", b""), (b"cookie", b"b=2")])
    head = request_head_from_fields(fields, end_stream=True)
    assert head.headers[1:] == [("cookie", "a=1; b=2")]
    only_empty = request_head_from_fields(request_fields(extra=[(b"cookie", b"")]), end_stream=True)
    assert [name for name, _ in only_empty.headers] == ["host"]


def test_host_header_alone_routes_and_stays_as_sent() -> None:
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"a.b")]
    head = request_head_from_fields(fields, end_stream=True)
    assert head.host == "a.b"
    assert head.headers == [("host", "a.b")]


def test_asterisk_path_is_accepted_for_options_only() -> None:
    head = request_head_from_fields(request_fields(b"*", method=b"OPTIONS"), end_stream=True)
    assert head.target == "*"
    with pytest.raises(HttpError, match="not origin-form"):
        request_head_from_fields(request_fields(b"*"), end_stream=True)


def _without(name: bytes) -> Fields:
    return [f for f in request_fields() if f[0] != name]


#: (case, fields, end_stream, reason): every one is a 400 and nothing may be handed on.
MALFORMED: list[tuple[str, Fields, bool, str]] = [
    ("no :method", _without(b":method"), True, "no :method"),
    ("no :scheme", _without(b":scheme"), True, "no :scheme"),
    ("no :path", _without(b":path"), True, "no :path"),
    ("empty :path", request_fields(b""), True, "empty :path"),
    ("absolute :path", request_fields(b"http://evil/x"), True, "not origin-form"),
    ("relative :path", request_fields(b"x/y"), True, "not origin-form"),
    ("space in :path", request_fields(b"/a HTTP/1.1"), True, "invalid :path"),
    ("tab in :path", request_fields(b"/a\tb"), True, "invalid :path"),
    ("CRLF in :path", request_fields(b"/a\r\nHost: evil"), True, "NUL, CR, LF"),
    ("non-ASCII :path", request_fields("/é".encode()), True, "invalid :path"),
    ("unknown pseudo", request_fields(extra=[(b":protocol", b"websocket")]), True, "unknown"),
    ("response pseudo", request_fields(extra=[(b":status", b"200")]), True, "unknown"),
    (
        "duplicate :path",
        [*request_fields(), (b":path", b"/admin")],
        True,
        "duplicate :path",
    ),
    (
        "pseudo after regular",
        [(b":method", b"GET"), (b"x-a", b"1"), (b":scheme", b"https"), (b":path", b"/")],
        True,
        "after regular",
    ),
    ("bad method", request_fields(method=b"GE T"), True, "invalid :method"),
    (
        "bad scheme",
        [(b":method", b"GET"), (b":scheme", b"1x"), (b":path", b"/"), (b":authority", b"a.b")],
        True,
        "scheme",
    ),
    ("upper-case name", request_fields(extra=[(b"X-Forwarded-For", b"1.2.3.4")]), True, "upper"),
    ("separator in name", request_fields(extra=[(b"x(a)", b"1")]), True, "invalid header name"),
    ("empty name", request_fields(extra=[(b"", b"1")]), True, "invalid header name"),
    ("CR LF in value", request_fields(extra=[(b"x-a", b"1\r\nhost: evil")]), True, "CR, LF"),
    ("bare LF in value", request_fields(extra=[(b"x-a", b"1\nx: y")]), True, "CR, LF"),
    ("NUL in value", request_fields(extra=[(b"x-a", b"a\x00b")]), True, "NUL"),
    ("VT in value", request_fields(extra=[(b"x-a", b"a\x0bb")]), True, "VT"),
    ("leading space", request_fields(extra=[(b"x-a", b" v")]), True, "whitespace"),
    ("trailing tab", request_fields(extra=[(b"x-a", b"v\t")]), True, "whitespace"),
    ("connection", request_fields(extra=[(b"connection", b"close")]), True, "connection-"),
    ("keep-alive", request_fields(extra=[(b"keep-alive", b"5")]), True, "connection-"),
    ("proxy-connection", request_fields(extra=[(b"proxy-connection", b"x")]), True, "connect"),
    ("upgrade", request_fields(extra=[(b"upgrade", b"websocket")]), True, "connection-"),
    (
        "transfer-encoding (TE smuggling)",
        request_fields(method=b"POST", extra=[(b"transfer-encoding", b"chunked")]),
        False,
        "connection-",
    ),
    ("TE gzip", request_fields(extra=[(b"te", b"gzip")]), True, "TE other"),
    ("TE list", request_fields(extra=[(b"te", b"trailers, gzip")]), True, "TE other"),
    ("two TE", request_fields(extra=[(b"te", b"trailers"), (b"te", b"trailers")]), True, "TE"),
    ("host disagrees", request_fields(extra=[(b"host", b"admin.internal")]), True, "disagree"),
    ("host differs in case", request_fields(extra=[(b"host", b"APP.example.com")]), True, "disag"),
    (
        "two hosts",
        [*_without(b":authority"), (b"host", b"a.b"), (b"host", b"c.d")],
        True,
        "more than one Host",
    ),
    ("no host at all", _without(b":authority"), True, "neither"),
    ("userinfo authority", request_fields(authority=b"user@app.example.com"), True, "userinfo"),
    ("space in authority", request_fields(authority=b"a b"), True, "invalid host"),
    ("port too big", request_fields(authority=b"a.b:99999"), True, "port"),
    ("empty authority", request_fields(authority=b""), True, "empty"),
    (
        "two content-lengths",
        request_fields(extra=[(b"content-length", b"5"), (b"content-length", b"5")]),
        False,
        "more than once",
    ),
    ("huge content-length", request_fields(extra=[(b"content-length", b"9" * 20)]), False, "2^63"),
    (
        "content-length with END_STREAM",
        request_fields(extra=[(b"content-length", b"5")]),
        True,
        "stream ended",
    ),
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"a.b:443")], True, "CONNECT"),
]


@pytest.mark.parametrize(
    ("fields", "end_stream", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_are_refused_with_400(
    fields: Fields, end_stream: bool, reason: str
) -> None:
    with pytest.raises(HttpError, match=re.escape(reason)) as caught:
        request_head_from_fields(fields, end_stream=end_stream)
    assert caught.value.status == 400
    assert not isinstance(caught.value, FieldTooLarge)


def test_too_many_fields_is_431() -> None:
    fields = request_fields(extra=[(b"x-a", b"1")] * 1000)
    with pytest.raises(HttpError, match="more than 1000") as caught:
        request_head_from_fields(fields, end_stream=True)
    assert caught.value.status == 431


def test_field_and_list_sizes_stop_at_azures_limits() -> None:
    at_limit = request_fields(extra=[(b"x-big", b"v" * (8192 - 5))])
    assert request_head_from_fields(at_limit, end_stream=True).headers[-1][0] == "x-big"
    with pytest.raises(FieldTooLarge, match="field of 8193 bytes"):
        request_head_from_fields(
            request_fields(extra=[(b"x-big", b"v" * (8193 - 5))]), end_stream=True
        )
    base = sum(len(n) + len(v) for n, v in request_fields())
    list_at_limit = request_fields(
        extra=[(b"x-a", b"v" * 4000)] * 4 + [(b"x-b", b"v" * (16384 - base - 4 * 4003 - 3))]
    )
    request_head_from_fields(list_at_limit, end_stream=True)
    with pytest.raises(FieldTooLarge, match="header list of 16385 bytes"):
        request_head_from_fields(
            [*list_at_limit[:-1], (b"x-b", b"v" * (16384 - base - 4 * 4003 - 2))],
            end_stream=True,
        )


def test_every_accepted_head_writes_as_one_http1_request_with_the_same_fields() -> None:
    """The downgrade property: what is handed on re-serialises to HTTP/1.1 and parses back
    to the same request (no field added, none lost)."""
    head = request_head_from_fields(
        request_fields(
            b"/p?q=%20",
            extra=[(b"x-odd", b"\x01\x7f\xff obs-text"), (b"cookie", b"a"), (b"cookie", b"b")],
        ),
        end_stream=True,
    )
    wire = request_head_bytes(head.method, head.target, head.headers)
    parsed = parse_request_head(wire)
    assert parsed is not None
    again, used = parsed
    assert used == len(wire)
    assert (again.method, again.target, again.host) == (head.method, head.target, head.host)
    assert again.headers == head.headers


def test_response_fields_drop_connection_specific_headers() -> None:
    fields = response_fields(
        200,
        [
            ("Content-Type", "text/plain"),
            ("Connection", "keep-alive, X-Internal"),
            ("X-Internal", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "x"),
            ("Set-Cookie", "a=1"),
        ],
    )
    assert fields == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
    ]
    with pytest.raises(ValueError, match="three-digit"):
        response_fields(42, [])
    with pytest.raises(ValueError, match="latin-1"):
        response_fields(200, [("x-a", "\u2603")])


# -- the connection: round trips ----------------------------------------------------------------


def test_server_preface_advertises_the_limits() -> None:
    peer = Peer()
    settings = [f for f in peer.frames() if isinstance(f, SettingsFrame) and "ACK" not in f.flags]
    assert settings[0].settings == {
        SettingsFrame.HEADER_TABLE_SIZE: 4096,
        SettingsFrame.ENABLE_PUSH: 0,
        SettingsFrame.MAX_CONCURRENT_STREAMS: 128,
        SettingsFrame.INITIAL_WINDOW_SIZE: 65536,
        SettingsFrame.MAX_FRAME_SIZE: 16384,
        SettingsFrame.MAX_HEADER_LIST_SIZE: 16384,
        # RFC 8441 extended CONNECT (WebSockets over h2) is not offered; nginx does not either.
        SettingsFrame.ENABLE_CONNECT_PROTOCOL: 0,
    }
    window = [f for f in peer.frames() if isinstance(f, WindowUpdateFrame) and f.stream_id == 0]
    assert 65535 + window[0].window_increment == 128 * 65536


def test_request_with_body_and_response_round_trip() -> None:
    peer = Peer()
    sid, events = peer.request(
        request_fields(b"/upload", method=b"POST", extra=[(b"content-length", b"11")]),
        b"hello world",
    )
    (received,) = _of(RequestReceived, events)
    assert received.head.target == "/upload"
    assert b"".join(e.data for e in _of(DataReceived, events)) == b"hello world"
    assert _of(BodyEnded, events) == [BodyEnded(sid)]
    peer.server.acknowledge(sid, 11)
    peer.server.send_response(sid, 201, [("Content-Type", "text/plain"), ("Connection", "close")])
    assert peer.server.send_data(sid, b"created", end=True) == 7
    peer.exchange()
    assert peer.responses()[sid] == [(b":status", b"201"), (b"content-type", b"text/plain")]
    body = b"".join(
        e.data or b"" for e in peer.client_events if isinstance(e, h2.events.DataReceived)
    )
    assert body == b"created"
    assert any(isinstance(e, h2.events.StreamEnded) for e in peer.client_events)
    assert peer.server.open_streams == 0


def test_refused_request_gets_its_page_and_the_connection_carries_on() -> None:
    peer = Peer()
    sid, events = peer.request(
        request_fields(method=b"POST", extra=[(b"connection", b"keep-alive")]), b"x" * 1000
    )
    assert _stream_events(sid, events) == [
        RequestRefused(sid, 400, "connection-specific header 'connection' in an HTTP/2 request")
    ]
    peer.server.send_response(sid, 400, [("content-type", "text/html")])
    peer.server.send_data(sid, b"<html>400</html>", end=True)
    peer.exchange()
    assert peer.responses()[sid][0] == (b":status", b"400")
    assert sid not in peer.resets()  # the request was complete: no RST needed
    sid2, events = peer.request(request_fields(b"/next"))
    assert [type(e) for e in _stream_events(sid2, events)] == [RequestReceived, BodyEnded]
    assert not peer.goaways()


def test_data_of_a_refused_request_is_dropped_and_its_window_given_back() -> None:
    peer = Peer()
    fields = request_fields(method=b"POST", extra=[(b"transfer-encoding", b"chunked")])
    sid, events = peer.request(fields, end=False)
    assert _of(RequestRefused, events)
    for _ in range(3):
        # Far more than one window: the codec must keep reopening it, handing nothing on.
        smuggled = b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n" * 400
        peer.client.send_data(sid, smuggled)
        peer.client.send_data(sid, smuggled)
        events = peer.exchange()
        assert not _of(DataReceived, events)
    assert peer.client.local_flow_control_window(sid) > 0


def test_response_before_the_request_ends_resets_the_stream_with_no_error() -> None:
    peer = Peer()
    sid, _ = peer.request(request_fields(method=b"POST"), b"partial", end=False)
    peer.server.send_response(sid, 413, [], end=True)
    peer.exchange()
    assert peer.resets()[sid] == ErrorCode.NO_ERROR


def test_padding_counts_for_flow_control_but_not_for_the_body() -> None:
    raw = RawClient()
    fields = request_fields(method=b"POST", extra=[(b"content-length", b"4")])
    events = raw.send(raw.headers(1, fields, end_stream=False))
    events += raw.send(raw.data(1, b"body", end_stream=True, pad=200))
    assert [e for e in events if isinstance(e, DataReceived)] == [DataReceived(1, b"body")]
    assert _of(BodyEnded, events) == [BodyEnded(1)]


def test_informational_and_expect_continue() -> None:
    peer = Peer()
    sid, events = peer.request(
        request_fields(method=b"PUT", extra=[(b"expect", b"100-continue")]), end=False
    )
    (received,) = _of(RequestReceived, events)
    assert received.head.expect_continue
    peer.server.send_informational(sid)
    peer.exchange()
    assert any(isinstance(e, h2.events.InformationalResponseReceived) for e in peer.client_events)
    with pytest.raises(ValueError, match="informational"):
        peer.server.send_informational(sid, 200)


def test_sending_on_a_stream_the_client_reset_does_nothing() -> None:
    peer = Peer()
    sid, _ = peer.request(request_fields())
    peer.client.reset_stream(sid, 0x8)
    events = peer.exchange()
    assert events == [StreamReset(sid, ErrorCode.CANCEL, True, "the client reset the stream")]
    peer.server.send_response(sid, 200, [])
    assert peer.server.send_data(sid, b"late", end=True) == 0
    assert peer.server.sendable(sid) == 0
    with pytest.raises(ValueError, match="never opened"):
        peer.server.send_response(99, 200, [])
    with pytest.raises(ValueError, match="not a client stream"):
        peer.server.send_response(2, 200, [])


def test_client_goaway_and_eof_end_the_connection() -> None:
    peer = Peer()
    peer.client.close_connection()
    events = peer.exchange()
    assert events == [ConnectionTerminated(ErrorCode.NO_ERROR, True, "the client sent GOAWAY")]
    assert peer.server.should_close
    assert peer.server.receive_data(b"anything") == []
    other = Peer()
    assert other.server.receive_data(b"") == [
        ConnectionTerminated(ErrorCode.NO_ERROR, True, "the client closed the connection")
    ]


def test_an_http1_request_on_an_h2_connection_gets_goaway() -> None:
    server = Http2Connection()
    server.data_to_send()
    events = server.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert _ended(events).error_code == ErrorCode.PROTOCOL_ERROR
    assert _ended(events).reason == "ProtocolError: Invalid HTTP/2 preamble."
    # RFC 9113 section 3.4: the GOAWAY MAY be omitted for a bad preface; nothing else is sent.
    assert server.data_to_send() == b""
    assert server.should_close


# -- h2→h1 desync classes through the connection -----------------------------------------------


@pytest.mark.parametrize(
    ("case", "fields"),
    [
        (
            "TE smuggling",
            request_fields(method=b"POST", extra=[(b"transfer-encoding", b"chunked")]),
        ),
        ("CRLF header injection", request_fields(extra=[(b"x-a", b"a\r\nX-Admin: 1")])),
        ("CRLF in a name", request_fields(extra=[(b"x-a\r\nx-admin", b"1")])),
        ("request line injection", request_fields(b"/ HTTP/1.1\r\nHost: evil\r\n\r\nGET /")),
        ("space in :path", request_fields(b"/public /admin")),
        ("Host vs :authority", request_fields(extra=[(b"host", b"admin.internal")])),
        ("upper-case Content-Length", request_fields(extra=[(b"Content-Length", b"0")])),
    ],
)
def test_desync_shapes_are_refused_and_nothing_is_handed_on(case: str, fields: Fields) -> None:
    peer = Peer()
    sid, events = peer.request(fields, b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in _stream_events(sid, events)] == [RequestRefused], case
    assert not peer.goaways()


def test_more_data_than_content_length_resets_the_stream_only() -> None:
    raw = RawClient()
    fields = request_fields(method=b"POST", extra=[(b"content-length", b"5")])
    events = raw.send(raw.headers(1, fields, end_stream=False) + raw.data(1, b"12345"))
    assert [type(e) for e in events] == [RequestReceived, DataReceived]
    events = raw.send(raw.data(1, b"GET /admin HTTP/1.1\r\n\r\n", end_stream=True))
    assert events == [
        StreamReset(1, ErrorCode.PROTOCOL_ERROR, False, "content-length 5 but 28 bytes of DATA")
    ]
    assert raw.resets()[1] == ErrorCode.PROTOCOL_ERROR
    events = raw.send(raw.headers(3, request_fields(b"/next")))
    assert [type(e) for e in events] == [RequestReceived, BodyEnded]
    assert not raw.goaways()


def test_less_data_than_content_length_resets_the_stream() -> None:
    raw = RawClient()
    fields = request_fields(method=b"POST", extra=[(b"content-length", b"100")])
    events = raw.send(raw.headers(1, fields, end_stream=False) + raw.data(1, b"x", end_stream=True))
    assert [type(e) for e in events] == [RequestReceived, StreamReset]
    assert not _of(DataReceived, events)  # the frame that broke the rule is not handed on
    assert not _of(BodyEnded, events)


def test_trailers_ending_the_body_early_reset_the_stream() -> None:
    raw = RawClient()
    fields = request_fields(method=b"POST", extra=[(b"content-length", b"10")])
    events = raw.send(raw.headers(1, fields, end_stream=False) + raw.data(1, b"abc"))
    events += raw.send(raw.headers(1, [(b"x-trailer", b"1")], end_stream=True))
    assert [type(e) for e in events] == [RequestReceived, DataReceived, StreamReset]
    assert not _of(BodyEnded, events)


def _h2_connection_error_frames(raw: RawClient, case: str) -> bytes:
    post = request_fields(method=b"POST")
    if case.startswith("a content-length value"):
        return raw.headers(1, [*post, (b"content-length", b"5x")], end_stream=False)
    if case.startswith("two content-length"):
        fields = [*post, (b"content-length", b"5"), (b"content-length", b"6")]
        return raw.headers(1, fields, end_stream=False)
    if case.startswith("a HEADERS frame without END_STREAM"):
        return raw.headers(1, post, end_stream=False) + raw.headers(
            1, [(b"x-t", b"1")], end_stream=False
        )
    assert case.startswith("a request with a 1xx :status")
    return raw.headers(1, [(b":status", b"100"), *request_fields()])


@pytest.mark.parametrize("case", CONNECTION_ERRORS_FROM_H2)
def test_h2_only_connection_errors_end_the_connection_with_nothing_forwarded(case: str) -> None:
    raw = RawClient()
    events = raw.send(_h2_connection_error_frames(raw, case))
    assert isinstance(events[-1], ConnectionTerminated)
    assert _ended(events).error_code == ErrorCode.PROTOCOL_ERROR
    assert raw.goaways()[0].error_code == ErrorCode.PROTOCOL_ERROR
    assert not _of(DataReceived, events)
    assert not _of(BodyEnded, events)


# -- limits -------------------------------------------------------------------------------------


def test_request_limit_sends_goaway_no_error_and_drains() -> None:
    peer = Peer()
    last = 0
    for _ in range(1000):
        sid, events = peer.request(request_fields())
        assert [type(e) for e in _stream_events(sid, events)] == [RequestReceived, BodyEnded]
        if sid < 1999:
            peer.server.send_response(sid, 204, [], end=True)
        last = sid
    assert peer.server.requests == 1000
    (goaway,) = peer.goaways()
    assert (goaway.last_stream_id, goaway.error_code) == (last, ErrorCode.NO_ERROR)
    assert peer.server.goaway_sent
    assert not peer.server.should_close
    # The client ignores GOAWAY here (an attacker): its next stream is refused, not served.
    raw_sid = last + 2
    peer.client.send_headers(raw_sid, request_fields(), end_stream=True)
    events = peer.exchange()
    assert not _of(RequestReceived, events)
    assert peer.resets()[raw_sid] == ErrorCode.REFUSED_STREAM
    # The stream in flight still finishes; then the connection may close.
    peer.server.send_response(last, 200, [])
    peer.server.send_data(last, b"done", end=True)
    peer.exchange()
    assert peer.responses()[last][0] == (b":status", b"200")
    assert peer.server.should_close


def test_streams_over_the_concurrency_limit_are_refused_not_fatal() -> None:
    raw = RawClient()
    # The first flight, before the client could have read our SETTINGS: 130 open streams.
    flight = b"".join(
        raw.headers(sid, request_fields(method=b"POST"), end_stream=False)
        for sid in range(1, 261, 2)
    )
    events = raw.send(flight)
    assert len(_of(RequestReceived, events)) == 128
    assert raw.resets() == {257: ErrorCode.REFUSED_STREAM, 259: ErrorCode.REFUSED_STREAM}
    assert raw.server.open_streams == 128
    raw.server.send_response(1, 200, [], end=True)
    events = raw.send(raw.headers(261, request_fields()))
    assert [type(e) for e in events] == [RequestReceived, BodyEnded]
    assert not raw.goaways()


def test_the_130th_refused_stream_ends_the_connection_as_in_nginx() -> None:
    raw = RawClient()
    held = b"".join(
        raw.headers(sid, request_fields(method=b"POST"), end_stream=False)
        for sid in range(1, 257, 2)
    )
    assert len(_of(RequestReceived, raw.send(held))) == 128
    events: list[Event] = []
    for n, sid in enumerate(range(257, 257 + 2 * 130, 2), start=1):
        events = raw.send(raw.headers(sid, request_fields()))
        if n < 130:
            assert events == [], n
    assert events == [ConnectionTerminated(ErrorCode.NO_ERROR, False, "too many refused streams")]
    assert len(raw.resets()) == 129


def test_rapid_reset_in_one_read_is_capped_then_the_connection_ends() -> None:
    """CVE-2023-44487: open and cancel streams as fast as possible, never over the
    concurrency limit. nginx's bounds: 2 x 128 new streams per read, then REFUSED_STREAM;
    more than 128 refused streams end the connection."""
    raw = RawClient()
    attack = b"".join(
        raw.headers(sid, request_fields()) + raw.rst(sid) for sid in range(1, 4001, 2)
    )
    events = raw.send(attack)
    assert len(_of(RequestReceived, events)) == 256
    assert _of(ConnectionTerminated, events) == [
        ConnectionTerminated(ErrorCode.NO_ERROR, False, "too many refused streams")
    ]
    assert raw.goaways()[-1].error_code == ErrorCode.NO_ERROR
    assert raw.send(attack) == []


def test_rapid_reset_over_many_reads_is_bounded_by_the_request_limit() -> None:
    raw = RawClient()
    handed_on = 0
    terminated: list[Event] = []
    sid = 1
    for _ in range(60):
        chunk = b""
        for _ in range(50):
            chunk += raw.headers(sid, request_fields()) + raw.rst(sid)
            sid += 2
        events = raw.send(chunk)
        handed_on += len(_of(RequestReceived, events))
        terminated += _of(ConnectionTerminated, events)
    assert handed_on == 1000
    assert raw.goaways()[0].error_code == ErrorCode.NO_ERROR
    assert raw.goaways()[0].last_stream_id == 1999
    assert terminated == [
        ConnectionTerminated(ErrorCode.NO_ERROR, False, "too many refused streams")
    ]


def test_continuation_flood_of_large_frames_ends_the_connection() -> None:
    raw = RawClient()
    start = raw.headers(1, request_fields(), end_headers=False)
    events = raw.send(start)
    junk = raw.continuation(1, b"\x00" * 16384)
    for _ in range(3):
        assert raw.send(junk) == []
    events = raw.send(junk + junk)
    assert events == [
        ConnectionTerminated(ErrorCode.ENHANCE_YOUR_CALM, False, "header block over 65536 bytes")
    ]
    assert raw.goaways()[0].error_code == ErrorCode.ENHANCE_YOUR_CALM


def test_continuation_flood_of_empty_frames_ends_the_connection() -> None:
    raw = RawClient()
    events = raw.send(raw.headers(1, request_fields(), end_headers=False))
    events = raw.send(raw.continuation(1, b"") * 200)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert _ended(events).error_code == ErrorCode.PROTOCOL_ERROR  # h2's 64-frame backlog


def test_oversized_header_field_ends_the_connection_with_enhance_your_calm() -> None:
    peer = Peer()
    _, events = peer.request(request_fields(extra=[(b"x-big", b"v" * 9000)]))
    assert events[-1] == ConnectionTerminated(
        ErrorCode.ENHANCE_YOUR_CALM, False, "header field of 9005 bytes (limit 8192)"
    )
    assert peer.goaways()[0].error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert not _of(RequestReceived, events)


def test_oversized_header_list_ends_the_connection() -> None:
    peer = Peer()
    _, events = peer.request(request_fields(extra=[(b"x-a", b"v" * 8000)] * 3))
    assert isinstance(events[-1], ConnectionTerminated)
    assert _ended(events).reason.startswith("header list of")
    assert not _of(RequestReceived, events)


def test_hpack_bomb_is_stopped_by_the_decoder_bound() -> None:
    raw = RawClient()
    # One 4 KB value in the dynamic table, then a block that names it thousands of times:
    # tiny on the wire, huge once decoded.
    first = raw.headers(1, request_fields(extra=[(b"x-bomb", b"b" * 4000)]))
    raw.send(first)
    bomb = raw.encoder.encode([(b"x-bomb", b"b" * 4000)] * 40)
    frame = HeadersFrame(3, data=bytes(bomb), flags=["END_STREAM", "END_HEADERS"]).serialize()
    assert len(frame) < 200
    events = raw.send(frame)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert _ended(events).error_code == ErrorCode.ENHANCE_YOUR_CALM


def test_stream_window_is_64_kib_and_opens_as_the_body_is_consumed() -> None:
    peer = Peer()
    sid, _ = peer.request(request_fields(method=b"POST"), end=False)
    assert peer.client.local_flow_control_window(sid) == 65536
    peer.client.send_data(sid, b"x" * 16384)
    peer.client.send_data(sid, b"x" * 16384)
    peer.client.send_data(sid, b"x" * 16384)
    peer.client.send_data(sid, b"x" * 16384)
    events = peer.exchange()
    assert sum(len(e.data) for e in _of(DataReceived, events)) == 65536
    assert peer.client.local_flow_control_window(sid) == 0
    peer.server.acknowledge(sid, 65536)
    peer.exchange()
    assert peer.client.local_flow_control_window(sid) == 65536


def test_data_past_the_stream_window_is_a_flow_control_error() -> None:
    raw = RawClient()
    events = raw.send(raw.headers(1, request_fields(method=b"POST"), end_stream=False))
    flood = b"".join(raw.data(1, b"x" * 16384) for _ in range(5))
    events = raw.send(flood)
    assert [type(e) for e in events][-1] is ConnectionTerminated
    assert _ended(events).error_code == ErrorCode.FLOW_CONTROL_ERROR
    assert sum(len(e.data) for e in _of(DataReceived, events)) <= 65536


def test_frame_over_16_kib_is_refused_without_waiting_for_it() -> None:
    raw = RawClient()
    header = (16385).to_bytes(3, "big") + bytes((0x0, 0x0)) + (1).to_bytes(4, "big")
    events = raw.send(header)  # only the frame header: no need to buffer 16 KiB first
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert _ended(events).error_code == ErrorCode.FRAME_SIZE_ERROR


def test_response_data_follows_the_clients_window() -> None:
    peer = Peer()
    sid, _ = peer.request(request_fields())
    peer.server.send_response(sid, 200, [])
    assert peer.server.sendable(sid) == 65535
    assert peer.server.send_data(sid, b"y" * 100_000, end=True) == 65535
    assert peer.server.sendable(sid) == 0
    assert peer.server.open_streams == 1  # not ended: 34,465 bytes are still to go
    peer.exchange()
    for event in peer.client_events:
        if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
            peer.client.acknowledge_received_data(event.flow_controlled_length, sid)
    events = peer.exchange()
    assert WindowOpened(sid) in events
    rest = 100_000 - 65535
    assert peer.server.sendable(sid) >= rest
    assert peer.server.send_data(sid, b"y" * rest, end=True) == rest
    assert peer.server.open_streams == 0


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(SettingsFrame(0).serialize(), id="SETTINGS"),
        pytest.param(PingFrame(0, opaque_data=b"12345678").serialize(), id="PING"),
    ],
)
def test_settings_and_ping_floods_end_the_connection(frame: bytes) -> None:
    limits = Http2Limits(flood_allowance_bytes=8 * 1024)
    raw = RawClient(limits)
    out_before = len(raw.wire)
    terminated: list[Event] = []
    sent = 0
    for _ in range(200):
        terminated = _of(ConnectionTerminated, raw.send(frame * 100))
        sent += 100
        if terminated:
            break
    assert terminated == [ConnectionTerminated(ErrorCode.NO_ERROR, False, "control-frame flood")]
    # Bounded: the flood stopped within 8 x (allowance + payload) bytes, and so did our ACKs.
    assert sent * len(frame) <= 8 * 8 * 1024 + 100 * len(frame)
    assert len(raw.wire) - out_before <= 2 * sent * 17


def test_unknown_frame_flood_ends_the_connection_at_nginxs_default_allowance() -> None:
    raw = RawClient()
    junk = unknown_frame(0xFA, b"z" * 16384)
    received = 0
    events: list[Event] = []
    while not events and received < 16 * 1024 * 1024:
        events = raw.send(junk * 16)
        received += 16 * len(junk)
    assert events == [ConnectionTerminated(ErrorCode.NO_ERROR, False, "control-frame flood")]
    assert received <= 8 * 1024 * 1024 + 16 * len(junk)


def test_a_real_upload_is_not_a_flood() -> None:
    peer = Peer(Http2Limits(flood_allowance_bytes=8 * 1024))
    sid, _ = peer.request(request_fields(method=b"POST"), end=False)
    for _ in range(40):
        peer.client.send_data(sid, b"u" * 16000)
        peer.client.ping(b"keepaliv")
        events = peer.exchange()
        for event in _of(DataReceived, events):
            peer.server.acknowledge(sid, len(event.data))
        assert not _of(ConnectionTerminated, events)


def test_graceful_shutdown_lets_streams_in_flight_finish() -> None:
    peer = Peer()
    first, _ = peer.request(request_fields(b"/a"))
    second, _ = peer.request(request_fields(b"/b", method=b"POST"), b"part", end=False)
    peer.server.start_shutdown()
    peer.exchange()
    (goaway,) = peer.goaways()
    assert (goaway.last_stream_id, goaway.error_code) == (second, ErrorCode.NO_ERROR)
    late, events = peer.request(request_fields(b"/late"))
    assert not _of(RequestReceived, events)
    assert peer.resets()[late] == ErrorCode.REFUSED_STREAM
    peer.client.send_data(second, b" two", end_stream=True)
    events = peer.exchange()
    assert [type(e) for e in events] == [DataReceived, BodyEnded]
    for sid in (first, second):
        peer.server.send_response(sid, 200, [])
        assert not peer.server.should_close
        peer.server.send_data(sid, b"ok", end=True)
    peer.exchange()
    assert set(peer.responses()) == {first, second}
    assert peer.server.should_close
    assert len(peer.goaways()) == 1


def test_limits_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        Http2Limits(max_frame_size=1000)
    with pytest.raises(ValueError, match="initial_window"):
        Http2Limits(initial_window=2**31)
    with pytest.raises(ValueError, match="max_header_list_bytes"):
        Http2Limits(max_header_list_bytes=0)
    with pytest.raises(ValueError, match="max_requests"):
        Http2Limits(max_requests=0)


def test_preface_and_frames_split_at_every_byte() -> None:
    server = Http2Connection()
    server.data_to_send()
    block = Encoder().encode(
        request_fields(b"/split", method=b"POST", extra=[(b"content-length", b"3")])
    )
    wire = (
        PREFACE
        + SettingsFrame(0).serialize()
        + HeadersFrame(1, data=bytes(block), flags=["END_HEADERS"]).serialize()
        + DataFrame(1, data=b"abc", flags=["END_STREAM"]).serialize()
    )
    events: list[Event] = []
    for byte in wire:
        events += server.receive_data(bytes((byte,)))
    assert [e for e in events if not isinstance(e, WindowOpened)][1:] == [
        DataReceived(1, b"abc"),
        BodyEnded(1),
    ]
    assert _of(RequestReceived, events)[0].head.target == "/split"


def test_a_client_that_opens_streams_and_never_reads_gets_one_window_of_bytes() -> None:
    """128 streams, each answered with 100 KB, and a client that never acknowledges: the
    codec hands out no more DATA than the client's connection window (65,535 bytes)."""
    peer = Peer()
    sids = []
    for _ in range(128):
        sid, _events = peer.request(request_fields())
        sids.append(sid)
    before = len(peer.wire)
    taken = 0
    for sid in sids:
        peer.server.send_response(sid, 200, [])
        taken += peer.server.send_data(sid, b"z" * 100_000, end=True)
        peer.wire += peer.server.data_to_send()
    assert taken == 65535
    assert len(peer.wire) - before < 65535 + 128 * 64
    assert all(peer.server.sendable(sid) == 0 for sid in sids)
    assert peer.server.open_streams == 128


def test_h2_is_imported_only_when_a_connection_is_made() -> None:
    import subprocess
    import sys

    script = (
        "import sys, emulator, emulator.core.http.http2 as m\n"
        "assert 'h2' not in sys.modules, 'import loaded h2'\n"
        "m.Http2Connection()\n"
        "assert 'h2.connection' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
