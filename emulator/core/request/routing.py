"""Which listener, rule, backend or redirect serves a request: pure decisions, no I/O.

The runtime asks this module three questions, in this order:

1. *TLS*: the client's SNI picks the listener whose certificate and SSL profile the handshake
   uses (:func:`select_tls_rule`).
2. *HTTP*: the request's Host picks the listener that routes it (:func:`select_rule`); a Host
   that no listener on the port takes gets the gateway's 404. When the two listeners differ and
   the Host's listener authenticates clients, the request is refused with 421
   (:func:`misdirected`), so a client cannot pass Strict by naming a Passthrough host in SNI.
3. *Path*: a PathBasedRouting rule's URL path map picks a path rule (:func:`route`), which
   proxies to a pool through backend settings, or redirects (:func:`redirect_location`).

The order in which listeners are tried is Azure's (:data:`LISTENER_ORDER_RULES`, with the
document each rule comes from). Everything here is deterministic and unit-tested without
sockets; the affinity cookie's value is here for the same reason (the pages the gateway
answers with are :mod:`emulator.core.http.pages`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from emulator.model import (
    BackendPool,
    BackendSettings,
    ClientAuthMode,
    Listener,
    PathRule,
    RedirectConfig,
    RewriteRuleSet,
    RoutingRule,
)

__all__ = [
    "AFFINITY_CORS_SUFFIX",
    "LISTENER_ORDER_RULES",
    "MAX_REROUTES",
    "Route",
    "affinity_cookie_value",
    "backend_target",
    "cookie_value",
    "host_matches",
    "listener_matches",
    "misdirected",
    "normalize_host",
    "ordered_rules",
    "path_matches",
    "redirect_location",
    "route",
    "rules_by_port",
    "select_rule",
    "select_tls_rule",
]

#: Azure's listener order, as (situation, what the gateway does, source). The functions below
#: implement exactly this; ``tests/unit/test_routing.py`` walks every row.
LISTENER_ORDER_RULES: Final = (
    (
        "v2, every routing rule has a priority (required from API 2021-08-01)",
        "listeners are tried in ascending rule priority; the first whose host names match "
        "(a basic listener matches any host) takes the request, multi-site or not",
        "multiple-site-overview, 'Request routing rules evaluation order'",
    ),
    (
        "no rule has a priority (API versions before 2021-08-01)",
        "multi-site listeners are tried before basic listeners, each group in template order",
        "configuration-listeners, 'Order of processing listeners' (v2 SKU)",
    ),
    (
        "no listener on the port matches the Host (v2)",
        "the gateway answers 404 itself",
        "appgw-behaviour.md section 7 (http-response-codes: 404)",
    ),
    (
        "TLS: the client's SNI",
        "the same order picks the listener whose certificate and SSL profile the handshake "
        "uses; without SNI the first basic listener, else the first listener that does not "
        "require SNI, else the handshake fails (unrecognized_name)",
        "multiple-site-overview; requireServerNameIndication (REST reference)",
    ),
    (
        "a PathBasedRouting rule",
        "path rules are tried in the path map's order; the first pattern that matches wins "
        "(/x/* is a prefix, anything else an exact path); no match: the map's defaults",
        "configuration-request-routing-rules, 'Order of processing rules'",
    ),
)

#: nginx stops internal redirects after 10 cycles with 500 ("rewrite or internal redirection
#: cycle"); a rewrite that re-evaluates the path map endlessly ends the same way on Azure.
MAX_REROUTES: Final = 10
#: Azure sets a second affinity cookie, the name plus this suffix, with ``SameSite=None;
#: Secure`` for cross-origin requests (configuration-http-settings, "Cookie-based affinity").
AFFINITY_CORS_SUFFIX: Final = "CORS"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


# -- host names -------------------------------------------------------------------------------


def normalize_host(value: str | None) -> str:
    """The host part of a Host header or SNI: lowercase, no port, no trailing dot."""
    if not value:
        return ""
    host = value.strip().lower()
    if host.startswith("["):  # IPv6 literal, with or without a port
        return host.split("]", 1)[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    # '*' matches any run of characters, dots included (*.contoso.com matches
    # a.b.contoso.com, multiple-site-overview "Wildcard host names in listener"); '?' one.
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.lower()]
    return re.compile("".join(parts))


def host_matches(pattern: str, host: str) -> bool:
    """True when ``host`` (already normalised) matches a listener host name, wildcards and all."""
    return _wildcard_regex(pattern.rstrip(".")).fullmatch(host) is not None


def listener_matches(listener: Listener, host: str) -> bool:
    """A basic listener (no host names) takes every host; a multi-site one its own names."""
    if not listener.host_names:
        return True
    return any(host_matches(name, host) for name in listener.host_names)


# -- listener order ---------------------------------------------------------------------------


def ordered_rules(rules: Iterable[RoutingRule]) -> tuple[RoutingRule, ...]:
    """Rules in the order their listeners are tried (:data:`LISTENER_ORDER_RULES`)."""
    items = list(rules)
    if items and all(rule.priority is not None for rule in items):
        return tuple(sorted(items, key=lambda rule: rule.priority or 0))
    # Without priorities: multi-site first, then basic; sorted() is stable (template order).
    return tuple(sorted(items, key=lambda rule: 0 if rule.listener.host_names else 1))


def rules_by_port(rules: Iterable[RoutingRule]) -> dict[int, tuple[RoutingRule, ...]]:
    """The rules of each frontend port, in listener order."""
    grouped: dict[int, list[RoutingRule]] = {}
    for rule in rules:
        grouped.setdefault(rule.listener.frontend_port, []).append(rule)
    return {port: ordered_rules(group) for port, group in grouped.items()}


def select_rule(rules: Sequence[RoutingRule], host: str) -> RoutingRule | None:
    """The rule whose listener takes a request for ``host``; None: the gateway answers 404."""
    return next((rule for rule in rules if listener_matches(rule.listener, host)), None)


def select_tls_rule(rules: Sequence[RoutingRule], sni: str | None) -> RoutingRule | None:
    """The rule whose listener's certificate and SSL profile a handshake with ``sni`` uses."""
    if sni:
        return select_rule(rules, normalize_host(sni))
    basic = next((rule for rule in rules if not rule.listener.host_names), None)
    if basic is not None:
        return basic
    return next((rule for rule in rules if not rule.listener.require_sni), None)


def _client_auth(listener: Listener) -> ClientAuthMode | None:
    profile = listener.ssl_profile
    return profile.client_auth if profile is not None else None


def misdirected(tls_listener: Listener, http_listener: Listener) -> bool:
    """True when a request must be refused with 421 Misdirected Request.

    The handshake ran with ``tls_listener``'s SSL profile; the Host chose ``http_listener``.
    If the latter authenticates clients with another profile, its check never happened on this
    connection. nginx (which the gateway runs) answers 421 in that case; forwarding would let
    a client skip Strict by sending a Passthrough host name in SNI.
    """
    if tls_listener.name == http_listener.name:
        return False
    if _client_auth(http_listener) is None:
        return False
    return tls_listener.ssl_profile != http_listener.ssl_profile


# -- paths ------------------------------------------------------------------------------------


def path_matches(pattern: str, path: str) -> bool:
    """``/images/*`` matches ``/images/`` and below; any other pattern matches exactly.

    Compared on the normalised path (nginx's ``$uri``), case-sensitively as nginx locations are
    (Azure does not document case handling). The path is a byte string (see
    :mod:`emulator.core.request.server_variables`); a pattern beyond ASCII is compared as its
    UTF-8 bytes.
    """
    if not pattern.isascii():
        pattern = pattern.encode("utf-8").decode("latin-1")
    if pattern.endswith("/*"):
        return path.startswith(pattern[:-1])
    return path == pattern


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: a pool through settings, or a redirect."""

    rule: RoutingRule
    pool: BackendPool | None
    settings: BackendSettings | None
    rewrite_rule_set: RewriteRuleSet | None
    redirect: RedirectConfig | None
    #: The path rule that matched (None: a Basic rule, or the path map's defaults).
    path_rule: PathRule | None = None
    #: The pattern of ``path_rule`` that matched (for the backend path override).
    matched_pattern: str | None = None


def route(rule: RoutingRule, path: str) -> Route:
    """Resolve ``rule`` for a request whose normalised path is ``path``."""
    path_map = rule.url_path_map
    if path_map is None:
        return Route(rule, rule.pool, rule.settings, rule.rewrite_rule_set, rule.redirect)
    for path_rule in path_map.path_rules:
        for pattern in path_rule.paths:
            if path_matches(pattern, path):
                return Route(
                    rule,
                    path_rule.pool,
                    path_rule.settings,
                    path_rule.rewrite_rule_set,
                    path_rule.redirect,
                    path_rule,
                    pattern,
                )
    return Route(
        rule,
        path_map.default_pool,
        path_map.default_settings,
        path_map.default_rewrite_rule_set,
        path_map.default_redirect,
    )


def backend_target(
    target: str, path: str, settings: BackendSettings, matched_pattern: str | None
) -> str:
    """The request target after the settings' ``path`` override.

    Azure (configuration-http-settings, "Override backend path"): the override replaces the
    part of the path that the path rule matched: ``/pathrule/*`` with override ``/override/``
    sends ``/pathrule/home/`` as ``/override/home/``; an exact path rule sends the override
    alone; on a Basic rule (or the map's defaults) the whole path follows the override:
    ``/home/`` becomes ``/override/home/``. The query string is kept.

    ``target`` is the target as it would be forwarded without an override; ``path`` is the
    normalised path (nginx's ``$uri``) the rule matched. The cut and the rest both come from
    ``path``, never from the raw target: ``/inventory/../admin`` or ``/%69nventory/x`` would
    otherwise cut at the wrong place and leave the override (issue 15, finding 16). The rest
    is percent-encoded again, ``%`` included, so the backend's own decoding cannot turn it
    into a dot segment either: the forwarded path always stays under the override.
    """
    if settings.path is None:
        return target
    _, sep, query = target.partition("?")
    if matched_pattern is None:
        rest = path
    elif matched_pattern.endswith("/*"):
        rest = path[len(matched_pattern) - 2 :]
    else:
        rest = ""
    new_path = settings.path.rstrip("/") + _escape_path(rest) if rest else settings.path
    return new_path + sep + query


#: Characters a normalised path keeps unescaped when it is forwarded: RFC 3986 ``pchar``
#: without ``%`` (a decoded ``%`` is data and must not be decoded a second time) plus "/".
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"


def _escape_path(path: str) -> str:
    """A decoded path as it goes on the request line: the path holds one character per byte
    the client sent (as server variables do), and each byte outside ``_PATH_SAFE`` goes out
    as its ``%XX``."""
    return quote(path.encode("latin-1", "surrogateescape"), safe=_PATH_SAFE)


# -- redirects --------------------------------------------------------------------------------


def redirect_location(
    redirect: RedirectConfig,
    *,
    request_host: str,
    target_port: int | None,
    path: str,
    query: str,
) -> str:
    """The ``Location`` of a redirect.

    To a listener: that listener's scheme, the request's host name, and ``target_port`` (the
    port a client reaches it on; left out when it is the scheme's default), then the path when
    ``includePath`` and the query when ``includeQueryString`` (redirect-overview). To a URL:
    the URL, the path appended when ``includePath``, the query appended when
    ``includeQueryString`` (with ``&`` if the URL already has a query).
    """
    if redirect.target_listener is not None:
        scheme = redirect.target_listener.protocol.value.lower()
        host = normalize_host(request_host) or "localhost"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = "" if target_port in (None, _DEFAULT_PORTS[scheme]) else f":{target_port}"
        location = f"{scheme}://{host}{port}" + (path if redirect.include_path else "/")
    else:
        assert redirect.target_url is not None
        location = redirect.target_url
        if redirect.include_path:
            location = location.rstrip("/") + path
    if redirect.include_query_string and query:
        location += ("&" if "?" in location else "?") + query
    return location


# -- cookie affinity --------------------------------------------------------------------------


def affinity_cookie_value(pool: str, host: str, port: int) -> str:
    """An opaque, stable value naming one backend of one pool.

    Azure's cookie holds "a hash value which contains the session details"; a one-way hash of
    the pool and address does the same job here and reveals nothing.
    """
    return hashlib.sha256(f"{pool}\0{host}\0{port}".encode()).hexdigest()


def cookie_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of cookie ``name`` in the request's Cookie headers (first one wins)."""
    for key, value in headers:
        if key.lower() != "cookie":
            continue
        for part in value.split(";"):
            cookie_name, sep, cookie = part.strip().partition("=")
            if sep and cookie_name == name:
                return cookie.strip().strip('"')
    return None
