"""A strict, fast, sans-I/O HTTP/1.1 codec for the proxy's hot path.

Why not h11: h11 builds event objects, validates every header with a regex twice and runs a
state machine per event, which cost more than the whole rest of the proxy per keep-alive
request (issue #9; bench/README.md has the figures). This module does the same checks with a
few whole-buffer operations in C: one ``bytes.find`` for the end of the head, one latin-1
decode, one compiled regex ``fullmatch`` over the whole head, one ``findall`` to cut it into
fields. The per-header
Python work is a ``str.lower`` and a set lookup.

Strictness. The rules are h11 0.16's (RFC 9112 as h11 reads it), plus the checks the proxy made
on the raw bytes before h11 normalised them (issue #10): those are leniencies a request-smuggling
attack relies on, so for *requests* this module refuses

- a bare LF line end anywhere in the head (RFC 9112 section 2.2 allows accepting it; h11 does);
- obsolete line folding (RFC 9112 section 5.2; h11 unfolds it);
- Content-Length given twice or as a list, even with equal values (RFC 9112 section 6.3; h11
  merges equal values; nginx refuses a duplicate line);
- Content-Length together with Transfer-Encoding (RFC 9112 section 6.1; h11 frames by
  Transfer-Encoding; nginx, and so the gateway, answers 400);
- an HTTP version other than 1.x (h11 accepts any ``HTTP/d.d``);
- a Content-Length or chunk size above 2^63-1 (nginx parses both into ``off_t`` and refuses
  an overflow with 400; a backend that wraps 64-bit lengths would read another request);
- a Host header or an absolute-form target whose authority is not ``host[:port]``
  (:func:`validate_host`, the only place a Host value is checked).

An absolute-form target (``GET https://host/path``) is given to the caller in origin form,
with its authority as the Host (RFC 9112 section 3.2.2: the target's authority wins over the
Host header), so every later stage (routing, rewrites, the backend) sees one host.

*Responses* come from the user's backends, which the proxy re-frames before the client sees
them, so they are read as leniently as h11 reads them: bare LF line ends, folded lines
(unfolded to one space), equal duplicate Content-Lengths.

Text. Heads are decoded as latin-1, which maps each byte to the code point of the same value, so
every ``str`` here round-trips to the exact bytes on the wire, and the regexes below can work on
``str`` (``findall`` then hands back ``str`` tuples with no second decode).

No trio and no h11 here: callers feed bytes and get values (style guide section 2).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from emulator.core.bounded_cache import ClearingCache
from emulator.core.http import error_info as info
from emulator.core.http.pages import NGINX_HEADER_TOO_LARGE

__all__ = [
    "LAST_CHUNK",
    "BodyReader",
    "Framing",
    "HttpError",
    "RequestHead",
    "ResponseHead",
    "chunk",
    "parse_request_head",
    "parse_response_head",
    "request_head_bytes",
    "response_head_bytes",
    "validate_host",
]

#: Request head limit (request line + headers, through the blank line): nginx's
#: ``large_client_header_buffers``-style bound; past it the gateway answers 414 when the
#: request line alone is longer, else nginx's 494 page ("400 Request Header Or Cookie Too
#: Large").
DEFAULT_MAX_REQUEST_HEAD_BYTES: Final = 32 * 1024
#: Header fields per request; one more → nginx's 494 page (the gateway passes
#: ``ProxyLimits.max_request_header_fields``).
DEFAULT_MAX_REQUEST_FIELDS: Final = 1000
#: Backend response head limit; larger is a broken backend (the proxy answers 502).
DEFAULT_MAX_RESPONSE_HEAD_BYTES: Final = 64 * 1024
#: A chunk-size line (size + extensions) longer than this is an attack, not a client: 4 KiB.
MAX_CHUNK_SIZE_LINE_BYTES: Final = 4 * 1024
#: Trailer section of a chunked body, bytes: the same order as the request head limit.
MAX_TRAILER_BYTES: Final = 32 * 1024
#: Digits in a Content-Length (h11's ``CONTENT_LENGTH_MAX_DIGITS``): 10**20 bytes is plenty.
MAX_CONTENT_LENGTH_DIGITS: Final = 20
#: Largest Content-Length and chunk size accepted: nginx reads both into ``off_t``
#: (``NGX_MAX_OFF_T_VALUE``) and answers 400 past it; forwarding a larger one would let a
#: backend that wraps 64-bit lengths frame a request that never passed the gateway.
MAX_BODY_LENGTH: Final = 2**63 - 1
#: Status the proxy gives the client when a *backend* response is malformed.
BAD_GATEWAY: Final = 502

#: The end of a chunked body with no trailers.
LAST_CHUNK: Final = b"0\r\n\r\n"


class HttpError(Exception):
    """A message the peer sent that we refuse.

    ``status`` is what the gateway answers: 400 (malformed), 414 (request line too long),
    494 (nginx's code for headers too large: a 400 page of its own), 431 (HTTP/2: too many
    fields) or 501 (a Transfer-Encoding other than chunked). For a backend's response it is
    502; the proxy answers 502 for any malformed response whatever the status says.
    ``error_info`` is the access log's reason code (:mod:`emulator.core.http.error_info`).
    """

    def __init__(
        self, reason: str, status: int = 400, error_info: str = info.INVALID_REQUEST
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.error_info = error_info

    def __str__(self) -> str:
        return f"{self.reason} ({self.status})"


class Framing(enum.Enum):
    """How the end of a message body is found (RFC 9112 section 6.3)."""

    #: No body at all.
    NONE = "none"
    #: ``Content-Length`` bytes.
    LENGTH = "length"
    #: ``Transfer-Encoding: chunked``.
    CHUNKED = "chunked"
    #: Delimited by the connection closing (responses only).
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed, validated request head. Text is latin-1 decoded (byte-exact)."""

    #: As sent: methods are case-sensitive (RFC 9110 section 9.1).
    method: str
    target: str
    #: ``"1.1"`` or ``"1.0"`` (``"1.2"``..``"1.9"`` are accepted like h11 and act as 1.1).
    version: str
    #: Names as sent (case kept), values without surrounding SP/HTAB, in order.
    headers: list[tuple[str, str]]
    #: NONE, LENGTH or CHUNKED (a request without either header has no body).
    framing: Framing
    #: Body length when LENGTH (0 for ``Content-Length: 0``), else 0.
    length: int
    #: False for HTTP/1.0 (no 1.0 keep-alive, like h11) or when Connection lists ``close``.
    keep_alive: bool
    #: HTTP/1.1 with ``Expect: 100-continue`` (case-insensitive, RFC 9110 section 10.1.1).
    expect_continue: bool
    #: The Upgrade header value when Connection lists ``upgrade``, else None.
    upgrade: str | None
    #: The host that routes the request (:func:`validate_host`): the absolute-form target's,
    #: else the Host header's; "" when neither names one (HTTP/1.0 without Host).
    host: str = ""
    #: An Upgrade header lists ``h2c`` (with or without ``Connection: upgrade``): the gateway
    #: answers 403 (configuration-listeners, "HTTP/2 support").
    upgrade_h2c: bool = False


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed, validated response head."""

    status: int
    #: As sent; may be empty.
    reason: str
    #: As sent: ``"1.1"``, ``"1.0"`` (h11 accepts any ``d.d`` in a status line, and so do we).
    version: str
    headers: list[tuple[str, str]]
    #: Decided with the request method (see :func:`parse_response_head`).
    framing: Framing
    length: int
    #: False for HTTP/1.0 responses, ``Connection: close``, or a CLOSE-framed body (the
    #: connection cannot carry another response after it).
    keep_alive: bool


# -- grammar (RFC 9110 section 5.6.2, RFC 9112 sections 3 and 5, as h11 0.16 reads them) -------
# str patterns over latin-1 text, so each character class is a byte class. Possessive
# quantifiers (``*+``, Python 3.11) keep every pattern a single left-to-right scan.
#
# A field line is ``name ":" OWS value OWS``, where h11's value is runs of value characters
# separated by SP/HTAB (with its fix for RFC 7230 erratum 4189). Any string of value characters
# and SP/HTAB splits that way, so a line validates with one character class after the colon;
# only extracting the value needs the OWS split, and trailing OWS is rare enough to get its own
# (slower) pattern: the fast head pattern refuses it with a lookbehind.

#: tchar: any VCHAR except delimiters.
_TOKEN: Final = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
#: A visible value character: h11's ``[^\x00\s]`` over bytes, i.e. anything but NUL, SP, HTAB,
#: LF, VT, FF, CR. h11 deliberately lets other control characters through (h11 issue #57: real
#: cookies carry \x01), and nginx does too; NUL and the line-breaking ones are refused.
_VISIBLE: Final = r"[^\x00\t\n\x0b\x0c\r ]"
#: A value character or OWS.
_VALUE_CHAR: Final = r"[^\x00\n\x0b\x0c\r]"
#: request-target: visible ASCII only (h11 refuses obs-text and DEL here).
_TARGET: Final = r"[\x21-\x7e]++"
#: reason-phrase: value characters and SP/HTAB anywhere.
_REASON: Final = rf"{_VALUE_CHAR}*+"
_REQUEST_LINE: Final = rf"({_TOKEN}) ({_TARGET}) HTTP/([0-9]\.[0-9])"
_STATUS_LINE: Final = rf"HTTP/([0-9]\.[0-9]) ([0-9]{{3}})(?: ({_REASON}))?"
#: Field lines with no trailing OWS (the lookbehind), and with it allowed.
_FIELDS_TIGHT: Final = rf"(?:{_TOKEN}:{_VALUE_CHAR}*+(?<![ \t])\r\n)*+"
_FIELDS_LOOSE: Final = rf"(?:{_TOKEN}:{_VALUE_CHAR}*+\r\n)*+"

#: A whole request head through the CRLF of its last field line (the blank line excluded);
#: the empty group 4 marks where the field lines start.
_REQUEST_HEAD: Final = re.compile(rf"{_REQUEST_LINE}\r\n(){_FIELDS_TIGHT}")
_REQUEST_HEAD_LOOSE: Final = re.compile(rf"{_REQUEST_LINE}\r\n(){_FIELDS_LOOSE}")
_RESPONSE_HEAD: Final = re.compile(rf"{_STATUS_LINE}\r\n(){_FIELDS_TIGHT}")
_RESPONSE_HEAD_LOOSE: Final = re.compile(rf"{_STATUS_LINE}\r\n(){_FIELDS_LOOSE}")
#: (name, value) of each field line of a head that matched the tight pattern. The head is
#: validated already, so simpler classes cut the same fields faster (~40%): a token holds no
#: ":", a value no CR, and the value's last character is visible.
_FIELD: Final = re.compile(r"([^:]++):[ \t]*+([^\r]*+)\r\n")
#: (name, value) of each field line of a head that needed the loose pattern.
_FIELD_OWS: Final = re.compile(
    rf"({_TOKEN}):[ \t]*+((?:{_VISIBLE}(?:{_VALUE_CHAR}*{_VISIBLE})?)?)[ \t]*+\r\n"
)
_REQUEST_LINE_RE: Final = re.compile(_REQUEST_LINE)
_STATUS_LINE_RE: Final = re.compile(_STATUS_LINE)
_FIELD_LINE: Final = re.compile(rf"{_TOKEN}:{_VALUE_CHAR}*+\r\n")
_FIELDS_LOOSE_RE: Final = re.compile(_FIELDS_LOOSE)
#: obs-fold: a line break followed by SP/HTAB.
_OBS_FOLD: Final = re.compile(r"\r\n[ \t]++")
#: The blank line that ends a response head or a trailer section (h11's ``\n\r?\n``).
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
_METHOD_RE: Final = re.compile(_TOKEN)
#: A method nginx's request-line parser accepts (ngx_http_parse_request_line).
_NGINX_METHOD: Final = re.compile(r"[A-Z_-]++")
#: Methods that need no look at their characters.
_COMMON_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"}
)
_TARGET_RE: Final = re.compile(_TARGET)
_REASON_RE: Final = re.compile(_REASON)
_DIGITS: Final = re.compile(r"[0-9]++")
#: chunk-size [chunk-ext] OWS, as h11 reads it: extensions are skipped, not parsed.
_CHUNK_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
#: A trailer field line (bytes; trailers are parsed only to be validated and dropped).
_TRAILER_FIELD: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\x00\n\x0b\x0c\r]*")

#: Lower-cased names of the headers that decide framing and connection handling.
_HOST: Final = "host"
_CONTENT_LENGTH: Final = "content-length"
_TRANSFER_ENCODING: Final = "transfer-encoding"
_CONNECTION: Final = "connection"
_EXPECT: Final = "expect"
_UPGRADE: Final = "upgrade"
_AUTHORIZATION: Final = "authorization"
_SPECIAL: Final = frozenset(
    {_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _UPGRADE, _AUTHORIZATION}
)
#: Statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5).
_NO_BODY_STATUSES: Final = frozenset({204, 304})
#: Longest excerpt of an offending line quoted in an error reason.
_QUOTE_CHARS: Final = 80


def _quote(line: str) -> str:
    return repr(line[:_QUOTE_CHARS])


def _lists_token(values: list[str] | None, token: str) -> bool:
    """Whether comma-list headers (Connection, Expect) hold ``token`` (lower case), compared
    case-insensitively item by item like h11's ``get_comma_header``; a substring test first
    keeps the common miss cheap."""
    if values is None:
        return False
    for value in values:
        lower = value.lower()
        if token in lower and any(part.strip(" \t") == token for part in lower.split(",")):
            return True
    return False


# -- requests -----------------------------------------------------------------------------------


def parse_request_head(
    buffer: bytes | bytearray,
    *,
    max_size: int = DEFAULT_MAX_REQUEST_HEAD_BYTES,
    max_fields: int = DEFAULT_MAX_REQUEST_FIELDS,
) -> tuple[RequestHead, int] | None:
    """The request head at the start of ``buffer`` and the bytes it used (through the blank
    line), or None when the head is not complete yet.

    Cheap to call again each time more bytes arrive: an incomplete head costs one ``find``
    and, when the buffer holds a line feed, two counts.

    Raises:
        HttpError: 414 when the request line alone is longer than ``max_size``; nginx's 494
            when the head (complete or not) is, or has more than ``max_fields`` fields; 501 for
            a Transfer-Encoding other than one ``chunked``; 400 for anything else malformed
            (``error_info`` says which kind, for the access log).
    """
    if not buffer:
        return None
    if buffer[0] < 0x21:
        # h11 rejects this at once rather than waiting for a line: a request line starts with
        # a token, so a leading CR/LF (RFC 9112 section 2.2 "MAY ignore"; h11 does not) or a
        # TLS ClientHello (0x16) on a plain-HTTP port can never become a valid head.
        raise HttpError("illegal request line (it must start with the method)")
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > max_size:
            raise _head_too_large(buffer, max_size)
        if b"\n" in buffer and buffer.count(b"\n") != buffer.count(b"\r\n"):
            # Every byte so far belongs to the head, and a head with a bare LF is refused: say
            # so now rather than wait for a CRLFCRLF that may never come.
            raise HttpError("bare LF line ending in the request head")
        return None
    used = end + 4
    if used > max_size:
        raise _head_too_large(buffer, max_size)
    text = buffer[: end + 2].decode("latin-1")
    match = _REQUEST_HEAD.fullmatch(text)
    field = _FIELD
    if match is None:
        match = _REQUEST_HEAD_LOOSE.fullmatch(text)
        if match is None:
            raise HttpError(*_request_head_problem(text))
        field = _FIELD_OWS
    method, target, version, _ = match.groups()
    if method not in _COMMON_METHODS and _NGINX_METHOD.fullmatch(method) is None:
        # nginx's request-line parser takes only A-Z, "_" and "-" in a method
        # (ngx_http_parse_request_line: NGX_HTTP_PARSE_INVALID_METHOD, 400); Azure's
        # http-response-codes lists "GET123" as an invalid method.
        raise HttpError(f"invalid method {_quote(method)}", 400, info.INVALID_METHOD)
    if version[0] != "1":
        # http-response-codes: "HTTP/0.3" is an invalid version (400). Differs from nginx,
        # which answers 505 to HTTP/2.0 in HTTP/1 framing; Azure documents the 400.
        raise HttpError(f"unsupported HTTP version HTTP/{version}", 400, info.INVALID_VERSION)
    headers: list[tuple[str, str]] = field.findall(text, match.end(4))
    if len(headers) > max_fields:
        raise HttpError(f"more than {max_fields} header fields", NGINX_HEADER_TOO_LARGE)
    return _request_from_parts(method, target, version, headers), used


def _request_from_parts(
    method: str, target: str, version: str, headers: list[tuple[str, str]]
) -> RequestHead:
    """Apply the framing and connection rules to a syntactically valid request head."""
    hosts = authorizations = 0
    host_value: str | None = None
    content_length: str | None = None
    transfer_encodings: list[str] | None = None
    connection: list[str] | None = None
    expect: list[str] | None = None
    upgrade: list[str] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower not in _SPECIAL:
            continue
        if lower == _HOST:
            hosts += 1
            host_value = value
        elif lower == _CONTENT_LENGTH:
            if content_length is not None or "," in value:
                raise HttpError(
                    "Content-Length given more than once", 400, info.INVALID_CONTENT_LENGTH
                )
            content_length = value
        elif lower == _TRANSFER_ENCODING:
            transfer_encodings = [*(transfer_encodings or ()), value]
        elif lower == _CONNECTION:
            connection = [*(connection or ()), value]
        elif lower == _EXPECT:
            expect = [*(expect or ()), value]
        elif lower == _AUTHORIZATION:
            authorizations += 1
        else:
            upgrade = [*(upgrade or ()), value]
    http10 = version == "1.0"
    if hosts > 1:
        # RFC 9112 section 3.2; h11 and nginx ("client sent duplicate host header") agree.
        raise HttpError("more than one Host header", 400, info.INVALID_HOST)
    if hosts == 0 and version == "1.1":
        # h11 requires Host for exactly HTTP/1.1 (not 1.2+), and so does this.
        raise HttpError("Missing mandatory Host: header", 400, info.HTTP_NO_HOST_HEADER)
    if authorizations > 1:
        # nginx reads Authorization as a unique header line ("client sent duplicate header
        # line", 400); http-response-codes lists a duplicate Authorization among its 400s.
        raise HttpError("more than one Authorization header")
    # nginx validates the Host header even when the request line names the host.
    host = validate_host(host_value, "Host header") if host_value is not None else ""
    if target[0] != "/" and method != "CONNECT" and not (target == "*" and method == "OPTIONS"):
        # CONNECT's authority-form is the proxy's to refuse; "*" is OPTIONS' asterisk-form.
        target, authority, host = _origin_form(target)
        headers = [(k, v) for k, v in headers if k.lower() != _HOST]
        headers.insert(0, ("Host", authority))
    framing = Framing.NONE
    length = 0
    if transfer_encodings is not None:
        if content_length is not None:
            # The request-smuggling shape (RFC 9112 section 6.1): 400 whatever the coding.
            # Differs from Azure: nginx looks at Content-Length only beside "chunked" (its
            # ngx_http_process_request_header), so CL + "TE: gzip" is its 501.
            raise HttpError("both Content-Length and Transfer-Encoding")
        if len(transfer_encodings) > 1:
            # nginx reads Transfer-Encoding as a unique header line: a second one is "client
            # sent duplicate header line" and 400 (ngx_http_process_unique_header_line).
            raise HttpError("multiple Transfer-Encoding headers")
        if transfer_encodings[0].lower() != "chunked":
            # RFC 9112 section 6.1: a server SHOULD answer 501 to a coding it does not know.
            raise HttpError("Only Transfer-Encoding: chunked is supported", 501)
        # An HTTP/1.0 request with Transfer-Encoding is framed as chunked, like h11. Differs
        # from Azure: nginx (since 1.21.1) answers 400. It is not a keep-alive connection
        # either way.
        framing = Framing.CHUNKED
    elif content_length is not None:
        length = _content_length(content_length)
        framing = Framing.LENGTH
    return RequestHead(
        method=method,
        target=target,
        version=version,
        headers=headers,
        framing=framing,
        length=length,
        keep_alive=not http10 and not _lists_token(connection, "close"),
        expect_continue=not http10 and _lists_token(expect, "100-continue"),
        upgrade=(
            ", ".join(upgrade)
            if upgrade is not None and _lists_token(connection, "upgrade")
            else None
        ),
        host=host,
        upgrade_h2c=upgrade is not None and _lists_h2c(upgrade),
    )


def _lists_h2c(values: list[str]) -> bool:
    """Whether Upgrade values name the ``h2c`` protocol (any version, any case)."""
    return any(
        part.strip(" \t").split("/", 1)[0].lower() == "h2c"
        for value in values
        for part in value.split(",")
    )


def _content_length(value: str, status: int = 400) -> int:
    if _DIGITS.fullmatch(value) is None or len(value) > MAX_CONTENT_LENGTH_DIGITS:
        raise HttpError(f"bad Content-Length {_quote(value)}", status, info.INVALID_CONTENT_LENGTH)
    length = int(value)
    if length > MAX_BODY_LENGTH:
        raise HttpError(
            f"Content-Length {value} is larger than 2^63-1", status, info.INVALID_CONTENT_LENGTH
        )
    return length


def _head_too_large(buffer: bytes | bytearray, max_size: int) -> HttpError:
    """The refusal of a request head over ``max_size``: 414 when its request line alone does
    not fit (nginx's "client sent too long URI", NGX_HTTP_REQUEST_URI_TOO_LARGE), else
    nginx's 494 for headers ("client sent too large request"), the page whose status line
    is 400 and whose title is "400 Request Header Or Cookie Too Large"."""
    line_end = buffer.find(b"\r\n", 0, max_size + 2)
    if line_end < 0 or line_end > max_size:
        return HttpError(
            f"request line longer than {max_size} bytes", 414, info.REQUEST_URI_INVALID
        )
    return HttpError(f"request head longer than {max_size} bytes", NGINX_HEADER_TOO_LARGE)


# -- Host and request targets -------------------------------------------------------------------
# RFC 9110 section 7.2 / RFC 3986 section 3.2: Host = uri-host [":" port]. nginx's
# ngx_http_validate_host refuses "/", "\\", NUL, controls, SP and "..", and cuts the port at the
# first ":". Here the whole value must be a host name of letters, digits, "-", "_" and dots
# (or a bracketed IPv6 address), then an optional port of at most five digits: stricter than
# nginx for "," "@" "[name]", a second ":" (Azure: 400 "Invalid Host in request line"),
# percent-encoding and non-ASCII bytes (README, "Security model").

#: A host name label; "_" is common in internal names, and nginx accepts "-" anywhere.
_HOST_LABEL: Final = r"[a-z0-9_-]++"
_HOST_VALUE: Final = re.compile(
    rf"(?:({_HOST_LABEL}(?:\.{_HOST_LABEL})*+)\.?|\[([0-9a-f:.]++)\])(?::([0-9]{{0,5}}))?"
)
#: ``scheme "://" authority rest`` of an absolute-form target (RFC 9112 section 3.2.2).
_ABSOLUTE_FORM: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*+)://([^/?#]*+)(.*+)")
#: Schemes an absolute-form target may name (the gateway serves nothing else).
_TARGET_SCHEMES: Final = frozenset({"http", "https"})
#: Highest TCP port number.
_MAX_PORT: Final = 65535
#: Valid Host values already seen → their routing host. Keep-alive requests repeat one Host,
#: so a hit saves the validation on nearly every request; bounded because clients choose the
#: keys (a gateway serves a few host names; 4,096 covers them with room to spare).
_HOST_CACHE_ENTRIES: Final = 4096
_VALID_HOSTS: Final[ClearingCache[str, str]] = ClearingCache(_HOST_CACHE_ENTRIES)


def validate_host(value: str, where: str = "Host header") -> str:
    """The routing host of a Host value or a target's authority: lowercase, no port, no
    trailing dot, an IPv6 address kept in brackets (as listener host names are compared).

    ``where`` names the value's origin in the error ("Host header", "request line").

    Raises:
        HttpError: (400) the value is not ``host[:port]``; nothing of such a request may be
            forwarded or routed, since a backend could read another host from it.
    """
    known = _VALID_HOSTS.get(value)
    if known is not None:
        return known
    lower = value.lower()
    match = _HOST_VALUE.fullmatch(lower)
    if match is None:
        raise HttpError(
            f"invalid host {_quote(value)} in the {where}: {_host_problem(lower)}",
            400,
            info.INVALID_HOST,
        )
    name, ipv6, port = match.groups()
    if port and int(port) > _MAX_PORT:
        raise HttpError(
            f"invalid host {_quote(value)} in the {where}: port above {_MAX_PORT}",
            400,
            info.INVALID_HOST,
        )
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise HttpError(
                f"invalid host {_quote(value)} in the {where}: [{ipv6}] is not an IPv6 address",
                400,
                info.INVALID_HOST,
            ) from None
        host = f"[{ipv6}]"
    else:
        host = str(name)
    _VALID_HOSTS.put(value, host)
    return host


def _host_problem(lower: str) -> str:
    """Why a Host value does not match :data:`_HOST_VALUE`, for the log."""
    if not lower:
        return "it is empty"
    for char, what in (("/", "a '/'"), ("\\", "a '\\'"), ("\x00", "NUL"), ("@", "userinfo")):
        if char in lower:
            return f"it contains {what}"
    if any(ch < " " or ch == "\x7f" for ch in lower):
        return "it contains a control character"
    if "," in lower or " " in lower:
        return "it is a list or has spaces"
    if lower.count(":") > 1 and not lower.startswith("["):
        return "more than one ':'"
    return "not host[:port] (letters, digits, '-', '_', '.'; or [IPv6]; port up to 5 digits)"


def _origin_form(target: str) -> tuple[str, str, str]:
    """(origin-form target, authority, routing host) of an absolute-form target.

    Raises:
        HttpError: (400) the target is neither origin-form nor an http(s) absolute URI, or its
            authority is not a valid ``host[:port]`` (userinfo included: RFC 9110 section
            4.2.4 says to treat it as an error).
    """
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        raise HttpError(f"illegal request target {_quote(target)} (it must start with '/')")
    scheme, authority, rest = match.groups()
    if scheme.lower() not in _TARGET_SCHEMES:
        raise HttpError(f"unsupported scheme {_quote(scheme)} in the request target")
    host = validate_host(authority, "request line")
    if not rest.startswith("/"):
        rest = "/" + rest  # an empty path is "/" (RFC 9112 section 3.2.1)
    return rest, authority, host


def _request_head_problem(text: str) -> tuple[str, int, str]:
    """Why a complete request head that failed both patterns is refused (the slow path):
    the reason, the status (400) and the access log's reason code."""
    bad = info.INVALID_REQUEST
    if text.count("\n") != text.count("\r\n"):
        return "bare LF line ending in the request head", 400, bad
    line_end = text.find("\r\n")
    request_line = text[:line_end]
    if _REQUEST_LINE_RE.fullmatch(request_line) is None:
        return (
            f"illegal request line {_quote(request_line)}",
            400,
            _request_line_problem(request_line),
        )
    for line in text[line_end + 2 : -2].split("\r\n"):
        if line[:1] in (" ", "\t"):
            return "obsolete line folding in the request head", 400, bad
        if _FIELD_LINE.fullmatch(line + "\r\n") is None:
            return f"illegal header line {_quote(line)}", 400, bad
    return "malformed request head", 400, bad  # pragma: no cover - the grammar is covered


def _request_line_problem(line: str) -> str:
    """The reason code of a request line that is not ``method SP target SP HTTP/d.d``:
    which of its three parts is wrong (the monitoring reference's 4XX table)."""
    parts = line.split(" ")
    if len(parts) != 3:
        return info.INVALID_REQUEST
    method, target, version = parts
    if _METHOD_RE.fullmatch(method) is None:
        return info.INVALID_METHOD
    if _TARGET_RE.fullmatch(target) is None:
        return info.REQUEST_URI_INVALID
    if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version) is None:
        return info.INVALID_VERSION
    return info.INVALID_REQUEST  # pragma: no cover - one of the three parts is wrong


# -- responses ----------------------------------------------------------------------------------


def parse_response_head(
    buffer: bytes | bytearray,
    *,
    request_method: str,
    max_size: int = DEFAULT_MAX_RESPONSE_HEAD_BYTES,
) -> tuple[ResponseHead, int] | None:
    """A backend's response head at the start of ``buffer`` and the bytes it used, or None
    when it is not complete yet.

    Framing, as h11 and RFC 9112 section 6.3: NONE for 1xx, 204, 304, any response to HEAD
    (Content-Length stays in ``headers``) and a 2xx to CONNECT; else CHUNKED with
    ``Transfer-Encoding: chunked``; else LENGTH with Content-Length; else CLOSE. 1xx heads are
    returned like any other: the caller reads the next head after them.

    Read as leniently as h11 reads responses: LF line ends and obs-fold (unfolded to one
    space) are accepted.

    Raises:
        HttpError: (status 502) anything malformed, too large, or a bad Content-Length.
    """
    if not buffer:
        return None
    if buffer[0] < 0x21:
        raise HttpError("illegal status line (it must start with HTTP/)", BAD_GATEWAY)
    end = _BLANK_LINE.search(buffer)
    if end is None:
        if len(buffer) > max_size:
            raise HttpError(f"response head longer than {max_size} bytes", BAD_GATEWAY)
        return None
    used = end.end()
    if used > max_size:
        raise HttpError(f"response head longer than {max_size} bytes", BAD_GATEWAY)
    text = buffer[: end.start() + 1].decode("latin-1")
    match = _RESPONSE_HEAD.fullmatch(text)
    field = _FIELD
    if match is None:
        text = _normalize_response(text)
        match = _RESPONSE_HEAD_LOOSE.fullmatch(text)
        if match is None:
            raise HttpError(_response_head_problem(text), BAD_GATEWAY)
        field = _FIELD_OWS
    version, status_text, reason, _ = match.groups()
    status = int(status_text)
    if status < 100:
        raise HttpError(f"status code {status_text} out of range", BAD_GATEWAY)
    headers: list[tuple[str, str]] = field.findall(text, match.end(4))
    return _response_from_parts(status, reason or "", version, headers, request_method), used


def _normalize_response(text: str) -> str:
    """A response head with CRLF line ends and no obs-fold (RFC 9112 sections 2.2 and 5.2:
    each fold becomes one space, as h11 does). A stray CR stays, and is refused later."""
    if text.count("\n") != text.count("\r\n"):
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    fields_start = text.find("\r\n") + 2
    if text[fields_start : fields_start + 1] in (" ", "\t"):
        raise HttpError("continuation line at start of headers", BAD_GATEWAY)
    return text[:fields_start] + _OBS_FOLD.sub(" ", text[fields_start:])


def _response_head_problem(text: str) -> str:
    line_end = text.find("\r\n")
    status_line = text[:line_end]
    if _STATUS_LINE_RE.fullmatch(status_line) is None:
        return f"illegal status line {_quote(status_line)}"
    for line in text[line_end + 2 : -2].split("\r\n"):
        if _FIELD_LINE.fullmatch(line + "\r\n") is None:
            return f"illegal header line {_quote(line)}"
    return "malformed response head"  # pragma: no cover - the checks above cover the grammar


def _response_from_parts(
    status: int, reason: str, version: str, headers: list[tuple[str, str]], request_method: str
) -> ResponseHead:
    content_length: str | None = None
    transfer_encodings = 0
    connection: list[str] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower not in _SPECIAL:
            continue
        if lower == _CONTENT_LENGTH:
            # h11: a list or repeated lines are fine when every value is the same.
            values = {part.strip(" \t") for part in value.split(",")}
            if len(values) != 1:
                raise HttpError("conflicting Content-Length headers", BAD_GATEWAY)
            (value,) = values
            _content_length(value, BAD_GATEWAY)
            if content_length is not None and content_length != value:
                raise HttpError("conflicting Content-Length headers", BAD_GATEWAY)
            content_length = value
        elif lower == _TRANSFER_ENCODING:
            # h11 accepts exactly one "chunked" (so "gzip, chunked" is refused too).
            transfer_encodings += 1
            if transfer_encodings > 1:
                raise HttpError("multiple Transfer-Encoding headers", BAD_GATEWAY)
            if value.lower() != "chunked":
                raise HttpError("Only Transfer-Encoding: chunked is supported", BAD_GATEWAY)
        elif lower == _CONNECTION:
            connection = [*(connection or ()), value]
    if (
        status < 200
        or status in _NO_BODY_STATUSES
        or request_method == "HEAD"
        or (request_method == "CONNECT" and 200 <= status < 300)
    ):
        framing, length = Framing.NONE, 0
    elif transfer_encodings:
        # Transfer-Encoding beats Content-Length in a response (RFC 9112 section 6.3 item 3).
        framing, length = Framing.CHUNKED, 0
    elif content_length is not None:
        framing, length = Framing.LENGTH, int(content_length)
    else:
        framing, length = Framing.CLOSE, 0
    return ResponseHead(
        status=status,
        reason=reason,
        version=version,
        headers=headers,
        framing=framing,
        length=length,
        keep_alive=(
            version >= "1.1"
            and framing is not Framing.CLOSE
            and not _lists_token(connection, "close")
        ),
    )


# -- bodies -------------------------------------------------------------------------------------

#: Chunked decoder states.
_SIZE_LINE: Final = 0
_CHUNK_DATA: Final = 1
_CHUNK_CRLF: Final = 2
_TRAILERS: Final = 3


class BodyReader:
    """Incremental body decoder for one message (sans-I/O).

    Feed it the bytes that follow the head; it returns body bytes and, once the body has
    ended, the bytes after it (the next message's start). A body that arrives whole in one
    call is cut with slices and ``find``, never byte by byte.
    """

    __slots__ = ("_error", "_framing", "_pending", "_remaining", "_state", "done")

    #: True once the whole body has been read (NONE: at once; CLOSE: only after :meth:`eof`).
    done: bool

    def __init__(self, framing: Framing, length: int = 0) -> None:
        self._framing = framing
        self._remaining = length if framing is Framing.LENGTH else 0
        self._state = _SIZE_LINE
        #: Bytes of an unfinished size line, chunk-data CRLF or trailer section.
        self._pending = b""
        self.done = framing is Framing.NONE or (framing is Framing.LENGTH and length == 0)
        #: A framing error found after some body bytes decoded in the same feed: those bytes
        #: are returned first (a proxy forwards what was valid), the error on the next call.
        self._error: HttpError | None = None

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Decode the next bytes from the peer: (body bytes, bytes after the end of the body).

        Raises:
            HttpError: (400) malformed chunked encoding.
        """
        if self._error is not None:
            raise self._error
        if self.done:
            return b"", data
        framing = self._framing
        if framing is Framing.LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                return data, b""
            self._remaining = 0
            self.done = True
            if len(data) == remaining:
                return data, b""
            return data[:remaining], data[remaining:]
        if framing is Framing.CLOSE:
            return data, b""
        return self._feed_chunked(data)

    def eof(self) -> None:
        """The peer closed its side: the end of a CLOSE body.

        Raises:
            HttpError: (400) a LENGTH or CHUNKED body was not finished.
        """
        if self._error is not None:
            raise self._error
        if self.done:
            return
        if self._framing is Framing.CLOSE:
            self.done = True
            return
        if self._framing is Framing.LENGTH:
            raise HttpError(
                f"peer closed the connection {self._remaining} bytes before the body's end"
            )
        raise HttpError("peer closed the connection inside a chunked body")

    def _feed_chunked(self, data: bytes) -> tuple[bytes, bytes]:
        pieces: list[memoryview] = []
        try:
            return self._decode_chunks(data, pieces)
        except HttpError as exc:
            if not pieces:
                raise
            self._error = exc
            return b"".join(pieces), b""

    def _decode_chunks(self, data: bytes, pieces: list[memoryview]) -> tuple[bytes, bytes]:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        view = memoryview(buf)
        pos = 0
        size = len(buf)
        state = self._state
        remaining = self._remaining
        while True:
            if state == _SIZE_LINE:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    if size - pos > MAX_CHUNK_SIZE_LINE_BYTES:
                        raise HttpError("chunk size line too long")
                    self._pending = buf[pos:]
                    pos = size
                    break
                if line_end - pos > MAX_CHUNK_SIZE_LINE_BYTES:
                    raise HttpError("chunk size line too long")
                match = _CHUNK_SIZE_LINE.fullmatch(buf, pos, line_end)
                if match is None:
                    line = buf[pos:line_end].decode("latin-1")
                    raise HttpError(f"illegal chunk size line {_quote(line)}")
                remaining = int(match[1], 16)
                if remaining > MAX_BODY_LENGTH:
                    raise HttpError(f"chunk size 0x{match[1].decode()} is larger than 2^63-1")
                pos = line_end + 2
                if not remaining:
                    state = _TRAILERS
                    continue
                stop = pos + remaining
                if stop + 2 <= size:
                    # The usual case: the whole chunk and its CRLF are here.
                    if not buf.startswith(b"\r\n", stop):
                        raise HttpError("missing CRLF after chunk data")
                    pieces.append(view[pos:stop])
                    pos = stop + 2
                    remaining = 0
                    continue
                state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                take = min(remaining, size - pos)
                if take:
                    pieces.append(view[pos : pos + take])
                    pos += take
                    remaining -= take
                if remaining:
                    break
                state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                tail = buf[pos : pos + 2]
                if tail == b"\r\n":
                    pos += 2
                    state = _SIZE_LINE
                    continue
                if tail != b"\r"[: len(tail)]:
                    raise HttpError("missing CRLF after chunk data")
                self._pending = tail
                pos = size
                break
            else:
                trailers_end = self._trailers_end(buf, pos)
                if trailers_end is None:
                    self._pending = buf[pos:]
                    pos = size
                    break
                pos = trailers_end
                self.done = True
                break
        self._state = state
        self._remaining = remaining
        if not pieces:
            body = b""
        elif len(pieces) == 1:
            body = bytes(pieces[0])
        else:
            body = b"".join(pieces)
        return body, (buf[pos:] if pos < size else b"")

    @staticmethod
    def _trailers_end(buf: bytes, pos: int) -> int | None:
        """Where the trailer section starting at ``pos`` ends, or None if incomplete.

        Trailers are validated (h11 grammar) and dropped: the proxy re-chunks the body and
        never forwards them.
        """
        # h11 reads "\r\n" or a bare "\n" right after the last chunk as "no trailers".
        if buf.startswith(b"\r\n", pos):
            return pos + 2
        if buf.startswith(b"\n", pos):
            return pos + 1
        blank = _BLANK_LINE.search(buf, pos)
        if blank is None:
            if len(buf) - pos > MAX_TRAILER_BYTES:
                raise HttpError(f"chunked trailers longer than {MAX_TRAILER_BYTES} bytes")
            return None
        if blank.end() - pos > MAX_TRAILER_BYTES:
            raise HttpError(f"chunked trailers longer than {MAX_TRAILER_BYTES} bytes")
        lines = [
            line[:-1] if line.endswith(b"\r") else line
            for line in buf[pos : blank.start()].split(b"\n")
        ]
        if lines[0][:1] in (b" ", b"\t"):
            raise HttpError("continuation line at start of trailers")
        unfolded: list[bytes] = []
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                unfolded[-1] += b" " + line.lstrip(b" \t")
            else:
                unfolded.append(line)
        for line in unfolded:
            if _TRAILER_FIELD.fullmatch(line) is None:
                raise HttpError(f"illegal trailer line {_quote(line.decode('latin-1'))}")
        return blank.end()


# -- writing ------------------------------------------------------------------------------------


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body.

    Empty ``data`` gives ``b""`` (as h11 writes nothing for an empty Data event): an empty
    chunk would be the last-chunk marker and end the body early.
    """
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def request_head_bytes(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 request head: request line, one ``Name: value`` line per header, blank line.

    Written in the order given (unlike h11, Host is not moved first). Everything is checked
    against the grammar :func:`parse_request_head` accepts, so a rewritten value can never add
    a line (header injection) or be refused by a strict backend.

    Raises:
        ValueError: the method is not a token, the target is not visible ASCII, a name is not a
            token, a value contains NUL, CR, LF, VT or FF, or text is not latin-1.
    """
    if _METHOD_RE.fullmatch(method) is None:
        raise ValueError(f"method {method!r} is not a token")
    if _TARGET_RE.fullmatch(target) is None:
        raise ValueError(f"request target {target!r} is empty or has whitespace, CTL or non-ASCII")
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (_encode(method), _encode(target), _fields_bytes(headers))


def response_head_bytes(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 response head. An empty reason is written ``HTTP/1.1 200 \\r\\n`` (as h11
    writes it: the space after the status code is mandatory, RFC 9112 section 4).

    Raises:
        ValueError: status outside 100-999, a reason with NUL/CR/LF/VT/FF, or a bad header
            (see :func:`request_head_bytes`).
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status {status} is not a three-digit code")
    if _REASON_RE.fullmatch(reason) is None:
        raise ValueError(f"reason {reason!r} contains NUL, CR, LF, VT or FF")
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, _encode(reason), _fields_bytes(headers))


#: The bytes a written head holds only as its line ends: every other NUL, CR, LF, VT or FF
#: would be in a value, where it could start a line of its own (header injection).
_LINE_BREAKING: Final = b"\x00\n\x0b\x0c\r"
#: Header names joined with ":" (a token holds none, so the joined text splits back the same).
_NAMES_RE: Final = re.compile(rf"(?:{_TOKEN}:)*+{_TOKEN}")


def _fields_bytes(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines, validated without a regex pass over the values.

    Values are most of a forwarded head (a URL-encoded certificate is over a kilobyte), so
    they are checked by counting bytes, not by a pattern: the line-breaking bytes must be
    exactly the CR LF that ends each line. The names,
    joined, get one short regex pass; a name with a ":" would move the split point.
    """
    pairs = headers if isinstance(headers, list) else list(headers)
    if not pairs:
        return b""
    names: list[str] = []
    lines: list[str] = []
    for name, value in pairs:
        names.append(name)
        lines.append(f"{name}: {value}\r\n")
    raw = _encode("".join(lines))
    count = len(lines)
    if (
        len(raw) - len(raw.translate(None, _LINE_BREAKING)) != 2 * count
        or (joined := ":".join(names)).count(":") != count - 1
        or _NAMES_RE.fullmatch(joined) is None
    ):
        for name, value in pairs:
            if _METHOD_RE.fullmatch(name) is None:
                raise ValueError(f"header name {name!r} is not a token")
            if _FIELD_LINE.fullmatch(f"{name}: {value}\r\n") is None:
                raise ValueError(f"header {name!r} value {value!r} contains NUL, CR, LF, VT or FF")
        raise AssertionError("unreachable: every header passed alone")  # pragma: no cover
    return raw


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"HTTP head text must be latin-1: {exc}") from exc
