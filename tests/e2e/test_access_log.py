"""``--access-log``: Azure-shaped JSON records, one line per request, over real TLS."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.cli.main import build_parser
from emulator.runtime.access_log import AccessLogWriter
from tests.helpers.pki import PkiBundle
from tests.helpers.verification import request_with, start_verified

AZURE_PROPERTIES = {
    "instanceId",
    "clientIP",
    "clientPort",
    "httpMethod",
    "originalRequestUriWithArgs",
    "requestUri",
    "requestQuery",
    "userAgent",
    "httpStatus",
    "httpVersion",
    "timeTaken",
    "transactionId",
    "sslEnabled",
    "sslCipher",
    "sslProtocol",
    "sslClientVerify",
    "sslClientCertificateFingerprint",
    "sslClientCertificateIssuerName",
    "serverRouted",
    "serverStatus",
    "originalHost",
    "host",
    "receivedBytes",
    "sentBytes",
    "clientResponseTime",
    "serverResponseLatency",
    "upstreamSourcePort",
    "error_info",
    "contentType",
}


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_access_log_file_gets_one_azure_shaped_record_per_request(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.jsonl"
    writer = AccessLogWriter(log_path, resource_id="/subscriptions/x/appGw")
    stack = await start_verified(nursery, pki, tmp_path, access_log_sink=writer)

    await request_with(stack, pki, pki.client)
    await request_with(stack, pki, pki.expired)
    await request_with(stack, pki, pki.client, listener=PASSTHROUGH_LISTENER)
    writer.close()

    ok, rejected, passthrough = read_lines(log_path)
    assert ok["operationName"] == "ApplicationGatewayAccess"
    assert ok["category"] == "ApplicationGatewayAccessLog"
    assert ok["resourceId"] == "/SUBSCRIPTIONS/X/APPGW"
    assert ok["listenerName"] == "strict-listener"
    assert ok["backendSettingName"]
    assert ok["timeStamp"].endswith("Z")
    assert set(ok["properties"]) >= AZURE_PROPERTIES
    props = ok["properties"]
    # sslEnabled is the backend leg's TLS (monitoring reference): the stub speaks plain HTTP.
    assert (props["httpStatus"], props["sslClientVerify"], props["sslEnabled"]) == (
        200,
        "SUCCESS",
        "off",
    )
    assert props["sslProtocol"].startswith("TLSv1.")
    # Types as the reference's sample writes them.
    assert isinstance(props["receivedBytes"], int)
    assert props["receivedBytes"] > 0
    assert isinstance(props["sentBytes"], int)
    assert props["sentBytes"] > 0
    assert isinstance(props["clientResponseTime"], (int, float))
    assert isinstance(props["serverStatus"], str)
    assert props["serverStatus"] == "200"
    assert re.fullmatch(r"[0-9]+\.[0-9]{3}", props["serverResponseLatency"])
    assert props["upstreamSourcePort"].isdigit()
    assert props["error_info"] == "ERRORINFO_NO_ERROR"
    assert props["contentType"].startswith("application/json")
    assert props["httpVersion"] == "HTTP/1.1"
    issuer = "CN=appgw-emulator Test Client CA,O=appgw-emulator"
    assert props["sslClientCertificateIssuerName"] == issuer
    assert len(props["sslClientCertificateFingerprint"]) == 40
    assert props["clientCertFailureExplained"] == ""
    bad = rejected["properties"]
    assert (bad["httpStatus"], bad["sslClientVerify"]) == (400, "FAILED:certificate has expired")
    assert bad["serverRouted"] == ""
    assert "expired on" in bad["clientCertFailureExplained"]
    assert bad["error_info"] == "ERRORINFO_HTTPS_NO_CERT"
    assert (bad["contentType"], bad["serverResponseLatency"], bad["upstreamSourcePort"]) == (
        "text/html",
        "",
        "",
    )
    assert passthrough["properties"]["sslClientVerify"] == "PASSTHROUGH"


async def test_access_log_dash_writes_to_stderr(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = AccessLogWriter("-", resource_id="rid")
    stack = await start_verified(nursery, pki, tmp_path, access_log_sink=writer)

    await request_with(stack, pki, None)

    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["properties"]["sslClientVerify"] == "NONE"
    assert "no client certificate was sent" in record["properties"]["clientCertFailureExplained"]


@pytest.mark.parametrize("command", ["run", "up"])
def test_run_and_up_take_access_log_and_explain(command: str) -> None:
    extra = ["--template-file", "t.json"] if command == "run" else []
    args = build_parser().parse_args([command, *extra, "--access-log", "-", "--explain"])
    assert (args.access_log, args.explain) == ("-", True)
    assert build_parser().parse_args([command, *extra]).explain is False
