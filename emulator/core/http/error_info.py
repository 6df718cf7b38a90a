"""The access log's ``error_info`` values: why the gateway could not complete a request.

The names are the reason codes of Azure's monitoring reference (monitor-application-gateway-
reference, "Access log category", the 4XX and 5XX error tables), kept here in one place;
:data:`PAGE_ERROR_INFO` says which one each gateway page logs, the way the reference
describes each code. A request the gateway completed logs :data:`NO_ERROR` (the reference's
sample record), whatever status the backend chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from emulator.core.http.pages import GatewayPage

__all__ = ["PAGE_ERROR_INFO", "error_info_for_page"]

NO_ERROR: Final = "ERRORINFO_NO_ERROR"
INVALID_METHOD: Final = "ERRORINFO_INVALID_METHOD"
INVALID_REQUEST: Final = "ERRORINFO_INVALID_REQUEST"
INVALID_VERSION: Final = "ERRORINFO_INVALID_VERSION"
INVALID_HOST: Final = "ERRORINFO_INVALID_HOST"
INVALID_CONTENT_LENGTH: Final = "ERRORINFO_INVALID_CONTENT_LENGTH"
INVALID_METHOD_TRACE: Final = "ERRORINFO_INVALID_METHOD_TRACE"
CLIENT_CLOSED_REQUEST: Final = "ERRORINFO_CLIENT_CLOSED_REQUEST"
REQUEST_URI_INVALID: Final = "ERRORINFO_REQUEST_URI_INVALID"
HTTP_NO_HOST_HEADER: Final = "ERRORINFO_HTTP_NO_HOST_HEADER"
HTTP_TO_HTTPS_PORT: Final = "ERRORINFO_HTTP_TO_HTTPS_PORT"
HTTPS_NO_CERT: Final = "ERRORINFO_HTTPS_NO_CERT"
UPSTREAM_NO_LIVE: Final = "ERRORINFO_UPSTREAM_NO_LIVE"
UPSTREAM_CLOSED_CONNECTION: Final = "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"
UPSTREAM_TIMED_OUT: Final = "ERRORINFO_UPSTREAM_TIMED_OUT"

#: The code each page logs when nothing more specific is known (a codec refusal carries its
#: own, see :class:`emulator.core.http.codec.HttpError`; the pump picks the upstream code of a 502).
#: Where the reference has no code for the case (403 for h2c, 408, 413, 500, 501) the page
#: logs INVALID_REQUEST, and a 421 INVALID_HOST: a failed request never logs NO_ERROR.
PAGE_ERROR_INFO: Final[Mapping[GatewayPage, str]] = {
    GatewayPage.NO_CLIENT_CERT: HTTPS_NO_CERT,
    GatewayPage.CLIENT_CERT_ERROR: HTTPS_NO_CERT,
    GatewayPage.PLAIN_HTTP_TO_HTTPS: HTTP_TO_HTTPS_PORT,
    GatewayPage.BAD_REQUEST: INVALID_REQUEST,
    # No listener takes the Host (the reference's example for INVALID_HOST).
    GatewayPage.NOT_FOUND: INVALID_HOST,
    GatewayPage.REQUEST_TIMEOUT: INVALID_REQUEST,
    GatewayPage.REQUEST_TOO_LARGE: INVALID_REQUEST,
    GatewayPage.HEADERS_TOO_LARGE: INVALID_REQUEST,
    GatewayPage.URI_TOO_LARGE: REQUEST_URI_INVALID,
    GatewayPage.HEADER_OR_COOKIE_TOO_LARGE: INVALID_REQUEST,
    GatewayPage.NOT_ALLOWED: INVALID_METHOD_TRACE,
    GatewayPage.INTERNAL_ERROR: INVALID_REQUEST,
    GatewayPage.BAD_GATEWAY: UPSTREAM_NO_LIVE,
    GatewayPage.GATEWAY_TIMEOUT: UPSTREAM_TIMED_OUT,
    GatewayPage.FORBIDDEN: INVALID_REQUEST,
    GatewayPage.MISDIRECTED_REQUEST: INVALID_HOST,
    # Redirects are the gateway's answer, not a failure.
    GatewayPage.MOVED_PERMANENTLY: NO_ERROR,
    GatewayPage.FOUND: NO_ERROR,
    GatewayPage.SEE_OTHER: NO_ERROR,
    GatewayPage.TEMPORARY_REDIRECT: NO_ERROR,
    GatewayPage.NOT_IMPLEMENTED: INVALID_REQUEST,
}


def error_info_for_page(page: GatewayPage) -> str:
    """The ``error_info`` a page logs (every page has one: the unit tests check the table)."""
    return PAGE_ERROR_INFO[page]
