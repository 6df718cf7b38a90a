"""Routing decisions (emulator.core.request.routing) and the model's checks of the routing
properties.

The pure functions are tested on hand-built model objects; the model checks go through the
same loader as ``validate`` with the routing example template (examples/routing/gateway.json)
and one change each.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator.arm.ssl_policies import DEFAULT_POLICY_NAME, PREDEFINED_POLICIES
from emulator.core.http.pages import page_for_status, render_page
from emulator.core.request.routing import (
    LISTENER_ORDER_RULES,
    affinity_cookie_value,
    backend_target,
    cookie_value,
    host_matches,
    misdirected,
    normalize_host,
    ordered_rules,
    path_matches,
    redirect_location,
    route,
    select_rule,
    select_tls_rule,
)
from emulator.core.request.server_variables import normalize_uri_path
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError, UnsupportedFeature
from emulator.loading import load_config
from emulator.model import (
    BackendPool,
    BackendSettings,
    ClientAuthMode,
    GatewayConfig,
    Listener,
    ListenerProtocol,
    PathRule,
    RedirectConfig,
    RedirectType,
    RevocationMode,
    RoutingRule,
    SslProfile,
    UrlPathMap,
)
from emulator.pki import CA

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing" / "gateway.json"
POLICY = PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
POOL = BackendPool("pool", ())
SETTINGS = BackendSettings("settings", 8080, ListenerProtocol.HTTP, 20, None, False)


def listener(
    name: str,
    *hosts: str,
    profile: SslProfile | None = None,
    require_sni: bool = False,
    protocol: ListenerProtocol = ListenerProtocol.HTTPS,
    port: int = 443,
) -> Listener:
    return Listener(
        name, protocol, port, f"port-{port}", hosts, None, profile, POLICY, require_sni, "$"
    )


def rule(name: str, lst: Listener, priority: int | None, **extra: Any) -> RoutingRule:
    return RoutingRule(name, priority, lst, POOL, SETTINGS, None, **extra)


def profile(name: str, mode: ClientAuthMode) -> SslProfile:
    return SslProfile(name, mode, False, RevocationMode.NONE, (), None)


# -- host names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("www.contoso.com", "www.contoso.com", True),
        ("WWW.Contoso.com", "www.contoso.com", True),
        ("www.contoso.com", "contoso.com", False),
        ("*.contoso.com", "shop.contoso.com", True),
        ("*.contoso.com", "a.b.contoso.com", True),  # '*' spans dots (multi-site overview)
        ("*.contoso.com", "contoso.com", False),
        ("shop?.contoso.com", "shop1.contoso.com", True),
        ("shop?.contoso.com", "shop12.contoso.com", False),
        ("*", "anything.at.all", True),
    ],
)
def test_host_name_wildcards_match_as_app_gateway_documents(
    pattern: str, host: str, matches: bool
) -> None:
    assert host_matches(pattern, host) is matches


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Contoso.COM:8443", "contoso.com"),
        ("contoso.com.", "contoso.com"),
        ("[::1]:443", "[::1]"),
        ("", ""),
        (None, ""),
    ],
)
def test_host_header_is_normalised_without_port_and_case(raw: str | None, host: str) -> None:
    assert normalize_host(raw) == host


# -- listener order (LISTENER_ORDER_RULES, row by row) ----------------------------------------


def test_order_table_names_a_source_for_every_rule() -> None:
    assert all(len(row) == 3 and all(row) for row in LISTENER_ORDER_RULES)


def test_with_priorities_a_basic_listener_first_in_priority_takes_every_host() -> None:
    basic = rule("basic", listener("basic"), 10)
    site = rule("site", listener("site", "shop.contoso.com"), 20)

    rules = ordered_rules([site, basic])

    assert [r.name for r in rules] == ["basic", "site"]
    assert select_rule(rules, "shop.contoso.com") is basic


def test_with_priorities_the_more_specific_site_wins_only_when_it_comes_first() -> None:
    wildcard = rule("wild", listener("wild", "*.contoso.com"), 20)
    exact = rule("exact", listener("exact", "shop.contoso.com"), 10)

    rules = ordered_rules([wildcard, exact])

    assert select_rule(rules, "shop.contoso.com") is exact
    assert select_rule(rules, "blog.contoso.com") is wildcard


def test_without_priorities_multi_site_listeners_come_before_basic_in_template_order() -> None:
    basic = rule("basic", listener("basic"), None)
    first = rule("first", listener("first", "a.test"), None)
    second = rule("second", listener("second", "*.test"), None)

    rules = ordered_rules([basic, first, second])

    assert [r.name for r in rules] == ["first", "second", "basic"]
    assert select_rule(rules, "a.test") is first
    assert select_rule(rules, "other.example") is basic


def test_no_listener_for_the_host_means_404() -> None:
    rules = ordered_rules([rule("site", listener("site", "a.test"), 1)])

    assert select_rule(rules, "b.test") is None
    assert select_rule(rules, "") is None  # HTTP/1.0 without Host


def test_sni_picks_the_listener_and_no_sni_the_basic_one() -> None:
    site = rule("site", listener("site", "a.test"), 1)
    basic = rule("basic", listener("basic"), 2)
    rules = ordered_rules([site, basic])

    assert select_tls_rule(rules, "A.TEST") is site
    assert select_tls_rule(rules, None) is basic


def test_without_sni_a_listener_that_requires_sni_is_never_the_default() -> None:
    needs = rule("needs", listener("needs", "a.test", require_sni=True), 1)
    lax = rule("lax", listener("lax", "b.test"), 2)

    assert select_tls_rule((needs, lax), None) is lax
    assert select_tls_rule((needs,), None) is None


def test_a_host_naming_another_client_auth_listener_is_misdirected() -> None:
    strict = listener("strict", "s.test", profile=profile("s", ClientAuthMode.STRICT))
    passthrough = listener("pt", "p.test", profile=profile("p", ClientAuthMode.PASSTHROUGH))
    open_ = listener("open", "o.test")

    assert misdirected(passthrough, strict) is True
    assert misdirected(open_, strict) is True
    assert misdirected(strict, passthrough) is True
    assert misdirected(strict, open_) is False  # no client authentication to skip
    assert misdirected(strict, strict) is False


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/images/*", "/images/", True),
        ("/images/*", "/images/a/b.png", True),
        ("/images/*", "/images", False),
        ("/images/*", "/Images/a", False),
        ("/login", "/login", True),
        ("/login", "/login/", False),
        ("/*", "/anything", True),
    ],
)
def test_path_patterns_are_prefixes_with_star_and_exact_otherwise(
    pattern: str, path: str, matches: bool
) -> None:
    assert path_matches(pattern, path) is matches


def _path_map() -> UrlPathMap:
    a = BackendPool("a", ())
    b = BackendPool("b", ())
    redirect = RedirectConfig("r", RedirectType.FOUND, None, "https://x.test/", False, False)
    return UrlPathMap(
        "map",
        (
            PathRule("wide", ("/api/*",), a, SETTINGS, None, None),
            PathRule("narrow", ("/api/v2/*",), b, SETTINGS, None, None),
            PathRule("old", ("/old",), None, None, None, redirect),
        ),
        POOL,
        SETTINGS,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [("/*", True), ("/a/*", True), ("/a/b.png", True), ("/a*", False), ("/a/*/b", False)],
)
def test_validate_accepts_star_only_as_the_last_segment(
    parameters: dict[str, object], pattern: str, valid: bool
) -> None:
    template = _example()
    _gw(template)["urlPathMaps"][0]["properties"]["pathRules"][0]["properties"]["paths"] = [pattern]

    if valid:
        load_config(template, parameters)
    else:
        with pytest.raises(TemplateError, match="may end in '/\\*'"):
            load_config(template, parameters)


def test_the_first_matching_path_rule_wins_even_when_a_later_one_is_more_specific() -> None:
    r = RoutingRule("r", 1, listener("l"), None, None, None, url_path_map=_path_map())

    chosen = route(r, "/api/v2/x")

    assert chosen.path_rule is not None
    assert chosen.path_rule.name == "wide"
    assert chosen.pool is not None
    assert chosen.pool.name == "a"
    assert chosen.matched_pattern == "/api/*"


def test_a_path_rule_redirect_and_the_map_defaults() -> None:
    r = RoutingRule("r", 1, listener("l"), None, None, None, url_path_map=_path_map())

    assert route(r, "/old").redirect is not None
    default = route(r, "/elsewhere")
    assert default.path_rule is None
    assert default.pool is POOL


@pytest.mark.parametrize(
    ("target", "override", "pattern", "expected"),
    [
        ("/home/?a=1", "/override/", None, "/override/home/?a=1"),
        ("/pathrule/home/", "/override/", "/pathrule/*", "/override/home/"),
        ("/pathrule/home/", "/override/", "/pathrule/home/", "/override/"),
        ("/x", None, None, "/x"),
    ],
)
def test_backend_path_override_replaces_the_matched_part(
    target: str, override: str | None, pattern: str | None, expected: str
) -> None:
    settings = BackendSettings("s", 80, ListenerProtocol.HTTP, 20, None, False, path=override)
    path = normalize_uri_path(target.partition("?")[0])

    assert backend_target(target, path, settings, pattern) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # Issue 15, finding 16: the cut and the rest come from the normalised path.
        ("/%69nventory/x", "/v2/x"),
        ("/inventory//x?q=%2e", "/v2/x?q=%2e"),
        ("/inventory/a/../b", "/v2/b"),
        ("/inventory/a/%2e%2e/b", "/v2/b"),
        ("/inventory/a%2f..%2fb", "/v2/b"),
        # A decoded "%" is escaped again: the backend cannot decode it into a dot segment.
        ("/inventory/%252e%252e/admin", "/v2/%252e%252e/admin"),
        ("/inventory/a%20b#c", "/v2/a%20b%23c"),
        ("/inventory/caf%C3%A9", "/v2/caf%C3%A9"),
    ],
)
def test_backend_path_override_cuts_the_normalised_path_and_stays_under_it(
    target: str, expected: str
) -> None:
    settings = BackendSettings("s", 80, ListenerProtocol.HTTP, 20, None, False, path="/v2/")
    path = normalize_uri_path(target.partition("?")[0])
    assert path_matches("/inventory/*", path)

    forwarded = backend_target(target, path, settings, "/inventory/*")

    assert forwarded == expected
    forwarded_path = normalize_uri_path(forwarded.partition("?")[0])
    assert forwarded_path.startswith("/v2/")


# -- redirects --------------------------------------------------------------------------------


def _to_listener(include_path: bool, include_query: bool) -> RedirectConfig:
    target = listener("https", protocol=ListenerProtocol.HTTPS, port=443)
    return RedirectConfig("r", RedirectType.PERMANENT, target, None, include_path, include_query)


@pytest.mark.parametrize(
    ("redirect", "port", "expected"),
    [
        (_to_listener(True, True), 443, "https://www.contoso.com/a/b?x=1"),
        (_to_listener(True, False), 8443, "https://www.contoso.com:8443/a/b"),
        (_to_listener(False, False), 443, "https://www.contoso.com/"),
        (
            RedirectConfig("u", RedirectType.TEMPORARY, None, "https://b.test/new", True, True),
            None,
            "https://b.test/new/a/b?x=1",
        ),
        (
            RedirectConfig("u", RedirectType.SEE_OTHER, None, "https://b.test/?k=v", False, True),
            None,
            "https://b.test/?k=v&x=1",
        ),
    ],
)
def test_redirect_location_follows_include_path_and_query(
    redirect: RedirectConfig, port: int | None, expected: str
) -> None:
    location = redirect_location(
        redirect, request_host="www.contoso.com:80", target_port=port, path="/a/b", query="x=1"
    )

    assert location == expected


def test_redirect_types_map_to_their_statuses_and_pages() -> None:
    statuses = {t: t.status for t in RedirectType}

    assert statuses == {
        RedirectType.PERMANENT: 301,
        RedirectType.FOUND: 302,
        RedirectType.SEE_OTHER: 303,
        RedirectType.TEMPORARY: 307,
    }
    page = page_for_status(307)
    body = render_page(page)
    assert page.reason == "Temporary Redirect"
    assert b"<center><h1>307 Temporary Redirect</h1></center>\r\n" in body
    assert b"Microsoft-Azure-Application-Gateway/v2" in body


def test_affinity_cookie_is_stable_per_backend_and_read_from_cookie_headers() -> None:
    one = affinity_cookie_value("pool", "10.0.0.4", 80)

    assert one == affinity_cookie_value("pool", "10.0.0.4", 80)
    assert one != affinity_cookie_value("pool", "10.0.0.5", 80)
    headers = [("Cookie", f"a=1; ApplicationGatewayAffinity={one}; b=2")]
    assert cookie_value(headers, "ApplicationGatewayAffinity") == one
    assert cookie_value(headers, "Missing") is None


# -- the model: what validate accepts and refuses ---------------------------------------------


@pytest.fixture(scope="module")
def parameters() -> dict[str, object]:
    server = CA("unit routing server")
    client = CA("unit routing client")
    return {
        "partnersCertData": server.issue_server("partners.contoso.test").pfx("pw"),
        "apiCertData": server.issue_server("api.contoso.test").pfx("pw"),
        "wwwCertData": server.issue_server("www.contoso.test").pfx("pw"),
        "certPassword": "pw",
        "trustedClientCaData": client.cert_pem,
        "backendRootCaData": base64.b64decode(base64.b64encode(CA("unit backend").cert_pem)),
    }


def _example() -> dict[str, Any]:
    return copy.deepcopy(json.loads(EXAMPLE.read_text()))


def _gw(template: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = template["resources"][0]["properties"]
    return props


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def test_the_example_resolves_every_routing_property(parameters: dict[str, object]) -> None:
    config = load_config(_example(), parameters)

    api = config.rule_for("api-listener")
    assert api.url_path_map is not None
    assert [p.name for p in api.url_path_map.path_rules] == ["inventory", "legacy", "shop"]
    inventory = api.url_path_map.path_rules[0].settings
    assert inventory is not None
    assert inventory.protocol is ListenerProtocol.HTTPS
    assert inventory.path == "/v2/"
    assert len(inventory.trusted_roots) == 1
    assert inventory.probe is not None
    assert inventory.probe.path == "/health"
    redirect = config.rule_for("http-listener").redirect
    assert redirect is not None
    assert redirect.target_listener is not None
    assert redirect.target_listener.name == "www-listener"
    assert config.listener("api-listener").host_names == ("api.contoso.test", "*.api.contoso.test")
    assert config.rule_for("www-listener").settings is not None
    assert config.rule_for("www-listener").settings.cookie_affinity is True  # type: ignore[union-attr]


def _errors(exc: EmulatorError) -> list[EmulatorError]:
    return list(exc.problems) if isinstance(exc, InvalidConfiguration) else [exc]


Change = Callable[[dict[str, Any]], None]


def _unknown_in_path_rule(t: dict[str, Any]) -> None:
    _gw(t)["urlPathMaps"][0]["properties"]["pathRules"][0]["properties"]["pathz"] = ["/x"]


def _unknown_in_redirect(t: dict[str, Any]) -> None:
    _gw(t)["redirectConfigurations"][0]["properties"]["includeFragment"] = True


def _unknown_in_probe(t: dict[str, Any]) -> None:
    _gw(t)["probes"][0]["properties"]["intervall"] = 3


def _redirect_with_both_targets(t: dict[str, Any]) -> None:
    _gw(t)["redirectConfigurations"][0]["properties"]["targetUrl"] = "https://x.test/"


def _bad_path_pattern(t: dict[str, Any]) -> None:
    _gw(t)["urlPathMaps"][0]["properties"]["pathRules"][0]["properties"]["paths"] = ["/a/*/b"]


def _path_rule_without_target(t: dict[str, Any]) -> None:
    props = _gw(t)["urlPathMaps"][0]["properties"]["pathRules"][0]["properties"]
    props.pop("backendAddressPool")


def _path_based_without_map(t: dict[str, Any]) -> None:
    _named(_gw(t)["requestRoutingRules"], "api-rule")["properties"].pop("urlPathMap")


def _basic_with_map(t: dict[str, Any]) -> None:
    props = _named(_gw(t)["requestRoutingRules"], "api-rule")["properties"]
    props["ruleType"] = "Basic"


def _mixed_priorities(t: dict[str, Any]) -> None:
    t["resources"][0]["apiVersion"] = "2021-05-01"
    _named(_gw(t)["requestRoutingRules"], "www-rule")["properties"].pop("priority")
    for profile in _gw(t)["sslProfiles"]:  # Passthrough needs 2025-03-01
        profile["properties"]["clientAuthConfiguration"]["verifyClientAuthMode"] = "Strict"
        profile["properties"]["trustedClientCertificates"] = [
            {"id": "[concat(variables('gatewayId'), '/trustedClientCertificates/partner-ca')]"}
        ]


def _mixed_protocols(t: dict[str, Any]) -> None:
    _named(_gw(t)["frontendPorts"], "port-80")["properties"]["port"] = 443


def _six_host_names(t: dict[str, Any]) -> None:
    props = _named(_gw(t)["httpListeners"], "api-listener")["properties"]
    props["hostNames"] = [f"h{i}.contoso.test" for i in range(6)]


def _bad_affinity(t: dict[str, Any]) -> None:
    _gw(t)["backendHttpSettingsCollection"][0]["properties"]["cookieBasedAffinity"] = "Sometimes"


def _bad_probe_status(t: dict[str, Any]) -> None:
    _gw(t)["probes"][0]["properties"]["match"]["statusCodes"] = ["2xx"]


def _root_without_certificate(t: dict[str, Any]) -> None:
    _gw(t)["trustedRootCertificates"][0]["properties"]["data"] = base64.b64encode(
        b"not a certificate"
    ).decode()


@pytest.mark.parametrize(
    ("change", "code", "path_part"),
    [
        (_unknown_in_path_rule, "InvalidJson", "pathRules[0].properties.pathz"),
        (_unknown_in_redirect, "InvalidJson", "redirectConfigurations[0].properties"),
        (_unknown_in_probe, "InvalidJson", "probes[0].properties.intervall"),
        (_redirect_with_both_targets, "EmulatorRedirectTarget", "redirectConfigurations[0]"),
        (_bad_path_pattern, "EmulatorPathRuleInvalidPath", "pathRules[0].properties.paths"),
        (_path_rule_without_target, "InvalidTemplate", "pathRules[0].properties"),
        (_path_based_without_map, "EmulatorPathBasedRuleWithoutUrlPathMap", "urlPathMap"),
        (_basic_with_map, "EmulatorBasicRuleWithUrlPathMap", "urlPathMap"),
        (
            _mixed_priorities,
            "ApplicationGatewayRequestRoutingRulePartialPriorityDefined",
            "",
        ),
        (_mixed_protocols, "EmulatorMixedProtocolsOnPort", "httpListeners"),
        (_six_host_names, "EmulatorTooManyHostNames", "hostNames"),
        (_bad_affinity, "InvalidRequestContent", "cookieBasedAffinity"),
        (_bad_probe_status, "InvalidTemplate", "statusCodes"),
        (_root_without_certificate, "EmulatorTrustedRootCertificateInvalidData", "data"),
    ],
)
def test_validate_refuses_broken_routing_properties_with_code_and_path(
    parameters: dict[str, object], change: Change, code: str, path_part: str
) -> None:
    template = _example()
    change(template)

    with pytest.raises(TemplateError) as info:
        load_config(template, parameters)

    found = [(e.error_code, e.path or "") for e in _errors(info.value)]
    assert any(c == code and path_part in p for c, p in found), found


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (
            lambda t: _gw(t)["urlPathMaps"][0]["properties"]["pathRules"][0]["properties"].update(
                {"loadDistributionPolicy": {"id": "x/loadDistributionPolicies/l"}}
            ),
            "loadDistributionPolicy",
        ),
        (
            lambda t: _gw(t)["backendHttpSettingsCollection"][0]["properties"].update(
                {"dedicatedBackendConnection": True}
            ),
            "dedicatedBackendConnection",
        ),
        (
            lambda t: _gw(t)["probes"][0]["properties"].update(
                {"enableProbeProxyProtocolHeader": True}
            ),
            "enableProbeProxyProtocolHeader",
        ),
    ],
)
def test_leftovers_stay_loud_unsupported_features_naming_the_property(
    parameters: dict[str, object], change: Change, name: str
) -> None:
    template = _example()
    change(template)

    with pytest.raises(TemplateError) as info:
        load_config(template, parameters)

    unsupported = [e for e in _errors(info.value) if isinstance(e, UnsupportedFeature)]
    assert any(name in str(e) for e in unsupported), [str(e) for e in _errors(info.value)]


def test_reroute_on_a_path_rule_rewrite_set_is_accepted(parameters: dict[str, object]) -> None:
    config: GatewayConfig = load_config(_example(), parameters)

    path_map = config.rule_for("api-listener").url_path_map
    assert path_map is not None
    shop = path_map.path_rules[2].rewrite_rule_set
    assert shop is not None
    assert shop.rules[0].url is not None
    assert shop.rules[0].url.reroute is True
