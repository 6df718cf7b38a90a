"""What the backend receives: default forwarding headers, server variables and rewrite rules.

Pure functions only: a ``RequestFacts`` goes in, header lists come out (appgw-behaviour.md §6, §7).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from emulator.arm.demo_template import demo_template
from emulator.arm.template import GatewayResource, load_template, select_gateway
from emulator.cli.main import build_parser
from emulator.core.request.rewrite import (
    JA4_HEADER,
    Headers,
    RequestFacts,
    certificate_header_holes,
    certificate_headers,
    header_value,
    normalize_uri_path,
    rewrite_request,
    rewrite_request_headers,
    rewrite_response_headers,
    server_variable,
)
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.errors import TemplateError
from emulator.model import (
    GatewayConfig,
    HeaderAction,
    RewriteCondition,
    RewriteRule,
    RewriteRuleSet,
    UrlAction,
    build_gateway_config,
)
from emulator.pki import CA, ca_bundle_pem
from emulator.reports.summary import describe, forgeable_certificate_headers, render_text

CLIENT_IP = "203.0.113.7"
CLIENT_PORT = 51234
TRACE_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_HEADERS = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Original-Host",
    "X-Original-URL",
    "X-AppGW-Trace-Id",
)


def facts(
    headers: Sequence[tuple[str, str]] = (("Host", "gw.contoso.com:444"),),
    *,
    target: str = "/api/items?id=7",
    **changes: object,
) -> RequestFacts:
    base = RequestFacts(
        client_ip=CLIENT_IP,
        client_port=CLIENT_PORT,
        server_port=444,
        scheme="https",
        method="GET",
        target=target,
        http_version="1.1",
        headers=tuple(headers),
        trace_id=TRACE_ID,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test-only overrides


def rule(
    *request: tuple[str, str],
    conditions: Sequence[RewriteCondition] = (),
    response: Sequence[tuple[str, str]] = (),
    name: str = "rule",
    sequence: int = 100,
) -> RewriteRule:
    return RewriteRule(
        name,
        sequence,
        tuple(conditions),
        tuple(HeaderAction(n, v) for n, v in request),
        tuple(HeaderAction(n, v) for n, v in response),
    )


def rules(*items: RewriteRule) -> RewriteRuleSet:
    return RewriteRuleSet("set", tuple(items))


def cond(
    variable: str, pattern: str, *, ignore_case: bool = True, negate: bool = False
) -> RewriteCondition:
    return RewriteCondition(variable, pattern, ignore_case, negate)


def values(headers: Headers, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def one(headers: Headers, name: str) -> str:
    found = values(headers, name)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def client_cert() -> ClientCertInfo:
    issuing = CA("Rewrite Root").intermediate("Rewrite Issuing CA")
    issued = issuing.issue_client("rewrite-client")
    return ClientCertInfo.from_certificates(issued.cert, issued.chain)


# --- default forwarding headers ------------------------------------------------------------------


def test_six_default_headers_are_added() -> None:
    out = rewrite_request_headers(facts(), None)

    assert out == [
        ("Host", "gw.contoso.com:444"),
        ("X-Forwarded-For", f"{CLIENT_IP}:{CLIENT_PORT}"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "444"),
        ("X-Original-Host", "gw.contoso.com:444"),
        ("X-Original-URL", "/api/items?id=7"),
        ("X-AppGW-Trace-Id", TRACE_ID),
    ]


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        ([], f"{CLIENT_IP}:{CLIENT_PORT}"),
        (["198.51.100.1"], f"198.51.100.1, {CLIENT_IP}:{CLIENT_PORT}"),
        (["198.51.100.1, 10.0.0.1"], f"198.51.100.1, 10.0.0.1, {CLIENT_IP}:{CLIENT_PORT}"),
        (["198.51.100.1", "10.0.0.1"], f"198.51.100.1, 10.0.0.1, {CLIENT_IP}:{CLIENT_PORT}"),
    ],
)
def test_x_forwarded_for_appends_ip_and_port_to_the_incoming_value(
    incoming: list[str], expected: str
) -> None:
    headers = [("Host", "gw"), *(("X-Forwarded-For", v) for v in incoming)]

    out = rewrite_request_headers(facts(headers), None)

    assert one(out, "X-Forwarded-For") == expected


def test_x_forwarded_port_is_the_template_port_not_the_local_one() -> None:
    out = rewrite_request_headers(facts(server_port=444, extra={"local_port": "18443"}), None)

    assert one(out, "X-Forwarded-Port") == "444"


def test_client_sent_forwarding_headers_are_replaced_not_duplicated() -> None:
    forged = [
        ("Host", "gw"),
        ("X-Forwarded-Proto", "http"),
        ("x-forwarded-port", "1"),
        ("X-Original-URL", "/admin"),
        ("X-AppGW-Trace-Id", "forged"),
    ]

    out = rewrite_request_headers(facts(forged, target="/x"), None)

    assert one(out, "X-Forwarded-Proto") == "https"
    assert one(out, "X-Forwarded-Port") == "444"
    assert one(out, "X-Original-URL") == "/x"
    assert one(out, "X-AppGW-Trace-Id") == TRACE_ID


def test_original_url_keeps_the_raw_target() -> None:
    out = rewrite_request_headers(facts(target="/a/../b%20c//d?q=%41"), None)

    assert one(out, "X-Original-URL") == "/a/../b%20c//d?q=%41"


def test_no_host_means_no_x_original_host() -> None:
    out = rewrite_request_headers(facts([]), None)

    assert values(out, "X-Original-Host") == []


def test_backend_host_override_replaces_host() -> None:
    out = rewrite_request_headers(facts(), None, host="backend.internal")

    assert one(out, "Host") == "backend.internal"
    assert one(out, "X-Original-Host") == "gw.contoso.com:444"


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "keep-alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authorization",
        "X_Client_Cert",
        "X.Dotted",
        "X Spaced",
        "X-Caf\u00e9",
        "X-Evil\n",
        "X:Colon",
        "",
    ],
)
def test_hop_by_hop_and_non_token_header_names_are_dropped(name: str) -> None:
    out = rewrite_request_headers(facts([("Host", "gw"), (name, "v"), ("X-Kept-1", "k")]), None)

    assert (name, "v") not in out
    assert ("X-Kept-1", "k") in out


def test_other_client_headers_pass_unchanged_in_order() -> None:
    sent = [("Host", "gw"), ("Accept", "*/*"), ("X-Client-Cert", "forged"), ("accept", "text/html")]

    out = rewrite_request_headers(facts(sent), None)

    assert out[:4] == sent


# --- header actions -------------------------------------------------------------------------------


def test_rule_sets_a_new_header() -> None:
    out = rewrite_request_headers(facts(), rules(rule(("X-Added", "yes"))))

    assert one(out, "X-Added") == "yes"


def test_rule_overwrites_every_header_of_that_name_case_insensitively() -> None:
    sent = [("Host", "gw"), ("x-tenant", "a"), ("X-TENANT", "b")]

    out = rewrite_request_headers(facts(sent), rules(rule(("X-Tenant", "c"))))

    assert values(out, "x-tenant") == ["c"]
    assert ("X-Tenant", "c") in out


def test_empty_value_deletes_the_header() -> None:
    sent = [("Host", "gw"), ("X-Remove-Me", "1")]

    out = rewrite_request_headers(facts(sent), rules(rule(("X-Remove-Me", ""))))

    assert values(out, "X-Remove-Me") == []


def test_default_headers_can_be_rewritten() -> None:
    out = rewrite_request_headers(
        facts(), rules(rule(("X-Forwarded-For", "{var_add_x_forwarded_for_proxy}")))
    )

    assert one(out, "X-Forwarded-For") == CLIENT_IP


def test_rules_run_in_order_and_see_earlier_rules_headers() -> None:
    first = rule(("X-Step", "one"), name="first", sequence=1)
    second = rule(("X-Step", "{http_req_X-Step}-two"), name="second", sequence=2)

    out = rewrite_request_headers(facts(), rules(first, second))

    assert one(out, "X-Step") == "one-two"


def test_without_certificate_a_forged_certificate_header_is_deleted() -> None:
    sent = [("Host", "gw"), ("X-Client-Cert", "-----BEGIN%20CERTIFICATE-----forged")]
    forward = rules(rule(("X-Client-Cert", "{var_client_certificate}")))

    out = rewrite_request_headers(facts(sent), forward)

    assert values(out, "X-Client-Cert") == []


def test_with_certificate_a_forged_certificate_header_is_replaced(
    client_cert: ClientCertInfo,
) -> None:
    sent = [("Host", "gw"), ("X-Client-Cert", "forged")]
    forward = rules(rule(("X-Client-Cert", "{var_client_certificate}")))

    out = rewrite_request_headers(facts(sent, certificate=client_cert), forward)

    assert values(out, "X-Client-Cert") == [client_cert.escaped_pem]
    assert client_cert.escaped_pem.startswith("-----BEGIN%20CERTIFICATE-----%0A")


def test_certificate_variables_come_from_client_cert_info(client_cert: ClientCertInfo) -> None:
    forward = rules(
        rule(
            ("X-Subject", "{var_client_certificate_subject}"),
            ("X-Issuer", "{var_client_certificate_issuer}"),
            ("X-Serial", "{var_client_certificate_serial}"),
            ("X-Fingerprint", "{var_client_certificate_fingerprint}"),
            ("X-Start", "{var_client_certificate_start_date}"),
            ("X-End", "{var_client_certificate_end_date}"),
            ("X-Verify", "{var_client_certificate_verification}"),
        )
    )

    out = rewrite_request_headers(
        facts(certificate=client_cert, verification="PASSTHROUGH"), forward
    )

    assert one(out, "X-Subject") == "CN=rewrite-client"
    assert one(out, "X-Issuer") == "CN=Rewrite Issuing CA,O=appgw-emulator"
    assert one(out, "X-Serial") == client_cert.serial
    assert one(out, "X-Fingerprint") == client_cert.fingerprint_sha1
    assert one(out, "X-Start") == client_cert.start_date
    assert one(out, "X-End") == client_cert.end_date
    assert one(out, "X-Verify") == "PASSTHROUGH"


def test_verification_none_is_forwarded_as_text() -> None:
    out = rewrite_request_headers(
        facts(), rules(rule(("X-Verify", "{var_client_certificate_verification}")))
    )

    assert one(out, "X-Verify") == "NONE"


def test_text_around_placeholders_is_kept() -> None:
    out = rewrite_request_headers(
        facts(), rules(rule(("X-Mixed", "ip={var_client_ip};port={var_client_port};{unknown}")))
    )

    assert one(out, "X-Mixed") == f"ip={CLIENT_IP};port={CLIENT_PORT};{{unknown}}"


# --- conditions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "applies"),
    [
        (cond("http_req_User-Agent", "^curl/"), True),
        (cond("http_req_User-Agent", "^CURL/"), True),
        (cond("http_req_User-Agent", "^CURL/", ignore_case=False), False),
        (cond("http_req_user-agent", "^curl/"), True),
        (cond("http_req_User-Agent", "^curl/", negate=True), False),
        (cond("http_req_User-Agent", "^wget/", negate=True), True),
        (cond("http_req_X-Absent", "."), False),
        (cond("http_req_X-Absent", ".", negate=True), True),
        (cond("var_client_ip", r"^203\.0\.113\."), True),
        (cond("var_uri_path", "^/api/"), True),
        (cond("var_request_scheme", "^http$"), False),
    ],
)
def test_condition_matching(condition: RewriteCondition, applies: bool) -> None:
    headers = [("Host", "gw"), ("User-Agent", "curl/8.5.0")]

    out = rewrite_request_headers(
        facts(headers), rules(rule(("X-Hit", "1"), conditions=[condition]))
    )

    assert bool(values(out, "X-Hit")) is applies


@pytest.mark.parametrize(
    ("patterns", "applies"),
    [(("^curl", "^/api"), True), (("^curl", "^/other"), False), (("^wget", "^/api"), False)],
)
def test_all_conditions_must_match(patterns: tuple[str, str], applies: bool) -> None:
    conditions = [cond("http_req_User-Agent", patterns[0]), cond("var_uri_path", patterns[1])]
    headers = [("Host", "gw"), ("User-Agent", "curl/8.5.0")]

    out = rewrite_request_headers(
        facts(headers), rules(rule(("X-Hit", "1"), conditions=conditions))
    )

    assert bool(values(out, "X-Hit")) is applies


def test_uri_path_capture_groups() -> None:
    condition = cond("var_uri_path", r"^/api/(v\d+)/(.*)$")
    action = ("X-Route", "version={var_uri_path_1} rest={var_uri_path_2}")

    out = rewrite_request_headers(
        facts(target="/api/v2/orders/9?x=1"), rules(rule(action, conditions=[condition]))
    )

    assert one(out, "X-Route") == "version=v2 rest=orders/9"


def test_request_header_capture_groups_keep_the_conditions_case() -> None:
    condition = cond("http_req_User-Agent", r"(curl)/([\d.]+)")
    action = ("X-Tool", "{http_req_User-Agent_1} {http_req_User-Agent_2}")

    out = rewrite_request_headers(
        facts([("Host", "gw"), ("User-Agent", "curl/8.5.0")]),
        rules(rule(action, conditions=[condition])),
    )

    assert one(out, "X-Tool") == "curl 8.5.0"


def test_unmatched_optional_group_is_empty() -> None:
    condition = cond("var_uri_path", r"^/api(/v\d+)?/items$")

    out = rewrite_request_headers(
        facts(target="/api/items"),
        rules(rule(("X-Version", "[{var_uri_path_1}]"), conditions=[condition])),
    )

    assert one(out, "X-Version") == "[]"


def test_captures_do_not_leak_into_the_next_rule() -> None:
    first = rule(
        ("X-First", "{var_uri_path_1}"),
        conditions=[cond("var_uri_path", r"^/(\w+)")],
        name="first",
        sequence=1,
    )
    second = rule(("X-Second", "[{var_uri_path_1}]"), name="second", sequence=2)

    out = rewrite_request_headers(facts(target="/api/items"), rules(first, second))

    assert one(out, "X-First") == "api"
    assert one(out, "X-Second") == "[]"


# --- server variables -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("client_ip", CLIENT_IP),
        ("client_port", str(CLIENT_PORT)),
        ("server_port", "444"),
        ("host", "gw.contoso.com"),
        ("http_method", "GET"),
        ("http_version", "HTTP/1.1"),
        ("request_scheme", "https"),
        ("request_uri", "/api/items?id=7"),
        ("query_string", "id=7"),
        ("request_query", "id=7"),
        ("uri_path", "/api/items"),
        ("ssl_enabled", "On"),
        ("ssl_connection_protocol", "TLSv1.3"),
        ("ciphers_used", "TLS_AES_256_GCM_SHA384"),
        ("client_certificate", ""),
        ("client_certificate_subject", ""),
        ("client_certificate_verification", "NONE"),
        ("add_x_forwarded_for_proxy", CLIENT_IP),
        ("CLIENT_IP", CLIENT_IP),
        ("no_such_variable", ""),
    ],
)
def test_server_variables(name: str, value: str) -> None:
    assert server_variable(name, facts()) == value


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("gw.contoso.com", "gw.contoso.com"),
        ("gw:8443", "gw"),
        ("[2001:db8::1]:444", "[2001:db8::1]"),
    ],
)
def test_host_variable_has_no_port(host: str, expected: str) -> None:
    assert server_variable("host", facts([("Host", host)])) == expected


def test_ssl_enabled_is_empty_on_http() -> None:
    assert server_variable("ssl_enabled", facts(scheme="http")) == ""


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        ([], CLIENT_IP),
        (["198.51.100.1"], f"198.51.100.1, {CLIENT_IP}"),
        (["198.51.100.1", "10.0.0.1"], f"198.51.100.1, 10.0.0.1, {CLIENT_IP}"),
    ],
)
def test_add_x_forwarded_for_proxy_has_no_port(incoming: list[str], expected: str) -> None:
    headers = [("Host", "gw"), *(("X-Forwarded-For", v) for v in incoming)]

    assert server_variable("add_x_forwarded_for_proxy", facts(headers)) == expected


@pytest.mark.parametrize(
    ("cookie", "name", "value"),
    [
        ("session=abc", "session", "abc"),
        ("a=1; session=abc; b=2", "session", "abc"),
        ("a=1;session=abc", "session", "abc"),
        ("a=1; b=2", "session", ""),
        ("Session=abc", "session", "abc"),
        ("token=x=y", "token", "x=y"),
    ],
)
def test_cookie_variable_reads_one_request_cookie(cookie: str, name: str, value: str) -> None:
    request = facts([("Host", "gw"), ("Cookie", cookie)])

    assert server_variable(f"cookie_{name}", request) == value


def test_cookie_variable_reads_every_cookie_header() -> None:
    request = facts([("Host", "gw"), ("Cookie", "a=1"), ("Cookie", "session=abc; b=2")])

    assert server_variable("cookie_a", request) == "1"
    assert server_variable("cookie_session", request) == "abc"


def test_cookie_variable_in_a_header_action() -> None:
    request = facts([("Host", "gw"), ("Cookie", "a=1; session=abc")])

    out = rewrite_request_headers(request, rules(rule(("X-Session", "{var_cookie_session}"))))

    assert one(out, "X-Session") == "abc"


def test_uri_path_shortcut_agrees_with_the_whole_normalisation() -> None:
    # A path with nothing to decode, resolve or merge is returned as it is; every combination
    # of these segments must come out as the full algorithm says.
    from itertools import product

    from emulator.core.request.server_variables import _resolve_uri_path

    parts = ["", "a", ".", "..", "%2E", "b.", ".c", "x y", "*"]
    for count in (1, 2, 3):
        for segments in product(parts, repeat=count):
            for prefix in ("/", ""):
                raw = prefix + "/".join(segments)
                assert normalize_uri_path(raw) == _resolve_uri_path(raw), raw


@pytest.mark.parametrize(
    ("raw", "uri_path"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b///c", "/a/b/c"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../../etc", "/etc"),
        ("/a/b/", "/a/b/"),
        # Decoded to bytes (one character per byte), as nginx: C3 A9, not U+00E9.
        ("/caf%C3%A9/x%20y", "/caf\xc3\xa9/x y"),
        ("/%FF", "/\xff"),
        ("/a/%2E%2E/b", "/b"),
        ("/a%2Fb", "/a/b"),
    ],
)
def test_uri_path_is_normalised_like_nginx(raw: str, uri_path: str) -> None:
    assert normalize_uri_path(raw) == uri_path
    request = facts(target=raw + "?q=1")
    assert server_variable("uri_path", request) == uri_path
    assert server_variable("request_uri", request) == raw + "?q=1"


# --- response rewrites ----------------------------------------------------------------------------


def test_response_rewrite_reads_response_headers() -> None:
    request = facts()
    backend_headers = [("Server", "kestrel"), ("Content-Type", "text/plain")]
    rule_set = rules(
        rule(
            response=[("X-Backend", "{http_resp_Server}/{var_client_ip}"), ("Server", "")],
            conditions=[cond("http_resp_Content-Type", "^text/")],
        )
    )

    out = rewrite_response_headers(
        request, rule_set, rewrite_request_headers(request, rule_set), backend_headers
    )

    assert out == [("Content-Type", "text/plain"), ("X-Backend", f"kestrel/{CLIENT_IP}")]


def test_response_rewrite_condition_on_response_header_can_fail() -> None:
    rule_set = rules(
        rule(response=[("X-Hit", "1")], conditions=[cond("http_resp_Content-Type", "json")])
    )

    out = rewrite_response_headers(facts(), rule_set, [], [("Content-Type", "text/html")])

    assert values(out, "X-Hit") == []


def test_response_rewrite_can_read_request_headers_and_captures() -> None:
    request = facts([("Host", "gw"), ("X-Request-Id", "req-42")])
    rule_set = rules(
        rule(
            response=[("X-Echo", "{http_req_X-Request-Id_1}")],
            conditions=[cond("http_req_X-Request-Id", r"req-(\d+)")],
        )
    )

    out = rewrite_response_headers(
        request, rule_set, rewrite_request_headers(request, rule_set), []
    )

    assert out == [("X-Echo", "42")]


def test_response_hop_by_hop_headers_are_dropped() -> None:
    out = rewrite_response_headers(
        facts(), None, [], [("Connection", "keep-alive"), ("Keep-Alive", "5"), ("ETag", '"1"')]
    )

    assert out == [("ETag", '"1"')]


def test_request_actions_do_not_touch_responses() -> None:
    rule_set = rules(rule(("X-Request-Only", "1")))

    out = rewrite_response_headers(facts(), rule_set, [], [("ETag", '"1"')])

    assert out == [("ETag", '"1"')]


# --- the JA4 header -------------------------------------------------------------------------------

JA4 = "t13d1516h2_8daaf6152771_d8a2da3f94cd"


def test_ja4_header_follows_the_trace_id_when_the_policy_sends_it() -> None:
    out = rewrite_request_headers(facts(ja4=JA4), None)

    assert out[-2:] == [("X-AppGW-Trace-Id", TRACE_ID), ("X-Azure-JA4-Fingerprint", JA4)]


def test_client_sent_ja4_header_is_replaced_when_the_gateway_sends_one() -> None:
    sent = [("Host", "gw"), ("X-Azure-JA4-Fingerprint", "forged")]

    assert values(rewrite_request_headers(facts(sent, ja4=JA4), None), JA4_HEADER) == [JA4]


def test_client_sent_ja4_header_is_removed_when_the_gateway_has_no_fingerprint() -> None:
    # No 2022 policy, or a ClientHello the gateway could not fingerprint: the backend must
    # still be able to trust that the header, when present, is the gateway's.
    sent = [("Host", "gw"), ("x-azure-ja4-fingerprint", "forged")]

    assert values(rewrite_request_headers(facts(sent), None), JA4_HEADER) == []


# --- URL rewrites ---------------------------------------------------------------------------------


def url_rule(
    path: str | None = None,
    query: str | None = None,
    *,
    conditions: Sequence[RewriteCondition] = (),
    request: Sequence[tuple[str, str]] = (),
    name: str = "url",
    sequence: int = 100,
) -> RewriteRule:
    return dataclasses.replace(
        rule(*request, conditions=conditions, name=name, sequence=sequence),
        url=UrlAction(path, query),
    )


def test_url_rewrite_with_capture_groups_from_uri_path() -> None:
    # The documentation's scenario: /fashion/shirts → /buy.aspx?category=fashion&product=shirts.
    rewrite = url_rule(
        "buy.aspx",
        "category={var_uri_path_1}&product={var_uri_path_2}",
        conditions=[cond("var_uri_path", "/(.+)/(.+)")],
    )

    result = rewrite_request(facts(target="/fashion/shirts"), rules(rewrite))

    assert result.target == "/buy.aspx?category=fashion&product=shirts"
    assert result.url_rewritten
    assert one(result.headers, "X-Original-URL") == "/fashion/shirts"


def test_path_only_rewrite_keeps_the_query_and_query_only_rewrite_keeps_the_path() -> None:
    request = facts(target="/old?keep=1")

    assert rewrite_request(request, rules(url_rule("/new"))).target == "/new?keep=1"
    assert rewrite_request(request, rules(url_rule(query="q=2"))).target == "/old?q=2"


def test_empty_query_result_removes_the_query() -> None:
    rewrite = url_rule(query="{var_cookie_absent}")

    assert rewrite_request(facts(target="/p?x=1"), rules(rewrite)).target == "/p"


def test_without_url_action_the_raw_target_is_sent_unchanged() -> None:
    result = rewrite_request(facts(target="/a/../b%2F?q=%41"), rules(rule(("X-A", "1"))))

    assert result.target == "/a/../b%2F?q=%41"
    assert not result.url_rewritten


def test_rewritten_path_is_escaped_for_the_request_line() -> None:
    # uri_path is decoded ("c d", "é"); the backend's request line cannot carry it raw.
    rewrite = url_rule("/x/{var_uri_path_1}", conditions=[cond("var_uri_path", "^/(.*)$")])

    result = rewrite_request(facts(target="/c%20d/caf%C3%A9%3F"), rules(rewrite))

    assert result.target == "/x/c%20d/caf%C3%A9%3F"


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("plain text, tabs\tand obs-text \xc3\xbc", "plain text, tabs\tand obs-text \xc3\xbc"),
        ("a\r\nX-Injected: 1", "a%0D%0AX-Injected: 1"),
        ("\x00\x1b[31m\x7f", "%00%1B[31m%7F"),
        # Not a byte string (no request value is one): the UTF-8 bytes of the text.
        ("\u20ac", "\xe2\x82\xac"),
    ],
)
def test_header_value_escapes_what_cannot_be_in_a_header(value: str, sent: str) -> None:
    assert header_value(value) == sent


def test_header_value_quick_ascii_test_agrees_with_the_regex_for_every_character() -> None:
    # ASCII values skip the regex; whatever the character, the answer must be the regex's.
    from emulator.core.request.rewrite import _NOT_IN_HEADER_VALUE, _header_escape

    for code in range(0x180):
        value = f"-----BEGIN%20CERTIFICATE-----{chr(code)}MIIB"
        assert header_value(value) == _NOT_IN_HEADER_VALUE.sub(_header_escape, value), code


def test_template_text_meets_request_bytes_as_utf8() -> None:
    # The pattern and the literal value are Unicode in the template; the path is the bytes the
    # client percent-encoded. Both sides compare and go out as UTF-8 bytes, as in nginx.
    rewrite = rule(
        ("X-Word", "gr\u00fc\u00df {var_uri_path_1}"),
        conditions=[cond("var_uri_path", "^/(\u00fc)$")],
    )

    result = rewrite_request(facts(target="/%C3%BC"), rules(rewrite))

    assert values(result.headers, "X-Word") == ["gr\xc3\xbc\xc3\x9f \xc3\xbc"]


def test_a_variable_with_cr_lf_stays_one_header_line() -> None:
    rewrite = rule(("X-Path", "{var_uri_path}"), ("X-User", "{var_client_user}"))
    credentials = base64.b64encode(b"a\r\nX-Injected: 1:pw").decode()

    result = rewrite_request(
        facts((("Host", "h"), ("Authorization", f"Basic {credentials}")), target="/x%0Ay"),
        rules(rewrite),
    )

    assert values(result.headers, "X-Path") == ["/x%0Ay"]
    assert values(result.headers, "X-User") == ["a%0D%0AX-Injected"]


def test_condition_false_means_no_url_rewrite() -> None:
    rewrite = url_rule("/new", conditions=[cond("var_query_string", "category=shoes")])

    assert rewrite_request(facts(target="/l?category=bags"), rules(rewrite)).target == (
        "/l?category=bags"
    )


def test_later_rules_see_the_rewritten_path_but_request_uri_stays_original() -> None:
    first = url_rule("/v2/items", name="first", sequence=1)
    second = rule(
        ("X-Path", "{var_uri_path}"), ("X-Uri", "{var_request_uri}"), name="second", sequence=2
    )

    result = rewrite_request(facts(target="/v1/items?x=1"), rules(first, second))

    assert one(result.headers, "X-Path") == "/v2/items"
    assert one(result.headers, "X-Uri") == "/v1/items?x=1"
    assert result.facts.uri_path == "/v2/items"


def test_header_actions_of_a_rule_see_the_path_before_its_own_url_action() -> None:
    both = url_rule("/new", request=[("X-Before", "{var_uri_path}")])

    result = rewrite_request(facts(target="/old"), rules(both))

    assert one(result.headers, "X-Before") == "/old"
    assert result.target == "/new"


# --- host, response status ------------------------------------------------------------------------


def test_a_host_action_that_comes_out_empty_keeps_host() -> None:
    out = rewrite_request_headers(facts(), rules(rule(("Host", "{var_client_certificate}"))))

    assert one(out, "Host") == "gw.contoso.com:444"


def test_host_can_be_set() -> None:
    out = rewrite_request_headers(facts(), rules(rule(("Host", "internal.{var_host}"))))

    assert one(out, "Host") == "internal.gw.contoso.com"


def test_response_rules_read_the_status() -> None:
    rule_set = rules(
        rule(response=[("Cache-Control", "no-store")], conditions=[cond("var_http_status", "^5")])
    )

    assert rewrite_response_headers(facts(), rule_set, [], [], status=503) == [
        ("Cache-Control", "no-store")
    ]
    assert rewrite_response_headers(facts(), rule_set, [], [], status=200) == []


def test_response_rewrite_removes_server_and_adds_hsts() -> None:
    rule_set = rules(
        rule(
            response=[
                ("Server", ""),
                ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
            ]
        )
    )

    out = rewrite_response_headers(facts(), rule_set, [], [("Server", "nginx/1.25"), ("A", "1")])

    assert out == [("A", "1"), ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")]


# --- anti-spoofing --------------------------------------------------------------------------------

FORWARD_CERT = ("X-Client-Cert", "{var_client_certificate}")
ONLY_WHEN_VERIFIED = cond("var_client_certificate_verification", "^SUCCESS$")


def test_certificate_headers_lists_headers_filled_from_certificate_variables() -> None:
    rule_set = rules(
        rule(
            FORWARD_CERT,
            ("X-Subject", "cn={var_CLIENT_CERTIFICATE_SUBJECT}"),
            ("X-Ip", "{var_client_ip}"),
        )
    )

    assert certificate_headers(rule_set) == {
        "x-client-cert": "X-Client-Cert",
        "x-subject": "X-Subject",
    }


def test_conditional_certificate_rule_is_a_hole() -> None:
    rule_set = rules(rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED], name="verified-only"))

    (hole,) = certificate_header_holes(rule_set)

    assert (hole.header, hole.rule) == ("X-Client-Cert", "verified-only")
    assert "verified-only" in hole.message
    assert "unconditional" in hole.fix


@pytest.mark.parametrize("value", ["", "{var_client_certificate}", "none"])
def test_an_unconditional_action_on_the_header_closes_the_hole(value: str) -> None:
    rule_set = rules(
        rule(("X-Client-Cert", value), name="clear", sequence=1),
        rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED], name="verified-only", sequence=2),
    )

    assert certificate_header_holes(rule_set) == ()


def test_an_unconditional_rule_copying_the_clients_value_does_not_close_the_hole() -> None:
    rule_set = rules(
        rule(("X-Client-Cert", "{http_req_X-Client-Cert}"), name="copy", sequence=1),
        rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED], name="verified-only", sequence=2),
    )

    assert [h.rule for h in certificate_header_holes(rule_set)] == ["verified-only"]


def test_unconditional_certificate_rule_has_no_hole() -> None:
    assert certificate_header_holes(rules(rule(FORWARD_CERT))) == ()
    assert certificate_header_holes(None) == ()


def test_forged_header_passes_when_the_conditional_rule_does_not_fire() -> None:
    # As on Azure: the condition is false, nothing touches the header, the client's value goes.
    sent = [("Host", "gw"), ("X-Client-Cert", "forged")]
    rule_set = rules(rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED]))

    result = rewrite_request(facts(sent, verification="NONE"), rule_set)

    assert values(result.headers, "X-Client-Cert") == ["forged"]
    assert result.forgeable == ("X-Client-Cert",)


def test_strip_option_removes_the_forged_header_before_the_rules() -> None:
    sent = [("Host", "gw"), ("x-client-cert", "forged"), ("X-Other", "kept")]
    rule_set = rules(rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED]))

    result = rewrite_request(facts(sent), rule_set, strip_client_cert_headers=True)

    assert values(result.headers, "X-Client-Cert") == []
    assert one(result.headers, "X-Other") == "kept"
    assert result.forgeable == ()


def test_strip_option_keeps_the_certificate_when_the_rule_fires(
    client_cert: ClientCertInfo,
) -> None:
    sent = [("Host", "gw"), ("X-Client-Cert", "forged")]
    rule_set = rules(rule(FORWARD_CERT, conditions=[ONLY_WHEN_VERIFIED]))
    request = facts(sent, certificate=client_cert, verification="SUCCESS")

    result = rewrite_request(request, rule_set, strip_client_cert_headers=True)

    assert values(result.headers, "X-Client-Cert") == [client_cert.escaped_pem]


def test_unconditional_rule_never_reports_a_forgeable_header() -> None:
    sent = [("Host", "gw"), ("X-Client-Cert", "forged")]

    result = rewrite_request(facts(sent), rules(rule(FORWARD_CERT)))

    assert values(result.headers, "X-Client-Cert") == []
    assert result.forgeable == ()


def test_fired_lists_the_rules_whose_conditions_matched() -> None:
    rule_set = rules(
        rule(("X-A", "1"), name="always", sequence=1),
        rule(("X-B", "1"), conditions=[cond("var_uri_path", "^/nope")], name="never", sequence=2),
    )

    assert rewrite_request(facts(), rule_set).fired == ("always",)


def test_negated_case_sensitive_condition() -> None:
    condition = cond("http_req_User-Agent", "^Mozilla", ignore_case=False, negate=True)
    rule_set = rules(rule(("X-Bot", "yes"), conditions=[condition]))

    def bot(agent: str) -> list[str]:
        return values(
            rewrite_request_headers(facts([("Host", "gw"), ("User-Agent", agent)]), rule_set),
            "X-Bot",
        )

    assert bot("curl/8") == ["yes"]
    assert bot("mozilla/5.0") == ["yes"]  # case-sensitive: lowercase does not match ^Mozilla
    assert bot("Mozilla/5.0") == []


# --- validation in the model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> GatewayResource:
    root = CA("Rewrite Model Root")
    issuing = root.intermediate("Rewrite Model Issuing")
    server = CA("Rewrite Model Server Root").issue_server("gateway.test")
    path = tmp_path_factory.mktemp("rewrite-model") / "demo.json"
    path.write_text(
        json.dumps(
            demo_template(
                strict_port=8443, passthrough_port=9443, backend_host="10.0.0.5", backend_port=80
            )
        )
    )
    loaded = load_template(
        path,
        [
            "certData=" + base64.b64encode(server.pfx("pw")).decode(),
            "certPassword=pw",
            "trustedClientCaData=" + base64.b64encode(ca_bundle_pem(root, issuing)).decode(),
        ],
    )
    return select_gateway(loaded, None)


def build_with(base: GatewayResource, rewrite_rules: list[dict[str, Any]]) -> GatewayConfig:
    resource = copy.deepcopy(dict(base.resource))
    resource["properties"]["rewriteRuleSets"][0]["properties"]["rewriteRules"] = rewrite_rules
    return build_gateway_config(dataclasses.replace(base, resource=resource), now=datetime.now(UTC))


def with_actions(**action_set: Any) -> list[dict[str, Any]]:
    return [{"name": "r", "ruleSequence": 100, "actionSet": action_set}]


def test_url_configuration_is_read(demo_gateway: GatewayResource) -> None:
    config = build_with(
        demo_gateway,
        with_actions(
            urlConfiguration={"modifiedPath": "/new/{var_uri_path_1}", "modifiedQueryString": ""}
        ),
    )

    rule_set = config.rule_for("strict-listener").rewrite_rule_set
    assert rule_set is not None
    assert rule_set.rules[0].url == UrlAction("/new/{var_uri_path_1}", None, False)


def test_unknown_server_variable_is_an_error_listing_the_valid_ones(
    demo_gateway: GatewayResource,
) -> None:
    header = {"headerName": "X-A", "headerValue": "{var_client_certificate_sha256}"}

    with pytest.raises(TemplateError) as info:
        build_with(demo_gateway, with_actions(requestHeaderConfigurations=[header]))

    assert "client_certificate_sha256" in info.value.message
    assert "client_certificate_fingerprint" in info.value.message
    assert info.value.path is not None
    assert info.value.path.endswith("requestHeaderConfigurations[0].headerValue")


@pytest.mark.parametrize(
    "value",
    ["{var_cookie_session}", "{var_uri_path_2}", "{VAR_CLIENT_IP}x", "{http_req_Any-Thing}", "{x}"],
)
def test_valid_placeholders_are_accepted(demo_gateway: GatewayResource, value: str) -> None:
    header = {"headerName": "X-A", "headerValue": value}

    build_with(demo_gateway, with_actions(requestHeaderConfigurations=[header]))


def test_unknown_variable_in_a_condition_is_an_error(demo_gateway: GatewayResource) -> None:
    rules_json = [
        {
            "name": "r",
            "ruleSequence": 1,
            "conditions": [{"variable": "var_client_cert", "pattern": "."}],
            "actionSet": {},
        }
    ]

    with pytest.raises(TemplateError, match="client_cert'"):
        build_with(demo_gateway, rules_json)


def test_condition_variable_needs_a_known_prefix(demo_gateway: GatewayResource) -> None:
    rules_json = [
        {
            "name": "r",
            "ruleSequence": 1,
            "conditions": [{"variable": "User-Agent", "pattern": "."}],
            "actionSet": {},
        }
    ]

    with pytest.raises(TemplateError, match="http_req_NAME"):
        build_with(demo_gateway, rules_json)


def test_deleting_host_is_an_error(demo_gateway: GatewayResource) -> None:
    header = {"headerName": "host", "headerValue": ""}

    with pytest.raises(TemplateError) as info:
        build_with(demo_gateway, with_actions(requestHeaderConfigurations=[header]))

    assert info.value.error_code == "EmulatorHostHeaderCannotBeDeleted"


def test_request_header_name_with_an_underscore_is_an_error(demo_gateway: GatewayResource) -> None:
    header = {"headerName": "X_Client_Cert", "headerValue": "{var_client_certificate}"}

    with pytest.raises(TemplateError, match="letters, digits and hyphens"):
        build_with(demo_gateway, with_actions(requestHeaderConfigurations=[header]))


def test_reroute_on_a_set_used_by_a_basic_rule_is_an_error(demo_gateway: GatewayResource) -> None:
    with pytest.raises(TemplateError) as info:
        build_with(
            demo_gateway, with_actions(urlConfiguration={"modifiedPath": "/x", "reroute": True})
        )

    assert type(info.value) is TemplateError
    assert "strict-rule" in info.value.message
    assert "reroute" in info.value.message


# --- where a client can forge: the summary and the command line ----------------------------------


def test_summary_names_the_conditional_rule_and_the_fix(demo_gateway: GatewayResource) -> None:
    conditional = [
        {
            "name": "verified-only",
            "ruleSequence": 100,
            "conditions": [
                {"variable": "var_client_certificate_verification", "pattern": "^SUCCESS$"}
            ],
            "actionSet": {
                "requestHeaderConfigurations": [
                    {"headerName": "X-Client-Cert", "headerValue": "{var_client_certificate}"}
                ]
            },
        }
    ]

    text = render_text(describe(build_with(demo_gateway, conditional)))

    assert "WARNING (listener strict-listener): a client can forge 'X-Client-Cert'" in text
    assert "'verified-only'" in text
    assert "fix: add an unconditional rule with a lower ruleSequence" in text


def test_summary_flags_a_listener_without_the_rule_sharing_the_pool(
    demo_gateway: GatewayResource,
) -> None:
    resource = copy.deepcopy(dict(demo_gateway.resource))
    rules_json = resource["properties"]["requestRoutingRules"]
    del rules_json[1]["properties"]["rewriteRuleSet"]  # the Passthrough listener's rule
    config = build_gateway_config(
        dataclasses.replace(demo_gateway, resource=resource), now=datetime.now(UTC)
    )

    holes = forgeable_certificate_headers(config)

    assert {(h["listener"], h["header"]) for h in holes} >= {
        ("passthrough-listener", "X-Client-Cert")
    }
    assert all(h["listener"] == "passthrough-listener" for h in holes)


def test_demo_gateway_has_no_forgeable_header(demo_gateway: GatewayResource) -> None:
    assert (
        forgeable_certificate_headers(build_gateway_config(demo_gateway, now=datetime.now(UTC)))
        == []
    )


@pytest.mark.parametrize("command", [["run", "--template-file", "t.json"], ["up"]])
def test_strip_flag_is_off_by_default_and_can_be_set(command: list[str]) -> None:
    assert build_parser().parse_args(command).strip_client_cert_headers is False
    assert (
        build_parser()
        .parse_args([*command, "--strip-client-cert-headers"])
        .strip_client_cert_headers
    )


def test_capture_reference_must_use_the_conditions_case_as_azure_documents() -> None:
    condition = cond("http_req_user-agent", r"(curl)/([\d.]+)")
    action = ("X-Tool", "[{http_req_user-agent_2}][{http_req_User-Agent_2}]")

    out = rewrite_request_headers(
        facts([("Host", "gw"), ("User-Agent", "curl/8.5.0")]),
        rules(rule(action, conditions=[condition])),
    )

    assert one(out, "X-Tool") == "[8.5.0][]"
