"""``azurerm_application_gateway`` arguments → the ARM gateway resource the ARM reader consumes.

Each block is turned into its ARM twin (``http_listener`` → ``properties.httpListeners[]``),
references written by name (``ssl_profile_name``) become the ARM ids the model resolves, and
azurerm's schema defaults are written out where they differ from ARM's, so the same gateway
behaves the same whichever way it was written (``request_timeout`` 30 s, a rewrite condition's
``ignore_case`` false). The result then goes through the same model and checks as a template.

Works on Terraform's JSON value shape (nested blocks are lists of objects), which both the
``.tf`` reader and a plan's ``planned_values`` give. Every ARM path produced is recorded with the
file and line of the block it came from, so the model's messages can point into the ``.tf``.
"""

from __future__ import annotations

import base64
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from emulator.errors import EmulatorError, TemplateError
from emulator.terraform.evaluate import Unknown

__all__ = ["AZURERM_API_VERSION", "Mapped", "map_gateway"]

#: The Microsoft.Network API version azurerm 4.x manages application gateways with
#: (internal/services/network/application_gateway_resource.go imports go-azure-sdk's
#: network/2023-11-01/applicationgateways). Newer provider releases may move it; what matters
#: here is that it is after 2023-02-01 (the newer default TLS policy) and before 2025-03-01
#: (so Passthrough needs azapi or verify_client_auth_mode, as in Azure).
AZURERM_API_VERSION: Final = "2023-11-01"
#: ``verify_client_auth_mode`` comes with the provider change that moves to this API version
#: (the open azurerm pull request for its issue #31844).
AUTH_MODE_API_VERSION: Final = "2025-05-01"
MAPPING_CODE: Final = "EmulatorTerraformArgument"

#: Arguments a plan's planned_values carry that are computed by Azure, not configured.
_COMPUTED: Final = frozenset({"id", "public_cert_data", "private_endpoint_connection"})


@dataclass
class Mapped:
    """The ARM resource, where each ARM path came from, and the problems found."""

    resource: dict[str, Any]
    #: ARM path (``properties.httpListeners[1]``) → (``main.tf:40``, ``http_listener 'api'``).
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)
    problems: list[EmulatorError] = field(default_factory=list)
    api_version: str = AZURERM_API_VERSION


def _where(obj: Mapping[str, Any], key: str | None = None, fallback: str = "") -> str:
    where = getattr(obj, "where", None)
    return where(key) if callable(where) else fallback


class _Reader:
    """Reads one Terraform object; remembers what was read, so ``finish`` can name the rest."""

    def __init__(self, m: _Mapper, obj: Mapping[str, Any], label: str, fallback: str) -> None:
        self.m, self.obj, self.label, self.fallback = m, obj, label, fallback
        self.read: set[str] = set()

    def where(self, key: str | None = None) -> str:
        return _where(self.obj, key, self.fallback)

    def get(self, key: str, default: Any = None, *, needed: str | None = None) -> Any:
        self.read.add(key)
        value = self.obj.get(key)
        if isinstance(value, Unknown):
            if needed is not None:
                self.m.problem(
                    f"{self.label}.{key} comes from {value.reason}, known only after apply",
                    self.where(key),
                    fix=needed,
                )
                return default
            if key.endswith(("_id", "_ids")):
                return f"(known after apply: {value.reason})"
            if self.m.from_plan:
                # Optional and computed: unknown in a plan means Azure picks it, as when absent.
                return default
            self.m.problem(
                f"{self.label}.{key} comes from {value.reason}, known only after apply",
                self.where(key),
                fix="give it a value the static reader can see (a variable), or pass "
                "--terraform-plan plan.json",
            )
            return default
        return default if value is None else value

    def blocks(self, key: str) -> list[Mapping[str, Any]]:
        value = self.get(key, [])
        if isinstance(value, Mapping):
            value = [value]
        return [v for v in value if isinstance(v, Mapping)]

    def finish(self) -> None:
        for key, value in self.obj.items():
            if key in self.read or key in _COMPUTED:
                continue
            if self.m.from_plan and (value in (None, "", [], {}) or key.endswith("_id")):
                continue  # planned_values lists every schema attribute, set or not
            close = difflib.get_close_matches(key, sorted(self.read), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.m.problem(
                f"{self.label} has no argument or block '{key}' in azurerm_application_gateway",
                self.where(key),
                fix=f"{hint}see the azurerm_application_gateway documentation",
            )


class _Mapper:
    def __init__(self, gateway_id: str, *, from_plan: bool, fallback: str) -> None:
        self.gateway_id = gateway_id
        self.from_plan = from_plan
        self.fallback = fallback
        self.out = Mapped(resource={})

    def problem(self, message: str, where: str, fix: str | None = None) -> None:
        self.out.problems.append(TemplateError(message, file=where, fix=fix, code=MAPPING_CODE))

    def reader(self, obj: Mapping[str, Any], label: str) -> _Reader:
        return _Reader(self, obj, label, self.fallback)

    def ref(self, collection: str, name: Any) -> dict[str, str] | None:
        if not isinstance(name, str) or not name:
            return None
        return {"id": f"{self.gateway_id}/{collection}/{name}"}

    def children(
        self,
        top: _Reader,
        block: str,
        collection: str,
        build: Callable[[_Reader], dict[str, Any]],
    ) -> None:
        """``block {}`` items → ``properties.<collection>[i]`` = {name, properties: build()}."""
        items = []
        for index, obj in enumerate(top.blocks(block)):
            name = obj.get("name")
            r = self.reader(obj, f"{block} '{name}'" if isinstance(name, str) else block)
            r.read.add("name")
            properties = {k: v for k, v in build(r).items() if v is not None}
            r.finish()
            items.append({"name": name, "properties": properties})
            self.out.locations[f"properties.{collection}[{index}]"] = (r.where(), r.label)
        if items:
            self.out.resource["properties"][collection] = items


def _b64_if_not(value: Any) -> Any:
    """azurerm's ``Base64EncodeIfNot``: data that is not base64 already (PEM text read with
    ``file()``) is base64-encoded before it is sent, as the provider does."""
    if not isinstance(value, str):
        return value
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        return base64.b64encode(value.encode()).decode()
    return value


def _ssl_policy(r: _Reader) -> dict[str, Any]:
    return {
        "policyType": r.get("policy_type"),
        "policyName": r.get("policy_name"),
        "disabledSslProtocols": r.get("disabled_protocols") or None,
        "cipherSuites": r.get("cipher_suites") or None,
        "minProtocolVersion": r.get("min_protocol_version"),
    }


def _one_policy(m: _Mapper, parent: _Reader) -> dict[str, Any] | None:
    blocks = parent.blocks("ssl_policy")
    if not blocks:
        return None
    r = m.reader(blocks[0], f"{parent.label}.ssl_policy")
    policy = {k: v for k, v in _ssl_policy(r).items() if v is not None}
    r.finish()
    return policy


def _certificate_fix(name: Any) -> str:
    return (
        f"pass the certificate with --certificate {name}=FILE (a PFX or a PEM with its key), "
        "or give data a value the static reader can see"
    )


def map_gateway(
    values: Mapping[str, Any], *, gateway_id: str, from_plan: bool = False, fallback: str = ""
) -> Mapped:
    """Map the gateway's Terraform values; ``fallback`` locates values that carry no line."""
    m = _Mapper(gateway_id, from_plan=from_plan, fallback=fallback)
    top = m.reader(values, "azurerm_application_gateway")
    res: dict[str, Any] = {"properties": {}}
    m.out.resource = res
    props = res["properties"]
    res["name"] = top.get("name")
    res["location"] = top.get("location")
    top.get("resource_group_name")
    if top.get("tags"):
        res["tags"] = top.get("tags")
    if top.get("zones"):
        res["zones"] = top.get("zones")
    identities = top.blocks("identity")
    if identities:
        r = m.reader(identities[0], "identity")
        res["identity"] = {
            "type": r.get("type"),
            "userAssignedIdentities": {i: {} for i in ids if isinstance(i, str)}
            if isinstance(ids := r.get("identity_ids", []), list)
            else {},
        }
        r.get("principal_id")
        r.get("tenant_id")
        r.finish()

    skus = top.blocks("sku")
    if skus:
        r = m.reader(skus[0], "sku")
        props["sku"] = {
            k: v
            for k, v in {
                "name": r.get("name"),
                "tier": r.get("tier"),
                "capacity": r.get("capacity"),
            }.items()
            if v is not None
        }
        r.finish()
    for key, arm in (
        ("enable_http2", "enableHttp2"),
        ("http2_enabled", "enableHttp2"),
        ("fips_enabled", "enableFips"),
        ("force_firewall_policy_association", "forceFirewallPolicyAssociation"),
    ):
        value = top.get(key)
        if value is not None:
            props[arm] = value
    firewall = top.get("firewall_policy_id")
    if firewall:
        props["firewallPolicy"] = {"id": firewall}
    policy = _one_policy(m, top)
    if policy:
        props["sslPolicy"] = policy
    for block, arm, build in (
        (
            "autoscale_configuration",
            "autoscaleConfiguration",
            lambda r: {"minCapacity": r.get("min_capacity"), "maxCapacity": r.get("max_capacity")},
        ),
        (
            "global",
            "globalConfiguration",
            lambda r: {
                "enableRequestBuffering": r.get("request_buffering_enabled"),
                "enableResponseBuffering": r.get("response_buffering_enabled"),
            },
        ),
        ("waf_configuration", "webApplicationFirewallConfiguration", _waf),
    ):
        found = top.blocks(block)
        if found:
            r = m.reader(found[0], block)
            props[arm] = {k: v for k, v in build(r).items() if v is not None}
            r.finish()
            m.out.locations[f"properties.{arm}"] = (r.where(), block)
    errors = []
    for obj in top.blocks("custom_error_configuration"):
        r = m.reader(obj, "custom_error_configuration")
        errors.append(
            {
                "statusCode": r.get("status_code"),
                "customErrorPageUrl": r.get("custom_error_page_url"),
            }
        )
        r.finish()
    if errors:
        props["customErrorConfigurations"] = errors

    m.children(
        top,
        "gateway_ip_configuration",
        "gatewayIPConfigurations",
        lambda r: {"subnet": {"id": r.get("subnet_id")}},
    )
    m.children(top, "frontend_ip_configuration", "frontendIPConfigurations", _frontend_ip)
    m.children(top, "frontend_port", "frontendPorts", lambda r: {"port": r.get("port")})
    m.children(top, "ssl_certificate", "sslCertificates", _ssl_certificate)
    m.children(
        top,
        "trusted_client_certificate",
        "trustedClientCertificates",
        lambda r: {"data": _b64_if_not(r.get("data", needed=_certificate_fix(r.obj.get("name"))))},
    )
    m.children(top, "trusted_root_certificate", "trustedRootCertificates", _trusted_root)
    m.children(
        top,
        "authentication_certificate",
        "authenticationCertificates",
        lambda r: {"data": _b64_if_not(r.get("data"))},
    )
    m.children(top, "ssl_profile", "sslProfiles", lambda r: _ssl_profile(m, r))
    m.children(top, "http_listener", "httpListeners", lambda r: _listener(m, r))
    m.children(top, "backend_address_pool", "backendAddressPools", _pool)
    m.children(top, "probe", "probes", lambda r: _probe(m, r))
    m.children(
        top, "backend_http_settings", "backendHttpSettingsCollection", lambda r: _settings(m, r)
    )
    m.children(top, "redirect_configuration", "redirectConfigurations", lambda r: _redirect(m, r))
    m.children(top, "rewrite_rule_set", "rewriteRuleSets", lambda r: _rewrite_set(m, r))
    m.children(top, "url_path_map", "urlPathMaps", lambda r: _path_map(m, r))
    m.children(top, "request_routing_rule", "requestRoutingRules", lambda r: _rule(m, r))
    m.children(
        top,
        "private_link_configuration",
        "privateLinkConfigurations",
        lambda r: {"ipConfigurations": r.get("ip_configuration")},
    )
    for arm, key in _TOP_LEVEL_PLACES.items():
        if key in values:
            m.out.locations.setdefault(arm, (top.where(key), key))
    top.finish()
    if any(
        p.get("properties", {}).get("clientAuthConfiguration", {}).get("verifyClientAuthMode")
        for p in props.get("sslProfiles", [])
    ):
        m.out.api_version = AUTH_MODE_API_VERSION
    return m.out


#: ARM paths of top-level arguments → the argument, so messages about them point at its line.
_TOP_LEVEL_PLACES: Final = {
    "identity": "identity",
    "zones": "zones",
    "tags": "tags",
    "properties.sku": "sku",
    "properties.sslPolicy": "ssl_policy",
    "properties.enableHttp2": "http2_enabled",
    "properties.enableFips": "fips_enabled",
    "properties.firewallPolicy": "firewall_policy_id",
    "properties.customErrorConfigurations": "custom_error_configuration",
}


def _waf(r: _Reader) -> dict[str, Any]:
    return {
        "enabled": r.get("enabled"),
        "firewallMode": r.get("firewall_mode"),
        "ruleSetType": r.get("rule_set_type"),
        "ruleSetVersion": r.get("rule_set_version"),
        "requestBodyCheck": r.get("request_body_check"),
        "maxRequestBodySizeInKb": r.get("max_request_body_size_kb"),
        "fileUploadLimitInMb": r.get("file_upload_limit_mb"),
        "disabledRuleGroups": r.get("disabled_rule_group") or None,
        "exclusions": r.get("exclusion") or None,
    }


def _frontend_ip(r: _Reader) -> dict[str, Any]:
    public = r.get("public_ip_address_id")
    subnet = r.get("subnet_id")
    return {
        "publicIPAddress": {"id": public} if public else None,
        "subnet": {"id": subnet} if subnet else None,
        "privateIPAddress": r.get("private_ip_address"),
        "privateIPAllocationMethod": r.get("private_ip_address_allocation"),
        "privateLinkConfiguration": (
            {"id": r.get("private_link_configuration_name")}
            if r.get("private_link_configuration_name")
            else None
        ),
    }


def _ssl_certificate(r: _Reader) -> dict[str, Any]:
    name = r.obj.get("name")
    vault = r.get("key_vault_secret_id")
    return {
        "data": _b64_if_not(r.get("data", needed=_certificate_fix(name))),
        "password": r.get("password", needed=f"pass --certificate-password {name}=PASSWORD"),
        "keyVaultSecretId": vault or None,
    }


def _trusted_root(r: _Reader) -> dict[str, Any]:
    name = r.obj.get("name")
    vault = r.get("key_vault_secret_id")
    return {
        "data": _b64_if_not(
            r.get("data", needed=f"pass the CA with --certificate {name}=FILE (PEM or CER)")
        ),
        "keyVaultSecretId": vault or None,
    }


def _ssl_profile(m: _Mapper, r: _Reader) -> dict[str, Any]:
    # azurerm has both spellings; the newer replaces the older in provider 4.x.
    issuer = r.get("verify_client_certificate_issuer_dn")
    old = r.get("verify_client_cert_issuer_dn")
    auth: dict[str, Any] = {
        "verifyClientCertIssuerDN": issuer if issuer is not None else bool(old),
        "verifyClientRevocation": r.get("verify_client_certificate_revocation"),
        "verifyClientAuthMode": r.get("verify_client_auth_mode"),
    }
    names = r.get("trusted_client_certificate_names", [])
    return {
        "trustedClientCertificates": [m.ref("trustedClientCertificates", n) for n in names] or None,
        "clientAuthConfiguration": {k: v for k, v in auth.items() if v is not None},
        "sslPolicy": _one_policy(m, r),
    }


def _listener(m: _Mapper, r: _Reader) -> dict[str, Any]:
    errors = [
        {"statusCode": e.get("status_code"), "customErrorPageUrl": e.get("custom_error_page_url")}
        for e in r.blocks("custom_error_configuration")
    ]
    firewall = r.get("firewall_policy_id")
    return {
        "frontendIPConfiguration": m.ref(
            "frontendIPConfigurations", r.get("frontend_ip_configuration_name")
        ),
        "frontendPort": m.ref("frontendPorts", r.get("frontend_port_name")),
        "protocol": r.get("protocol"),
        "hostName": r.get("host_name"),
        "hostNames": r.get("host_names") or None,
        "sslCertificate": m.ref("sslCertificates", r.get("ssl_certificate_name")),
        "sslProfile": m.ref("sslProfiles", r.get("ssl_profile_name")),
        "requireServerNameIndication": r.get("require_sni", False),
        "firewallPolicy": {"id": firewall} if firewall else None,
        "customErrorConfigurations": errors or None,
    }


def _pool(r: _Reader) -> dict[str, Any]:
    addresses = [{"fqdn": f} for f in r.get("fqdns", [])]
    addresses += [{"ipAddress": a} for a in r.get("ip_addresses", [])]
    return {"backendAddresses": addresses}


def _probe(m: _Mapper, r: _Reader) -> dict[str, Any]:
    match = r.blocks("match")
    match_arm = None
    if match:
        mr = m.reader(match[0], f"{r.label}.match")
        match_arm = {"body": mr.get("body"), "statusCodes": mr.get("status_code")}
        mr.finish()
    return {
        "protocol": r.get("protocol"),
        "host": r.get("host"),
        "path": r.get("path"),
        "interval": r.get("interval"),
        "timeout": r.get("timeout"),
        "unhealthyThreshold": r.get("unhealthy_threshold"),
        "port": r.get("port"),
        "pickHostNameFromBackendHttpSettings": r.get(
            "pick_host_name_from_backend_http_settings", False
        ),
        "minServers": r.get("minimum_servers") or None,  # 0, azurerm's default, is ARM's too
        "match": {k: v for k, v in match_arm.items() if v is not None} if match_arm else None,
    }


#: azurerm's default for ``request_timeout`` (seconds); written out so it never depends on ARM's.
REQUEST_TIMEOUT_DEFAULT_S: Final = 30


def _settings(m: _Mapper, r: _Reader) -> dict[str, Any]:
    draining = r.blocks("connection_draining")
    draining_arm = None
    if draining:
        dr = m.reader(draining[0], f"{r.label}.connection_draining")
        draining_arm = {
            "enabled": dr.get("enabled"),
            "drainTimeoutInSec": dr.get("drain_timeout_sec"),
        }
        dr.finish()
    names = r.get("trusted_root_certificate_names", [])
    return {
        "port": r.get("port"),
        "protocol": r.get("protocol"),
        "cookieBasedAffinity": r.get("cookie_based_affinity"),
        "affinityCookieName": r.get("affinity_cookie_name"),
        "path": r.get("path"),
        "hostName": r.get("host_name"),
        "pickHostNameFromBackendAddress": r.get("pick_host_name_from_backend_address", False),
        "requestTimeout": r.get("request_timeout", REQUEST_TIMEOUT_DEFAULT_S),
        "probe": m.ref("probes", r.get("probe_name")),
        "trustedRootCertificates": [m.ref("trustedRootCertificates", n) for n in names] or None,
        "authenticationCertificates": [
            m.ref("authenticationCertificates", a.get("name"))
            for a in r.blocks("authentication_certificate")
        ]
        or None,
        "connectionDraining": draining_arm,
    }


def _redirect(m: _Mapper, r: _Reader) -> dict[str, Any]:
    return {
        "redirectType": r.get("redirect_type"),
        "targetListener": m.ref("httpListeners", r.get("target_listener_name")),
        "targetUrl": r.get("target_url"),
        "includePath": r.get("include_path", False),
        "includeQueryString": r.get("include_query_string", False),
    }


def _headers(m: _Mapper, r: _Reader, key: str) -> list[dict[str, Any]] | None:
    out = []
    for obj in r.blocks(key):
        hr = m.reader(obj, f"{r.label}.{key}")
        out.append({"headerName": hr.get("header_name"), "headerValue": hr.get("header_value")})
        hr.finish()
    return out or None


def _rewrite_set(m: _Mapper, r: _Reader) -> dict[str, Any]:
    rules = []
    for obj in r.blocks("rewrite_rule"):
        rr = m.reader(obj, f"{r.label}.rewrite_rule '{obj.get('name')}'")
        conditions = []
        for cond in rr.blocks("condition"):
            cr = m.reader(cond, f"{rr.label}.condition")
            # azurerm's defaults (false, false), written out: ARM's ignoreCase default differs.
            conditions.append(
                {
                    "variable": cr.get("variable"),
                    "pattern": cr.get("pattern"),
                    "ignoreCase": cr.get("ignore_case", False),
                    "negate": cr.get("negate", False),
                }
            )
            cr.finish()
        action: dict[str, Any] = {
            "requestHeaderConfigurations": _headers(m, rr, "request_header_configuration"),
            "responseHeaderConfigurations": _headers(m, rr, "response_header_configuration"),
        }
        urls = rr.blocks("url")
        if urls:
            ur = m.reader(urls[0], f"{rr.label}.url")
            components = ur.get("components")
            url = {
                "modifiedPath": ur.get("path") if components != "query_string_only" else None,
                "modifiedQueryString": (
                    ur.get("query_string") if components != "path_only" else None
                ),
                "reroute": ur.get("reroute", False),
            }
            ur.get("path")
            ur.get("query_string")
            action["urlConfiguration"] = {k: v for k, v in url.items() if v is not None}
            ur.finish()
        rule = {
            "name": rr.get("name"),
            "ruleSequence": rr.get("rule_sequence"),
            "conditions": conditions or None,
            "actionSet": {k: v for k, v in action.items() if v is not None},
        }
        rr.finish()
        rules.append({k: v for k, v in rule.items() if v is not None})
    return {"rewriteRules": rules}


def _path_map(m: _Mapper, r: _Reader) -> dict[str, Any]:
    rules = []
    for obj in r.blocks("path_rule"):
        pr = m.reader(obj, f"{r.label}.path_rule '{obj.get('name')}'")
        firewall = pr.get("firewall_policy_id")
        inner = {
            "paths": pr.get("paths"),
            "backendAddressPool": m.ref("backendAddressPools", pr.get("backend_address_pool_name")),
            "backendHttpSettings": m.ref(
                "backendHttpSettingsCollection", pr.get("backend_http_settings_name")
            ),
            "redirectConfiguration": m.ref(
                "redirectConfigurations", pr.get("redirect_configuration_name")
            ),
            "rewriteRuleSet": m.ref("rewriteRuleSets", pr.get("rewrite_rule_set_name")),
            "firewallPolicy": {"id": firewall} if firewall else None,
        }
        rules.append({"name": pr.get("name"), "properties": {k: v for k, v in inner.items() if v}})
        pr.finish()
    return {
        "defaultBackendAddressPool": m.ref(
            "backendAddressPools", r.get("default_backend_address_pool_name")
        ),
        "defaultBackendHttpSettings": m.ref(
            "backendHttpSettingsCollection", r.get("default_backend_http_settings_name")
        ),
        "defaultRedirectConfiguration": m.ref(
            "redirectConfigurations", r.get("default_redirect_configuration_name")
        ),
        "defaultRewriteRuleSet": m.ref("rewriteRuleSets", r.get("default_rewrite_rule_set_name")),
        "pathRules": rules,
    }


def _rule(m: _Mapper, r: _Reader) -> dict[str, Any]:
    return {
        "ruleType": r.get("rule_type"),
        "priority": r.get("priority"),
        "httpListener": m.ref("httpListeners", r.get("http_listener_name")),
        "backendAddressPool": m.ref("backendAddressPools", r.get("backend_address_pool_name")),
        "backendHttpSettings": m.ref(
            "backendHttpSettingsCollection", r.get("backend_http_settings_name")
        ),
        "redirectConfiguration": m.ref(
            "redirectConfigurations", r.get("redirect_configuration_name")
        ),
        "rewriteRuleSet": m.ref("rewriteRuleSets", r.get("rewrite_rule_set_name")),
        "urlPathMap": m.ref("urlPathMaps", r.get("url_path_map_name")),
    }
