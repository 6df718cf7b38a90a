"""``appgw-emulator verify`` on this example, as the README here runs it: our template, our API,
clients minted from the demo PKI's issuing CA, the expectations file as the CI gate.

The command runs in this process (``emulator.cli.main``) against the API on a real socket; the
gateway, the relay in front of the API and every client handshake are real TLS over loopback.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from orders_api import OrdersApi

from emulator.cli.main import main
from emulator.pki.demo import DemoPki, write_demo_pki

HERE = Path(__file__).parent
TEMPLATE = HERE / "gateway.json"
EXPECTATIONS = HERE / "verify-expectations.json"
#: The CN ``verify`` gives the clients it mints, allowed by the API in the README's command.
VERIFY_CN = "appgw-verify-client"


@pytest.fixture(scope="module")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return write_demo_pki(tmp_path_factory.mktemp("verify") / "certs")


@pytest.fixture
def api(demo_pki: DemoPki) -> Iterator[OrdersApi]:
    chain = (demo_pki.directory / "trusted-client-ca-chain.pem").read_bytes()
    with OrdersApi(trusted_ca_pem=chain, allowed={VERIFY_CN: "reader"}) as running:
        yield running


def _verify_args(pki: DemoPki, api: OrdersApi, *extra: str) -> list[str]:
    certs = pki.directory
    return [
        "verify",
        "--template-file",
        str(TEMPLATE),
        "--parameters",
        f"certData={base64.b64encode((certs / 'server.pfx').read_bytes()).decode()}",
        f"certPassword={(certs / 'server-pfx-password.txt').read_text().strip()}",
        f"trustedClientCaData={(certs / 'trusted-client-ca-chain.b64').read_text().strip()}",
        "--backend",
        f"orders-api={api.address}",
        "--client-ca",
        str(certs / "intermediate-ca.pem"),
        "--client-ca-key",
        str(certs / "intermediate-ca.key"),
        "--path",
        "/orders",
        *extra,
    ]


def test_verify_matches_the_expectations_and_writes_junit(
    demo_pki: DemoPki, api: OrdersApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "verify.xml"
    code = main(_verify_args(demo_pki, api, "--expect", str(EXPECTATIONS), "--junit", str(junit)))
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"all cells match {EXPECTATIONS}" in out
    assert "clients minted from your CA" in out.splitlines()[0]

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    # 2 HTTPS listeners x 11 scenarios, one testcase each.
    assert len(cases) == 22
    assert suite.get("tests") == "22"
    assert suite.get("failures") == "0"
    assert suite.get("errors") == "0"
    skipped = {(c.get("classname"), c.get("name")) for c in cases if c.find("skipped") is not None}
    assert skipped == {
        (f"orders-gateway.{listener}", scenario)
        for listener in ("strict-listener", "passthrough-listener")
        for scenario in ("wrong-issuer", "revoked")
    }
    facts = {
        (c.get("classname"), c.get("name")): json.loads(c.findtext("system-out") or "{}")
        for c in cases
    }
    valid = facts[("orders-gateway.strict-listener", "valid")]
    assert valid["sslClientVerify"] == "SUCCESS"
    assert valid["backendStatus"] == "200"
    headers = dict(valid["certHeaders"])
    assert headers["X-Client-Cert-Subject"] == f"CN={VERIFY_CN}"
    assert headers["X-Client-Cert"].startswith("-----BEGIN%20CERTIFICATE-----%0A")
    expired = facts[("orders-gateway.strict-listener", "expired")]
    assert expired["sslClientVerify"] == "FAILED:certificate has expired"
    assert expired["backendReached"] is False
    assert expired["page"] == "400 The SSL certificate error"
    forged = facts[("orders-gateway.passthrough-listener", "forged-header")]
    # The unconditional rewrite rule deleted the client's X-Client-Cert: the API saw none.
    assert forged["forgedHeaderReachedBackend"] is False
    assert forged["status"] == 401
    assert [name for name, _ in forged["certHeaders"]] == ["X-Client-Cert-Verification"]


def test_verify_fails_with_a_diff_when_the_backend_differs(
    demo_pki: DemoPki, api: OrdersApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expectations = json.loads(EXPECTATIONS.read_text())
    expectations["passthrough-listener"]["expired"] = "backend 200"
    del expectations["strict-listener"]["none"]
    expectations["*"] = {"none": 401}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(expectations))
    junit = tmp_path / "verify.xml"
    code = main(_verify_args(demo_pki, api, "--expect", str(wrong), "--junit", str(junit)))
    out = capsys.readouterr().out
    assert code == 1
    assert "--- expected passthrough-listener x expired: backend 200" in out
    assert "+++ got      passthrough-listener x expired: backend 403" in out
    # The wildcard applies where a listener says nothing: Strict answers 400 without a certificate.
    assert "+++ got      strict-listener x none: gateway 400" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "2"
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert {(c.get("classname"), c.get("name")) for c in failed} == {
        ("orders-gateway.passthrough-listener", "expired"),
        ("orders-gateway.strict-listener", "none"),
    }


def test_verify_refuses_an_expectation_for_an_unknown_listener(
    demo_pki: DemoPki, api: OrdersApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"strict": {"valid": "backend 200"}}))
    assert main(_verify_args(demo_pki, api, "--expect", str(bad))) == 1
    err = capsys.readouterr().err
    assert f"error: {bad}: strict: listener 'strict' is not an HTTPS listener" in err
    assert "fix: use a listener name from the template" in err


def test_compare_modes_twins_mirror_the_other_listener(
    demo_pki: DemoPki, api: OrdersApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # --client-ca may be the whole chain: the CA the key belongs to is found in it, and the
    # chain (with its root) is what the Strict twin of the Passthrough listener trusts.
    args = _verify_args(demo_pki, api, "--compare-modes", "--output", "json")
    args[args.index(str(demo_pki.directory / "intermediate-ca.pem"))] = str(
        demo_pki.directory / "trusted-client-ca-chain.pem"
    )
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    outcome = {(c["listener"], c["scenario"]): c["outcome"] for c in report["cells"]}
    scenarios = {scenario for _, scenario in outcome}
    for scenario in scenarios:
        assert (
            outcome[("strict-listener-as-passthrough", scenario)]
            == outcome[("passthrough-listener", scenario)]
        ), scenario
        assert (
            outcome[("passthrough-listener-as-strict", scenario)]
            == outcome[("strict-listener", scenario)]
        ), scenario
    assert outcome[("strict-listener-as-passthrough", "expired")] == "backend 403"
