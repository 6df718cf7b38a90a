"""The gateway resource as a whole: the build's order, its gateway-wide checks and limits.

:func:`build_gateway_config` builds the sub-resources in dependency order (certificates and
profiles before listeners, pools and settings before rules), so each reference resolves against
items already built; then it checks what spans several of them (SKU, limits, rule order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from emulator.arm.certdata import (
    TrustedClientCa,
)
from emulator.arm.props import Props
from emulator.arm.ssl_policies import (
    DEFAULT_POLICY_NAME,
    PREDEFINED_POLICIES,
)
from emulator.errors import (
    InvalidConfiguration,
    TemplateError,
)
from emulator.model.builder.backends import (
    build_backend_settings,
    build_pools,
    build_probes,
    build_trusted_root_certs,
)
from emulator.model.builder.listeners import build_frontend_ports, build_listeners
from emulator.model.builder.rewrites import build_rewrite_sets
from emulator.model.builder.routing import (
    build_redirects,
    build_routing_rules,
    build_url_path_maps,
    check_rule_order,
)
from emulator.model.builder.ssl import (
    build_gateway_policy,
    build_ssl_certificates,
    build_ssl_profiles,
    build_trusted_client_certs,
    check_policy_families,
)
from emulator.model.builder.state import Builder
from emulator.model.types import (
    V2_SKUS,
    Buffering,
    ClientAuthMode,
    GatewayConfig,
    GatewayResourceLike,
    Listener,
    RoutingRule,
    SslProfile,
)
from emulator.model.variables import fills_from_certificate

_RESOURCE_META: Final = (
    "apiVersion",
    "name",
    "id",
    "location",
    "dependsOn",
    "comments",
    "metadata",
)
_RESOURCE_IGNORED: Final = ("tags", "zones", "identity")
_RESOURCE_UNSUPPORTED: Final = {
    "copy": "resource-level copy loops",
    "condition": "conditional deployment",
}
_PROPERTIES_IGNORED: Final = (
    "gatewayIPConfigurations",
    "autoscaleConfiguration",
    "frontendIPConfigurations",
    "privateLinkConfigurations",
    "privateEndpointConnections",
    "enableFips",
    "forceFirewallPolicyAssociation",
    "defaultPredefinedSslPolicy",
    # Differs from Azure: WAF inspection is not emulated; noted at startup.
    "webApplicationFirewallConfiguration",
    "firewallPolicy",
)
_PROPERTIES_UNSUPPORTED: Final = {
    "authenticationCertificates": "v1 backend authentication certificates",
    "customErrorConfigurations": "custom error pages",
    "loadDistributionPolicies": "load distribution policies",
    "listeners": "TCP/TLS (layer 4) listeners",
    "routingRules": "TCP/TLS (layer 4) routing rules",
    "backendSettingsCollection": "TCP/TLS (layer 4) backend settings",
    "entraJWTValidationConfigs": "JWT validation",
}


def build_gateway_config(
    gw: GatewayResourceLike, *, now: datetime, loose: bool = False
) -> GatewayConfig:
    """Check and resolve an evaluated gateway resource into a :class:`GatewayConfig`.

    ``now`` is the time of the build; the caller reads the clock, so the build stays a pure
    function of its arguments (only the warning about an expired server certificate uses it).
    ``loose`` (``--loose``) turns every "not emulated yet" problem into a warning; the item
    that carries it is left out, and the warning says which.

    Raises:
        TemplateError: the resource is invalid, references dangle, or it uses a feature not
            emulated yet (``UnsupportedFeature``).
        CertificateError: a PFX or trusted client CA upload that Azure would refuse.
    """
    builder = Builder(gw, now, loose=loose)
    props, sku_name = _gateway_properties(builder)

    default_policy = PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
    problems_before = len(builder.problems)
    with builder.section():
        default_policy = build_gateway_policy(builder, props)
    # A refused gateway policy leaves the stand-in default: comparing families with it would
    # report a second, invented problem.
    gateway_policy_ok = len(builder.problems) == problems_before
    certs = build_ssl_certificates(builder, props)
    trusted = build_trusted_client_certs(builder, props)
    profiles = build_ssl_profiles(builder, props, trusted)
    if gateway_policy_ok:
        check_policy_families(builder, default_policy, profiles)
    ports = build_frontend_ports(builder, props)
    listeners = build_listeners(builder, props, ports, certs, profiles, default_policy)
    pools = build_pools(builder, props)
    roots = build_trusted_root_certs(builder, props)
    probes = build_probes(builder, props)
    settings = build_backend_settings(builder, props, roots, probes)
    rewrites = build_rewrite_sets(builder, props)
    redirects = build_redirects(builder, props, listeners)
    path_maps = build_url_path_maps(builder, props, pools, settings, rewrites, redirects)
    rules = build_routing_rules(
        builder, props, listeners, pools, settings, rewrites, redirects, path_maps
    )
    enable_http2 = False
    with builder.section():
        enable_http2 = props.bool_("enableHttp2", False)
    buffering = Buffering()
    with builder.section():
        buffering = _buffering(builder, props, sku_name)
    with builder.section():
        props.finish(
            ignored=_PROPERTIES_IGNORED, unsupported=_PROPERTIES_UNSUPPORTED, notes=builder.notes
        )

    if profiles and sku_name and sku_name.lower() not in V2_SKUS:
        builder.report(
            TemplateError(
                f"SSL profiles need a v2 SKU; this gateway's SKU is '{sku_name}'",
                file=gw.file,
                path=props.key_path("sku"),
                fix="use Standard_v2 or WAF_v2",
                code="EmulatorSslProfileNeedsV2Sku",
            )
        )
    _check_gateway_limits(builder, props, listeners, profiles, trusted)
    check_rule_order(builder, rules)
    _warn_unforwarded_passthrough(builder, rules)
    if builder.problems:
        if len(builder.problems) == 1:
            raise builder.problems[0]
        raise InvalidConfiguration(builder.problems)
    routed = {r.listener.name for r in rules}
    for listener in listeners.values():
        if listener.name not in routed:
            builder.warnings.append(
                f"listener '{listener.name}' has no routing rule; it is not started"
            )
    return GatewayConfig(
        name=gw.name,
        resource_id=gw.resource_id,
        api_version=gw.api_version,
        file=gw.file,
        sku_name=sku_name,
        listeners=tuple(listeners[r.listener.name] for r in rules),
        rules=tuple(rules),
        pools=tuple(pools.values()),
        enable_http2=enable_http2,
        buffering=buffering,
        notes=tuple(builder.notes.items),
        warnings=tuple(builder.warnings),
        all_listeners=tuple(listeners.values()),
    )


def _gateway_properties(builder: Builder) -> tuple[Props, str]:
    """The resource's ``properties`` and its SKU name; the resource-level keys are checked.

    Raises:
        TemplateError: the resource has no ``properties``.
    """
    gw = builder.gw
    resource = Props(
        gw.resource,
        type_name="ApplicationGateway",
        path=gw.json_path,
        file=gw.file,
        sink=builder.report,
    )
    for meta in _RESOURCE_META:
        resource.get(meta)
    props = resource.child("properties", "ApplicationGatewayPropertiesFormat")
    if props is None:
        raise TemplateError(
            "the gateway resource has no 'properties'",
            file=gw.file,
            path=gw.json_path,
            fix="put the gateway's settings under 'properties'",
        )
    # `sku` sits inside properties for application gateways; tolerate it at the top level too.
    sku = props.child("sku", "ApplicationGatewaySku") or resource.child(
        "sku", "ApplicationGatewaySku"
    )
    sku_name = ""
    if sku is not None:
        sku_name = sku.str_("name") or ""
        sku.get("tier")
        sku.get("capacity")
        sku.finish(ignored=("family",), notes=builder.notes)
    with builder.section():
        resource.finish(
            ignored=_RESOURCE_IGNORED, unsupported=_RESOURCE_UNSUPPORTED, notes=builder.notes
        )
    return props, sku_name


#: ``globalConfiguration`` exists from this API version on (proxy-buffers: "API version
#: 2020-01-01 or later"); an older template cannot carry it.
GLOBAL_CONFIGURATION_MIN_API: Final = "2020-01-01"
#: The SKUs with a web application firewall, which needs the whole request body to inspect it.
WAF_SKUS: Final = frozenset({"waf_v2", "waf_medium", "waf_large"})


def _buffering(builder: Builder, props: Props, sku_name: str) -> Buffering:
    """``globalConfiguration``: the two buffering switches, every other key reported."""
    config = props.child("globalConfiguration", "ApplicationGatewayGlobalConfiguration")
    if config is None:
        return Buffering()
    if builder.gw.api_version < GLOBAL_CONFIGURATION_MIN_API:
        raise props.error(
            "globalConfiguration",
            f"needs API version {GLOBAL_CONFIGURATION_MIN_API} or later; this gateway uses "
            f"{builder.gw.api_version}",
            fix=f"set the gateway resource's apiVersion to {GLOBAL_CONFIGURATION_MIN_API} or "
            "later, or remove globalConfiguration",
            code="EmulatorGlobalConfigurationNeedsNewerApi",
        )
    buffering = Buffering(
        request=config.bool_("enableRequestBuffering", True),
        response=config.bool_("enableResponseBuffering", True),
    )
    config.finish()
    if not buffering.request and sku_name.lower() in WAF_SKUS:
        # An error, not a warning: Azure refuses the setting on a WAF gateway (the firewall
        # inspects whole bodies), so a template that runs here would fail to deploy there.
        raise config.error(
            "enableRequestBuffering",
            f"cannot be false on the {sku_name} SKU: the web application firewall needs the "
            "whole request body, so request buffering stays on (proxy-buffers)",
            fix="remove enableRequestBuffering, set it to true, or use the Standard_v2 SKU",
            code="EmulatorWafNeedsRequestBuffering",
        )
    return buffering


#: Azure limits (application-gateway limits doc; appgw-behaviour.md §5).
MAX_TRUSTED_CAS_PER_PROFILE: Final = 100
MAX_TRUSTED_CAS_PER_GATEWAY: Final = 200


def _check_gateway_limits(
    builder: Builder,
    props: Props,
    listeners: dict[str, Listener],
    profiles: dict[str, SslProfile],
    trusted: dict[str, TrustedClientCa],
) -> None:
    if len(trusted) > MAX_TRUSTED_CAS_PER_GATEWAY:
        builder.report(
            TemplateError(
                f"{len(trusted)} trusted client certificates; a gateway takes at most "
                f"{MAX_TRUSTED_CAS_PER_GATEWAY}",
                path=props.key_path("trustedClientCertificates"),
                fix="remove chains that no client uses",
                code="EmulatorTrustedClientCertificatesPerGatewayLimit",
            )
        )
    for profile in profiles.values():
        if len(profile.trusted_client_cas) > MAX_TRUSTED_CAS_PER_PROFILE:
            builder.report(
                TemplateError(
                    f"SSL profile '{profile.name}' references "
                    f"{len(profile.trusted_client_cas)} trusted "
                    f"client certificates; a profile takes at most {MAX_TRUSTED_CAS_PER_PROFILE}",
                    path=props.key_path("sslProfiles"),
                    fix="split the clients over several profiles and listeners",
                    code="EmulatorTrustedClientCertificatesPerProfileLimit",
                )
            )
    seen: dict[tuple[int, tuple[str, ...]], str] = {}
    for listener in listeners.values():
        key = (listener.frontend_port, tuple(sorted(host.lower() for host in listener.host_names)))
        if key in seen:
            hosts = ", ".join(listener.host_names) or "any host name"
            builder.report(
                TemplateError(
                    f"listeners '{seen[key]}' and '{listener.name}' both take port "
                    f"{listener.frontend_port} for {hosts}",
                    path=listener.path,
                    fix="give one of them another frontend port or other host names",
                    code="EmulatorDuplicateListener",
                )
            )
        seen.setdefault(key, listener.name)
        cert = listener.server_certificate
        if cert is not None and cert.certificate.not_valid_after_utc < builder.now:
            builder.warnings.append(
                f"listener '{listener.name}': server certificate '{cert.name}' expired on "
                f"{cert.certificate.not_valid_after_utc:%Y-%m-%d}; clients that check it will "
                "refuse it"
            )


def _warn_unforwarded_passthrough(builder: Builder, rules: list[RoutingRule]) -> None:
    """A Passthrough listener whose rule forwards no certificate lets the backend authenticate
    no one: the gateway checks nothing and the backend is told nothing."""
    for rule in rules:
        profile = rule.listener.ssl_profile
        if profile is None or profile.client_auth is not ClientAuthMode.PASSTHROUGH:
            continue
        if rule.redirect is not None:
            continue  # a redirect never reaches a backend
        forwards = any(
            fills_from_certificate(action)
            for rule_set in rule.rewrite_rule_sets
            for r in rule_set.rules
            for action in r.request_headers
        )
        if not forwards:
            builder.warnings.append(
                f"listener '{rule.listener.name}' is Passthrough but rule '{rule.name}' "
                "forwards no client certificate: the backend cannot authenticate anyone (add a "
                "rewrite rule setting a header to {var_client_certificate})"
            )
