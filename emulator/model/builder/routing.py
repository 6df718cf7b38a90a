"""Redirects, URL path maps and request routing rules: targets resolved, priorities checked."""

from __future__ import annotations

import re
from typing import Final

from emulator.arm.props import Props
from emulator.errors import (
    TemplateError,
)
from emulator.model.builder.state import Builder, check_unique, parse_enum, require_name
from emulator.model.types import (
    PRIORITY_RANGE,
    BackendPool,
    BackendSettings,
    Listener,
    PathRule,
    RedirectConfig,
    RedirectType,
    RewriteRuleSet,
    RoutingRule,
    UrlPathMap,
)


def build_redirects(
    builder: Builder, props: Props, listeners: dict[str, Listener]
) -> dict[str, RedirectConfig]:
    out: dict[str, RedirectConfig] = {}
    for item in props.children("redirectConfigurations", "ApplicationGatewayRedirectConfiguration"):
        with builder.item("redirectConfigurations", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "redirectConfigurations")
            inner = item.child(
                "properties", "ApplicationGatewayRedirectConfigurationPropertiesFormat"
            )
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"redirect configuration '{name}' has no 'properties'",
                    file=builder.file,
                    path=item.path,
                    fix="set 'redirectType' and 'targetListener' or 'targetUrl'",
                )
            type_text = inner.str_("redirectType", required=True)
            assert type_text is not None
            target_ref = inner.ref("targetListener")
            target_url = inner.str_("targetUrl") or None
            include_path = inner.bool_("includePath", False)
            include_query = inner.bool_("includeQueryString", False)
            # Read-only back-references printed by `az ... show`.
            inner.get("requestRoutingRules")
            inner.get("urlPathMaps")
            inner.get("pathRules")
            inner.finish()
            redirect_type = parse_enum(builder, RedirectType, type_text, inner, "redirectType")
            if (target_ref is None) == (target_url is None):
                raise TemplateError(
                    f"redirect configuration '{name}' needs exactly one of 'targetListener' and "
                    "'targetUrl'",
                    file=builder.file,
                    path=inner.path,
                    fix="redirect to another listener (e.g. HTTP to HTTPS) or to a URL, not both",
                    code="EmulatorRedirectTarget",
                )
            target = None
            if target_ref is not None:
                target = listeners[
                    builder.ref_name(
                        target_ref,
                        "httpListeners",
                        listeners,
                        path=inner.key_path("targetListener"),
                    )
                ]
            elif target_url is not None and not re.match(r"^https?://[^/?#]+", target_url):
                raise inner.error(
                    "targetUrl",
                    f"is '{target_url}'; it must be an absolute http:// or https:// URL",
                    fix="write the full URL, e.g. https://www.contoso.com/",
                    code="EmulatorRedirectTargetUrlInvalid",
                )
            out[name] = RedirectConfig(
                name, redirect_type, target, target_url, include_path, include_query
            )
    return out


#: A path rule's pattern: starts with '/', and '*' only as the last character after '/'
#: (url-route-overview, "PathPattern"); no '?' or '#' (only the path is matched).
_PATH_PATTERN: Final = re.compile(r"^(?:/[^*?#]*)?/\*$|^/[^*?#]*$")


def _targets(
    builder: Builder,
    item: Props,
    *,
    pool_key: str,
    settings_key: str,
    redirect_key: str,
    pools: dict[str, BackendPool],
    settings: dict[str, BackendSettings],
    redirects: dict[str, RedirectConfig],
    what: str,
) -> tuple[BackendPool | None, BackendSettings | None, RedirectConfig | None]:
    """A pool + settings pair, or a redirect: what a rule, path map or path rule points at."""
    pool_ref = item.ref(pool_key)
    settings_ref = item.ref(settings_key)
    redirect_ref = item.ref(redirect_key)
    if redirect_ref is not None:
        if pool_ref is not None or settings_ref is not None:
            raise TemplateError(
                f"{what} has both a redirect configuration and a backend pool / settings",
                file=builder.file,
                path=item.path,
                fix=f"remove '{redirect_key}', or '{pool_key}' and '{settings_key}'",
                code="EmulatorRedirectWithBackend",
            )
        redirect = redirects[
            builder.ref_name(
                redirect_ref,
                "redirectConfigurations",
                redirects,
                path=item.key_path(redirect_key),
            )
        ]
        return None, None, redirect
    if pool_ref is None or settings_ref is None:
        raise TemplateError(
            f"{what} needs '{pool_key}' and '{settings_key}', or '{redirect_key}'",
            file=builder.file,
            path=item.path,
            fix="reference a backend pool and backend settings, or a redirect configuration",
            code="InvalidTemplate",
        )
    pool = pools[
        builder.ref_name(pool_ref, "backendAddressPools", pools, path=item.key_path(pool_key))
    ]
    setting = settings[
        builder.ref_name(
            settings_ref,
            "backendHttpSettingsCollection",
            settings,
            path=item.key_path(settings_key),
        )
    ]
    return pool, setting, None


def _rewrite_ref(
    builder: Builder, item: Props, key: str, rewrites: dict[str, RewriteRuleSet]
) -> RewriteRuleSet | None:
    ref = item.ref(key)
    if ref is None:
        return None
    return rewrites[builder.ref_name(ref, "rewriteRuleSets", rewrites, path=item.key_path(key))]


def build_url_path_maps(
    builder: Builder,
    props: Props,
    pools: dict[str, BackendPool],
    settings: dict[str, BackendSettings],
    rewrites: dict[str, RewriteRuleSet],
    redirects: dict[str, RedirectConfig],
) -> dict[str, UrlPathMap]:
    out: dict[str, UrlPathMap] = {}
    for item in props.children("urlPathMaps", "ApplicationGatewayUrlPathMap"):
        with builder.item("urlPathMaps", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "urlPathMaps")
            inner = item.child("properties", "ApplicationGatewayUrlPathMapPropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"URL path map '{name}' has no 'properties'",
                    file=builder.file,
                    path=item.path,
                    fix="set the default pool and settings (or redirect) and 'pathRules'",
                )
            default_pool, default_settings, default_redirect = _targets(
                builder,
                inner,
                pool_key="defaultBackendAddressPool",
                settings_key="defaultBackendHttpSettings",
                redirect_key="defaultRedirectConfiguration",
                what=f"URL path map '{name}'",
                pools=pools,
                settings=settings,
                redirects=redirects,
            )
            default_rewrite = _rewrite_ref(builder, inner, "defaultRewriteRuleSet", rewrites)
            path_rules: list[PathRule] = []
            rule_names: dict[str, None] = {}
            for r in inner.children("pathRules", "ApplicationGatewayPathRule"):
                rule_name = require_name(r)
                check_unique(builder, rule_names, rule_name, r, "pathRules")
                rule_names[rule_name] = None
                rp = r.child("properties", "ApplicationGatewayPathRulePropertiesFormat")
                r.finish()
                if rp is None:
                    raise TemplateError(
                        f"path rule '{rule_name}' has no 'properties'",
                        file=builder.file,
                        path=r.path,
                    )
                paths = [str(x) for x in rp.list_("paths")]
                if not paths:
                    raise rp.error(
                        "paths",
                        "is empty",
                        fix="list at least one path pattern, e.g. /images/*",
                        code="EmulatorPathRuleWithoutPaths",
                    )
                for pattern in paths:
                    if not _PATH_PATTERN.match(pattern):
                        raise rp.error(
                            "paths",
                            f"has '{pattern}'; a path starts with '/' and may end in '/*' "
                            "(no other '*', no '?' or '#')",
                            fix="write /images/* for a prefix or /images/logo.png for one path",
                            code="EmulatorPathRuleInvalidPath",
                        )
                pool, setting, redirect = _targets(
                    builder,
                    rp,
                    pool_key="backendAddressPool",
                    settings_key="backendHttpSettings",
                    redirect_key="redirectConfiguration",
                    what=f"path rule '{rule_name}'",
                    pools=pools,
                    settings=settings,
                    redirects=redirects,
                )
                rewrite = _rewrite_ref(builder, rp, "rewriteRuleSet", rewrites)
                rp.finish(
                    unsupported={
                        "firewallPolicy": "per-path WAF policies",
                        "loadDistributionPolicy": "load distribution policies",
                    }
                )
                path_rules.append(
                    PathRule(rule_name, tuple(paths), pool, setting, rewrite, redirect)
                )
            inner.finish(
                unsupported={"defaultLoadDistributionPolicy": "load distribution policies"}
            )
            if not path_rules:
                raise inner.error(
                    "pathRules",
                    "is empty",
                    fix="add at least one path rule (a path map must hold one)",
                    code="EmulatorUrlPathMapWithoutPathRules",
                )
            out[name] = UrlPathMap(
                name,
                tuple(path_rules),
                default_pool,
                default_settings,
                default_rewrite,
                default_redirect,
            )
    return out


def build_routing_rules(
    builder: Builder,
    props: Props,
    listeners: dict[str, Listener],
    pools: dict[str, BackendPool],
    settings: dict[str, BackendSettings],
    rewrites: dict[str, RewriteRuleSet],
    redirects: dict[str, RedirectConfig],
    path_maps: dict[str, UrlPathMap],
) -> list[RoutingRule]:
    out: list[RoutingRule] = []
    names: dict[str, None] = {}
    seen_listeners: dict[str, str] = {}
    priorities: dict[int, str] = {}
    for item in props.children("requestRoutingRules", "ApplicationGatewayRequestRoutingRule"):
        with builder.item("requestRoutingRules", item):
            name = require_name(item)
            check_unique(builder, names, name, item, "requestRoutingRules")
            names[name] = None
            inner = item.child("properties", "ApplicationGatewayRequestRoutingRulePropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"routing rule '{name}' has no 'properties'", file=builder.file, path=item.path
                )
            rule_type = inner.str_("ruleType") or "Basic"
            priority = inner.int_("priority")
            listener_ref = inner.ref("httpListener")
            path_map_ref = inner.ref("urlPathMap")
            if rule_type.lower() not in ("basic", "pathbasedrouting"):
                raise inner.error(
                    "ruleType",
                    f"is '{rule_type}'",
                    fix="use Basic or PathBasedRouting",
                    code="InvalidRequestContent",
                )
            path_based = rule_type.lower() == "pathbasedrouting"
            _check_priority(builder, inner, name, priority, priorities)
            if listener_ref is None:
                raise inner.error(
                    "httpListener", "is missing", fix="reference one of httpListeners"
                )
            listener = listeners[
                builder.ref_name(
                    listener_ref, "httpListeners", listeners, path=inner.key_path("httpListener")
                )
            ]
            if listener.name in seen_listeners:
                raise inner.error(
                    "httpListener",
                    f"'{listener.name}' is already used by rule '{seen_listeners[listener.name]}'",
                    fix="give each rule its own listener (one routing rule per listener)",
                    code="EmulatorListenerUsedByMultipleRules",
                )
            seen_listeners[listener.name] = name
            pool: BackendPool | None = None
            setting: BackendSettings | None = None
            redirect: RedirectConfig | None = None
            path_map: UrlPathMap | None = None
            if path_based:
                path_map = _rule_path_map(builder, inner, path_map_ref, path_maps)
            else:
                if path_map_ref is not None:
                    raise inner.error(
                        "urlPathMap",
                        "is set on a Basic rule",
                        fix="set 'ruleType' to 'PathBasedRouting', or remove 'urlPathMap'",
                        code="EmulatorBasicRuleWithUrlPathMap",
                    )
                pool, setting, redirect = _targets(
                    builder,
                    inner,
                    pool_key="backendAddressPool",
                    settings_key="backendHttpSettings",
                    redirect_key="redirectConfiguration",
                    pools=pools,
                    settings=settings,
                    redirects=redirects,
                    what=f"Basic rule '{name}'",
                )
            rewrite = _rewrite_ref(builder, inner, "rewriteRuleSet", rewrites)
            if path_based and rewrite is not None:
                raise inner.error(
                    "rewriteRuleSet",
                    "is set on a PathBasedRouting rule; rewrite sets go on its path rules",
                    fix="set 'defaultRewriteRuleSet' on the path map or 'rewriteRuleSet' on a "
                    "path rule",
                    code="EmulatorPathBasedRuleWithRewriteSet",
                )
            inner.finish(
                unsupported={
                    "loadDistributionPolicy": "load distribution policies",
                    "entraJWTValidationConfig": "JWT validation",
                }
            )
            out.append(
                RoutingRule(name, priority, listener, pool, setting, rewrite, redirect, path_map)
            )
    out.sort(key=lambda r: r.priority if r.priority is not None else 20001)
    return out


def _check_priority(
    builder: Builder, inner: Props, name: str, priority: int | None, priorities: dict[int, str]
) -> None:
    """A rule's priority: required from API 2021-08-01 on, in range, unique (``priorities``
    maps each priority taken so far to its rule, and gains this one)."""
    if priority is None and builder.gw.api_version >= "2021-08-01":
        # Azure's code and wording (seen in az CLI and ARM deployment errors).
        raise TemplateError(
            "Priority for the request routing rule "
            f"{builder.gw.resource_id}/requestRoutingRules/{name} cannot be empty. "
            "All request routing rules should have a priority defined starting from "
            "api-version 2021-08-01",
            file=builder.file,
            path=inner.path,
            fix='add "priority": a number from 1 to 20000, unique per rule (lower wins)',
            code="ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty",
        )
    if priority is not None:
        if priority not in PRIORITY_RANGE:
            raise inner.error(
                "priority",
                f"is {priority}; it must be 1-20000",
                fix="use a number from 1 to 20000, unique per rule (lower wins)",
                code="EmulatorRulePriorityOutOfRange",
            )
        if priority in priorities:
            raise inner.error(
                "priority",
                f"{priority} is also used by rule '{priorities[priority]}'",
                fix="give each rule a unique priority",
                code="EmulatorDuplicateRulePriority",
            )
        priorities[priority] = name


def _rule_path_map(
    builder: Builder, inner: Props, path_map_ref: str | None, path_maps: dict[str, UrlPathMap]
) -> UrlPathMap:
    """The URL path map of a PathBasedRouting rule, which says where its requests go: the rule
    itself may name no backend or redirect."""
    if path_map_ref is None:
        raise inner.error(
            "urlPathMap",
            "is missing; a PathBasedRouting rule routes through a URL path map",
            fix="reference one of urlPathMaps",
            code="EmulatorPathBasedRuleWithoutUrlPathMap",
        )
    for key in ("backendAddressPool", "backendHttpSettings", "redirectConfiguration"):
        if inner.get(key) is not None:
            raise inner.error(
                key,
                "is set on a PathBasedRouting rule; its URL path map says where requests go",
                fix=f"remove '{key}' (use the path map's defaults)",
                code="EmulatorPathBasedRuleWithBackend",
            )
    return path_maps[
        builder.ref_name(path_map_ref, "urlPathMaps", path_maps, path=inner.key_path("urlPathMap"))
    ]


def check_rule_order(builder: Builder, rules: list[RoutingRule]) -> None:
    """Every rule has a priority, or none has: Azure refuses a mix (multiple-site-overview:
    "to use rule priority, you must specify rule priority field values for all existing
    request routing rules"). Listeners sharing a port must share a protocol too."""
    with_priority = [r.name for r in rules if r.priority is not None]
    without = [r.name for r in rules if r.priority is None]
    if with_priority and without:
        builder.report(
            TemplateError(
                # Azure's code and message for a mix (az CLI / ARM deployment errors).
                "Either all or no rule should have the priority specified. Without: "
                f"{', '.join(without)}; with: {', '.join(with_priority)}",
                fix="give every routing rule a priority (1-20000, unique), or none",
                code="ApplicationGatewayRequestRoutingRulePartialPriorityDefined",
            )
        )
    protocols: dict[int, Listener] = {}
    for rule in rules:
        listener = rule.listener
        other = protocols.setdefault(listener.frontend_port, listener)
        if other.protocol is not listener.protocol:
            builder.report(
                TemplateError(
                    f"listeners '{other.name}' ({other.protocol.value}) and '{listener.name}' "
                    f"({listener.protocol.value}) share frontend port {listener.frontend_port}",
                    path=listener.path,
                    fix="listeners on one frontend port use one protocol; give one of them "
                    "another port",
                    code="EmulatorMixedProtocolsOnPort",
                )
            )
