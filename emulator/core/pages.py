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
from typing import Final

__all__ = ["SERVER_TOKEN", "GatewayPage", "page_for_status", "render_page"]

SERVER_TOKEN: Final = "Microsoft-Azure-Application-Gateway/v2"


@dataclass(frozen=True, slots=True)
class _Page:
    status: int
    reason: str
    #: nginx puts a more specific text in the title and second line for some 400s.
    detail: str | None = None


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
    HEADERS_TOO_LARGE = _Page(431, "Request Header Fields Too Large")
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


#: The page of each status that has exactly one (the 400s with a detail line are picked by name).
_BY_STATUS: Final = {page.status: page for page in GatewayPage if page.value.detail is None}


def page_for_status(status: int) -> GatewayPage:
    """The gateway's page for ``status`` (a redirect's, an error's).

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
