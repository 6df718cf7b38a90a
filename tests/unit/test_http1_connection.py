"""The sans-I/O HTTP/1.1 server connection: events from bytes, framing for responses.

Written as a client would attack it: bytes cut anywhere, pipelined requests, bodies that end
early, headers that try to change the framing of what the gateway sends.
"""

from __future__ import annotations

import pytest

from emulator.core.http.codec import HttpError, RequestHead
from emulator.core.http.connection import CONTINUE, Http1Connection, Http1Event
from emulator.core.limits import ProxyLimits

LIMITS = ProxyLimits()
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_POST = (
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
)


#: A page's Date (the caller reads the clock; the connection takes the value).
DATE = "Wed, 02 Dec 2026 03:04:05 GMT"


def connection() -> Http1Connection:
    return Http1Connection(
        max_head_bytes=LIMITS.max_request_header_bytes,
        max_fields=LIMITS.max_request_header_fields,
    )


def head(conn: Http1Connection) -> RequestHead:
    event = conn.next_request()
    assert isinstance(event, RequestHead), event
    return event


def body(conn: Http1Connection) -> bytes:
    out = b""
    while isinstance(event := conn.next_body(), bytes):
        out += event
    assert event is Http1Event.END_OF_BODY, event
    return out


def test_a_new_connection_is_idle_and_needs_data() -> None:
    conn = connection()
    assert conn.idle
    assert conn.next_request() is Http1Event.NEED_DATA
    conn.receive_data(b"")
    assert conn.next_request() is Http1Event.CLOSED


@pytest.mark.parametrize("cut", range(1, len(POST)))
def test_a_request_cut_anywhere_gives_the_same_head_and_body(cut: int) -> None:
    conn = connection()
    conn.receive_data(POST[:cut])
    event = conn.next_request()
    if event is Http1Event.NEED_DATA:
        assert not conn.idle  # part of a head is a request in progress
        conn.receive_data(POST[cut:])
        request = head(conn)
        assert body(conn) == b"hello"
    else:
        assert isinstance(event, RequestHead)
        request = event
        got = b""
        while (piece := conn.next_body()) is not Http1Event.END_OF_BODY:
            if piece is Http1Event.NEED_DATA:
                conn.receive_data(POST[cut:])
                continue
            assert isinstance(piece, bytes)
            got += piece
        assert got == b"hello"
    assert request.target == "/up"
    assert conn.body_done


def test_pipelined_requests_are_served_one_after_the_other() -> None:
    conn = connection()
    conn.receive_data(GET + CHUNKED_POST + GET)
    assert head(conn).method == "GET"
    assert conn.keep_alive
    second = head(conn)
    assert second.method == "POST"
    assert body(conn) == b"hello"
    assert head(conn).method == "GET"
    assert conn.requests == 3
    assert conn.next_request() is Http1Event.NEED_DATA


def test_a_client_that_closes_inside_a_body_is_closed_not_a_body_end() -> None:
    conn = connection()
    conn.receive_data(POST[:-2])
    head(conn)
    assert conn.next_body() == b"hel"
    conn.receive_data(b"")
    assert conn.next_body() is Http1Event.CLOSED
    assert not conn.keep_alive  # the body was not read to its end


def test_a_client_that_closes_inside_a_head_is_a_bad_request() -> None:
    conn = connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    conn.receive_data(b"")
    with pytest.raises(HttpError, match="inside a request head"):
        conn.next_request()


@pytest.mark.parametrize(
    ("coding", "status"),
    [("gzip", 501), ("gzip, chunked", 501), ("xchunked", 501)],
)
def test_an_unknown_transfer_coding_is_refused_with_its_status(coding: str, status: int) -> None:
    conn = connection()
    conn.receive_data(f"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n".encode())
    with pytest.raises(HttpError) as caught:
        conn.next_request()
    assert caught.value.status == status


def test_two_transfer_encoding_lines_are_nginxs_duplicate_header_400() -> None:
    conn = connection()
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    with pytest.raises(HttpError) as caught:
        conn.next_request()
    assert caught.value.status == 400


def test_a_request_line_over_the_limit_is_414() -> None:
    conn = Http1Connection(max_head_bytes=64, max_fields=10)
    conn.receive_data(b"GET /" + b"a" * 100)
    with pytest.raises(HttpError) as caught:
        conn.next_request()
    assert caught.value.status == 414


def test_headers_over_the_limit_are_nginx_494() -> None:
    conn = Http1Connection(max_head_bytes=64, max_fields=10)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100)
    with pytest.raises(HttpError) as caught:
        conn.next_request()
    assert caught.value.status == 494


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_post_without_content_length_or_chunked_is_refused(version: bytes) -> None:
    # http-response-codes: "POST request missing Content-Length header" is a 400.
    conn = connection()
    conn.receive_data(b"POST / HTTP/" + version + b"\r\nHost: a\r\n\r\n")
    with pytest.raises(HttpError, match="POST without Content-Length") as caught:
        conn.next_request()
    assert caught.value.status == 400
    assert conn.refused_request_line() == ("POST", "/")


@pytest.mark.parametrize("framing", [b"Content-Length: 0", b"Transfer-Encoding: chunked"])
def test_a_post_with_either_framing_is_read(framing: bytes) -> None:
    conn = connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n")
    assert head(conn).method == "POST"


def test_a_refused_head_still_names_its_method_and_target_for_the_log() -> None:
    conn = connection()
    conn.receive_data(b"GET /x?y HTTP/1.1\r\nHost: a\r\nbad line\r\n\r\n")
    with pytest.raises(HttpError):
        conn.next_request()
    assert conn.refused_request_line() == ("GET", "/x?y")


def test_continue_is_offered_once_and_only_before_the_body() -> None:
    conn = connection()
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    head(conn)
    assert conn.continue_bytes() == CONTINUE
    assert conn.continue_bytes() == b""
    other = connection()
    other.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    )
    head(other)
    assert other.continue_bytes() == b""  # the body is already here


def test_a_page_has_its_length_and_closes_when_the_client_does_not_keep_alive() -> None:
    conn = connection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    head(conn)
    data = conn.page(404, "Not Found", b"<html/>", date=DATE)
    assert data.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"\r\nContent-Length: 7\r\n" in data
    assert b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\n<html/>")
    assert not conn.keep_alive
    assert conn.responded


def test_a_head_request_gets_the_pages_head_only() -> None:
    conn = connection()
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head(conn)
    data = conn.page(404, "Not Found", b"<html/>", date=DATE)
    assert data.endswith(b"Content-Length: 7\r\nConnection: keep-alive\r\n\r\n")
    assert conn.keep_alive


def test_a_page_has_the_header_order_of_real_captures() -> None:
    conn = connection()
    conn.receive_data(GET)
    head(conn)
    data = conn.page(
        301, "Moved Permanently", b"<html/>", date=DATE, extra_headers=[("Location", "/x")]
    )
    lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert lines == [
        b"HTTP/1.1 301 Moved Permanently",
        b"Server: Microsoft-Azure-Application-Gateway/v2",
        b"Date: " + DATE.encode(),
        b"Content-Type: text/html",
        b"Content-Length: 7",
        b"Location: /x",
        b"Connection: keep-alive",
    ]


def test_a_proxied_response_that_keeps_the_connection_says_keep_alive() -> None:
    conn = connection()
    conn.receive_data(GET)
    head(conn)
    data = conn.response_head(200, "OK", [("Content-Length", "2")])
    assert data.endswith(b"\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")
    assert conn.keep_alive


def test_close_after_response_adds_connection_close_and_ends_the_connection() -> None:
    conn = connection()
    conn.receive_data(GET)
    head(conn)
    conn.close_after_response = True
    data = conn.response_head(200, "OK", [("Content-Length", "2")])
    assert b"\r\nConnection: close\r\n" in data
    assert conn.will_close


def test_a_backend_response_of_unknown_length_is_chunked_for_http11() -> None:
    conn = connection()
    conn.receive_data(GET)
    head(conn)
    data = conn.response_head(
        200, "OK", [("Transfer-Encoding", "gzip"), ("Content-Length", "99"), ("X", "1")]
    )
    assert b"Content-Length" not in data
    assert b"\r\nTransfer-Encoding: chunked\r\n" in data
    assert conn.body_bytes(b"abc") == b"3\r\nabc\r\n"
    assert conn.end_of_body() == b"0\r\n\r\n"
    assert conn.keep_alive


def test_a_backend_response_of_unknown_length_ends_an_http10_connection() -> None:
    conn = connection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    head(conn)
    data = conn.response_head(200, "OK", [("Connection", "keep-alive")])
    assert data.count(b"Connection") == 1
    assert b"\r\nConnection: close\r\n" in data
    assert conn.body_bytes(b"abc") == b"abc"
    assert conn.end_of_body() == b""
    assert conn.will_close


def test_backend_headers_frame_the_body_whatever_a_rewrite_did() -> None:
    conn = connection()
    conn.receive_data(POST)
    head(conn)
    forged = [("Host", "a"), ("Transfer-Encoding", "chunked"), ("Expect", "100-continue")]
    assert conn.backend_headers(forged) == [("Host", "a"), ("Content-Length", "5")]
    assert conn.backend_headers([("Host", "a")], length=5) == [
        ("Host", "a"),
        ("Content-Length", "5"),
    ]
    unchanged = [("Host", "a"), ("Content-Length", "5")]
    assert conn.backend_headers(unchanged) is unchanged
