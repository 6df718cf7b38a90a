"""Strict verification end to end (issue #6): status, access-log ``sslClientVerify``, explanation.

Every case runs over real TLS against the ``up`` gateway template, with the SSL profile's upload
and ``clientAuthConfiguration`` changed per case. Each asserts the exact status, the
``sslClientVerify`` the access log records, and the ``clientCertFailureExplained`` sentence.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.arm.template import load_template, select_gateway
from emulator.core.request.plan import EXPLAIN_HEADER
from emulator.errors import CertificateError
from emulator.model import build_gateway_config
from emulator.pki import CA, IssuedCert
from tests.helpers.pki import PFX_PASSWORD, PkiBundle
from tests.helpers.verification import (
    BAD_CERT_TITLE,
    gateway_template,
    request_with,
    start_verified,
)

# --- the table of Strict cases -------------------------------------------------------------------


@dataclass(frozen=True)
class StrictCase:
    cert: str
    with_chain: bool
    status: int
    verify: str
    explained: str


STRICT_CASES = {
    "valid": StrictCase("client", False, 200, "SUCCESS", ""),
    "expired": StrictCase("expired", False, 400, "FAILED:certificate has expired", "expired on"),
    "not-yet-valid": StrictCase(
        "not_yet_valid", False, 400, "FAILED:certificate is not yet valid", "is not valid before"
    ),
    "unrelated-ca": StrictCase(
        "unrelated",
        False,
        400,
        "FAILED:unable to verify the first certificate",
        "its issuer 'CN=appgw-emulator Unrelated Root CA",
    ),
    "self-signed": StrictCase(
        "self_signed", False, 400, "FAILED:self-signed certificate", "is self-signed"
    ),
}


@pytest.mark.parametrize("name", list(STRICT_CASES))
async def test_strict_case_has_its_status_log_value_and_explanation(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, name: str
) -> None:
    case = STRICT_CASES[name]
    stack = await start_verified(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, getattr(pki, case.cert), with_chain=case.with_chain)

    assert reply.status == case.status
    assert stack.last.sslClientVerify == case.verify
    if case.explained:
        assert BAD_CERT_TITLE in reply.body
        assert case.explained in stack.last.clientCertFailureExplained
    else:
        assert stack.last.clientCertFailureExplained == ""


async def test_strict_without_certificate_is_explained(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path)

    reply = await request_with(stack, pki, None)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "NONE"
    assert "no client certificate was sent" in stack.last.clientCertFailureExplained


def test_leaf_only_upload_is_a_configuration_error(pki: PkiBundle, tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(gateway_template({})))
    parameters = [
        "certData=" + base64.b64encode(pki.server.pfx(PFX_PASSWORD)).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(pki.client.cert_pem).decode(),
    ]

    with pytest.raises(CertificateError) as info:
        build_gateway_config(
            select_gateway(load_template(path, parameters), None), now=datetime.now(UTC)
        )

    assert (
        info.value.error_code
        == "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate"
    )


async def test_intermediate_missing_from_upload_and_handshake_is_rejected(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path, upload_pem=pki.client_root.cert_pem)

    reply = await request_with(stack, pki, pki.client)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:unable to verify the first certificate"
    explained = stack.last.clientCertFailureExplained
    issuer = "CN=appgw-emulator Test Client CA"
    assert f"the client sent only its leaf; its issuer '{issuer}" in explained
    assert "upload that intermediate or ask the client to send it" in explained
    assert "does not download missing intermediates" in explained


async def test_intermediate_sent_by_the_client_completes_the_chain(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path, upload_pem=pki.client_root.cert_pem)

    reply = await request_with(stack, pki, pki.client, with_chain=True)

    assert reply.status == 200
    assert stack.last.sslClientVerify == "SUCCESS"


async def test_ca_certificate_used_as_client_certificate_is_rejected(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path)
    ca_as_client = IssuedCert(cert=pki.client_ca.cert, key=pki.client_ca.key)

    reply = await request_with(stack, pki, ca_as_client)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:unsupported certificate purpose"
    assert "presented a CA certificate" in stack.last.clientCertFailureExplained


async def test_server_auth_only_certificate_is_rejected_as_unsupported_purpose(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path)
    server_like = pki.client_ca.issue_server("api.example.test")

    reply = await request_with(stack, pki, server_like)

    assert reply.status == 400
    assert stack.last.sslClientVerify == "FAILED:unsupported certificate purpose"
    assert "without clientAuth" in stack.last.clientCertFailureExplained


# --- issuer DN ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_chain() -> tuple[CA, CA, CA]:
    root = CA("e2e DN Root")
    issuing = root.intermediate("e2e DN Issuing", path_length=1)
    return root, issuing, issuing.intermediate("e2e DN Sub Issuing")


@pytest.mark.parametrize("issuer_dn", [False, True], ids=["dn-off", "dn-on"])
async def test_issuer_dn_check_passes_for_a_certificate_of_the_lowest_ca(
    pki: PkiBundle,
    nursery: trio.Nursery,
    tmp_path: Path,
    deep_chain: tuple[CA, CA, CA],
    issuer_dn: bool,
) -> None:
    root, issuing, sub = deep_chain
    stack = await start_verified(
        nursery,
        pki,
        tmp_path,
        upload_pem=root.cert_pem + issuing.cert_pem + sub.cert_pem,
        client_auth={"verifyClientCertIssuerDN": issuer_dn},
    )

    reply = await request_with(stack, pki, sub.issue_client("dn-direct"))

    assert reply.status == 200
    assert stack.last.sslClientVerify == "SUCCESS"


@pytest.mark.parametrize("issuer_dn", [False, True], ids=["dn-off", "dn-on"])
async def test_issuer_dn_mismatch_rejects_a_chain_that_verifies(
    pki: PkiBundle,
    nursery: trio.Nursery,
    tmp_path: Path,
    deep_chain: tuple[CA, CA, CA],
    issuer_dn: bool,
) -> None:
    root, issuing, sub = deep_chain
    stack = await start_verified(
        nursery,
        pki,
        tmp_path,
        upload_pem=root.cert_pem + issuing.cert_pem + sub.cert_pem,
        client_auth={"verifyClientCertIssuerDN": issuer_dn},
    )

    reply = await request_with(stack, pki, issuing.issue_client("dn-one-level-up"))

    if not issuer_dn:
        assert (reply.status, stack.last.sslClientVerify) == (200, "SUCCESS")
        return
    assert reply.status == 400
    assert BAD_CERT_TITLE in reply.body
    assert stack.last.sslClientVerify == "FAILED:Unable to verify the client certificate issuer"
    assert "'CN=e2e DN Sub Issuing" in stack.last.clientCertFailureExplained


# --- --explain and Passthrough -------------------------------------------------------------


@pytest.mark.parametrize("explain", [True, False], ids=["explain", "default"])
async def test_explain_adds_the_sentence_to_strict_400s_only_when_asked(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, explain: bool
) -> None:
    stack = await start_verified(nursery, pki, tmp_path, explain=explain)

    rejected = await request_with(stack, pki, pki.expired)
    accepted = await request_with(stack, pki, pki.client)

    assert rejected.status == 400
    header = rejected.header(EXPLAIN_HEADER)
    if explain:
        assert header is not None
        assert "expired on" in header
    else:
        assert header is None
    assert accepted.status == 200
    assert accepted.header(EXPLAIN_HEADER) is None


async def test_passthrough_logs_passthrough_for_any_certificate(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_verified(nursery, pki, tmp_path)

    await request_with(stack, pki, pki.expired, listener=PASSTHROUGH_LISTENER)
    expired = stack.last
    await request_with(stack, pki, None, listener=PASSTHROUGH_LISTENER)

    assert (expired.httpStatus, expired.sslClientVerify) == (200, "PASSTHROUGH")
    assert expired.clientCertFailureExplained == ""
    assert stack.last.sslClientVerify == "NONE"
