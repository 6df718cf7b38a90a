"""The bounds on untrusted files (issue #15): PKCS#12 key-derivation cost and JSON nesting."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12

from emulator.arm import bounded_json
from emulator.arm.pkcs12_bounds import (
    MAX_PKCS12_ITERATIONS,
    Pkcs12TooCostly,
    load_pkcs12,
    pkcs12_iterations,
)
from emulator.pki import CA, IssuedCert


@pytest.fixture(scope="module")
def server() -> tuple[CA, IssuedCert]:
    ca = CA("bounds CA")
    return ca, ca.issue_server("localhost")


def _pfx(server: tuple[CA, IssuedCert], rounds: int) -> bytes:
    ca, issued = server
    key = load_pem_private_key(issued.key_pem, None)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(b"pw")
    )
    return pkcs12.serialize_key_and_certificates(
        b"x",
        key,  # type: ignore[arg-type]  # the test key is RSA or EC, both serializable
        issued.cert,
        [ca.cert],
        encryption,
    )


def test_the_counts_of_the_mac_and_both_bags_are_summed(server: tuple[CA, IssuedCert]) -> None:
    # cryptography writes the MAC with 2048 iterations whatever the bags use.
    assert pkcs12_iterations(_pfx(server, 5000)) == 5000 + 5000 + 2048


def test_a_file_over_the_bound_is_refused_before_any_work(server: tuple[CA, IssuedCert]) -> None:
    data = _pfx(server, MAX_PKCS12_ITERATIONS // 2)
    with pytest.raises(Pkcs12TooCostly, match="key-derivation iterations"):
        load_pkcs12(data, b"pw")


def test_a_usual_file_opens(server: tuple[CA, IssuedCert]) -> None:
    key, cert, extra = load_pkcs12(_pfx(server, 2048), b"pw")
    assert key is not None
    assert cert is not None
    assert len(extra) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"not der at all", b"\x30\x80" + b"\x00" * 10],
)
def test_garbage_counts_nothing_and_never_raises(data: bytes) -> None:
    assert pkcs12_iterations(data) == 0


def test_json_nested_at_the_bound_loads() -> None:
    depth = bounded_json.MAX_JSON_DEPTH
    text = "[" * depth + "]" * depth
    assert bounded_json.json_depth(bounded_json.loads(text)) == depth


@pytest.mark.parametrize("depth", [bounded_json.MAX_JSON_DEPTH + 1, 500, 100_000])
def test_json_nested_deeper_is_refused(depth: int) -> None:
    text = '{"a": ' * depth + "1" + "}" * depth
    with pytest.raises(bounded_json.JsonTooDeep):
        bounded_json.loads(text)
    assert isinstance(bounded_json.JsonTooDeep(), ValueError)
    with pytest.raises(json.JSONDecodeError):
        bounded_json.loads("{")
