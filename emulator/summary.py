"""A one-screen description of what a gateway config will run, as text or as JSON.

``validate`` prints it after ``OK``; ``run`` and ``up`` print it at startup. Both forms are built
from one plain-data description (:func:`describe`), so the text and ``--output json`` never
disagree.
"""

from __future__ import annotations

from typing import Any

from emulator.core.dn import openssl_rfc2253
from emulator.core.rewrite import CLIENT_CERTIFICATE
from emulator.model import GatewayConfig, RewriteRuleSet

__all__ = ["describe", "render_text"]


def _forwards_certificate(rule_set: RewriteRuleSet | None) -> list[str]:
    """Headers a rule set fills from a ``client_certificate*`` variable."""
    if rule_set is None:
        return []
    return [
        action.header_name
        for rule in rule_set.rules
        for action in rule.request_headers
        if "{var_" + CLIENT_CERTIFICATE in action.header_value.lower()
    ]


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
    rules = [
        {
            "name": rule.name,
            "priority": rule.priority,
            "listener": rule.listener.name,
            "pool": rule.pool.name,
            "backendSettings": rule.settings.name,
            "rewriteRuleSet": rule.rewrite_rule_set.name if rule.rewrite_rule_set else None,
            "forwardsClientCertificateIn": _forwards_certificate(rule.rewrite_rule_set),
        }
        for rule in config.rules
    ]
    pools = [
        {
            "name": pool.name,
            "addresses": [f"{a.host}:{a.port}" if a.port else a.host for a in pool.addresses],
        }
        for pool in config.pools
    ]
    rewrites = sorted(
        {
            r.rewrite_rule_set.name: r.rewrite_rule_set for r in config.rules if r.rewrite_rule_set
        }.items()
    )
    return {
        "gateway": config.name,
        "resourceId": config.resource_id,
        "apiVersion": config.api_version,
        "sku": config.sku_name,
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
    }


def render_text(description: dict[str, Any]) -> str:
    """The human form of :func:`describe`."""
    d = description
    lines = [f"gateway {d['gateway']} (API {d['apiVersion']}, SKU {d['sku'] or '?'})"]
    for listener in d["listeners"]:
        profile = listener.get("sslProfile")
        mode = "no SSL profile"
        if profile is not None:
            mode = f"SSL profile {profile['name']}: {profile['clientAuth'] or 'no client authentication'}"
        hosts = ", ".join(listener["hostNames"]) or "any host"
        lines.append(
            f"  listener {listener['name']}: {listener['protocol']} port {listener['port']}, {hosts}, {mode}"
        )
        if profile is not None:
            for subject in profile["trustedClientCaSubjects"]:
                lines.append(f"    trusts client CA {subject}")
    for rule in d["rules"]:
        rewrite = f", rewrites {rule['rewriteRuleSet']}" if rule["rewriteRuleSet"] else ""
        forwarded = ""
        if rule["forwardsClientCertificateIn"]:
            forwarded = f" (client certificate -> {', '.join(rule['forwardsClientCertificateIn'])})"
        lines.append(
            f"  rule {rule['name']} (priority {rule['priority']}): {rule['listener']} -> "
            f"pool {rule['pool']} via {rule['backendSettings']}{rewrite}{forwarded}"
        )
    for pool in d["pools"]:
        lines.append(f"  pool {pool['name']}: {', '.join(pool['addresses']) or 'no addresses'}")
    if d["notEmulated"]:
        lines.append("  accepted, not emulated locally: " + ", ".join(d["notEmulated"]))
    lines.extend(f"  warning: {w}" for w in d["warnings"])
    return "\n".join(lines)
