"""Client certificate verification: the OpenSSL emulation against real handshakes, and the verdict.

Each case of the acceptance list runs twice: through a real TLS handshake between two pyOpenSSL
connections over memory BIOs (the listener's own ``build_server_context`` and verify callback),
and through :func:`emulator.core.tls.chain.verify_chain`. The errors must be the same, in the same
order: ``check-ca`` promises the verdict the listener would give.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from OpenSSL import SSL

from emulator.arm.certdata import TrustedClientCa
from emulator.arm.ssl_policies import PREDEFINED_POLICIES
from emulator.core.tls import verify as v
from emulator.core.tls.chain import (
    NO_AIA_FETCH_NOTE,
    Stage,
    apply_ocsp,
    assess_client_cert,
    explain_chain,
    store_verify,
    verify_chain,
)
from emulator.core.tls.ocsp import OcspOutcome, OcspStatus
from emulator.core.tls.policy import VerifyLog, assess_handshake, build_server_context
from emulator.model import ClientAuthMode, Listener, ListenerProtocol, RevocationMode, SslProfile
from emulator.pki import CA, IssuedCert, self_signed_client
from tests.helpers.pki import PkiBundle

MAX_HANDSHAKE_ROUNDS = 50
OCSP_URL = "http://127.0.0.1:1/ocsp"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def listener(pki: PkiBundle, upload: tuple[x509.Certificate, ...]) -> Listener:
    profile = SslProfile(
        "profile",
        ClientAuthMode.STRICT,
        False,
        RevocationMode.NONE,
        (TrustedClientCa("upload", upload),),
        None,
    )
    return Listener(
        name="listener",
        protocol=ListenerProtocol.HTTPS,
        frontend_port=443,
        frontend_port_name="port",
        host_names=(),
        server_certificate=pki.server_certificate,
        ssl_profile=profile,
        ssl_policy=PREDEFINED_POLICIES["AppGwSslPolicy20220101"],
        require_sni=False,
        path="resources[0].properties.httpListeners[0]",
    )


def handshake_errors(
    pki: PkiBundle, upload: tuple[x509.Certificate, ...], client: IssuedCert, *, send_chain: bool
) -> tuple[list[tuple[int, int]], tuple[x509.Certificate, ...]]:
    """Real handshake in memory; the verify callback's errors and what the server received."""
    server_ctx = build_server_context(listener(pki, upload))
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.use_certificate(client.cert)
    client_ctx.use_privatekey(client.key)
    if send_chain:
        for extra in client.chain:
            client_ctx.add_extra_chain_cert(extra)
    log = VerifyLog()
    server = SSL.Connection(server_ctx, None)
    server.set_app_data(log)
    server.set_accept_state()
    conn = SSL.Connection(client_ctx, None)
    conn.set_connect_state()
    done = [False, False]
    for _ in range(MAX_HANDSHAKE_ROUNDS):
        for index, (src, dst) in enumerate(((conn, server), (server, conn))):
            with contextlib.suppress(SSL.WantReadError):
                src.do_handshake()
                done[index] = True
            with contextlib.suppress(SSL.WantReadError):
                dst.bio_write(src.bio_read(65536))
        if all(done):
            break
    leaf = server.get_peer_certificate(as_cryptography=True)
    assert leaf is not None
    rest = [c for c in server.get_peer_cert_chain(as_cryptography=True) or [] if c != leaf]
    return log.errors, (leaf, *rest)


@dataclass(frozen=True)
class Case:
    upload: Callable[[PkiBundle], tuple[x509.Certificate, ...]]
    client: Callable[[PkiBundle], IssuedCert]
    send_chain: bool
    expected: list[tuple[int, int]]


def _full(p: PkiBundle) -> tuple[x509.Certificate, ...]:
    return (p.client_root.cert, p.client_ca.cert)


def _root_only(p: PkiBundle) -> tuple[x509.Certificate, ...]:
    return (p.client_root.cert,)


def _ca_as_client(p: PkiBundle) -> IssuedCert:
    return IssuedCert(cert=p.client_ca.cert, key=p.client_ca.key)


CASES = {
    "valid": Case(_full, lambda p: p.client_ca.issue_client("ok"), False, []),
    "valid-chain-sent": Case(_full, lambda p: p.client_ca.issue_client("ok"), True, []),
    "intermediate-sent-root-uploaded": Case(
        _root_only, lambda p: p.client_ca.issue_client("ok"), True, []
    ),
    "intermediate-missing-everywhere": Case(
        _root_only,
        lambda p: p.client_ca.issue_client("lonely"),
        False,
        [(v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0), (v.UNABLE_TO_VERIFY_LEAF_SIGNATURE, 0)],
    ),
    "expired": Case(
        _full,
        lambda p: p.client_ca.issue_client("old", expired=True),
        False,
        [(v.CERT_HAS_EXPIRED, 0)],
    ),
    "not-yet-valid": Case(
        _full,
        lambda p: p.client_ca.issue_client("new", not_yet_valid=True),
        False,
        [(v.CERT_NOT_YET_VALID, 0)],
    ),
    "unrelated-ca": Case(
        _full,
        lambda p: p.unrelated_root.issue_client("stranger"),
        False,
        [(v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0), (v.UNABLE_TO_VERIFY_LEAF_SIGNATURE, 0)],
    ),
    "unrelated-chain-sent": Case(
        _full,
        lambda p: p.unrelated_root.intermediate("Other Issuing").issue_client("stranger"),
        True,
        [(v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 1)],
    ),
    "self-signed": Case(
        _full, lambda p: self_signed_client("me"), False, [(v.DEPTH_ZERO_SELF_SIGNED_CERT, 0)]
    ),
    "ca-as-client": Case(_full, _ca_as_client, False, [(v.INVALID_PURPOSE, 0)]),
    "server-auth-only": Case(
        _full, lambda p: p.client_ca.issue_server("api.test"), False, [(v.INVALID_PURPOSE, 0)]
    ),
    "expired-and-untrusted": Case(
        _full,
        lambda p: p.unrelated_root.issue_client("gone", expired=True),
        False,
        [
            (v.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0),
            (v.UNABLE_TO_VERIFY_LEAF_SIGNATURE, 0),
            (v.CERT_HAS_EXPIRED, 0),
        ],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_emulation_reports_what_openssl_reports_in_a_real_handshake(
    pki: PkiBundle, name: str
) -> None:
    case = CASES[name]
    upload = case.upload(pki)
    client = case.client(pki)
    real, presented = handshake_errors(pki, upload, client, send_chain=case.send_chain)

    emulated = verify_chain(presented, upload, at=now())

    assert real == case.expected
    assert [(p.errno, p.depth) for p in emulated.errors] == real


@pytest.mark.parametrize("name", list(CASES))
def test_openssl_store_agrees_on_trust(pki: PkiBundle, name: str) -> None:
    case = CASES[name]
    upload = case.upload(pki)
    client = case.client(pki)
    presented = (client.cert, *(client.chain if case.send_chain else ()))

    emulated = verify_chain(presented, upload, at=now())
    first = store_verify(presented, upload, at=now())

    # The store has no sslclient purpose, so purpose errors are the emulation's alone.
    others = [p for p in emulated.errors if p.errno != v.INVALID_PURPOSE]
    if not others:
        assert first is None
    else:
        assert first is not None
        assert (first.errno, first.depth) == (others[0].errno, others[0].depth)


def test_injected_time_decides_expiry(pki: PkiBundle) -> None:
    client = pki.client_ca.issue_client("timed")
    upload = _full(pki)
    later = client.cert.not_valid_after_utc + datetime.timedelta(days=1)

    assert verify_chain((client.cert,), upload, at=now()).ok
    assert verify_chain((client.cert,), upload, at=later).result == "FAILED:certificate has expired"
    problem = store_verify((client.cert,), upload, at=later)
    assert problem is not None
    assert problem.errno == v.CERT_HAS_EXPIRED


def test_explanation_names_the_missing_intermediate_and_no_aia_fetching(pki: PkiBundle) -> None:
    client = pki.client_ca.issue_client("lonely")
    result = verify_chain((client.cert,), _root_only(pki), at=now())

    text = explain_chain(result, _root_only(pki), at=now())

    assert "the client sent only its leaf" in text
    assert "'CN=appgw-emulator Test Client CA,O=appgw-emulator'" in text
    assert "upload that intermediate or ask the client to send it" in text
    assert NO_AIA_FETCH_NOTE in text


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("expired", "expired on"),
        ("not-yet-valid", "is not valid before"),
        ("self-signed", "is self-signed"),
        ("ca-as-client", "presented a CA certificate"),
        ("server-auth-only", "without clientAuth"),
        ("unrelated-chain-sent", "neither in the uploaded chain nor among the 2"),
    ],
)
def test_each_failure_is_explained(pki: PkiBundle, name: str, fragment: str) -> None:
    case = CASES[name]
    client = case.client(pki)
    presented = (client.cert, *(client.chain if case.send_chain else ()))
    upload = case.upload(pki)

    verdict = assess_client_cert(presented, (TrustedClientCa("u", upload),), at=now())

    assert verdict.stage is Stage.CHAIN
    assert fragment in verdict.explanation


def test_issuer_dn_check_passes_for_a_certificate_of_the_lowest_ca(pki: PkiBundle) -> None:
    client = pki.client_ca.issue_client("direct")
    verdict = assess_client_cert(
        (client.cert,), (TrustedClientCa("u", _full(pki)),), at=now(), verify_issuer_dn=True
    )
    assert (verdict.ssl_client_verify, verdict.stage) == ("SUCCESS", Stage.PASSED)


def test_issuer_dn_mismatch_fails_although_the_chain_verifies(pki: PkiBundle) -> None:
    # Root -> issuing -> sub-issuing: the upload's lowest CA is the sub-issuing CA, but a
    # certificate of the issuing CA still chains to the root.
    root = CA("DN Root")
    issuing = root.intermediate("DN Issuing", path_length=1)
    sub = issuing.intermediate("DN Sub Issuing")
    upload = TrustedClientCa("u", (root.cert, issuing.cert, sub.cert))
    client = issuing.issue_client("one-level-up")

    off = assess_client_cert((client.cert,), (upload,), at=now())
    on = assess_client_cert((client.cert,), (upload,), at=now(), verify_issuer_dn=True)

    assert off.ssl_client_verify == "SUCCESS"
    assert on.ssl_client_verify == "FAILED:Unable to verify the client certificate issuer"
    assert on.stage is Stage.ISSUER_DN
    assert "'CN=DN Sub Issuing,O=appgw-emulator'" in on.explanation


def test_ocsp_without_aia_fails_closed(pki: PkiBundle) -> None:
    client = pki.client_ca.issue_client("no-aia")
    verdict = assess_client_cert(
        (client.cert,),
        (TrustedClientCa("u", _full(pki)),),
        at=now(),
        revocation=RevocationMode.OCSP,
    )
    assert verdict.ssl_client_verify == "FAILED:certificate status request failed"
    assert "names no OCSP responder" in verdict.explanation
    assert verdict.ocsp is None


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (OcspOutcome(OcspStatus.GOOD), "SUCCESS"),
        (OcspOutcome(OcspStatus.REVOKED), "FAILED:certificate revoked"),
        (OcspOutcome(OcspStatus.UNKNOWN), "FAILED:certificate status request failed"),
        (OcspOutcome.error("connection refused"), "FAILED:certificate status request failed"),
    ],
)
def test_ocsp_answer_settles_the_verdict(
    pki: PkiBundle, outcome: OcspOutcome, expected: str
) -> None:
    client = pki.client_ca.issue_client("with-aia", ocsp_url=OCSP_URL)
    pending = assess_client_cert(
        (client.cert,),
        (TrustedClientCa("u", _full(pki)),),
        at=now(),
        revocation=RevocationMode.OCSP,
    )
    assert pending.ocsp is not None
    assert pending.ocsp.url == OCSP_URL
    assert pending.ocsp.issuer == pki.client_ca.cert

    final = apply_ocsp(pending, outcome)

    assert final.ssl_client_verify == expected
    assert final.ocsp is None
    assert bool(final.explanation) is (expected != "SUCCESS")


def test_passthrough_logs_passthrough_not_the_empty_store_failure(pki: PkiBundle) -> None:
    profile = SslProfile("p", ClientAuthMode.PASSTHROUGH, False, RevocationMode.NONE, (), None)
    client = self_signed_client("anyone")

    with_cert = assess_handshake(
        profile, presented=(client.cert,), log=VerifyLog([(18, 0)]), at=now()
    )
    without = assess_handshake(profile, presented=(), log=VerifyLog(), at=now())

    assert (with_cert.allowed, with_cert.ssl_client_verify) == (True, "PASSTHROUGH")
    assert (without.allowed, without.ssl_client_verify) == (True, "NONE")
    assert with_cert.explanation == ""
