"""The rewrite stage's per-rule-set caches change its cost, never its answers.

A rule set is compiled once (templates split, names lower-cased, variables resolved, patterns
compiled) and client header names are remembered; these tests hold the cached paths to what the
plain definitions say: :func:`server_variable`, one rule set never answering for another, and
the corner cases the uncached engine had (URL actions, invalid patterns, ``http_status``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import pytest

from emulator.core.request.rewrite import (
    Headers,
    RequestFacts,
    rewrite_request,
    rewrite_response_headers,
    server_variable,
)
from emulator.core.request.server_variables import VARIABLES, variable_getter
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.model import (
    HeaderAction,
    RewriteCondition,
    RewriteRule,
    RewriteRuleSet,
    UrlAction,
)
from emulator.pki import CA

CLIENT_HEADERS = (
    ("Host", "gw.contoso.com:444"),
    ("User-Agent", "bench/1.0"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip"),
    ("Cookie", "session=abc; Theme=dark"),
    ("X-Forwarded-For", "198.51.100.1"),
)
#: Every computed variable, plus the families resolved outside the table.
NAMES = (
    *(v.name for v in VARIABLES),
    "CLIENT_IP",
    "Client_Certificate_Subject",
    "cookie_theme",
    "COOKIE_session",
    "from_extra",
    "no_such_variable",
)


@pytest.fixture(scope="module")
def client_cert() -> ClientCertInfo:
    issued = CA("Fast Root").intermediate("Fast Issuing CA").issue_client("fast-client")
    return ClientCertInfo.from_certificates(issued.cert, issued.chain)


def facts(
    certificate: ClientCertInfo | None = None,
    headers: Sequence[tuple[str, str]] = CLIENT_HEADERS,
    **changes: object,
) -> RequestFacts:
    base = RequestFacts(
        client_ip="203.0.113.7",
        client_port=51234,
        server_port=444,
        scheme="https",
        method="GET",
        target="/a/../api%20x?id=7",
        http_version="1.1",
        headers=tuple(headers),
        trace_id="0123456789abcdef0123456789abcdef",
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        certificate=certificate,
        verification="PASSTHROUGH" if certificate is not None else "NONE",
        extra={"from_extra": "extra value"},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test-only overrides


def one_rule(
    *request: tuple[str, str],
    response: Sequence[tuple[str, str]] = (),
    conditions: Sequence[RewriteCondition] = (),
    url: UrlAction | None = None,
) -> RewriteRuleSet:
    rule = RewriteRule(
        "rule",
        100,
        tuple(conditions),
        tuple(HeaderAction(n, v) for n, v in request),
        tuple(HeaderAction(n, v) for n, v in response),
        url,
    )
    return RewriteRuleSet("set", (rule,))


def values(headers: Headers, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


@pytest.mark.parametrize("with_cert", [True, False], ids=["cert", "no-cert"])
@pytest.mark.parametrize("name", NAMES)
def test_compiled_template_expands_each_variable_as_server_variable_does(
    name: str, with_cert: bool, client_cert: ClientCertInfo
) -> None:
    request = facts(client_cert if with_cert else None)
    rule_set = one_rule(("X-Value", "[{var_" + name + "}]"))
    for _ in range(2):  # the first call compiles the set, the second uses the cache
        headers = rewrite_request(request, rule_set).headers
        assert values(headers, "X-Value") == [f"[{server_variable(name, request)}]"]


@pytest.mark.parametrize("name", NAMES)
def test_variable_getter_computes_what_server_variable_returns(
    name: str, client_cert: ClientCertInfo
) -> None:
    for request in (facts(), facts(client_cert), facts(status=503)):
        assert variable_getter(name)(request) == server_variable(name, request)


def test_certificate_variables_are_the_client_cert_info_fields(
    client_cert: ClientCertInfo,
) -> None:
    rule_set = one_rule(
        *((f"X-{name}", "{var_" + name + "}") for name in client_cert.server_variables())
    )
    headers = rewrite_request(facts(client_cert), rule_set).headers
    for name, value in client_cert.server_variables().items():
        assert values(headers, f"X-{name}") == [value]


def test_two_rule_sets_with_the_same_shape_keep_their_own_values() -> None:
    first = one_rule(("X-Which", "first"))
    second = one_rule(("X-Which", "second"))
    request = facts()
    for _ in range(2):
        assert values(rewrite_request(request, first).headers, "X-Which") == ["first"]
        assert values(rewrite_request(request, second).headers, "X-Which") == ["second"]


def test_many_short_lived_rule_sets_each_apply_their_own_actions() -> None:
    # More sets than the cache holds, each dropped after use: ids get reused and the cache is
    # emptied on the way, and every set must still apply its own value.
    request = facts()
    for number in range(3000):
        headers = rewrite_request(request, one_rule(("X-Number", str(number)))).headers
        assert values(headers, "X-Number") == [str(number)]


def test_response_http_status_is_the_status_argument_and_facts_stay_unchanged() -> None:
    rule_set = one_rule(response=[("X-Status", "{var_http_status}")])
    request = facts()
    result = rewrite_request(request, rule_set)
    out = rewrite_response_headers(result.facts, rule_set, result.headers, [], status=404)
    assert values(out, "X-Status") == ["404"]
    assert result.facts.status is None
    without = rewrite_response_headers(result.facts, rule_set, result.headers, [])
    assert values(without, "X-Status") == ["000"]
    given = dataclasses.replace(result.facts, status=201)
    assert values(rewrite_response_headers(given, rule_set, [], []), "X-Status") == ["201"]


def test_response_condition_on_http_status_uses_the_status_argument() -> None:
    rule_set = one_rule(
        response=[("Cache-Control", "no-store")],
        conditions=[RewriteCondition("var_http_status", "^5", True, False)],
    )
    result = rewrite_request(facts(), rule_set)
    ok = rewrite_response_headers(result.facts, rule_set, result.headers, [], status=200)
    failed = rewrite_response_headers(result.facts, rule_set, result.headers, [], status=502)
    assert values(ok, "Cache-Control") == []
    assert values(failed, "Cache-Control") == ["no-store"]


def test_unconditional_request_only_set_passes_response_headers_minus_hop_by_hop() -> None:
    rule_set = one_rule(("X-Client-Cert", "{var_client_certificate}"))
    response = [("Content-Type", "text/plain"), ("Connection", "keep-alive"), ("Server", "stub")]
    out = rewrite_response_headers(facts(), rule_set, [], response, status=200)
    assert out == [("Content-Type", "text/plain"), ("Server", "stub")]


def test_header_names_are_filtered_the_same_on_every_request() -> None:
    sent = [
        ("X-Ok", "1"),
        ("x-ok", "2"),
        ("Bad Name", "3"),
        ("Keep-Alive", "4"),
        ("X-" + "a" * 200, "long"),
        ("X-Bad" + "_" * 100, "long and bad"),
    ]
    expected = [("X-Ok", "1"), ("x-ok", "2"), ("X-" + "a" * 200, "long")]
    for _ in range(3):
        headers = rewrite_request(facts(headers=sent), None).headers
        assert [(k, v) for k, v in headers if not k.lower().startswith("x-forwarded")][
            : len(expected)
        ] == expected


def test_an_invalid_pattern_fails_only_when_its_condition_is_evaluated() -> None:
    never_reached = one_rule(
        ("X-Set", "yes"),
        conditions=[
            RewriteCondition("var_uri_path", "^/nothing-matches$", False, False),
            RewriteCondition("var_uri_path", "(", False, False),
        ],
    )
    assert values(rewrite_request(facts(), never_reached).headers, "X-Set") == []
    reached = one_rule(
        ("X-Set", "yes"), conditions=[RewriteCondition("var_uri_path", "(", False, False)]
    )
    with pytest.raises(re.error):
        rewrite_request(facts(), reached)


def test_url_action_changing_neither_part_still_sends_the_normalised_path() -> None:
    rule_set = one_rule(url=UrlAction(modified_path=None, modified_query_string=None))
    result = rewrite_request(facts(), rule_set)
    assert result.url_rewritten
    assert result.target == "/api%20x?id=7"


def test_forgeable_is_reported_only_when_the_client_sent_the_header() -> None:
    rule_set = one_rule(
        ("X-Client-Cert", "{var_client_certificate}"),
        conditions=[RewriteCondition("var_uri_path", "^/admin", True, False)],
    )
    assert rewrite_request(facts(), rule_set).forgeable == ()
    forged = facts(headers=(*CLIENT_HEADERS, ("x-client-cert", "forged")))
    assert rewrite_request(forged, rule_set).forgeable == ("X-Client-Cert",)
    stripped = rewrite_request(forged, rule_set, strip_client_cert_headers=True)
    assert stripped.forgeable == ()
    assert values(stripped.headers, "X-Client-Cert") == []
