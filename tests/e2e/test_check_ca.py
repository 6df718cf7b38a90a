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
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    pkcs7,
    pkcs12,
)

from emulator.cli.main import main
from emulator.pki import CA
from emulator.pki.demo import TRUSTED_CLIENT_CA_CHAIN_B64
from tests.helpers.pki import PkiBundle

ASK = "Ask the customer for the CA chain that issued their client certificate"


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
    assert (
        "clientCertIssuerDN (as Azure shows it): CN=appgw-emulator Test Client CA, O=appgw-emulator"
        in out
    )


@pytest.mark.parametrize(
    ("name", "code", "advice"),
    [
        (
            "leaf",
            "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
            "This holds only leaf certificate(s)",
        ),
        (
            "pfx",
            "ApplicationGatewayTrustedClientCertificateInvalidData",
            "This looks like a PFX/PKCS#12 file, which is never uploaded; it was not opened",
        ),
        (
            "private-key",
            "ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
            "This file holds a private key",
        ),
        (
            "two-roots",
            "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate",
            "This holds 2 root CAs",
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
        assert "not their PFX or private key, and not our server certificate." in report["advice"]


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
    assert "advice: This holds only leaf certificate(s)" in out


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
            "is neither in the upload nor sent by the client",
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
    assert without["client"]["diagnosis"] == "issuer-missing"
    assert "an intermediate is missing" in without["client"]["explanation"]
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


# -- what customers actually send (issue #21) ---------------------------------------------------


def _p7b(certs: list[x509.Certificate], encoding: Encoding) -> bytes:
    return pkcs7.serialize_certificates(certs, encoding)


def _keyless_pfx(certs: list[x509.Certificate], password: bytes | None) -> bytes:
    encryption = BestAvailableEncryption(password) if password is not None else NoEncryption()
    return pkcs12.serialize_key_and_certificates(None, None, None, certs, encryption)


@pytest.mark.parametrize("encoding", [Encoding.PEM, Encoding.DER], ids=["pem", "der"])
def test_p7b_bundle_gets_a_verdict_on_its_ca_certificates_and_no_key_claim(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: Encoding
) -> None:
    path = write(tmp_path, "chain.p7b", _p7b([pki.client_root.cert, pki.client_ca.cert], encoding))

    code, report = run_json(capsys, path)

    assert code == 1  # the file itself is not an upload ...
    assert report["kind"] == ("pem-pkcs7" if encoding is Encoding.PEM else "der-pkcs7")
    assert report["code"] == "ApplicationGatewayTrustedClientCertificateInvalidData"
    assert report["hasPrivateKey"] is False
    assert "private key that left" not in report["advice"]
    assert "openssl pkcs7" in report["advice"]
    assert "-print_certs" in report["advice"]
    # ... but the chain inside is the right one.
    inside = report["contents"]
    assert inside["valid"] is True
    assert inside["clientCertIssuerDN"] == "CN=appgw-emulator Test Client CA, O=appgw-emulator"
    assert [c["role"] for c in inside["certificates"]] == ["root CA", "intermediate CA"]


def test_keyless_pfx_is_opened_and_never_said_to_hold_a_key(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, "chain.pfx", _keyless_pfx([pki.client_root.cert, pki.client_ca.cert], None)
    )

    code, out = run_check(capsys, path)

    assert code == 1
    assert "a PFX/PKCS#12 file" in out
    assert "with certificates only (no private key)" in out
    assert "bundles a private key" not in out
    assert "treat" not in out  # no "treat the key as exposed" for a file without a key
    assert "openssl pkcs12 -in" in out
    assert "-nokeys" in out
    assert "  VALID trusted client CA upload" in out  # the CAs inside


def test_password_opens_a_pfx_on_the_command_line(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pfx = _keyless_pfx([pki.client_root.cert, pki.client_ca.cert], b"pfx-secret")
    path = write(tmp_path, "chain.pfx", pfx)

    locked_code, locked = run_json(capsys, path)
    wrong_code, wrong = run_json(capsys, path, "--password", "not-it")
    opened_code, opened = run_json(capsys, path, "--password", "pfx-secret")

    assert (locked_code, wrong_code, opened_code) == (1, 1, 1)
    assert locked["kind"] == wrong["kind"] == "pfx-locked"
    # Not opened: whether there is a key is not known, and not claimed.
    assert locked["hasPrivateKey"] is None
    assert "whether it holds a private key is not known" in locked["advice"]
    assert "--password" in locked["advice"]
    assert "The password does not open this PFX" in wrong["advice"]
    assert opened["kind"] == "pfx"
    assert opened["hasPrivateKey"] is False
    assert opened["contents"]["valid"] is True
    for report in (locked, wrong, opened):
        assert "pfx-secret" not in json.dumps(report)


def test_pfx_with_a_key_is_flagged_and_its_cas_still_checked(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "client.pfx", pki.client.pfx("pw"))

    _code, report = run_json(capsys, path, "--password", "pw")

    assert report["hasPrivateKey"] is True
    assert "bundles a private key: never upload it" in report["advice"]
    assert b"PRIVATE KEY" not in json.dumps(report).encode()
    # The PFX carries the intermediate only: no root, so the CAs inside are no upload either.
    assert report["contents"]["code"] == (
        "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate"
    )


def test_b64_file_from_certs_init_is_read_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", str(tmp_path / "pki")]) == 0
    capsys.readouterr()
    b64 = tmp_path / "pki" / TRUSTED_CLIENT_CA_CHAIN_B64

    code, report = run_json(capsys, str(b64))

    assert code == 0
    assert report["kind"] == "base64"
    assert report["valid"] is True
    assert report["size"] == b64.stat().st_size
    assert any("base64 text" in note for note in report["notes"])


def test_client_pfx_is_read_with_the_password(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload = write(tmp_path, "chain.pem", pki.trusted_client_ca_pem)
    client = write(tmp_path, "client.pfx", pki.client.pfx("client-pw"))

    locked_code, locked = run_json(capsys, upload, "--client-cert", client)
    code, report = run_json(capsys, upload, "--client-cert", client, "--password", "client-pw")

    assert locked_code == 1
    assert locked["client"]["passesStrict"] is False
    assert "is a PFX that was not opened" in locked["client"]["explanation"]
    assert "--password" in locked["client"]["explanation"]
    assert code == 0
    assert report["client"]["subject"] == "CN=appgw-test-client"
    assert report["client"]["passesStrict"] is True


def test_client_from_an_unrelated_root_is_not_issued_by_the_uploaded_chain(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = CA("e2e Foreign Root CA")
    upload = write(tmp_path, "chain.pem", pki.trusted_client_ca_pem)
    client = write(tmp_path, "foreign.pfx", foreign.issue_client("e2e-foreign").pfx("pw"))
    # What a client sends when its PFX carries the whole chain: leaf and root.
    chain = write(tmp_path, "foreign-root.pem", foreign.cert_pem)

    code, report = run_json(
        capsys, upload, "--client-cert", client, "--client-chain", chain, "--password", "pw"
    )

    assert code == 1
    assert report["client"]["diagnosis"] == "not-issued-by-upload"
    explanation = report["client"]["explanation"]
    assert explanation.startswith("Not issued by the uploaded chain")
    assert "'CN=e2e Foreign Root CA,O=appgw-emulator'" in explanation
    upload_root = "'CN=appgw-emulator Test Client Root CA,O=appgw-emulator'"
    assert f"the upload's root is {upload_root}" in explanation
    assert "intermediate is missing" not in explanation


def test_missing_intermediate_is_told_apart_from_a_foreign_root(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload = write(tmp_path, "root.pem", pki.client_root.cert_pem)
    client = write(tmp_path, "client.pem", pki.client.cert_pem)

    _code, report = run_json(capsys, upload, "--client-cert", client)

    assert report["client"]["diagnosis"] == "issuer-missing"
    assert "an intermediate is missing" in report["client"]["explanation"]
    assert "'CN=appgw-emulator Test Client CA,O=appgw-emulator'" in report["client"]["explanation"]


def test_messages_use_one_dn_format_and_start_with_capitals(
    pki: PkiBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        [write(tmp_path, "leaf.pem", pki.client.cert_pem)],
        [write(tmp_path, "inter.pem", pki.client_ca.cert_pem)],
        [
            write(tmp_path, "chain.pem", pki.trusted_client_ca_pem),
            "--client-cert",
            write(tmp_path, "expired.pem", pki.expired.cert_pem),
        ],
        [
            write(tmp_path, "root.pem", pki.client_root.cert_pem),
            "--client-cert",
            write(tmp_path, "client.pem", pki.client.cert_pem),
        ],
    ]
    for args in cases:
        _code, report = run_json(capsys, *args)
        texts = [report["advice"], *report["notes"]]
        if report["message"]:
            texts.append(report["message"])
        if report["client"]:
            texts.append(report["client"]["explanation"])
        for text in texts:
            assert text[0].isupper(), text
            # RFC 2253 as OpenSSL prints it: no ", " inside a quoted DN.
            assert ", O=appgw-emulator'" not in text, text
