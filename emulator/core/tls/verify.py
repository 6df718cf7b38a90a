"""OpenSSL's certificate verification error texts, as the gateway logs them.

The access log's ``sslClientVerify`` is ``FAILED:`` followed by OpenSSL's text for the verify
error (``X509_verify_cert_error_string``), e.g. ``FAILED:certificate has expired`` (Azure
"Troubleshoot mutual authentication"). pyOpenSSL hands the callback the error *number* only, so
the texts of the numbers a client certificate can produce are kept here, in OpenSSL 3 wording
(``crypto/x509/x509_txt.c``; the numbers are stable ABI from ``x509_vfy.h``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CERT_CHAIN_TOO_LONG",
    "CERT_HAS_EXPIRED",
    "CERT_NOT_YET_VALID",
    "CERT_REVOKED",
    "CERT_SIGNATURE_FAILURE",
    "DEPTH_ZERO_SELF_SIGNED_CERT",
    "INVALID_CA",
    "INVALID_PURPOSE",
    "ISSUER_DN_MISMATCH_TEXT",
    "OCSP_FAILED_TEXT",
    "PATH_LENGTH_EXCEEDED",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
    "UNABLE_TO_GET_ISSUER_CERT",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "UNSPECIFIED",
    "VERIFY_ERROR_TEXTS",
    "verify_error_text",
]

# The numbers the chain emulation (:mod:`emulator.core.tls.chain`) reports, named as in x509_vfy.h.
#: X509_V_ERR_UNSPECIFIED: OpenSSL's verdict when verification produced no result. The TLS
#: policy reports it for a certificate the handshake did not verify at all (see
#: :class:`emulator.core.tls.policy.VerifyLog`).
UNSPECIFIED: Final = 1
UNABLE_TO_GET_ISSUER_CERT: Final = 2
UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: Final = 6
CERT_SIGNATURE_FAILURE: Final = 7
CERT_NOT_YET_VALID: Final = 9
CERT_HAS_EXPIRED: Final = 10
DEPTH_ZERO_SELF_SIGNED_CERT: Final = 18
SELF_SIGNED_CERT_IN_CHAIN: Final = 19
UNABLE_TO_GET_ISSUER_CERT_LOCALLY: Final = 20
UNABLE_TO_VERIFY_LEAF_SIGNATURE: Final = 21
CERT_CHAIN_TOO_LONG: Final = 22
CERT_REVOKED: Final = 23
INVALID_CA: Final = 24
PATH_LENGTH_EXCEEDED: Final = 25
INVALID_PURPOSE: Final = 26

#: The gateway's own reason when ``verifyClientCertIssuerDN`` rejects a certificate whose chain
#: verified (appgw-behaviour.md §3, Azure "Troubleshoot mutual authentication").
ISSUER_DN_MISMATCH_TEXT: Final = "Unable to verify the client certificate issuer"
#: nginx's ``$ssl_client_verify`` reason when OCSP could not give an answer (no responder URL,
#: responder unreachable, bad or ``unknown`` response): ``ngx_ssl_ocsp_get_status`` in
#: ``ngx_event_openssl_stapling.c``. A revoked certificate gets OpenSSL's "certificate revoked".
OCSP_FAILED_TEXT: Final = "certificate status request failed"

VERIFY_ERROR_TEXTS: Final[dict[int, str]] = {
    1: "unspecified certificate verification error",
    2: "unable to get issuer certificate",
    3: "unable to get certificate CRL",
    4: "unable to decrypt certificate's signature",
    6: "unable to decode issuer public key",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    13: "format error in certificate's notBefore field",
    14: "format error in certificate's notAfter field",
    17: "out of memory",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    25: "path length constraint exceeded",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    29: "subject issuer mismatch",
    30: "authority and subject key identifier mismatch",
    31: "authority and issuer serial number mismatch",
    32: "key usage does not include certificate signing",
    34: "unhandled critical extension",
    41: "invalid or inconsistent certificate extension",
    42: "invalid or inconsistent certificate policy extension",
    43: "no explicit policy",
    47: "permitted subtree violation",
    48: "excluded subtree violation",
    68: "CA cert does not include key usage extension",
    79: "Missing Authority Key Identifier",
    80: "Missing Subject Key Identifier",
    86: "Root CA certificate is not self-signed",
}


def verify_error_text(errno: int) -> str:
    """OpenSSL's text for a verify error number (the number itself when unknown)."""
    return VERIFY_ERROR_TEXTS.get(errno, f"certificate verify error {errno}")
