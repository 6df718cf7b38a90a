"""``validate`` tells the whole truth (issue 19): every problem in one run, "did you mean",
warnings for profiles that silently do less than their author thinks, placeholders named as the
parameter, the ``run`` flags that shape the summary, and three distinct PFX failures.

Also the certificate inputs of issue 19 that need no network: PEM text in CA uploads, Key Vault
items supplied with ``--certificate`` (PFX, PEM + key, trusted root), and what ``--loose``
changes. The command runs in-process on files in ``tmp_path``; nothing binds a port.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Final

import pytest

from emulator.arm.certdata import base64_encode_if_not, decode_upload_field
from emulator.arm.demo_template import demo_template
from emulator.arm.keyvault import SuppliedCertificate, apply_certificates
from emulator.cli.main import main
from emulator.errors import InvalidConfiguration, TemplateError
from emulator.pki import CA, IssuedCert

FIXTURES: Final = Path(__file__).parent.parent / "fixtures"
PASSWORD: Final = "truth-pw"


@pytest.fixture(scope="module")
def material() -> dict[str, Any]:
    root = CA("truth Root CA")
    intermediate = root.intermediate("truth Issuing CA")
    server_root = CA("truth Server Root")
    server = server_root.issue_server("localhost")
    return {
        "root": root,
        "intermediate": intermediate,
        "server_root": server_root,
        "server": server,
        "pfx": server.pfx(PASSWORD),
        "ca_pem": root.cert_pem + intermediate.cert_pem,
    }


def _params(m: dict[str, Any], *, ca: str | None = None) -> list[str]:
    return [
        "--parameters",
        "certData=" + base64.b64encode(m["pfx"]).decode(),
        f"certPassword={PASSWORD}",
        "trustedClientCaData=" + (ca or base64.b64encode(m["ca_pem"]).decode()),
    ]


def _demo() -> dict[str, Any]:
    return demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=8080
    )


def _gw(template: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = template["resources"][0]["properties"]
    return props


def _validate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    template: dict[str, Any],
    extra: list[str],
    *,
    name: str = "template.json",
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / name
    path.write_text(json.dumps(template))
    code = main(["validate", "--template-file", str(path), "--output", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _profile(template: dict[str, Any], name: str) -> dict[str, Any]:
    profile: dict[str, Any] = next(p for p in _gw(template)["sslProfiles"] if p["name"] == name)
    properties: dict[str, Any] = profile["properties"]
    return properties


# -- every problem in one run --------------------------------------------------------------------


def test_out_of_range_port_no_longer_hides_a_misspelt_ssl_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    gw = _gw(template)
    gw["frontendPorts"][0]["properties"]["port"] = 70000
    listener = gw["httpListeners"][0]["properties"]
    listener["sslProfil"] = listener.pop("sslProfile")

    code, out = _validate(tmp_path, capsys, template, _params(material))

    assert code == 1
    by_code = {p["code"]: p for p in out["problems"]}
    assert set(by_code) >= {"EmulatorFrontendPortOutOfRange", "InvalidJson"}
    misspelt = by_code["InvalidJson"]
    assert misspelt["path"].endswith("httpListeners[0].properties.sslProfil")
    assert "did you mean 'sslProfile'?" in misspelt["fix"]


def test_invalid_auth_mode_no_longer_hides_an_invalid_revocation_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    cac = _profile(template, "strict-profile")["clientAuthConfiguration"]
    cac["verifyClientAuthMode"] = "Strikt"
    cac["verifyClientRevocation"] = "OSCP"

    code, out = _validate(tmp_path, capsys, template, _params(material))

    assert code == 1
    messages = [p["message"] for p in out["problems"]]
    assert "'verifyClientAuthMode' is 'Strikt' (did you mean 'Strict'?)" in messages
    assert "'verifyClientRevocation' is 'OSCP' (did you mean 'OCSP'?)" in messages
    assert {p["code"] for p in out["problems"]} == {"InvalidRequestContent"}


def test_misspelt_parameter_name_gets_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(
        tmp_path, capsys, _demo(), [*_params(material), "--parameters", "certPasword=x"]
    )
    assert code == 1
    (problem,) = out["problems"]
    assert "'certPasword' -> did you mean 'certPassword'?" in problem["message"]


# -- warnings for profiles that do less than they seem to ---------------------------------------


def _warnings(out: dict[str, Any]) -> list[str]:
    assert out["ok"], out["problems"]
    warnings: list[str] = out["summary"]["warnings"]
    return warnings


def test_strict_without_trusted_client_ca_warns_that_nobody_is_authenticated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _profile(template, "strict-profile").pop("trustedClientCertificates")
    _code, out = _validate(tmp_path, capsys, template, _params(material))
    (warning,) = [w for w in _warnings(out) if "strict-profile" in w]
    assert "clients are not authenticated" in warning


def test_passthrough_with_trusted_client_cas_warns_that_nothing_is_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    strict = _profile(template, "strict-profile")
    _profile(template, "passthrough-profile")["trustedClientCertificates"] = strict[
        "trustedClientCertificates"
    ]
    _code, out = _validate(tmp_path, capsys, template, _params(material))
    (warning,) = [w for w in _warnings(out) if "passthrough-profile" in w]
    assert "Passthrough with trustedClientCertificates verifies nothing" in warning


def test_passthrough_without_policy_or_cas_warns_about_azures_later_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _profile(template, "passthrough-profile").pop("sslPolicy")
    _code, out = _validate(tmp_path, capsys, template, _params(material))
    (warning,) = [w for w in _warnings(out) if "passthrough-profile" in w]
    assert (
        "SslProfile passthrough-profile must specify either SslPolicy or "
        "TrustedClientCertificates" in warning
    )


def test_the_demo_template_itself_has_no_profile_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    _code, out = _validate(tmp_path, capsys, _demo(), _params(material))
    assert [w for w in _warnings(out) if "SSL profile" in w] == []


def test_exported_profile_without_cas_or_mode_warns_that_passthrough_may_be_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    text = (FIXTURES / "configs" / "portal-export.json").read_text()
    text = text.replace("__PFX_B64__", base64.b64encode(material["pfx"]).decode())
    text = text.replace("__PFX_PASSWORD__", PASSWORD)
    text = text.replace("__CA_B64__", base64.b64encode(material["ca_pem"]).decode())
    data = json.loads(text)
    profile = data["properties"]["sslProfiles"][0]["properties"]
    profile.pop("trustedClientCertificates")
    profile["clientAuthConfiguration"].pop("verifyClientAuthMode")
    code, out = _validate(tmp_path, capsys, data, [], name="export.json")
    assert code == 0
    lost = [w for w in _warnings(out) if "older Azure CLI and PowerShell" in w]
    assert len(lost) == 1
    assert "partners-strict" in lost[0]


# -- placeholders, run flags, usage --------------------------------------------------------------


def test_quickstart_placeholder_is_named_as_the_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quickstart = FIXTURES / "quickstart"
    code = main(
        [
            "validate",
            "-f",
            str(quickstart / "deploymentTemplate.json"),
            "-p",
            f"@{quickstart / 'deploymentParameters.json'}",
            "-o",
            "json",
        ]
    )
    assert code == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    (problem,) = problems
    assert problem["path"] == "parameters.certData"
    assert "still holds the placeholder '<Base64-encoded-PFX-data>'" in problem["message"]
    assert "--parameters certData=VALUE" in problem["fix"]


def test_validate_accepts_listen_and_shows_the_local_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(
        tmp_path,
        capsys,
        _demo(),
        [*_params(material), "--listen", "8443=18443", "--bind", "127.0.0.1"],
    )
    assert code == 0
    by_port = {entry["port"]: entry for entry in out["summary"]["listeners"]}
    assert by_port[8443]["localPort"] == 18443
    assert "localPort" not in by_port[9443]
    assert any("served on local port 18443 (--listen)" in w for w in out["summary"]["warnings"])


def test_validate_refuses_a_listen_port_no_listener_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(tmp_path, capsys, _demo(), [*_params(material), "--listen", "444=0"])
    assert code == 1
    assert out["problems"][0]["code"] == "EmulatorUnknownListenPort"


def test_misplaced_option_prints_the_subcommands_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "-f", str(tmp_path / "t.json"), "--workers", "2"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: appgw-emulator validate ")
    assert "unrecognized arguments: --workers 2" in err


# -- the three PFX failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-password", "the password does not open it (MAC check failed)"),
        ("pem", "'data' holds a PEM file, not a PFX"),
        ("not-pfx", "'data' is not a PFX/PKCS#12 file"),
    ],
)
def test_pfx_failure_says_which_of_the_three_it_is(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    material: dict[str, Any],
    case: str,
    expected: str,
) -> None:
    server: IssuedCert = material["server"]
    data = {
        "wrong-password": material["pfx"],
        "pem": server.cert_pem + server.key_pem,
        "not-pfx": b"\x30\x03\x02\x01\x05 certainly not a pfx",
    }[case]
    params = _params(material)
    params[1] = "certData=" + base64.b64encode(data).decode()
    if case == "wrong-password":
        params[2] = "certPassword=not-the-password"
    code, out = _validate(tmp_path, capsys, _demo(), params)
    assert code == 1
    (problem,) = out["problems"]
    assert problem["code"] == "EmulatorSslCertificateInvalidData"
    assert problem["message"].startswith("Data or Password for certificate ")
    assert expected in problem["fix"]


# -- raw PEM upload data -------------------------------------------------------------------------


def test_pem_text_in_a_trusted_client_upload_is_accepted_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(
        tmp_path, capsys, _demo(), _params(material, ca=material["ca_pem"].decode())
    )
    assert code == 0
    strict = next(e for e in out["summary"]["listeners"] if e["port"] == 8443)
    assert strict["sslProfile"]["clientAuth"] == "Strict"
    (warning,) = [w for w in out["summary"]["warnings"] if "PEM text" in w]
    assert "loadFileAsBase64" in warning


def test_pem_text_gets_the_same_checks_and_codes_as_base64(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    leaf_only = material["intermediate"].issue_client("truth-leaf").cert_pem.decode()
    code, out = _validate(tmp_path, capsys, _demo(), _params(material, ca=leaf_only))
    assert code == 1
    assert out["problems"][0]["code"] == (
        "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate"
    )


def test_pem_text_in_a_trusted_root_certificate_is_accepted_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _gw(template)["trustedRootCertificates"] = [
        {"name": "backend-root", "properties": {"data": material["server_root"].cert_pem.decode()}}
    ]
    code, out = _validate(tmp_path, capsys, template, _params(material))
    assert code == 0, out["problems"]
    (warning,) = [w for w in out["summary"]["warnings"] if "PEM text" in w]
    assert warning.startswith("trustedRootCertificates 'backend-root'")


def test_decode_upload_field_tells_pem_text_from_base64(material: dict[str, Any]) -> None:
    pem = material["ca_pem"]
    assert decode_upload_field(pem.decode(), what="x") == (pem, True)
    assert decode_upload_field(base64.b64encode(pem).decode(), what="x") == (pem, False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("aGVsbG8=", "aGVsbG8="),  # base64 already: kept
        ("aGVs\nbG8=", "aGVs\nbG8="),  # Go's decoder skips line breaks
        ("-----BEGIN CERTIFICATE-----", base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode()),
    ],
)
def test_base64_encode_if_not_mirrors_azurerm(value: str, expected: str) -> None:
    assert base64_encode_if_not(value) == expected


# -- Key Vault certificates ----------------------------------------------------------------------

KV_ID: Final = "https://kv.vault.azure.net/secrets/server"


def _kv_demo() -> dict[str, Any]:
    template = _demo()
    _gw(template)["sslCertificates"][0]["properties"] = {"keyVaultSecretId": KV_ID}
    return template


def test_key_vault_listener_certificate_without_a_file_names_the_item_and_both_fixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(tmp_path, capsys, _kv_demo(), _params(material))
    assert code == 1
    (problem,) = out["problems"]
    assert problem["kind"] == "not-emulated"
    assert problem["path"].endswith("sslCertificates[0].properties.keyVaultSecretId")
    assert "sslCertificates 'server-cert' comes from Key Vault" in problem["message"]
    assert "--certificate server-cert=FILE" in problem["fix"]
    assert "--loose" in problem["fix"]


def test_key_vault_listener_certificate_from_a_pfx_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    pfx = tmp_path / "server.pfx"
    pfx.write_bytes(material["pfx"])
    extra = ["--certificate", f"server-cert={pfx}", "--certificate-password",
             f"server-cert={PASSWORD}"]  # fmt: skip
    code, out = _validate(tmp_path, capsys, _kv_demo(), [*_params(material), *extra])
    assert code == 0, out["problems"]
    (warning,) = [w for w in out["summary"]["warnings"] if "--certificate" in w]
    assert f"Key Vault secret replaced by the local file {pfx}" in warning


def test_key_vault_trusted_root_needs_a_file_even_with_loose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _gw(template)["trustedRootCertificates"] = [
        {"name": "backend-root", "properties": {"keyVaultSecretId": KV_ID}}
    ]
    code, out = _validate(tmp_path, capsys, template, [*_params(material), "--loose"])
    assert code == 1
    (problem,) = out["problems"]
    assert "trustedRootCertificates 'backend-root' comes from Key Vault" in problem["message"]
    assert "--certificate backend-root=FILE" in problem["fix"]
    assert "--loose cannot stand in for it" in problem["fix"]

    root = tmp_path / "root.cer"
    root.write_bytes(material["server_root"].cert_pem)
    code, out = _validate(
        tmp_path, capsys, template, [*_params(material), "--certificate", f"backend-root={root}"]
    )
    assert code == 0, out["problems"]


def test_loose_turns_not_emulated_features_into_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _gw(template)["customErrorConfigurations"] = [
        {"statusCode": "HttpStatus502", "customErrorPageUrl": "https://contoso.test/502.html"}
    ]
    code, out = _validate(tmp_path, capsys, template, _params(material))
    assert code == 1
    assert out["problems"][0]["kind"] == "not-emulated"

    code, out = _validate(tmp_path, capsys, template, [*_params(material), "--loose"])
    assert code == 0
    (warning,) = [w for w in out["summary"]["warnings"] if "--loose" in w]
    assert warning.startswith("not emulated (--loose): ")
    assert "customErrorConfigurations" in warning


def _resource_with_kv_cert() -> dict[str, Any]:
    return {
        "properties": {
            "sslCertificates": [{"name": "web", "properties": {"keyVaultSecretId": KV_ID}}],
            "httpListeners": [
                {
                    "name": "l",
                    "properties": {
                        "hostNames": ["api.contoso.test"],
                        "sslCertificate": {"id": "/x/sslCertificates/web"},
                    },
                }
            ],
        }
    }


def test_apply_certificates_converts_a_pem_with_its_key_to_a_pfx(material: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    server: IssuedCert = material["server"]
    supplied = {"web": SuppliedCertificate("web", "web.pem", server.chain_pem + server.key_pem)}
    out = apply_certificates(_resource_with_kv_cert(), supplied)
    inner = out.resource["properties"]["sslCertificates"][0]["properties"]
    assert "keyVaultSecretId" not in inner
    _key, cert, _extra = pkcs12.load_key_and_certificates(
        base64.b64decode(inner["data"]), inner["password"].encode()
    )
    assert cert == server.cert


def test_apply_certificates_mints_for_the_listeners_host_names_when_loose() -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []
    ca = CA("truth loose CA")

    def mint(name: str, hosts: tuple[str, ...]) -> tuple[bytes, str]:
        calls.append((name, hosts))
        return ca.issue_server(*hosts).pfx("pw"), "pw"

    out = apply_certificates(_resource_with_kv_cert(), {}, loose=True, mint=mint)
    assert calls == [("web", ("api.contoso.test",))]
    assert len(out.warnings) == 1
    assert "development certificate for api.contoso.test" in out.warnings[0]


def test_apply_certificates_reports_every_bad_option_with_did_you_mean() -> None:
    supplied = {
        "wbe": SuppliedCertificate("wbe", "a.pfx", b"x"),
        "other": SuppliedCertificate("other", "b.pfx", b"y"),
    }
    with pytest.raises(InvalidConfiguration) as info:
        apply_certificates(_resource_with_kv_cert(), supplied)
    messages = [p.message for p in info.value.problems]
    assert any("comes from Key Vault" in m for m in messages)
    assert any("--certificate wbe" in m and "did you mean 'web'?" in m for m in messages)
    assert any("--certificate other" in m for m in messages)


def test_certificate_password_without_certificate_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    code, out = _validate(
        tmp_path, capsys, _demo(), [*_params(material), "--certificate-password", "web=pw"]
    )
    assert code == 1
    assert (
        "--certificate-password web has no --certificate web=FILE"
        in (out["problems"][0]["message"])
    )


def test_a_key_vault_template_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        apply_certificates(_resource_with_kv_cert(), {})


# -- TLS policies after the TLS 1.0/1.1 retirement (issue #21) ----------------------------------


def test_validate_refuses_a_retired_policy_and_loose_only_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _gw(template)["sslPolicy"]["policyName"] = "AppGwSslPolicy20150501"
    _profile(template, "passthrough-profile").pop("sslPolicy")

    code, out = _validate(tmp_path, capsys, template, _params(material))

    assert code == 1
    (problem,) = out["problems"]
    assert problem["code"] == "ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy"
    assert "retirement of 31 August 2025" in problem["message"]
    assert "AppGwSslPolicy20220101" in problem["fix"]

    code, out = _validate(tmp_path, capsys, template, [*_params(material), "--loose"])

    assert code == 0
    assert any(
        "retired (--loose)" in w and "AppGwSslPolicy20150501" in w
        for w in out["summary"]["warnings"]
    )


def test_validate_refuses_policy_families_mixed_across_gateway_and_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], material: dict[str, Any]
) -> None:
    template = _demo()
    _gw(template)["sslPolicy"]["policyName"] = "AppGwSslPolicy20170401S"

    code, out = _validate(tmp_path, capsys, template, [*_params(material), "--loose"])

    assert code == 1
    (problem,) = out["problems"]
    assert problem["code"] == "ApplicationGatewaySslPolicyMisMatch"
    assert problem["path"].endswith("sslProfiles[1].properties.sslPolicy")
    assert "sslProfile passthrough-profile" in problem["message"]
