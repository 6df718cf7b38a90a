"""Clients that drive :class:`emulator.core.http.http2.Http2Connection` without sockets.

Two kinds, as an attacker would use them:

* :class:`Peer`: a real ``h2`` client connection object wired to the codec in memory (sans-I/O
  on both sides). Its outbound header validation is off, so it encodes upper-case names, CR/LF
  values, pseudo-headers in any order: what a hostile client can put on the wire.
* :class:`RawClient`: hand-built frames (hyperframe + its own HPACK encoder) for what no
  well-behaved state machine sends: CONTINUATION floods, DATA past the window, frames over the
  size limit, rapid resets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import h2.config
import h2.connection
import h2.events
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from emulator.core.http.http2 import DEFAULT_LIMITS, Event, Http2Connection, Http2Limits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Fields = list[tuple[bytes, bytes]]


def request_fields(
    path: bytes = b"/",
    *,
    method: bytes = b"GET",
    authority: bytes = b"app.example.com",
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> Fields:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", authority),
        *extra,
    ]


def parse_frames(data: bytes) -> list[Frame]:
    """Every whole frame in ``data`` (what the server wrote), in order."""
    frames: list[Frame] = []
    view = memoryview(data)
    pos = 0
    while len(data) - pos >= 9:
        frame, length = Frame.parse_frame_header(view[pos : pos + 9])
        frame.parse_body(view[pos + 9 : pos + 9 + length])
        frames.append(frame)
        pos += 9 + length
    return frames


class Peer:
    """A real h2 client and the codec, exchanging bytes in memory."""

    def __init__(self, limits: Http2Limits = DEFAULT_LIMITS) -> None:
        self.server = Http2Connection(limits=limits)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        #: Everything the server ever wrote, for frame-level assertions.
        self.wire = b""
        self.client_events: list[h2.events.Event] = []
        self.exchange()

    def exchange(self) -> list[Event]:
        """Move bytes both ways until neither side has any; the server's events."""
        events: list[Event] = []
        for _ in range(1000):
            up = self.client.data_to_send()
            if up:
                events += self.server.receive_data(up)
            down = self.server.data_to_send()
            if down:
                self.wire += down
                # The client plays on after a GOAWAY (h2 would stop sending), as an attacker
                # or a client with streams in flight does.
                kept = b"".join(
                    f.serialize() for f in parse_frames(down) if not isinstance(f, GoAwayFrame)
                )
                if kept:
                    self.client_events += self.client.receive_data(kept)
            if not up and not down:
                break
        return events

    def request(
        self, fields: Fields, body: bytes | None = None, *, end: bool = True
    ) -> tuple[int, list[Event]]:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, fields, end_stream=body is None and end)
        if body is not None:
            self.client.send_data(stream_id, body, end_stream=end)
        return stream_id, self.exchange()

    def frames(self) -> list[Frame]:
        return parse_frames(self.wire)

    def resets(self) -> dict[int, int]:
        """stream id → error code of the first RST_STREAM the server sent on it."""
        return _first_resets(self.frames())

    def goaways(self) -> list[GoAwayFrame]:
        return [f for f in self.frames() if isinstance(f, GoAwayFrame)]

    def responses(self) -> dict[int, Fields]:
        return {
            e.stream_id: list(e.headers or [])
            for e in self.client_events
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id is not None
        }


class RawClient:
    """Hand-made frames to the codec; its own HPACK state, no client state machine."""

    def __init__(self, limits: Http2Limits = DEFAULT_LIMITS) -> None:
        self.server = Http2Connection(limits=limits)
        self.encoder = Encoder()
        self.wire = self.server.data_to_send()
        self.events = self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> list[Event]:
        events = self.server.receive_data(data)
        self.wire += self.server.data_to_send()
        return events

    def headers(
        self,
        stream_id: int,
        fields: Sequence[tuple[bytes, bytes]],
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        flags = []
        if end_stream:
            flags.append("END_STREAM")
        if end_headers:
            flags.append("END_HEADERS")
        return HeadersFrame(
            stream_id, data=self.encoder.encode(list(fields)), flags=flags
        ).serialize()

    @staticmethod
    def continuation(stream_id: int, data: bytes, *, end_headers: bool = False) -> bytes:
        flags = ["END_HEADERS"] if end_headers else []
        return ContinuationFrame(stream_id, data=data, flags=flags).serialize()

    @staticmethod
    def data(stream_id: int, data: bytes, *, end_stream: bool = False, pad: int = 0) -> bytes:
        flags = ["END_STREAM"] if end_stream else []
        if pad:
            flags.append("PADDED")
        return DataFrame(stream_id, data=data, flags=flags, pad_length=pad).serialize()

    @staticmethod
    def rst(stream_id: int, code: int = 0x8) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    def frames(self) -> list[Frame]:
        return parse_frames(self.wire)

    def goaways(self) -> list[GoAwayFrame]:
        return [f for f in self.frames() if isinstance(f, GoAwayFrame)]

    def resets(self) -> dict[int, int]:
        """stream id → error code of the first RST_STREAM the server sent on it."""
        return _first_resets(self.frames())


def _first_resets(frames: list[Frame]) -> dict[int, int]:
    resets: dict[int, int] = {}
    for frame in frames:
        if isinstance(frame, RstStreamFrame):
            resets.setdefault(frame.stream_id, frame.error_code)
    return resets


def unknown_frame(kind: int, payload: bytes, stream_id: int = 0) -> bytes:
    """A frame of a type no endpoint knows (RFC 9113 section 5.5: to be ignored)."""
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, 0)) + stream_id.to_bytes(4, "big") + payload
    )
