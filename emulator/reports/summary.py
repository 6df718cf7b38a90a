"""A one-screen description of what a gateway config will run, as text or as JSON.

``validate`` prints it after ``OK``; ``run`` and ``up`` print it at startup. Both forms are built
from one plain-data description (:func:`describe`), so the text and ``--output json`` never
disagree.
"""

from __future__ import annotations

from typing import Any

from emulator.core.request.rewrite import certificate_header_holes, certificate_headers
from emulator.core.tls.dn import openssl_rfc2253
from emulator.model import (
    BackendPool,
    BackendSettings,
    GatewayConfig,
    RedirectConfig,
    RewriteRuleSet,
    UrlPathMap,
)

__all__ = ["describe", "forgeable_certificate_headers", "render_text"]


def _unconditionally_handled(rule_set: RewriteRuleSet | None) -> set[str]:
    """Request headers an unconditional rule of the set sets or deletes (lowercase)."""
    if rule_set is None:
        return set()
    return {
        action.header_name.lower()
        for rule in rule_set.rules
        if not rule.conditions
        for action in rule.request_headers
    }


def forgeable_certificate_headers(config: GatewayConfig) -> list[dict[str, str]]:
    """Where a client can make the backend see its own certificate header, and the fix.

    Two shapes, both faithful to Azure (which forwards client headers it does not rewrite):
    a conditional rule fills a certificate header and nothing removes the client's value when
    the condition is false; and a listener without such a rule shares a backend pool with one
    that has it, so the backend reads the header from clients of both.
    """
    found: list[dict[str, str]] = []
    for rule in config.rules:
        for hole in (h for rs in rule.rewrite_rule_sets for h in certificate_header_holes(rs)):
            found.append(
                {
                    "listener": rule.listener.name,
                    "routingRule": rule.name,
                    "rewriteRule": hole.rule,
                    "header": hole.header,
                    "message": hole.message,
                    "fix": hole.fix,
                }
            )
    for rule in config.rules:
        handled: set[str] = set()
        for rule_set in rule.rewrite_rule_sets:
            handled |= _unconditionally_handled(rule_set) | set(certificate_headers(rule_set))
        own_pools = {pool.name for pool in rule.pools}
        for other in config.rules:
            shared = sorted(own_pools & {pool.name for pool in other.pools})
            if other is rule or not shared:
                continue
            other_headers: dict[str, str] = {}
            for rule_set in other.rewrite_rule_sets:
                other_headers.update(certificate_headers(rule_set))
            for lower, header in other_headers.items():
                if lower in handled:
                    continue
                handled.add(lower)
                found.append(
                    {
                        "listener": rule.listener.name,
                        "routingRule": rule.name,
                        "rewriteRule": "",
                        "header": header,
                        "message": f"a client of listener '{rule.listener.name}' can forge "
                        f"'{header}': listener '{other.listener.name}' fills it from the client "
                        f"certificate for the same backend pool '{shared[0]}', but rule "
                        f"'{rule.name}' does not touch it, so a client's own value is forwarded",
                        "fix": f"give rule '{rule.name}' a rewrite rule that sets '{header}' "
                        "unconditionally (to the certificate variable, or empty to delete it); "
                        "or run with --strip-client-cert-headers",
                    }
                )
    return found


def describe(config: GatewayConfig) -> dict[str, Any]:
    """Plain data (JSON-ready) describing listeners, rules, pools and rewrites."""
    listeners = []
    for rule in config.rules:
        listener = rule.listener
        profile = listener.ssl_profile
        entry: dict[str, Any] = {
            "name": listener.name,
            "port": listener.frontend_port,
            "protocol": listener.protocol.value,
            "hostNames": list(listener.host_names),
            "sslPolicy": listener.ssl_policy.name if listener.server_certificate else None,
        }
        if listener.server_certificate is not None:
            entry["serverCertificate"] = openssl_rfc2253(
                listener.server_certificate.certificate.subject
            )
        if profile is not None:
            entry["sslProfile"] = {
                "name": profile.name,
                "clientAuth": profile.client_auth.value if profile.client_auth else None,
                "trustedClientCaSubjects": [
                    openssl_rfc2253(ca.subject)
                    for upload in profile.trusted_client_cas
                    for ca in upload.certificates
                ],
            }
        listeners.append(entry)
    rules = []
    for rule in config.rules:
        entry = {
            "name": rule.name,
            "priority": rule.priority,
            "listener": rule.listener.name,
            "pool": rule.pool.name if rule.pool else None,
            "backendSettings": rule.settings.name if rule.settings else None,
            "rewriteRuleSet": rule.rewrite_rule_set.name if rule.rewrite_rule_set else None,
            "forwardsClientCertificateIn": [
                h for rs in rule.rewrite_rule_sets for h in certificate_headers(rs).values()
            ],
        }
        # Present only when used, so a Basic rule's entry keeps its established shape.
        if rule.redirect is not None:
            entry["redirect"] = _redirect(rule.redirect)
        if rule.url_path_map is not None:
            entry["urlPathMap"] = _path_map(rule.url_path_map)
        rules.append(entry)
    pools = [
        {
            "name": pool.name,
            "addresses": [f"{a.host}:{a.port}" if a.port else a.host for a in pool.addresses],
        }
        for pool in config.pools
    ]
    rewrites = sorted({rs.name: rs for r in config.rules for rs in r.rewrite_rule_sets}.items())
    return {
        "gateway": config.name,
        "resourceId": config.resource_id,
        "apiVersion": config.api_version,
        "sku": config.sku_name,
        "buffering": {
            "enableRequestBuffering": config.buffering.request,
            "enableResponseBuffering": config.buffering.response,
        },
        "listeners": listeners,
        "rules": rules,
        "pools": pools,
        "rewriteRuleSets": [
            {
                "name": name,
                "rules": [{"name": r.name, "ruleSequence": r.sequence} for r in rule_set.rules],
            }
            for name, rule_set in rewrites
        ],
        "notEmulated": list(config.notes),
        "warnings": list(config.warnings),
        "forgeableCertificateHeaders": forgeable_certificate_headers(config),
    }


def _redirect(redirect: RedirectConfig) -> dict[str, Any]:
    target = redirect.target_url
    if redirect.target_listener is not None:
        target = f"listener {redirect.target_listener.name}"
    return {
        "name": redirect.name,
        "status": redirect.redirect_type.status,
        "target": target,
        "includePath": redirect.include_path,
        "includeQueryString": redirect.include_query_string,
    }


def _destination(
    pool: BackendPool | None,
    settings: BackendSettings | None,
    redirect: RedirectConfig | None,
    rewrite: RewriteRuleSet | None,
) -> str:
    if redirect is not None:
        r = _redirect(redirect)
        text = f"redirect {r['status']} to {r['target']}"
    else:
        assert pool is not None
        assert settings is not None
        text = f"pool {pool.name} via {settings.name} ({settings.protocol.value})"
        if settings.path:
            text += f", path {settings.path}"
        if settings.cookie_affinity:
            text += f", affinity cookie {settings.affinity_cookie_name}"
        if settings.probe is not None:
            text += f", probe {settings.probe.name} {settings.probe.path}"
    if rewrite is not None:
        text += f", rewrites {rewrite.name}"
    return text


def _path_map(path_map: UrlPathMap) -> dict[str, Any]:
    return {
        "name": path_map.name,
        "pathRules": [
            {
                "name": p.name,
                "paths": list(p.paths),
                "to": _destination(p.pool, p.settings, p.redirect, p.rewrite_rule_set),
            }
            for p in path_map.path_rules
        ],
        "default": _destination(
            path_map.default_pool,
            path_map.default_settings,
            path_map.default_redirect,
            path_map.default_rewrite_rule_set,
        ),
    }


def render_text(description: dict[str, Any]) -> str:
    """The human form of :func:`describe`."""
    d = description
    lines = [f"gateway {d['gateway']} (API {d['apiVersion']}, SKU {d['sku'] or '?'})"]
    buffering = d["buffering"]
    lines.append(
        "  buffering: request "
        + ("on" if buffering["enableRequestBuffering"] else "off (streamed)")
        + ", response "
        + ("on" if buffering["enableResponseBuffering"] else "off (streamed)")
    )
    for listener in d["listeners"]:
        profile = listener.get("sslProfile")
        mode = "no SSL profile"
        if profile is not None:
            auth = profile["clientAuth"] or "no client authentication"
            mode = f"SSL profile {profile['name']}: {auth}"
        hosts = ", ".join(listener["hostNames"]) or "any host"
        lines.append(
            f"  listener {listener['name']}: {listener['protocol']} port {listener['port']}, "
            f"{hosts}, {mode}"
        )
        if profile is not None:
            for subject in profile["trustedClientCaSubjects"]:
                lines.append(f"    trusts client CA {subject}")
    for rule in d["rules"]:
        rewrite = f", rewrites {rule['rewriteRuleSet']}" if rule["rewriteRuleSet"] else ""
        forwarded = ""
        if rule["forwardsClientCertificateIn"]:
            forwarded = f" (client certificate -> {', '.join(rule['forwardsClientCertificateIn'])})"
        if rule.get("redirect"):
            r = rule["redirect"]
            to = f"redirect {r['status']} to {r['target']}"
            to += " (path" + (" kept" if r["includePath"] else " dropped")
            to += ", query" + (" kept)" if r["includeQueryString"] else " dropped)")
        elif rule.get("urlPathMap"):
            to = f"path map {rule['urlPathMap']['name']}"
        else:
            to = f"pool {rule['pool']} via {rule['backendSettings']}"
        lines.append(
            f"  rule {rule['name']} (priority {rule['priority']}): {rule['listener']} -> "
            f"{to}{rewrite}{forwarded}"
        )
        path_map = rule.get("urlPathMap")
        if path_map:
            for path_rule in path_map["pathRules"]:
                lines.append(
                    f"    {', '.join(path_rule['paths'])} -> {path_rule['to']} "
                    f"(path rule {path_rule['name']})"
                )
            lines.append(f"    anything else -> {path_map['default']}")
    for pool in d["pools"]:
        lines.append(f"  pool {pool['name']}: {', '.join(pool['addresses']) or 'no addresses'}")
    if d["notEmulated"]:
        lines.append("  accepted, not emulated locally: " + ", ".join(d["notEmulated"]))
    lines.extend(f"  warning: {w}" for w in d["warnings"])
    for hole in d.get("forgeableCertificateHeaders", []):
        lines.append(f"  WARNING (listener {hole['listener']}): {hole['message']}")
        lines.append(f"    fix: {hole['fix']}")
    return "\n".join(lines)
