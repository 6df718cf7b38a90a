"""The frozen model types: what a built gateway is made of.

Every type is a frozen dataclass or an enum, resolved (a listener holds its SSL profile, a rule
its pool), so the runtime never looks a name up. The builder in :mod:`emulator.model.builder`
makes them; nothing here reads JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cryptography import x509

from emulator.arm.certdata import (
    ServerCertificate,
    TrustedClientCa,
)
from emulator.arm.ssl_policies import (
    SslPolicy,
)

#: Passthrough mode exists from API version 2025-03-01 on (Azure mutual authentication overview).
PASSTHROUGH_MIN_API: Final = "2025-03-01"
#: ``requestTimeout`` default, seconds (backendHttpSettings REST reference).
DEFAULT_REQUEST_TIMEOUT_S: Final = 20
#: Routing rule priority range (Azure application gateway limits).
PRIORITY_RANGE: Final = range(1, 20001)
V2_SKUS: Final = frozenset({"standard_v2", "waf_v2", "basic"})


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
