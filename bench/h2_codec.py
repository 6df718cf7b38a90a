"""CPU per request of the HTTP/2 codec alone, next to the HTTP/1.1 codec (no sockets, no TLS).

What the HTTP/2 frontend will add to a keep-alive request before any I/O: the client's frames
are made once, up front, by an ``h2`` client; only the server side is timed (``time.process_time``
around :class:`emulator.core.http.http2.Http2Connection` calls): feeding the request frames, the
events, a response head and a small body, and taking the bytes to write. The HTTP/1.1 line
times ``parse_request_head`` + ``response_head_bytes`` + one chunk for the same request.

    python bench/h2_codec.py                 # 20,000 requests, 100 per connection
    python bench/h2_codec.py --requests 50000 --per-connection 1000
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection

from emulator.core.http.codec import chunk, parse_request_head, response_head_bytes
from emulator.core.http.http2 import Http2Connection, RequestReceived

FIELDS = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/api/items?page=2"),
    (b":authority", b"app.example.com"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"cookie", b"session=abc123"),
]
H1_REQUEST = (
    b"GET /api/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench/1.0\r\n"
    b"Accept: application/json\r\nCookie: session=abc123\r\n\r\n"
)
RESPONSE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", "13")]
BODY = b'{"items": []}'


def _client_bytes(requests: int) -> list[bytes]:
    """One chunk of client bytes per request (the preface goes with the first)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config=config)
    client.initiate_connection()
    chunks = []
    for _ in range(requests):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, FIELDS, end_stream=True)
        chunks.append(client.data_to_send())
    return chunks


def h2_cpu_per_request(requests: int, per_connection: int) -> float:
    connections = max(1, requests // per_connection)
    scripts = [_client_bytes(per_connection) for _ in range(connections)]
    spent = 0.0
    for script in scripts:
        start = time.process_time()
        server = Http2Connection()
        server.data_to_send()
        for data in script:
            for event in server.receive_data(data):
                if isinstance(event, RequestReceived):
                    server.send_response(event.stream_id, 200, RESPONSE_HEADERS)
                    server.send_data(event.stream_id, BODY, end=True)
            server.data_to_send()
        spent += time.process_time() - start
    return spent / (connections * per_connection)


def h1_cpu_per_request(requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        parsed = parse_request_head(H1_REQUEST)
        assert parsed is not None
        response_head_bytes(200, "OK", RESPONSE_HEADERS)
        chunk(BODY)
    return (time.process_time() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--per-connection", type=int, default=100)
    args = parser.parse_args()
    h2_us = h2_cpu_per_request(args.requests, args.per_connection) * 1e6
    h1_us = h1_cpu_per_request(args.requests) * 1e6
    print(f"HTTP/2 codec:   {h2_us:7.1f} µs CPU per request ({args.per_connection} per connection)")
    print(f"HTTP/1.1 codec: {h1_us:7.1f} µs CPU per request")


if __name__ == "__main__":
    main()
