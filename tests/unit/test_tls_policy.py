"""SSL profile → OpenSSL context, the client-certificate decision table, and the gateway's pages.

Handshakes here are real TLS between two pyOpenSSL ``Connection`` objects over memory BIOs: no
sockets, no event loop, the same OpenSSL code paths the runtime drives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import pytest
from OpenSSL import SSL

from emulator.arm.certdata import ServerCertificate, load_server_pfx
from emulator.arm.ssl_policies import (
    POLICY_TABLE,
    PREDEFINED_POLICIES,
    V2_UNSUPPORTED_DHE,
    SslPolicy,
    TlsVersion,
    openssl_cipher_name,
)
from emulator.core.http.pages import SERVER_TOKEN, GatewayPage, render_page
from emulator.core.tls.policy import (
    DECISION_TABLE,
    CertState,
    VerifyLog,
    build_port_contexts,
    build_server_context,
    decide_client_cert,
)
from emulator.core.tls.verify import verify_error_text
from emulator.model import (
    ClientAuthMode,
    Listener,
    ListenerProtocol,
)
from emulator.pki import CA, IssuedCert
from tests.helpers.pki import PkiBundle
from tests.helpers.tls_memory import (
    Handshake,
    client_context,
    handshake,
    make_listener,
    pump,
    rule_for,
)

#: OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY and X509_V_ERR_CERT_HAS_EXPIRED.
UNABLE_TO_GET_LOCAL_ISSUER = 20
CERT_HAS_EXPIRED = 10


# --- the decision table ------------------------------------------------------------------------

#: What each mode does (appgw-behaviour.md §3, §4, §6), written out independently of the table.
EXPECTED: dict[tuple[ClientAuthMode | None, CertState], tuple[bool, str, GatewayPage | None]] = {
    (ClientAuthMode.STRICT, CertState.ABSENT): (False, "NONE", GatewayPage.NO_CLIENT_CERT),
    (ClientAuthMode.STRICT, CertState.VALID): (True, "SUCCESS", None),
    (ClientAuthMode.STRICT, CertState.INVALID): (False, "FAILED", GatewayPage.CLIENT_CERT_ERROR),
    (ClientAuthMode.PASSTHROUGH, CertState.ABSENT): (True, "NONE", None),
    (ClientAuthMode.PASSTHROUGH, CertState.VALID): (True, "PASSTHROUGH", None),
    (ClientAuthMode.PASSTHROUGH, CertState.INVALID): (True, "PASSTHROUGH", None),
    (None, CertState.ABSENT): (True, "NONE", None),
    (None, CertState.VALID): (True, "NONE", None),
    (None, CertState.INVALID): (True, "NONE", None),
}


def test_decision_table_covers_every_mode_and_state() -> None:
    modes: list[ClientAuthMode | None] = [*ClientAuthMode, None]
    assert set(DECISION_TABLE) == {(m, s) for m in modes for s in CertState}


@pytest.mark.parametrize(("key", "expected"), EXPECTED.items(), ids=str)
def test_decision_table_is_the_documented_behaviour(
    key: tuple[ClientAuthMode | None, CertState], expected: tuple[bool, str, GatewayPage | None]
) -> None:
    rule = DECISION_TABLE[key]
    assert (rule.allowed, rule.verification, rule.page) == expected


def _inputs(state: CertState) -> list[tuple[bool, VerifyLog | None, str]]:
    """(presented, log, expected sslClientVerify) combinations that mean ``state``."""
    if state is CertState.ABSENT:
        return [
            (False, None, "NONE"),
            (False, VerifyLog(), "NONE"),
            # A log with errors but no certificate cannot happen; "absent" still wins.
            (False, VerifyLog([(UNABLE_TO_GET_LOCAL_ISSUER, 0)], calls=2), "NONE"),
        ]
    if state is CertState.VALID:
        return [(True, VerifyLog(calls=2), "SUCCESS")]
    return [
        (
            True,
            VerifyLog([(UNABLE_TO_GET_LOCAL_ISSUER, 0)], calls=2),
            "FAILED:unable to get local issuer certificate",
        ),
        (True, VerifyLog([(CERT_HAS_EXPIRED, 0)], calls=3), "FAILED:certificate has expired"),
        # A certificate nobody verified (a resumed session, or no log at all) is not valid.
        (True, VerifyLog(), "FAILED:unspecified certificate verification error"),
        (True, None, "FAILED:unspecified certificate verification error"),
    ]


@pytest.mark.parametrize("key", list(DECISION_TABLE), ids=str)
def test_decide_client_cert_follows_the_table(key: tuple[ClientAuthMode | None, CertState]) -> None:
    mode, state = key
    rule = DECISION_TABLE[key]
    for presented, log, ssl_client_verify in _inputs(state):
        decision = decide_client_cert(mode, presented=presented, log=log)

        assert decision.allowed is rule.allowed
        assert decision.verification == rule.verification
        assert decision.page is rule.page
        assert decision.ssl_client_verify == ssl_client_verify
        assert decision.reason


def test_decision_reason_names_the_mode_and_the_verification_result() -> None:
    decision = decide_client_cert(
        ClientAuthMode.STRICT, presented=True, log=VerifyLog([(CERT_HAS_EXPIRED, 0)], calls=2)
    )
    assert (
        decision.reason == "Strict: client certificate verification FAILED:certificate has expired"
    )


# --- VerifyLog ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "result"),
    [
        ([], "SUCCESS"),
        ([(20, 0)], "FAILED:unable to get local issuer certificate"),
        ([(20, 0), (10, 0)], "FAILED:certificate has expired"),
        ([(10, 0), (26, 0)], "FAILED:unsupported certificate purpose"),
        ([(2, 1), (21, 0)], "FAILED:unable to verify the first certificate"),
        ([(9999, 0)], "FAILED:certificate verify error 9999"),
    ],
)
def test_verify_log_result_is_the_last_errors_openssl_text(
    errors: list[tuple[int, int]], result: str
) -> None:
    assert VerifyLog(list(errors), calls=len(errors) + 1).result == result


def test_verify_log_without_callback_calls_is_a_failure_not_success() -> None:
    # What a resumed handshake leaves: OpenSSL verified nothing, so nothing was recorded.
    assert VerifyLog().result == "FAILED:unspecified certificate verification error"
    assert not VerifyLog().verified


def test_verify_error_texts_match_openssl_wording() -> None:
    assert verify_error_text(18) == "self-signed certificate"
    assert verify_error_text(19) == "self-signed certificate in certificate chain"
    assert verify_error_text(2) == "unable to get issuer certificate"


# --- build_server_context: client authentication --------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "with_profile", "trusted", "verify_mode"),
    [
        (ClientAuthMode.STRICT, True, True, SSL.VERIFY_PEER),
        (ClientAuthMode.PASSTHROUGH, True, False, SSL.VERIFY_PEER),
        (None, True, False, SSL.VERIFY_NONE),
        (None, False, False, SSL.VERIFY_NONE),
    ],
    ids=["strict", "passthrough", "profile-without-client-auth", "no-profile"],
)
def test_verify_mode_requests_but_never_requires_a_certificate(
    pki: PkiBundle,
    mode: ClientAuthMode | None,
    with_profile: bool,
    trusted: bool,
    verify_mode: int,
) -> None:
    listener = make_listener(pki, mode=mode, with_profile=with_profile, trusted=trusted)

    ctx = build_server_context(listener)

    assert ctx.get_verify_mode() == verify_mode
    assert not ctx.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    assert listener.client_auth is mode


def test_listener_without_server_certificate_has_no_context(pki: PkiBundle) -> None:
    listener = make_listener(pki, mode=ClientAuthMode.STRICT)
    without = Listener(
        listener.name,
        ListenerProtocol.HTTP,
        80,
        "port",
        (),
        None,
        None,
        listener.ssl_policy,
        False,
        listener.path,
    )

    with pytest.raises(ValueError, match="no server certificate"):
        build_server_context(without)


def test_strict_advertises_the_uploaded_ca_names(pki: PkiBundle) -> None:
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))

    hs = handshake(ctx, client_context())

    names = [n.CN for n in hs.client.get_client_ca_list()]
    assert names == ["appgw-emulator Test Client Root CA", "appgw-emulator Test Client CA"]


def test_passthrough_advertises_no_ca_names(pki: PkiBundle) -> None:
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.PASSTHROUGH))

    hs = handshake(ctx, client_context())

    assert hs.client.get_client_ca_list() == []


@pytest.mark.parametrize("tls_max", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION], ids=["1.2", "1.3"])
def test_strict_accepts_a_client_of_the_trusted_chain(pki: PkiBundle, tls_max: int) -> None:
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))

    hs = handshake(ctx, client_context(cert=pki.client, max_version=tls_max))

    assert hs.server.get_peer_certificate(as_cryptography=True) == pki.client.cert
    decision = decide_client_cert(ClientAuthMode.STRICT, presented=True, log=hs.log)
    assert decision.allowed
    assert decision.verification == "SUCCESS"
    assert decision.ssl_client_verify == "SUCCESS"


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        # OpenSSL first reports 20 (no local issuer), then 21 for the same leaf; the last wins,
        # which is what nginx's $ssl_client_verify and so the gateway's log show.
        ("unrelated", "unable to verify the first certificate"),
        ("expired", "certificate has expired"),
        ("self_signed", "self-signed certificate"),
    ],
)
def test_strict_completes_the_handshake_and_rejects_a_bad_certificate_afterwards(
    pki: PkiBundle, which: str, reason: str
) -> None:
    cert: IssuedCert = getattr(pki, which)
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))

    hs = handshake(ctx, client_context(cert=cert))

    decision = decide_client_cert(ClientAuthMode.STRICT, presented=True, log=hs.log)
    assert not decision.allowed
    assert decision.page is GatewayPage.CLIENT_CERT_ERROR
    assert decision.ssl_client_verify == f"FAILED:{reason}"


def test_strict_completes_the_handshake_without_a_certificate(pki: PkiBundle) -> None:
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.STRICT))

    hs = handshake(ctx, client_context())

    presented = hs.server.get_peer_certificate() is not None
    decision = decide_client_cert(ClientAuthMode.STRICT, presented=presented, log=hs.log)
    assert decision.page is GatewayPage.NO_CLIENT_CERT


@pytest.mark.parametrize("which", ["client", "unrelated", "expired", "self_signed"])
def test_passthrough_forwards_any_certificate(pki: PkiBundle, which: str) -> None:
    cert: IssuedCert = getattr(pki, which)
    ctx = build_server_context(make_listener(pki, mode=ClientAuthMode.PASSTHROUGH))

    hs = handshake(ctx, client_context(cert=cert))

    assert hs.server.get_peer_certificate(as_cryptography=True) == cert.cert
    decision = decide_client_cert(ClientAuthMode.PASSTHROUGH, presented=True, log=hs.log)
    assert decision.allowed
    assert decision.verification == "PASSTHROUGH"


# --- build_port_contexts: the listener a handshake ends with ------------------------------------


def test_single_listener_port_handshakes_with_the_listeners_own_context(pki: PkiBundle) -> None:
    strict = make_listener(pki, mode=ClientAuthMode.STRICT)
    port_ctx, contexts = build_port_contexts([rule_for(strict)])
    assert port_ctx is contexts["listener"]

    good = handshake(port_ctx, client_context(cert=pki.client), server_name=b"gateway.test")
    assert good.server.get_context() is contexts["listener"]
    assert good.server.get_servername() == b"gateway.test"
    assert good.server.get_peer_certificate() is not None
    assert good.log.errors == []

    bad = handshake(port_ctx, client_context(cert=pki.unrelated), server_name=b"gateway.test")
    assert (UNABLE_TO_GET_LOCAL_ISSUER, 0) in bad.log.errors


def test_multi_listener_port_switches_to_the_sni_listeners_context_and_verify_mode(
    pki: PkiBundle,
) -> None:
    # The first listener (the default without SNI) asks for no certificate; the Strict one,
    # chosen by SNI, must still ask for one and verify it with the recording callback.
    plain = replace(make_listener(pki, with_profile=False), name="plain")
    strict = replace(
        make_listener(pki, mode=ClientAuthMode.STRICT), name="strict", host_names=("strict.test",)
    )
    # In Azure's order: the multi-site listener before the basic one.
    port_ctx, contexts = build_port_contexts([rule_for(strict), rule_for(plain)])
    assert port_ctx is not contexts["plain"]
    assert port_ctx is not contexts["strict"]

    default = handshake(port_ctx, client_context(cert=pki.client))
    assert default.server.get_context() is contexts["plain"]
    assert default.server.get_peer_certificate() is None

    good = handshake(port_ctx, client_context(cert=pki.client), server_name=b"strict.test")
    assert good.server.get_context() is contexts["strict"]
    assert good.server.get_peer_certificate() is not None
    assert good.log.errors == []

    bad = handshake(port_ctx, client_context(cert=pki.unrelated), server_name=b"strict.test")
    assert bad.server.get_context() is contexts["strict"]
    assert (UNABLE_TO_GET_LOCAL_ISSUER, 0) in bad.log.errors


def test_multi_listener_port_keeps_the_verify_callback_when_modes_match(pki: PkiBundle) -> None:
    first = replace(
        make_listener(pki, mode=ClientAuthMode.PASSTHROUGH), name="first", host_names=("a.test",)
    )
    second = replace(
        make_listener(pki, mode=ClientAuthMode.STRICT), name="second", host_names=("b.test",)
    )
    port_ctx, contexts = build_port_contexts([rule_for(first), rule_for(second)])
    for name, host in (("first", b"a.test"), ("second", b"b.test")):
        done = handshake(port_ctx, client_context(cert=pki.unrelated), server_name=host)
        assert done.server.get_context() is contexts[name]
        assert done.server.get_peer_certificate() is not None
        assert (UNABLE_TO_GET_LOCAL_ISSUER, 0) in done.log.errors


def _read_tickets(done: Handshake) -> SSL.Session:
    """The client's session after it has read what the server sent after the handshake (the
    TLS 1.3 tickets come after the server's last handshake flight)."""
    done.server.send(b"x")
    pump(done.server, done.client)
    assert done.client.recv(1) == b"x"
    session = done.client.get_session()
    assert session is not None
    return session


@pytest.mark.parametrize("tls_max", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION], ids=["1.2", "1.3"])
def test_no_context_of_a_port_resumes_a_session(pki: PkiBundle, tls_max: int) -> None:
    # OpenSSL verifies nothing on a resumed handshake: every context, the port's starting
    # one included, must answer an offered session with a full handshake, which verifies.
    strict = replace(
        make_listener(pki, mode=ClientAuthMode.STRICT), name="strict", host_names=("s.test",)
    )
    passthrough = replace(
        make_listener(pki, mode=ClientAuthMode.PASSTHROUGH), name="pass", host_names=("p.test",)
    )
    for rules in ([rule_for(strict)], [rule_for(passthrough), rule_for(strict)]):
        port_ctx, contexts = build_port_contexts(rules)
        for ctx in (port_ctx, *contexts.values()):
            assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_OFF
            assert ctx.set_options(0) & SSL.OP_NO_TICKET
        client_ctx = client_context(cert=pki.unrelated, max_version=tls_max)
        session = None
        for host in (b"p.test", b"s.test", b"s.test"):
            done = handshake(port_ctx, client_ctx, server_name=host, session=session)
            assert done.log.verified  # the verify callback ran: a full handshake
            assert (UNABLE_TO_GET_LOCAL_ISSUER, 0) in done.log.errors
            session = _read_tickets(done)


# --- build_server_context: protocol versions and ciphers ------------------------------------------


def _legacy_client(version: int) -> SSL.Context:
    # OpenSSL 3+ only offers TLS 1.0/1.1 at security level 0.
    return client_context(min_version=version, max_version=version, ciphers=b"DEFAULT:@SECLEVEL=0")


@pytest.mark.parametrize("version", [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION], ids=["1.0", "1.1"])
def test_policy_20220101_refuses_tls_below_1_2(pki: PkiBundle, version: int) -> None:
    ctx = build_server_context(make_listener(pki, policy="AppGwSslPolicy20220101"))

    with pytest.raises(SSL.Error):
        handshake(ctx, _legacy_client(version))


def test_retired_policy_20150501_run_under_loose_still_accepts_tls_1_0(pki: PkiBundle) -> None:
    # The model refuses 20150501 since the retirement (test_model); with --loose it runs as it
    # did before, so an old client can still be reproduced locally.
    ctx = build_server_context(make_listener(pki, policy="AppGwSslPolicy20150501"))

    hs = handshake(ctx, _legacy_client(SSL.TLS1_VERSION))

    assert hs.server.get_protocol_version_name() == "TLSv1"


@pytest.mark.parametrize("version", [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION], ids=["1.0", "1.1"])
def test_old_api_default_20170401s_refuses_tls_below_1_2(pki: PkiBundle, version: int) -> None:
    ctx = build_server_context(make_listener(pki, policy="AppGwSslPolicy20170401S"))

    with pytest.raises(SSL.Error):
        handshake(ctx, _legacy_client(version))


@pytest.mark.parametrize(
    ("policy", "negotiated"),
    [
        ("AppGwSslPolicy20220101", "TLSv1.3"),
        ("AppGwSslPolicy20220101S", "TLSv1.3"),
        ("AppGwSslPolicy20170401S", "TLSv1.2"),
        ("AppGwSslPolicy20150501", "TLSv1.2"),
        (SslPolicy("Custom(TLSv1_2)", TlsVersion.TLSV1_2, (), False), "TLSv1.2"),
        (SslPolicy("CustomV2(TLSv1_2)", TlsVersion.TLSV1_2, (), True), "TLSv1.3"),
    ],
    ids=["20220101", "20220101S", "20170401S", "20150501", "custom", "customv2"],
)
def test_policies_without_tls13_cap_at_tls_1_2(
    pki: PkiBundle, policy: str | SslPolicy, negotiated: str
) -> None:
    ctx = build_server_context(make_listener(pki, policy=policy))

    hs = handshake(ctx, client_context())

    assert hs.server.get_protocol_version_name() == negotiated


def test_tls13_offers_only_azures_two_suites(pki: PkiBundle) -> None:
    ctx = build_server_context(make_listener(pki, policy="AppGwSslPolicy20220101"))
    chacha_only = client_context()
    chacha_only.set_tls13_ciphersuites(b"TLS_CHACHA20_POLY1305_SHA256")

    with pytest.raises(SSL.Error):
        handshake(ctx, chacha_only)


@pytest.mark.parametrize(
    ("policy", "accepted"),
    [("AppGwSslPolicy20220101", True), ("AppGwSslPolicy20220101S", False)],
)
def test_cbc_suites_follow_the_policy(pki: PkiBundle, policy: str, accepted: bool) -> None:
    ctx = build_server_context(make_listener(pki, policy=policy))
    cbc_client = client_context(
        max_version=SSL.TLS1_2_VERSION, ciphers=b"ECDHE-ECDSA-AES128-SHA256"
    )

    if accepted:
        hs = handshake(ctx, cbc_client)
        assert hs.server.get_cipher_name() == "ECDHE-ECDSA-AES128-SHA256"
    else:
        with pytest.raises(SSL.Error):
            handshake(ctx, cbc_client)


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        ([b"h2", b"http/1.1"], b"http/1.1"),
        ([b"http/1.1"], b"http/1.1"),
        ([b"h2"], b""),
    ],
)
def test_alpn_selects_http11_only(pki: PkiBundle, offered: list[bytes], selected: bytes) -> None:
    ctx = build_server_context(make_listener(pki))

    hs = handshake(ctx, client_context(alpn=offered))

    assert hs.client.get_alpn_proto_negotiated() == selected


# --- each predefined policy's suites, against the TLS policy overview's table ---------------

#: The TLS 1.2 suites of each predefined policy as the policy table of "Application Gateway TLS
#: policy overview" marks them (written out here by hand, row by row, so the test does not
#: repeat the module's table), without the DHE suites v2 does not use (its Limitations list).
_GCM = {
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
}
_OLDER = _GCM | {
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
}
EXPECTED_SUITES: Final = {
    "AppGwSslPolicy20150501": _OLDER
    | {
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    },
    "AppGwSslPolicy20170401": _OLDER,
    "AppGwSslPolicy20170401S": _OLDER,
    "AppGwSslPolicy20220101": _GCM
    | {
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    },
    "AppGwSslPolicy20220101S": _GCM,
}


def test_policy_20150501_lists_exactly_the_table_suites() -> None:
    assert (
        set(PREDEFINED_POLICIES["AppGwSslPolicy20150501"].cipher_suites)
        == (EXPECTED_SUITES["AppGwSslPolicy20150501"])
    )


def test_policy_20170401_lists_exactly_the_table_suites() -> None:
    assert (
        set(PREDEFINED_POLICIES["AppGwSslPolicy20170401"].cipher_suites)
        == (EXPECTED_SUITES["AppGwSslPolicy20170401"])
    )


def test_policy_20170401s_lists_exactly_the_table_suites() -> None:
    assert (
        set(PREDEFINED_POLICIES["AppGwSslPolicy20170401S"].cipher_suites)
        == (EXPECTED_SUITES["AppGwSslPolicy20170401S"])
    )


def test_policy_20220101_lists_exactly_the_table_suites() -> None:
    assert (
        set(PREDEFINED_POLICIES["AppGwSslPolicy20220101"].cipher_suites)
        == (EXPECTED_SUITES["AppGwSslPolicy20220101"])
    )


def test_policy_20220101s_lists_exactly_the_table_suites() -> None:
    assert (
        set(PREDEFINED_POLICIES["AppGwSslPolicy20220101S"].cipher_suites)
        == (EXPECTED_SUITES["AppGwSslPolicy20220101S"])
    )


def test_predefined_policies_keep_the_table_order() -> None:
    # The table's order is the priority order (TLS policy overview); the server prefers it.
    table_order = [suite for suite, _ in POLICY_TABLE]
    for policy in PREDEFINED_POLICIES.values():
        positions = [table_order.index(suite) for suite in policy.cipher_suites]
        assert positions == sorted(positions), policy.name


def test_no_predefined_policy_offers_a_dhe_suite_v2_does_not_support() -> None:
    for policy in PREDEFINED_POLICIES.values():
        assert not set(policy.cipher_suites) & V2_UNSUPPORTED_DHE, policy.name


@pytest.fixture(scope="module")
def rsa_server() -> ServerCertificate:
    issued = CA("Policy RSA Server Root", key_type="rsa").issue_server(
        "gateway.test", key_type="rsa"
    )
    return load_server_pfx("rsa-server", issued.pfx(None), None, cert_id="rsa-server")


@pytest.mark.parametrize(
    "policy", list(PREDEFINED_POLICIES), ids=lambda p: p[len("AppGwSslPolicy") :]
)
def test_rsa_listener_negotiates_exactly_the_policys_rsa_suites(
    pki: PkiBundle, rsa_server: ServerCertificate, policy: str
) -> None:
    listener = replace(make_listener(pki, policy=policy), server_certificate=rsa_server)
    ctx = build_server_context(listener)
    candidates = [s for s, _ in POLICY_TABLE if "_RSA_" in s or s.startswith("TLS_RSA_")]
    accepted = set()
    for suite in candidates:
        name = openssl_cipher_name(suite)
        if name is None or suite in OPENSSL_WITHOUT or suite in V2_UNSUPPORTED_DHE:
            continue
        client = client_context(max_version=SSL.TLS1_2_VERSION, ciphers=name.encode())
        try:
            hs = handshake(ctx, client)
        except SSL.Error:
            continue
        assert hs.server.get_cipher_name() == name
        accepted.add(suite)

    wanted = {
        s
        for s in EXPECTED_SUITES[policy]
        if not s.startswith("TLS_ECDHE_ECDSA_") and s not in OPENSSL_WITHOUT
    }
    assert accepted == wanted


# --- cipher names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azure", "openssl"),
    [
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384"),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
        ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
        ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
        ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
        ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"),
        ("TLS_AES_128_GCM_SHA256", None),
        ("TLS_AES_256_GCM_SHA384", None),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", None),
        ("ECDHE-RSA-AES128-GCM-SHA256", None),
        ("", None),
    ],
)
def test_openssl_cipher_name(azure: str, openssl: str | None) -> None:
    assert openssl_cipher_name(azure) == openssl


#: Suites the OpenSSL builds we run on (cryptography's wheel, the distribution's 3.0) leave out
#: entirely: 3DES is not compiled in. 20150501 lists it; the README's known differences say so.
OPENSSL_WITHOUT: Final = frozenset({"TLS_RSA_WITH_3DES_EDE_CBC_SHA"})


@pytest.mark.parametrize("policy", list(PREDEFINED_POLICIES.values()), ids=lambda p: p.name)
def test_every_predefined_suite_is_a_cipher_openssl_knows(policy: SslPolicy) -> None:
    for suite in policy.cipher_suites:
        name = openssl_cipher_name(suite)
        assert name is not None, suite
        if suite in OPENSSL_WITHOUT:
            continue
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_cipher_list(name.encode() + b":@SECLEVEL=0")  # raises when OpenSSL has no match


# --- pages ----------------------------------------------------------------------------------------

#: appgw-behaviour.md §3's text. The real gateway (nginx) ends each line with CRLF
#: (ngx_http_special_response.c), which the behaviour doc's rendering drops; we follow nginx.
NO_CERT_PAGE = (
    "<html>\n<head><title>400 No required SSL certificate was sent</title></head>\n<body>\n"
    "<center><h1>400 Bad Request</h1></center>\n<center>No required SSL certificate was sent"
    "</center>\n<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\n</body>\n</html>"
)


def test_no_client_cert_page_is_the_documented_bytes() -> None:
    assert (
        render_page(GatewayPage.NO_CLIENT_CERT)
        == (NO_CERT_PAGE + "\n").replace("\n", "\r\n").encode()
    )


def test_client_cert_error_page_has_nginx_title_and_detail() -> None:
    assert render_page(GatewayPage.CLIENT_CERT_ERROR) == (
        b"<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n<body>\r\n"
        b"<center><h1>400 Bad Request</h1></center>\r\n"
        b"<center>The SSL certificate error</center>\r\n"
        b"<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
    )


def test_plain_error_page_has_no_detail_line() -> None:
    assert render_page(GatewayPage.BAD_GATEWAY) == (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n"
        b"<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
    )


@pytest.mark.parametrize("page", list(GatewayPage), ids=lambda p: p.name)
def test_every_page_carries_its_status_and_the_server_token(page: GatewayPage) -> None:
    body = render_page(page).decode()

    assert f"<h1>{page.status} {page.reason}</h1>" in body
    assert f"<hr><center>{SERVER_TOKEN}</center>" in body
    assert body.endswith("</html>\r\n")


@pytest.mark.parametrize(
    ("page", "status"),
    [
        (GatewayPage.NO_CLIENT_CERT, 400),
        (GatewayPage.CLIENT_CERT_ERROR, 400),
        (GatewayPage.PLAIN_HTTP_TO_HTTPS, 400),
        (GatewayPage.NOT_FOUND, 404),
        (GatewayPage.REQUEST_TIMEOUT, 408),
        (GatewayPage.BAD_GATEWAY, 502),
        (GatewayPage.GATEWAY_TIMEOUT, 504),
    ],
)
def test_page_status_codes(page: GatewayPage, status: int) -> None:
    assert page.status == status
