"""The responses the gateway writes itself, byte for byte: one page per status, one renderer.

Application Gateway v2 runs nginx underneath; the pages it generates are nginx's error pages
with the server token ``Microsoft-Azure-Application-Gateway/v2`` (observed on real Standard_v2
gateways, see ``appgw-behaviour.md`` §3). Rewrite rules are not applied to these responses.
Refusals (400, 413, 431...), routing's own answers (redirects, 404, 421, 500) and the backend
failures (502, 504) are all :class:`GatewayPage` members, rendered by :func:`render_page`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final

__all__ = [
    "NGINX_HEADER_TOO_LARGE",
    "SERVER_TOKEN",
    "GatewayPage",
    "http_date",
    "page_for_status",
    "page_headers",
    "render_page",
]

SERVER_TOKEN: Final = "Microsoft-Azure-Application-Gateway/v2"
#: nginx's internal code for a request head over its buffers (NGX_HTTP_REQUEST_HEADER_TOO_LARGE,
#: ngx_http_request.h): never on the wire, where it is a 400 with its own page title.
NGINX_HEADER_TOO_LARGE: Final = 494


@dataclass(frozen=True, slots=True)
class _Page:
    status: int
    reason: str
    #: nginx puts a more specific text in the title and second line for some 400s.
    detail: str | None = None
    #: The status an error names to get this page when it is not ``status`` (nginx's 494).
    code: int | None = None


class GatewayPage(enum.Enum):
    """Every page the gateway can generate, with its status line."""

    NO_CLIENT_CERT = _Page(400, "Bad Request", "No required SSL certificate was sent")
    CLIENT_CERT_ERROR = _Page(400, "Bad Request", "The SSL certificate error")
    PLAIN_HTTP_TO_HTTPS = _Page(400, "Bad Request", "The plain HTTP request was sent to HTTPS port")
    BAD_REQUEST = _Page(400, "Bad Request")
    NOT_FOUND = _Page(404, "Not Found")
    REQUEST_TIMEOUT = _Page(408, "Request Time-out")
    #: A request body over the gateway's maximum request size (nginx's client_max_body_size).
    REQUEST_TOO_LARGE = _Page(413, "Request Entity Too Large")
    #: HTTP/2 only: a request with more header fields than the limit.
    HEADERS_TOO_LARGE = _Page(431, "Request Header Fields Too Large")
    #: An HTTP/1.x request line longer than the 32 KB URL limit (nginx's "client sent too
    #: long URI", NGX_HTTP_REQUEST_URI_TOO_LARGE in ngx_http_process_request_line).
    URI_TOO_LARGE = _Page(414, "Request-URI Too Large")
    #: An HTTP/1.x request head over the 32 KB header limit, or with more fields than allowed
    #: (nginx's 494 page: status line 400, ngx_http_special_response.c).
    HEADER_OR_COOKIE_TOO_LARGE = _Page(
        400, "Bad Request", "Request Header Or Cookie Too Large", code=NGINX_HEADER_TOO_LARGE
    )
    #: ``TRACE``: nginx refuses it in ngx_http_process_request_header (NGX_HTTP_NOT_ALLOWED);
    #: the monitoring reference logs it as ERRORINFO_INVALID_METHOD_TRACE.
    NOT_ALLOWED = _Page(405, "Not Allowed")
    INTERNAL_ERROR = _Page(500, "Internal Server Error")
    BAD_GATEWAY = _Page(502, "Bad Gateway")
    GATEWAY_TIMEOUT = _Page(504, "Gateway Time-out")

    # -- refused request shapes (issue 15): nginx's plain pages for these statuses ----------
    #: An ``Upgrade: h2c`` request: Azure "doesn't support HTTP/2 Cleartext (h2c) protocol
    #: upgrade attempts from HTTP/1.1 and returns a 403 Forbidden error"
    #: (configuration-listeners, "HTTP/2 support").
    FORBIDDEN = _Page(403, "Forbidden")
    #: The request's host names a listener whose client authentication did not run on this
    #: connection (nginx's answer when SNI and Host pick different client-auth settings).
    MISDIRECTED_REQUEST = _Page(421, "Misdirected Request")

    # -- routing's own answers ---------------------------------------------------------------
    #: Redirect configurations (redirect-overview: Permanent, Found, SeeOther, Temporary).
    MOVED_PERMANENTLY = _Page(301, "Moved Permanently")
    FOUND = _Page(302, "Found")
    SEE_OTHER = _Page(303, "See Other")
    TEMPORARY_REDIRECT = _Page(307, "Temporary Redirect")
    #: A Transfer-Encoding other than ``chunked`` (nginx ngx_http_process_request_header:
    #: "client sent unknown Transfer-Encoding", NGX_HTTP_NOT_IMPLEMENTED).
    NOT_IMPLEMENTED = _Page(501, "Not Implemented")

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def reason(self) -> str:
        return self.value.reason


#: The page of each status that has exactly one (the 400s with a detail line are picked by name,
#: or by their nginx code).
_BY_STATUS: Final = {
    page.value.code or page.status: page
    for page in GatewayPage
    if page.value.detail is None or page.value.code is not None
}


def page_for_status(status: int) -> GatewayPage:
    """The gateway's page for ``status`` (a redirect's, an error's; 494 is nginx's
    "Request Header Or Cookie Too Large").

    Raises:
        KeyError: the gateway has no page of that status.
    """
    return _BY_STATUS[status]


def render_page(page: GatewayPage) -> bytes:
    """The HTML body nginx writes for ``page``, with Azure's server token, CRLF line ends."""
    p = page.value
    title = f"{p.status} {p.detail or p.reason}"
    lines = [
        "<html>",
        f"<head><title>{title}</title></head>",
        "<body>",
        f"<center><h1>{p.status} {p.reason}</h1></center>",
    ]
    if p.detail:
        lines.append(f"<center>{p.detail}</center>")
    lines += [f"<hr><center>{SERVER_TOKEN}</center>", "</body>", "</html>", ""]
    # nginx writes its pages with CRLF line ends (src/http/ngx_http_special_response.c), so
    # the gateway's pages have them too.
    return "\r\n".join(lines).encode()


def http_date(epoch_s: float) -> str:
    """``epoch_s`` as an IMF-fixdate (RFC 9110 section 5.6.7), the form nginx writes in
    ``Date``. The caller reads the clock; this module keeps none."""
    return formatdate(epoch_s, usegmt=True)


def page_headers(
    page_length: int,
    *,
    date: str,
    keep_alive: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[tuple[str, str]]:
    """The head fields of a gateway page, in the order nginx's header filter writes them
    (ngx_http_header_filter_module.c: Server, Date, Content-Type, Content-Length, Location,
    Connection), the order real gateway captures show. ``extra`` (a redirect's Location)
    goes before Connection; ``Connection`` says whether the connection stays open, as nginx
    says it on every HTTP/1.x response."""
    return [
        ("Server", SERVER_TOKEN),
        ("Date", date),
        ("Content-Type", "text/html"),
        ("Content-Length", str(page_length)),
        *extra,
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]
