"""Property-based fuzzing of the HTTP/2 entry point (emulator.core.http.http2), with hypothesis.

The same shape as ``tests/e2e/test_fuzz.py`` (same ``APPGW_FUZZ_EXAMPLES`` and example database,
so ``python fuzz/run.py`` runs these longer too), but on the sans-I/O codec, with no sockets:

* field lists from a grammar of almost-valid requests (pseudo-headers in any order, duplicated
  or unknown, framing and connection headers, CR/LF/NUL, upper case, odd hosts and paths):
  either refused, or the head handed on writes as exactly one HTTP/1.1 request that parses
  back to the same fields (the h2→h1 downgrade adds and loses nothing);
* frame sequences from a frame grammar (HEADERS with and without END_HEADERS, CONTINUATION,
  padded DATA, RST_STREAM, PING, SETTINGS with any parameter, WINDOW_UPDATE, PRIORITY, GOAWAY,
  unknown types) on a handful of stream ids, cut at random points: the codec never raises,
  each stream's events come in a legal order, body bytes never pass the declared length,
  nothing of a refused stream is handed on, and after the connection ends nothing more comes;
* arbitrary bytes after the preface: the same, and the output stays bounded.
"""

from __future__ import annotations

import os
from typing import Final

from hpack import Encoder
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from emulator.core.http.codec import Framing, HttpError, parse_request_head, request_head_bytes
from emulator.core.http.http2 import (
    BodyEnded,
    ConnectionTerminated,
    DataReceived,
    Event,
    Http2Connection,
    RequestReceived,
    RequestRefused,
    StreamReset,
    request_head_from_fields,
)
from tests.unit.h2peer import PREFACE

FUZZ_EXAMPLES: Final = int(os.environ.get("APPGW_FUZZ_EXAMPLES", "50"))
_DATABASE_DIR: Final = os.environ.get("APPGW_FUZZ_DATABASE")
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES * 4,  # no sockets: four times the e2e properties' budget
    deadline=None,
    database=DirectoryBasedExampleDatabase(_DATABASE_DIR) if _DATABASE_DIR else None,
    derandomize=not _DATABASE_DIR,
    suppress_health_check=[HealthCheck.too_slow],
)

_NAMES: Final = [
    b":method",
    b":scheme",
    b":path",
    b":authority",
    b":protocol",
    b":status",
    b"host",
    b"Host",
    b"content-length",
    b"Content-Length",
    b"transfer-encoding",
    b"te",
    b"connection",
    b"keep-alive",
    b"upgrade",
    b"cookie",
    b"expect",
    b"x-client-cert",
    b"x-a",
    b"x a",
    b"x:a",
    b"",
]
_VALUES: Final = [
    b"GET",
    b"POST",
    b"HEAD",
    b"OPTIONS",
    b"CONNECT",
    b"GE T",
    b"https",
    b"http",
    b"/",
    b"/a?b=c",
    b"*",
    b"/a b",
    b"/a\r\nHost: evil",
    b"http://evil/x",
    b"app.example.com",
    b"APP.example.com:443",
    b"a@b",
    b"[::1]:8443",
    b"a.b:99999",
    b"",
    b"chunked",
    b"trailers",
    b"gzip",
    b"0",
    b"5",
    b"-1",
    b" 5",
    b"99999999999999999999999",
    b"100-continue",
    b"x\x00y",
    b"x\ny",
    b"v\t",
    b"\xff\x01",
    b"a=1",
]
_bad_field = st.tuples(
    st.one_of(st.sampled_from(_NAMES), st.binary(max_size=6)),
    st.one_of(st.sampled_from(_VALUES), st.binary(max_size=12)),
)
_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
).map(str.encode)
_good_field = st.one_of(
    st.tuples(st.sampled_from([b"x-a", b"accept", b"user-agent", b"cookie", b"x-b"]), _text),
    st.tuples(st.just(b"content-length"), st.integers(0, 400).map(lambda n: str(n).encode())),
    st.tuples(st.just(b"te"), st.just(b"trailers")),
    st.tuples(st.just(b"expect"), st.just(b"100-continue")),
    st.tuples(st.just(b"host"), st.just(b"a.b")),
)
_start = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]),
    st.sampled_from([b"/", b"/a?b=c", b"/x/y.z", b"*"]),
).map(
    lambda mp: [
        (b":method", mp[0]),
        (b":scheme", b"https"),
        (b":path", mp[1]),
        (b":authority", b"a.b"),
    ]
)
#: Mostly-valid requests: a valid start, sometimes cut short, then fields that are good four
#: times in five.
_fields = st.builds(
    lambda start, rest, keep: start[:keep] + rest,
    _start,
    st.lists(st.one_of(_good_field, _good_field, _good_field, _good_field, _bad_field), max_size=6),
    st.sampled_from([4, 4, 4, 4, 4, 3, 2, 0]),
)


def _check_handed_on_head(head_fields: list[tuple[str, str]], method: str, target: str) -> None:
    """A handed-on head must write as one HTTP/1.1 request that parses back unchanged."""
    wire = request_head_bytes(method, target, head_fields)
    parsed = parse_request_head(wire)
    assert parsed is not None
    again, used = parsed
    assert used == len(wire)
    assert again.headers == head_fields
    names = [name for name, _ in head_fields]
    assert names.count("host") == 1
    assert not {"connection", "transfer-encoding", "upgrade", "keep-alive", "te"} & set(names)
    assert all(name == name.lower() for name in names)


@FUZZ_SETTINGS
@given(fields=_fields, end_stream=st.booleans())
def test_request_fields_are_refused_or_hand_on_a_head_that_downgrades_exactly(
    fields: list[tuple[bytes, bytes]], end_stream: bool
) -> None:
    try:
        head = request_head_from_fields(fields, end_stream=end_stream)
    except HttpError as exc:
        status = exc.status
    else:
        status = 0
    event(f"status {status}")
    if status:
        assert status in (400, 431)
        return
    _check_handed_on_head(head.headers, head.method, head.target)
    assert head.version == "2.0"
    assert head.method != "CONNECT"
    assert head.target.startswith("/") or (head.target == "*" and head.method == "OPTIONS")
    if head.framing is Framing.LENGTH:
        assert [v for n, v in head.headers if n == "content-length"] == [str(head.length)]


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as RFC 9113 section 4.1 lays it out, with nothing checked: stream 0 for a
    stream frame and the like are exactly what the fuzzer should be able to send."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


class _Frames:
    """Builds frames with one HPACK encoder, so header blocks stay decodable in order."""

    def __init__(self) -> None:
        self.encoder = Encoder()

    def build(self, spec: tuple[object, ...]) -> bytes:
        kind, sid, *rest = spec
        assert isinstance(sid, int)
        if kind == "headers":
            fields, end_stream, end_headers = rest
            block = bytes(self.encoder.encode(fields))  # type: ignore[arg-type]
            return _frame(0x1, (0x1 if end_stream else 0) | (0x4 if end_headers else 0), sid, block)
        if kind == "continuation":
            data, end_headers = rest
            assert isinstance(data, bytes)
            return _frame(0x9, 0x4 if end_headers else 0, sid, data)
        if kind == "data":
            data, end_stream, pad = rest
            assert isinstance(data, bytes)
            assert isinstance(pad, int)
            payload = bytes((pad,)) + data + bytes(pad) if pad else data
            return _frame(0x0, (0x1 if end_stream else 0) | (0x8 if pad else 0), sid, payload)
        value = rest[0]
        if kind == "settings":
            assert isinstance(value, list)
            payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in value)
            return _frame(0x4, 0, sid, payload)
        if kind == "unknown":
            assert isinstance(value, bytes)
            return _frame(0xFA, 0, sid, value)
        assert isinstance(value, int)
        if kind == "rst":
            return _frame(0x3, 0, sid, value.to_bytes(4, "big"))
        if kind == "ping":
            return _frame(0x6, 0x1 if value else 0, sid, b"pingpong")
        if kind == "window":
            return _frame(0x8, 0, sid, value.to_bytes(4, "big"))
        if kind == "priority":
            return _frame(0x2, 0, sid, value.to_bytes(4, "big") + b"\x10")
        assert kind == "goaway"
        return _frame(0x7, 0, 0, sid.to_bytes(4, "big") + value.to_bytes(4, "big"))


_sid = st.sampled_from([1, 1, 1, 1, 1, 1, 1, 3, 3, 5, 7, 2, 0])
_settings = st.one_of(
    st.tuples(st.sampled_from([1, 3, 4, 6]), st.integers(0, 70000)),
    st.tuples(st.just(5), st.integers(16384, 40000)),
    st.tuples(st.integers(1, 9), st.integers(0, 2**32 - 1)),
)
_frame_spec = st.one_of(
    st.tuples(
        st.just("headers"),
        _sid,
        _fields,
        st.booleans(),
        st.sampled_from([True, True, True, False]),
    ),
    st.tuples(
        st.just("headers"),
        _sid,
        _fields,
        st.booleans(),
        st.sampled_from([True, True, True, False]),
    ),
    st.tuples(
        st.just("headers"),
        _sid,
        _fields,
        st.booleans(),
        st.sampled_from([True, True, True, False]),
    ),
    st.tuples(st.just("continuation"), _sid, st.binary(max_size=40), st.booleans()),
    st.tuples(
        st.just("data"),
        _sid,
        st.binary(max_size=300),
        st.booleans(),
        st.integers(min_value=0, max_value=20),
    ),
    st.tuples(
        st.just("data"),
        _sid,
        st.binary(max_size=300),
        st.booleans(),
        st.integers(min_value=0, max_value=20),
    ),
    st.tuples(
        st.just("data"),
        _sid,
        st.binary(max_size=300),
        st.booleans(),
        st.integers(min_value=0, max_value=20),
    ),
    st.tuples(st.just("rst"), _sid, st.integers(min_value=0, max_value=2**32 - 1)),
    st.tuples(st.just("ping"), st.sampled_from([0, 0, 1]), st.integers(0, 1)),
    st.tuples(
        st.just("settings"),
        st.sampled_from([0, 0, 1]),
        st.lists(_settings, max_size=3),
    ),
    st.tuples(
        st.just("window"),
        _sid,
        st.one_of(st.integers(1, 70000), st.integers(min_value=0, max_value=2**32 - 1)),
    ),
    st.tuples(st.just("priority"), _sid, st.integers(min_value=0, max_value=9)),
    st.tuples(st.just("goaway"), _sid, st.integers(min_value=0, max_value=2**32 - 1)),
    st.tuples(st.just("unknown"), _sid, st.binary(max_size=30)),
)


def _check_events(events: list[Event]) -> None:
    """Stream events in a legal order; bodies within their declared length; nothing of a
    refused stream handed on; nothing after the connection ended."""
    heads: dict[int, RequestReceived] = {}
    refused: set[int] = set()
    closed: set[int] = set()
    body: dict[int, int] = {}
    ended = False
    for item in events:
        assert not ended, f"{item} after the connection ended"
        if isinstance(item, ConnectionTerminated):
            ended = True
        elif isinstance(item, RequestReceived):
            assert item.stream_id not in heads
            assert item.stream_id not in refused
            heads[item.stream_id] = item
            head = item.head
            _check_handed_on_head(head.headers, head.method, head.target)
        elif isinstance(item, RequestRefused):
            assert item.stream_id not in heads
            refused.add(item.stream_id)
        elif isinstance(item, DataReceived):
            assert item.stream_id in heads, "body of a stream never handed on"
            assert item.stream_id not in closed
            body[item.stream_id] = body.get(item.stream_id, 0) + len(item.data)
            head = heads[item.stream_id].head
            if head.framing is Framing.LENGTH:
                assert body[item.stream_id] <= head.length
        elif isinstance(item, BodyEnded):
            assert item.stream_id in heads
            assert item.stream_id not in closed
            closed.add(item.stream_id)
            head = heads[item.stream_id].head
            if head.framing is Framing.LENGTH:
                assert body.get(item.stream_id, 0) == head.length
        elif isinstance(item, StreamReset):
            assert item.stream_id in heads or item.stream_id in refused
            closed.add(item.stream_id)


@FUZZ_SETTINGS
@given(
    opening=st.one_of(st.none(), _fields),
    specs=st.lists(_frame_spec, max_size=14),
    cuts=st.lists(st.integers(1, 64), max_size=6),
)
def test_frame_sequences_never_break_the_codec_or_hand_on_what_they_should_not(
    opening: list[tuple[bytes, bytes]] | None, specs: list[tuple[object, ...]], cuts: list[int]
) -> None:
    if opening is not None:
        # Most interesting sequences start with a request whose body is still to come.
        specs = [("headers", 1, opening, False, True), *specs]
    builder = _Frames()
    wire = PREFACE + _frame(0x4, 0, 0, b"") + b"".join(builder.build(s) for s in specs)
    server = Http2Connection()
    events: list[Event] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        events += server.receive_data(wire[pos : pos + cut])
        pos += cut
        if pos >= len(wire):
            break
    events += server.receive_data(wire[pos:]) if pos < len(wire) else []
    _check_events(events)
    for kind in sorted({type(e).__name__ for e in events}):
        event(kind)
    out = server.data_to_send()
    assert len(out) <= 1024 + 2 * len(wire)
    if server.terminated:
        assert server.receive_data(wire) == []


@FUZZ_SETTINGS
@given(chunks=st.lists(st.binary(min_size=1, max_size=512), min_size=1, max_size=6))
def test_any_bytes_after_the_preface_are_survived(chunks: list[bytes]) -> None:
    server = Http2Connection()
    events = server.receive_data(PREFACE)
    for chunk in chunks:
        events += server.receive_data(chunk)
    _check_events(events)
    assert len(server.data_to_send()) <= 1024 + 2 * sum(map(len, chunks))
