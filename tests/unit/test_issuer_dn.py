"""The clientCertIssuerDN extraction rule (appgw-behaviour.md §3) and the DN comparison."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.core.tls.issuer_dn import canonical_name, client_cert_issuer_dn, issuer_dn_matches
from emulator.pki import CA


@pytest.fixture(scope="module")
def tree() -> dict[str, CA]:
    root = CA("DN Root")
    a = root.intermediate("Branch A", path_length=1)
    b = root.intermediate("Branch B", path_length=1)
    return {"root": root, "a": a, "b": b, "b1": b.intermediate("Branch B1")}


def cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (["root"], "DN Root"),
        (["root", "a"], "Branch A"),
        (["a", "root"], "Branch A"),
        (["root", "b", "b1"], "Branch B1"),
        (["b1", "root", "b"], "Branch B1"),
        (["root", "a", "b"], "Branch A"),
        (["root", "b", "a"], "Branch B"),
        (["root", "a", "b", "b1"], "Branch B1"),
    ],
    ids=[
        "root-alone",
        "root-int",
        "int-before-root",
        "two-levels",
        "two-levels-any-order",
        "equal-branches-first-wins",
        "equal-branches-file-order",
        "longest-branch-wins",
    ],
)
def test_issuer_dn_is_the_subject_of_the_deepest_ca(
    tree: dict[str, CA], order: list[str], expected: str
) -> None:
    certs = [tree[name].cert for name in order]
    assert cn(client_cert_issuer_dn(certs)) == expected


def test_leaves_in_the_upload_are_ignored(tree: dict[str, CA]) -> None:
    leaf = tree["a"].issue_client("leaf")
    assert cn(client_cert_issuer_dn([tree["root"].cert, tree["a"].cert, leaf.cert])) == "Branch A"


def test_an_upload_without_ca_has_no_issuer_dn(tree: dict[str, CA]) -> None:
    with pytest.raises(ValueError, match="no issuer DN"):
        client_cert_issuer_dn([tree["a"].issue_client("leaf").cert])


def name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def test_comparison_folds_case_and_white_space_like_openssl() -> None:
    a = name((NameOID.ORGANIZATION_NAME, "Contoso"), (NameOID.COMMON_NAME, "Issuing  CA"))
    b = name((NameOID.ORGANIZATION_NAME, "contoso"), (NameOID.COMMON_NAME, " issuing ca "))
    assert issuer_dn_matches(a, b)
    assert canonical_name(a) == canonical_name(b)


@pytest.mark.parametrize(
    "other",
    [
        name((NameOID.ORGANIZATION_NAME, "Contoso"), (NameOID.COMMON_NAME, "Issuing CA 2")),
        name((NameOID.COMMON_NAME, "Issuing CA"), (NameOID.ORGANIZATION_NAME, "Contoso")),
        name((NameOID.COMMON_NAME, "Issuing CA")),
    ],
    ids=["other-value", "other-order", "missing-attribute"],
)
def test_comparison_rejects_a_different_name(other: x509.Name) -> None:
    expected = name((NameOID.ORGANIZATION_NAME, "Contoso"), (NameOID.COMMON_NAME, "Issuing CA"))
    assert not issuer_dn_matches(other, expected)
