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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, TypeAlias

from emulator.core.bounded_cache import ClearingCache
from emulator.core.request.server_variables import (
    CLIENT_CERTIFICATE_VERIFICATION,
    NO_STATUS,
    VARIABLES,
    RequestFacts,
    normalize_uri_path,
    server_variable,
    utf8_octets,
    variable_getter,
)
from emulator.core.tls.certinfo import CLIENT_CERTIFICATE
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
    "CompiledRuleSet",
    "Headers",
    "RequestFacts",
    "RequestRewrite",
    "certificate_header_holes",
    "certificate_headers",
    "compile_rule_set",
    "default_forwarding_headers",
    "header_value",
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

#: Characters a header value cannot carry (RFC 9110 section 5.5: field-vchar, SP, HTAB and
#: obs-text only): the controls but HTAB, and DEL. A server variable holds whatever bytes the
#: client encoded (``%0D%0A`` in a path, CR LF inside Basic credentials); nginx copies them into
#: the header as they are, which splits it into two lines (header injection). Here they are
#: written as ``%XX``, uppercase, the way a client percent-encodes them in a URL: the header
#: keeps its one line, and the backend sees which bytes the client sent. ``%`` itself is not
#: escaped, so the encoding is one-way (read ``request_uri`` for the exact target). Code points
#: past 0xFF (not a byte string; no request value has them) are the UTF-8 bytes of the text.
_NOT_IN_HEADER_VALUE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]+")


def _header_escape(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(text) == 1 and ord(text) < 0x80:
        return f"%{ord(text):02X}"
    return utf8_octets(text)


#: The ASCII bytes :data:`_NOT_IN_HEADER_VALUE` matches, for the quick test below.
_ASCII_NOT_IN_HEADER_VALUE: Final = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])


def header_value(text: str) -> str:
    """``text`` as a header value: its control bytes as ``%XX`` (see ``_NOT_IN_HEADER_VALUE``).

    A value that needs nothing is returned as it is. The usual value is ASCII without controls
    (a URL-encoded certificate is over a kilobyte of it); deleting the control bytes from its
    ASCII encoding tells so several times faster than the regex, which reads the rest.
    """
    if text.isascii():
        raw = text.encode("ascii")
        if len(raw.translate(None, _ASCII_NOT_IN_HEADER_VALUE)) == len(raw):
            return text
    elif _NOT_IN_HEADER_VALUE.search(text) is None:
        return text
    return _NOT_IN_HEADER_VALUE.sub(_header_escape, text)


#: The certificate headers of no rule set (read-only: shared by every request without one).
_NO_CERT_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})

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


# -- rule sets, compiled once ---------------------------------------------------------------
#
# A rule set is frozen and lives as long as the gateway configuration, while the rewrite stage
# runs on every request. Everything that depends on the rule set alone (parsed templates,
# lower-cased header names, resolved server variables, compiled condition patterns, the set of
# certificate headers) is computed once per rule set (:func:`compile_rule_set`), and the
# gateway's port planner keeps the compiled sets of its rules (emulator.core.request.plan).


@dataclass(frozen=True, slots=True)
class _Ref:
    """One ``{KIND_NAME}`` placeholder or condition variable, resolved once.

    ``capture_key`` is set when the name ends in ``_<digits>``: if a condition of the same rule
    captured ``KIND_BASE``, the value is that capture group instead.
    """

    kind: str
    name: str
    #: The header name to read (``http_req`` / ``http_resp``), lower-cased.
    lower: str
    capture_key: str | None
    #: The group number as written; ``int()`` runs only on a capture hit, as before.
    capture_index: str
    #: The server variable's function (``var`` only); None for ``http_status``, which the
    #: response phase takes from the backend's answer (:attr:`_Scope.status`).
    compute: Callable[[RequestFacts], str] | None
    is_status: bool


#: A template split once into literal text and placeholders (what ``PLACEHOLDER.sub`` finds).
_Template: TypeAlias = tuple[str | _Ref, ...]


def _ref(kind: str, name: str) -> _Ref:
    base, _, index = name.rpartition("_")
    capture_key = f"{kind}_{base}" if base and index.isdigit() else None
    is_status = kind == "var" and name.lower() == "http_status"
    compute = variable_getter(name) if kind == "var" and not is_status else None
    return _Ref(kind, name, name.lower(), capture_key, index, compute, is_status)


def _template(text: str) -> _Template:
    """The template split into literal text (as UTF-8 bytes, see :func:`utf8_octets`) and
    placeholders."""
    text = utf8_octets(text)
    parts: list[str | _Ref] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(_ref(match.group(1), match.group(2)))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class _Action:
    """A header action with its name lower-cased and its value template parsed."""

    name: str
    lower: str
    value: _Template


@dataclass(frozen=True, slots=True)
class _Condition:
    ref: _Ref
    #: Where the match's groups go (``KIND_NAME``, as the condition spells it).
    capture_key: str
    #: None when the pattern does not compile: ``re.search`` then raises at match time, as it
    #: did before patterns were compiled ahead.
    regex: re.Pattern[str] | None
    pattern: str
    flags: int
    negate: bool


def _condition(condition: RewriteCondition) -> _Condition:
    lower = condition.variable.lower()
    kind, name = "var", condition.variable
    for prefix in ("http_req_", "http_resp_", "var_"):
        if lower.startswith(prefix):
            kind, name = prefix[:-1], condition.variable[len(prefix) :]
            break
    flags = re.IGNORECASE if condition.ignore_case else 0
    # The values are bytes (server_variables' docstring); so is the pattern, as in nginx.
    pattern = utf8_octets(condition.pattern)
    try:
        regex: re.Pattern[str] | None = re.compile(pattern, flags)
    except re.error:
        regex = None
    return _Condition(_ref(kind, name), f"{kind}_{name}", regex, pattern, flags, condition.negate)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    conditions: tuple[_Condition, ...]
    request_headers: tuple[_Action, ...]
    response_headers: tuple[_Action, ...]
    #: The rule has a URL action (even one changing neither part: it still marks the URL as
    #: rewritten, with the normalised path).
    has_url: bool
    modified_path: _Template | None
    modified_query: _Template | None


def _actions(actions: Iterable[HeaderAction]) -> tuple[_Action, ...]:
    return tuple(
        _Action(a.header_name, a.header_name.lower(), _template(a.header_value)) for a in actions
    )


def _rule(rule: RewriteRule) -> _Rule:
    url = rule.url
    path = query = None
    if url is not None and url.modified_path is not None:
        path = _template(url.modified_path)
    if url is not None and url.modified_query_string is not None:
        query = _template(url.modified_query_string)
    return _Rule(
        rule.name,
        tuple(_condition(c) for c in rule.conditions),
        _actions(rule.request_headers),
        _actions(rule.response_headers),
        url is not None,
        path,
        query,
    )


@dataclass(frozen=True, slots=True)
class CompiledRuleSet:
    """A rewrite rule set with its templates and conditions parsed, ready to run.

    Compile once per configuration (:func:`compile_rule_set`; the gateway's port planner holds
    the compiled sets of its rules for as long as it serves them) and pass it where a
    :class:`RewriteRuleSet` is accepted; a plain rule set given there is compiled per call.
    """

    rule_set: RewriteRuleSet
    rules: tuple[_Rule, ...]
    cert_headers: Mapping[str, str]
    #: False when the response pass cannot change anything (no response actions) and cannot
    #: fail (no conditions to evaluate): it is then skipped.
    response_work: bool


def compile_rule_set(rule_set: RewriteRuleSet) -> CompiledRuleSet:
    """Parse every template and condition of ``rule_set`` once."""
    rules = tuple(_rule(r) for r in rule_set.rules)
    return CompiledRuleSet(
        rule_set,
        rules,
        certificate_headers(rule_set),
        any(r.conditions or r.response_headers for r in rules),
    )


def _compiled(rule_set: RewriteRuleSet | CompiledRuleSet) -> CompiledRuleSet:
    if isinstance(rule_set, CompiledRuleSet):
        return rule_set
    return compile_rule_set(rule_set)


#: Header name as sent → (lower-cased, may be forwarded: token characters, not hop-by-hop).
#: Clients send the same few names on every request; this saves a ``lower()`` and a regex per
#: header and request.
#: Names are client input: past 4,096 distinct ones the cache starts over...
_NAMES: Final[ClearingCache[str, tuple[str, bool]]] = ClearingCache(4096)
#: ...and only names up to this many characters are kept (real ones are short), so the cache
#: stays around a megabyte whatever clients send.
_NAMES_MAX_LENGTH: Final = 64


def _name_info(name: str) -> tuple[str, bool]:
    info = _NAMES.get(name)
    if info is None:
        lower = name.lower()
        info = (lower, lower not in HOP_BY_HOP and _TOKEN_NAME.fullmatch(name) is not None)
        if len(name) <= _NAMES_MAX_LENGTH:
            _NAMES.put(name, info)
    return info


# -- the engine ------------------------------------------------------------------------------


def _get_header(headers: Headers, names: set[str] | None, lower: str) -> str:
    """Every value of header ``lower``, joined; ``names`` (lower-cased names present), when
    known, answers "absent" without a scan."""
    if names is not None and lower not in names:
        return ""
    return ", ".join(v for k, v in headers if k.lower() == lower)


def _set_header(headers: Headers, names: set[str], name: str, lower: str, value: str) -> Headers:
    """Replace every header ``lower`` by one ``name: value`` (none when the value is empty).

    ``headers`` must be a list the caller owns: an absent name is appended in place. ``names``
    is kept equal to the lower-cased names in the result.
    """
    if lower in names:
        headers = [(k, v) for k, v in headers if k.lower() != lower]
        names.discard(lower)
    if value:
        headers.append((name, value))
        names.add(lower)
    return headers


@dataclass(slots=True)
class _Scope:
    """Values visible to a rule: the request, optionally the response, and capture groups.

    Mutable on purpose: one scope lives for one pass over a rule set.
    """

    facts: RequestFacts
    #: ``http_status``: the backend's status in the response pass (instead of a copy of
    #: ``facts`` per response).
    status: int | None
    request: Headers
    #: Lower-cased names in ``request``, when known.
    request_names: set[str] | None
    response: Headers | None
    response_names: set[str]
    captures: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lookup(self, ref: _Ref) -> str:
        if ref.capture_key is not None and self.captures:
            # Case-sensitive, as Azure documents: "the case of the condition variable needs to
            # match case of the capture variable" ({http_req_user-agent_2} after user-agent).
            groups = self.captures.get(ref.capture_key)
            if groups is not None:
                index = int(ref.capture_index)
                return groups[index] if index < len(groups) else ""
        if ref.compute is not None:
            return ref.compute(self.facts)
        if ref.is_status:
            return str(self.status) if self.status is not None else NO_STATUS
        if ref.kind == "http_req":
            return _get_header(self.request, self.request_names, ref.lower)
        return _get_header(self.response or [], self.response_names, ref.lower)

    def expand(self, template: _Template) -> str:
        if len(template) == 1:
            part = template[0]
            return part if isinstance(part, str) else self.lookup(part)
        return "".join(part if isinstance(part, str) else self.lookup(part) for part in template)

    def matches(self, condition: _Condition) -> bool:
        value = self.lookup(condition.ref)
        if condition.regex is not None:
            found = condition.regex.search(value)
        else:
            found = re.search(condition.pattern, value, condition.flags)
        if found is not None and not condition.negate:
            self.captures[condition.capture_key] = (found.group(0), *found.groups(default=""))
        return (found is not None) != condition.negate


def _escape(text: str, *, unsafe: frozenset[int] = _URL_UNSAFE) -> str:
    """The byte string ``text`` for a request line: each unsafe byte as ``%XX``."""
    if _BEYOND_BYTES.search(text) is not None:
        text = _BEYOND_BYTES.sub(lambda m: utf8_octets(m.group(0)), text)
    octets = text.encode("latin-1")
    return "".join(f"%{byte:02X}" if byte in unsafe else chr(byte) for byte in octets)


#: Code points past 0xFF: not one byte each (see :func:`header_value`).
_BEYOND_BYTES: Final = re.compile("[^\x00-\xff]+")


#: A rewritten path also escapes ``?``, which would start the query.
_PATH_UNSAFE: Final = _URL_UNSAFE | {ord("?")}


def _apply_url(rule: _Rule, scope: _Scope) -> None:
    if not rule.has_url:
        return
    path, query = scope.facts.uri_path, scope.facts.query
    if rule.modified_path is not None:
        path = scope.expand(rule.modified_path)
        if not path.startswith("/"):
            path = "/" + path
    if rule.modified_query is not None:
        query = scope.expand(rule.modified_query)
    scope.facts = replace(scope.facts, rewritten_path=path, rewritten_query=query)


def _run(compiled: CompiledRuleSet, scope: _Scope, *, response: bool) -> list[str]:
    """Run the set's rules over the request (or response) in ``scope``; returns fired rules."""
    fired: list[str] = []
    for rule in compiled.rules:
        if scope.captures:
            scope.captures = {}
        if rule.conditions and not all(scope.matches(c) for c in rule.conditions):
            continue
        fired.append(rule.name)
        if response:
            assert scope.response is not None
            for action in rule.response_headers:
                scope.response = _set_header(
                    scope.response,
                    scope.response_names,
                    action.name,
                    action.lower,
                    header_value(scope.expand(action.value)),
                )
            continue
        assert scope.request_names is not None
        for action in rule.request_headers:
            value = header_value(scope.expand(action.value))
            if action.lower == "host" and not value:
                # Azure refuses a rule that deletes Host; one whose value comes out empty at
                # run time (a variable that is empty for this request) leaves Host as it was.
                continue
            scope.request = _set_header(
                scope.request, scope.request_names, action.name, action.lower, value
            )
        _apply_url(rule, scope)
    return fired


#: Lower-cased names of the default headers: a client's own header of that name is dropped.
#: The JA4 header is among them whether or not the gateway sends a fingerprint for this
#: request (no 2022 policy, or a ClientHello it could not fingerprint): a backend must be able
#: to trust that the header, when present, is the gateway's.
_DEFAULT_NAMES: Final = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-original-host",
        "x-original-url",
        "x-appgw-trace-id",
        JA4_HEADER.lower(),
    }
)


def default_forwarding_headers(facts: RequestFacts) -> Headers:
    """The headers Azure adds to every proxied request (how-application-gateway-works)."""
    hosts: list[str] = []
    forwarded: list[str] = []
    for name, value in facts.headers:
        lower = name.lower()
        if lower == "host":
            hosts.append(value)
        elif lower == "x-forwarded-for":
            forwarded.append(value)
    return _defaults(facts, hosts, forwarded)


def _defaults(facts: RequestFacts, hosts: list[str], forwarded: list[str]) -> Headers:
    """The default headers, from the client's Host and X-Forwarded-For values (found by the
    caller's own pass over the headers, so the request is scanned once)."""
    # The default header carries ip:port; the add_x_forwarded_for_proxy variable does not.
    incoming = ", ".join(forwarded)
    own = f"{facts.client_ip}:{facts.client_port}"
    headers = [
        ("X-Forwarded-For", f"{incoming}, {own}" if incoming else own),
        ("X-Forwarded-Proto", facts.scheme),
        ("X-Forwarded-Port", str(facts.server_port)),
        ("X-Original-Host", ", ".join(hosts)),
        ("X-Original-URL", facts.target),
        ("X-AppGW-Trace-Id", facts.trace_id),
    ]
    if facts.ja4 is not None:
        headers.append((JA4_HEADER, facts.ja4))
    return headers


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
    rule_set: RewriteRuleSet | CompiledRuleSet | None,
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
    compiled = _compiled(rule_set) if rule_set is not None else None
    cert_headers = compiled.cert_headers if compiled is not None else _NO_CERT_HEADERS
    # One pass over the client's headers: what is forwarded, and the Host / X-Forwarded-For
    # values the default headers need.
    hosts: list[str] = []
    forwarded: list[str] = []
    headers: Headers = []
    names: set[str] = set()
    sent_cert_header = False
    for name, value in facts.headers:
        lower, forwardable = _name_info(name)
        if lower == "host":
            hosts.append(value)
        elif lower == "x-forwarded-for":
            forwarded.append(value)
        if not forwardable or lower in _DEFAULT_NAMES:
            continue
        if lower in cert_headers:
            if strip_client_cert_headers:
                continue
            sent_cert_header = True
        headers.append((name, value))
        names.add(lower)
    # What the client sent, for the forgery check; needed only when it sent a certificate header.
    client = list(headers) if sent_cert_header else None
    if host is not None:
        headers = _set_header(headers, names, "Host", "host", host)
    for name, value in _defaults(facts, hosts, forwarded):
        if value:
            headers.append((name, value))
            names.add(name.lower())
    scope = _Scope(facts, facts.status, headers, names, None, set())
    fired = _run(compiled, scope, response=False) if compiled is not None else []
    final = scope.facts
    target = facts.target
    rewritten = final.rewritten_path is not None
    if rewritten:
        target = _escape(final.uri_path, unsafe=_PATH_UNSAFE)
        if final.query:
            target += "?" + _escape(final.query)
    forgeable: tuple[str, ...] = ()
    if client is not None:
        forgeable = tuple(
            spelled
            for lower, spelled in cert_headers.items()
            if (sent := [v for k, v in client if k.lower() == lower])
            and [v for k, v in scope.request if k.lower() == lower] == sent
        )
    return RequestRewrite(scope.request, target, rewritten, tuple(fired), forgeable, final)


def rewrite_request_headers(
    facts: RequestFacts,
    rule_set: RewriteRuleSet | CompiledRuleSet | None,
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
    rule_set: RewriteRuleSet | CompiledRuleSet | None,
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
    headers: Headers = []
    names: set[str] = set()
    for name, value in response_headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            headers.append((name, value))
            names.add(lower)
    compiled = _compiled(rule_set) if rule_set is not None else None
    if compiled is None or not compiled.response_work:
        return headers
    scope = _Scope(
        facts, status if status is not None else facts.status, request_headers, None, headers, names
    )
    _run(compiled, scope, response=True)
    assert scope.response is not None
    return scope.response
