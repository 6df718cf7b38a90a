"""Certificate uploads as Azure checks them: trusted client CA files and listener PFX files.

The trusted client CA rules and error codes are the troubleshooting doc's table
(``appgw-behaviour.md`` §5); the certificates are the suite's PKI (``tests/helpers/pki.py``).
"""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from emulator.arm.certdata import (
    MAX_TRUSTED_CLIENT_CERT_BYTES,
    decode_base64_field,
    load_server_pfx,
    load_trusted_client_ca,
)
from emulator.errors import CertificateError
from emulator.pki import CA, ca_bundle_pem, self_signed_client
from tests.helpers.pki import PkiBundle

INVALID = "ApplicationGatewayTrustedClientCertificateInvalidData"
NO_CA = "ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate"
ONE_ROOT = "ApplicationGatewayOnlyOneRootCAAllowedInTrustedClientCertificate"
CERT_ID = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw"
    "/sslCertificates/c"
)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- trusted client CA uploads: accepted --------------------------------------------------------


def test_pem_bundle_of_root_and_intermediate_is_accepted_in_file_order(pki: PkiBundle) -> None:
    upload = load_trusted_client_ca("chain", ca_bundle_pem(pki.client_ca, pki.client_root))

    assert upload.name == "chain"
    assert upload.certificates == (pki.client_ca.cert, pki.client_root.cert)
    assert upload.root == pki.client_root.cert


def test_der_single_root_is_accepted(pki: PkiBundle) -> None:
    upload = load_trusted_client_ca("root", der(pki.client_root.cert))

    assert upload.certificates == (pki.client_root.cert,)


def test_pem_with_crlf_line_endings_and_surrounding_text_is_accepted(pki: PkiBundle) -> None:
    bundle = ca_bundle_pem(pki.client_root, pki.client_ca).replace(b"\n", b"\r\n")
    data = b"subject=CN = appgw-emulator Test Client Root CA\r\n" + bundle + b"\r\n"

    upload = load_trusted_client_ca("windows", data)

    assert upload.certificates == (pki.client_root.cert, pki.client_ca.cert)


def test_leaf_beside_ca_certificates_is_accepted_and_dropped(pki: PkiBundle) -> None:
    data = pki.client.cert_pem + ca_bundle_pem(pki.client_ca, pki.client_root)

    upload = load_trusted_client_ca("with-leaf", data)

    assert upload.certificates == (pki.client_ca.cert, pki.client_root.cert)


def test_file_of_exactly_25_kb_is_accepted(pki: PkiBundle) -> None:
    bundle = ca_bundle_pem(pki.client_root)
    data = bundle + b"\n" * (MAX_TRUSTED_CLIENT_CERT_BYTES - len(bundle))
    assert len(data) == 25 * 1024

    assert load_trusted_client_ca("max", data).certificates == (pki.client_root.cert,)


# --- trusted client CA uploads: refused ---------------------------------------------------------


def _bundle_with_private_key(p: PkiBundle) -> bytes:
    return ca_bundle_pem(p.client_root) + p.client.key_pem


def _bundle_with_traditional_ec_key(p: PkiBundle) -> bytes:
    key = p.client.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return ca_bundle_pem(p.client_root) + key


def _pfx_with_password(p: PkiBundle) -> bytes:
    return p.client.pfx("client-password")


def _pfx_without_password(p: PkiBundle) -> bytes:
    return p.client.pfx(None)


def _garbage(p: PkiBundle) -> bytes:
    return b"this is not a certificate at all"


def _empty_block(p: PkiBundle) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"


def _corrupt_block(p: PkiBundle) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\nTUlJQm9vcHM=\n-----END CERTIFICATE-----\n"


def _crl_block(p: PkiBundle) -> bytes:
    return (
        ca_bundle_pem(p.client_root) + b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    )


def _leaf_only(p: PkiBundle) -> bytes:
    return p.client.cert_pem


def _self_signed_leaf(p: PkiBundle) -> bytes:
    return self_signed_client("lonely-client").cert_pem


def _two_roots(p: PkiBundle) -> bytes:
    return ca_bundle_pem(p.client_root, p.unrelated_root)


def _intermediate_only(p: PkiBundle) -> bytes:
    return ca_bundle_pem(p.client_ca)


def _too_large(p: PkiBundle) -> bytes:
    bundle = ca_bundle_pem(p.client_root)
    return bundle + b"\n" * (MAX_TRUSTED_CLIENT_CERT_BYTES + 1 - len(bundle))


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: b"", "ApplicationGatewayTrustedClientCertificateMustSpecifyData"),
        (lambda p: b" \n\t", "ApplicationGatewayTrustedClientCertificateMustSpecifyData"),
        (
            _bundle_with_private_key,
            "ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
        ),
        (
            _bundle_with_traditional_ec_key,
            "ApplicationGatewayTrustedClientCertificateMustNotHavePrivateKey",
        ),
        (_pfx_with_password, INVALID),
        (_pfx_without_password, INVALID),
        (_garbage, INVALID),
        (_empty_block, INVALID),
        (_corrupt_block, INVALID),
        (_crl_block, INVALID),
        (_leaf_only, NO_CA),
        (_self_signed_leaf, NO_CA),
        (_two_roots, ONE_ROOT),
        (_intermediate_only, ONE_ROOT),
        (_too_large, INVALID),
    ],
    ids=[
        "empty",
        "whitespace",
        "pkcs8-private-key",
        "ec-private-key",
        "pfx-with-password",
        "pfx-without-password",
        "garbage",
        "empty-certificate-block",
        "corrupt-certificate-block",
        "crl-block",
        "leaf-only",
        "self-signed-leaf-without-ca-true",
        "two-roots",
        "intermediate-without-root",
        "over-25-kb",
    ],
)
def test_trusted_client_ca_upload_is_refused_like_azure(
    pki: PkiBundle, make: object, code: str
) -> None:
    assert callable(make)
    data = make(pki)
    assert isinstance(data, bytes)

    with pytest.raises(CertificateError) as info:
        load_trusted_client_ca("upload", data)

    assert info.value.error_code == code, str(info.value)
    assert info.value.fix


@pytest.mark.parametrize("password", ["client-password", None])
def test_pfx_upload_fix_asks_for_the_ca_chain_not_the_clients_pfx(
    pki: PkiBundle, password: str | None
) -> None:
    with pytest.raises(CertificateError) as info:
        load_trusted_client_ca("pfx", pki.client.pfx(password))

    assert info.value.error_code == INVALID
    assert info.value.fix is not None
    assert "CA chain" in info.value.fix
    assert "not the client's PFX" in info.value.fix


def test_leaf_only_fix_asks_for_the_issuing_chain(pki: PkiBundle) -> None:
    with pytest.raises(CertificateError) as info:
        load_trusted_client_ca("leaf", pki.client.cert_pem)

    assert info.value.fix is not None
    assert "CA chain" in info.value.fix


def test_two_roots_message_counts_them(pki: PkiBundle) -> None:
    with pytest.raises(CertificateError) as info:
        load_trusted_client_ca("roots", ca_bundle_pem(pki.client_root, pki.unrelated_root))

    assert "2 root CA certificates" in info.value.message


# --- base64 fields --------------------------------------------------------------------------------


def test_base64_field_tolerates_line_breaks() -> None:
    assert decode_base64_field("QUJD\nREVG\r\n", what="x") == b"ABCDEF"


@pytest.mark.parametrize("value", ["not base64!", "QUJ", "QU=JD"])
def test_base64_field_rejects_invalid_text(value: str) -> None:
    with pytest.raises(CertificateError) as info:
        decode_base64_field(value, what="sslCertificate 'c' data")

    assert "sslCertificate 'c' data is not valid base64" in info.value.message
    assert info.value.fix


# --- server PFX -----------------------------------------------------------------------------------


def test_server_pfx_gives_key_leaf_and_chain(pki: PkiBundle) -> None:
    server = pki.server_root.intermediate("Server Issuing CA").issue_server("gateway.test")
    cert = load_server_pfx("c", server.pfx("pw"), "pw", cert_id=CERT_ID)

    assert cert.name == "c"
    assert cert.certificate == server.cert
    assert len(server.chain) == 1
    assert cert.chain == server.chain
    assert cert.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == server.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("password", [None, ""])
def test_unencrypted_server_pfx_opens_without_password(
    pki: PkiBundle, password: str | None
) -> None:
    cert = load_server_pfx("c", pki.server.pfx(None), password, cert_id=CERT_ID)

    assert cert.certificate == pki.server.cert


@pytest.mark.parametrize("password", ["wrong", None])
def test_server_pfx_with_wrong_password_is_azures_message(
    pki: PkiBundle, password: str | None
) -> None:
    with pytest.raises(CertificateError) as info:
        load_server_pfx("c", pki.server.pfx("pw"), password, cert_id=CERT_ID)

    assert info.value.error_code == "EmulatorSslCertificateInvalidData"
    assert info.value.message == f"Data or Password for certificate {CERT_ID} is invalid."
    assert info.value.fix


def test_server_pfx_that_is_not_a_pfx_is_azures_message(pki: PkiBundle) -> None:
    with pytest.raises(CertificateError) as info:
        load_server_pfx("c", pki.server.cert_pem, "pw", cert_id=CERT_ID)

    assert info.value.error_code == "EmulatorSslCertificateInvalidData"


def test_server_pfx_without_private_key_is_rejected(pki: PkiBundle) -> None:
    data = pkcs12.serialize_key_and_certificates(
        b"no-key", None, pki.server.cert, None, serialization.NoEncryption()
    )

    with pytest.raises(CertificateError) as info:
        load_server_pfx("c", data, None, cert_id=CERT_ID)

    assert info.value.error_code == "EmulatorSslCertificateInvalidData"
    assert "private key" in info.value.message
    assert info.value.fix


def test_server_pfx_chain_is_ordered_from_the_leafs_issuer_up(pki: PkiBundle) -> None:
    root = CA("Order Root")
    upper = root.intermediate("Order Upper CA", path_length=1)
    lower = upper.intermediate("Order Lower CA")
    leaf = lower.issue_server("ordered.test")
    unrelated = CA("Unrelated Root").cert
    shuffled = [root.cert, unrelated, upper.cert, leaf.cert, lower.cert]
    data = pkcs12.serialize_key_and_certificates(
        b"leaf", leaf.key, leaf.cert, shuffled, serialization.NoEncryption()
    )

    cert = load_server_pfx("c", data, None, cert_id=CERT_ID)

    assert cert.chain == (lower.cert, upper.cert, root.cert, unrelated)


def test_certificate_data_round_trips_through_base64(pki: PkiBundle) -> None:
    encoded = base64.b64encode(ca_bundle_pem(pki.client_root, pki.client_ca)).decode()

    raw = decode_base64_field(encoded, what="trusted")

    assert load_trusted_client_ca("t", raw).root == pki.client_root.cert
