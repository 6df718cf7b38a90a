"""Azure's SSL policies as data: predefined policy → minimum TLS version and cipher suites.

Source: "Application Gateway TLS policy overview",
https://learn.microsoft.com/azure/application-gateway/application-gateway-ssl-policy-overview.
Cipher suites use Azure's (IANA) names; :func:`openssl_cipher_name` converts them to OpenSSL's.

Since the TLS 1.0/1.1 retirement of 31 Aug 2025 ("Managing your Application Gateway with TLS
1.0 and 1.1 retirement", application-gateway-tls-version-retirement) 20150501 and 20170401 can
no longer be associated and the Custom type is TLS 1.2 only, without twelve suites; the model
(:mod:`emulator.model`) enforces that with these tables, and keeps the retired policies
runnable under ``--loose`` for reproducing an old gateway.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_POLICY_NAME",
    "DEPRECATED_TLS_CODE",
    "DOCUMENTED_LEGACY_DEFAULT",
    "LEGACY_DEFAULT_POLICY_NAME",
    "NEW_DEFAULT_FROM_API",
    "POLICY_TABLE",
    "PREDEFINED_POLICIES",
    "RETIRED_CUSTOM_SUITES",
    "RETIRED_POLICIES",
    "RETIREMENT_URL",
    "V2_UNSUPPORTED_DHE",
    "SslPolicy",
    "TlsVersion",
    "openssl_cipher_name",
]


class TlsVersion(enum.Enum):
    TLSV1_0 = "TLSv1_0"
    TLSV1_1 = "TLSv1_1"
    TLSV1_2 = "TLSv1_2"
    TLSV1_3 = "TLSv1_3"


#: The TLS policy overview's table, row by row in its order (which is also the order
#: ``Get-AzApplicationGatewaySslPredefinedPolicy`` prints for 20150501): each TLS 1.2 suite and
#: the predefined policies that list it. Checked against the table of
#: https://learn.microsoft.com/azure/application-gateway/application-gateway-ssl-policy-overview
#: (versions of 06/2023 and later; the 2025-2026 versions keep the same table).
_P2015, _P2017, _P2017S, _P2022, _P2022S = (
    "AppGwSslPolicy20150501",
    "AppGwSslPolicy20170401",
    "AppGwSslPolicy20170401S",
    "AppGwSslPolicy20220101",
    "AppGwSslPolicy20220101S",
)
_OLD: Final = frozenset({_P2015, _P2017, _P2017S})
_ALL: Final = _OLD | {_P2022, _P2022S}
POLICY_TABLE: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", _ALL),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", _ALL),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", frozenset({_P2015, _P2022})),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", frozenset({_P2015, _P2022})),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", _OLD),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", _OLD),
    ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", frozenset({_P2015})),
    ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", frozenset({_P2015})),
    ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", frozenset({_P2015})),
    ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", frozenset({_P2015})),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", _OLD),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", _OLD),
    ("TLS_RSA_WITH_AES_256_CBC_SHA256", _OLD),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", _OLD),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", _OLD),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", _OLD),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", _ALL),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", _ALL),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", _OLD | {_P2022}),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", _OLD | {_P2022}),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", _OLD),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", _OLD),
    ("TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", frozenset({_P2015})),
    ("TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", frozenset({_P2015})),
    ("TLS_DHE_DSS_WITH_AES_256_CBC_SHA", frozenset({_P2015})),
    ("TLS_DHE_DSS_WITH_AES_128_CBC_SHA", frozenset({_P2015})),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", frozenset({_P2015})),
    ("TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA", frozenset({_P2015})),
)
#: "Application Gateway v2 doesn't support the following DHE ciphers ... even though they are
#: mentioned in the predefined policies" (TLS policy overview, Limitations): the eight DHE_RSA
#: and DHE_DSS AES suites. The DSS 3DES suite is left out too: it needs a DSA listener
#: certificate, which a gateway cannot have. So the policies below offer the table minus DHE.
V2_UNSUPPORTED_DHE: Final = frozenset(
    suite for suite, _ in POLICY_TABLE if suite.startswith(("TLS_DHE_RSA_", "TLS_DHE_DSS_"))
)

#: The twelve suites a Custom policy loses with the TLS 1.0/1.1 retirement (31 Aug 2025; the
#: CustomV2 type is unaffected): https://learn.microsoft.com/azure/application-gateway/
#: application-gateway-tls-version-retirement, "Custom policies for V2 SKUs".
RETIRED_CUSTOM_SUITES: Final = frozenset(
    {
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
        "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
        "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
        "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
        "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
        "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
    }
)
#: The predefined policies that "can no longer be associated with an Application Gateway
#: resource after August 2025" (retirement page, "Predefined policies for V2 SKUs").
RETIRED_POLICIES: Final = frozenset({_P2015, _P2017})
#: Where the retirement is announced, for error messages (the link Azure's own error gives).
RETIREMENT_URL: Final = "https://aka.ms/appgw-oldtlsversions"
#: Azure's code for a policy with a retired TLS version (seen in deployment errors after the
#: retirement, e.g. microsoft/MicroHack#280: "The TLS policy AppGwSslPolicy20150501 for
#: Application Gateway ... is using a deprecated TLS version.").
DEPRECATED_TLS_CODE: Final = "ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy"


@dataclass(frozen=True, slots=True)
class SslPolicy:
    """An effective TLS policy: what a listener negotiates."""

    name: str
    min_version: TlsVersion
    cipher_suites: tuple[str, ...]
    #: TLS 1.3 is offered only by the 2022 policies and CustomV2 (TLS policy overview).
    tls13: bool

    @property
    def newer_family(self) -> bool:
        """The 2022 predefined policies and CustomV2, which cannot share a gateway with the
        older ones (TLS policy overview, "both old and new policies cannot co-exist"). They
        are exactly the policies with TLS 1.3."""
        return self.tls13


def _suites_of(policy: str) -> tuple[str, ...]:
    return tuple(
        suite
        for suite, policies in POLICY_TABLE
        if policy in policies and suite not in V2_UNSUPPORTED_DHE
    )


PREDEFINED_POLICIES: Final[dict[str, SslPolicy]] = {
    _P2015: SslPolicy(_P2015, TlsVersion.TLSV1_0, _suites_of(_P2015), False),
    _P2017: SslPolicy(_P2017, TlsVersion.TLSV1_1, _suites_of(_P2017), False),
    _P2017S: SslPolicy(_P2017S, TlsVersion.TLSV1_2, _suites_of(_P2017S), False),
    _P2022: SslPolicy(_P2022, TlsVersion.TLSV1_2, _suites_of(_P2022), True),
    _P2022S: SslPolicy(_P2022S, TlsVersion.TLSV1_2, _suites_of(_P2022S), True),
}

#: With no policy in the template, API 2023-02-01 and later apply AppGwSslPolicy20220101.
DEFAULT_POLICY_NAME: Final = _P2022
#: Earlier API versions documented AppGwSslPolicy20150501, which the retirement removed; what
#: such a gateway gets now is not documented. Our choice: AppGwSslPolicy20170401S, the one
#: older-family policy left (TLS 1.2, the retirement page's alternative to the 2022 policies).
#: It keeps the gateway in the older family, as Azure still does: an old-API gateway without
#: sslPolicy and a 2022 profile is refused with ApplicationGatewaySslPolicyMisMatch after the
#: retirement (Azure/terraform-azurerm-avm-res-network-applicationgateway#173, 2025-10).
LEGACY_DEFAULT_POLICY_NAME: Final = _P2017S
#: ... which is what the documentation named before the retirement.
DOCUMENTED_LEGACY_DEFAULT: Final = _P2015
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
