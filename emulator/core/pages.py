"""The responses the gateway writes itself, byte for byte.

Application Gateway v2 runs nginx underneath; the pages it generates are nginx's error pages
with the server token ``Microsoft-Azure-Application-Gateway/v2`` (observed on real Standard_v2
gateways, see ``appgw-behaviour.md`` §3). Rewrite rules are not applied to these responses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["SERVER_TOKEN", "GatewayPage", "render_page"]

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

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def reason(self) -> str:
        return self.value.reason


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
