"""The proxy's HTTP/1.1 codec: strict request heads, lenient response heads, body decoding.

h11 is the reference: a corpus of heads is run through both, and every place this codec is
deliberately stricter than h11 is listed (and checked to still be a place h11 accepts).
"""

from __future__ import annotations

import h11
import pytest

from emulator.core.http.codec import (
    _FIELD_LINE,
    LAST_CHUNK,
    BodyReader,
    Framing,
    HttpError,
    RequestHead,
    ResponseHead,
    chunk,
    parse_request_head,
    parse_response_head,
    request_head_bytes,
    response_head_bytes,
    validate_host,
)
from emulator.core.http.pages import NGINX_HEADER_TOO_LARGE, GatewayPage, page_for_status

BROWSER_HEAD = (
    b"GET /api/items?id=42&sort=desc HTTP/1.1\r\n"
    b"Host: app.contoso.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/121.0\r\n"
    b"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=abc123; theme=dark\r\n"
    b"X-Request-Id: 7f3e2a10-1b2c-4d5e\r\n"
    b"\r\n"
)

BACKEND_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.25.3\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
)

CHUNKED_BODY = b"5\r\nhello\r\n7;name=value\r\n, world\r\n1 \r\n!\r\n0\r\nX-Checksum: abc\r\n\r\n"
CHUNKED_DECODED = b"hello, world!"
NEXT_REQUEST = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def _request(data: bytes | bytearray, **options: int) -> RequestHead:
    parsed = parse_request_head(data, **options)
    assert parsed is not None
    return parsed[0]


def _response(data: bytes, method: str = "GET") -> ResponseHead:
    parsed = parse_response_head(data, request_method=method)
    assert parsed is not None
    return parsed[0]


def _head(*lines: str, version: str = "1.1") -> bytes:
    """A request head ``GET / HTTP/<version>`` with ``lines`` as its field lines."""
    text = f"GET / HTTP/{version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    return text.encode("latin-1")


# -- request heads: what is accepted ------------------------------------------------------------


def test_browser_request_head_parses_with_names_as_sent_and_values_stripped() -> None:
    parsed = parse_request_head(BROWSER_HEAD + b"leftover")
    assert parsed is not None
    head, used = parsed
    assert used == len(BROWSER_HEAD)
    assert head.method == "GET"
    assert head.target == "/api/items?id=42&sort=desc"
    assert head.version == "1.1"
    assert head.headers[0] == ("Host", "app.contoso.com")
    assert head.headers[4] == ("Accept-Encoding", "gzip, deflate, br")
    assert len(head.headers) == 8
    assert head.framing is Framing.NONE
    assert head.length == 0
    assert head.keep_alive
    assert not head.expect_continue
    assert head.upgrade is None


def test_incomplete_request_head_returns_none_at_every_split_point() -> None:
    for cut in range(len(BROWSER_HEAD)):
        assert parse_request_head(BROWSER_HEAD[:cut]) is None, cut


def test_request_head_parses_from_a_bytearray() -> None:
    assert _request(bytearray(BROWSER_HEAD)).headers[0] == ("Host", "app.contoso.com")


def test_pipelined_requests_parse_one_after_the_other() -> None:
    first = _head("Host: a", "Content-Length: 3")
    buffer = first + b"abc" + NEXT_REQUEST
    parsed = parse_request_head(buffer)
    assert parsed is not None
    head, used = parsed
    body = BodyReader(head.framing, head.length)
    data, leftover = body.feed(buffer[used:])
    assert (data, leftover, body.done) == (b"abc", NEXT_REQUEST, True)
    assert _request(leftover).target == "/next"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("X: a", ("X", "a")),
        ("X:a", ("X", "a")),
        ("X:   a b  ", ("X", "a b")),
        ("X: \ta\tb\t", ("X", "a\tb")),
        ("X:", ("X", "")),
        ("X:   ", ("X", "")),
        ("x-MiXeD-case: V", ("x-MiXeD-case", "V")),
        ("X: caf\xe9 \xff", ("X", "caf\xe9 \xff")),  # obs-text
        ("X: a\x01b\x7f", ("X", "a\x01b\x7f")),  # h11 issue #57: real cookies carry \x01
        ("X: a: b", ("X", "a: b")),
    ],
)
def test_request_header_value_keeps_inner_text_and_drops_surrounding_ows(
    line: str, expected: tuple[str, str]
) -> None:
    assert _request(_head("Host: h", line)).headers[1] == expected


@pytest.mark.parametrize("method", ["M-SEARCH", "VERSION_CONTROL", "PROPFIND"])
def test_a_method_of_nginx_letters_is_kept_as_sent(method: str) -> None:
    assert _request(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode()).method == method


@pytest.mark.parametrize("method", ["get", "GET123", "Get", "G.T", "G~T"])
def test_a_method_outside_nginx_letters_is_refused_as_an_invalid_method(method: str) -> None:
    # nginx's request-line parser takes A-Z, "_" and "-"; http-response-codes names GET123.
    with pytest.raises(HttpError, match="invalid method") as caught:
        parse_request_head(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert caught.value.status == 400
    assert caught.value.error_info == "ERRORINFO_INVALID_METHOD"


@pytest.mark.parametrize(
    ("head", "framing", "length"),
    [
        (_head("Host: a"), Framing.NONE, 0),
        (_head("Host: a", "Content-Length: 12"), Framing.LENGTH, 12),
        (_head("Host: a", "Content-Length: 0"), Framing.LENGTH, 0),
        (_head("Host: a", "content-length: 007"), Framing.LENGTH, 7),
        (_head("Host: a", "Transfer-Encoding: chunked"), Framing.CHUNKED, 0),
        (_head("Host: a", "transfer-encoding: CHUNKED"), Framing.CHUNKED, 0),
        (_head("Transfer-Encoding: chunked", version="1.0"), Framing.CHUNKED, 0),
    ],
)
def test_request_framing_follows_content_length_and_transfer_encoding(
    head: bytes, framing: Framing, length: int
) -> None:
    parsed = _request(head)
    assert (parsed.framing, parsed.length) == (framing, length)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (_head("Host: a"), True),
        (_head("Host: a", "Connection: keep-alive"), True),
        (_head("Host: a", "Connection: close"), False),
        (_head("Host: a", "Connection: Keep-Alive, CLOSE"), False),
        (_head("Host: a", "Connection: upgrade", "Connection: close"), False),
        (_head("Host: a", "Connection: closed"), True),
        (_head("Host: a", "Connection: x-close"), True),
        (_head(version="1.0"), False),
        (_head("Connection: keep-alive", version="1.0"), False),
    ],
)
def test_request_keep_alive_ends_with_http10_or_connection_close(
    head: bytes, keep_alive: bool
) -> None:
    assert _request(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("head", "expect"),
    [
        (_head("Host: a", "Expect: 100-continue"), True),
        (_head("Host: a", "Expect: 100-Continue"), True),
        (_head("Host: a"), False),
        (_head("Host: a", "Expect: something-else"), False),
        (_head("Expect: 100-continue", version="1.0"), False),
    ],
)
def test_expect_continue_only_for_http11_100_continue(head: bytes, expect: bool) -> None:
    assert _request(head).expect_continue is expect


@pytest.mark.parametrize(
    ("head", "upgrade"),
    [
        (_head("Host: a", "Connection: Upgrade", "Upgrade: websocket"), "websocket"),
        (_head("Host: a", "Connection: keep-alive, upgrade", "Upgrade: h2c"), "h2c"),
        (_head("Host: a", "Upgrade: websocket"), None),
        (_head("Host: a", "Connection: upgrade"), None),
        (_head("Host: a", "Connection: upgraded", "Upgrade: websocket"), None),
    ],
)
def test_upgrade_only_when_connection_lists_upgrade(head: bytes, upgrade: str | None) -> None:
    assert _request(head).upgrade == upgrade


def test_http10_request_needs_no_host() -> None:
    assert _request(b"GET / HTTP/1.0\r\n\r\n").version == "1.0"


def test_later_http1_minor_version_is_accepted_like_h11() -> None:
    head = _request(b"GET / HTTP/1.2\r\n\r\n")
    assert (head.version, head.keep_alive) == ("1.2", True)


# -- request heads: what is refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        # Line ends and folding: the smuggling leniencies h11 has and we refuse.
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\n\r\n\r\n", 400, "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\t\r\n\r\n", 400, "obsolete line folding"),
        # Leading empty lines: h11 refuses them ("no request line received").
        (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "illegal request line"),
        # Request line.
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET /\r\nHost: a\r\n\r\n", 400, "illegal request line"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, "unsupported HTTP version"),
        (b"GET / HTTP/0.9\r\n\r\n", 400, "unsupported HTTP version"),
        # Field lines.
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", 400, "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0cb\r\n\r\n", 400, "illegal header line"),
        # Host.
        (b"GET / HTTP/1.1\r\n\r\n", 400, "Missing mandatory Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "more than one Host"),
        # Framing.
        (_head("Host: a", "Content-Length: 5", "Content-Length: 5"), 400, "more than once"),
        (_head("Host: a", "Content-Length: 5, 5"), 400, "more than once"),
        (_head("Host: a", "Content-Length: 5,6"), 400, "more than once"),
        (_head("Host: a", "Content-Length: -1"), 400, "bad Content-Length"),
        (_head("Host: a", "Content-Length: +5"), 400, "bad Content-Length"),
        (_head("Host: a", "Content-Length: 0x10"), 400, "bad Content-Length"),
        (_head("Host: a", "Content-Length: 1 2"), 400, "bad Content-Length"),
        (_head("Host: a", "Content-Length: 123456789012345678901"), 400, "bad Content-Length"),
        (_head("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"), 400, "both"),
        (_head("Host: a", "Transfer-Encoding: chunked", "Content-Length: 3"), 400, "both"),
        (_head("Host: a", "Transfer-Encoding: gzip", "Content-Length: 3"), 400, "both"),
        (_head("Host: a", "Transfer-Encoding: gzip"), 501, "Only Transfer-Encoding"),
        (_head("Host: a", "Transfer-Encoding: gzip, chunked"), 501, "Only Transfer-Encoding"),
        (_head("Host: a", "Transfer-Encoding: chunked, chunked"), 501, "Only Transfer"),
        (_head("Host: a", "Transfer-Encoding:"), 501, "Only Transfer-Encoding"),
        # nginx: a second Transfer-Encoding line is a duplicate header line, 400 (issue 16).
        (
            _head("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
            400,
            "multiple Transfer-Encoding",
        ),
    ],
)
def test_malformed_request_head_is_refused_with_the_gateway_status(
    head: bytes, status: int, reason: str
) -> None:
    with pytest.raises(HttpError, match=reason) as caught:
        parse_request_head(head)
    assert caught.value.status == status
    assert reason in caught.value.reason


def test_bare_lf_is_refused_before_the_head_is_complete() -> None:
    with pytest.raises(HttpError, match="bare LF") as caught:
        parse_request_head(b"GET / HTTP/1.1\nHost: a")
    assert caught.value.status == 400


def test_request_headers_over_the_size_limit_get_nginx_494_complete_or_not() -> None:
    head = _head("Host: a", "X-Big: " + "x" * 200)
    assert parse_request_head(head, max_size=len(head)) is not None
    for data in (head, head[:-2]):
        with pytest.raises(HttpError, match="head longer than") as caught:
            parse_request_head(data, max_size=len(head) - 3)
        assert caught.value.status == NGINX_HEADER_TOO_LARGE
        assert page_for_status(caught.value.status) is GatewayPage.HEADER_OR_COOKIE_TOO_LARGE


def test_a_request_line_over_the_size_limit_is_414_complete_or_not() -> None:
    line = b"GET /" + b"u" * 300 + b" HTTP/1.1\r\n"
    for data in (line + b"Host: a\r\n\r\n", line[:-20]):
        with pytest.raises(HttpError, match="request line longer than") as caught:
            parse_request_head(data, max_size=200)
        assert caught.value.status == 414
        assert caught.value.error_info == "ERRORINFO_REQUEST_URI_INVALID"


def test_default_request_head_limit_is_32_kib() -> None:
    filler = "X-Fill: " + "f" * 1000
    head = _head("Host: a", *[filler] * 40)
    assert len(head) > 32 * 1024
    with pytest.raises(HttpError) as caught:
        parse_request_head(head)
    assert caught.value.status == NGINX_HEADER_TOO_LARGE


def test_more_header_fields_than_the_limit_is_nginx_494() -> None:
    fields = [f"X-{number}: v" for number in range(10)]
    assert len(_request(_head("Host: a", *fields), max_fields=11).headers) == 11
    with pytest.raises(HttpError, match="more than 10 header fields") as caught:
        parse_request_head(_head("Host: a", *fields), max_fields=10)
    assert caught.value.status == NGINX_HEADER_TOO_LARGE


#: http-response-codes, "400 - Bad Request": the request shapes its table lists (each with its
#: example), and the access log's reason code the monitoring reference gives each.
AZURE_400_TABLE: list[tuple[bytes, str]] = [
    (b"GET / HTTP/1.1\r\nHost: example.com:8090:8080\r\n\r\n", "ERRORINFO_INVALID_HOST"),
    (b"GET / HTTP/1.1\r\n\r\n", "ERRORINFO_HTTP_NO_HOST_HEADER"),
    (b"GET /content.css HTTP/0.3\r\nHost: a\r\n\r\n", "ERRORINFO_INVALID_VERSION"),
    (b"GET /x HTTP/1.10\r\nHost: a\r\n\r\n", "ERRORINFO_INVALID_VERSION"),
    (b"GET /\xab\xfa\xfc.doc HTTP/1.1\r\nHost: a\r\n\r\n", "ERRORINFO_REQUEST_URI_INVALID"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-\xfc: 1\r\n\r\n", "ERRORINFO_INVALID_REQUEST"),
    (b"GET123 /index.html HTTP/1.1\r\nHost: a\r\n\r\n", "ERRORINFO_INVALID_METHOD"),
    (
        _head("Host: a", "Authorization: Basic YTpi", "Authorization: Basic YTpi"),
        "ERRORINFO_INVALID_REQUEST",
    ),
    (_head("Host: a", "Content-Length: abc"), "ERRORINFO_INVALID_CONTENT_LENGTH"),
    (_head("Host: a", "Content-Length: -10"), "ERRORINFO_INVALID_CONTENT_LENGTH"),
]


@pytest.mark.parametrize(("head", "error_info"), AZURE_400_TABLE)
def test_every_shape_of_azures_400_table_is_refused_with_its_reason_code(
    head: bytes, error_info: str
) -> None:
    with pytest.raises(HttpError) as caught:
        parse_request_head(head)
    assert caught.value.status == 400
    assert caught.value.error_info == error_info


# -- Host and request targets (issue #15, findings 3, 4 and 18) ------------------------------


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("a", "a"),
        ("App.Contoso.COM", "app.contoso.com"),
        ("app.contoso.com.", "app.contoso.com"),
        ("app.contoso.com:8443", "app.contoso.com"),
        ("a:", "a"),
        ("a:65535", "a"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("my_host-1", "my_host-1"),
        ("[::1]", "[::1]"),
        ("[2001:DB8::1]:443", "[2001:db8::1]"),
        ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"),
    ],
)
def test_valid_host_values_give_the_routing_host(value: str, host: str) -> None:
    assert validate_host(value) == host


@pytest.mark.parametrize(
    ("value", "why"),
    [
        # Azure: 400 "Invalid Host in request line" (http-response-codes).
        ("host:443:1", "more than one ':'"),
        # nginx ngx_http_validate_host refuses these three.
        ("host/x", "'/'"),
        ("host\\", "'\\'"),
        ("host\x00", "NUL"),
        # Stricter than nginx (README, "Security model").
        ("host, x", "list"),
        ("host,x", "list"),
        ("user@host", "userinfo"),
        ("[host]", "not host[:port]"),
        ("[::1", "not host[:port]"),
        ("[:::1]", "not an IPv6 address"),
        ("[::1]x", "not host[:port]"),
        ("a\x01b", "control character"),
        ("a\x7f", "control character"),
        ("a b", "spaces"),
        ("", "empty"),
        ("a..b", "not host[:port]"),
        (".a", "not host[:port]"),
        ("a:123456", "not host[:port]"),
        ("a:65536", "port above 65535"),
        ("a:8x", "not host[:port]"),
        ("%61", "not host[:port]"),
        ("caf\xe9", "not host[:port]"),
    ],
)
def test_malformed_host_values_are_refused_with_400(value: str, why: str) -> None:
    with pytest.raises(HttpError, match="invalid host") as caught:
        validate_host(value)
    assert caught.value.status == 400
    assert why in caught.value.reason


def test_request_head_routes_by_its_validated_host() -> None:
    assert _request(_head("Host: API.Contoso.test:443")).host == "api.contoso.test"
    assert _request(_head(version="1.0")).host == ""
    with pytest.raises(HttpError, match="in the Host header"):
        parse_request_head(_head("Host: a:1:2"))


@pytest.mark.parametrize(
    ("target", "origin", "authority", "host"),
    [
        (
            "https://partners.contoso.test/secret",
            "/secret",
            "partners.contoso.test",
            "partners.contoso.test",
        ),
        ("http://A.test:8080/x?y=1", "/x?y=1", "A.test:8080", "a.test"),
        ("HTTP://a.test", "/", "a.test", "a.test"),
        ("http://a.test?q", "/?q", "a.test", "a.test"),
        ("http://[::1]:80/p", "/p", "[::1]:80", "[::1]"),
    ],
)
def test_absolute_form_target_wins_over_host_and_is_given_in_origin_form(
    target: str, origin: str, authority: str, host: str
) -> None:
    # RFC 9112 section 3.2.2: the target's authority wins; the Host header is replaced by it.
    head = _request(f"GET {target} HTTP/1.1\r\nHost: www.contoso.test\r\nX-A: 1\r\n\r\n".encode())
    assert head.target == origin
    assert head.host == host
    assert head.headers == [("Host", authority), ("X-A", "1")]


def test_absolute_form_target_without_a_host_header_gets_one() -> None:
    head = _request(b"GET http://a.test/p HTTP/1.0\r\n\r\n")
    assert (head.target, head.host, head.headers) == ("/p", "a.test", [("Host", "a.test")])


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("https://user@partners.test/", "userinfo"),
        ("http://a:1:2/", "in the request line"),
        ("http:///x", "empty"),
        ("http://a\\b/", "'\\'"),
        ("ftp://a/x", "unsupported scheme"),
        ("a.test/x", "it must start with '/'"),
        ("*", "it must start with '/'"),
    ],
)
def test_bad_absolute_form_targets_are_refused(target: str, reason: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse_request_head(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert caught.value.status == 400
    assert reason in caught.value.reason


def test_a_bad_host_header_is_refused_even_beside_an_absolute_target() -> None:
    # As nginx: the Host header is validated whatever the request line says.
    with pytest.raises(HttpError, match="in the Host header"):
        parse_request_head(b"GET http://a/ HTTP/1.1\r\nHost: b/c\r\n\r\n")


def test_asterisk_and_authority_forms_keep_their_methods() -> None:
    assert _request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").target == "*"
    connect = _request(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
    assert connect.target == "a:443"


@pytest.mark.parametrize(
    ("fields", "h2c"),
    [
        (("Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings"), True),
        (("Upgrade: H2C",), True),
        (("Upgrade: websocket, h2c/1.0",), True),
        (("Upgrade: websocket", "Upgrade: h2c"), True),
        (("Upgrade: websocket", "Connection: upgrade"), False),
        (("Upgrade: h2",), False),
        (("Upgrade: xh2c",), False),
        ((), False),
    ],
)
def test_upgrade_lists_h2c(fields: tuple[str, ...], h2c: bool) -> None:
    assert _request(_head("Host: a", *fields)).upgrade_h2c is h2c


def test_content_length_up_to_2_63_minus_1_is_accepted_and_above_refused() -> None:
    assert _request(_head("Host: a", f"Content-Length: {2**63 - 1}")).length == 2**63 - 1
    for value in (2**63, 18446744073709551621):
        with pytest.raises(HttpError, match=r"larger than 2\^63-1") as caught:
            parse_request_head(_head("Host: a", f"Content-Length: {value}"))
        assert caught.value.status == 400


def test_chunk_size_of_2_63_minus_1_is_read_as_a_size() -> None:
    reader = BodyReader(Framing.CHUNKED)
    assert reader.feed(b"7fffffffffffffff\r\nabc") == (b"abc", b"")


def test_http_error_carries_reason_and_status() -> None:
    error = HttpError("bad thing", 431)
    assert (error.reason, error.status) == ("bad thing", 431)
    assert HttpError("x").status == 400
    assert "bad thing" in str(error)


# -- cross-check with h11 -----------------------------------------------------------------------

#: Heads on which this codec and h11 0.16 must agree (accept or refuse).
H11_CORPUS: list[bytes] = [
    BROWSER_HEAD,
    _head("Host: a"),
    _head("Host: a", "Content-Length: 10"),
    _head("Host: a", "Content-Length: 00"),
    _head("Host: a", "Transfer-Encoding: chunked"),
    _head("Host: a", "Transfer-Encoding: Chunked"),
    _head("Host: a", "Transfer-Encoding: gzip"),
    _head("Host: a", "Transfer-Encoding: gzip, chunked"),
    _head("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    _head("Host: a", "Content-Length: abc"),
    _head("Host: a", "Content-Length: 1234567890123456789012"),
    _head("Host: a", "Content-Length: 5,6"),
    _head("Host:a"),
    _head("Host: a", "X:"),
    _head("Host: a", "X: \x01"),
    _head("Host: a", "X: a\x7fb"),
    _head("Host: a", "X: \x80\xff"),
    _head("Host: a", "X: a\x00b"),
    _head("Host: a", "X: a\x0bb"),
    _head("Host: a", "X: a\x0cb"),
    _head("Host: a", "X : a"),
    _head("Host: a", "X(y): a"),
    _head("Host: a", ": a"),
    _head("Host: a", "NoColon"),
    _head("Host: a", "X: a\tb\t "),
    _head("Host: a", "Connection: close"),
    _head("Host: a", "Expect: 100-continue"),
    _head(),
    _head(version="1.0"),
    _head(version="1.2"),
    _head("Transfer-Encoding: chunked", version="1.0"),
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / http/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/11\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
]

#: Heads h11 accepts and this codec refuses on purpose (issue #10 and the spec): bare LF,
#: obs-fold, duplicate Content-Length, Content-Length with Transfer-Encoding, HTTP/2.0 and 0.9.
DELIBERATELY_STRICTER: list[bytes] = [
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n",
    _head("Host: a", "Content-Length: 5", "Content-Length: 5"),
    _head("Host: a", "Content-Length: 5, 5"),
    # nginx's method alphabet (http-response-codes: an invalid method is 400).
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    # A duplicate Authorization (nginx's unique header line, http-response-codes).
    _head("Host: a", "Authorization: Basic YTpi", "Authorization: Basic YzpK"),
    _head("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"),
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/0.9\r\n\r\n",
    # Host values that are not host[:port] (validate_host; nginx refuses an empty one too).
    _head("Host: "),
    _head("Host: a:1:2"),
    _head("Host: a, b"),
    _head("Host: u@a"),
    _head("Host: [a]"),
    _head("Host: a\x01"),
    _head("Host: a", "Content-Length: 9223372036854775808"),
]


def _h11_accepts_request(head: bytes) -> bool:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    try:
        return isinstance(connection.next_event(), h11.Request)
    except h11.RemoteProtocolError:
        return False


def _accepts_request(head: bytes) -> bool:
    try:
        return parse_request_head(head) is not None
    except HttpError:
        return False


@pytest.mark.parametrize("head", H11_CORPUS)
def test_request_acceptance_agrees_with_h11(head: bytes) -> None:
    assert _accepts_request(head) == _h11_accepts_request(head)


@pytest.mark.parametrize("head", H11_CORPUS)
def test_accepted_request_reads_like_h11(head: bytes) -> None:
    if not _h11_accepts_request(head):
        return
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    ours = _request(head)
    assert ours.method.encode("latin-1") == event.method
    target = event.target
    if b"://" in target:
        # RFC 9112 section 3.2.2: an absolute-form target is given in origin form.
        target = b"/" + target.split(b"://", 1)[1].split(b"/", 1)[1]
    assert ours.target.encode("latin-1") == target
    assert ours.version.encode() == event.http_version
    # h11 lower-cases the Transfer-Encoding value; ours keeps every value as sent.
    assert [
        (
            n.encode("latin-1"),
            (v.lower() if n.lower() == "transfer-encoding" else v).encode("latin-1"),
        )
        for n, v in ours.headers
    ] == list(event.headers.raw_items())


@pytest.mark.parametrize("head", DELIBERATELY_STRICTER)
def test_refuses_what_h11_leniently_accepts(head: bytes) -> None:
    assert _h11_accepts_request(head)
    assert not _accepts_request(head)


# -- response heads -----------------------------------------------------------------------------


def test_backend_response_head_parses() -> None:
    parsed = parse_response_head(BACKEND_HEAD + b"hello", request_method="GET")
    assert parsed is not None
    head, used = parsed
    assert used == len(BACKEND_HEAD)
    assert (head.status, head.reason, head.version) == (200, "OK", "1.1")
    assert head.headers[2] == ("Content-Length", "5")
    assert (head.framing, head.length, head.keep_alive) == (Framing.LENGTH, 5, True)


def test_incomplete_response_head_returns_none_at_every_split_point() -> None:
    for cut in range(len(BACKEND_HEAD)):
        assert parse_response_head(BACKEND_HEAD[:cut], request_method="GET") is None, cut


@pytest.mark.parametrize(
    ("head", "method", "framing", "length"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", Framing.LENGTH, 3),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD", Framing.NONE, 0),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", Framing.NONE, 0),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", "GET", Framing.NONE, 0),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", "GET", Framing.NONE, 0),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "POST", Framing.NONE, 0),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", "GET", Framing.NONE, 0),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\n", "GET", Framing.NONE, 0),
        (b"HTTP/1.1 200 OK\r\n\r\n", "CONNECT", Framing.NONE, 0),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Framing.CHUNKED, 0),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            "GET",
            Framing.CHUNKED,
            0,
        ),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "GET", Framing.LENGTH, 0),
        (b"HTTP/1.1 200 OK\r\n\r\n", "GET", Framing.CLOSE, 0),
        (b"HTTP/1.0 200 OK\r\n\r\n", "GET", Framing.CLOSE, 0),
    ],
)
def test_response_framing_depends_on_status_method_and_headers(
    head: bytes, method: str, framing: Framing, length: int
) -> None:
    parsed = _response(head, method)
    assert (parsed.framing, parsed.length) == (framing, length)


def test_head_response_keeps_its_content_length_header() -> None:
    head = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD")
    assert head.headers == [("Content-Length", "3")]


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\n\r\n", False),  # CLOSE framing: the connection ends the body
    ],
)
def test_response_keep_alive(head: bytes, keep_alive: bool) -> None:
    assert _response(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (b"HTTP/1.1 200 \r\n\r\n", 200, ""),
        (b"HTTP/1.1 200\r\n\r\n", 200, ""),
        (b"HTTP/1.1 200  Very  OK \r\n\r\n", 200, " Very  OK "),
        (b"HTTP/1.1 999 Custom\r\n\r\n", 999, "Custom"),
    ],
)
def test_status_line_reason_may_be_empty_or_missing_like_h11(
    head: bytes, status: int, reason: str
) -> None:
    parsed = _response(head)
    assert (parsed.status, parsed.reason) == (status, reason)


def test_response_with_bare_lf_line_ends_is_accepted_like_h11() -> None:
    parsed = parse_response_head(
        b"HTTP/1.1 200 OK\nContent-Length: 2\nX: a \n\nhi", request_method="GET"
    )
    assert parsed is not None
    head, used = parsed
    assert head.headers == [("Content-Length", "2"), ("X", "a")]
    assert used == len(b"HTTP/1.1 200 OK\nContent-Length: 2\nX: a \n\n")


def test_response_obs_fold_is_unfolded_to_one_space_like_h11() -> None:
    head = _response(b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\tc\r\nY: d\r\n\r\n")
    assert head.headers == [("X", "a b c"), ("Y", "d")]


def test_response_equal_duplicate_content_lengths_merge_like_h11() -> None:
    head = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n")
    assert (head.framing, head.length) == (Framing.LENGTH, 4)


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Only Transfer"),
        (b"HTTP/1.1 204 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Only Transfer"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "multiple Transfer-Encoding",
        ),
        (b"HTTP/1.1 20 OK\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200OK\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "out of range"),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", "illegal status line"),
        (b"HTTPS/1.1 200 OK\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\rX: y\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "illegal header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "illegal header line"),
        (b"HTTP/1.1 200 OK\r\n X: y\r\n\r\n", "continuation line"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "illegal status line"),
    ],
)
def test_malformed_response_head_is_refused(head: bytes, reason: str) -> None:
    with pytest.raises(HttpError, match=reason):
        parse_response_head(head, request_method="GET")


def test_response_head_over_the_size_limit_is_refused_complete_or_not() -> None:
    head = b"HTTP/1.1 200 OK\r\nX: " + b"x" * 100 + b"\r\n\r\n"
    assert parse_response_head(head, request_method="GET", max_size=len(head)) is not None
    for data in (head, head[:-2]):
        with pytest.raises(HttpError, match="longer than"):
            parse_response_head(data, request_method="GET", max_size=len(head) - 3)


RESPONSE_CORPUS: list[bytes] = [
    BACKEND_HEAD,
    b"HTTP/1.1 200\r\n\r\n",
    b"HTTP/1.1 200 \r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 O\x01K\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n X: y\r\n\r\n",
    b"HTTP/1.1 200  OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 200OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    b"HTTP/1.1 200 OK\n\r\n",
    b"HTTP/1.1 200 OK\r\n\n",
    b"HTTP/1.1 200 OK\rX: y\r\n\r\n",
    b"HTTP/1.1 099 x\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nX: \x80\r\n\r\n",
    b"\r\nHTTP/1.1 200 OK\r\n\r\n",
]


def _h11_accepts_response(head: bytes) -> bool:
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(head)
    try:
        return isinstance(connection.next_event(), h11.Response | h11.InformationalResponse)
    except h11.RemoteProtocolError:
        return False


@pytest.mark.parametrize("head", RESPONSE_CORPUS)
def test_response_acceptance_agrees_with_h11(head: bytes) -> None:
    try:
        ours = parse_response_head(head, request_method="GET") is not None
    except HttpError:
        ours = False
    assert ours == _h11_accepts_response(head)


# -- bodies -------------------------------------------------------------------------------------


def test_chunked_body_decodes_the_same_at_every_split_point() -> None:
    stream = CHUNKED_BODY + NEXT_REQUEST
    for cut in range(len(stream) + 1):
        reader = BodyReader(Framing.CHUNKED)
        body, leftover = reader.feed(stream[:cut])
        assert not leftover or reader.done
        more, rest = reader.feed(stream[cut:]) if not reader.done else (b"", stream[cut:])
        assert (body + more, leftover + rest, reader.done) == (
            CHUNKED_DECODED,
            NEXT_REQUEST,
            True,
        ), cut


def test_chunked_body_decodes_fed_one_byte_at_a_time() -> None:
    reader = BodyReader(Framing.CHUNKED)
    body = b""
    for index in range(len(CHUNKED_BODY)):
        assert not reader.done
        data, leftover = reader.feed(CHUNKED_BODY[index : index + 1])
        assert leftover == b""
        body += data
    assert (body, reader.done) == (CHUNKED_DECODED, True)


def test_chunked_body_broken_after_a_valid_chunk_returns_that_chunk_then_fails() -> None:
    # A proxy forwards what was valid before the framing broke (the client sees a cut
    # response, not nothing); the error comes with the next call, and at EOF.
    reader = BodyReader(Framing.CHUNKED)
    body, rest = reader.feed(b"5\r\nhello\r\nzz\r\nnope\r\n")
    assert (body, rest, reader.done) == (b"hello", b"", False)
    with pytest.raises(HttpError, match="chunk size"):
        reader.feed(b"more")
    with pytest.raises(HttpError, match="chunk size"):
        reader.eof()


def test_chunked_body_broken_before_any_chunk_fails_at_once() -> None:
    with pytest.raises(HttpError, match="chunk size"):
        BodyReader(Framing.CHUNKED).feed(b"zz\r\nhello\r\n")


def test_chunked_body_in_one_call_returns_body_and_leftover() -> None:
    reader = BodyReader(Framing.CHUNKED)
    assert reader.feed(CHUNKED_BODY + NEXT_REQUEST) == (CHUNKED_DECODED, NEXT_REQUEST)
    assert reader.done
    assert reader.feed(b"more") == (b"", b"more")


def test_chunked_body_ends_with_bare_lf_after_last_chunk_like_h11() -> None:
    reader = BodyReader(Framing.CHUNKED)
    assert reader.feed(b"1\r\na\r\n0\r\n\nNEXT") == (b"a", b"NEXT")


def test_chunked_trailers_with_folded_lines_are_validated_and_dropped() -> None:
    reader = BodyReader(Framing.CHUNKED)
    body = b"1\r\na\r\n0\r\nX: 1\r\n  2\r\nY: 3\r\n\r\nNEXT"
    assert reader.feed(body) == (b"a", b"NEXT")


def test_chunk_and_last_chunk_encode_a_body_the_reader_decodes() -> None:
    encoded = chunk(b"hello") + chunk(b"") + chunk(b"x" * 300) + LAST_CHUNK
    assert encoded.startswith(b"5\r\nhello\r\n12c\r\n")
    reader = BodyReader(Framing.CHUNKED)
    assert reader.feed(encoded) == (b"hello" + b"x" * 300, b"")
    assert reader.done


def test_empty_chunk_writes_nothing_so_it_cannot_end_the_body() -> None:
    assert chunk(b"") == b""
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"z\r\n", "illegal chunk size line"),
        (b"\r\n", "illegal chunk size line"),
        (b"-1\r\n", "illegal chunk size line"),
        (b"5 x\r\n", "illegal chunk size line"),
        (b"123456789012345678901\r\n", "illegal chunk size line"),
        (b"5\nhello\r\n", "illegal chunk size line"),
        (b"0x5\r\nhello\r\n", "illegal chunk size line"),
        (b" 5\r\nhello\r\n", "illegal chunk size line"),
        (b"-5\r\nhello\r\n", "illegal chunk size line"),
        (b"8000000000000000\r\n", "is larger than 2"),
        (b"ffffffffffffffff5\r\n", "is larger than 2"),
        (b"5\r\nhelloXY", "missing CRLF after chunk data"),
        (b"5\r\nhello\rX", "missing CRLF after chunk data"),
        (b"5\r\nhello\n\r\n", "missing CRLF after chunk data"),
        (b"5;" + b"e" * 5000, "chunk size line too long"),
        (b"5;" + b"e" * 5000 + b"\r\n", "chunk size line too long"),
        (b"0\r\nX : y\r\n\r\n", "illegal trailer line"),
        (b"0\r\nX: a\x00\r\n\r\n", "illegal trailer line"),
        (b"0\r\n X: y\r\n\r\n", "continuation line at start of trailers"),
        (b"0\r\nX: " + b"t" * 40000, "trailers longer than"),
        (b"0\r\nX: " + b"t" * 40000 + b"\r\n\r\n", "trailers longer than"),
    ],
)
def test_malformed_chunked_body_is_refused(data: bytes, reason: str) -> None:
    reader = BodyReader(Framing.CHUNKED)
    with pytest.raises(HttpError, match=reason) as caught:
        reader.feed(data)
    assert caught.value.status == 400


def test_chunked_size_line_within_the_limit_across_calls_is_accepted() -> None:
    reader = BodyReader(Framing.CHUNKED)
    extension = b"1;" + b"e" * 4000
    assert reader.feed(extension[:2000]) == (b"", b"")
    assert reader.feed(extension[2000:] + b"\r\nz\r\n0\r\n\r\n") == (b"z", b"")


def test_chunked_body_cut_short_by_eof_is_refused() -> None:
    reader = BodyReader(Framing.CHUNKED)
    reader.feed(b"5\r\nhel")
    with pytest.raises(HttpError, match="chunked"):
        reader.eof()


def test_length_body_splits_body_and_leftover() -> None:
    reader = BodyReader(Framing.LENGTH, 5)
    assert reader.feed(b"he") == (b"he", b"")
    assert not reader.done
    assert reader.feed(b"lloNEXT") == (b"llo", b"NEXT")
    assert reader.done
    reader.eof()


def test_length_body_cut_short_by_eof_is_refused() -> None:
    reader = BodyReader(Framing.LENGTH, 5)
    reader.feed(b"abc")
    with pytest.raises(HttpError, match="2 bytes before"):
        reader.eof()


def test_zero_length_and_no_body_are_done_at_once() -> None:
    for reader in (BodyReader(Framing.LENGTH, 0), BodyReader(Framing.NONE)):
        assert reader.done
        assert reader.feed(NEXT_REQUEST) == (b"", NEXT_REQUEST)


def test_close_delimited_body_ends_only_at_eof() -> None:
    reader = BodyReader(Framing.CLOSE)
    assert reader.feed(b"all of ") == (b"all of ", b"")
    assert reader.feed(b"it") == (b"it", b"")
    assert not reader.done
    reader.eof()
    assert reader.done


# -- writing heads ------------------------------------------------------------------------------


def test_request_head_bytes_round_trips_through_the_parser() -> None:
    headers = [
        ("Host", "backend.internal"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Empty", ""),
        ("X-Latin", "caf\xe9"),
        ("Content-Length", "3"),
    ]
    data = request_head_bytes("POST", "/submit?x=1", headers)
    assert data.startswith(b"POST /submit?x=1 HTTP/1.1\r\nHost: backend.internal\r\n")
    assert data.endswith(b"\r\nContent-Length: 3\r\n\r\n")
    head = _request(data)
    assert (head.method, head.target, head.version) == ("POST", "/submit?x=1", "1.1")
    assert head.headers == headers
    assert (head.framing, head.length) == (Framing.LENGTH, 3)


def test_response_head_bytes_round_trips_through_the_parser() -> None:
    headers = [("Content-Type", "text/plain"), ("Set-Cookie", "a=b; Path=/")]
    data = response_head_bytes(404, "Not Found", headers)
    assert data == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: a=b; Path=/\r\n\r\n"
    )
    head = _response(data)
    assert (head.status, head.reason, head.headers) == (404, "Not Found", headers)


def test_response_head_bytes_writes_an_empty_reason_like_h11() -> None:
    ours = response_head_bytes(200, "", [("Content-Length", "0")])
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    connection.next_event()
    theirs = connection.send(
        h11.Response(status_code=200, headers=[("Content-Length", "0")], reason=b"")
    )
    assert ours == theirs == b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"


def test_header_writers_accept_a_generator() -> None:
    data = request_head_bytes("GET", "/", ((name, "v") for name in ("Host", "X")))
    assert data == b"GET / HTTP/1.1\r\nHost: v\r\nX: v\r\n\r\n"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X", "a\r\nInjected: yes"),
        ("X", "a\nInjected: yes"),
        ("X", "a\rb"),
        ("X", "a\x00b"),
        ("X", "a\x0bb"),
        ("X", "a\x0cb"),
        ("X", "\u20ac"),
        ("Bad Name", "v"),
        ("Bad:Name", "v"),
        ("X: y", "v"),
        ("", "v"),
        ("N\u00e4me", "v"),
        ("X\r\nInjected", "v"),
    ],
)
def test_header_writers_refuse_injection_and_non_tokens(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=r"token|NUL|latin-1"):
        request_head_bytes("GET", "/", [("Host", "a"), (name, value)])
    with pytest.raises(ValueError, match=r"token|NUL|latin-1"):
        response_head_bytes(200, "OK", [(name, value)])


def test_header_writer_checks_every_byte_the_way_the_per_line_grammar_does() -> None:
    # The writer checks values by counting bytes, not with a pattern: every byte in every
    # position of a name and a value must get the field-line grammar's answer, and what is
    # written must read back as exactly the three lines given (nothing split, nothing added).
    for code in range(256):
        char = chr(code)
        for name, value in ((f"X{char}Y", "v"), ("X", f"a{char}b"), ("X", char), (char, "v")):
            headers = [("A", "1"), (name, value), ("B", "2")]
            try:
                written = response_head_bytes(200, "OK", headers)
            except ValueError:
                written = None
            line = f"{name}: {value}\r\n"
            allowed = _FIELD_LINE.fullmatch(line) is not None and ":" not in name
            assert (written is not None) is allowed, (name, value)
            if written is not None:
                parsed = parse_response_head(written, request_method="GET")
                assert parsed is not None
                assert [n for n, _ in parsed[0].headers] == ["A", name, "B"]


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET /x", "/"),
        ("GE\rT", "/"),
        ("", "/"),
        ("GET", ""),
        ("GET", "/a b"),
        ("GET", "/a\r\nInjected: yes"),
        ("GET", "/\x00"),
        ("GET", "/caf\xe9"),
    ],
)
def test_request_head_bytes_refuses_bad_method_or_target(method: str, target: str) -> None:
    with pytest.raises(ValueError, match=r"method|target"):
        request_head_bytes(method, target, [("Host", "a")])


@pytest.mark.parametrize(("status", "reason"), [(200, "O\r\nK"), (200, "\x00"), (99, "x")])
def test_response_head_bytes_refuses_bad_status_or_reason(status: int, reason: str) -> None:
    with pytest.raises(ValueError, match=r"reason|status"):
        response_head_bytes(status, reason, [])


def test_response_head_bytes_refuses_non_latin1_reason() -> None:
    with pytest.raises(ValueError, match="latin-1"):
        response_head_bytes(200, "\u20ac", [])
