"""The test/demo PKI: real certificates, checked by real verifiers (cryptography, OpenSSL, ssl)."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import ipaddress
import json
import re
import shutil
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from OpenSSL import SSL

from emulator.pki import CA, IssuedCert, ca_bundle_pem, demo, self_signed_client
from emulator.pki.demo import (
    CLIENT_CERT,
    CLIENT_CHAIN,
    CLIENT_EXPIRED_CERT,
    CLIENT_KEY,
    CLIENT_NOT_YET_VALID_CERT,
    CLIENT_SELF_SIGNED_CERT,
    CLIENT_UNRELATED_CA_CERT,
    CLIENT_UNRELATED_CA_KEY,
    DEPLOYMENT_PARAMETERS,
    FILE_NAMES,
    INTERMEDIATE_CA,
    MANIFEST,
    ROOT_CA,
    SERVER_PFX,
    SERVER_PFX_PASSWORD,
    SERVER_ROOT_CA,
    TRUSTED_CLIENT_CA_CHAIN,
    TRUSTED_CLIENT_CA_CHAIN_B64,
    UNRELATED_ROOT_CA,
    DemoPki,
    DemoPkiError,
    ensure_demo_pki,
    load_demo_pki,
    write_demo_pki,
)

#: Every blocking socket step in the handshake tests gives up after this long instead of hanging.
SOCKET_TIMEOUT_S = 5.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _cert(demo_pki: DemoPki, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(demo_pki.path(name).read_bytes())


# --- the chain --------------------------------------------------------------------------


def test_good_client_chain_verifies_with_cryptography(demo_pki: DemoPki) -> None:
    root, intermediate = _cert(demo_pki, ROOT_CA), _cert(demo_pki, INTERMEDIATE_CA)
    verifier = PolicyBuilder().store(Store([root])).time(_now()).build_client_verifier()
    verified = verifier.verify(_cert(demo_pki, CLIENT_CERT), [intermediate])
    assert verified.chain == [_cert(demo_pki, CLIENT_CERT), intermediate, root]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (CLIENT_CERT, r": OK"),
        (CLIENT_EXPIRED_CERT, r"certificate has expired"),
        (CLIENT_NOT_YET_VALID_CERT, r"certificate is not yet valid"),
        (CLIENT_UNRELATED_CA_CERT, r"unable to get local issuer certificate"),
        (CLIENT_SELF_SIGNED_CERT, r"self[- ]signed certificate"),
    ],
)
def test_openssl_verify_gives_each_client_cert_its_verdict(
    demo_pki: DemoPki, name: str, expected: str
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not on PATH")
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(demo_pki.path(ROOT_CA)),
            "-untrusted",
            str(demo_pki.path(INTERMEDIATE_CA)),
            str(demo_pki.path(name)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=SOCKET_TIMEOUT_S,
    )
    assert re.search(expected, result.stdout + result.stderr), result
    assert (result.returncode == 0) == (name == CLIENT_CERT)


@pytest.mark.parametrize(
    "name", [CLIENT_EXPIRED_CERT, CLIENT_NOT_YET_VALID_CERT, CLIENT_UNRELATED_CA_CERT]
)
def test_cryptography_rejects_negative_client_cert(demo_pki: DemoPki, name: str) -> None:
    verifier = PolicyBuilder().store(Store([_cert(demo_pki, ROOT_CA)])).time(_now())
    with pytest.raises(VerificationError):
        verifier.build_client_verifier().verify(
            _cert(demo_pki, name), [_cert(demo_pki, INTERMEDIATE_CA)]
        )


def test_expired_and_not_yet_valid_certs_are_outside_validity(demo_pki: DemoPki) -> None:
    now = _now()
    expired, future = (
        _cert(demo_pki, CLIENT_EXPIRED_CERT),
        _cert(demo_pki, CLIENT_NOT_YET_VALID_CERT),
    )
    assert expired.not_valid_after_utc < now
    assert future.not_valid_before_utc > now
    intermediate = _cert(demo_pki, INTERMEDIATE_CA)
    assert expired.issuer == future.issuer == intermediate.subject


def test_unrelated_ca_client_is_issued_by_the_unrelated_root(demo_pki: DemoPki) -> None:
    leaf, unrelated = _cert(demo_pki, CLIENT_UNRELATED_CA_CERT), _cert(demo_pki, UNRELATED_ROOT_CA)
    assert leaf.issuer == unrelated.subject
    assert unrelated.subject != _cert(demo_pki, ROOT_CA).subject
    verifier = PolicyBuilder().store(Store([unrelated])).time(_now()).build_client_verifier()
    verifier.verify(leaf, [])


def test_self_signed_client_is_a_leaf(demo_pki: DemoPki) -> None:
    cert = _cert(demo_pki, CLIENT_SELF_SIGNED_CERT)
    assert cert.issuer == cert.subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_cert_comes_from_a_separate_root(demo_pki: DemoPki) -> None:
    _key, server, _extra = pkcs12.load_key_and_certificates(
        demo_pki.server_pfx, demo_pki.server_pfx_password.encode()
    )
    assert server is not None
    server_root = _cert(demo_pki, SERVER_ROOT_CA)
    assert server.issuer == server_root.subject
    assert server_root.subject not in {
        _cert(demo_pki, ROOT_CA).subject,
        _cert(demo_pki, INTERMEDIATE_CA).subject,
    }
    verifier = PolicyBuilder().store(Store([server_root])).time(_now())
    verifier.build_server_verifier(x509.DNSName("localhost")).verify(server, [])
    verifier.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(
        server, []
    )


# --- files ------------------------------------------------------------------------------


def test_server_pfx_loads_with_password_and_has_the_sans(demo_pki: DemoPki) -> None:
    password = demo_pki.path(SERVER_PFX_PASSWORD).read_bytes()
    assert not password.endswith(b"\n")
    key, cert, extra = pkcs12.load_key_and_certificates(
        demo_pki.path(SERVER_PFX).read_bytes(), password
    )
    assert key is not None
    assert cert is not None
    assert extra == []
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_server_pfx_refuses_a_wrong_password(demo_pki: DemoPki) -> None:
    with pytest.raises(ValueError, match=r"(?i)password|mac"):
        pkcs12.load_key_and_certificates(demo_pki.server_pfx, b"not-the-password")


def test_openssl_reads_server_pfx_without_legacy_provider(demo_pki: DemoPki) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not on PATH")
    result = subprocess.run(
        [
            openssl,
            "pkcs12",
            "-in",
            str(demo_pki.path(SERVER_PFX)),
            "-passin",
            f"file:{demo_pki.path(SERVER_PFX_PASSWORD)}",
            "-nokeys",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=SOCKET_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert "BEGIN CERTIFICATE" in result.stdout


@pytest.mark.parametrize(
    "name",
    [name for name in FILE_NAMES if name.endswith(".key")]
    + [SERVER_PFX, SERVER_PFX_PASSWORD, DEPLOYMENT_PARAMETERS],
)
def test_secret_files_are_owner_only(demo_pki: DemoPki, name: str) -> None:
    assert stat.S_IMODE(demo_pki.path(name).stat().st_mode) == 0o600


def test_public_files_are_world_readable(demo_pki: DemoPki) -> None:
    for name in (ROOT_CA, TRUSTED_CLIENT_CA_CHAIN, CLIENT_CERT, MANIFEST):
        assert stat.S_IMODE(demo_pki.path(name).stat().st_mode) == 0o644


def test_trusted_upload_holds_exactly_the_two_client_cas_and_no_key(demo_pki: DemoPki) -> None:
    data = demo_pki.path(TRUSTED_CLIENT_CA_CHAIN).read_bytes()
    assert b"PRIVATE KEY" not in data
    certs = x509.load_pem_x509_certificates(data)
    assert [cert.subject for cert in certs] == [
        _cert(demo_pki, ROOT_CA).subject,
        _cert(demo_pki, INTERMEDIATE_CA).subject,
    ]
    assert all(
        cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for cert in certs
    )
    assert demo_pki.trusted_client_ca_pem == data
    assert base64.b64decode(demo_pki.path(TRUSTED_CLIENT_CA_CHAIN_B64).read_bytes()) == data


def test_client_chain_is_leaf_then_intermediate(demo_pki: DemoPki) -> None:
    certs = x509.load_pem_x509_certificates(demo_pki.path(CLIENT_CHAIN).read_bytes())
    assert certs == [_cert(demo_pki, CLIENT_CERT), _cert(demo_pki, INTERMEDIATE_CA)]


def test_deployment_parameters_fill_the_quickstart(demo_pki: DemoPki) -> None:
    document = json.loads(demo_pki.path(DEPLOYMENT_PARAMETERS).read_text())
    parameters = document["parameters"]
    assert document["contentVersion"] == "1.0.0.0"
    assert set(parameters) == {
        "addressPrefix",
        "subnetPrefix",
        "skuName",
        "capacity",
        "adminUsername",
        "adminSSHKey",
        "certData",
        "certPassword",
    }
    assert parameters["skuName"]["value"] == "Standard_v2"
    assert parameters["capacity"]["value"] == 2
    assert parameters["adminUsername"]["value"] == "azureuser"
    assert base64.b64decode(parameters["certData"]["value"]) == demo_pki.server_pfx
    assert parameters["certPassword"]["value"] == demo_pki.server_pfx_password


def test_manifest_round_trips(demo_pki: DemoPki) -> None:
    loaded = load_demo_pki(demo_pki.directory)
    assert loaded == demo_pki
    assert set(loaded.files) == set(FILE_NAMES)
    raw = json.loads(demo_pki.path(MANIFEST).read_text())
    assert raw["format"] == "appgw-emulator-demo-pki"
    assert raw["version"] == 1
    assert raw["key_type"] == "ec"
    entry = raw["files"][CLIENT_CERT]
    assert entry["kind"] == "certificate"
    assert entry["subject"] == "CN=demo-client"
    assert datetime.datetime.fromisoformat(entry["not_after"]) == (
        _cert(demo_pki, CLIENT_CERT).not_valid_after_utc
    )
    assert raw["files"][CLIENT_KEY]["kind"] == "private-key"


def test_demo_pki_path_refuses_unknown_names(demo_pki: DemoPki) -> None:
    with pytest.raises(ValueError, match="not a demo PKI file name"):
        demo_pki.path("../etc/passwd")


# --- reuse, refusal, regeneration -------------------------------------------------------


def test_ensure_creates_a_missing_directory_then_reuses_it(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    created, was_created = ensure_demo_pki(directory)
    assert was_created
    reused, was_created_again = ensure_demo_pki(directory)
    assert not was_created_again
    assert reused.server_pfx == created.server_pfx


def test_ensure_fills_an_empty_directory(tmp_path: Path) -> None:
    _pki, was_created = ensure_demo_pki(tmp_path)
    assert was_created
    assert (tmp_path / MANIFEST).is_file()


def test_ensure_treats_hidden_files_and_readme_as_empty(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*\n")
    (tmp_path / "README.md").write_text("generated here")
    (tmp_path / ".client.pem.abc123.tmp").write_text("left by an interrupted run")
    _pki, was_created = ensure_demo_pki(tmp_path)
    assert was_created
    assert (tmp_path / ".gitignore").read_text() == "*\n"
    assert not (tmp_path / ".client.pem.abc123.tmp").exists()


def test_ensure_refuses_a_foreign_directory(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(DemoPkiError, match="not an appgw-emulator demo PKI") as info:
        ensure_demo_pki(tmp_path)
    assert info.value.error_code == "EmulatorDemoPkiInvalid"
    assert info.value.file == str(tmp_path)
    assert info.value.fix is not None
    assert "another directory" in info.value.fix
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_write_refuses_a_foreign_directory_without_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoPkiError, match="not empty"):
        write_demo_pki(tmp_path)


def test_write_refuses_an_existing_demo_pki_without_force(tmp_path: Path) -> None:
    write_demo_pki(tmp_path)
    with pytest.raises(DemoPkiError, match="already holds a demo PKI") as info:
        write_demo_pki(tmp_path)
    assert info.value.fix is not None
    assert "--force" in info.value.fix


def test_write_with_force_regenerates(tmp_path: Path) -> None:
    first = write_demo_pki(tmp_path)
    second = write_demo_pki(tmp_path, force=True)
    assert second.server_pfx_password != first.server_pfx_password
    assert load_demo_pki(tmp_path) == second
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def test_stale_pki_is_reported_with_the_regenerate_fix(tmp_path: Path) -> None:
    write_demo_pki(tmp_path, now=_now() - datetime.timedelta(days=400))
    with pytest.raises(DemoPkiError, match=r"stale: server\.pfx expired") as info:
        ensure_demo_pki(tmp_path)
    assert info.value.fix is not None
    assert f"certs init {tmp_path} --force" in info.value.fix


def test_pki_expiring_within_a_day_is_stale(demo_pki: DemoPki) -> None:
    server_not_after = datetime.datetime.fromisoformat(demo_pki.files[SERVER_PFX].not_after or "")
    with pytest.raises(DemoPkiError, match=r"stale: server\.pfx expires"):
        load_demo_pki(demo_pki.directory, now=server_not_after - datetime.timedelta(hours=12))


def test_pki_without_manifest_is_reported_incomplete(tmp_path: Path) -> None:
    write_demo_pki(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(DemoPkiError, match="incomplete"):
        ensure_demo_pki(tmp_path)


def test_pki_missing_a_listed_file_is_reported(tmp_path: Path) -> None:
    write_demo_pki(tmp_path)
    (tmp_path / CLIENT_UNRELATED_CA_KEY).unlink()
    with pytest.raises(DemoPkiError, match=r"missing client-unrelated-ca\.key"):
        load_demo_pki(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", 2, "version 2 is not supported"),
        ("format", "something-else", "not an appgw-emulator demo PKI manifest"),
    ],
)
def test_manifest_of_another_kind_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    write_demo_pki(tmp_path)
    manifest_path = tmp_path / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DemoPkiError, match=message):
        load_demo_pki(tmp_path)


def test_load_of_a_missing_directory_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(DemoPkiError, match="does not exist") as info:
        load_demo_pki(tmp_path / "nope")
    assert info.value.fix is not None
    assert "certs init" in info.value.fix


def test_unknown_key_type_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key_type"):
        write_demo_pki(tmp_path / "certs", key_type="dsa")
    assert not (tmp_path / "certs").exists()


# --- the files fit together in a real handshake -----------------------------------------


def _server_context(demo_pki: DemoPki) -> ssl.SSLContext:
    key, cert, extra = pkcs12.load_key_and_certificates(
        demo_pki.path(SERVER_PFX).read_bytes(), demo_pki.path(SERVER_PFX_PASSWORD).read_bytes()
    )
    assert isinstance(cert, x509.Certificate)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    IssuedCert(cert=cert, key=key, chain=tuple(extra)).configure_ssl_context(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(demo_pki.path(TRUSTED_CLIENT_CA_CHAIN)))
    return ctx


def _client_context(demo_pki: DemoPki, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(demo_pki.path(SERVER_ROOT_CA)))
    ctx.load_cert_chain(str(demo_pki.path(cert)), str(demo_pki.path(key)))
    return ctx


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[concurrent.futures.Future[dict[str, object]], concurrent.futures.Future[bytes]]:
    """Run both ends over a socketpair; the server echoes one byte after the handshake."""

    def serve(sock: socket.socket) -> dict[str, object]:
        with server_ctx.wrap_socket(sock, server_side=True) as tls:
            tls.sendall(tls.recv(1))
            peer = tls.getpeercert()
            assert peer is not None
            return dict(peer)

    def connect(sock: socket.socket) -> bytes:
        with client_ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"!")
            return tls.recv(1)

    server_sock, client_sock = socket.socketpair()
    for sock in (server_sock, client_sock):
        sock.settimeout(SOCKET_TIMEOUT_S)
    # Leaving the executor joins both threads; each side's outcome stays in its future.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        served = pool.submit(serve, server_sock)
        connected = pool.submit(connect, client_sock)
    server_sock.close()
    client_sock.close()
    return served, connected


def test_demo_files_complete_a_mutual_tls_handshake(demo_pki: DemoPki) -> None:
    served, connected = _handshake(
        _server_context(demo_pki), _client_context(demo_pki, CLIENT_CHAIN, CLIENT_KEY)
    )
    assert connected.result() == b"!"
    assert served.result()["subject"] == ((("commonName", "demo-client"),),)


def test_server_refuses_the_unrelated_ca_client_in_the_handshake(demo_pki: DemoPki) -> None:
    served, _connected = _handshake(
        _server_context(demo_pki),
        _client_context(demo_pki, CLIENT_UNRELATED_CA_CERT, CLIENT_UNRELATED_CA_KEY),
    )
    with pytest.raises(ssl.SSLError, match=r"(?i)certificate verify failed|unknown ca"):
        served.result()


# --- the CA API -------------------------------------------------------------------------


def test_intermediate_below_path_length_zero_is_refused() -> None:
    issuing = CA().intermediate("Issuing")
    with pytest.raises(ValueError, match="path length is 0"):
        issuing.intermediate("Too deep")


def test_deeper_chain_lists_intermediates_nearest_first() -> None:
    root = CA()
    first = root.intermediate("First", path_length=1)
    second = first.intermediate("Second")
    leaf = second.issue_client("deep-client")
    assert leaf.chain == (second.cert, first.cert)
    assert second.root is root
    verifier = PolicyBuilder().store(Store([root.cert])).time(_now()).build_client_verifier()
    verifier.verify(leaf.cert, list(leaf.chain))


def test_issue_server_puts_ips_and_names_in_the_san() -> None:
    cert = CA().issue_server("example.test", "10.0.0.4", "::1").cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["example.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.4"),
        ipaddress.ip_address("::1"),
    ]


def test_rsa_client_key_allows_key_encipherment() -> None:
    leaf = CA(key_type="rsa").issue_client("rsa-client")
    assert isinstance(leaf.key, rsa.RSAPrivateKey)
    usage = leaf.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment


def test_ec_client_key_usage_is_signature_only() -> None:
    usage = CA().issue_client("ec-client").cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment


def test_issue_client_options_reach_the_certificate() -> None:
    leaf = CA().issue_client(
        "Ops Client",
        ocsp_url="http://ocsp.example.test",
        eku_client_auth=False,
        extra_name_attributes=[x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Contoso")],
    )
    assert leaf.cert.subject.rfc4514_string() == "CN=Ops Client,O=Contoso"
    aia = leaf.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_method == AuthorityInformationAccessOID.OCSP
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    # A CN with a space is not a host name, so no SAN is invented for it.
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.cert.serial_number > 0


def test_issue_client_expired_and_not_yet_valid_flags() -> None:
    ca, now = CA(), _now()
    assert ca.issue_client("old", expired=True).cert.not_valid_after_utc < now
    assert ca.issue_client("new", not_yet_valid=True).cert.not_valid_before_utc > now
    with pytest.raises(ValueError, match="both"):
        ca.issue_client("odd", expired=True, not_yet_valid=True)


def test_pfx_without_password_loads_unencrypted() -> None:
    leaf = CA().intermediate("Issuing").issue_client("pfx-client")
    key, cert, extra = pkcs12.load_key_and_certificates(leaf.pfx(None), None)
    assert key is not None
    assert cert == leaf.cert
    assert extra == list(leaf.chain)


def test_configure_openssl_context_accepts_the_key_pair() -> None:
    leaf = CA().intermediate("Issuing").issue_client("pyopenssl-client")
    ctx = SSL.Context(SSL.TLS_METHOD)
    leaf.configure_openssl_context(ctx)


def test_self_signed_client_and_bundle_helpers() -> None:
    leaf = self_signed_client("lonely-client")
    assert leaf.chain == ()
    assert leaf.cert.issuer == leaf.cert.subject
    first, second = CA("One"), CA("Two")
    assert ca_bundle_pem(first, second) == first.cert_pem + second.cert_pem


def test_demo_pki_module_exports_its_file_names() -> None:
    for name in ("SERVER_PFX", "CLIENT_CERT", "TRUSTED_CLIENT_CA_CHAIN", "MANIFEST"):
        assert name in demo.__all__
