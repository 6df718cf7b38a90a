"""``appgw-emulator check-ca`` through the real command line, on files made at test time.

Each kind of file a customer sends by mistake gets its verdict, the Azure error code the upload
would get, and the advice (the seed Q&A: ask for the CA chain that issued the client
certificate, root + intermediates, public part only — not the PFX, not our server certificate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulator.cli import main
from emulator.pki import CA
from tests.helpers.pki import PkiBundle

ASK = "ask the customer for the CA chain that issued their client certificate"


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check-ca", *args])
    return code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out = run_check(capsys, *args, "--output", "json")
    return code, json.loads(out)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_good_upload_is_valid_and_names_its_issuer_dn(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "chain.pem", pki.trusted_client_ca_pem)

    code, out = run_check(capsys, path)

    assert code == 0
    assert "VALID trusted client CA upload" in out
    assert "root CA" in out
    assert "intermediate CA" in out
    assert "clientCertIssuerDN: CN=appgw-emulator Test Client CA, O=appgw-emulator" in out


@pytest.mark.parametrize(
    ("name", "code", "advice"),
    [
        (
            "leaf",
            "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
            "holds only leaf certificate(s)",
        ),
        (
            "pfx",
            "ApplicationGatewayTrustedClientCertificateInvalidData",
            "this is a PFX/PKCS#12 file",
        ),
        (
            "private-key",
            "ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
            "this is a private key",
        ),
        (
            "two-roots",
            "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
            "holds 2 root CAs",
        ),
        (
            "intermediate-only",
            "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
            "add the root CA 'CN=appgw-emulator Test Client Root CA",
        ),
        (
            "oversize",
            "ApplicationGatewayTrustedClientCertificateInvalidData",
            "Azure takes at most 25600 bytes",
        ),
        (
            "server-cert",
            "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
            "looks like a server certificate",
        ),
    ],
)
def test_wrong_files_get_the_azure_code_and_what_to_ask_for(
    pki: PkiBundle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    code: str,
    advice: str,
) -> None:
    contents = {
        "leaf": lambda: pki.client.cert_pem,
        "pfx": lambda: pki.client.pfx("secret"),
        "private-key": lambda: pki.client.key_pem,
        "two-roots": lambda: pki.client_root.cert_pem + pki.server_root.cert_pem,
        "intermediate-only": lambda: pki.client_ca.cert_pem,
        "oversize": lambda: (
            pki.trusted_client_ca_pem + b"".join(CA(f"Filler {i}").cert_pem for i in range(40))
        ),
        "server-cert": lambda: pki.server.cert_pem,
    }
    path = write(tmp_path, f"{name}.bin", contents[name]())

    exit_code, report = run_json(capsys, path)

    assert exit_code == 1
    assert report["valid"] is False
    assert report["code"] == code
    assert advice in report["advice"]
    if name not in ("two-roots", "oversize"):
        assert ASK in report["advice"]
        assert "not their PFX or private key, and not our server certificate" in report["advice"]


def test_text_report_lists_each_certificate_and_the_verdict(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "leaf.pem", pki.client.cert_pem)

    code, out = run_check(capsys, path)

    assert code == 1
    assert "[1] CN=appgw-test-client" in out
    assert "issuer: CN=appgw-emulator Test Client CA,O=appgw-emulator" in out
    assert "leaf, valid" in out
    assert "NOT VALID:" in out
    assert "advice: this holds only leaf certificate(s)" in out


@pytest.mark.parametrize(
    ("which", "chain", "passes", "verify", "why"),
    [
        ("client", False, True, "SUCCESS", ""),
        ("expired", False, False, "FAILED:certificate has expired", "expired on"),
        (
            "unrelated",
            False,
            False,
            "FAILED:unable to verify the first certificate",
            "only its leaf",
        ),
    ],
)
def test_client_certificate_would_pass_strict_or_says_why_not(
    pki: PkiBundle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    chain: bool,
    passes: bool,
    verify: str,
    why: str,
) -> None:
    upload = write(tmp_path, "chain.pem", pki.trusted_client_ca_pem)
    client = write(tmp_path, f"{which}.pem", getattr(pki, which).cert_pem)

    code, report = run_json(capsys, upload, "--client-cert", client)

    assert code == (0 if passes else 1)
    assert report["client"]["passesStrict"] is passes
    assert report["client"]["sslClientVerify"] == verify
    assert why in report["client"]["explanation"]


def test_client_chain_supplies_the_intermediate_the_upload_lacks(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload = write(tmp_path, "root.pem", pki.client_root.cert_pem)
    client = write(tmp_path, "client.pem", pki.client.cert_pem)
    bundle = write(tmp_path, "bundle.pem", pki.client_ca.cert_pem)

    without_code, without = run_json(capsys, upload, "--client-cert", client)
    with_code, with_chain = run_json(
        capsys, upload, "--client-cert", client, "--client-chain", bundle
    )

    assert without_code == 1
    assert (
        "upload that intermediate or ask the client to send it"
        in (without["client"]["explanation"])
    )
    assert with_code == 0
    assert with_chain["client"]["passesStrict"] is True
    # With the issuer-DN check on, the root-only upload's DN is the root's: it would fail.
    assert with_chain["client"]["issuerDnMatches"] is False


def test_client_chain_without_client_cert_is_a_usage_error(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload = write(tmp_path, "chain.pem", pki.trusted_client_ca_pem)
    with pytest.raises(SystemExit) as info:
        main(["check-ca", upload, "--client-chain", upload])
    assert info.value.code == 2
