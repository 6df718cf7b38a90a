"""The scenarios ``verify`` runs, by name, and the minted clients' CN: what the command's
parser needs, apart from the matrix runner (which loads the dashboard's client and the PKI)."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_CLIENT_CN", "SCENARIOS"]

#: Scenario key → what the client does. The order is the report's order.
SCENARIOS: Final = {
    "valid": "a valid certificate from the trusted CA, leaf only",
    "valid-chain": "a valid certificate from the trusted CA, leaf + intermediates",
    "expired": "issued by the trusted CA, validity ended yesterday",
    "not-yet-valid": "issued by the trusted CA, validity starts in 30 days",
    "untrusted-ca": "issued by a CA the SSL profile does not trust",
    "self-signed": "a self-signed leaf",
    "none": "no client certificate",
    "wrong-issuer": "chains to the trusted root, but its issuer is not the upload's issuer DN",
    "revoked": "issued by the trusted CA and revoked (the run's own OCSP responder says so)",
    "wrong-eku": "issued by the trusted CA for serverAuth only",
    "forged-header": "no certificate, but the client sends the certificate header itself",
}

#: The common name of minted client certificates unless ``--client-cn`` says otherwise.
DEFAULT_CLIENT_CN: Final = "appgw-verify-client"
