"""Server variables, the default forwarding headers and the rewrite engine — one pure function.

What the backend receives is the point of Passthrough: the backend authenticates the client
from what a rewrite rule forwards. This module turns a request's facts (:class:`RequestFacts`,
built once by the I/O shell) and a routing rule's rewrite rule set into the exact header list
the backend gets, and the response header list the client gets.

Order, as on Azure (how-application-gateway-works; rewrite-http-headers-url docs):

1. hop-by-hop headers and header names with characters other than letters, digits and hyphens
   are dropped from the client's request;
2. the gateway's default headers are added (``X-Forwarded-For`` appended, ``X-Forwarded-Proto``,
   ``X-Forwarded-Port``, ``X-Original-Host``, ``X-Original-URL``, ``X-AppGW-Trace-Id``);
3. rewrite rules run in ``ruleSequence`` order; a rule's actions apply only when all its
   conditions match; a header action replaces every header of that name, and an empty value
   (e.g. ``{var_client_certificate}`` when no certificate was sent) deletes it. That last rule
   is what keeps a client from forging the certificate header on a listener with the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from emulator.core.certinfo import (
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_END_DATE,
    CLIENT_CERTIFICATE_FINGERPRINT,
    CLIENT_CERTIFICATE_ISSUER,
    CLIENT_CERTIFICATE_SERIAL,
    CLIENT_CERTIFICATE_START_DATE,
    CLIENT_CERTIFICATE_SUBJECT,
    ClientCertInfo,
)
from emulator.model import HeaderAction, RewriteCondition, RewriteRuleSet

__all__ = [
    "CLIENT_CERTIFICATE_VERIFICATION",
    "Headers",
    "RequestFacts",
    "rewrite_request_headers",
    "rewrite_response_headers",
    "server_variable",
]

Headers = list[tuple[str, str]]

CLIENT_CERTIFICATE_VERIFICATION: Final = "client_certificate_verification"

#: Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy never forwards. Framing headers
#: (Content-Length, Transfer-Encoding) are re-derived by the HTTP layer.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
#: Used with ``fullmatch``: ``$`` would also match before a trailing newline.
_TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9-]+")
_PLACEHOLDER: Final = re.compile(r"\{(var|http_req|http_resp)_([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the server variables are computed from, gathered once per request."""

    client_ip: str
    client_port: int
    #: The template's frontend port (not the local one a ``--listen`` mapping chose).
    server_port: int
    scheme: str
    method: str
    target: str
    http_version: str
    headers: Sequence[tuple[str, str]]
    trace_id: str
    tls_version: str | None = None
    cipher: str | None = None
    certificate: ClientCertInfo | None = None
    #: SUCCESS / PASSTHROUGH / NONE, from the SSL profile's decision.
    verification: str = "NONE"
    extra: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        values = [v for k, v in self.headers if k.lower() == lower]
        return ", ".join(values) if values else None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


def normalize_uri_path(raw: str) -> str:
    """nginx's ``$uri``: percent-decoded, dot segments resolved, repeated slashes merged."""
    decoded = unquote(raw)
    out: list[str] = []
    for segment in re.sub("/+", "/", decoded).split("/")[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = decoded.endswith("/") or decoded.endswith("/.") or decoded.endswith("/..")
    path = "/" + "/".join(out)
    if trailing and not path.endswith("/"):
        path += "/"
    return path


def _cert_field(getter: Callable[[ClientCertInfo], str]) -> Callable[[RequestFacts], str]:
    return lambda f: getter(f.certificate) if f.certificate is not None else ""


def _forwarded_for(f: RequestFacts) -> str:
    incoming = f.header("x-forwarded-for")
    return f"{incoming}, {f.client_ip}" if incoming else f.client_ip


def _host(f: RequestFacts) -> str:
    host = f.header("host") or ""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


_VARIABLES: Final[dict[str, Callable[[RequestFacts], str]]] = {
    CLIENT_CERTIFICATE: _cert_field(lambda c: c.escaped_pem),
    CLIENT_CERTIFICATE_END_DATE: _cert_field(lambda c: c.end_date),
    CLIENT_CERTIFICATE_FINGERPRINT: _cert_field(lambda c: c.fingerprint_sha1),
    CLIENT_CERTIFICATE_ISSUER: _cert_field(lambda c: c.issuer),
    CLIENT_CERTIFICATE_SERIAL: _cert_field(lambda c: c.serial),
    CLIENT_CERTIFICATE_START_DATE: _cert_field(lambda c: c.start_date),
    CLIENT_CERTIFICATE_SUBJECT: _cert_field(lambda c: c.subject),
    CLIENT_CERTIFICATE_VERIFICATION: lambda f: f.verification,
    "add_x_forwarded_for_proxy": _forwarded_for,
    "ciphers_used": lambda f: f.cipher or "",
    "client_ip": lambda f: f.client_ip,
    "client_port": lambda f: str(f.client_port),
    "host": _host,
    "http_method": lambda f: f.method,
    "http_version": lambda f: f"HTTP/{f.http_version}",
    "query_string": lambda f: f.query,
    "request_query": lambda f: f.query,
    "request_scheme": lambda f: f.scheme,
    "request_uri": lambda f: f.target,
    "server_port": lambda f: str(f.server_port),
    "ssl_connection_protocol": lambda f: f.tls_version or "",
    "ssl_enabled": lambda f: "On" if f.scheme == "https" else "",
    "uri_path": lambda f: normalize_uri_path(f.path),
}

#: Every server variable name this emulator computes (for validation messages).
SERVER_VARIABLES: Final = frozenset(_VARIABLES)


def server_variable(name: str, facts: RequestFacts) -> str:
    """The value of ``{var_NAME}``; ``cookie_NAME`` reads a request cookie; unknown → empty."""
    getter = _VARIABLES.get(name.lower())
    if getter is not None:
        return getter(facts)
    if name.lower().startswith("cookie_"):
        wanted = name[len("cookie_") :]
        # Each Cookie header separately: joining several with ", " (as for other headers)
        # would glue the last pair of one to the first of the next.
        for header_value in (v for k, v in facts.headers if k.lower() == "cookie"):
            for part in header_value.split(";"):
                key, _, value = part.strip().partition("=")
                if key == wanted:
                    return value
    return facts.extra.get(name, "")


def _get_header(headers: Headers, name: str) -> str:
    lower = name.lower()
    values = [v for k, v in headers if k.lower() == lower]
    return ", ".join(values)


@dataclass
class _Scope:
    """Values visible to a rule: the request, optionally the response, and capture groups."""

    facts: RequestFacts
    request: Headers
    response: Headers | None
    captures: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lookup(self, kind: str, name: str) -> str:
        base, _, index = name.rpartition("_")
        if base and index.isdigit():
            groups = self.captures.get(f"{kind}_{base}".lower())
            if groups is not None and int(index) < len(groups):
                return groups[int(index)] or ""
        if kind == "var":
            return server_variable(name, self.facts)
        if kind == "http_req":
            return _get_header(self.request, name)
        return _get_header(self.response or [], name)

    def expand(self, template: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.lookup(m.group(1), m.group(2)), template)

    def matches(self, condition: RewriteCondition) -> bool:
        kind, _, name = condition.variable.partition("_")
        if condition.variable.lower().startswith("http_req_"):
            kind, name = "http_req", condition.variable[len("http_req_") :]
        elif condition.variable.lower().startswith("http_resp_"):
            kind, name = "http_resp", condition.variable[len("http_resp_") :]
        elif condition.variable.lower().startswith("var_"):
            kind, name = "var", condition.variable[len("var_") :]
        value = self.lookup(kind, name)
        flags = re.IGNORECASE if condition.ignore_case else 0
        found = re.search(condition.pattern, value, flags)
        if found is not None and not condition.negate:
            self.captures[f"{kind}_{name}".lower()] = (found.group(0), *found.groups(default=""))
        return (found is not None) != condition.negate


def _set_header(headers: Headers, name: str, value: str) -> Headers:
    lower = name.lower()
    kept = [(k, v) for k, v in headers if k.lower() != lower]
    if value:
        kept.append((name, value))
    return kept


def _apply(rule_set: RewriteRuleSet | None, scope: _Scope, *, response: bool) -> Headers:
    target = scope.response if response else scope.request
    assert target is not None
    if rule_set is None:
        return target
    for rule in rule_set.rules:
        scope.captures = {}
        if not all(scope.matches(c) for c in rule.conditions):
            continue
        actions: tuple[HeaderAction, ...] = (
            rule.response_headers if response else rule.request_headers
        )
        for action in actions:
            target = _set_header(target, action.header_name, scope.expand(action.header_value))
            if response:
                scope.response = target
            else:
                scope.request = target
    return target


def default_forwarding_headers(facts: RequestFacts) -> Headers:
    """The headers Azure adds to every proxied request (how-application-gateway-works)."""
    return [
        ("X-Forwarded-For", _forwarded_for_with_port(facts)),
        ("X-Forwarded-Proto", facts.scheme),
        ("X-Forwarded-Port", str(facts.server_port)),
        ("X-Original-Host", facts.header("host") or ""),
        ("X-Original-URL", facts.target),
        ("X-AppGW-Trace-Id", facts.trace_id),
    ]


def _forwarded_for_with_port(facts: RequestFacts) -> str:
    # The default header carries ip:port; the add_x_forwarded_for_proxy variable does not.
    incoming = facts.header("x-forwarded-for")
    own = f"{facts.client_ip}:{facts.client_port}"
    return f"{incoming}, {own}" if incoming else own


def rewrite_request_headers(
    facts: RequestFacts, rule_set: RewriteRuleSet | None, *, host: str | None = None
) -> Headers:
    """The header list the backend receives (see the module docstring for the order).

    Args:
        host: the Host header to send when the backend settings override it.
    """
    replaced = {name.lower() for name, _ in default_forwarding_headers(facts)}
    headers: Headers = [
        (k, v)
        for k, v in facts.headers
        if k.lower() not in HOP_BY_HOP and _TOKEN_NAME.fullmatch(k) and k.lower() not in replaced
    ]
    if host is not None:
        headers = _set_header(headers, "Host", host)
    headers += [(k, v) for k, v in default_forwarding_headers(facts) if v]
    return _apply(rule_set, _Scope(facts, headers, None), response=False)


def rewrite_response_headers(
    facts: RequestFacts,
    rule_set: RewriteRuleSet | None,
    request_headers: Headers,
    response_headers: Headers,
) -> Headers:
    """The response header list the client receives, after hop-by-hop removal and rewrites."""
    headers = [(k, v) for k, v in response_headers if k.lower() not in HOP_BY_HOP]
    return _apply(rule_set, _Scope(facts, request_headers, headers), response=True)
