"""OCSP without the network: requests, our responder's answers, response checks, the cache."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from emulator.core.tls.ocsp import (
    DEFAULT_CACHE_S,
    MAX_CACHE_S,
    OcspCache,
    OcspOutcome,
    OcspStatus,
    build_request,
    evaluate_response,
    responder_url,
)
from emulator.pki import CA, IssuedCert
from emulator.pki.demo import CLIENT_CERT, DEMO_OCSP_URL, write_demo_pki
from emulator.pki.ocsp_responder import (
    REVOCATION_FILE,
    OcspResponder,
    ResponderError,
    Revocation,
    load_responder,
    revoke,
)

URL = "http://ocsp.test/"
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def issuing() -> CA:
    return CA("OCSP Root", not_before=NOW - datetime.timedelta(days=1)).intermediate(
        "OCSP Issuing", not_before=NOW - datetime.timedelta(days=1)
    )


def leaf(issuing: CA, name: str) -> IssuedCert:
    return issuing.issue_client(
        name,
        ocsp_url=URL,
        not_before=NOW - datetime.timedelta(hours=1),
        not_after=NOW + datetime.timedelta(days=30),
    )


def responder(issuing: CA, *known: IssuedCert, revoked: IssuedCert | None = None) -> OcspResponder:
    revocations = {}
    if revoked is not None:
        revocations[revoked.cert.serial_number] = Revocation(
            revoked.cert.serial_number, NOW, x509.ReasonFlags.superseded
        )
    return OcspResponder(
        [(issuing.cert, issuing.key)],
        known_serials=[c.cert.serial_number for c in known],
        revoked=revocations,
        clock=lambda: NOW,
    )


def ask(
    server: OcspResponder, client: IssuedCert, issuing: CA, at: datetime.datetime = NOW
) -> OcspOutcome:
    der = server.answer(build_request(client.cert, issuing.cert))
    return evaluate_response(der, cert=client.cert, issuer=issuing.cert, at=at)


def test_responder_url_comes_from_the_aia(issuing: CA) -> None:
    assert responder_url(leaf(issuing, "with").cert) == URL
    assert responder_url(issuing.issue_client("without").cert) is None


def test_known_certificate_is_good(issuing: CA) -> None:
    client = leaf(issuing, "good")
    outcome = ask(responder(issuing, client), client, issuing)
    assert outcome.status is OcspStatus.GOOD
    assert outcome.next_update is not None


def test_revoked_certificate_is_revoked_with_time_and_reason(issuing: CA) -> None:
    client = leaf(issuing, "revoked")
    outcome = ask(responder(issuing, client, revoked=client), client, issuing)
    assert (outcome.status, outcome.revoked_at, outcome.reason) == (
        OcspStatus.REVOKED,
        NOW,
        "superseded",
    )


def test_unknown_serial_is_unknown(issuing: CA) -> None:
    client = leaf(issuing, "stranger")
    assert ask(responder(issuing), client, issuing).status is OcspStatus.UNKNOWN


def test_request_about_another_ca_gets_unauthorized(issuing: CA) -> None:
    other = CA("OCSP Other Root", not_before=NOW - datetime.timedelta(days=1))
    client = leaf(other, "elsewhere")
    outcome = ask(responder(issuing), client, other)
    assert outcome.status is OcspStatus.ERROR
    assert "unauthorized" in outcome.detail


def test_response_with_a_broken_signature_is_refused(issuing: CA) -> None:
    client = leaf(issuing, "forged")
    der = responder(issuing, client).answer(build_request(client.cert, issuing.cert))
    # Our responder sends no certificates, so the DER ends inside the signature.
    forged = der[:-1] + bytes([der[-1] ^ 0x01])
    outcome = evaluate_response(forged, cert=client.cert, issuer=issuing.cert, at=NOW)
    assert outcome.status is OcspStatus.ERROR
    assert "signature" in outcome.detail


def test_response_about_another_certificate_is_refused(issuing: CA) -> None:
    asked, other = leaf(issuing, "asked"), leaf(issuing, "other")
    der = responder(issuing, asked, other).answer(build_request(other.cert, issuing.cert))
    outcome = evaluate_response(der, cert=asked.cert, issuer=issuing.cert, at=NOW)
    assert outcome.status is OcspStatus.ERROR
    assert "CertID" in outcome.detail


@pytest.mark.parametrize(
    ("shift", "fragment"),
    [(datetime.timedelta(hours=2), "expired"), (datetime.timedelta(hours=-2), "future")],
)
def test_response_outside_its_validity_is_refused(
    issuing: CA, shift: datetime.timedelta, fragment: str
) -> None:
    client = leaf(issuing, "timed")
    outcome = ask(responder(issuing, client), client, issuing, at=NOW + shift)
    assert outcome.status is OcspStatus.ERROR
    assert fragment in outcome.detail


def test_garbage_is_not_a_response(issuing: CA) -> None:
    client = leaf(issuing, "garbage")
    outcome = evaluate_response(b"<html>", cert=client.cert, issuer=issuing.cert, at=NOW)
    assert outcome.status is OcspStatus.ERROR


def _delegated_response(issuing: CA, client: IssuedCert, *, ocsp_signing: bool) -> bytes:
    key = issuing.issue_client("delegate").key
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "OCSP Signer")]))
        .issuer_name(issuing.cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
    )
    eku = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    signer = builder.sign(issuing.key, hashes.SHA256())
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=client.cert,
            issuer=issuing.cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + datetime.timedelta(minutes=5),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        .certificates([signer])
        .sign(key, hashes.SHA256())
    )
    return response.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("ocsp_signing", [True, False], ids=["ocsp-signing", "no-eku"])
def test_delegated_responder_needs_the_ocsp_signing_eku(issuing: CA, ocsp_signing: bool) -> None:
    client = leaf(issuing, "delegated")
    der = _delegated_response(issuing, client, ocsp_signing=ocsp_signing)
    outcome = evaluate_response(der, cert=client.cert, issuer=issuing.cert, at=NOW)
    assert (outcome.status is OcspStatus.GOOD) is ocsp_signing


def test_cache_keeps_answers_until_next_update_and_never_errors(issuing: CA) -> None:
    client = leaf(issuing, "cached")
    cache = OcspCache()
    good = OcspOutcome(OcspStatus.GOOD, next_update=NOW + datetime.timedelta(minutes=5))
    cache.put(client.cert, issuing.cert, good, at=NOW)
    cache.put(leaf(issuing, "failing").cert, issuing.cert, OcspOutcome.error("down"), at=NOW)

    assert cache.get(client.cert, issuing.cert, at=NOW + datetime.timedelta(minutes=4)) == good
    assert cache.get(client.cert, issuing.cert, at=NOW + datetime.timedelta(minutes=5)) is None
    assert len(cache._entries) == 0


def test_cache_bounds_answers_without_or_with_far_next_update(issuing: CA) -> None:
    client = leaf(issuing, "bounded")
    cache = OcspCache()
    far = OcspOutcome(OcspStatus.GOOD, next_update=NOW + datetime.timedelta(days=7))
    cache.put(client.cert, issuing.cert, far, at=NOW)
    assert (
        cache.get(client.cert, issuing.cert, at=NOW + datetime.timedelta(seconds=MAX_CACHE_S))
        is None
    )
    cache.put(client.cert, issuing.cert, OcspOutcome(OcspStatus.UNKNOWN), at=NOW)
    later = NOW + datetime.timedelta(seconds=DEFAULT_CACHE_S - 1)
    assert cache.get(client.cert, issuing.cert, at=later) is not None


def test_demo_pki_clients_point_at_the_local_responder_which_knows_them(tmp_path: Path) -> None:
    write_demo_pki(tmp_path / "pki")
    pki_dir = tmp_path / "pki"
    client = x509.load_pem_x509_certificate((pki_dir / CLIENT_CERT).read_bytes())
    issuer = x509.load_pem_x509_certificate((pki_dir / "intermediate-ca.pem").read_bytes())
    server = load_responder(pki_dir)
    now = datetime.datetime.now(datetime.UTC)

    def status() -> OcspStatus:
        der = server.answer(build_request(client, issuer))
        return evaluate_response(der, cert=client, issuer=issuer, at=now).status

    assert responder_url(client) == DEMO_OCSP_URL
    assert status() is OcspStatus.GOOD
    entry = revoke(pki_dir, "client", reason="keyCompromise")
    assert entry.serial == client.serial_number
    assert (pki_dir / REVOCATION_FILE).is_file()
    assert status() is OcspStatus.REVOKED


def test_revoking_an_unknown_name_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ResponderError, match="no certificate 'nope'"):
        revoke(tmp_path, "nope")
