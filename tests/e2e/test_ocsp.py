"""``verifyClientRevocation: OCSP`` end to end: a real responder over HTTP, real TLS, the cache.

The responder is :class:`emulator.pki.ocsp_responder.OcspResponder` serving the test PKI's issuing
CA on a free port; client certificates are issued at test time with that port in their AIA.
Decisions where Azure is silent (see ``emulator.core.tls.chain``): no AIA, an unreachable
responder, ``unknown`` and a bad response all fail closed with
``FAILED:certificate status request failed`` (nginx's text); revoked gives OpenSSL's
``FAILED:certificate revoked``.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path

import trio
from cryptography import x509

from emulator.pki import IssuedCert
from emulator.pki.ocsp_responder import OcspResponder, Revocation
from emulator.runtime.ocsp_client import OcspChecker
from tests.helpers.pki import PkiBundle
from tests.helpers.ports import free_port
from tests.helpers.verification import BAD_CERT_TITLE, Verified, request_with, start_verified

OCSP = {"verifyClientRevocation": "OCSP"}
REVOKED_AT = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


async def responder_url(nursery: trio.Nursery, pki: PkiBundle) -> tuple[OcspResponder, str]:
    """A responder for the test PKI's issuing CA that knows no serial yet."""
    responder = OcspResponder([(pki.client_ca.cert, pki.client_ca.key)], known_serials=())
    port = await nursery.start(functools.partial(responder.serve, host="127.0.0.1", port=0))
    return responder, f"http://127.0.0.1:{port}/"


async def ocsp_stack(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, *, explain: bool = False
) -> tuple[Verified, OcspChecker]:
    checker = OcspChecker(timeout_s=2.0)
    stack = await start_verified(
        nursery, pki, tmp_path, client_auth=OCSP, ocsp=checker, explain=explain
    )
    return stack, checker


def issue(pki: PkiBundle, name: str, url: str | None) -> IssuedCert:
    return pki.client_ca.issue_client(name, ocsp_url=url)


async def test_ocsp_good_certificate_is_accepted_and_the_answer_cached(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    responder, url = await responder_url(nursery, pki)
    good = issue(pki, "ocsp-good", url)
    responder.know(good.cert.serial_number)
    stack, checker = await ocsp_stack(nursery, pki, tmp_path)

    first = await request_with(stack, pki, good)
    second = await request_with(stack, pki, good)

    assert (first.status, second.status) == (200, 200)
    assert stack.last.sslClientVerify == "SUCCESS"
    assert (responder.requests, checker.fetches) == (1, 1)


async def test_ocsp_revoked_certificate_is_rejected(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    responder, url = await responder_url(nursery, pki)
    revoked = issue(pki, "ocsp-revoked", url)
    responder.know(revoked.cert.serial_number)
    responder.mark_revoked(
        Revocation(revoked.cert.serial_number, REVOKED_AT, x509.ReasonFlags.key_compromise)
    )
    stack, _checker = await ocsp_stack(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, revoked)

    assert reply.status == 400
    assert BAD_CERT_TITLE in reply.body
    assert stack.last.sslClientVerify == "FAILED:certificate revoked"
    explained = stack.last.clientCertFailureExplained
    assert f"the OCSP responder {url} says" in explained
    assert "revoked on 2024-01-02 03:04:05 UTC (reason: keyCompromise)" in explained


async def test_ocsp_unknown_certificate_is_rejected(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    _responder, url = await responder_url(nursery, pki)
    stranger = issue(pki, "ocsp-unknown", url)
    stack, _checker = await ocsp_stack(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, stranger)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:certificate status request failed"
    assert "status 'unknown'" in stack.last.clientCertFailureExplained


async def test_ocsp_responder_down_fails_closed_and_is_asked_again(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    client = issue(pki, "ocsp-down", url)
    stack, checker = await ocsp_stack(nursery, pki, tmp_path, explain=True)

    first = await request_with(stack, pki, client)
    second = await request_with(stack, pki, client)

    assert (first.status, second.status) == (400, 400)
    assert stack.last.sslClientVerify == "FAILED:certificate status request failed"
    assert f"cannot reach {url}" in stack.last.clientCertFailureExplained
    assert "fail closed" in stack.last.clientCertFailureExplained
    # Failures are not cached: the next connection asks again.
    assert checker.fetches == 2


async def test_ocsp_without_aia_fails_closed_without_asking_anyone(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    client = issue(pki, "ocsp-no-aia", None)
    stack, checker = await ocsp_stack(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, client)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:certificate status request failed"
    assert "names no OCSP responder" in stack.last.clientCertFailureExplained
    assert checker.fetches == 0


async def test_ocsp_is_not_asked_when_the_chain_already_failed(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    responder, url = await responder_url(nursery, pki)
    expired = pki.client_ca.issue_client("ocsp-expired", expired=True, ocsp_url=url)
    stack, _checker = await ocsp_stack(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, expired)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:certificate has expired"
    assert responder.requests == 0
