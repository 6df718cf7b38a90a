"""Gateway pages on the wire: the Date value, nginx's pages for the new refusals, and the
access log's reason code of each page."""

from __future__ import annotations

import re

import pytest

from emulator.core.http.error_info import PAGE_ERROR_INFO, error_info_for_page
from emulator.core.http.pages import (
    NGINX_HEADER_TOO_LARGE,
    GatewayPage,
    http_date,
    page_for_status,
    page_headers,
    render_page,
)

#: RFC 9110 section 5.6.7: IMF-fixdate.
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


def test_http_date_is_an_imf_fixdate_of_the_given_time() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1_796_180_645.9) == "Wed, 02 Dec 2026 03:04:05 GMT"
    assert IMF_FIXDATE.fullmatch(http_date(1e9))


@pytest.mark.parametrize("keep_alive", [True, False])
def test_page_headers_follow_nginx_order_and_say_the_connection_state(keep_alive: bool) -> None:
    fields = page_headers(5, date="D", keep_alive=keep_alive, extra=(("Location", "/a"),))
    assert [name for name, _ in fields] == [
        "Server",
        "Date",
        "Content-Type",
        "Content-Length",
        "Location",
        "Connection",
    ]
    assert fields[-1] == ("Connection", "keep-alive" if keep_alive else "close")


@pytest.mark.parametrize(
    ("status", "page", "title", "h1"),
    [
        (414, GatewayPage.URI_TOO_LARGE, "414 Request-URI Too Large", "414 Request-URI Too Large"),
        (
            NGINX_HEADER_TOO_LARGE,
            GatewayPage.HEADER_OR_COOKIE_TOO_LARGE,
            "400 Request Header Or Cookie Too Large",
            "400 Bad Request",
        ),
        (405, GatewayPage.NOT_ALLOWED, "405 Not Allowed", "405 Not Allowed"),
    ],
)
def test_new_refusals_get_nginx_pages(status: int, page: GatewayPage, title: str, h1: str) -> None:
    assert page_for_status(status) is page
    body = render_page(page).decode()
    assert f"<head><title>{title}</title></head>\r\n" in body
    assert f"<center><h1>{h1}</h1></center>\r\n" in body


def test_the_header_too_large_page_has_a_400_status_line() -> None:
    page = GatewayPage.HEADER_OR_COOKIE_TOO_LARGE
    assert (page.status, page.reason) == (400, "Bad Request")
    # The plain 400 stays the page of status 400.
    assert page_for_status(400) is GatewayPage.BAD_REQUEST


def test_every_page_has_an_access_log_reason_code() -> None:
    assert set(PAGE_ERROR_INFO) == set(GatewayPage)
    assert all(code.startswith("ERRORINFO_") for code in PAGE_ERROR_INFO.values())


@pytest.mark.parametrize(
    ("page", "code"),
    [
        (GatewayPage.NO_CLIENT_CERT, "ERRORINFO_HTTPS_NO_CERT"),
        (GatewayPage.CLIENT_CERT_ERROR, "ERRORINFO_HTTPS_NO_CERT"),
        (GatewayPage.PLAIN_HTTP_TO_HTTPS, "ERRORINFO_HTTP_TO_HTTPS_PORT"),
        (GatewayPage.NOT_FOUND, "ERRORINFO_INVALID_HOST"),
        (GatewayPage.NOT_ALLOWED, "ERRORINFO_INVALID_METHOD_TRACE"),
        (GatewayPage.BAD_GATEWAY, "ERRORINFO_UPSTREAM_NO_LIVE"),
        (GatewayPage.GATEWAY_TIMEOUT, "ERRORINFO_UPSTREAM_TIMED_OUT"),
        (GatewayPage.FOUND, "ERRORINFO_NO_ERROR"),
    ],
)
def test_pages_log_the_monitoring_references_code(page: GatewayPage, code: str) -> None:
    assert error_info_for_page(page) == code
