"""The gateway that ``appgw-emulator up`` runs: an ARM template, written out and run like any other.

``up`` does not build its gateway in Python behind the user's back. It writes a real deployment
template (``up-gateway.json`` in the certificate directory) with two HTTPS listeners — one
Strict, one Passthrough — and a rewrite rule set that forwards the client certificate, and runs
it through the same loader, model and runtime as ``appgw-emulator run``. A user can open the
file, deploy it to Azure, or copy its pieces into their own template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CERT_HEADERS",
    "DEMO_TEMPLATE_NAME",
    "PASSTHROUGH_LISTENER",
    "STRICT_LISTENER",
    "demo_template",
    "write_demo_template",
]

DEMO_TEMPLATE_NAME: Final = "up-gateway.json"
STRICT_LISTENER: Final = "strict-listener"
PASSTHROUGH_LISTENER: Final = "passthrough-listener"
BACKEND_POOL: Final = "stub-backend"

#: Headers the demo's rewrite rule set fills, and the server variable behind each.
CERT_HEADERS: Final = (
    ("X-Client-Cert", "{var_client_certificate}"),
    ("X-Client-Cert-Verification", "{var_client_certificate_verification}"),
    ("X-Client-Cert-Subject", "{var_client_certificate_subject}"),
    ("X-Client-Cert-Issuer", "{var_client_certificate_issuer}"),
    ("X-Client-Cert-Serial", "{var_client_certificate_serial}"),
    ("X-Client-Cert-Fingerprint", "{var_client_certificate_fingerprint}"),
    ("X-Client-Cert-Start-Date", "{var_client_certificate_start_date}"),
    ("X-Client-Cert-End-Date", "{var_client_certificate_end_date}"),
)


def _sub(collection: str, name: str) -> dict[str, str]:
    return {"id": f"[concat(variables('gatewayId'), '/{collection}/{name}')]"}


def _listener(name: str, port_name: str, profile: str) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "frontendIPConfiguration": _sub("frontendIPConfigurations", "appGatewayFrontendIP"),
            "frontendPort": _sub("frontendPorts", port_name),
            "protocol": "Https",
            "sslCertificate": _sub("sslCertificates", "server-cert"),
            "sslProfile": _sub("sslProfiles", profile),
        },
    }


def _rule(name: str, priority: int, listener: str) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "ruleType": "Basic",
            "priority": priority,
            "httpListener": _sub("httpListeners", listener),
            "backendAddressPool": _sub("backendAddressPools", BACKEND_POOL),
            "backendHttpSettings": _sub("backendHttpSettingsCollection", "stub-settings"),
            "rewriteRuleSet": _sub("rewriteRuleSets", "forward-client-cert"),
        },
    }


def demo_template(
    *, strict_port: int, passthrough_port: int, backend_host: str, backend_port: int
) -> dict[str, Any]:
    """The ``up`` gateway as an ARM deployment template (API 2025-03-01, Standard_v2)."""
    secure = {"type": "securestring"}
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "certData": {
                "type": "string",
                "metadata": {"description": "base64 of the listener's .pfx"},
            },
            "certPassword": secure,
            "trustedClientCaData": {
                "type": "string",
                "metadata": {
                    "description": "base64 of the client CA chain (root + intermediate, public)"
                },
            },
        },
        "variables": {
            "gatewayName": "appgw-emulator-demo",
            "gatewayId": (
                "[resourceId('Microsoft.Network/applicationGateways', variables('gatewayName'))]"
            ),
        },
        "resources": [
            {
                "type": "Microsoft.Network/applicationGateways",
                "apiVersion": "2025-03-01",
                "name": "[variables('gatewayName')]",
                "location": "[resourceGroup().location]",
                "properties": {
                    "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 1},
                    "sslPolicy": {
                        "policyType": "Predefined",
                        "policyName": "AppGwSslPolicy20220101",
                    },
                    "sslCertificates": [
                        {
                            "name": "server-cert",
                            "properties": {
                                "data": "[parameters('certData')]",
                                "password": "[parameters('certPassword')]",
                            },
                        }
                    ],
                    "trustedClientCertificates": [
                        {
                            "name": "client-ca-chain",
                            "properties": {"data": "[parameters('trustedClientCaData')]"},
                        }
                    ],
                    "sslProfiles": [
                        {
                            "name": "strict-profile",
                            "properties": {
                                "trustedClientCertificates": [
                                    _sub("trustedClientCertificates", "client-ca-chain")
                                ],
                                "clientAuthConfiguration": {
                                    "verifyClientCertIssuerDN": False,
                                    "verifyClientRevocation": "None",
                                    "verifyClientAuthMode": "Strict",
                                },
                            },
                        },
                        {
                            "name": "passthrough-profile",
                            "properties": {
                                # Azure refuses later updates of a Passthrough profile that has
                                # neither an sslPolicy nor trusted client certificates.
                                "sslPolicy": {
                                    "policyType": "Predefined",
                                    "policyName": "AppGwSslPolicy20220101",
                                },
                                "clientAuthConfiguration": {
                                    "verifyClientCertIssuerDN": False,
                                    "verifyClientRevocation": "None",
                                    "verifyClientAuthMode": "Passthrough",
                                },
                            },
                        },
                    ],
                    "frontendIPConfigurations": [
                        {"name": "appGatewayFrontendIP", "properties": {}}
                    ],
                    "frontendPorts": [
                        {"name": "strict-port", "properties": {"port": strict_port}},
                        {"name": "passthrough-port", "properties": {"port": passthrough_port}},
                    ],
                    "backendAddressPools": [
                        {
                            "name": BACKEND_POOL,
                            "properties": {"backendAddresses": [{"ipAddress": backend_host}]},
                        }
                    ],
                    "backendHttpSettingsCollection": [
                        {
                            "name": "stub-settings",
                            "properties": {
                                "port": backend_port,
                                "protocol": "Http",
                                "requestTimeout": 20,
                            },
                        }
                    ],
                    "httpListeners": [
                        _listener(STRICT_LISTENER, "strict-port", "strict-profile"),
                        _listener(PASSTHROUGH_LISTENER, "passthrough-port", "passthrough-profile"),
                    ],
                    "rewriteRuleSets": [
                        {
                            "name": "forward-client-cert",
                            "properties": {
                                "rewriteRules": [
                                    {
                                        "name": "client-cert-headers",
                                        "ruleSequence": 100,
                                        "conditions": [],
                                        "actionSet": {
                                            "requestHeaderConfigurations": [
                                                {"headerName": name, "headerValue": value}
                                                for name, value in CERT_HEADERS
                                            ]
                                        },
                                    }
                                ]
                            },
                        }
                    ],
                    "requestRoutingRules": [
                        _rule("strict-rule", 100, STRICT_LISTENER),
                        _rule("passthrough-rule", 200, PASSTHROUGH_LISTENER),
                    ],
                },
            }
        ],
    }


def write_demo_template(directory: Path, **ports: int | str) -> Path:
    """Write :func:`demo_template` into ``directory``; returns the file's path."""
    path = directory / DEMO_TEMPLATE_NAME
    template = demo_template(**ports)  # type: ignore[arg-type]
    path.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    return path
