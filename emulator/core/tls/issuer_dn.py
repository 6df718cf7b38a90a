"""The ``clientCertIssuerDN`` of a trusted client CA upload, and how a client's issuer is compared.

With ``verifyClientCertIssuerDN: true`` a Strict profile also requires the client certificate's
issuer DN to equal a DN the gateway extracted from each uploaded file (the read-only
``clientCertIssuerDN`` of a trusted client certificate). The extraction rule
(appgw-behaviour.md §3): the subject of the *deepest* CA in the file — the CA furthest from the
root along issuer links. root → int gives the intermediate's subject; root → int1 → int2 gives
int2's; a root alone gives the root's. When the file branches (root → A and root → B), the
longest branch wins, and between branches of equal length the first in file order.

Two decisions where Azure's documentation is silent (checked: mutual authentication overview
and troubleshooting pages, the ``ApplicationGatewayClientAuthConfiguration`` REST/SDK
reference, which only say "verify client certificate issuer name"):

* **Comparison**: DNs are compared the way OpenSSL matches an issuer to its CA
  (``X509_NAME_cmp`` over the canonical encoding): same attributes in the same order, values
  compared case-insensitively with runs of white space folded. A byte-for-byte comparison would
  reject a certificate OpenSSL itself chains to that CA, which the gateway cannot mean.
* **Several uploads on one profile**: the issuer must match the ``clientCertIssuerDN`` of any
  one of them (each upload is a separate trusted chain).

Pure functions over ``cryptography`` values.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from emulator.cert_facts import is_ca

__all__ = ["canonical_name", "client_cert_issuer_dn", "issuer_dn_matches"]


def client_cert_issuer_dn(certificates: Sequence[x509.Certificate]) -> x509.Name:
    """The issuer DN the gateway extracts from one upload (see the module docstring).

    Raises:
        ValueError: the upload holds no CA certificate (Azure refuses such an upload anyway).
    """
    cas = [c for c in certificates if is_ca(c)]
    if not cas:
        raise ValueError("a trusted client CA upload without a CA certificate has no issuer DN")

    def depth(cert: x509.Certificate) -> int:
        seen = {cert}
        current = cert
        steps = 0
        while current.issuer != current.subject:
            parent = next((c for c in cas if c.subject == current.issuer and c not in seen), None)
            if parent is None:
                break
            seen.add(parent)
            current = parent
            steps += 1
        return steps

    depths = [depth(c) for c in cas]
    deepest = max(depths)
    return cas[depths.index(deepest)].subject


def canonical_name(name: x509.Name) -> tuple[frozenset[tuple[str, str]], ...]:
    """``name`` in OpenSSL's canonical form: per RDN, (OID, folded lower-case value) pairs."""
    return tuple(
        frozenset(
            (attr.oid.dotted_string, " ".join(_text(attr.value).split()).lower()) for attr in rdn
        )
        for rdn in name.rdns
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.hex()


def issuer_dn_matches(issuer: x509.Name, expected: x509.Name) -> bool:
    """Whether a client certificate's ``issuer`` equals an upload's ``clientCertIssuerDN``."""
    return canonical_name(issuer) == canonical_name(expected)
