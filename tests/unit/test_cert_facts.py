"""``is_ca``, the one definition of a CA certificate that every layer reads (OpenSSL's)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from emulator.cert_facts import is_ca
from emulator.pki import CA


@pytest.fixture(scope="module")
def root() -> CA:
    return CA("Facts Root")


def _without_basic_constraints(issuer: CA) -> x509.Certificate:
    """A v3 certificate with no basicConstraints at all: not a CA to OpenSSL."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no constraints")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject)
        .public_key(issuer.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(issuer.key, hashes.SHA256())
    )


def test_a_root_and_an_intermediate_are_cas(root: CA) -> None:
    assert is_ca(root.cert)
    assert is_ca(root.intermediate("Facts Intermediate").cert)


def test_a_client_leaf_is_not_a_ca(root: CA) -> None:
    assert not is_ca(root.issue_client("facts-client").cert)


def test_a_v3_certificate_without_basic_constraints_is_not_a_ca(root: CA) -> None:
    assert not is_ca(_without_basic_constraints(root))
