"""The access record's fields from a request's facts and its meter (issue 21, item 6): the
meanings and types of the monitoring reference's v2 access log."""

from __future__ import annotations

import json
import logging

import pytest

from emulator.core.access import AccessRecord, RequestMeter
from emulator.core.request.rewrite import RequestFacts
from emulator.runtime.access_log import access_log_entry, access_record


def facts(*, host: str = "app.contoso.com:443", version: str = "1.1") -> RequestFacts:
    return RequestFacts(
        client_ip="10.0.0.1",
        client_port=50000,
        server_port=443,
        scheme="https",
        method="GET",
        target="/shop/a?x=1",
        http_version=version,
        headers=(("Host", host), ("User-Agent", "curl/8")),
        trace_id="t" * 32,
        tls_version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
    )


def record(
    meter: RequestMeter, *, status: int = 200, request: RequestFacts | None = None
) -> AccessRecord:
    return access_record(
        request or facts(),
        status,
        0.25,
        listener="l",
        rule=None,
        route=None,
        decision=None,
        cert=None,
        tls=True,
        routed="127.0.0.1:8080",
        server_status=str(status),
        meter=meter,
    )


def test_a_forwarded_request_logs_the_rewritten_uri_and_host_and_the_backend_leg() -> None:
    meter = RequestMeter(
        received_bytes=120,
        request_uri="/buy.aspx",
        host="backend.internal:8443",
        backend_tls=True,
        upstream_port=40123,
        backend_sent=10.0,
        backend_answered=10.0284,
        content_type="application/json",
    )
    meter.sent(100, 11.0)
    meter.sent(366, 11.5)
    got = record(meter)
    assert (got.requestUri, got.originalRequestUriWithArgs) == ("/buy.aspx", "/shop/a?x=1")
    assert (got.host, got.originalHost) == ("backend.internal", "app.contoso.com:443")
    assert (got.sslEnabled, got.sslProtocol) == ("on", "TLSv1.3")
    assert (got.receivedBytes, got.sentBytes, got.clientResponseTime) == (120, 466, 0.5)
    assert (got.serverResponseLatency, got.upstreamSourcePort) == ("0.028", "40123")
    assert (got.contentType, got.error_info) == ("application/json", "ERRORINFO_NO_ERROR")


def test_an_unforwarded_request_logs_the_clients_uri_and_no_backend_leg() -> None:
    got = record(RequestMeter(error_info="ERRORINFO_HTTPS_NO_CERT"), status=400)
    assert (got.requestUri, got.host, got.sslEnabled) == ("/shop/a", "app.contoso.com", "off")
    assert (got.serverResponseLatency, got.upstreamSourcePort) == ("", "")
    assert got.error_info == "ERRORINFO_HTTPS_NO_CERT"


def test_a_client_that_left_logs_client_closed_request() -> None:
    assert record(RequestMeter(), status=499).error_info == "ERRORINFO_CLIENT_CLOSED_REQUEST"


@pytest.mark.parametrize(
    ("host", "logged"),
    [("[::1]:8443", "[::1]"), ("[::1]", "[::1]"), ("a.example", "a.example")],
)
def test_the_host_field_drops_the_port_only(host: str, logged: str) -> None:
    assert record(RequestMeter(), request=facts(host=host)).host == logged


def test_the_http_version_is_the_requests() -> None:
    assert record(RequestMeter(), request=facts(version="2.0")).httpVersion == "HTTP/2.0"


def test_the_json_entry_has_the_references_types() -> None:
    meter = RequestMeter(upstream_port=1, backend_sent=0.0, backend_answered=0.5)
    props = access_log_entry(record(meter), resource_id="r")["properties"]
    assert isinstance(props, dict)
    json.dumps(props)
    for name in ("serverStatus", "serverResponseLatency", "upstreamSourcePort", "error_info"):
        assert isinstance(props[name], str), name
    for name in ("httpStatus", "receivedBytes", "sentBytes", "clientPort"):
        assert isinstance(props[name], int), name
    assert isinstance(props["clientResponseTime"], float)
    assert "WAFMode" not in props


def test_the_shell_stamps_the_record_and_writes_the_summary_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="emulator.access"):
        got = record(RequestMeter())
    assert got.timeStamp.startswith("20")
    assert got.timeStamp.endswith("Z")
    assert [r.getMessage().split(" ")[:3] for r in caplog.records] == [
        ["l", "10.0.0.1:50000", '"GET']
    ]
