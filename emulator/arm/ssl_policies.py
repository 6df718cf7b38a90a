"""Azure's SSL policies as data: predefined policy → minimum TLS version and cipher suites.

Source: "Application Gateway TLS policy overview",
https://learn.microsoft.com/azure/application-gateway/application-gateway-ssl-policy-overview.
Cipher suites use Azure's (IANA) names; :func:`openssl_cipher_name` converts them to OpenSSL's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_POLICY_NAME",
    "PREDEFINED_POLICIES",
    "SslPolicy",
    "TlsVersion",
    "openssl_cipher_name",
]


class TlsVersion(enum.Enum):
    TLSV1_0 = "TLSv1_0"
    TLSV1_1 = "TLSv1_1"
    TLSV1_2 = "TLSv1_2"
    TLSV1_3 = "TLSv1_3"


_GCM_ECDHE: Final = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)
_CBC_ECDHE_SHA2: Final = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
)
_LEGACY: Final = (
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
)


@dataclass(frozen=True, slots=True)
class SslPolicy:
    """An effective TLS policy: what a listener negotiates."""

    name: str
    min_version: TlsVersion
    cipher_suites: tuple[str, ...]
    #: TLS 1.3 is offered only by the 2022 policies and CustomV2 (TLS policy overview).
    tls13: bool


PREDEFINED_POLICIES: Final[dict[str, SslPolicy]] = {
    "AppGwSslPolicy20150501": SslPolicy(
        "AppGwSslPolicy20150501", TlsVersion.TLSV1_0, _GCM_ECDHE + _CBC_ECDHE_SHA2 + _LEGACY, False
    ),
    "AppGwSslPolicy20170401": SslPolicy(
        "AppGwSslPolicy20170401", TlsVersion.TLSV1_1, _GCM_ECDHE + _CBC_ECDHE_SHA2 + _LEGACY, False
    ),
    "AppGwSslPolicy20170401S": SslPolicy(
        "AppGwSslPolicy20170401S", TlsVersion.TLSV1_2, _GCM_ECDHE + _CBC_ECDHE_SHA2 + _LEGACY, False
    ),
    "AppGwSslPolicy20220101": SslPolicy(
        "AppGwSslPolicy20220101", TlsVersion.TLSV1_2, _GCM_ECDHE + _CBC_ECDHE_SHA2, True
    ),
    "AppGwSslPolicy20220101S": SslPolicy(
        "AppGwSslPolicy20220101S", TlsVersion.TLSV1_2, _GCM_ECDHE, True
    ),
}

#: With no policy in the template, API 2023-02-01 and later apply AppGwSslPolicy20220101.
DEFAULT_POLICY_NAME: Final = "AppGwSslPolicy20220101"
#: ... and earlier API versions AppGwSslPolicy20150501.
LEGACY_DEFAULT_POLICY_NAME: Final = "AppGwSslPolicy20150501"
NEW_DEFAULT_FROM_API: Final = "2023-02-01"

_KX: Final = {
    "ECDHE_RSA": "ECDHE-RSA",
    "ECDHE_ECDSA": "ECDHE-ECDSA",
    "DHE_RSA": "DHE-RSA",
    "RSA": "",
}
_BULK: Final = {
    "AES_128_GCM": "AES128-GCM",
    "AES_256_GCM": "AES256-GCM",
    "AES_128_CBC": "AES128",
    "AES_256_CBC": "AES256",
    "3DES_EDE_CBC": "DES-CBC3",
}


def openssl_cipher_name(azure_name: str) -> str | None:
    """``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` → ``ECDHE-RSA-AES128-GCM-SHA256``.

    Returns None for TLS 1.3 suites (configured separately in OpenSSL) and unknown names.
    """
    if not azure_name.startswith("TLS_") or "_WITH_" not in azure_name:
        return None
    kx, _, rest = azure_name[4:].partition("_WITH_")
    bulk, _, mac = rest.rpartition("_")
    if kx not in _KX or bulk not in _BULK or mac not in ("SHA", "SHA256", "SHA384"):
        return None
    return "-".join(part for part in (_KX[kx], _BULK[bulk], mac) if part)
