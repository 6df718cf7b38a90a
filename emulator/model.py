"""The gateway model: an evaluated ARM gateway resource turned into frozen, resolved objects.

``build_gateway_config`` reads the evaluated ``Microsoft.Network/applicationGateways`` resource
(every ARM expression already evaluated by :mod:`emulator.arm.template`), checks it the way
Azure would at deployment time, resolves every sub-resource reference by id, and returns a
:class:`GatewayConfig`. The running server is ``emulator.runtime.gateway.Gateway``; the two
never share a name.

Every property of the gateway falls in one of three classes, decided here once per object type
(see :mod:`emulator.arm.props`): emulated; known to Azure but meaningless locally (accepted and
listed in ``GatewayConfig.notes``); known and not emulated yet (``UnsupportedFeature``). Anything
else is an ``InvalidJson`` error in ARM's own shape.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from cryptography import x509

from emulator.arm.certdata import (
    ServerCertificate,
    TrustedClientCa,
    decode_base64_field,
    decode_upload_field,
    load_server_pfx,
    load_trusted_client_ca,
)
from emulator.arm.props import Notes, Props, id_leaf
from emulator.arm.ssl_policies import (
    DEFAULT_POLICY_NAME,
    DEPRECATED_TLS_CODE,
    DOCUMENTED_LEGACY_DEFAULT,
    LEGACY_DEFAULT_POLICY_NAME,
    NEW_DEFAULT_FROM_API,
    PREDEFINED_POLICIES,
    RETIRED_CUSTOM_SUITES,
    RETIRED_POLICIES,
    RETIREMENT_URL,
    SslPolicy,
    TlsVersion,
)
from emulator.errors import (
    CertificateError,
    EmulatorError,
    InvalidConfiguration,
    TemplateError,
    UnsupportedFeature,
)

__all__ = [
    "CERTIFICATE_VARIABLE_PREFIX",
    "DEFAULT_AFFINITY_COOKIE",
    "SERVER_VARIABLE_NAMES",
    "BackendAddress",
    "BackendPool",
    "BackendSettings",
    "Buffering",
    "ClientAuthMode",
    "GatewayConfig",
    "GatewayResourceLike",
    "HeaderAction",
    "Listener",
    "ListenerProtocol",
    "PathRule",
    "Probe",
    "RedirectConfig",
    "RedirectType",
    "RevocationMode",
    "RewriteCondition",
    "RewriteRule",
    "RewriteRuleSet",
    "RoutingRule",
    "SslProfile",
    "UrlAction",
    "UrlPathMap",
    "build_gateway_config",
    "fills_from_certificate",
    "with_backend_overrides",
]

#: Passthrough mode exists from API version 2025-03-01 on (Azure mutual authentication overview).
PASSTHROUGH_MIN_API: Final = "2025-03-01"
#: ``requestTimeout`` default, seconds (backendHttpSettings REST reference).
DEFAULT_REQUEST_TIMEOUT_S: Final = 20
#: Routing rule priority range (Azure application gateway limits).
PRIORITY_RANGE: Final = range(1, 20001)
V2_SKUS: Final = frozenset({"standard_v2", "waf_v2", "basic"})


_E = TypeVar("_E", bound=enum.Enum)


class ListenerProtocol(enum.Enum):
    HTTP = "Http"
    HTTPS = "Https"


class ClientAuthMode(enum.Enum):
    """``clientAuthConfiguration.verifyClientAuthMode``; Strict when unset."""

    STRICT = "Strict"
    PASSTHROUGH = "Passthrough"


class RevocationMode(enum.Enum):
    NONE = "None"
    OCSP = "OCSP"


@dataclass(frozen=True, slots=True)
class SslProfile:
    name: str
    #: None when the profile performs no client authentication (Strict with no trusted CA:
    #: such a profile only sets a TLS policy and requests no certificate).
    client_auth: ClientAuthMode | None
    verify_issuer_dn: bool
    revocation: RevocationMode
    trusted_client_cas: tuple[TrustedClientCa, ...]
    ssl_policy: SslPolicy | None


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    protocol: ListenerProtocol
    frontend_port: int
    frontend_port_name: str
    host_names: tuple[str, ...]
    server_certificate: ServerCertificate | None
    ssl_profile: SslProfile | None
    ssl_policy: SslPolicy
    require_sni: bool
    path: str

    @property
    def client_auth(self) -> ClientAuthMode | None:
        """The client-certificate mode this listener applies; None: it requests no certificate
        (no SSL profile, or a profile without client authentication)."""
        return self.ssl_profile.client_auth if self.ssl_profile is not None else None


@dataclass(frozen=True, slots=True)
class BackendAddress:
    host: str
    #: None: use the backend settings' port (Azure keeps the port there).
    port: int | None = None


@dataclass(frozen=True, slots=True)
class BackendPool:
    name: str
    addresses: tuple[BackendAddress, ...]


#: The default affinity cookie's name (configuration-http-settings, "Cookie-based affinity").
DEFAULT_AFFINITY_COOKIE: Final = "ApplicationGatewayAffinity"


@dataclass(frozen=True, slots=True)
class Probe:
    """A custom health probe (``probes[]``), attached to backend settings by ``probe``.

    Defaults are the REST reference's; a backend is unhealthy after ``unhealthy_threshold``
    consecutive failures and healthy again after one success (application-gateway-probe-overview).
    """

    name: str
    protocol: ListenerProtocol
    #: None: ``127.0.0.1``, or the settings' host name with ``pick_host_from_settings``.
    host: str | None
    path: str
    interval_s: int
    timeout_s: int
    unhealthy_threshold: int
    pick_host_from_settings: bool
    #: None: the backend settings' port.
    port: int | None
    #: Inclusive status ranges that count as healthy (default 200-399).
    status_ranges: tuple[tuple[int, int], ...]
    #: A substring the body must contain; None checks the status only.
    body: str | None


@dataclass(frozen=True, slots=True)
class BackendSettings:
    name: str
    port: int
    protocol: ListenerProtocol
    request_timeout_s: int
    host_name: str | None
    pick_host_name_from_backend_address: bool
    #: ``path``: replaces the matched path prefix on the way to the backend (None: no override).
    path: str | None = None
    #: ``cookieBasedAffinity: Enabled``: the gateway pins a client to one backend by cookie.
    cookie_affinity: bool = False
    affinity_cookie_name: str = DEFAULT_AFFINITY_COOKIE
    #: HTTPS backends: root certificates to trust (``trustedRootCertificates``); empty: the
    #: system's well-known CAs, as Azure v2 does without uploads.
    trusted_roots: tuple[x509.Certificate, ...] = ()
    #: HTTPS backends: the SNI to send (``sniName``); None: the Host sent to the backend.
    sni_name: str | None = None
    validate_cert_chain_and_expiry: bool = True
    validate_sni: bool = True
    probe: Probe | None = None


@dataclass(frozen=True, slots=True)
class HeaderAction:
    header_name: str
    #: A template mixing text with ``{var_NAME}`` / ``{http_req_NAME}`` / ``{http_resp_NAME}``;
    #: an empty result deletes the header.
    header_value: str


#: Every server variable Azure documents for v2 rewrites (rewrite-http-headers-url, "Server
#: variables" and "Mutual authentication server variables"), plus the ``cookie_NAME`` family.
#: The names live in the model because validation needs them; how each value is computed is
#: :mod:`emulator.core.server_variables` (a unit test keeps the two lists equal).
SERVER_VARIABLE_NAMES: Final = (
    "add_x_forwarded_for_proxy",
    "ciphers_supported",
    "ciphers_used",
    "client_ip",
    "client_port",
    "client_tcp_rtt",
    "client_user",
    "host",
    "http_method",
    "http_status",
    "http_version",
    "query_string",
    "received_bytes",
    "request_query",
    "request_scheme",
    "request_uri",
    "sent_bytes",
    "server_port",
    "ssl_connection_protocol",
    "ssl_enabled",
    "uri_path",
    "client_certificate",
    "client_certificate_end_date",
    "client_certificate_fingerprint",
    "client_certificate_issuer",
    "client_certificate_serial",
    "client_certificate_start_date",
    "client_certificate_subject",
    "client_certificate_verification",
)
#: ``cookie_NAME`` reads one request cookie.
COOKIE_VARIABLE_PREFIX: Final = "cookie_"
#: A placeholder in a header value or URL template (rewrite-http-headers-url, "Rewrite actions").
PLACEHOLDER: Final = re.compile(r"\{(var|http_req|http_resp)_([^{}]+)\}")
#: Every mTLS variable starts with this; a header filled from one carries the client's identity.
CERTIFICATE_VARIABLE_PREFIX: Final = "client_certificate"


@dataclass(frozen=True, slots=True)
class RewriteCondition:
    #: ``var_NAME``, ``http_req_NAME`` or ``http_resp_NAME`` (without braces).
    variable: str
    pattern: str
    #: Azure's default is true (rewrite rule condition REST reference).
    ignore_case: bool
    negate: bool


@dataclass(frozen=True, slots=True)
class UrlAction:
    """``actionSet.urlConfiguration``: None leaves that part of the URL as the client sent it."""

    #: Template of the new path (text and placeholders, like a header value).
    modified_path: str | None
    #: Template of the new query string, without ``?``; an empty result removes the query.
    modified_query_string: str | None
    #: Re-evaluate the path map with the new path (path-based rules only).
    reroute: bool = False


@dataclass(frozen=True, slots=True)
class RewriteRule:
    name: str
    sequence: int
    conditions: tuple[RewriteCondition, ...]
    request_headers: tuple[HeaderAction, ...]
    response_headers: tuple[HeaderAction, ...]
    url: UrlAction | None = None


@dataclass(frozen=True, slots=True)
class RewriteRuleSet:
    name: str
    #: Sorted by ``ruleSequence``; ties keep document order.
    rules: tuple[RewriteRule, ...]


class RedirectType(enum.Enum):
    """``redirectType`` and the status the gateway answers with (redirect-overview)."""

    PERMANENT = "Permanent"
    FOUND = "Found"
    SEE_OTHER = "SeeOther"
    TEMPORARY = "Temporary"

    @property
    def status(self) -> int:
        return _REDIRECT_STATUS[self.value]


_REDIRECT_STATUS: Final = {"Permanent": 301, "Found": 302, "SeeOther": 303, "Temporary": 307}


@dataclass(frozen=True, slots=True)
class RedirectConfig:
    """``redirectConfigurations[]``: answer with a redirect instead of proxying."""

    name: str
    redirect_type: RedirectType
    #: Redirect to another listener (its protocol and port; the request's host) ...
    target_listener: Listener | None
    #: ... or to a fixed URL (exactly one of the two is set).
    target_url: str | None
    include_path: bool
    include_query_string: bool


@dataclass(frozen=True, slots=True)
class PathRule:
    """One ``pathRules[]`` entry of a URL path map: its path patterns and where they go."""

    name: str
    #: ``/images/*`` (prefix) or ``/images/logo.png`` (exact), in the template's order.
    paths: tuple[str, ...]
    pool: BackendPool | None
    settings: BackendSettings | None
    rewrite_rule_set: RewriteRuleSet | None
    redirect: RedirectConfig | None


@dataclass(frozen=True, slots=True)
class UrlPathMap:
    """``urlPathMaps[]``: path rules checked in order, then the defaults."""

    name: str
    path_rules: tuple[PathRule, ...]
    default_pool: BackendPool | None
    default_settings: BackendSettings | None
    default_rewrite_rule_set: RewriteRuleSet | None
    default_redirect: RedirectConfig | None


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """A request routing rule. A Basic rule proxies to ``pool`` via ``settings`` or answers with
    ``redirect``; a PathBasedRouting rule defers to ``url_path_map`` (``pool`` / ``settings``
    are then None)."""

    name: str
    priority: int | None
    listener: Listener
    pool: BackendPool | None
    settings: BackendSettings | None
    rewrite_rule_set: RewriteRuleSet | None
    redirect: RedirectConfig | None = None
    url_path_map: UrlPathMap | None = None

    @property
    def rewrite_rule_sets(self) -> tuple[RewriteRuleSet, ...]:
        """Every rewrite rule set a request of this rule can run (its own and its path map's)."""
        found: dict[str, RewriteRuleSet] = {}
        candidates = [self.rewrite_rule_set]
        if self.url_path_map is not None:
            candidates.append(self.url_path_map.default_rewrite_rule_set)
            candidates += [p.rewrite_rule_set for p in self.url_path_map.path_rules]
        for rule_set in candidates:
            if rule_set is not None:
                found.setdefault(rule_set.name, rule_set)
        return tuple(found.values())

    @property
    def pools(self) -> tuple[BackendPool, ...]:
        """Every backend pool this rule can send a request to."""
        found: dict[str, BackendPool] = {}
        candidates = [self.pool]
        if self.url_path_map is not None:
            candidates.append(self.url_path_map.default_pool)
            candidates += [p.pool for p in self.url_path_map.path_rules]
        for pool in candidates:
            if pool is not None:
                found.setdefault(pool.name, pool)
        return tuple(found.values())

    @property
    def target_text(self) -> str:
        """Where the rule sends requests, in words (startup lines, summaries)."""
        if self.url_path_map is not None:
            return f"path map {self.url_path_map.name}"
        if self.redirect is not None:
            return f"redirect {self.redirect.name}"
        assert self.pool is not None
        return f"pool {self.pool.name}"


@dataclass(frozen=True, slots=True)
class Buffering:
    """``properties.globalConfiguration``: whether the gateway buffers bodies (proxy-buffers).

    With request buffering the gateway reads a whole request body before it opens a backend
    connection, so a slow upload never holds one; with response buffering it reads the
    backend's response as fast as the backend sends it and frees the connection while a slow
    client is still reading. Both are on by default; Azure accepts the object from API
    2020-01-01 on, and the WAF SKU cannot turn request buffering off.
    """

    request: bool = True
    response: bool = True


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A gateway ready to run: listeners and the rules that route them, all resolved."""

    name: str
    resource_id: str
    api_version: str
    file: str | None
    sku_name: str
    listeners: tuple[Listener, ...]
    rules: tuple[RoutingRule, ...]
    pools: tuple[BackendPool, ...]
    enable_http2: bool
    #: ``globalConfiguration``: request and response buffering (both on unless turned off).
    buffering: Buffering = Buffering()
    #: Properties accepted but meaningless locally, as JSON paths (startup summary).
    notes: tuple[str, ...] = ()
    #: Things that work here but differ in Azure (shown at startup).
    warnings: tuple[str, ...] = ()
    #: Every listener of the template, routed or not (redirect targets may be unrouted).
    all_listeners: tuple[Listener, ...] = ()

    def rule_for(self, listener_name: str) -> RoutingRule:
        return next(r for r in self.rules if r.listener.name == listener_name)

    def listener(self, name: str) -> Listener:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


class GatewayResourceLike(Protocol):
    """What :func:`build_gateway_config` needs from the template loader's gateway resource."""

    @property
    def name(self) -> str: ...
    @property
    def api_version(self) -> str: ...
    @property
    def resource_id(self) -> str: ...
    @property
    def resource(self) -> Mapping[str, Any]: ...
    @property
    def file(self) -> str: ...
    @property
    def json_path(self) -> str: ...


# -- building ---------------------------------------------------------------------------------

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


class _Skip(Exception):
    """An item depends on one whose error is already recorded; reporting it again is noise."""


@dataclass
class _Builder:
    """One model build: the resource, the notes, and every problem found so far.

    Problems are collected rather than raised, so ``validate`` can list all of them at once: an
    item (a listener, a certificate…) that fails is recorded as broken, and items that refer to
    it are skipped silently instead of reporting a dangling reference.
    """

    gw: GatewayResourceLike
    notes: Notes = field(default_factory=Notes)
    warnings: list[str] = field(default_factory=list)
    problems: list[EmulatorError] = field(default_factory=list)
    broken: dict[str, set[str]] = field(default_factory=dict)
    #: ``--loose``: a feature that is not emulated becomes a warning line instead of an error.
    loose: bool = False
    #: Each SSL profile's ``sslPolicy`` JSON path, for the policy-family check.
    profile_policy_paths: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return self.gw.file

    def report(self, exc: EmulatorError, *, left_out: str | None = None) -> None:
        if self.loose and isinstance(exc, UnsupportedFeature):
            where = f"{exc.path}: " if exc.path else ""
            dropped = f"; {left_out} is left out" if left_out else ""
            self.warnings.append(f"not emulated (--loose): {where}{exc.message}{dropped}")
            return
        self.problems.append(exc.located(file=self.file))

    def retired(self, exc: TemplateError) -> None:
        """A setting the TLS 1.0/1.1 retirement removed: an error, or with ``--loose`` a
        warning (the setting then runs as it did before the retirement)."""
        if not self.loose:
            raise exc
        where = f"{exc.path}: " if exc.path else ""
        self.warnings.append(
            f"retired (--loose): {where}{exc.message}; it runs as before the retirement"
        )

    def report_all(self, errors: list[EmulatorError]) -> None:
        """Record several independent problems of one item, then skip the item."""
        for error in errors[:-1]:
            self.report(error)
        if errors:
            raise errors[-1]

    @contextmanager
    def item(self, collection: str, p: Props) -> Iterator[None]:
        """Build one item of ``collection``; record its error and mark it broken on failure."""
        try:
            yield
        except _Skip:
            self._mark_broken(collection, p)
        except EmulatorError as exc:
            name = p.get("name")
            self.report(exc, left_out=f"{collection} '{name}'")
            self._mark_broken(collection, p)

    @contextmanager
    def section(self) -> Iterator[None]:
        """A part of the build that is not one item (gateway-wide checks)."""
        try:
            yield
        except _Skip:
            pass
        except EmulatorError as exc:
            self.report(exc)

    def _mark_broken(self, collection: str, p: Props) -> None:
        name = p.get("name")
        if isinstance(name, str):
            self.broken.setdefault(collection.lower(), set()).add(name.lower())

    def ref_name_or_none(
        self, ref_id: str, collection: str, known: Mapping[str, Any], *, path: str
    ) -> str | None:
        """:meth:`ref_name`, but None for a reference to a broken item."""
        try:
            return self.ref_name(ref_id, collection, known, path=path)
        except _Skip:
            return None

    def ref_name(self, ref_id: str, collection: str, known: Mapping[str, Any], *, path: str) -> str:
        """Resolve a sub-resource id to the name of an item of ``collection``.

        Raises:
            _Skip: the item exists but failed to build (its error is already recorded).
            TemplateError: no such item.
        """
        got_collection, name = id_leaf(ref_id)
        match = _lookup(known, name)
        if (
            got_collection.lower() == collection.lower()
            and match is None
            and name.lower() in self.broken.get(collection.lower(), set())
        ):
            raise _Skip
        if got_collection.lower() != collection.lower() or match is None:
            names = ", ".join(sorted(known)) or "none"
            raise TemplateError(
                f"reference '{ref_id}' does not name an item of '{collection}' of this gateway "
                f"(existing: {names})",
                file=self.file,
                path=path,
                fix=f"point the id at one of the existing {collection}",
                code="InvalidResourceReference",
            )
        return match


def _lookup(known: Mapping[str, Any], name: str) -> str | None:
    """Names of sub-resources compare case-insensitively, like ARM ids."""
    for key in known:
        if key.lower() == name.lower():
            return key
    return None


def build_gateway_config(gw: GatewayResourceLike, *, loose: bool = False) -> GatewayConfig:
    """Check and resolve an evaluated gateway resource into a :class:`GatewayConfig`.

    ``loose`` (``--loose``) turns every "not emulated yet" problem into a warning; the item
    that carries it is left out, and the warning says which.

    Raises:
        TemplateError: the resource is invalid, references dangle, or it uses a feature not
            emulated yet (``UnsupportedFeature``).
        CertificateError: a PFX or trusted client CA upload that Azure would refuse.
    """
    b = _Builder(gw, loose=loose)
    res = Props(
        gw.resource, type_name="ApplicationGateway", path=gw.json_path, file=gw.file, sink=b.report
    )
    for meta in _RESOURCE_META:
        res.get(meta)
    props = res.child("properties", "ApplicationGatewayPropertiesFormat")
    if props is None:
        raise TemplateError(
            "the gateway resource has no 'properties'",
            file=gw.file,
            path=gw.json_path,
            fix="put the gateway's settings under 'properties'",
        )
    # `sku` sits inside properties for application gateways; tolerate it at the top level too.
    sku = props.child("sku", "ApplicationGatewaySku") or res.child("sku", "ApplicationGatewaySku")
    sku_name = ""
    if sku is not None:
        sku_name = sku.str_("name") or ""
        sku.get("tier")
        sku.get("capacity")
        sku.finish(ignored=("family",), notes=b.notes)
    with b.section():
        res.finish(ignored=_RESOURCE_IGNORED, unsupported=_RESOURCE_UNSUPPORTED, notes=b.notes)

    default_policy = PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
    problems_before = len(b.problems)
    with b.section():
        default_policy = _gateway_policy(b, props)
    # A refused gateway policy leaves the stand-in default: comparing families with it would
    # report a second, invented problem.
    gateway_policy_ok = len(b.problems) == problems_before
    certs = _ssl_certificates(b, props)
    trusted = _trusted_client_certs(b, props)
    profiles = _ssl_profiles(b, props, trusted)
    if gateway_policy_ok:
        _check_policy_families(b, default_policy, profiles)
    ports = _frontend_ports(b, props)
    listeners = _listeners(b, props, ports, certs, profiles, default_policy)
    pools = _pools(b, props)
    roots = _trusted_root_certs(b, props)
    probes = _probes(b, props)
    settings = _settings(b, props, roots, probes)
    rewrites = _rewrite_sets(b, props)
    redirects = _redirects(b, props, listeners)
    path_maps = _url_path_maps(b, props, pools, settings, rewrites, redirects)
    rules = _rules(b, props, listeners, pools, settings, rewrites, redirects, path_maps)
    enable_http2 = False
    with b.section():
        enable_http2 = props.bool_("enableHttp2", False)
    buffering = Buffering()
    with b.section():
        buffering = _buffering(b, props, sku_name)
    with b.section():
        props.finish(
            ignored=_PROPERTIES_IGNORED, unsupported=_PROPERTIES_UNSUPPORTED, notes=b.notes
        )

    if profiles and sku_name and sku_name.lower() not in V2_SKUS:
        b.report(
            TemplateError(
                f"SSL profiles need a v2 SKU; this gateway's SKU is '{sku_name}'",
                file=gw.file,
                path=props.key_path("sku"),
                fix="use Standard_v2 or WAF_v2",
                code="EmulatorSslProfileNeedsV2Sku",
            )
        )
    _check_gateway_limits(b, props, listeners, profiles, trusted)
    _check_rule_order(b, rules)
    _warn_unforwarded_passthrough(b, rules)
    if b.problems:
        if len(b.problems) == 1:
            raise b.problems[0]
        raise InvalidConfiguration(b.problems)
    routed = {r.listener.name for r in rules}
    for listener in listeners.values():
        if listener.name not in routed:
            b.warnings.append(f"listener '{listener.name}' has no routing rule; it is not started")
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
        notes=tuple(b.notes.items),
        warnings=tuple(b.warnings),
        all_listeners=tuple(listeners.values()),
    )


#: ``globalConfiguration`` exists from this API version on (proxy-buffers: "API version
#: 2020-01-01 or later"); an older template cannot carry it.
GLOBAL_CONFIGURATION_MIN_API: Final = "2020-01-01"
#: The SKUs with a web application firewall, which needs the whole request body to inspect it.
WAF_SKUS: Final = frozenset({"waf_v2", "waf_medium", "waf_large"})


def _buffering(b: _Builder, props: Props, sku_name: str) -> Buffering:
    """``globalConfiguration``: the two buffering switches, every other key reported."""
    config = props.child("globalConfiguration", "ApplicationGatewayGlobalConfiguration")
    if config is None:
        return Buffering()
    if b.gw.api_version < GLOBAL_CONFIGURATION_MIN_API:
        raise props.error(
            "globalConfiguration",
            f"needs API version {GLOBAL_CONFIGURATION_MIN_API} or later; this gateway uses "
            f"{b.gw.api_version}",
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


def _named(p: Props) -> str:
    name = p.str_("name", required=True)
    assert name is not None
    p.get("id")
    p.get("etag")
    p.get("type")
    return name


def _unique(b: _Builder, items: dict[str, Any], name: str, p: Props, what: str) -> None:
    if _lookup(items, name) is not None:
        raise TemplateError(
            f"two {what} are named '{name}'",
            file=b.file,
            path=p.path,
            fix="give each a unique name",
            code="InvalidTemplate",
        )


def _policy_from(b: _Builder, p: Props | None) -> SslPolicy | None:
    if p is None:
        return None
    policy_type = (p.str_("policyType") or "").lower()
    policy_name = p.str_("policyName")
    min_version = p.str_("minProtocolVersion")
    suites = p.list_("cipherSuites")
    disabled = p.list_("disabledSslProtocols")
    p.finish()
    if policy_type == "predefined" or (not policy_type and policy_name):
        match = _lookup(PREDEFINED_POLICIES, policy_name or "")
        if match is None:
            raise TemplateError(
                f"unknown predefined SSL policy '{policy_name}'",
                file=b.file,
                path=p.key_path("policyName"),
                fix="use one of " + ", ".join(PREDEFINED_POLICIES),
                code="EmulatorSslPolicyNameInvalid",
            )
        if match in RETIRED_POLICIES:
            b.retired(
                TemplateError(
                    f"The TLS policy {match} uses a deprecated TLS version (TLS 1.0/1.1): it "
                    "can no longer be associated with an Application Gateway since the "
                    f"retirement of 31 August 2025 ({RETIREMENT_URL})",
                    file=b.file,
                    path=p.key_path("policyName"),
                    fix="use AppGwSslPolicy20220101 or AppGwSslPolicy20220101S (or "
                    "AppGwSslPolicy20170401S when its cipher suites are needed)",
                    code=DEPRECATED_TLS_CODE,
                )
            )
        return PREDEFINED_POLICIES[match]
    if policy_type in ("custom", "customv2"):
        wanted = (min_version or TlsVersion.TLSV1_2.value).lower()
        version = next((v for v in TlsVersion if v.value.lower() == wanted), None)
        if version is None:
            raise p.error(
                "minProtocolVersion",
                f"is '{min_version}'",
                fix="use TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3",
            )
        if version is TlsVersion.TLSV1_3 and policy_type == "custom":
            # TLS 1.3 exists only in the CustomV2 policy type (TLS policy overview); a Custom
            # policy caps at TLS 1.2, so this minimum would leave no protocol to negotiate.
            raise p.error(
                "minProtocolVersion",
                "is 'TLSv1_3', which only a 'CustomV2' policy supports",
                fix="set 'policyType' to 'CustomV2', or lower 'minProtocolVersion' to TLSv1_2",
            )
        names = tuple(str(s) for s in suites)
        if policy_type == "custom":
            names = _retire_custom(b, p, version, names)
        return SslPolicy(
            name=f"Custom({version.value})",
            min_version=version,
            cipher_suites=names,
            tls13=policy_type == "customv2",
        )
    if not policy_type and disabled:
        raise UnsupportedFeature(
            "'disabledSslProtocols' without a policy type is not emulated yet",
            file=b.file,
            path=p.path,
            fix="use a Predefined or Custom policy",
        )
    raise p.error("policyType", f"is '{policy_type}'", fix="use Predefined, Custom or CustomV2")


def _retire_custom(
    b: _Builder, p: Props, version: TlsVersion, suites: tuple[str, ...]
) -> tuple[str, ...]:
    """A Custom (not CustomV2) policy after the TLS 1.0/1.1 retirement: TLS 1.2 only, and
    without the twelve suites the retirement page lists."""
    if version in (TlsVersion.TLSV1_0, TlsVersion.TLSV1_1):
        b.retired(
            TemplateError(
                f"The Custom TLS policy's minProtocolVersion {version.value} is a deprecated "
                "TLS version: Custom policies support only TLS 1.2 since the retirement of 31 "
                f"August 2025 ({RETIREMENT_URL})",
                file=b.file,
                path=p.key_path("minProtocolVersion"),
                fix="set 'minProtocolVersion' to TLSv1_2 (or use a CustomV2 policy)",
                code=DEPRECATED_TLS_CODE,
            )
        )
        if b.loose:
            return suites
    # Differs from Azure, perhaps: the retirement page says these suites "won't be supported"
    # without saying whether a deployment naming them fails; we drop them with a warning and
    # refuse only a policy left with none.
    retired = [s for s in suites if s.upper() in RETIRED_CUSTOM_SUITES]
    if not retired:
        return suites
    kept = tuple(s for s in suites if s.upper() not in RETIRED_CUSTOM_SUITES)
    if not kept:
        raise TemplateError(
            "every cipher suite of the Custom TLS policy was retired on 31 August 2025 "
            f"({', '.join(retired)}), so it has none left ({RETIREMENT_URL})",
            file=b.file,
            path=p.key_path("cipherSuites"),
            fix="add TLS 1.2 suites that remain, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 "
            "and TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, or use a CustomV2 policy",
            code=DEPRECATED_TLS_CODE,
        )
    b.warnings.append(
        f"{p.key_path('cipherSuites')}: {', '.join(retired)} left out: Custom policies lost "
        f"these suites in the TLS 1.0/1.1 retirement of 31 August 2025 ({RETIREMENT_URL})"
    )
    return kept


def _gateway_policy(b: _Builder, props: Props) -> SslPolicy:
    policy = _policy_from(b, props.child("sslPolicy", "ApplicationGatewaySslPolicy"))
    if policy is not None:
        return policy
    if b.gw.api_version >= NEW_DEFAULT_FROM_API:
        return PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
    b.warnings.append(
        f"no sslPolicy and API version {b.gw.api_version} (before {NEW_DEFAULT_FROM_API}): "
        f"the documented default {DOCUMENTED_LEGACY_DEFAULT} was retired on 31 August 2025; "
        f"the emulator applies {LEGACY_DEFAULT_POLICY_NAME} (TLS 1.2, the same older policy "
        "family); set sslPolicy to say which policy you mean"
    )
    return PREDEFINED_POLICIES[LEGACY_DEFAULT_POLICY_NAME]


def _check_policy_families(
    b: _Builder, gateway: SslPolicy, profiles: Mapping[str, SslProfile]
) -> None:
    """Old and new policy families cannot co-exist on one gateway, SSL profiles included (TLS
    policy overview). Azure's code and message: seen in deployment errors, e.g.
    Azure/terraform-azurerm-avm-res-network-applicationgateway#173 and
    aztfmod/terraform-azurerm-caf#1711."""
    for name, profile in profiles.items():
        policy = profile.ssl_policy
        if policy is None or policy.newer_family == gateway.newer_family:
            continue
        b.report(
            TemplateError(
                "The newer and older SSL policies can't be used together for SSLPolicy and "
                f"listener-specific SSLProfile. Your configuration's sslProfile {name} "
                f"({_family(policy)}) conflicts with the global sslPolicy {gateway.name} "
                f"({_family(gateway)})",
                file=b.file,
                path=b.profile_policy_paths.get(name),
                fix="use the 2022 predefined policies or CustomV2 everywhere (the gateway's "
                "sslPolicy and every profile's), or the older ones everywhere",
                code="ApplicationGatewaySslPolicyMisMatch",
            )
        )


def _family(policy: SslPolicy) -> str:
    return "newer family" if policy.newer_family else "older family"


def _ssl_certificates(b: _Builder, props: Props) -> dict[str, ServerCertificate]:
    out: dict[str, ServerCertificate] = {}
    for p in props.children("sslCertificates", "ApplicationGatewaySslCertificate"):
        with b.item("sslCertificates", p):
            name = _named(p)
            _unique(b, out, name, p, "sslCertificates")
            inner = p.child("properties", "ApplicationGatewaySslCertificatePropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError("sslCertificate has no 'properties'", file=b.file, path=p.path)
            if inner.get("keyVaultSecretId"):
                raise UnsupportedFeature(
                    "keyVaultSecretId cannot be read offline",
                    file=b.file,
                    path=inner.key_path("keyVaultSecretId"),
                    fix=f"pass the certificate's file: --certificate {name}=cert.pfx with "
                    f"--certificate-password {name}=PASSWORD, or run with --loose for a "
                    "development certificate (or put its base64 in 'data' and 'password')",
                )
            data = inner.str_("data")
            password = inner.str_("password")
            inner.get("publicCertData")
            inner.finish()
            if not data:
                raise TemplateError(
                    f"sslCertificate '{name}' has no 'data'",
                    file=b.file,
                    path=inner.path,
                    fix="set 'data' to the base64 of the server certificate's .pfx and 'password' "
                    "to its password (`az ... show` and the portal never print the PFX, only "
                    "publicCertData: add them to an exported gateway before running it)",
                    code="EmulatorSslCertificateWithoutData",
                )
            cert_id = f"{b.gw.resource_id}/sslCertificates/{name}"
            try:
                raw = decode_base64_field(data, what=f"sslCertificate '{name}' data")
                out[name] = load_server_pfx(name, raw, password, cert_id=cert_id)
            except CertificateError as exc:
                raise exc.located(file=b.file, path=inner.key_path("data")) from None
    return out


def _trusted_client_certs(b: _Builder, props: Props) -> dict[str, TrustedClientCa]:
    out: dict[str, TrustedClientCa] = {}
    for p in props.children(
        "trustedClientCertificates", "ApplicationGatewayTrustedClientCertificate"
    ):
        with b.item("trustedClientCertificates", p):
            name = _named(p)
            _unique(b, out, name, p, "trustedClientCertificates")
            inner = p.child(
                "properties", "ApplicationGatewayTrustedClientCertificatePropertiesFormat"
            )
            p.finish()
            data = inner.str_("data") if inner is not None else None
            if inner is not None:
                inner.finish(ignored=("validatedCertData", "clientCertIssuerDN"))
            try:
                raw, as_text = decode_upload_field(
                    data or "", what=f"trustedClientCertificate '{name}' data"
                )
                out[name] = load_trusted_client_ca(name, raw)
                if as_text:
                    b.warnings.append(_pem_text_warning("trustedClientCertificates", name))
            except CertificateError as exc:
                raise exc.located(file=b.file, path=f"{p.path}.properties.data") from None
    return out


def _ssl_profiles(
    b: _Builder, props: Props, trusted: dict[str, TrustedClientCa]
) -> dict[str, SslProfile]:
    out: dict[str, SslProfile] = {}
    for p in props.children("sslProfiles", "ApplicationGatewaySslProfile"):
        with b.item("sslProfiles", p):
            name = _named(p)
            _unique(b, out, name, p, "sslProfiles")
            inner = p.child("properties", "ApplicationGatewaySslProfilePropertiesFormat")
            p.finish()
            if inner is None:
                out[name] = SslProfile(name, None, False, RevocationMode.NONE, (), None)
                continue
            # A broken upload (already reported) is left out so the profile's own settings are
            # still checked; the profile cannot run anyway while the build has problems.
            cas_list: list[TrustedClientCa] = []
            for ref, ref_path in inner.refs("trustedClientCertificates"):
                ca_name = b.ref_name_or_none(
                    ref, "trustedClientCertificates", trusted, path=ref_path
                )
                if ca_name is not None:
                    cas_list.append(trusted[ca_name])
            cas = tuple(cas_list)
            policy_props = inner.child("sslPolicy", "ApplicationGatewaySslPolicy")
            if policy_props is not None:
                b.profile_policy_paths[name] = policy_props.path
            policy = _policy_from(b, policy_props)
            cac = inner.child(
                "clientAuthConfiguration", "ApplicationGatewayClientAuthConfiguration"
            )
            inner.get("httpListeners")  # read-only back-references in `az ... show` output
            inner.finish()
            mode_text, issuer_dn, revocation_text = "Strict", False, "None"
            if cac is not None:
                mode_text = cac.str_("verifyClientAuthMode") or "Strict"
                issuer_dn = cac.bool_("verifyClientCertIssuerDN", False)
                revocation_text = cac.str_("verifyClientRevocation") or "None"
                cac.finish()
            # Both enums are checked before either error is raised: two mistakes, two errors.
            enum_errors: list[EmulatorError] = []
            mode, revocation = ClientAuthMode.STRICT, RevocationMode.NONE
            try:
                mode = _enum(b, ClientAuthMode, mode_text, cac, "verifyClientAuthMode")
            except EmulatorError as exc:
                enum_errors.append(exc)
            try:
                revocation = _enum(
                    b, RevocationMode, revocation_text, cac, "verifyClientRevocation"
                )
            except EmulatorError as exc:
                enum_errors.append(exc)
            b.report_all(enum_errors)
            _warn_profile(b, name, mode=mode, cas=cas, policy=policy, cac=cac)
            if mode is ClientAuthMode.PASSTHROUGH and b.gw.api_version < PASSTHROUGH_MIN_API:
                assert cac is not None
                raise TemplateError(
                    "verifyClientAuthMode 'Passthrough' needs API version "
                    f"{PASSTHROUGH_MIN_API} or "
                    f"later; this gateway uses {b.gw.api_version}",
                    file=b.file,
                    path=cac.key_path("verifyClientAuthMode"),
                    fix=f'set the gateway\'s "apiVersion" to "{PASSTHROUGH_MIN_API}"',
                    code="InvalidRequestContent",
                )
            client_auth: ClientAuthMode | None = mode
            if mode is ClientAuthMode.STRICT and not cas:
                client_auth = None
                b.warnings.append(
                    f"SSL profile '{name}': Strict without trustedClientCertificates requests "
                    "no client certificate, so clients are not authenticated at all; upload the "
                    "CA chain that issued the clients' certificates"
                )
                if issuer_dn or revocation is RevocationMode.OCSP:
                    b.warnings.append(
                        f"SSL profile '{name}': issuer-DN / OCSP settings have no effect without "
                        "trusted client certificates (the profile requests no client certificate)"
                    )
            # Issuer-DN and OCSP checks are emulated for Strict (emulator.core.chain); the
            # per-upload clientCertIssuerDN is computed there (emulator.core.issuer_dn), since
            # the model may not import core. Passthrough verifies nothing, so they do nothing.
            if client_auth is ClientAuthMode.PASSTHROUGH and (
                issuer_dn or revocation is RevocationMode.OCSP
            ):
                b.warnings.append(
                    f"SSL profile '{name}': issuer-DN / OCSP settings have no effect in "
                    "Passthrough mode (the gateway verifies nothing; the backend decides)"
                )
            out[name] = SslProfile(name, client_auth, issuer_dn, revocation, cas, policy)
    return out


def _warn_profile(
    b: _Builder,
    name: str,
    *,
    mode: ClientAuthMode,
    cas: tuple[TrustedClientCa, ...],
    policy: SslPolicy | None,
    cac: Props | None,
) -> None:
    """Warnings for SSL profiles that run but do not do what their author likely meant."""
    if mode is ClientAuthMode.PASSTHROUGH and cas:
        b.warnings.append(
            f"SSL profile '{name}': Passthrough with trustedClientCertificates verifies "
            "nothing; the uploaded CAs are not used (the backend must verify the certificate)"
        )
    if mode is ClientAuthMode.PASSTHROUGH and not cas and policy is None:
        # Azure accepts this once, then refuses later updates of the gateway.
        b.warnings.append(
            f"SSL profile '{name}': a Passthrough profile with neither sslPolicy nor "
            "trustedClientCertificates; Azure refuses later updates of the gateway with "
            f'"SslProfile {name} must specify either SslPolicy or TrustedClientCertificates": '
            "add an sslPolicy to the profile"
        )
    exported = b.gw.json_path == "$"
    if exported and not cas and (cac is None or not cac.has("verifyClientAuthMode")):
        b.warnings.append(
            f"SSL profile '{name}': read from `az ... show` / portal JSON without trusted "
            "client certificates or verifyClientAuthMode; older Azure CLI and PowerShell "
            "versions drop the Passthrough setting, so this runs as a profile without client "
            'authentication: add "verifyClientAuthMode": "Passthrough" if that is the intent'
        )


def _enum(b: _Builder, kind: type[_E], text: str, p: Props | None, field_name: str) -> _E:
    for member in kind:
        if str(member.value).lower() == text.lower():
            return member
    allowed = ", ".join(str(m.value) for m in kind)
    close = difflib.get_close_matches(
        text.lower(), [str(m.value).lower() for m in kind], n=1, cutoff=0.5
    )
    hint = next(
        (
            f" (did you mean '{m.value}'?)"
            for m in kind
            if close and str(m.value).lower() == close[0]
        ),
        "",
    )
    raise TemplateError(
        f"'{field_name}' is '{text}'{hint}",
        file=b.file,
        path=p.key_path(field_name) if p is not None else None,
        fix=f"use one of: {allowed}",
        code="InvalidRequestContent",
    )


def _frontend_ports(b: _Builder, props: Props) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in props.children("frontendPorts", "ApplicationGatewayFrontendPort"):
        with b.item("frontendPorts", p):
            name = _named(p)
            _unique(b, out, name, p, "frontendPorts")
            inner = p.child("properties", "ApplicationGatewayFrontendPortPropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"frontend port '{name}' has no 'properties'", file=b.file, path=p.path
                )
            port = inner.int_("port")
            inner.finish()
            if port is None or not 1 <= port <= 65535:
                raise inner.error(
                    "port",
                    f"is {port}; a frontend port is 1-65535",
                    fix="use a port from 1 to 65535 (`run --listen PORT=LOCAL` maps it to a local "
                    "port)",
                    code="EmulatorFrontendPortOutOfRange",
                )
            out[name] = port
    return out


_HOST_NAME: Final = re.compile(
    r"^[A-Za-z0-9*?]([A-Za-z0-9*?\-]{0,61}[A-Za-z0-9*?])?(\.[A-Za-z0-9*?]([A-Za-z0-9*?\-]{0,61}[A-Za-z0-9*?])?)*$"
)


def _listeners(
    b: _Builder,
    props: Props,
    ports: dict[str, int],
    certs: dict[str, ServerCertificate],
    profiles: dict[str, SslProfile],
    default_policy: SslPolicy,
) -> dict[str, Listener]:
    out: dict[str, Listener] = {}
    for p in props.children("httpListeners", "ApplicationGatewayHttpListener"):
        with b.item("httpListeners", p):
            name = _named(p)
            _unique(b, out, name, p, "httpListeners")
            inner = p.child("properties", "ApplicationGatewayHttpListenerPropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"listener '{name}' has no 'properties'", file=b.file, path=p.path
                )
            inner.ref("frontendIPConfiguration")
            port_ref = inner.ref("frontendPort")
            if port_ref is None:
                raise inner.error(
                    "frontendPort", "is missing", fix="reference one of frontendPorts"
                )
            # Each reference is checked even when an earlier one failed: two independent
            # mistakes are two errors in one run. A broken port only skips this listener.
            ref_errors: list[EmulatorError] = []
            port_name = None
            try:
                port_name = b.ref_name_or_none(
                    port_ref, "frontendPorts", ports, path=inner.key_path("frontendPort")
                )
            except EmulatorError as exc:
                ref_errors.append(exc)
            protocol = _enum(
                b, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            single_host = inner.str_("hostName")
            host_names = [single_host] if single_host else []
            host_names += [str(h) for h in inner.list_("hostNames")]
            for host in host_names:
                if not host or not _HOST_NAME.match(host):
                    ref_errors.append(
                        inner.error(
                            "hostNames",
                            f"has an invalid host name '{host}'",
                            fix="use DNS names of letters, digits, hyphens and dots; '*' and '?' "
                            "are the only wildcards",
                            code="EmulatorHostNameInvalid",
                        )
                    )
                    break
            if len(host_names) > MAX_HOST_NAMES_PER_LISTENER:
                raise inner.error(
                    "hostNames",
                    f"has {len(host_names)} host names; a multi-site listener takes at most "
                    f"{MAX_HOST_NAMES_PER_LISTENER}",
                    fix="split the host names over several listeners",
                    code="EmulatorTooManyHostNames",
                )
            cert_ref = inner.ref("sslCertificate")
            profile_ref = inner.ref("sslProfile")
            require_sni = inner.bool_("requireServerNameIndication", False)
            inner.get("customErrorConfigurations")
            inner.finish(unsupported={"firewallPolicy": "per-listener WAF policies"})
            cert = None
            profile = None
            if protocol is ListenerProtocol.HTTPS:
                if cert_ref is None:
                    raise TemplateError(
                        f"HTTPS listener '{name}' has no sslCertificate",
                        file=b.file,
                        path=inner.path,
                        fix="reference one of sslCertificates in 'sslCertificate'",
                        code="EmulatorHttpsListenerWithoutCertificate",
                    )
                skip = port_name is None and not ref_errors
                try:
                    cert_name = b.ref_name_or_none(
                        cert_ref, "sslCertificates", certs, path=inner.key_path("sslCertificate")
                    )
                    cert = certs[cert_name] if cert_name is not None else None
                    skip = skip or cert_name is None
                except EmulatorError as exc:
                    ref_errors.append(exc)
                if profile_ref is not None:
                    try:
                        profile_name = b.ref_name_or_none(
                            profile_ref, "sslProfiles", profiles, path=inner.key_path("sslProfile")
                        )
                        profile = profiles[profile_name] if profile_name is not None else None
                        skip = skip or profile_name is None
                    except EmulatorError as exc:
                        ref_errors.append(exc)
                b.report_all(ref_errors)
                if skip:
                    raise _Skip
            elif cert_ref is not None or profile_ref is not None:
                raise TemplateError(
                    f"HTTP listener '{name}' references an SSL certificate or SSL profile",
                    file=b.file,
                    path=inner.path,
                    fix="set 'protocol' to 'Https' or remove the sslCertificate / sslProfile",
                    code="EmulatorSslProfileOnHttpListener",
                )
            b.report_all(ref_errors)
            if port_name is None:
                raise _Skip
            policy = (
                profile.ssl_policy if profile and profile.ssl_policy else None
            ) or default_policy
            out[name] = Listener(
                name=name,
                protocol=protocol,
                frontend_port=ports[port_name],
                frontend_port_name=port_name,
                host_names=tuple(host_names),
                server_certificate=cert,
                ssl_profile=profile,
                ssl_policy=policy,
                require_sni=require_sni,
                path=p.path,
            )
    return out


def _pools(b: _Builder, props: Props) -> dict[str, BackendPool]:
    out: dict[str, BackendPool] = {}
    for p in props.children("backendAddressPools", "ApplicationGatewayBackendAddressPool"):
        with b.item("backendAddressPools", p):
            name = _named(p)
            _unique(b, out, name, p, "backendAddressPools")
            inner = p.child("properties", "ApplicationGatewayBackendAddressPoolPropertiesFormat")
            p.finish()
            addresses: list[BackendAddress] = []
            if inner is not None:
                for a in inner.children("backendAddresses", "ApplicationGatewayBackendAddress"):
                    host = a.str_("fqdn") or a.str_("ipAddress")
                    a.finish()
                    if not host:
                        raise TemplateError(
                            "a backend address needs 'fqdn' or 'ipAddress'",
                            file=b.file,
                            path=a.path,
                        )
                    addresses.append(BackendAddress(host))
                inner.finish(ignored=("backendIPConfigurations",))
            out[name] = BackendPool(name, tuple(addresses))
    return out


def _trusted_root_certs(b: _Builder, props: Props) -> dict[str, tuple[x509.Certificate, ...]]:
    """``trustedRootCertificates[]``: CA certificates that HTTPS backends' chains end in."""
    out: dict[str, tuple[x509.Certificate, ...]] = {}
    for p in props.children("trustedRootCertificates", "ApplicationGatewayTrustedRootCertificate"):
        with b.item("trustedRootCertificates", p):
            name = _named(p)
            _unique(b, out, name, p, "trustedRootCertificates")
            inner = p.child(
                "properties", "ApplicationGatewayTrustedRootCertificatePropertiesFormat"
            )
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"trusted root certificate '{name}' has no 'properties'",
                    file=b.file,
                    path=p.path,
                )
            if inner.get("keyVaultSecretId"):
                raise UnsupportedFeature(
                    "keyVaultSecretId cannot be read offline",
                    file=b.file,
                    path=inner.key_path("keyVaultSecretId"),
                    fix=f"pass the root certificate: --certificate {name}=root.cer (--loose "
                    "cannot stand in for a trusted root), or put its base64 in 'data'",
                )
            data = inner.str_("data") or ""
            inner.finish()
            try:
                raw, as_text = decode_upload_field(
                    data, what=f"trustedRootCertificate '{name}' data"
                )
            except CertificateError as exc:
                raise exc.located(file=b.file, path=inner.key_path("data")) from None
            certs = _load_certificates(raw)
            if as_text and certs:
                b.warnings.append(_pem_text_warning("trustedRootCertificates", name))
            if not certs:
                raise inner.error(
                    "data",
                    "holds no certificate",
                    fix="set 'data' to the base64 of the backend's root CA certificate (.cer)",
                    code="EmulatorTrustedRootCertificateInvalidData",
                )
            out[name] = certs
    return out


def _pem_text_warning(collection: str, name: str) -> str:
    return (
        f"{collection} '{name}': 'data' holds PEM text (Bicep loadTextContent), not base64; "
        "accepted here, but Azure documents base64: use loadFileAsBase64('ca.cer') instead"
    )


def _load_certificates(raw: bytes) -> tuple[x509.Certificate, ...]:
    """PEM blocks, or one DER certificate (a .cer file is either). Empty when neither."""
    if b"-----BEGIN CERTIFICATE-----" in raw:
        try:
            return tuple(x509.load_pem_x509_certificates(raw))
        except ValueError:
            return ()
    try:
        return (x509.load_der_x509_certificate(raw),)
    except ValueError:
        return ()


#: Probe defaults (ApplicationGatewayProbePropertiesFormat; probe overview): healthy is
#: 200-399, interval and timeout 30 s, three failures make a backend unhealthy.
DEFAULT_PROBE_STATUS: Final = ((200, 399),)
DEFAULT_PROBE_INTERVAL_S: Final = 30
DEFAULT_PROBE_TIMEOUT_S: Final = 30
DEFAULT_PROBE_UNHEALTHY_THRESHOLD: Final = 3
_STATUS_RANGE: Final = re.compile(r"^(\d{3})(?:-(\d{3}))?$")


def _probes(b: _Builder, props: Props) -> dict[str, Probe]:
    out: dict[str, Probe] = {}
    for p in props.children("probes", "ApplicationGatewayProbe"):
        with b.item("probes", p):
            name = _named(p)
            _unique(b, out, name, p, "probes")
            inner = p.child("properties", "ApplicationGatewayProbePropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(f"probe '{name}' has no 'properties'", file=b.file, path=p.path)
            protocol = _enum(
                b, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            host = inner.str_("host") or None
            path = inner.str_("path") or "/"
            interval = inner.int_("interval", DEFAULT_PROBE_INTERVAL_S)
            timeout = inner.int_("timeout", DEFAULT_PROBE_TIMEOUT_S)
            threshold = inner.int_("unhealthyThreshold", DEFAULT_PROBE_UNHEALTHY_THRESHOLD)
            pick = inner.bool_("pickHostNameFromBackendHttpSettings", False)
            port = inner.int_("port")
            match = inner.child("match", "ApplicationGatewayProbeHealthResponseMatch")
            ranges: list[tuple[int, int]] = []
            body: str | None = None
            if match is not None:
                body = match.str_("body") or None
                for text in match.list_("statusCodes"):
                    found = _STATUS_RANGE.match(str(text).strip())
                    if found is None:
                        raise match.error(
                            "statusCodes",
                            f"has '{text}'; use a status or a range such as 200-399",
                            fix="write each entry as NNN or NNN-NNN",
                        )
                    low = int(found.group(1))
                    ranges.append((low, int(found.group(2) or low)))
                match.finish()
            inner.finish(
                ignored=("minServers", "pickHostNameFromBackendSettings", "backendHttpSettings"),
                unsupported={"enableProbeProxyProtocolHeader": "PROXY protocol probes"},
                notes=b.notes,
            )
            if not path.startswith("/"):
                raise inner.error("path", f"is '{path}'; it must start with '/'", fix="use /path")
            for key, value in (("interval", interval), ("timeout", timeout)):
                if value is None or not 1 <= value <= 86400:
                    raise inner.error(key, f"is {value}; it must be 1-86400 seconds")
            if threshold is None or not 1 <= threshold <= 20:
                raise inner.error("unhealthyThreshold", f"is {threshold}; it must be 1-20")
            if host and pick:
                raise inner.error(
                    "host",
                    "is set together with pickHostNameFromBackendHttpSettings",
                    fix="use one of the two",
                    code="EmulatorProbeHostConflict",
                )
            if port is not None and not 1 <= port <= 65535:
                raise inner.error("port", f"is {port}; it must be 1-65535")
            assert interval is not None
            assert timeout is not None
            out[name] = Probe(
                name=name,
                protocol=protocol,
                host=host,
                path=path,
                interval_s=interval,
                timeout_s=timeout,
                unhealthy_threshold=threshold,
                pick_host_from_settings=pick,
                port=port,
                status_ranges=tuple(ranges) or DEFAULT_PROBE_STATUS,
                body=body,
            )
    return out


def _settings(
    b: _Builder,
    props: Props,
    roots: dict[str, tuple[x509.Certificate, ...]],
    probes: dict[str, Probe],
) -> dict[str, BackendSettings]:
    out: dict[str, BackendSettings] = {}
    for p in props.children(
        "backendHttpSettingsCollection", "ApplicationGatewayBackendHttpSettings"
    ):
        with b.item("backendHttpSettingsCollection", p):
            name = _named(p)
            _unique(b, out, name, p, "backendHttpSettingsCollection")
            inner = p.child("properties", "ApplicationGatewayBackendHttpSettingsPropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"backend settings '{name}' have no 'properties'", file=b.file, path=p.path
                )
            port = inner.int_("port")
            protocol = _enum(
                b, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            timeout = inner.int_("requestTimeout", DEFAULT_REQUEST_TIMEOUT_S)
            host_name = inner.str_("hostName")
            pick = inner.bool_("pickHostNameFromBackendAddress", False)
            affinity = (inner.str_("cookieBasedAffinity") or "Disabled").lower()
            cookie_name = inner.str_("affinityCookieName") or DEFAULT_AFFINITY_COOKIE
            path = inner.str_("path") or None
            sni_name = inner.str_("sniName") or None
            validate_chain = inner.bool_("validateCertChainAndExpiry", True)
            validate_sni = inner.bool_("validateSNI", True)
            draining = inner.child("connectionDraining", "ApplicationGatewayConnectionDraining")
            if draining is not None:
                draining.get("enabled")
                draining.get("drainTimeoutInSec")
                draining.finish()
                b.notes.add(draining.path)
            probe_ref = inner.ref("probe")
            root_refs = inner.refs("trustedRootCertificates")
            inner.finish(
                ignored=("probeEnabled", "authenticationCertificates"),
                unsupported={"dedicatedBackendConnection": "dedicated backend connections"},
                notes=b.notes,
            )
            if port is None or not 1 <= port <= 65535:
                raise inner.error(
                    "port", f"is {port}; it must be 1-65535", fix="use the backend's port, 1-65535"
                )
            if affinity not in ("enabled", "disabled"):
                raise inner.error(
                    "cookieBasedAffinity",
                    f"is '{inner.str_('cookieBasedAffinity')}'",
                    fix="use Enabled or Disabled",
                    code="InvalidRequestContent",
                )
            if path is not None and not path.startswith("/"):
                raise inner.error(
                    "path",
                    f"is '{path}'; an override path starts with '/'",
                    fix="write it as /prefix/",
                    code="EmulatorBackendPathInvalid",
                )
            assert timeout is not None
            if not 1 <= timeout <= 86400:
                raise inner.error(
                    "requestTimeout",
                    f"is {timeout}; it must be 1-86400 seconds",
                    fix="use a number of seconds from 1 to 86400 (default "
                    f"{DEFAULT_REQUEST_TIMEOUT_S})",
                )
            trusted: list[x509.Certificate] = []
            for ref, ref_path in root_refs:
                root_name = b.ref_name(ref, "trustedRootCertificates", roots, path=ref_path)
                trusted += roots[root_name]
            if trusted and protocol is not ListenerProtocol.HTTPS:
                b.warnings.append(
                    f"backend settings '{name}': trustedRootCertificates have no effect with "
                    "protocol Http"
                )
            probe = None
            if probe_ref is not None:
                probe_name = b.ref_name(probe_ref, "probes", probes, path=inner.key_path("probe"))
                probe = probes[probe_name]
                if pick and probe.host is None and not probe.pick_host_from_settings:
                    # Azure refuses this pairing: the probe would send 127.0.0.1 as Host to a
                    # backend that needs its own name (application-gateway-probe-overview).
                    b.warnings.append(
                        f"backend settings '{name}' pick the host name from the backend address, "
                        f"but probe '{probe.name}' neither sets 'host' nor picks it from the "
                        "settings; Azure refuses that combination"
                    )
            out[name] = BackendSettings(
                name,
                port,
                protocol,
                timeout,
                host_name,
                pick,
                path=path,
                cookie_affinity=affinity == "enabled",
                affinity_cookie_name=cookie_name,
                trusted_roots=tuple(trusted),
                sni_name=sni_name,
                validate_cert_chain_and_expiry=validate_chain,
                validate_sni=validate_sni,
                probe=probe,
            )
    return out


def _rewrite_sets(b: _Builder, props: Props) -> dict[str, RewriteRuleSet]:
    out: dict[str, RewriteRuleSet] = {}
    for p in props.children("rewriteRuleSets", "ApplicationGatewayRewriteRuleSet"):
        with b.item("rewriteRuleSets", p):
            name = _named(p)
            _unique(b, out, name, p, "rewriteRuleSets")
            inner = p.child("properties", "ApplicationGatewayRewriteRuleSetPropertiesFormat")
            p.finish()
            rules: list[RewriteRule] = []
            if inner is not None:
                for r in inner.children("rewriteRules", "ApplicationGatewayRewriteRule"):
                    rules.append(_rewrite_rule(b, r))
                inner.finish()
            rules.sort(key=lambda rule: rule.sequence)  # stable: ties keep document order
            _check_rewrite_set_limits(b, p, name, rules)
            rerouting = [r.name for r in rules if r.url is not None and r.url.reroute]
            if rerouting:
                _reject_reroute(b, props, p, name, rerouting)
            out[name] = RewriteRuleSet(name, tuple(rules))
    if len(out) > MAX_REWRITE_RULE_SETS:
        b.report(
            TemplateError(
                f"{len(out)} rewrite rule sets; a gateway takes at most {MAX_REWRITE_RULE_SETS}",
                file=b.file,
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


def _check_rewrite_set_limits(b: _Builder, p: Props, name: str, rules: list[RewriteRule]) -> None:
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
                file=b.file,
                path=p.path,
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
                file=b.file,
                path=p.path,
                fix="split the rules over several rewrite rule sets, or fold conditions into "
                "one regular expression",
                code="EmulatorRewriteConditionsPerSetLimit",
            )
        )
    b.report_all(problems)


def _reject_reroute(b: _Builder, props: Props, p: Props, set_name: str, rules: list[str]) -> None:
    """``reroute`` re-evaluates a path map; Azure refuses it on a set that a Basic rule uses.

    Azure (rewrite-http-headers-url, "common pitfalls"): "Enabling 'Reevaluate path map' isn't
    allowed for basic request routing rules", to prevent an endless loop. On a path-based rule
    it is emulated (:mod:`emulator.core.routing`: re-evaluation, a loop ends with 500).

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
            file=b.file,
            path=p.path,
            fix="set 'reroute' to false, or use the set from a path-based rule's path map",
            code="EmulatorRerouteOnBasicRule",
        )


def _basic_rules_using(props: Props, set_name: str) -> list[str]:
    """Names of Basic routing rules whose ``rewriteRuleSet`` names ``set_name``.

    Read from the raw JSON without reporting anything: ``_rules`` validates the routing rules
    and reports their problems once.
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


def _unknown_variable(name: str, where: str, p: Props, key: str) -> TemplateError:
    return p.error(
        key,
        f"uses the server variable '{name}' in {where}, which Application Gateway does not have "
        f"(valid: {', '.join(SERVER_VARIABLE_NAMES)}, cookie_NAME; a condition's capture group "
        "as NAME_1, NAME_2 ...)",
        fix="use one of the listed server variables; spelling as in the Azure documentation",
        code="EmulatorUnknownServerVariable",
    )


def _check_template(template: str, p: Props, key: str) -> None:
    """Every ``{var_NAME}`` of a header value / URL template names a real server variable."""
    for match in PLACEHOLDER.finditer(template):
        if match.group(1) == "var" and not _valid_variable(match.group(2), allow_capture=True):
            raise _unknown_variable(match.group(2), f"'{template}'", p, key)


def _condition(c: Props) -> RewriteCondition:
    variable = c.str_("variable", required=True)
    pattern = c.str_("pattern", required=True)
    ignore_case = c.bool_("ignoreCase", True)
    negate = c.bool_("negate", False)
    c.finish()
    assert variable is not None
    assert pattern is not None
    variable = variable.strip("{}")
    lower = variable.lower()
    if lower.startswith("var_"):
        if not _valid_variable(variable[len("var_") :], allow_capture=False):
            raise _unknown_variable(variable[len("var_") :], "a condition", c, "variable")
    elif not (
        (lower.startswith("http_req_") and len(lower) > len("http_req_"))
        or (lower.startswith("http_resp_") and len(lower) > len("http_resp_"))
    ):
        raise c.error(
            "variable",
            f"is '{variable}'; a condition reads var_NAME (a server variable), http_req_NAME (a "
            "request header) or http_resp_NAME (a response header)",
            fix="prefix the name with var_, http_req_ or http_resp_",
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise c.error(
            "pattern",
            f"is not a valid regular expression ({exc})",
            fix="fix the regular expression, or escape its special characters to match text",
        ) from None
    return RewriteCondition(variable, pattern, ignore_case, negate)


def _header_action(h: Props, *, response: bool) -> HeaderAction:
    header = h.str_("headerName", required=True)
    value = h.str_("headerValue") or ""
    h.finish(unsupported={"headerValueMatcher": "header value matchers"})
    assert header is not None
    if header.lower() in ("connection", "upgrade"):
        raise h.error(
            "headerName",
            f"is '{header}', which App Gateway cannot rewrite",
            fix="remove this header action; hop-by-hop headers are the gateway's own",
            code="EmulatorHeaderNotRewritable",
        )
    allowed = _RESPONSE_HEADER_NAME if response else _REQUEST_HEADER_NAME
    if not allowed.fullmatch(header):
        raise h.error(
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
        raise h.error(
            "headerValue",
            "is empty, which would delete the Host header; Azure does not allow deleting Host",
            fix="set Host to a value instead (e.g. {var_host}), or remove this action",
            code="EmulatorHostHeaderCannotBeDeleted",
        )
    _check_template(value, h, "headerValue")
    return HeaderAction(header, value)


def _url_action(u: Props) -> UrlAction | None:
    path = u.str_("modifiedPath")
    query = u.str_("modifiedQueryString")
    reroute = u.bool_("reroute", False)
    u.finish()
    # Null (absent) leaves that part as sent (REST reference); an empty string is treated the
    # same, which is how the portal stores an untouched field.
    path = path or None
    query = query if query is not None and query != "" else None
    for key, template in (("modifiedPath", path), ("modifiedQueryString", query)):
        if template is not None:
            _check_template(template, u, key)
    if path is None and query is None and not reroute:
        return None
    return UrlAction(path, query, reroute)


def _rewrite_rule(b: _Builder, r: Props) -> RewriteRule:
    name = r.str_("name") or ""
    sequence = r.int_("ruleSequence", 100)
    conditions = [
        _condition(c) for c in r.children("conditions", "ApplicationGatewayRewriteRuleCondition")
    ]
    actions = r.child("actionSet", "ApplicationGatewayRewriteRuleActionSet")
    request: list[HeaderAction] = []
    response: list[HeaderAction] = []
    url: UrlAction | None = None
    if actions is not None:
        for h in actions.children(
            "requestHeaderConfigurations", "ApplicationGatewayHeaderConfiguration"
        ):
            request.append(_header_action(h, response=False))
        for h in actions.children(
            "responseHeaderConfigurations", "ApplicationGatewayHeaderConfiguration"
        ):
            response.append(_header_action(h, response=True))
        u = actions.child("urlConfiguration", "ApplicationGatewayUrlConfiguration")
        if u is not None:
            url = _url_action(u)
        actions.finish()
    r.finish()
    assert sequence is not None
    return RewriteRule(name, sequence, tuple(conditions), tuple(request), tuple(response), url)


def _redirects(
    b: _Builder, props: Props, listeners: dict[str, Listener]
) -> dict[str, RedirectConfig]:
    out: dict[str, RedirectConfig] = {}
    for p in props.children("redirectConfigurations", "ApplicationGatewayRedirectConfiguration"):
        with b.item("redirectConfigurations", p):
            name = _named(p)
            _unique(b, out, name, p, "redirectConfigurations")
            inner = p.child("properties", "ApplicationGatewayRedirectConfigurationPropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"redirect configuration '{name}' has no 'properties'",
                    file=b.file,
                    path=p.path,
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
            redirect_type = _enum(b, RedirectType, type_text, inner, "redirectType")
            if (target_ref is None) == (target_url is None):
                raise TemplateError(
                    f"redirect configuration '{name}' needs exactly one of 'targetListener' and "
                    "'targetUrl'",
                    file=b.file,
                    path=inner.path,
                    fix="redirect to another listener (e.g. HTTP to HTTPS) or to a URL, not both",
                    code="EmulatorRedirectTarget",
                )
            target = None
            if target_ref is not None:
                target = listeners[
                    b.ref_name(
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
    b: _Builder,
    p: Props,
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
    pool_ref = p.ref(pool_key)
    settings_ref = p.ref(settings_key)
    redirect_ref = p.ref(redirect_key)
    if redirect_ref is not None:
        if pool_ref is not None or settings_ref is not None:
            raise TemplateError(
                f"{what} has both a redirect configuration and a backend pool / settings",
                file=b.file,
                path=p.path,
                fix=f"remove '{redirect_key}', or '{pool_key}' and '{settings_key}'",
                code="EmulatorRedirectWithBackend",
            )
        redirect = redirects[
            b.ref_name(
                redirect_ref,
                "redirectConfigurations",
                redirects,
                path=p.key_path(redirect_key),
            )
        ]
        return None, None, redirect
    if pool_ref is None or settings_ref is None:
        raise TemplateError(
            f"{what} needs '{pool_key}' and '{settings_key}', or '{redirect_key}'",
            file=b.file,
            path=p.path,
            fix="reference a backend pool and backend settings, or a redirect configuration",
            code="InvalidTemplate",
        )
    pool = pools[b.ref_name(pool_ref, "backendAddressPools", pools, path=p.key_path(pool_key))]
    setting = settings[
        b.ref_name(
            settings_ref,
            "backendHttpSettingsCollection",
            settings,
            path=p.key_path(settings_key),
        )
    ]
    return pool, setting, None


def _rewrite_ref(
    b: _Builder, p: Props, key: str, rewrites: dict[str, RewriteRuleSet]
) -> RewriteRuleSet | None:
    ref = p.ref(key)
    if ref is None:
        return None
    return rewrites[b.ref_name(ref, "rewriteRuleSets", rewrites, path=p.key_path(key))]


def _url_path_maps(
    b: _Builder,
    props: Props,
    pools: dict[str, BackendPool],
    settings: dict[str, BackendSettings],
    rewrites: dict[str, RewriteRuleSet],
    redirects: dict[str, RedirectConfig],
) -> dict[str, UrlPathMap]:
    out: dict[str, UrlPathMap] = {}
    for p in props.children("urlPathMaps", "ApplicationGatewayUrlPathMap"):
        with b.item("urlPathMaps", p):
            name = _named(p)
            _unique(b, out, name, p, "urlPathMaps")
            inner = p.child("properties", "ApplicationGatewayUrlPathMapPropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"URL path map '{name}' has no 'properties'",
                    file=b.file,
                    path=p.path,
                    fix="set the default pool and settings (or redirect) and 'pathRules'",
                )
            default_pool, default_settings, default_redirect = _targets(
                b,
                inner,
                pool_key="defaultBackendAddressPool",
                settings_key="defaultBackendHttpSettings",
                redirect_key="defaultRedirectConfiguration",
                what=f"URL path map '{name}'",
                pools=pools,
                settings=settings,
                redirects=redirects,
            )
            default_rewrite = _rewrite_ref(b, inner, "defaultRewriteRuleSet", rewrites)
            path_rules: list[PathRule] = []
            rule_names: dict[str, None] = {}
            for r in inner.children("pathRules", "ApplicationGatewayPathRule"):
                rule_name = _named(r)
                _unique(b, rule_names, rule_name, r, "pathRules")
                rule_names[rule_name] = None
                rp = r.child("properties", "ApplicationGatewayPathRulePropertiesFormat")
                r.finish()
                if rp is None:
                    raise TemplateError(
                        f"path rule '{rule_name}' has no 'properties'", file=b.file, path=r.path
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
                    b,
                    rp,
                    pool_key="backendAddressPool",
                    settings_key="backendHttpSettings",
                    redirect_key="redirectConfiguration",
                    what=f"path rule '{rule_name}'",
                    pools=pools,
                    settings=settings,
                    redirects=redirects,
                )
                rewrite = _rewrite_ref(b, rp, "rewriteRuleSet", rewrites)
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


def _rules(
    b: _Builder,
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
    for p in props.children("requestRoutingRules", "ApplicationGatewayRequestRoutingRule"):
        with b.item("requestRoutingRules", p):
            name = _named(p)
            _unique(b, names, name, p, "requestRoutingRules")
            names[name] = None
            inner = p.child("properties", "ApplicationGatewayRequestRoutingRulePropertiesFormat")
            p.finish()
            if inner is None:
                raise TemplateError(
                    f"routing rule '{name}' has no 'properties'", file=b.file, path=p.path
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
            if priority is None and b.gw.api_version >= "2021-08-01":
                # Azure's code and wording (seen in az CLI and ARM deployment errors).
                raise TemplateError(
                    f"Priority for the request routing rule {b.gw.resource_id}/requestRoutingRules/"
                    f"{name} cannot be empty. All request routing rules should have a priority "
                    "defined starting from api-version 2021-08-01",
                    file=b.file,
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
            if listener_ref is None:
                raise inner.error(
                    "httpListener", "is missing", fix="reference one of httpListeners"
                )
            listener = listeners[
                b.ref_name(
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
                            "is set on a PathBasedRouting rule; its URL path map says where "
                            "requests go",
                            fix=f"remove '{key}' (use the path map's defaults)",
                            code="EmulatorPathBasedRuleWithBackend",
                        )
                path_map = path_maps[
                    b.ref_name(
                        path_map_ref, "urlPathMaps", path_maps, path=inner.key_path("urlPathMap")
                    )
                ]
            else:
                if path_map_ref is not None:
                    raise inner.error(
                        "urlPathMap",
                        "is set on a Basic rule",
                        fix="set 'ruleType' to 'PathBasedRouting', or remove 'urlPathMap'",
                        code="EmulatorBasicRuleWithUrlPathMap",
                    )
                pool, setting, redirect = _targets(
                    b,
                    inner,
                    pool_key="backendAddressPool",
                    settings_key="backendHttpSettings",
                    redirect_key="redirectConfiguration",
                    pools=pools,
                    settings=settings,
                    redirects=redirects,
                    what=f"Basic rule '{name}'",
                )
            rewrite = _rewrite_ref(b, inner, "rewriteRuleSet", rewrites)
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


def _check_rule_order(b: _Builder, rules: list[RoutingRule]) -> None:
    """Every rule has a priority, or none has: Azure refuses a mix (multiple-site-overview:
    "to use rule priority, you must specify rule priority field values for all existing
    request routing rules"). Listeners sharing a port must share a protocol too."""
    with_priority = [r.name for r in rules if r.priority is not None]
    without = [r.name for r in rules if r.priority is None]
    if with_priority and without:
        b.report(
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
            b.report(
                TemplateError(
                    f"listeners '{other.name}' ({other.protocol.value}) and '{listener.name}' "
                    f"({listener.protocol.value}) share frontend port {listener.frontend_port}",
                    path=listener.path,
                    fix="listeners on one frontend port use one protocol; give one of them "
                    "another port",
                    code="EmulatorMixedProtocolsOnPort",
                )
            )


#: Azure limits (application-gateway limits doc; appgw-behaviour.md §5).
MAX_TRUSTED_CAS_PER_PROFILE: Final = 100
MAX_TRUSTED_CAS_PER_GATEWAY: Final = 200
MAX_HOST_NAMES_PER_LISTENER: Final = 5


def _check_gateway_limits(
    b: _Builder,
    props: Props,
    listeners: dict[str, Listener],
    profiles: dict[str, SslProfile],
    trusted: dict[str, TrustedClientCa],
) -> None:
    if len(trusted) > MAX_TRUSTED_CAS_PER_GATEWAY:
        b.report(
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
            b.report(
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
        key = (listener.frontend_port, tuple(sorted(h.lower() for h in listener.host_names)))
        if key in seen:
            hosts = ", ".join(listener.host_names) or "any host name"
            b.report(
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
        if cert is not None and cert.certificate.not_valid_after_utc < _now_utc():
            b.warnings.append(
                f"listener '{listener.name}': server certificate '{cert.name}' expired on "
                f"{cert.certificate.not_valid_after_utc:%Y-%m-%d}; clients that check it will "
                "refuse it"
            )


def _now_utc() -> datetime:
    # Only for a warning about the server certificate's expiry, never for a decision.
    return datetime.now(UTC)


def fills_from_certificate(action: HeaderAction) -> bool:
    """True when the action's value reads a ``client_certificate*`` server variable: the one
    test behind the Passthrough warning here and the forgery analysis in the rewrite engine."""
    return any(
        m.group(1) == "var" and m.group(2).lower().startswith(CERTIFICATE_VARIABLE_PREFIX)
        for m in PLACEHOLDER.finditer(action.header_value)
    )


def _warn_unforwarded_passthrough(b: _Builder, rules: list[RoutingRule]) -> None:
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
            b.warnings.append(
                f"listener '{rule.listener.name}' is Passthrough but rule '{rule.name}' "
                "forwards no client certificate: the backend cannot authenticate anyone (add a "
                "rewrite rule setting a header to {var_client_certificate})"
            )


# -- run-time overrides -----------------------------------------------------------------------


def with_backend_overrides(
    config: GatewayConfig, overrides: Mapping[str, tuple[BackendAddress, ...]]
) -> GatewayConfig:
    """Replace the addresses of named pools (``--backend POOL=HOST:PORT``).

    The template's FQDNs are not reachable offline. The given port replaces the backend
    settings' port for that pool, which is where Azure keeps it; the change is recorded in
    ``warnings``.

    Raises:
        TemplateError: a pool name that the gateway does not have.
    """
    pools = {p.name: p for p in config.pools}
    warnings = list(config.warnings)
    for pool_name in overrides:
        if _lookup(pools, pool_name) is None:
            raise TemplateError(
                f"--backend names pool '{pool_name}', which the gateway does not have "
                f"(pools: {', '.join(pools) or 'none'})",
                fix="use one of the pool names",
                code="EmulatorUnknownBackendPool",
            )
    new_pools: dict[str, BackendPool] = {}
    for name, pool in pools.items():
        key = _lookup(overrides, name)
        if key is None:
            new_pools[name] = pool
            continue
        addresses = overrides[key]
        new_pools[name] = BackendPool(name, addresses)
        shown = ", ".join(f"{a.host}:{a.port}" for a in addresses)
        before = ", ".join(a.host for a in pool.addresses) or "no addresses"
        warnings.append(
            f"backend pool '{name}': {before} replaced by {shown} (--backend); the port "
            "overrides the backend settings' port for this pool"
        )
    rules = tuple(_with_pools(r, new_pools) for r in config.rules)
    return replace(config, pools=tuple(new_pools.values()), rules=rules, warnings=tuple(warnings))


def _with_pools(rule: RoutingRule, pools: Mapping[str, BackendPool]) -> RoutingRule:
    """``rule`` with every pool it references (its own, its path map's) taken from ``pools``."""

    def swap(pool: BackendPool | None) -> BackendPool | None:
        return pools.get(pool.name, pool) if pool is not None else None

    path_map = rule.url_path_map
    if path_map is not None:
        path_map = replace(
            path_map,
            default_pool=swap(path_map.default_pool),
            path_rules=tuple(replace(p, pool=swap(p.pool)) for p in path_map.path_rules),
        )
    return replace(rule, pool=swap(rule.pool), url_path_map=path_map)
