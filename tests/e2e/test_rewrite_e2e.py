"""The rewrite stage end to end (issue #5): real TLS clients, the real gateway, the stub backend.

One template, the ``up`` demo's Strict and Passthrough listeners, with a rewrite rule set that
exercises every kind of rule:

=================  ===========================================================================
rule (sequence)    what it does
=================  ===========================================================================
all-cert (10)      unconditional: the 8 ``client_certificate*`` variables into ``X-Cert*``
verified (20)      only when ``client_certificate_verification`` is ``SUCCESS``: ``X-Verified``
                   and ``X-Verified-Cert`` (both deliberate anti-spoofing holes)
not-browser (30)   negated, case-sensitive ``^Mozilla`` on User-Agent: ``X-Not-Browser: 1``
shop-url (40)      ``uri_path`` ``^/shop/(\\w+)/(\\w+)$``: captures into ``X-Category`` and a URL
                   rewrite to ``/buy.aspx?category=…&product=…``
response (50)      response: delete ``Server``, add ``Strict-Transport-Security``
=================  ===========================================================================

Every expected certificate value is computed here from the certificate with ``cryptography``,
not with the emulator's own formatting code.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import backend_stub
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.arm.template import load_template, select_gateway
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.pki import IssuedCert
from emulator.reports.summary import forgeable_certificate_headers
from emulator.runtime.gateway import Gateway
from tests.helpers.http import Reply, client_context, forwarded, https_request
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.stack import Stack

CERT_HEADERS = {
    "X-Cert": "client_certificate",
    "X-Cert-Verification": "client_certificate_verification",
    "X-Cert-Subject": "client_certificate_subject",
    "X-Cert-Issuer": "client_certificate_issuer",
    "X-Cert-Serial": "client_certificate_serial",
    "X-Cert-Fingerprint": "client_certificate_fingerprint",
    "X-Cert-Start-Date": "client_certificate_start_date",
    "X-Cert-End-Date": "client_certificate_end_date",
}
HSTS = "max-age=31536000; includeSubDomains"
JA4_SHAPE = re.compile(r"t1[23][di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")


def _headers(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"headerName": k, "headerValue": v} for k, v in pairs.items()]


REWRITE_RULES: list[dict[str, Any]] = [
    {
        "name": "all-cert",
        "ruleSequence": 10,
        "actionSet": {
            "requestHeaderConfigurations": _headers(
                {name: "{var_" + var + "}" for name, var in CERT_HEADERS.items()}
            )
        },
    },
    {
        "name": "verified",
        "ruleSequence": 20,
        "conditions": [{"variable": "var_client_certificate_verification", "pattern": "^SUCCESS$"}],
        "actionSet": {
            "requestHeaderConfigurations": _headers(
                {
                    "X-Verified": "yes:{var_client_certificate_serial}",
                    "X-Verified-Cert": "{var_client_certificate_fingerprint}",
                }
            )
        },
    },
    {
        "name": "not-browser",
        "ruleSequence": 30,
        "conditions": [
            {
                "variable": "http_req_User-Agent",
                "pattern": "^Mozilla",
                "ignoreCase": False,
                "negate": True,
            }
        ],
        "actionSet": {"requestHeaderConfigurations": _headers({"X-Not-Browser": "1"})},
    },
    {
        "name": "shop-url",
        "ruleSequence": 40,
        "conditions": [{"variable": "var_uri_path", "pattern": r"^/shop/(\w+)/(\w+)$"}],
        "actionSet": {
            "requestHeaderConfigurations": _headers({"X-Category": "{var_uri_path_1}"}),
            "urlConfiguration": {
                "modifiedPath": "/buy.aspx",
                "modifiedQueryString": "category={var_uri_path_1}&product={var_uri_path_2}",
                "reroute": False,
            },
        },
    },
    {
        "name": "lengths",
        "ruleSequence": 45,
        "conditions": [{"variable": "var_uri_path", "pattern": "^/upload$"}],
        "actionSet": {
            "requestHeaderConfigurations": _headers({"X-Received": "{var_received_bytes}"})
        },
    },
    {
        "name": "host",
        "ruleSequence": 46,
        "conditions": [{"variable": "var_uri_path", "pattern": "^/renamed$"}],
        "actionSet": {"requestHeaderConfigurations": _headers({"Host": "renamed.example"})},
    },
    {
        "name": "response",
        "ruleSequence": 50,
        "actionSet": {
            "responseHeaderConfigurations": _headers(
                {"Server": "", "Strict-Transport-Security": HSTS}
            )
        },
    },
]


def rewrite_template() -> dict[str, Any]:
    template = demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    template = copy.deepcopy(template)
    properties = template["resources"][0]["properties"]
    properties["rewriteRuleSets"][0]["properties"]["rewriteRules"] = REWRITE_RULES
    return template


async def start(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, *, strip: bool = False
) -> Stack:
    """The stub backend and a gateway for :func:`rewrite_template`."""
    recorded: list[backend_stub.RecordedRequest] = []
    _host, backend_port = await nursery.start(
        functools.partial(
            backend_stub.serve,
            backend_stub.StubConfig(),
            host="127.0.0.1",
            port=0,
            recorder=recorded.append,
        )
    )
    path = tmp_path / "rewrite.json"
    path.write_text(json.dumps(rewrite_template()))
    config = build_gateway_config(
        select_gateway(load_template(path, template_parameters(pki)), None), now=datetime.now(UTC)
    )
    config = with_backend_overrides(
        config, {"stub-backend": (BackendAddress("127.0.0.1", backend_port),)}
    )
    gateway = Gateway(config, listen={8443: 0, 9443: 0}, strip_client_cert_headers=strip)
    await nursery.start(gateway.serve)
    return Stack(gateway, backend_port, recorded)


@pytest.fixture
async def stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    return await start(nursery, pki, tmp_path)


# -- expected values, computed independently -------------------------------------------------------


def openssl_date(moment: datetime) -> str:
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {moment.year} GMT"


def expected_certificate_headers(cert: x509.Certificate, verification: str) -> dict[str, str]:
    """What Azure sends for this certificate (appgw-behaviour.md §6).

    ``rfc4514_string()`` equals OpenSSL's RFC 2253 printing for names of plain ASCII
    single-valued attributes, which is what the test PKI issues; the names where the two differ
    are pinned against ``openssl`` in the unit tests.
    """
    serial = format(cert.serial_number, "X")
    return {
        "X-Cert": quote(cert.public_bytes(Encoding.PEM).decode(), safe="-._~"),
        "X-Cert-Verification": verification,
        "X-Cert-Subject": cert.subject.rfc4514_string(),
        "X-Cert-Issuer": cert.issuer.rfc4514_string(),
        "X-Cert-Serial": serial if len(serial) % 2 == 0 else "0" + serial,
        "X-Cert-Fingerprint": hashlib.sha1(
            cert.public_bytes(Encoding.DER), usedforsecurity=False
        ).hexdigest(),
        "X-Cert-Start-Date": openssl_date(cert.not_valid_before_utc),
        "X-Cert-End-Date": openssl_date(cert.not_valid_after_utc),
    }


def received(reply: Reply) -> dict[str, list[str]]:
    """The certificate headers the backend received, by name."""
    return {name: forwarded(reply, name) for name in CERT_HEADERS}


async def get(
    stack: Stack,
    pki: PkiBundle,
    listener: str,
    cert: IssuedCert | None = None,
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> Reply:
    reply = await https_request(
        stack.port(listener), client_context(pki, cert), path, headers=headers
    )
    assert reply.status == 200, reply.body
    return reply


# -- certificate variables -------------------------------------------------------------------------


async def test_passthrough_forwards_all_eight_certificate_variables_in_azure_formats(
    stack: Stack, pki: PkiBundle
) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER, pki.client)

    expected = expected_certificate_headers(pki.client.cert, "PASSTHROUGH")
    assert received(reply) == {name: [value] for name, value in expected.items()}


async def test_passthrough_without_certificate_sends_no_certificate_headers(
    stack: Stack, pki: PkiBundle
) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER)

    headers = received(reply)
    assert headers.pop("X-Cert-Verification") == ["NONE"]
    assert all(values == [] for values in headers.values())


@pytest.mark.parametrize("which", ["expired", "unrelated"])
async def test_passthrough_forwards_an_invalid_certificate_as_passthrough(
    stack: Stack, pki: PkiBundle, which: str
) -> None:
    cert: IssuedCert = getattr(pki, which)

    reply = await get(stack, pki, PASSTHROUGH_LISTENER, cert)

    expected = expected_certificate_headers(cert.cert, "PASSTHROUGH")
    assert received(reply) == {name: [value] for name, value in expected.items()}
    assert forwarded(reply, "X-Verified") == []


async def test_strict_with_valid_certificate_is_success_and_fires_the_conditional_rule(
    stack: Stack, pki: PkiBundle
) -> None:
    reply = await get(stack, pki, STRICT_LISTENER, pki.client)

    expected = expected_certificate_headers(pki.client.cert, "SUCCESS")
    assert received(reply) == {name: [value] for name, value in expected.items()}
    assert forwarded(reply, "X-Verified") == [f"yes:{expected['X-Cert-Serial']}"]


async def test_conditional_rule_does_not_fire_in_passthrough(stack: Stack, pki: PkiBundle) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER, pki.client)

    assert forwarded(reply, "X-Verified") == []


# -- anti-spoofing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_cert", [False, True], ids=["no-cert", "own-cert"])
async def test_backend_never_sees_a_forged_certificate_header(
    stack: Stack, pki: PkiBundle, with_cert: bool
) -> None:
    cert = pki.client if with_cert else None
    forged = {"X-Cert": "forged", "x-cert-subject": "CN=admin", "X-Cert-Verification": "SUCCESS"}

    reply = await get(stack, pki, PASSTHROUGH_LISTENER, cert, headers=forged)

    got = received(reply)
    if with_cert:
        assert got["X-Cert"] == [expected_certificate_headers(pki.client.cert, "")["X-Cert"]]
        assert got["X-Cert-Verification"] == ["PASSTHROUGH"]
    else:
        assert got["X-Cert"] == []
        assert got["X-Cert-Verification"] == ["NONE"]
    assert "forged" not in json.dumps(reply.json()["headers"])
    assert "CN=admin" not in json.dumps(reply.json()["headers"])


async def test_a_conditional_rule_leaves_a_hole_as_on_azure_and_says_so(
    stack: Stack, pki: PkiBundle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="emulator.proxy")

    reply = await get(stack, pki, PASSTHROUGH_LISTENER, headers={"X-Verified-Cert": "forged"})

    assert forwarded(reply, "X-Verified-Cert") == ["forged"]
    warnings = [r.getMessage() for r in caplog.records if "client_cert_header_forwarded" in r.msg]
    assert len(warnings) == 1
    assert "X-Verified-Cert" in warnings[0]
    holes = forgeable_certificate_headers(stack.gateway.config)
    # X-Verified (filled from the serial) is a hole of the same rule.
    assert {(h["header"], h["rewriteRule"]) for h in holes} == {
        ("X-Verified", "verified"),
        ("X-Verified-Cert", "verified"),
    }


async def test_strip_option_closes_the_hole_and_keeps_the_real_value(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stripping = await start(nursery, pki, tmp_path, strip=True)
    forged = {"X-Verified-Cert": "forged", "X-Cert": "forged"}

    passthrough = await get(stripping, pki, PASSTHROUGH_LISTENER, pki.client, headers=forged)
    strict = await get(stripping, pki, STRICT_LISTENER, pki.client, headers=forged)

    assert forwarded(passthrough, "X-Verified-Cert") == []
    fingerprint = expected_certificate_headers(pki.client.cert, "")["X-Cert-Fingerprint"]
    assert forwarded(strict, "X-Verified-Cert") == [fingerprint]


# -- conditions, captures, URL and response rewrites -----------------------------------------------


@pytest.mark.parametrize(
    ("agent", "fires"),
    [("curl/8.5.0", True), ("mozilla/5.0", True), ("Mozilla/5.0 (X11)", False)],
)
async def test_negated_case_sensitive_condition(
    stack: Stack, pki: PkiBundle, agent: str, fires: bool
) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER, headers={"User-Agent": agent})

    assert forwarded(reply, "X-Not-Browser") == (["1"] if fires else [])


async def test_url_rewrite_with_capture_groups(stack: Stack, pki: PkiBundle) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER, path="/shop/fashion/shirts?ref=mail")

    seen = stack.recorded[-1]
    assert seen.target == "/buy.aspx?category=fashion&product=shirts"
    assert forwarded(reply, "X-Category") == ["fashion"]
    assert forwarded(reply, "X-Original-URL") == ["/shop/fashion/shirts?ref=mail"]
    # The access log: requestUri after the rewrite, the client's URL in the original field.
    record = stack.gateway.access_log[-1]
    assert record.requestUri == "/buy.aspx"
    assert record.originalRequestUriWithArgs == "/shop/fashion/shirts?ref=mail"


@pytest.mark.parametrize("size", [0, 1000])
async def test_received_bytes_counts_the_buffered_body(
    stack: Stack, pki: PkiBundle, size: int
) -> None:
    # The server-variable table: request line, headers and body (request buffering is on).
    reply = await https_request(
        stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        "/upload",
        method="POST",
        body=b"b" * size,
    )
    (value,) = forwarded(reply, "X-Received")
    record = stack.gateway.access_log[-1]
    # The variable and the access log's receivedBytes count the same bytes.
    assert int(value) == record.receivedBytes
    assert record.receivedBytes > size


async def test_the_access_log_host_is_the_rewritten_one(stack: Stack, pki: PkiBundle) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER, path="/renamed")
    assert forwarded(reply, "Host") == ["renamed.example"]
    record = stack.gateway.access_log[-1]
    assert record.host == "renamed.example"
    assert record.originalHost.startswith("localhost")


async def test_unmatched_url_is_forwarded_as_sent(stack: Stack, pki: PkiBundle) -> None:
    await get(stack, pki, PASSTHROUGH_LISTENER, path="/shop/only-one?x=%41")

    assert stack.recorded[-1].target == "/shop/only-one?x=%41"


async def test_response_rewrite_removes_server_and_adds_hsts(stack: Stack, pki: PkiBundle) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER)

    assert reply.header("Server") is None
    assert reply.header("Strict-Transport-Security") == HSTS


# -- default headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_ja4_fingerprint_header_with_the_2022_policy(
    stack: Stack, pki: PkiBundle, version: ssl.TLSVersion
) -> None:
    ctx = client_context(pki, tls_version=version)
    reply = await https_request(
        stack.port(PASSTHROUGH_LISTENER), ctx, headers={"X-Azure-JA4-Fingerprint": "forged"}
    )

    (ja4,) = forwarded(reply, "X-Azure-JA4-Fingerprint")
    assert JA4_SHAPE.fullmatch(ja4), ja4
    # The client offers TLS 1.3 unless capped at 1.2; SNI "localhost" is sent.
    assert ja4[:4] == ("t13d" if version is ssl.TLSVersion.TLSv1_3 else "t12d")


async def test_trace_id_header_equals_the_access_logs_transaction_id(
    stack: Stack, pki: PkiBundle
) -> None:
    reply = await get(stack, pki, PASSTHROUGH_LISTENER)

    (trace_id,) = forwarded(reply, "X-AppGW-Trace-Id")
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert stack.gateway.access_log[-1].transactionId == trace_id
