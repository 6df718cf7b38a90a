"""The rewrite stage: default forwarding headers, then a rule set's rules — one pure engine.

What the backend receives is the point of Passthrough: the backend authenticates the client
from what a rewrite rule forwards. This module turns a request's facts (:class:`RequestFacts`,
built once by the I/O shell) and a routing rule's rewrite rule set (from the typed gateway model)
into the exact header list and target the backend gets, and the response header list the client
gets. Request and response go through the same engine (:func:`_run`).

Order, as on Azure (how-application-gateway-works; rewrite-http-headers-url):

1. hop-by-hop headers and header names with characters other than letters, digits and hyphens
   are dropped from the client's request; ``Host`` is replaced when the backend settings say so;
2. the gateway's default headers are added (``X-Forwarded-For`` appended, ``X-Forwarded-Proto``,
   ``X-Forwarded-Port``, ``X-Original-Host``, ``X-Original-URL``, ``X-AppGW-Trace-Id``, and with
   the 2022 SSL policies ``X-Azure-JA4-Fingerprint``);
3. rewrite rules run in ``ruleSequence`` order; a rule's actions apply only when all its
   conditions match (AND); capture groups of a rule's conditions are visible to that rule's
   actions only. A header action replaces every header of that name, and an empty value
   (e.g. ``{var_client_certificate}`` when no certificate was sent) deletes it. Within a rule the
   header actions run before the URL action; later rules see the rewritten ``uri_path`` and
   ``query_string`` (nginx's ``$uri`` / ``$args``), while ``request_uri`` and
   ``X-Original-URL`` keep what the client sent.

Anti-spoofing. A header filled from a ``client_certificate*`` variable by an *unconditional*
rule never carries a client's value: the rule replaces it, or deletes it when the value is empty.
Azure forwards client headers unchanged everywhere else — on a listener without such a rule, and
when a conditional rule's condition is false. This module reproduces that, and says where it
happens: :func:`certificate_header_holes` (static, for ``validate`` and the startup summary) and
:attr:`RequestRewrite.forgeable` (per request, for the log). ``strip_client_cert_headers``
(``--strip-client-cert-headers``, off by default because Azure does not do it) removes every
header the rule set fills from a certificate variable before the rules run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from emulator.core.certinfo import CLIENT_CERTIFICATE
from emulator.core.server_variables import (
    CLIENT_CERTIFICATE_VERIFICATION,
    VARIABLES,
    RequestFacts,
    normalize_uri_path,
    server_variable,
)
from emulator.model import (
    PLACEHOLDER,
    HeaderAction,
    RewriteCondition,
    RewriteRule,
    RewriteRuleSet,
    fills_from_certificate,
)

__all__ = [
    "CLIENT_CERTIFICATE",
    "CLIENT_CERTIFICATE_VERIFICATION",
    "JA4_HEADER",
    "SERVER_VARIABLES",
    "CertHeaderHole",
    "Headers",
    "RequestFacts",
    "RequestRewrite",
    "certificate_header_holes",
    "certificate_headers",
    "default_forwarding_headers",
    "normalize_uri_path",
    "rewrite_request",
    "rewrite_request_headers",
    "rewrite_response_headers",
    "server_variable",
]

Headers = list[tuple[str, str]]

#: The header the gateway adds with the 2022 SSL policies (appgw-behaviour.md §7).
JA4_HEADER: Final = "X-Azure-JA4-Fingerprint"

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
#: Characters a rewritten path or query cannot carry raw in a request line: controls, space,
#: ``#``, DEL and non-ASCII (as UTF-8 bytes). ``?`` is also escaped in a path. ``%`` is kept,
#: so a template author's own percent-encoding survives.
_URL_UNSAFE: Final = frozenset(range(0x21)) | {0x23, 0x7F} | frozenset(range(0x80, 0x100))

#: Every server variable name this emulator computes (for validation messages).
SERVER_VARIABLES: Final = frozenset(v.name for v in VARIABLES)


# -- anti-spoofing analysis ------------------------------------------------------------------


def certificate_headers(rule_set: RewriteRuleSet | None) -> dict[str, str]:
    """Request headers the set fills from a ``client_certificate*`` variable: lowercase name →
    the name as the rule spells it."""
    if rule_set is None:
        return {}
    return {
        action.header_name.lower(): action.header_name
        for rule in rule_set.rules
        for action in rule.request_headers
        if fills_from_certificate(action)
    }


@dataclass(frozen=True, slots=True)
class CertHeaderHole:
    """A certificate header a client can forge: the rule that fills it may not fire."""

    header: str
    rule: str

    @property
    def message(self) -> str:
        return (
            f"a client can forge '{self.header}': rewrite rule '{self.rule}' fills it from a "
            "client certificate variable only when its conditions match, and otherwise the "
            "client's own header reaches the backend unchanged (as on Azure)"
        )

    @property
    def fix(self) -> str:
        return (
            f"add an unconditional rule with a lower ruleSequence that sets '{self.header}' to "
            "an empty value (deletes it) or to the certificate variable; or run with "
            "--strip-client-cert-headers"
        )


def _closes(action: HeaderAction) -> bool:
    """An unconditional action on a header removes the client's value unless it copies it."""
    own = "{http_req_" + action.header_name.lower() + "}"
    return own not in action.header_value.lower()


def certificate_header_holes(rule_set: RewriteRuleSet | None) -> tuple[CertHeaderHole, ...]:
    """Every (header, rule) where a conditional rule fills a certificate header and no
    unconditional action on that header removes a client's value first.

    A static answer for ``validate`` and the startup summary; :class:`RequestRewrite.forgeable`
    is the per-request one.
    """
    if rule_set is None:
        return ()
    closed = {
        action.header_name.lower()
        for rule in rule_set.rules
        if not rule.conditions
        for action in rule.request_headers
        if _closes(action)
    }
    holes: dict[tuple[str, str], CertHeaderHole] = {}
    for rule in rule_set.rules:
        if not rule.conditions:
            continue
        for action in rule.request_headers:
            lower = action.header_name.lower()
            if fills_from_certificate(action) and lower not in closed:
                holes.setdefault((lower, rule.name), CertHeaderHole(action.header_name, rule.name))
    return tuple(holes.values())


# -- the engine ------------------------------------------------------------------------------


def _get_header(headers: Headers, name: str) -> str:
    lower = name.lower()
    return ", ".join(v for k, v in headers if k.lower() == lower)


@dataclass
class _Scope:
    """Values visible to a rule: the request, optionally the response, and capture groups.

    Mutable on purpose: one scope lives for one pass over a rule set.
    """

    facts: RequestFacts
    request: Headers
    response: Headers | None
    captures: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lookup(self, kind: str, name: str) -> str:
        base, _, index = name.rpartition("_")
        if base and index.isdigit():
            # Case-sensitive, as Azure documents: "the case of the condition variable needs to
            # match case of the capture variable" ({http_req_user-agent_2} after user-agent).
            groups = self.captures.get(f"{kind}_{base}")
            if groups is not None:
                return groups[int(index)] if int(index) < len(groups) else ""
        if kind == "var":
            return server_variable(name, self.facts)
        if kind == "http_req":
            return _get_header(self.request, name)
        return _get_header(self.response or [], name)

    def expand(self, template: str) -> str:
        return PLACEHOLDER.sub(lambda m: self.lookup(m.group(1), m.group(2)), template)

    def matches(self, condition: RewriteCondition) -> bool:
        lower = condition.variable.lower()
        kind, name = "var", condition.variable
        for prefix in ("http_req_", "http_resp_", "var_"):
            if lower.startswith(prefix):
                kind, name = prefix[:-1], condition.variable[len(prefix) :]
                break
        value = self.lookup(kind, name)
        flags = re.IGNORECASE if condition.ignore_case else 0
        found = re.search(condition.pattern, value, flags)
        if found is not None and not condition.negate:
            self.captures[f"{kind}_{name}"] = (found.group(0), *found.groups(default=""))
        return (found is not None) != condition.negate


def _set_header(headers: Headers, name: str, value: str, *, keep_host: bool = False) -> Headers:
    lower = name.lower()
    if keep_host and lower == "host" and not value:
        # Azure refuses a rule that deletes Host; one whose value comes out empty at run time
        # (a variable that is empty for this request) leaves Host as it was.
        return headers
    kept = [(k, v) for k, v in headers if k.lower() != lower]
    if value:
        kept.append((name, value))
    return kept


def _escape(text: str, *, extra: Iterable[int] = ()) -> str:
    unsafe = _URL_UNSAFE | frozenset(extra)
    return "".join(f"%{byte:02X}" if byte in unsafe else chr(byte) for byte in text.encode("utf-8"))


def _apply_url(rule: RewriteRule, scope: _Scope) -> None:
    url = rule.url
    if url is None:
        return
    path, query = scope.facts.uri_path, scope.facts.query
    if url.modified_path is not None:
        path = scope.expand(url.modified_path)
        if not path.startswith("/"):
            path = "/" + path
    if url.modified_query_string is not None:
        query = scope.expand(url.modified_query_string)
    scope.facts = replace(scope.facts, rewritten_path=path, rewritten_query=query)


def _run(rule_set: RewriteRuleSet | None, scope: _Scope, *, response: bool) -> list[str]:
    """Run the set's rules over the request (or response) in ``scope``; returns fired rules."""
    fired: list[str] = []
    if rule_set is None:
        return fired
    for rule in rule_set.rules:
        scope.captures = {}
        if not all(scope.matches(c) for c in rule.conditions):
            continue
        fired.append(rule.name)
        if response:
            assert scope.response is not None
            for action in rule.response_headers:
                scope.response = _set_header(
                    scope.response, action.header_name, scope.expand(action.header_value)
                )
            continue
        for action in rule.request_headers:
            scope.request = _set_header(
                scope.request, action.header_name, scope.expand(action.header_value), keep_host=True
            )
        _apply_url(rule, scope)
    return fired


def default_forwarding_headers(facts: RequestFacts) -> Headers:
    """The headers Azure adds to every proxied request (how-application-gateway-works)."""
    headers = [
        ("X-Forwarded-For", _forwarded_for_with_port(facts)),
        ("X-Forwarded-Proto", facts.scheme),
        ("X-Forwarded-Port", str(facts.server_port)),
        ("X-Original-Host", facts.header("host") or ""),
        ("X-Original-URL", facts.target),
        ("X-AppGW-Trace-Id", facts.trace_id),
    ]
    if facts.ja4 is not None:
        headers.append((JA4_HEADER, facts.ja4))
    return headers


def _forwarded_for_with_port(facts: RequestFacts) -> str:
    # The default header carries ip:port; the add_x_forwarded_for_proxy variable does not.
    incoming = facts.header("x-forwarded-for")
    own = f"{facts.client_ip}:{facts.client_port}"
    return f"{incoming}, {own}" if incoming else own


@dataclass(frozen=True, slots=True)
class RequestRewrite:
    """What the backend receives, and what the rewrite stage noticed on the way."""

    headers: Headers
    #: The request target for the backend: the client's, unless a URL action rewrote it.
    target: str
    url_rewritten: bool
    #: Rules whose conditions matched, in the order they ran.
    fired: tuple[str, ...]
    #: Certificate headers the client sent that reach the backend with the client's value
    #: (a conditional rule did not fire, see :func:`certificate_header_holes`).
    forgeable: tuple[str, ...]
    #: The facts after the rules (a URL action changes ``uri_path`` / ``query_string``); the
    #: response rules read these.
    facts: RequestFacts


def rewrite_request(
    facts: RequestFacts,
    rule_set: RewriteRuleSet | None,
    *,
    host: str | None = None,
    strip_client_cert_headers: bool = False,
) -> RequestRewrite:
    """The backend request's headers and target (see the module docstring for the order).

    Args:
        host: the Host header to send when the backend settings override it.
        strip_client_cert_headers: remove every header the set fills from a certificate
            variable before the rules run (``--strip-client-cert-headers``; not what Azure does).
    """
    defaults = default_forwarding_headers(facts)
    replaced = {name.lower() for name, _ in defaults}
    cert_headers = certificate_headers(rule_set)
    client: Headers = [
        (k, v)
        for k, v in facts.headers
        if k.lower() not in HOP_BY_HOP and _TOKEN_NAME.fullmatch(k) and k.lower() not in replaced
    ]
    if strip_client_cert_headers:
        client = [(k, v) for k, v in client if k.lower() not in cert_headers]
    headers = client
    if host is not None:
        headers = _set_header(headers, "Host", host)
    headers = headers + [(k, v) for k, v in defaults if v]
    scope = _Scope(facts, headers, None)
    fired = _run(rule_set, scope, response=False)
    final = scope.facts
    target = facts.target
    rewritten = final.rewritten_path is not None
    if rewritten:
        target = _escape(final.uri_path, extra=(ord("?"),))
        if final.query:
            target += "?" + _escape(final.query)
    forgeable = tuple(
        spelled
        for lower, spelled in cert_headers.items()
        if (sent := [v for k, v in client if k.lower() == lower])
        and [v for k, v in scope.request if k.lower() == lower] == sent
    )
    return RequestRewrite(scope.request, target, rewritten, tuple(fired), forgeable, final)


def rewrite_request_headers(
    facts: RequestFacts,
    rule_set: RewriteRuleSet | None,
    *,
    host: str | None = None,
    strip_client_cert_headers: bool = False,
) -> Headers:
    """The header list the backend receives (:func:`rewrite_request`'s ``headers``)."""
    return rewrite_request(
        facts, rule_set, host=host, strip_client_cert_headers=strip_client_cert_headers
    ).headers


def rewrite_response_headers(
    facts: RequestFacts,
    rule_set: RewriteRuleSet | None,
    request_headers: Headers,
    response_headers: Headers,
    *,
    status: int | None = None,
) -> Headers:
    """The response header list the client receives, after hop-by-hop removal and rewrites.

    Args:
        request_headers: what the backend received (``{http_req_NAME}`` reads these).
        status: the backend's status (``{var_http_status}``).
    """
    if status is not None:
        facts = replace(facts, status=status)
    headers = [(k, v) for k, v in response_headers if k.lower() not in HOP_BY_HOP]
    scope = _Scope(facts, request_headers, headers)
    _run(rule_set, scope, response=True)
    assert scope.response is not None
    return scope.response
