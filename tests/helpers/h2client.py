"""A raw HTTP/2 client over a real TLS socket, for tests that need every frame in hand.

python-hyper's h2 as the client's state machine (blocking; run it with ``trio.to_thread``),
with ``send_raw`` for the frames a well-behaved client would never write (floods, resets).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from tests.helpers.stack import demo_gateway_template

RECEIVE_SIZE = 65536


def h2_template(**changes: Any) -> dict[str, Any]:
    """The demo template (:func:`demo_gateway_template`) with ``enableHttp2: true``."""
    template = demo_gateway_template(**changes)
    template["resources"][0]["properties"]["enableHttp2"] = True
    return template


@dataclass
class StreamReply:
    """What came back on one stream."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One HTTP/2 frame as bytes (RFC 9113 section 4.1)."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


class RawH2:
    """One client connection negotiated with ALPN ``h2``."""

    def __init__(
        self,
        port: int,
        ctx: ssl.SSLContext,
        *,
        sni: str = "localhost",
        window: int | None = None,
        auto_window: bool = True,
        validate: bool = True,
    ) -> None:
        ctx.set_alpn_protocols(["h2"])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.tls = ctx.wrap_socket(sock, server_hostname=sni)
        if self.tls.selected_alpn_protocol() != "h2":
            raise AssertionError(f"ALPN chose {self.tls.selected_alpn_protocol()!r}, not h2")
        # validate=False: h2 sends whatever fields it is given (the attacker's requests).
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.auto_window = auto_window
        self.replies: dict[int, StreamReply] = {}
        #: (last stream id, error code) of the server's GOAWAY. h2's client closes its state
        #: machine on any GOAWAY, so the frame is taken out before h2 sees it and the streams
        #: the server promised to finish can still be read.
        self.goaway: tuple[int, int] | None = None
        self._inbuf = b""
        self.closed = False
        self.flush()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tls.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.tls.sendall(data)
            except OSError:  # ssl.SSLError too: the server closed while we wrote
                self.closed = True

    def send_raw(self, data: bytes) -> None:
        self.tls.sendall(data)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        authority: str = "localhost",
        headers: list[tuple[str, str]] | None = None,
        pseudo: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; returns its id."""
        sid = self.conn.get_next_available_stream_id()
        fields: list[tuple[str, str]] = pseudo or [
            (":method", method),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ]
        fields = [*fields, *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.replies[sid] = StreamReply()
        self.flush()
        return sid

    def read(self, timeout_s: float = 5.0) -> bool:
        """Read once and handle the events; False when the server closed."""
        self.tls.settimeout(timeout_s)
        try:
            data = self.tls.recv(RECEIVE_SIZE)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._inbuf += data
        keep = b""
        while len(self._inbuf) >= 9:
            length = int.from_bytes(self._inbuf[:3], "big")
            if len(self._inbuf) < 9 + length:
                break
            whole, self._inbuf = self._inbuf[: 9 + length], self._inbuf[9 + length :]
            if whole[3] == 0x7:  # GOAWAY
                payload = whole[9:]
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                self.goaway = (last, int.from_bytes(payload[4:8], "big"))
            else:
                keep += whole
        for event in self.conn.receive_data(keep):
            self._handle(event)
        self.flush()
        return True

    def _handle(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies.setdefault(event.stream_id, StreamReply())
            reply.headers = list(event.headers)
            reply.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            reply = self.replies.setdefault(event.stream_id, StreamReply())
            reply.body += event.data
            if self.auto_window:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.replies.setdefault(event.stream_id, StreamReply()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.replies.setdefault(event.stream_id, StreamReply()).reset = event.error_code

    def wait(self, *stream_ids: int, timeout_s: float = 10.0) -> list[StreamReply]:
        """Read until each stream ended or was reset (or the server closed)."""
        until = time.monotonic() + timeout_s
        while not all(
            self.replies[s].ended or self.replies[s].reset is not None for s in stream_ids
        ):
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"streams {stream_ids} not done in {timeout_s} s")
            if not self.read(left):
                break
        return [self.replies[s] for s in stream_ids]

    def read_until_closed(self, timeout_s: float = 10.0) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until and self.read(until - time.monotonic()):
            pass
