"""The access record as a pure value (:mod:`emulator.core.access`): the caller supplies the time
stamp, and building one writes no log line (the shell's ``access_record`` adds both; see
tests/runtime/test_access_record.py)."""

from __future__ import annotations

import logging

import pytest

from emulator.core.access import AccessRecord, RequestMeter, build_record
from emulator.core.http.error_info import HTTPS_NO_CERT, UPSTREAM_CLOSED_CONNECTION
from emulator.core.http.pages import GatewayPage
from emulator.core.request.rewrite import RequestFacts

FACTS = RequestFacts(
    client_ip="10.0.0.1",
    client_port=50000,
    server_port=443,
    scheme="https",
    method="GET",
    target="/a?x=1",
    http_version="1.1",
    headers=(("Host", "app.contoso.com"),),
    trace_id="t" * 32,
    tls_version="TLSv1.3",
    cipher="TLS_AES_128_GCM_SHA256",
)


def build(
    status: int = 200, *, time_stamp: str = "t", meter: RequestMeter | None = None
) -> AccessRecord:
    return build_record(
        FACTS,
        status,
        0.5,
        listener="l",
        rule=None,
        route=None,
        decision=None,
        cert=None,
        tls=True,
        routed="",
        server_status="",
        meter=meter,
        time_stamp=time_stamp,
    )


def test_the_record_carries_the_callers_time_stamp_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        got = build(time_stamp="2026-01-02T03:04:05.000Z")
    assert got.timeStamp == "2026-01-02T03:04:05.000Z"
    assert caplog.records == []


def test_the_same_inputs_give_the_same_record() -> None:
    assert build(404, meter=RequestMeter()) == build(404, meter=RequestMeter())


def test_a_page_sets_html_and_its_reason_code_unless_one_is_already_named() -> None:
    fresh = RequestMeter()
    fresh.page_sent(GatewayPage.NO_CLIENT_CERT)
    assert (fresh.content_type, fresh.error_info) == ("text/html", HTTPS_NO_CERT)

    # A more precise code from the error behind the page is kept: a 502 after the backend
    # closed mid-response is not the page's default "no live upstream".
    named = RequestMeter(error_info=UPSTREAM_CLOSED_CONNECTION)
    named.page_sent(GatewayPage.BAD_GATEWAY)
    assert (named.content_type, named.error_info) == ("text/html", UPSTREAM_CLOSED_CONNECTION)
