"""``appgw-emulator validate``: every problem Azure would refuse, each with file, path, fix, code.

The command runs in-process (``emulator.cli.main``) on files written to ``tmp_path``: the demo
template (Strict + Passthrough, the `up` gateway) with one thing broken per case, the Azure
quickstart verbatim, a portal JSON View export and a template holding two gateways. Validation
binds no port, so these are unit tests.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator.arm.demo_template import demo_template
from emulator.cli.main import main
from emulator.pki import CA, IssuedCert, self_signed_client

FIXTURES = Path(__file__).parent.parent / "fixtures"
PASSWORD = "validate-pw"
GW = ("resources", 0, "properties")


@pytest.fixture(scope="module")
def material() -> dict[str, Any]:
    root = CA("validate Root CA")
    intermediate = root.intermediate("validate Issuing CA")
    server = CA("validate Server Root").issue_server("localhost")
    leaf = intermediate.issue_client("validate-client")
    return {
        "root": root,
        "intermediate": intermediate,
        "server": server,
        "leaf": leaf,
        "pfx_b64": base64.b64encode(server.pfx(PASSWORD)).decode(),
        "ca_b64": base64.b64encode(root.cert_pem + intermediate.cert_pem).decode(),
    }


def _params(material: dict[str, Any]) -> list[str]:
    return [
        "--parameters",
        f"certData={material['pfx_b64']}",
        f"certPassword={PASSWORD}",
        f"trustedClientCaData={material['ca_b64']}",
    ]


def _demo() -> dict[str, Any]:
    return demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=8080
    )


def _at(template: dict[str, Any], *path: str | int) -> Any:
    node: Any = template
    for key in path:
        node = node[key]
    return node


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: dict[str, Any], extra: list[str]
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    code = main(["validate", "--template-file", str(path), "--output", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _set(
    path: tuple[str | int, ...], value: Any
) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def mutate(template: dict[str, Any], material: dict[str, Any]) -> None:
        _at(template, *path[:-1])[path[-1]] = value

    return mutate


def _trusted_data(
    make: Callable[[dict[str, Any]], bytes],
) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Replace the trusted client CA upload with other bytes (the parameter is overridden)."""

    def mutate(template: dict[str, Any], material: dict[str, Any]) -> None:
        upload = _at(template, *GW, "trustedClientCertificates", 0, "properties")
        upload["data"] = base64.b64encode(make(material)).decode()

    return mutate


def _pfx_two_roots(m: dict[str, Any]) -> bytes:
    return bytes(m["root"].cert_pem + CA("another root").cert_pem)


def _leaf_only(m: dict[str, Any]) -> bytes:
    leaf: IssuedCert = m["leaf"]
    return leaf.cert_pem


CASES: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], None], str, str]] = [
    (
        "trusted CA upload holding only a leaf",
        _trusted_data(_leaf_only),
        "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "self-signed leaf without CA:TRUE uploaded",
        _trusted_data(lambda m: self_signed_client("lonely").cert_pem),
        "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "two roots in one upload",
        _trusted_data(_pfx_two_roots),
        "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "intermediate without its root",
        _trusted_data(lambda m: m["intermediate"].cert_pem),
        "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "the client's PFX uploaded instead of the CA chain",
        _trusted_data(lambda m: m["leaf"].pfx("x")),
        "ApplicationGatewayTrustedClientCertificateInvalidData",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "a private key uploaded",
        _trusted_data(lambda m: m["leaf"].key_pem),
        "ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "upload larger than 25 KB",
        _trusted_data(lambda m: (m["root"].cert_pem + m["intermediate"].cert_pem) * 30),
        "ApplicationGatewayTrustedClientCertificateInvalidData",
        "trustedClientCertificates[0].properties.data",
    ),
    (
        "unknown client auth mode",
        _set(
            (
                *GW,
                "sslProfiles",
                0,
                "properties",
                "clientAuthConfiguration",
                "verifyClientAuthMode",
            ),
            "Optional",
        ),
        "InvalidRequestContent",
        "sslProfiles[0].properties.clientAuthConfiguration.verifyClientAuthMode",
    ),
    (
        "unknown revocation mode",
        _set(
            (
                *GW,
                "sslProfiles",
                0,
                "properties",
                "clientAuthConfiguration",
                "verifyClientRevocation",
            ),
            "CRL",
        ),
        "InvalidRequestContent",
        "sslProfiles[0].properties.clientAuthConfiguration.verifyClientRevocation",
    ),
    (
        "Passthrough with an API version before 2025-03-01",
        _set(("resources", 0, "apiVersion"), "2024-05-01"),
        "InvalidRequestContent",
        "sslProfiles[1].properties.clientAuthConfiguration.verifyClientAuthMode",
    ),
    (
        "SSL profiles on a v1 SKU",
        _set((*GW, "sku"), {"name": "Standard_Medium", "tier": "Standard", "capacity": 2}),
        "EmulatorSslProfileNeedsV2Sku",
        "properties.sku",
    ),
    (
        "wrong PFX password",
        _set((*GW, "sslCertificates", 0, "properties", "password"), "not-the-password"),
        "EmulatorSslCertificateInvalidData",
        "sslCertificates[0].properties.data",
    ),
    (
        "PFX data that is not a PFX",
        _set(
            (*GW, "sslCertificates", 0, "properties", "data"), base64.b64encode(b"hello").decode()
        ),
        "EmulatorSslCertificateInvalidData",
        "sslCertificates[0].properties.data",
    ),
    (
        "HTTPS listener without a certificate",
        lambda t, m: _at(t, *GW, "httpListeners", 0, "properties").pop("sslCertificate"),
        "EmulatorHttpsListenerWithoutCertificate",
        "httpListeners[0].properties",
    ),
    (
        "SSL profile on an HTTP listener",
        _set((*GW, "httpListeners", 0, "properties", "protocol"), "Http"),
        "EmulatorSslProfileOnHttpListener",
        "httpListeners[0].properties",
    ),
    (
        "keyVaultSecretId cannot be read offline",
        _set(
            (*GW, "sslCertificates", 0, "properties"),
            {"keyVaultSecretId": "https://kv.vault.azure.net/secrets/c"},
        ),
        "EmulatorUnsupportedFeature",
        "sslCertificates[0].properties.keyVaultSecretId",
    ),
    (
        "two listeners on the same port and host names",
        _set((*GW, "frontendPorts", 1, "properties", "port"), 8443),
        "EmulatorDuplicateListener",
        "httpListeners[1]",
    ),
    (
        "missing rule priority",
        lambda t, m: _at(t, *GW, "requestRoutingRules", 0, "properties").pop("priority"),
        "ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty",
        "requestRoutingRules[0].properties",
    ),
    (
        "duplicate rule priority",
        _set((*GW, "requestRoutingRules", 1, "properties", "priority"), 100),
        "EmulatorDuplicateRulePriority",
        "requestRoutingRules[1].properties.priority",
    ),
    (
        "priority out of range",
        _set((*GW, "requestRoutingRules", 0, "properties", "priority"), 20001),
        "EmulatorRulePriorityOutOfRange",
        "requestRoutingRules[0].properties.priority",
    ),
    (
        "rule without listener",
        lambda t, m: _at(t, *GW, "requestRoutingRules", 0, "properties").pop("httpListener"),
        "InvalidTemplate",
        "requestRoutingRules[0].properties.httpListener",
    ),
    (
        "Basic rule without pool",
        lambda t, m: _at(t, *GW, "requestRoutingRules", 0, "properties").pop("backendAddressPool"),
        "InvalidTemplate",
        "requestRoutingRules[0].properties",
    ),
    (
        "two rules on one listener",
        _set(
            (*GW, "requestRoutingRules", 1, "properties", "httpListener"),
            {"id": "x/httpListeners/strict-listener"},
        ),
        "EmulatorListenerUsedByMultipleRules",
        "requestRoutingRules[1].properties.httpListener",
    ),
    (
        "frontend port out of range",
        _set((*GW, "frontendPorts", 0, "properties", "port"), 70000),
        "EmulatorFrontendPortOutOfRange",
        "frontendPorts[0].properties.port",
    ),
    (
        "unknown backend protocol",
        _set((*GW, "backendHttpSettingsCollection", 0, "properties", "protocol"), "Tcp"),
        "InvalidRequestContent",
        "backendHttpSettingsCollection[0].properties.protocol",
    ),
    (
        "requestTimeout out of range",
        _set((*GW, "backendHttpSettingsCollection", 0, "properties", "requestTimeout"), 0),
        "InvalidTemplate",
        "backendHttpSettingsCollection[0].properties.requestTimeout",
    ),
    (
        "unknown property",
        _set((*GW, "httpListeners", 0, "properties", "sslProfil"), {"id": "x"}),
        "InvalidJson",
        "httpListeners[0].properties.sslProfil",
    ),
    (
        "dangling reference",
        _set((*GW, "httpListeners", 0, "properties", "sslProfile"), {"id": "x/sslProfiles/nope"}),
        "InvalidResourceReference",
        "httpListeners[0].properties.sslProfile",
    ),
    (
        "invalid multi-site host name",
        _set((*GW, "httpListeners", 0, "properties", "hostName"), "bad host!"),
        "EmulatorHostNameInvalid",
        "httpListeners[0].properties.hostNames",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "code", "path_end"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validate_reports_what_azure_would_refuse(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    material: dict[str, Any],
    mutate: Callable[[dict[str, Any], dict[str, Any]], None],
    code: str,
    path_end: str,
) -> None:
    template = copy.deepcopy(_demo())
    mutate(template, material)
    exit_code, report = _run(tmp_path, capsys, template, _params(material))
    assert exit_code == 1
    assert report["ok"] is False
    matching = [p for p in report["problems"] if p["code"] == code]
    assert matching, report["problems"]
    problem = matching[0]
    assert problem["path"].endswith(path_end), problem
    assert problem["file"].endswith("template.json")
    assert problem["fix"], problem
    assert problem["message"]


def test_validate_lists_every_problem_not_just_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = copy.deepcopy(_demo())
    _set((*GW, "frontendPorts", 0, "properties", "port"), 0)(template, material)
    _set((*GW, "backendHttpSettingsCollection", 0, "properties", "requestTimeout"), -1)(
        template, material
    )
    _set((*GW, "httpListeners", 1, "properties", "bogus"), True)(template, material)
    _trusted_data(_leaf_only)(template, material)
    exit_code, report = _run(tmp_path, capsys, template, _params(material))
    assert exit_code == 1
    codes = sorted(p["code"] for p in report["problems"])
    assert codes == sorted(
        [
            "EmulatorFrontendPortOutOfRange",
            "InvalidTemplate",
            "InvalidJson",
            "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
        ]
    )


def test_validate_text_output_names_file_path_fix_and_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = copy.deepcopy(_demo())
    _set((*GW, "requestRoutingRules", 0, "properties", "priority"), 0)(template, material)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    assert main(["validate", "-f", str(path), *_params(material)]) == 1
    out = capsys.readouterr().out
    assert (
        f"error: {path}: resources[0].properties.requestRoutingRules[0].properties.priority:" in out
    )
    assert "[EmulatorRulePriorityOutOfRange]" in out
    assert "  fix: " in out
    assert "1 problem(s) found" in out


def test_validate_ok_prints_a_summary_of_what_will_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_demo()))
    assert main(["validate", "-f", str(path), *_params(material)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK\n")
    assert (
        "listener strict-listener: Https port 8443, any host, SSL profile strict-profile: Strict"
        in out
    )
    assert "trusts client CA CN=validate Root CA" in out
    assert "trusts client CA CN=validate Issuing CA" in out
    assert "rule strict-rule (priority 100)" in out
    assert "client certificate -> X-Client-Cert" in out
    assert "pool stub-backend: 127.0.0.1" in out
    assert "buffering: request on, response on" in out


def test_validate_shows_buffering_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    gateway = next(
        r for r in template["resources"] if r["type"] == "Microsoft.Network/applicationGateways"
    )
    gateway["properties"]["globalConfiguration"] = {"enableResponseBuffering": False}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    assert main(["validate", "-f", str(path), *_params(material)]) == 0
    assert "buffering: request on, response off (streamed)" in capsys.readouterr().out
    assert main(["validate", "-f", str(path), *_params(material), "-o", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["buffering"] == {
        "enableRequestBuffering": True,
        "enableResponseBuffering": False,
    }


def test_validate_json_summary_of_the_quickstart_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = FIXTURES / "quickstart" / "deploymentTemplate.json"
    code = main(
        [
            "validate",
            "-f",
            str(template),
            "-p",
            f"@{FIXTURES / 'quickstart' / 'deploymentParameters.json'}",
            "-p",
            f"certData={material['pfx_b64']}",
            f"certPassword={PASSWORD}",
            "--subscription",
            "11111111-2222-3333-4444-555555555555",
            "--resource-group",
            "rg-test",
            "-o",
            "json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    summary = report["summary"]
    assert summary["resourceId"] == (
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-test/providers/"
        "Microsoft.Network/applicationGateways/mtlsAppGw"
    )
    assert summary["listeners"][0]["sslProfile"]["clientAuth"] == "Passthrough"
    assert summary["rules"] == [
        {
            "name": "rule2",
            "priority": 2000,
            "listener": "listener2",
            "pool": "pool2",
            "backendSettings": "settings2",
            "rewriteRuleSet": None,
            "forwardsClientCertificateIn": [],
        }
    ]
    assert any("forwards no client certificate" in w for w in summary["warnings"])
    assert {"type": "Microsoft.Network/virtualNetworks", "name": "mtlsVnet"} in summary[
        "skippedResources"
    ]


def test_validate_reads_a_portal_json_view_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    text = (FIXTURES / "configs" / "portal-export.json").read_text()
    text = text.replace("__PFX_B64__", material["pfx_b64"]).replace("__PFX_PASSWORD__", PASSWORD)
    text = text.replace("__CA_B64__", material["ca_b64"])
    path = tmp_path / "export.json"
    path.write_text(text)
    assert main(["validate", "-f", str(path), "-o", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["resourceId"].endswith(
        "/resourceGroups/contoso-rg/providers/Microsoft.Network/applicationGateways/contoso-appgw"
    )
    assert summary["listeners"][0]["sslProfile"]["clientAuth"] == "Strict"
    assert "$.zones" in summary["notEmulated"]


def test_portal_export_without_the_pfx_explains_what_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    data = json.loads(
        (FIXTURES / "configs" / "portal-export.json")
        .read_text()
        .replace("__CA_B64__", material["ca_b64"])
    )
    cert_props = data["properties"]["sslCertificates"][0]["properties"]
    del cert_props["data"], cert_props["password"]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(data))
    assert main(["validate", "-f", str(path), "-o", "json"]) == 1
    problem = json.loads(capsys.readouterr().out)["problems"][0]
    assert problem["code"] == "EmulatorSslCertificateWithoutData"
    assert "publicCertData" in problem["fix"]


def test_template_with_two_gateways_needs_gateway_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    second = copy.deepcopy(template["resources"][0])
    second["name"] = "second-gateway"
    template["resources"].append(second)
    path = tmp_path / "two.json"
    path.write_text(json.dumps(template))
    assert main(["validate", "-f", str(path), *_params(material)]) == 1
    out = capsys.readouterr().out
    assert "appgw-emulator-demo" in out
    assert "second-gateway" in out
    assert "--gateway" in out
    assert (
        main(
            [
                "validate",
                "-f",
                str(path),
                *_params(material),
                "--gateway",
                "second-gateway",
                "-o",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["summary"]["gateway"] == "second-gateway"


def test_validate_warns_about_issuer_dn_on_a_profile_without_client_auth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    strict = _at(template, *GW, "sslProfiles", 0, "properties")
    strict.pop("trustedClientCertificates")
    strict["clientAuthConfiguration"]["verifyClientCertIssuerDN"] = True
    exit_code, report = _run(tmp_path, capsys, template, _params(material))
    assert exit_code == 0
    assert any("issuer-DN" in w for w in report["summary"]["warnings"])
