"""The request plan and the backend selection: pure decisions, on hand-built model objects.

Each test names what the gateway does; the plans are checked on their kind, page and the
request the backend would get, never on log text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from emulator.arm.ssl_policies import DEFAULT_POLICY_NAME, PREDEFINED_POLICIES
from emulator.core.http.pages import GatewayPage
from emulator.core.request import rewrite
from emulator.core.request.balancing import HealthTable, Rotation, select_backend
from emulator.core.request.plan import (
    After,
    Fail,
    Forward,
    PortPlanner,
    Respond,
    client_auth_decision,
)
from emulator.core.request.rewrite import RequestFacts
from emulator.core.request.routing import affinity_cookie_value
from emulator.errors import BackendConnectError
from emulator.model import (
    BackendAddress,
    BackendPool,
    BackendSettings,
    ClientAuthMode,
    HeaderAction,
    Listener,
    ListenerProtocol,
    PathRule,
    RedirectConfig,
    RedirectType,
    RevocationMode,
    RewriteRule,
    RewriteRuleSet,
    RoutingRule,
    SslProfile,
    UrlAction,
    UrlPathMap,
)

POLICY = PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
POOL = BackendPool("pool", (BackendAddress("10.0.0.1"), BackendAddress("10.0.0.2", 81)))
SETTINGS = BackendSettings("settings", 80, ListenerProtocol.HTTP, 20, None, False)


def listener(name: str, *hosts: str, mode: ClientAuthMode | None = None) -> Listener:
    profile = (
        SslProfile(f"{name}-profile", mode, False, RevocationMode.NONE, (), None) if mode else None
    )
    return Listener(
        name, ListenerProtocol.HTTPS, 443, "port", hosts, None, profile, POLICY, False, "$"
    )


def rule(name: str, lst: Listener, **extra: Any) -> RoutingRule:
    return RoutingRule(
        name, None, lst, extra.pop("pool", POOL), extra.pop("settings", SETTINGS), None, **extra
    )


def facts(
    method: str = "GET", target: str = "/", host: str = "a.test", **changes: Any
) -> RequestFacts:
    base = RequestFacts(
        client_ip="203.0.113.7",
        client_port=5000,
        server_port=443,
        scheme="https",
        method=method,
        target=target,
        http_version="1.1",
        headers=(("Host", host),) if host else (),
        trace_id="0" * 32,
    )
    return dataclasses.replace(base, **changes)


ALLOW = client_auth_decision(None)
OPEN = listener("open")
PLANNER = PortPlanner.build((rule("r", OPEN),))


def plan(planner: PortPlanner = PLANNER, request: RequestFacts | None = None, **kw: Any) -> Any:
    request = request if request is not None else facts()
    host = kw.pop("host", "a.test")
    return planner.plan(
        request,
        host=host,
        rule=kw.pop("rule", planner.rule_for_host(host)),
        tls_rule=kw.pop("tls_rule", None),
        decision=kw.pop("decision", ALLOW),
        upgrade_h2c=kw.pop("upgrade_h2c", False),
    )


def test_connect_is_refused_and_closes_the_connection() -> None:
    result = plan(request=facts(method="CONNECT", target="evil.test:443"))
    assert isinstance(result, Respond)
    assert (result.page, result.after) == (GatewayPage.BAD_REQUEST, After.CLOSE)


def test_a_host_no_listener_takes_is_404_and_keeps_the_connection() -> None:
    planner = PortPlanner.build((rule("r", listener("site", "only.test")),))
    result = plan(planner, host="other.test")
    assert isinstance(result, Respond)
    assert (result.page, result.after, result.rule) == (
        GatewayPage.NOT_FOUND,
        After.KEEP_ALIVE,
        None,
    )


def test_sni_passthrough_host_strict_is_421_so_strict_cannot_be_skipped() -> None:
    strict = listener("strict", "strict.test", mode=ClientAuthMode.STRICT)
    passthrough = listener("pass", "pass.test", mode=ClientAuthMode.PASSTHROUGH)
    rules = (rule("s", strict), rule("p", passthrough))
    planner = PortPlanner.build(rules)
    result = plan(planner, host="strict.test", tls_rule=rules[1])
    assert isinstance(result, Respond)
    assert result.page is GatewayPage.MISDIRECTED_REQUEST


def test_host_without_client_auth_keeps_the_handshakes_failed_verification() -> None:
    strict = listener("strict", "strict.test", mode=ClientAuthMode.STRICT)
    rules = (rule("s", strict), rule("o", listener("open", "open.test")))
    planner = PortPlanner.build(rules)
    failed = dataclasses.replace(
        ALLOW,
        allowed=False,
        ssl_client_verify="FAILED:unknown ca",
        page=GatewayPage.CLIENT_CERT_ERROR,
    )
    result = plan(planner, host="open.test", tls_rule=rules[0], decision=failed)
    assert isinstance(result, Forward)
    assert result.facts.verification == "FAILED:unknown ca"  # never NONE for a rejected cert


def test_a_strict_failure_is_refused_with_its_page() -> None:
    failed = dataclasses.replace(ALLOW, allowed=False, page=GatewayPage.NO_CLIENT_CERT)
    result = plan(decision=failed)
    assert isinstance(result, Respond)
    assert (result.page, result.after) == (GatewayPage.NO_CLIENT_CERT, After.CLOSE)


def test_h2c_upgrade_is_403_after_the_certificate_checks() -> None:
    result = plan(upgrade_h2c=True)
    assert isinstance(result, Respond)
    assert result.page is GatewayPage.FORBIDDEN
    failed = dataclasses.replace(ALLOW, allowed=False, page=GatewayPage.NO_CLIENT_CERT)
    assert plan(upgrade_h2c=True, decision=failed).page is GatewayPage.NO_CLIENT_CERT


def test_a_redirect_is_its_status_page_with_a_location() -> None:
    redirect = RedirectConfig(
        "to-site", RedirectType.PERMANENT, None, "https://site.test", True, True
    )
    planner = PortPlanner.build((rule("r", OPEN, pool=None, settings=None, redirect=redirect),))
    result = plan(planner, request=facts(target="/a?b=1"))
    assert isinstance(result, Respond)
    assert result.page is GatewayPage.MOVED_PERMANENTLY
    assert result.headers == (("Location", "https://site.test/a?b=1"),)


def test_a_forward_names_the_backend_and_the_rewritten_request() -> None:
    result = plan(request=facts(target="/x?y=1"))
    assert isinstance(result, Forward)
    assert (result.backend.host, result.backend.port) == ("10.0.0.1", 80)
    assert result.target == "/x?y=1"
    assert ("Host", "a.test") in result.headers
    assert result.host == "a.test"


def test_an_http10_request_without_host_names_the_backend_as_host() -> None:
    planner = PortPlanner.build((rule("r", OPEN),))
    result = plan(planner, request=facts(host="", http_version="1.0"), host="")
    assert isinstance(result, Forward)
    assert result.headers[0] == ("Host", "10.0.0.1")  # port 80 is left out
    result = plan(planner, request=facts(host="", http_version="1.0"), host="")
    assert isinstance(result, Forward)
    assert result.headers[0] == ("Host", "10.0.0.2:81")


def _reroute_planner(*, loop: bool) -> PortPlanner:
    to = "/b" if not loop else "/a"
    url = UrlAction(modified_path=to, modified_query_string=None, reroute=True)
    rewrite_rule = RewriteRule("move", 1, (), (HeaderAction("X-Moved", "yes"),), (), url)
    rule_set = RewriteRuleSet("set", (rewrite_rule,))
    other = BackendPool("other", (BackendAddress("10.9.9.9"),))
    path_map = UrlPathMap(
        "map",
        (
            PathRule("a", ("/a",), POOL, SETTINGS, rule_set, None),
            PathRule("b", ("/b",), other, SETTINGS, None, None),
        ),
        POOL,
        SETTINGS,
        None,
        None,
    )
    return PortPlanner.build((rule("r", OPEN, url_path_map=path_map),))


def test_a_reroute_sends_the_rewritten_path_through_the_path_map_rewriting_once_per_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = rewrite.rewrite_request

    def counting(request: RequestFacts, *args: Any, **kwargs: Any) -> Any:
        calls.append(request.uri_path)
        return original(request, *args, **kwargs)

    monkeypatch.setattr("emulator.core.request.plan.rewrite_request", counting)
    result = plan(_reroute_planner(loop=False), request=facts(target="/a"))
    assert isinstance(result, Forward)
    assert result.route.pool is not None
    assert result.route.pool.name == "other"
    assert result.target == "/b"
    assert calls == ["/a", "/b"]  # one rewrite per round, none twice


def test_a_reroute_loop_ends_with_500() -> None:
    result = plan(_reroute_planner(loop=True), request=facts(target="/a"))
    assert isinstance(result, Respond)
    assert (result.page, result.after) == (GatewayPage.INTERNAL_ERROR, After.KEEP_ALIVE)


def test_a_pool_with_no_healthy_backend_fails_with_502() -> None:
    health = HealthTable()
    for address in POOL.addresses:
        health.record(("pool", address.host, address.port or 80), ok=False, threshold=1)
    planner = PortPlanner.build((rule("r", OPEN),), health=health)
    result = plan(planner)
    assert isinstance(result, Fail)
    assert isinstance(result.error, BackendConnectError)
    assert result.error.status == 502


# -- backend selection --------------------------------------------------------------------------


def test_round_robin_takes_turns_per_pool() -> None:
    rotation = Rotation()
    picks = [select_backend(POOL, SETTINGS, (), health=None, rotation=rotation) for _ in range(3)]
    assert [(p.host, p.port) for p in picks] == [
        ("10.0.0.1", 80),
        ("10.0.0.2", 81),
        ("10.0.0.1", 80),
    ]


def test_unhealthy_backends_are_skipped() -> None:
    health = HealthTable()
    health.record(("pool", "10.0.0.1", 80), ok=False, threshold=1)
    rotation = Rotation()
    picks = {
        select_backend(POOL, SETTINGS, (), health=health, rotation=rotation).host for _ in range(4)
    }
    assert picks == {"10.0.0.2"}


def test_an_empty_pool_is_a_502() -> None:
    with pytest.raises(BackendConnectError, match="has no addresses"):
        select_backend(BackendPool("empty", ()), SETTINGS, (), health=None, rotation=Rotation())


def test_affinity_keeps_a_client_on_its_backend_and_places_new_ones_with_cookies() -> None:
    sticky = dataclasses.replace(SETTINGS, cookie_affinity=True)
    first = select_backend(POOL, sticky, (), health=None, rotation=Rotation())
    assert [name for name, _ in first.set_cookies] == ["Set-Cookie", "Set-Cookie"]
    value = affinity_cookie_value("pool", "10.0.0.2", 81)
    cookie = (("Cookie", f"ApplicationGatewayAffinity={value}"),)
    again = select_backend(POOL, sticky, cookie, health=None, rotation=Rotation())
    assert (again.host, again.port, again.set_cookies) == ("10.0.0.2", 81, ())


def test_a_forged_affinity_cookie_is_placed_like_a_new_client() -> None:
    sticky = dataclasses.replace(SETTINGS, cookie_affinity=True)
    cookie = (("Cookie", "ApplicationGatewayAffinity=10.0.0.99"),)
    choice = select_backend(POOL, sticky, cookie, health=None, rotation=Rotation())
    assert choice.host in {"10.0.0.1", "10.0.0.2"}
    assert choice.set_cookies  # a new placement, with its own cookie


def test_an_affinity_cookie_naming_an_unhealthy_backend_is_not_followed() -> None:
    sticky = dataclasses.replace(SETTINGS, cookie_affinity=True)
    health = HealthTable()
    health.record(("pool", "10.0.0.2", 81), ok=False, threshold=1)
    value = affinity_cookie_value("pool", "10.0.0.2", 81)
    cookie = (("Cookie", f"ApplicationGatewayAffinity={value}"),)
    choice = select_backend(POOL, sticky, cookie, health=health, rotation=Rotation())
    assert choice.host == "10.0.0.1"


def test_a_client_auth_decision_without_a_time_is_refused_for_a_verifying_listener() -> None:
    strict = listener("strict", mode=ClientAuthMode.STRICT)
    with pytest.raises(ValueError, match="listener 'strict' authenticates clients"):
        client_auth_decision(strict, presented=())
    assert client_auth_decision(OPEN).allowed  # no client authentication: no time needed
