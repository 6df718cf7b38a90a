"""Rewrite rule sets: conditions, header and URL actions, their templates checked against the
server variable names, and Azure's per-set limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from emulator.arm.props import Props, id_leaf
from emulator.errors import (
    EmulatorError,
    TemplateError,
)
from emulator.model.builder.state import Builder, check_unique, require_name
from emulator.model.types import (
    HeaderAction,
    RewriteCondition,
    RewriteRule,
    RewriteRuleSet,
    UrlAction,
)
from emulator.model.variables import COOKIE_VARIABLE_PREFIX, PLACEHOLDER, SERVER_VARIABLE_NAMES


def build_rewrite_sets(builder: Builder, props: Props) -> dict[str, RewriteRuleSet]:
    out: dict[str, RewriteRuleSet] = {}
    for item in props.children("rewriteRuleSets", "ApplicationGatewayRewriteRuleSet"):
        with builder.item("rewriteRuleSets", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "rewriteRuleSets")
            inner = item.child("properties", "ApplicationGatewayRewriteRuleSetPropertiesFormat")
            item.finish()
            rules: list[RewriteRule] = []
            if inner is not None:
                for r in inner.children("rewriteRules", "ApplicationGatewayRewriteRule"):
                    rules.append(_rewrite_rule(builder, r))
                inner.finish()
            rules.sort(key=lambda rule: rule.sequence)  # stable: ties keep document order
            _check_rewrite_set_limits(builder, item, name, rules)
            rerouting = [r.name for r in rules if r.url is not None and r.url.reroute]
            if rerouting:
                _reject_reroute(builder, props, item, name, rerouting)
            out[name] = RewriteRuleSet(name, tuple(rules))
    if len(out) > MAX_REWRITE_RULE_SETS:
        builder.report(
            TemplateError(
                f"{len(out)} rewrite rule sets; a gateway takes at most {MAX_REWRITE_RULE_SETS}",
                file=builder.file,
                path=props.key_path("rewriteRuleSets"),
                fix="merge sets that listeners share, or drop unused ones",
                code="EmulatorRewriteRuleSetsLimit",
            )
        )
    return out


#: Application Gateway limits (azure-subscription-service-limits, "Application Gateway
#: limits"; includes/application-gateway-limits.md): "Number of rewrite rule sets 400",
#: "Number of Header or URL configuration per rewrite rule set 40", "Number of conditions per
#: rewrite rule set 40". Azure documents no error code for them.
MAX_REWRITE_RULE_SETS: Final = 400
MAX_REWRITE_CONFIGURATIONS_PER_SET: Final = 40
MAX_REWRITE_CONDITIONS_PER_SET: Final = 40


def _check_rewrite_set_limits(
    builder: Builder, item: Props, name: str, rules: list[RewriteRule]
) -> None:
    """Both limits count over the whole set, not per rule: every request and response header
    configuration, and each rule's urlConfiguration, is one configuration."""
    configurations = sum(
        len(r.request_headers) + len(r.response_headers) + (r.url is not None) for r in rules
    )
    conditions = sum(len(r.conditions) for r in rules)
    problems: list[EmulatorError] = []
    if configurations > MAX_REWRITE_CONFIGURATIONS_PER_SET:
        problems.append(
            TemplateError(
                f"rewrite rule set '{name}' has {configurations} header and URL "
                f"configurations; a set takes at most {MAX_REWRITE_CONFIGURATIONS_PER_SET}",
                file=builder.file,
                path=item.path,
                fix="split the rules over several rewrite rule sets (one per routing rule or "
                "path rule), or combine header values",
                code="EmulatorRewriteConfigurationsPerSetLimit",
            )
        )
    if conditions > MAX_REWRITE_CONDITIONS_PER_SET:
        problems.append(
            TemplateError(
                f"rewrite rule set '{name}' has {conditions} conditions; a set takes at most "
                f"{MAX_REWRITE_CONDITIONS_PER_SET}",
                file=builder.file,
                path=item.path,
                fix="split the rules over several rewrite rule sets, or fold conditions into "
                "one regular expression",
                code="EmulatorRewriteConditionsPerSetLimit",
            )
        )
    builder.report_all(problems)


def _reject_reroute(
    builder: Builder, props: Props, item: Props, set_name: str, rules: list[str]
) -> None:
    """``reroute`` re-evaluates a path map; Azure refuses it on a set that a Basic rule uses.

    Azure (rewrite-http-headers-url, "common pitfalls"): "Enabling 'Reevaluate path map' isn't
    allowed for basic request routing rules", to prevent an endless loop. On a path-based rule
    it is emulated (:mod:`emulator.core.request.routing`: re-evaluation, a loop ends with 500).

    Raises:
        TemplateError: a Basic routing rule references the set.
    """
    rule_names = ", ".join(f"'{r}'" for r in rules)
    basic = _basic_rules_using(props, set_name)
    if basic:
        raise TemplateError(
            f"rewrite rule(s) {rule_names} of rule set '{set_name}' set 'reroute' (re-evaluate "
            f"path map), but Basic routing rule(s) {', '.join(basic)} use the set; Azure allows "
            "reroute only on path-based rules",
            file=builder.file,
            path=item.path,
            fix="set 'reroute' to false, or use the set from a path-based rule's path map",
            code="EmulatorRerouteOnBasicRule",
        )


def _basic_rules_using(props: Props, set_name: str) -> list[str]:
    """Names of Basic routing rules whose ``rewriteRuleSet`` names ``set_name``.

    Read from the raw JSON without reporting anything: ``build_routing_rules`` validates the
    routing rules and reports their problems once.
    """

    def ci(obj: object, key: str) -> object:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if str(k).lower() == key.lower():
                    return v
        return None

    found: list[str] = []
    routing = props.get("requestRoutingRules")
    for item in routing if isinstance(routing, list) else []:
        inner = ci(item, "properties")
        rule_type = ci(inner, "ruleType")
        ref = ci(ci(inner, "rewriteRuleSet"), "id")
        is_basic = not isinstance(rule_type, str) or rule_type.lower() == "basic"
        if not isinstance(ref, str) or not is_basic:
            continue
        if id_leaf(ref)[1].lower() == set_name.lower():
            found.append(f"'{ci(item, 'name')}'")
    return found


#: Request header names the backend can receive: letters, digits, hyphens
#: (rewrite-http-headers-url, "Limitations").
_REQUEST_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9-]+")
#: Response header names: an RFC 9110 token.
_RESPONSE_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: ``{var_NAME_3}``: capture group 3 of a condition on ``var_NAME``.
_CAPTURE_SUFFIX: Final = re.compile(r"^(.+)_(\d+)$")


def _valid_variable(name: str, *, allow_capture: bool) -> bool:
    lower = name.lower()
    if lower in SERVER_VARIABLE_NAMES or (
        lower.startswith(COOKIE_VARIABLE_PREFIX) and len(lower) > len(COOKIE_VARIABLE_PREFIX)
    ):
        return True
    capture = _CAPTURE_SUFFIX.match(lower) if allow_capture else None
    return capture is not None and _valid_variable(capture.group(1), allow_capture=False)


def _unknown_variable(name: str, where: str, item: Props, key: str) -> TemplateError:
    return item.error(
        key,
        f"uses the server variable '{name}' in {where}, which Application Gateway does not have "
        f"(valid: {', '.join(SERVER_VARIABLE_NAMES)}, cookie_NAME; a condition's capture group "
        "as NAME_1, NAME_2 ...)",
        fix="use one of the listed server variables; spelling as in the Azure documentation",
        code="EmulatorUnknownServerVariable",
    )


def _check_template(template: str, item: Props, key: str) -> None:
    """Every ``{var_NAME}`` of a header value / URL template names a real server variable."""
    for match in PLACEHOLDER.finditer(template):
        if match.group(1) == "var" and not _valid_variable(match.group(2), allow_capture=True):
            raise _unknown_variable(match.group(2), f"'{template}'", item, key)


def _condition(condition: Props) -> RewriteCondition:
    variable = condition.str_("variable", required=True)
    pattern = condition.str_("pattern", required=True)
    ignore_case = condition.bool_("ignoreCase", True)
    negate = condition.bool_("negate", False)
    condition.finish()
    assert variable is not None
    assert pattern is not None
    variable = variable.strip("{}")
    lower = variable.lower()
    if lower.startswith("var_"):
        if not _valid_variable(variable[len("var_") :], allow_capture=False):
            raise _unknown_variable(variable[len("var_") :], "a condition", condition, "variable")
    elif not (
        (lower.startswith("http_req_") and len(lower) > len("http_req_"))
        or (lower.startswith("http_resp_") and len(lower) > len("http_resp_"))
    ):
        raise condition.error(
            "variable",
            f"is '{variable}'; a condition reads var_NAME (a server variable), http_req_NAME (a "
            "request header) or http_resp_NAME (a response header)",
            fix="prefix the name with var_, http_req_ or http_resp_",
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise condition.error(
            "pattern",
            f"is not a valid regular expression ({exc})",
            fix="fix the regular expression, or escape its special characters to match text",
        ) from None
    return RewriteCondition(variable, pattern, ignore_case, negate)


def _header_action(header_config: Props, *, response: bool) -> HeaderAction:
    header = header_config.str_("headerName", required=True)
    value = header_config.str_("headerValue") or ""
    header_config.finish(unsupported={"headerValueMatcher": "header value matchers"})
    assert header is not None
    if header.lower() in ("connection", "upgrade"):
        raise header_config.error(
            "headerName",
            f"is '{header}', which App Gateway cannot rewrite",
            fix="remove this header action; hop-by-hop headers are the gateway's own",
            code="EmulatorHeaderNotRewritable",
        )
    allowed = _RESPONSE_HEADER_NAME if response else _REQUEST_HEADER_NAME
    if not allowed.fullmatch(header):
        raise header_config.error(
            "headerName",
            f"is '{header}'; "
            + (
                "a response header name is an RFC 9110 token"
                if response
                else "a request header name may hold only letters, digits and hyphens (others "
                "are dropped on the way to the backend)"
            ),
            fix="rename the header",
            code="EmulatorInvalidHeaderName",
        )
    if not response and header.lower() == "host" and not value:
        raise header_config.error(
            "headerValue",
            "is empty, which would delete the Host header; Azure does not allow deleting Host",
            fix="set Host to a value instead (e.g. {var_host}), or remove this action",
            code="EmulatorHostHeaderCannotBeDeleted",
        )
    _check_template(value, header_config, "headerValue")
    return HeaderAction(header, value)


def _url_action(url_config: Props) -> UrlAction | None:
    path = url_config.str_("modifiedPath")
    query = url_config.str_("modifiedQueryString")
    reroute = url_config.bool_("reroute", False)
    url_config.finish()
    # Null (absent) leaves that part as sent (REST reference); an empty string is treated the
    # same, which is how the portal stores an untouched field.
    path = path or None
    query = query if query is not None and query != "" else None
    for key, template in (("modifiedPath", path), ("modifiedQueryString", query)):
        if template is not None:
            _check_template(template, url_config, key)
    if path is None and query is None and not reroute:
        return None
    return UrlAction(path, query, reroute)


def _rewrite_rule(builder: Builder, rule: Props) -> RewriteRule:
    name = rule.str_("name") or ""
    sequence = rule.int_("ruleSequence", 100)
    conditions = [
        _condition(condition)
        for condition in rule.children("conditions", "ApplicationGatewayRewriteRuleCondition")
    ]
    actions = rule.child("actionSet", "ApplicationGatewayRewriteRuleActionSet")
    request: list[HeaderAction] = []
    response: list[HeaderAction] = []
    url: UrlAction | None = None
    if actions is not None:
        for header_config in actions.children(
            "requestHeaderConfigurations", "ApplicationGatewayHeaderConfiguration"
        ):
            request.append(_header_action(header_config, response=False))
        for header_config in actions.children(
            "responseHeaderConfigurations", "ApplicationGatewayHeaderConfiguration"
        ):
            response.append(_header_action(header_config, response=True))
        url_config = actions.child("urlConfiguration", "ApplicationGatewayUrlConfiguration")
        if url_config is not None:
            url = _url_action(url_config)
        actions.finish()
    rule.finish()
    assert sequence is not None
    return RewriteRule(name, sequence, tuple(conditions), tuple(request), tuple(response), url)
