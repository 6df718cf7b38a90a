"""``verify``'s scenario matrix under substitute trust, with the checks the example leaves out:
issuer DN, OCSP revocation through the run's own responder, a forged header that gets through,
and the user's own client certificate without a CA key."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import trio

import backend_stub
from emulator.cli.verify_matrix import ClientMaterial, MatrixReport, TrustMode, run_matrix
from emulator.cli.verify_report import render_table
from emulator.loading import load_config
from emulator.model import BackendAddress
from tests.helpers.pki import PkiBundle, template_parameters

EXAMPLE = Path(__file__).parents[2] / "examples" / "mtls_api" / "gateway.json"


def _template(*, strict_checks: bool, passthrough_rewrites: bool) -> dict[str, Any]:
    """The example's template; Strict may check issuer DN + OCSP, Passthrough may lose its rules."""
    document: dict[str, Any] = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    gateway = document["resources"][0]["properties"]
    if strict_checks:
        auth = gateway["sslProfiles"][0]["properties"]["clientAuthConfiguration"]
        auth["verifyClientCertIssuerDN"] = True
        auth["verifyClientRevocation"] = "OCSP"
    if not passthrough_rewrites:
        del gateway["requestRoutingRules"][1]["properties"]["rewriteRuleSet"]
    return document


async def _run(
    template: dict[str, Any], pki: PkiBundle, tmp_path: Path, material: ClientMaterial
) -> MatrixReport:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(template))
    config = load_config(path, template_parameters(pki))
    async with trio.open_nursery() as nursery:
        _host, port = await nursery.start(
            functools.partial(
                backend_stub.serve, backend_stub.StubConfig(), host="127.0.0.1", port=0
            )
        )
        backends = {"orders-api": (BackendAddress("127.0.0.1", port),)}
        report = await run_matrix(config, material, backends=backends)
        nursery.cancel_scope.cancel()
    return report


def _cells(report: MatrixReport) -> dict[tuple[str, str], Any]:
    return {(c.listener, c.scenario): c for c in report.cells}


async def test_substitute_trust_checks_issuer_dn_revocation_and_forgery(
    pki: PkiBundle, tmp_path: Path
) -> None:
    template = _template(strict_checks=True, passthrough_rewrites=False)
    report = await _run(template, pki, tmp_path, ClientMaterial())
    assert report.trust == TrustMode.SUBSTITUTE
    cells = _cells(report)
    strict = "strict-listener"
    assert cells[(strict, "valid")].verification == "SUCCESS"
    assert cells[(strict, "valid")].outcome == "backend 200"
    assert cells[(strict, "wrong-issuer")].verification == (
        "FAILED:Unable to verify the client certificate issuer"
    )
    assert cells[(strict, "revoked")].verification == "FAILED:certificate revoked"
    assert cells[(strict, "revoked")].outcome == "gateway 400"
    # Passthrough without a rewrite rule: the client's own header goes to the backend as sent.
    forged = cells[("passthrough-listener", "forged-header")]
    assert forged.forged_header_reached_backend is True
    assert forged.outcome == "backend 200 forged header reached backend"
    # Every line of the table names substitute trust.
    lines = render_table(report).splitlines()
    assert "SUBSTITUTE TRUST" in lines[0]
    rows = lines[2:]
    assert len(rows) == len(report.cells) == 22
    assert all("[substitute trust]" in row for row in rows)
    assert any("FORGED HEADER REACHED THE BACKEND" in row for row in rows)


async def test_own_client_certificate_without_ca_key_skips_what_needs_the_key(
    pki: PkiBundle, tmp_path: Path
) -> None:
    cert, key = pki.client_files(pki.client, "own-client", with_chain=True)
    material = ClientMaterial(client_cert=cert, client_key=key)
    template = _template(strict_checks=False, passthrough_rewrites=True)
    report = await _run(template, pki, tmp_path, material)
    assert report.trust == TrustMode.OWN_CERT
    cells = _cells(report)
    for scenario in ("valid", "valid-chain"):
        cell = cells[("strict-listener", scenario)]
        assert cell.verification == "SUCCESS"
        assert cell.client_subject == "CN=appgw-test-client"
    for scenario in ("expired", "not-yet-valid", "wrong-eku"):
        skipped = cells[("strict-listener", scenario)].skipped
        assert skipped is not None
        assert "--client-ca-key" in skipped
    assert cells[("strict-listener", "untrusted-ca")].outcome == "gateway 400"
    assert cells[("passthrough-listener", "forged-header")].forged_header_reached_backend is False
