"""What the gateway does with one request: a pure decision, made once per request.

:meth:`PortPlanner.plan` takes a request's facts (method, target, Host, headers, HTTP version:
what any HTTP version's codec can give) and the connection's TLS facts (the listener the SNI
chose, the client-certificate decision), and returns one of three plans:

- :class:`Respond`: the gateway answers with one of its pages. A refusal (a Strict failure, a
  CONNECT) closes the connection with a lingering read (:attr:`After.CLOSE`); routing's own
  answers (a redirect, 404, 403 for h2c, 421, the reroute loop's 500) keep it when the body
  can be dropped (:attr:`After.KEEP_ALIVE`).
- :class:`Forward`: the route, the backend, and the rewritten request (headers and target).
- :class:`Fail`: the request cannot be forwarded (no healthy backend); the caller maps the
  error to its page as it maps every proxy error (by its ``status``).

The steps, in nginx's order (the gateway runs nginx): CONNECT is refused, TRACE is 405; the
Host picks the listener (none: 404); a listener whose client authentication did not run on this
connection is 421 (:func:`emulator.core.request.routing.misdirected`); the client-certificate
decision
is applied, made again only where the Host picked a listener with other client authentication
(:func:`client_auth_decision`); an h2c upgrade is 403; then the path map, redirects, the
backend, and the rewrite rules. A rewrite with ``reroute`` on a path-based rule sends the
rewritten path through the path map again (rewrite-http-headers-url); the rewrite of each round
is the one that is forwarded, so ``rewrite_request`` runs once per round; more than
``MAX_REROUTES`` rounds ends with 500, as nginx's internal-redirect cycle does.

Logging is the caller's: a plan carries :class:`Note` values (event, level, detail), the
shell writes them with the connection's listener and client (style guide section 5).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final

from cryptography import x509

from emulator.core.http.pages import GatewayPage, page_for_status
from emulator.core.request.balancing import BackendChoice, HealthTable, Rotation, select_backend
from emulator.core.request.rewrite import (
    CompiledRuleSet,
    RequestFacts,
    RequestRewrite,
    compile_rule_set,
    rewrite_request,
)
from emulator.core.request.routing import (
    MAX_REROUTES,
    Route,
    backend_target,
    misdirected,
    redirect_location,
    route,
    select_rule,
)
from emulator.core.tls.policy import (
    CertDecision,
    VerdictCache,
    VerifyLog,
    assess_handshake,
    decide_client_cert,
    without_client_auth,
)
from emulator.errors import BackendError
from emulator.model import Listener, RedirectConfig, RewriteRuleSet, RoutingRule

__all__ = [
    "After",
    "Fail",
    "Forward",
    "Note",
    "Plan",
    "PortPlanner",
    "Respond",
    "client_auth_decision",
]

#: The port a Host header leaves out (RFC 9110 section 7.2: the scheme's default).
DEFAULT_HTTP_PORT: Final = 80


class After(enum.Enum):
    """What happens to the connection after a gateway page."""

    #: Drop the request body (when short) and keep the connection for the next request.
    KEEP_ALIVE = "keep-alive"
    #: Keep the connection only when the request body was read whole (a backend failure: an
    #: unread body cannot be skipped safely).
    KEEP_IF_READ = "keep-if-read"
    #: ``Connection: close``, then a lingering read so a client still sending reads the page.
    CLOSE = "close"
    #: ``Connection: close`` and nothing more is read (a request that timed out).
    CLOSE_NOW = "close-now"


@dataclass(frozen=True, slots=True)
class Note:
    """One log line for the caller to write, after the connection's listener and client."""

    event: str
    detail: str
    level: int = logging.INFO


_NO_NOTES: Final[tuple[Note, ...]] = ()


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with a gateway page."""

    page: GatewayPage
    after: After
    #: The facts the access record shows (after any reroute).
    facts: RequestFacts
    rule: RoutingRule | None
    route: Route | None = None
    #: Headers the page carries beyond its own (a redirect's Location).
    headers: tuple[tuple[str, str], ...] = ()
    notes: tuple[Note, ...] = _NO_NOTES


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to ``backend`` and its response back."""

    facts: RequestFacts
    rule: RoutingRule
    route: Route
    backend: BackendChoice
    rewrite: RequestRewrite
    #: The compiled rule set the response pass runs (None: the route has none).
    rule_set: CompiledRuleSet | None
    #: The backend request's target (after URL rewrites and the settings' path override).
    target: str
    #: The rewritten headers, a Host among them (one naming the backend when the client sent
    #: none: the backend request is HTTP/1.1, which requires it).
    headers: list[tuple[str, str]]
    #: The Host the backend receives.
    host: str
    notes: tuple[Note, ...] = _NO_NOTES


@dataclass(frozen=True, slots=True)
class Fail:
    """The request cannot be forwarded; ``error.status`` says the page (502)."""

    error: BackendError
    facts: RequestFacts
    rule: RoutingRule
    route: Route


Plan = Respond | Forward | Fail


def client_auth_decision(
    listener: Listener | None,
    *,
    presented: Sequence[x509.Certificate] = (),
    log: VerifyLog | None = None,
    at: datetime | None = None,
    handshake: CertDecision | None = None,
    verdicts: VerdictCache | None = None,
) -> CertDecision:
    """The client-certificate decision for ``listener`` (None: a plain-HTTP port).

    Made once per connection from the handshake (``presented``, the verify callback's ``log``,
    the time ``at``), and again only for a request whose Host picked a listener without
    client authentication on a connection whose SNI listener has it: ``handshake`` is then the
    connection's decision, which that listener refuses nothing of, and whose verification stays
    the handshake's (nginx's ``$ssl_client_verify`` is a fact of the connection).
    ``verdicts`` remembers Strict verdicts (the port's cache).

    Raises:
        ValueError: ``listener`` authenticates clients and no ``at`` was given.
    """
    if handshake is not None:
        return without_client_auth(handshake)
    if listener is None or listener.client_auth is None:
        return decide_client_cert(None, presented=bool(presented), log=log)
    if at is None:
        msg = f"listener '{listener.name}' authenticates clients: the decision needs `at`"
        raise ValueError(msg)
    return assess_handshake(
        listener.ssl_profile, presented=presented, log=log, at=at, verdicts=verdicts
    )


@dataclass(frozen=True, slots=True)
class PortPlanner:
    """What planning needs of one frontend port, built once when the gateway starts.

    ``rules`` are the port's routing rules in the order Azure tries their listeners. The
    compiled rewrite rule sets of every rule on the port are made here, once (and live as long
    as the port's configuration does).
    """

    rules: tuple[RoutingRule, ...]
    rotation: Rotation = field(default_factory=Rotation)
    #: Backend health from the custom probes; None: every backend is healthy.
    health: HealthTable | None = None
    #: ``--strip-client-cert-headers``: drop client headers that rules fill from a certificate.
    strip_client_cert_headers: bool = False
    #: The local port a listener is reachable on (redirect Locations); None: not served here.
    redirect_port: Callable[[Listener], int | None] | None = None
    #: Rewrite rule set name → its compiled form (names are unique in a gateway).
    rule_sets: Mapping[str, CompiledRuleSet] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        rules: tuple[RoutingRule, ...],
        *,
        rotation: Rotation | None = None,
        health: HealthTable | None = None,
        strip_client_cert_headers: bool = False,
        redirect_port: Callable[[Listener], int | None] | None = None,
    ) -> PortPlanner:
        """A planner for ``rules`` with every rewrite rule set they use compiled."""
        compiled: dict[str, CompiledRuleSet] = {}
        for rule in rules:
            for rule_set in rule.rewrite_rule_sets:
                compiled.setdefault(rule_set.name, compile_rule_set(rule_set))
        return cls(
            rules,
            rotation if rotation is not None else Rotation(),
            health,
            strip_client_cert_headers,
            redirect_port,
            compiled,
        )

    def compiled(self, rule_set: RewriteRuleSet | None) -> CompiledRuleSet | None:
        if rule_set is None:
            return None
        found = self.rule_sets.get(rule_set.name)
        if found is not None and found.rule_set is rule_set:
            return found
        return compile_rule_set(rule_set)

    def plan(
        self,
        facts: RequestFacts,
        *,
        host: str,
        rule: RoutingRule | None,
        tls_rule: RoutingRule | None,
        decision: CertDecision,
        upgrade_h2c: bool,
    ) -> Plan:
        """The plan for one request (see the module docstring for the steps).

        ``host`` is the request's validated host ("" when none); ``rule`` the rule whose
        listener takes it (:meth:`rule_for_host`, which the caller may remember per
        connection); ``tls_rule`` the rule the SNI chose (None on an HTTP port).
        """
        if facts.method == "CONNECT":
            # A tunnel request: the gateway is no forward proxy. Differs from Azure: nginx
            # answers 405, a status the gateway has no page for.
            return Respond(
                GatewayPage.BAD_REQUEST,
                After.CLOSE,
                facts,
                rule,
                notes=(Note("http.bad_request", "reason=CONNECT is not supported"),),
            )
        if facts.method == "TRACE":
            # nginx refuses TRACE in ngx_http_process_request_header, before any server or
            # location: 405 "Not Allowed", and the connection is kept (the monitoring
            # reference logs it as ERRORINFO_INVALID_METHOD_TRACE; Azure documents no status).
            return Respond(
                GatewayPage.NOT_ALLOWED,
                After.KEEP_ALIVE,
                facts,
                rule,
                notes=(Note("http.bad_request", "reason=TRACE is not allowed"),),
            )
        if rule is None:
            # v2: no listener on this port takes the host (appgw-behaviour.md section 7).
            return Respond(
                GatewayPage.NOT_FOUND,
                After.KEEP_ALIVE,
                facts,
                None,
                notes=(Note("http.no_listener", f"port={facts.server_port} host={host or '-'}"),),
            )
        if tls_rule is not None and tls_rule.listener is not rule.listener:
            if misdirected(tls_rule.listener, rule.listener):
                return Respond(
                    GatewayPage.MISDIRECTED_REQUEST,
                    After.KEEP_ALIVE,
                    facts,
                    rule,
                    notes=(
                        Note(
                            "http.misdirected",
                            f"sni_listener={tls_rule.listener.name} "
                            f"host_listener={rule.listener.name}",
                        ),
                    ),
                )
            if rule.listener.client_auth is None and tls_rule.listener.client_auth is not None:
                # Routed by Host to a listener that does not authenticate clients (one that
                # does, with another profile, got 421 above; with the same profile the
                # decision stands): the backend learns the handshake's result, FAILED:<reason>
                # included, never NONE ("no certificate") for a certificate Strict rejected.
                decision = client_auth_decision(rule.listener, handshake=decision)
                facts = replace(facts, verification=decision.verification)
        if not decision.allowed and decision.page is not None:
            return Respond(decision.page, After.CLOSE, facts, rule)
        if upgrade_h2c:
            # configuration-listeners, "HTTP/2 support": h2c upgrades get 403, after the
            # checks nginx makes before any location (a Strict failure stays a 400). On HTTPS
            # listeners too: a backend that accepted the upgrade would read HTTP/2 frames
            # whose headers no rewrite rule ever saw.
            return Respond(
                GatewayPage.FORBIDDEN,
                After.KEEP_ALIVE,
                facts,
                rule,
                notes=(
                    Note(
                        "http.h2c_refused", f"upgrade={header_safe(facts.header('upgrade') or '')}"
                    ),
                ),
            )
        return self._route(facts, rule)

    def rule_for_host(self, host: str) -> RoutingRule | None:
        """The rule whose listener takes a request for ``host``; None: the gateway answers 404."""
        return select_rule(self.rules, host)

    def _route(self, facts: RequestFacts, rule: RoutingRule) -> Plan:
        notes: tuple[Note, ...] = _NO_NOTES
        current = route(rule, facts.uri_path)
        for _ in range(MAX_REROUTES + 1):
            if current.redirect is not None:
                return self._redirect(current, current.redirect, facts, rule, notes)
            settings = current.settings
            assert settings is not None
            backend = None
            host = settings.host_name
            if settings.pick_host_name_from_backend_address:
                # The Host is the backend's own name: choose the backend first.
                try:
                    backend = self._select(current, facts)
                except BackendError as exc:
                    return Fail(exc, facts, rule, current)
                host = backend.host
            rule_set = self.compiled(current.rewrite_rule_set)
            rewritten = rewrite_request(
                facts,
                rule_set,
                host=host,
                strip_client_cert_headers=self.strip_client_cert_headers,
            )
            if rule_set is None or not _rerouted(current, rule_set, rewritten):
                if backend is None:
                    try:
                        backend = self._select(current, facts)
                    except BackendError as exc:
                        return Fail(exc, facts, rule, current)
                return _forward(facts, rule, current, backend, rewritten, rule_set, notes)
            notes = (
                *notes,
                Note(
                    "rewrite.reroute",
                    f"from={facts.uri_path} to={rewritten.facts.uri_path}",
                    logging.DEBUG,
                ),
            )
            facts = rewritten.facts
            current = route(rule, facts.uri_path)
        notes = (
            *notes,
            Note(
                "rewrite.reroute_loop",
                f"more than {MAX_REROUTES} re-evaluations",
                logging.WARNING,
            ),
        )
        return Respond(
            GatewayPage.INTERNAL_ERROR, After.KEEP_ALIVE, facts, rule, current, notes=notes
        )

    def _select(self, current: Route, facts: RequestFacts) -> BackendChoice:
        assert current.pool is not None
        assert current.settings is not None
        return select_backend(
            current.pool,
            current.settings,
            facts.headers,
            health=self.health,
            rotation=self.rotation,
        )

    def _redirect(
        self,
        current: Route,
        redirect: RedirectConfig,
        facts: RequestFacts,
        rule: RoutingRule,
        notes: tuple[Note, ...],
    ) -> Respond:
        target_port = None
        if redirect.target_listener is not None:
            local = self.redirect_port
            target_port = local(redirect.target_listener) if local is not None else None
            if target_port is None:
                target_port = redirect.target_listener.frontend_port
        raw_path, _, query = facts.target.partition("?")
        location = redirect_location(
            redirect,
            request_host=facts.header("host") or "",
            target_port=target_port,
            path=raw_path,
            query=query,
        )
        status = redirect.redirect_type.status
        note = Note(
            "http.redirect", f"redirect={redirect.name} status={status} location={location}"
        )
        return Respond(
            page_for_status(status),
            After.KEEP_ALIVE,
            facts,
            rule,
            current,
            headers=(("Location", header_safe(location)),),
            notes=(*notes, note),
        )


def _forward(
    facts: RequestFacts,
    rule: RoutingRule,
    current: Route,
    backend: BackendChoice,
    rewritten: RequestRewrite,
    rule_set: CompiledRuleSet | None,
    notes: tuple[Note, ...],
) -> Forward:
    settings = current.settings
    assert settings is not None
    target = backend_target(
        rewritten.target, rewritten.facts.uri_path, settings, current.matched_pattern
    )
    headers = rewritten.headers
    host = next((v for k, v in headers if k.lower() == "host"), None)
    if host is None:
        # An HTTP/1.0 client may omit Host, but the backend request is HTTP/1.1, which
        # requires one: name the backend, as nginx's default ``Host $proxy_host`` does.
        host = backend.text if backend.port != DEFAULT_HTTP_PORT else backend.host
        headers = [("Host", host), *headers]
    return Forward(facts, rule, current, backend, rewritten, rule_set, target, headers, host, notes)


def _rerouted(current: Route, rule_set: CompiledRuleSet, rewritten: RequestRewrite) -> bool:
    """True when a rule that fired rewrote the URL with ``reroute`` on a path-based rule."""
    if current.rule.url_path_map is None or not rewritten.url_rewritten:
        return False
    fired = rewritten.fired
    return any(
        r.url is not None and r.url.reroute and r.name in fired for r in rule_set.rule_set.rules
    )


#: ``--explain`` only (off by default, so responses stay byte-identical to Azure's): the
#: response header that carries why a Strict client certificate was rejected.
EXPLAIN_HEADER: Final = "X-AppGW-Emulator-Client-Cert-Explained"
_CERT_PAGES: Final = frozenset({GatewayPage.NO_CLIENT_CERT, GatewayPage.CLIENT_CERT_ERROR})


def explained(
    page: GatewayPage, headers: Sequence[tuple[str, str]], decision: CertDecision | None
) -> Sequence[tuple[str, str]]:
    """A page's ``headers`` under ``--explain``: with :data:`EXPLAIN_HEADER` when the page
    refuses the client certificate and the decision says why."""
    if page in _CERT_PAGES and decision is not None and decision.explanation:
        return (*headers, (EXPLAIN_HEADER, header_safe(decision.explanation)))
    return headers


def header_safe(text: str) -> str:
    """``text`` as a header value: Latin-1 only (escapes beyond), no control characters."""
    escaped = text.encode("latin-1", "backslashreplace").decode("latin-1")
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in escaped)
