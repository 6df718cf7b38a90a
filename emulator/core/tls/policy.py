"""SSL profile → OpenSSL server context, and the client-certificate decision table.

Theory of operation
-------------------
Azure Application Gateway never aborts a TLS handshake over the client certificate. In Strict
mode the handshake completes whatever the client sent, and the gateway then answers the first
request with HTTP 400 (``appgw-behaviour.md`` §3); in Passthrough mode it asks for a certificate
and forwards the request whatever came (§4). nginx, which the gateway runs, gets this by
verifying with a callback that always says "carry on" and reading the verification result
after the handshake.

We do the same with pyOpenSSL:

1. :func:`build_server_context` makes one ``SSL.Context`` per listener: server certificate and
   chain from the template's PFX, protocol range and ciphers from the SSL policy, ALPN
   ``http/1.1`` only, and — when the listener's SSL profile authenticates clients —
   ``VERIFY_PEER`` *without* ``FAIL_IF_NO_PEER_CERT``, plus :func:`_record_verify` as callback.
   In Strict mode the trust store holds exactly the uploaded CA certificates and their subjects
   are advertised in the CertificateRequest. In Passthrough the store is empty: nothing the
   client sends can pass, and nothing is rejected.
2. The TLS stream gives each connection a fresh :class:`VerifyLog` as the pyOpenSSL
   connection's app data. OpenSSL calls the callback for every certificate of the chain it
   builds, and again for every problem; we count every call, record each problem and return
   True so the handshake goes on.
3. After the handshake the HTTP layer calls :func:`decide_client_cert` with the profile's mode,
   whether a certificate came, and the log. The decision comes from :data:`DECISION_TABLE`, the
   spec of what each mode does; the tests iterate over it.

The verification result follows OpenSSL's ``SSL_get_verify_result``: with a callback that keeps
going, each error overwrites the previous one, so the *last* recorded error is the one nginx —
and therefore the gateway's ``sslClientVerify`` — reports.

4. :func:`assess_handshake` is what the proxy calls: for Strict it hands the handshake's
   errors to :func:`emulator.core.tls.chain.assess_client_cert`, which adds the issuer-DN check,
   says whether OCSP must still be asked, and explains a failure in words. OCSP needs I/O, so
   the proxy asks the responder after the handshake, before routing the first request, and
   settles the decision with :func:`resolve_ocsp`. Clients reconnect with the same chain, so
   the decision is cached per (profile, presented chain, OpenSSL errors) — only while the time
   is inside every involved certificate's validity window, never for a time failure.

Session resumption is off
-------------------------
OpenSSL verifies nothing on a resumed handshake: the callback is not called, and the peer
certificate is the one stored in the session. nginx keeps the session's verification result
with it and reads that back; pyOpenSSL does not expose the stored result
(``SSL_SESSION_get_verify_result`` has no binding). A resumed session would therefore carry a
certificate nobody verified on this connection, or one a Passthrough listener of the same port
accepted into a Strict listener (the shape of nginx CVE-2025-23419). So no context resumes:
:func:`_forbid_resumption` turns off both the server's session cache and session tickets (either
alone still resumes), on every listener context and on each port's starting context,
where OpenSSL looks sessions up. A client offering a session gets a full handshake.

Second line of defence: :class:`VerifyLog` counts the callback's calls, and a presented
certificate with none is ``FAILED:unspecified certificate verification error``, never
``SUCCESS`` (an empty record only means "no problem" when the callback ran).

What ``sslClientVerify`` logs on a Passthrough listener is not documented (checked: mutual
authentication overview, troubleshooting, the passthrough quickstart). We log ``PASSTHROUGH``
when a certificate was presented and ``NONE`` when not — the documented values of
``client_certificate_verification`` on such a listener. The raw OpenSSL result would always be
a failure against an empty trust store (Passthrough trusts nothing), which would only mislead.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final, TypeAlias

from cryptography import x509
from OpenSSL import SSL, crypto

from emulator.arm.ssl_policies import TlsVersion, openssl_cipher_name
from emulator.core.bounded_cache import ClearingCache
from emulator.core.http.pages import GatewayPage
from emulator.core.request.routing import select_tls_rule
from emulator.core.tls.chain import ClientCertVerdict, Stage, apply_ocsp, assess_client_cert
from emulator.core.tls.ocsp import OcspOutcome
from emulator.core.tls.verify import (
    CERT_HAS_EXPIRED,
    CERT_NOT_YET_VALID,
    UNSPECIFIED,
    verify_error_text,
)
from emulator.model import ClientAuthMode, Listener, RoutingRule, SslProfile

__all__ = [
    "DECISION_TABLE",
    "NOT_VERIFIED",
    "NOT_VERIFIED_EXPLANATION",
    "VERDICT_CACHE_SIZE",
    "CertDecision",
    "CertState",
    "VerdictCache",
    "VerifyLog",
    "alpn_protocols",
    "assess_handshake",
    "build_port_contexts",
    "build_server_context",
    "decide_client_cert",
    "negotiated_version_allowed",
    "offer_alpn",
    "resolve_ocsp",
    "select_alpn",
    "without_client_auth",
]

_PROTO: Final = {
    TlsVersion.TLSV1_0: SSL.TLS1_VERSION,
    TlsVersion.TLSV1_1: SSL.TLS1_1_VERSION,
    TlsVersion.TLSV1_2: SSL.TLS1_2_VERSION,
    TlsVersion.TLSV1_3: SSL.TLS1_3_VERSION,
}
#: The TLS 1.3 suites Azure's 2022 policies list (TLS policy overview); OpenSSL would also offer
#: ChaCha20 by default.
TLS13_SUITES: Final = b"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
ALPN_HTTP11: Final = b"http/1.1"
ALPN_H2: Final = b"h2"


class CertState(enum.Enum):
    """What the client presented, as far as the SSL profile is concerned."""

    ABSENT = "absent"
    VALID = "valid"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class _Rule:
    allowed: bool
    #: Value of the ``client_certificate_verification`` server variable.
    verification: str
    page: GatewayPage | None


#: (mode, what the client presented) → what the gateway does. ``None`` mode: the listener
#: requests no certificate (no SSL profile, or a profile without client authentication).
DECISION_TABLE: Final[dict[tuple[ClientAuthMode | None, CertState], _Rule]] = {
    (ClientAuthMode.STRICT, CertState.ABSENT): _Rule(False, "NONE", GatewayPage.NO_CLIENT_CERT),
    (ClientAuthMode.STRICT, CertState.VALID): _Rule(True, "SUCCESS", None),
    (ClientAuthMode.STRICT, CertState.INVALID): _Rule(
        False, "FAILED", GatewayPage.CLIENT_CERT_ERROR
    ),
    (ClientAuthMode.PASSTHROUGH, CertState.ABSENT): _Rule(True, "NONE", None),
    (ClientAuthMode.PASSTHROUGH, CertState.VALID): _Rule(True, "PASSTHROUGH", None),
    (ClientAuthMode.PASSTHROUGH, CertState.INVALID): _Rule(True, "PASSTHROUGH", None),
    (None, CertState.ABSENT): _Rule(True, "NONE", None),
    (None, CertState.VALID): _Rule(True, "NONE", None),
    (None, CertState.INVALID): _Rule(True, "NONE", None),
}


#: ``sslClientVerify`` for a presented certificate the handshake did not verify.
NOT_VERIFIED: Final = "FAILED:" + verify_error_text(UNSPECIFIED)
NOT_VERIFIED_EXPLANATION: Final = (
    "the handshake ran no verification of the client certificate (OpenSSL never called the "
    "verify callback, as on a resumed TLS session); the gateway refuses a certificate it did "
    "not verify on this connection: connect again without offering a session"
)


@dataclass
class VerifyLog:
    """Per-connection record of OpenSSL's verification: how often the callback ran, and the
    problems it reported as (error number, depth).

    Mutable by design: OpenSSL's callback updates it during the handshake; nothing reads it
    before the handshake is over. ``calls`` is what tells "verified, no problem" (calls, no
    errors) from "never verified" (no calls): a resumed handshake does not call the callback.
    """

    errors: list[tuple[int, int]] = field(default_factory=list)
    #: Verify callback calls: one per certificate of the chain and one per problem.
    calls: int = 0
    #: The rule whose listener the servername callback chose for this connection (None: the
    #: port has one listener, or no ClientHello was read).
    rule: RoutingRule | None = None

    @property
    def verified(self) -> bool:
        """True when OpenSSL ran the verification in this handshake."""
        return self.calls > 0

    @property
    def result(self) -> str:
        """``SUCCESS`` or ``FAILED:<OpenSSL reason>`` for a presented chain, as nginx's
        ``$ssl_client_verify``; a chain the callback never saw failed."""
        if not self.calls:
            return NOT_VERIFIED
        if not self.errors:
            return "SUCCESS"
        return "FAILED:" + verify_error_text(self.errors[-1][0])


@dataclass(frozen=True, slots=True)
class CertDecision:
    allowed: bool
    #: ``client_certificate_verification``: SUCCESS, PASSTHROUGH or NONE.
    verification: str
    #: The access log's ``sslClientVerify``: NONE, SUCCESS or FAILED:<reason>.
    ssl_client_verify: str
    page: GatewayPage | None
    reason: str
    #: The emulator-only ``clientCertFailureExplained``: why a Strict certificate failed.
    explanation: str = ""
    #: Strict's full verdict; its ``ocsp`` is set while an OCSP answer is still needed.
    verdict: ClientCertVerdict | None = None

    @property
    def ocsp_pending(self) -> bool:
        return self.verdict is not None and self.verdict.ocsp is not None


def decide_client_cert(
    mode: ClientAuthMode | None, *, presented: bool, log: VerifyLog | None
) -> CertDecision:
    """Apply :data:`DECISION_TABLE` to one connection's handshake outcome.

    A presented certificate without a log, or with a log the callback never wrote to, was not
    verified: it is INVALID, never VALID.
    """
    if not presented:
        state, verify = CertState.ABSENT, "NONE"
    else:
        verify = log.result if log is not None else NOT_VERIFIED
        state = CertState.VALID if verify == "SUCCESS" else CertState.INVALID
    rule = DECISION_TABLE[(mode, state)]
    mode_text = mode.value if mode is not None else "no client authentication"
    if state is CertState.ABSENT:
        reason = f"{mode_text}: no client certificate was sent"
    else:
        reason = f"{mode_text}: client certificate verification {verify}"
    return CertDecision(rule.allowed, rule.verification, verify, rule.page, reason)


def assess_handshake(
    profile: SslProfile | None,
    *,
    presented: Sequence[x509.Certificate],
    log: VerifyLog | None,
    at: datetime,
    verdicts: VerdictCache | None = None,
) -> CertDecision:
    """The decision for one connection, from what its handshake showed (see the docstring).

    ``presented`` is what the client sent, leaf first; ``log`` the verify callback's record
    (None: no handshake, e.g. ``check-ca``, and the chain emulation verifies); ``at`` the
    verification time (timezone-aware, like the certificates' validity).

    Strict verdicts are remembered in ``verdicts`` when given (a :class:`VerdictCache`, one per
    frontend port of a running gateway): clients reconnect with the same chain again and
    again, and explaining, checking the issuer DN and finding the OCSP issuer would otherwise
    be repeated per connection (``bench/README.md`` has the cost). The OCSP answer itself is
    never part of it: a verdict whose OCSP check is pending is remembered as pending, and each
    connection asks (the runtime's OCSP cache) on its own.
    """
    mode = profile.client_auth if profile is not None else None
    if mode is ClientAuthMode.STRICT and profile is not None:
        return _assess_strict(profile, presented, log, at, verdicts)
    base = decide_client_cert(mode, presented=bool(presented), log=log)
    if mode is ClientAuthMode.PASSTHROUGH:
        return replace(base, ssl_client_verify="PASSTHROUGH" if presented else "NONE")
    return base


#: How many Strict verdicts :func:`assess_handshake` remembers, over all profiles. The working
#: set is one entry per (profile, client chain, OpenSSL errors): a handful for a test setup,
#: tens for a load test with per-client certificates. An entry holds its certificates (a few
#: KB), so 256 bound the cache to about a megabyte whatever clients send.
VERDICT_CACHE_SIZE: Final = 256
#: OpenSSL errors that depend on the verification time; their explanation also names that
#: time ("checked at ..."), so a verdict with one is never remembered.
_TIME_ERRORS: Final = frozenset({CERT_NOT_YET_VALID, CERT_HAS_EXPIRED})

#: (id of the profile, signatures of the presented certificates, OpenSSL's errors or None).
#: Signatures are a cheap stand-in for the certificates (hashing a ``Certificate`` costs more);
#: a hit still compares the certificates themselves, so two chains that share
#: signatures (a tampered copy of a certificate) never share a verdict.
_VerdictKey: TypeAlias = tuple[int, tuple[bytes, ...], tuple[tuple[int, int], ...] | None]


@dataclass(frozen=True, slots=True)
class _CachedDecision:
    """One remembered Strict decision and the time window in which it holds."""

    #: Held so that ``id(profile)`` in the key cannot be reused by another profile while the
    #: entry lives (hashing an ``SslProfile`` would hash every uploaded certificate).
    profile: SslProfile
    presented: tuple[x509.Certificate, ...]
    #: Latest ``not_valid_before`` and earliest ``not_valid_after`` over the presented and the
    #: trusted certificates: inside this window no certificate is expired or not yet valid,
    #: which is the only way the verdict depends on the time.
    valid_from: datetime
    valid_until: datetime
    decision: CertDecision


class VerdictCache:
    """Strict decisions by (profile, presented chain, OpenSSL errors), valid in a time window.

    A decision is a function of the profile (uploads, issuer-DN and revocation settings; the
    frozen ``SslProfile`` object stands for all of them), the presented certificates, the
    handshake's verify errors and the time. The time only matters through certificate
    validity: path building prefers an issuer valid at that time, and a certificate outside its
    validity fails. So an entry is used only while the time is inside every involved
    certificate's validity, and a decision made outside that window (or on OpenSSL errors that
    are about validity) is not stored. Decisions are frozen and nothing changes them (OCSP
    settles a *new* decision), so one object can serve many connections.

    Bounded like the other caches of the hot paths (:mod:`emulator.core.bounded_cache`): a
    client that sends a new chain every time cannot grow it past the bound. Its owner (the
    port runtime) keeps the profiles alive as long as the cache, and every entry holds its
    profile too, so the ``id()`` in a key always names the profile it was made for.
    """

    __slots__ = ("_entries",)

    def __init__(self, max_entries: int = VERDICT_CACHE_SIZE) -> None:
        self._entries: ClearingCache[_VerdictKey, _CachedDecision] = ClearingCache(max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def lookup(
        self,
        key: _VerdictKey,
        profile: SslProfile,
        presented: tuple[x509.Certificate, ...],
        at: datetime,
    ) -> CertDecision | None:
        entry = self._entries.get(key)
        if (
            entry is None
            or entry.profile is not profile
            or entry.presented != presented
            or not entry.valid_from <= at <= entry.valid_until
        ):
            return None
        return entry.decision

    def store(
        self,
        key: _VerdictKey,
        profile: SslProfile,
        presented: tuple[x509.Certificate, ...],
        at: datetime,
        decision: CertDecision,
    ) -> None:
        errors = key[2]
        if errors is not None and any(errno in _TIME_ERRORS for errno, _ in errors):
            return
        certs = [
            *presented,
            *(c for upload in profile.trusted_client_cas for c in upload.certificates),
        ]
        if not certs:
            return
        valid_from = max(c.not_valid_before_utc for c in certs)
        valid_until = min(c.not_valid_after_utc for c in certs)
        if not valid_from <= at <= valid_until:
            return
        self._entries.put(
            key, _CachedDecision(profile, presented, valid_from, valid_until, decision)
        )


def _assess_strict(
    profile: SslProfile,
    presented: Sequence[x509.Certificate],
    log: VerifyLog | None,
    at: datetime,
    verdicts: VerdictCache | None,
) -> CertDecision:
    """:func:`assess_handshake` for a Strict profile, through ``verdicts`` when given."""
    chain = tuple(presented)
    if chain and log is not None and not log.verified:
        # A handshake that verified nothing (see "Session resumption is off"); never cached,
        # because it says nothing about the chain.
        return _from_verdict(ClientCertVerdict(NOT_VERIFIED, NOT_VERIFIED_EXPLANATION, Stage.CHAIN))
    errors = tuple(log.errors) if log is not None else None
    key: _VerdictKey = (id(profile), tuple([c.signature for c in chain]), errors)
    cached = verdicts.lookup(key, profile, chain, at) if verdicts is not None else None
    if cached is not None:
        return cached
    verdict = assess_client_cert(
        chain,
        profile.trusted_client_cas,
        at=at,
        verify_issuer_dn=profile.verify_issuer_dn,
        revocation=profile.revocation,
        openssl_errors=errors,
    )
    decision = _from_verdict(verdict)
    if verdicts is not None:
        verdicts.store(key, profile, chain, at, decision)
    return decision


def _from_verdict(verdict: ClientCertVerdict) -> CertDecision:
    if verdict.ssl_client_verify == "NONE":
        state = CertState.ABSENT
    elif verdict.ssl_client_verify == "SUCCESS":
        state = CertState.VALID
    else:
        state = CertState.INVALID
    rule = DECISION_TABLE[(ClientAuthMode.STRICT, state)]
    if state is CertState.ABSENT:
        reason = "Strict: no client certificate was sent"
    else:
        reason = f"Strict: client certificate verification {verdict.ssl_client_verify}"
        if verdict.ocsp is not None:
            reason += f" so far; OCSP answer pending from {verdict.ocsp.url}"
    return CertDecision(
        rule.allowed,
        rule.verification,
        verdict.ssl_client_verify,
        rule.page,
        reason,
        explanation=verdict.explanation,
        verdict=verdict,
    )


def without_client_auth(decision: CertDecision) -> CertDecision:
    """The handshake's decision for a request whose Host picked a listener that does not
    authenticate clients: that listener refuses nothing, and the verification stays what the
    handshake found (nginx's ``$ssl_client_verify`` is a fact of the connection, whichever
    server block the Host selects). So a certificate Strict rejected is forwarded as
    ``FAILED:<reason>`` with its certificate variables, never as ``NONE``, which means "no
    certificate"; a certificate Strict passed stays ``SUCCESS``, a Passthrough one
    ``PASSTHROUGH``.
    """
    return replace(decision, allowed=True, page=None, verification=decision.ssl_client_verify)


def resolve_ocsp(decision: CertDecision, outcome: OcspOutcome) -> CertDecision:
    """Settle a decision whose OCSP check was pending, with the responder's (or cache's) answer."""
    if decision.verdict is None or decision.verdict.ocsp is None:
        return decision
    return _from_verdict(apply_ocsp(decision.verdict, outcome))


def _record_verify(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    """OpenSSL's verify callback: count the call, note the problem, never stop the handshake."""
    log = conn.get_app_data()
    if isinstance(log, VerifyLog):
        log.calls += 1
        if not ok:
            log.errors.append((errno, depth))
    return True


def _forbid_resumption(ctx: SSL.Context) -> None:
    """No session cache, no session tickets: every handshake is a full one, which verifies.

    Both are needed: without the cache OpenSSL still resumes from a ticket, and with
    ``OP_NO_TICKET`` alone it keeps sessions in its cache and resumes from there (TLS 1.2 and
    1.3 alike; checked on pyOpenSSL 26.4 with OpenSSL 4.0). See "Session resumption is off" in
    the module docstring.
    """
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_options(SSL.OP_NO_TICKET)


def _select_alpn(conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
    # Only HTTP/1.1 is emulated; a client offering just h2 gets no ALPN rather than a failure,
    # which is what a server without h2 does.
    return ALPN_HTTP11 if ALPN_HTTP11 in offered else SSL.NO_OVERLAPPING_PROTOCOLS


# -- ALPN with HTTP/2 (prepared for the HTTP/2 frontend; not wired into the listener yet) ------
# nginx (ngx_http_ssl_alpn_select) answers from its own list, h2 first when HTTP/2 is on, with
# SSL_select_next_proto: the server's order wins, so a client offering "http/1.1, h2" gets h2.
# Differs from Azure: when nothing overlaps nginx fails the handshake (a fatal
# no_application_protocol alert); these functions keep today's behaviour of no ALPN at all.


def alpn_protocols(*, enable_http2: bool) -> tuple[bytes, ...]:
    """The ALPN protocols an HTTPS listener offers, most preferred first: ``h2`` then
    ``http/1.1`` when the gateway has ``enableHttp2: true`` (a gateway-wide switch in ARM,
    ``GatewayConfig.enable_http2``), else ``http/1.1`` only."""
    return (ALPN_H2, ALPN_HTTP11) if enable_http2 else (ALPN_HTTP11,)


def select_alpn(offered: Sequence[bytes], *, enable_http2: bool) -> bytes | None:
    """The protocol the server picks from a ClientHello's ALPN list (server preference), or
    None when none of :func:`alpn_protocols` is offered."""
    for protocol in alpn_protocols(enable_http2=enable_http2):
        if protocol in offered:
            return protocol
    return None


def offer_alpn(ctx: SSL.Context, *, enable_http2: bool) -> None:
    """Make ``ctx`` choose ALPN as :func:`select_alpn` says. OpenSSL asks the context the
    servername callback switched to, so on a port with several listeners this goes on the
    port context and on every listener context (:func:`build_port_contexts`), before the
    first connection (pyOpenSSL refuses to change a context once a connection used it)."""

    def choose(conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
        chosen = select_alpn(offered, enable_http2=enable_http2)
        return SSL.NO_OVERLAPPING_PROTOCOLS if chosen is None else chosen

    ctx.set_alpn_select_callback(choose)  # type: ignore[arg-type]  # pyOpenSSL accepts the sentinel


def build_server_context(listener: Listener) -> SSL.Context:
    """The pyOpenSSL context for an HTTPS listener (see the module docstring)."""
    cert = listener.server_certificate
    if cert is None:
        raise ValueError(f"listener {listener.name} has no server certificate")
    policy = listener.ssl_policy
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(_PROTO[policy.min_version])
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION if policy.tls13 else SSL.TLS1_2_VERSION)
    ciphers = [name for s in policy.cipher_suites if (name := openssl_cipher_name(s))]
    cipher_list = ":".join(ciphers) or "HIGH:!aNULL"
    if policy.min_version in (TlsVersion.TLSV1_0, TlsVersion.TLSV1_1):
        # OpenSSL 3 refuses TLS 1.0/1.1 at the default security level.
        cipher_list += ":@SECLEVEL=0"
    ctx.set_cipher_list(cipher_list.encode())
    if policy.tls13:
        ctx.set_tls13_ciphersuites(TLS13_SUITES)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    # An idle keep-alive connection gives its ~34 KB of record buffers back to OpenSSL's
    # allocator (nginx does the same): 1,000 idle mTLS clients must not hold 34 MB.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate(cert.certificate)
    ctx.use_privatekey(cert.key)
    for extra in cert.chain:
        ctx.add_extra_chain_cert(extra)
    ctx.check_privatekey()
    ctx.set_alpn_select_callback(_select_alpn)  # type: ignore[arg-type]  # pyOpenSSL accepts the sentinel
    _forbid_resumption(ctx)

    profile = listener.ssl_profile
    mode = listener.client_auth
    if profile is not None and mode is not None:
        ctx.set_verify(SSL.VERIFY_PEER, _record_verify)
        if mode is ClientAuthMode.STRICT:
            store = ctx.get_cert_store()
            assert store is not None
            for upload in profile.trusted_client_cas:
                for ca in upload.certificates:
                    # The store only takes pyOpenSSL's type; the CA list takes cryptography's.
                    store.add_cert(crypto.X509.from_cryptography(ca))
                    ctx.add_client_ca(ca)
    return ctx


_VERSION_NAMES: Final = {
    "TLSv1": TlsVersion.TLSV1_0,
    "TLSv1.1": TlsVersion.TLSV1_1,
    "TLSv1.2": TlsVersion.TLSV1_2,
    "TLSv1.3": TlsVersion.TLSV1_3,
}
_VERSION_ORDER: Final = list(_PROTO)


def negotiated_version_allowed(listener: Listener, version: str | None) -> bool:
    """True when the listener's SSL policy allows the TLS version a handshake negotiated.

    OpenSSL chooses the version before the SNI callback chooses the listener, so a port whose
    listeners have different policies negotiates within the widest range; this check applies
    the selected listener's own range afterwards.
    """
    got = _VERSION_NAMES.get(version or "")
    if got is None:
        return True
    policy = listener.ssl_policy
    if _VERSION_ORDER.index(got) < _VERSION_ORDER.index(policy.min_version):
        return False
    return got is not TlsVersion.TLSV1_3 or policy.tls13


def _acknowledge_server_name(conn: SSL.Connection) -> None:
    """The servername callback of a port with one listener: nothing to choose.

    It exists only because a servername callback that accepts the name is what makes OpenSSL
    acknowledge SNI in its reply: a port with one listener must look the same on the wire as a
    port with several.
    """


def build_port_contexts(
    rules: Sequence[RoutingRule],
) -> tuple[SSL.Context, dict[str, SSL.Context]]:
    """The contexts of one HTTPS frontend port: the one handshakes start with, and each
    listener's own (by listener name).

    Every handshake starts with the port context; its servername callback, which OpenSSL
    calls for every ClientHello (with or without SNI), picks the listener as
    :func:`emulator.core.request.routing.select_tls_rule` says, records the rule in the connection's
    :class:`VerifyLog` (its app data) and switches the connection to that listener's context,
    so the server certificate, the trusted client CAs (store and the CertificateRequest's CA
    names) and the cipher list are the listener's. OpenSSL copies the
    verify mode and callback into the connection when it is created, so they are set again on
    the connection from the selected context when its mode differs: a Strict listener behind a
    port whose first listener asks for no certificate still asks for one. The port context
    allows the widest protocol range of the port's listeners (the version is negotiated before
    the callback); :func:`negotiated_version_allowed` applies each listener's own range after
    the handshake.

    A port with a single listener (the usual case) has nothing to choose: its port context is
    that listener's own context, and the callback only acknowledges the name. No context
    resumes sessions (:func:`_forbid_resumption`), the port context included: OpenSSL keeps
    and looks up sessions in the context a handshake started with (the connection's session
    context, which the callback's switch leaves alone), so a session made under one listener
    would otherwise be offered to every listener of the port. Switching contexts has a cost
    per handshake (``SSL_set_SSL_CTX`` copies the certificate set, and pyOpenSSL's
    ``Connection.set_verify`` makes a new C callback), which the one-listener port avoids.
    """
    contexts = {rule.listener.name: build_server_context(rule.listener) for rule in rules}
    if len(contexts) == 1:
        (only,) = contexts.values()
        only.set_tlsext_servername_callback(_acknowledge_server_name)
        return only, contexts
    default = select_tls_rule(rules, None) or rules[0]
    port_ctx = build_server_context(default.listener)
    policies = [rule.listener.ssl_policy for rule in rules]
    lowest = min((p.min_version for p in policies), key=_VERSION_ORDER.index)
    port_ctx.set_min_proto_version(_PROTO[lowest])
    tls13 = any(p.tls13 for p in policies)
    port_ctx.set_max_proto_version(SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION)
    if tls13:
        port_ctx.set_tls13_ciphersuites(TLS13_SUITES)
    #: The verify mode each listener's context asks for; the connection starts with the port
    #: context's, so only a listener that asks for another one needs ``set_verify``.
    start_mode = port_ctx.get_verify_mode()
    modes = {name: ctx.get_verify_mode() for name, ctx in contexts.items()}

    def on_server_name(conn: SSL.Connection) -> None:
        raw = conn.get_servername()
        name = raw.decode("ascii", errors="replace") if raw else None
        rule = select_tls_rule(rules, name) or default
        record = conn.get_app_data()
        if isinstance(record, VerifyLog):
            record.rule = rule
        listener_name = rule.listener.name
        conn.set_context(contexts[listener_name])
        mode = modes[listener_name]
        if mode == start_mode:
            # Same mode, same callback (every context that verifies uses _record_verify).
            return
        if mode & SSL.VERIFY_PEER:
            conn.set_verify(mode, _record_verify)
        else:
            conn.set_verify(SSL.VERIFY_NONE)

    port_ctx.set_tlsext_servername_callback(on_server_name)
    return port_ctx, contexts
