"""The one mapping of request-time errors to answers (emulator.core.request.failures)."""

from __future__ import annotations

import logging

import pytest

from emulator.core.http import error_info as info
from emulator.core.http.codec import HttpError
from emulator.core.http.pages import GatewayPage
from emulator.core.request.failures import ErrorAnswer, answer_for
from emulator.core.request.plan import After
from emulator.errors import (
    BackendConnectError,
    BackendTimeout,
    RequestBodyTimeout,
    RequestTooLarge,
)

BACKEND = "127.0.0.1:8080"


def answer(
    exc: Exception, *, forwarded_to: str = "", reached: bool = False, routed: str = BACKEND
) -> ErrorAnswer:
    return answer_for(
        exc, routed=routed, forwarded_to=forwarded_to, backend_reached=reached, body_limit=10
    )


@pytest.mark.parametrize(
    ("exc", "page"),
    [
        (HttpError("bad"), GatewayPage.BAD_REQUEST),
        (HttpError("long", 414, info.REQUEST_URI_INVALID), GatewayPage.URI_TOO_LARGE),
        (HttpError("te", 501), GatewayPage.NOT_IMPLEMENTED),
        (RequestTooLarge("big"), GatewayPage.REQUEST_TOO_LARGE),
        (RequestBodyTimeout("slow"), GatewayPage.REQUEST_TIMEOUT),
        (BackendConnectError("down"), GatewayPage.BAD_GATEWAY),
        (BackendTimeout("slow"), GatewayPage.GATEWAY_TIMEOUT),
        (RuntimeError("a bug"), GatewayPage.INTERNAL_ERROR),
    ],
)
def test_each_error_gets_the_page_of_its_status(exc: Exception, page: GatewayPage) -> None:
    assert answer(exc).page is page


def test_an_unknown_status_is_a_500_not_a_crash() -> None:
    exc = HttpError("odd", 418)

    assert answer(exc).page is GatewayPage.INTERNAL_ERROR


@pytest.mark.parametrize(
    ("exc", "reached", "error_info"),
    [
        (BackendTimeout("slow"), True, info.UPSTREAM_TIMED_OUT),
        (BackendConnectError("closed"), True, info.UPSTREAM_CLOSED_CONNECTION),
        (BackendConnectError("refused"), False, info.UPSTREAM_NO_LIVE),
    ],
)
def test_backend_failures_name_their_reason_and_keep_a_read_connection(
    exc: Exception, reached: bool, error_info: str
) -> None:
    result = answer(exc, reached=reached)

    assert result.error_info == error_info
    assert result.after is After.KEEP_IF_READ
    assert result.routed == BACKEND
    assert result.note.event == "backend.error"
    assert result.note.level == logging.WARNING
    assert f"backend={BACKEND}" in result.note.detail


def test_a_broken_body_after_the_head_went_out_names_that_backend_and_closes() -> None:
    result = answer(HttpError("illegal chunk size line"), forwarded_to=BACKEND, routed="")

    assert result.page is GatewayPage.BAD_REQUEST
    assert result.after is After.CLOSE
    assert result.routed == BACKEND
    assert result.note.event == "http.bad_body_midstream"
    assert "illegal chunk size line" in result.note.detail


def test_a_bad_request_keeps_the_codecs_reason_code_and_names_no_backend() -> None:
    result = answer(HttpError("bad host", 400, info.INVALID_HOST))

    assert (result.routed, result.error_info, result.after) == ("", info.INVALID_HOST, After.CLOSE)
    assert result.note.event == "http.bad_request"


def test_body_errors_leave_the_reason_code_to_the_page() -> None:
    assert answer(RequestTooLarge("big")).error_info == ""
    assert answer(RequestTooLarge("big")).note.detail == "limit=10"
    assert answer(RequestBodyTimeout("slow")).note.event == "http.request_body_failed"
