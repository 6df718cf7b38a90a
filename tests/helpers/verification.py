"""The ``up`` gateway with the Strict SSL profile's upload and ``clientAuthConfiguration``
chosen per test, and a request through it with a chosen client certificate."""

from __future__ import annotations

import base64
import functools
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

import backend_stub
from emulator.arm.demo_template import STRICT_LISTENER, demo_template
from emulator.arm.template import load_template, select_gateway
from emulator.core.access import AccessRecord
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.pki import IssuedCert
from emulator.runtime.gateway import Gateway
from emulator.runtime.ocsp_client import OcspChecker
from tests.helpers.http import Reply, client_context, https_request
from tests.helpers.pki import PFX_PASSWORD, PkiBundle

#: The title of the 400 page a Strict listener answers for a certificate it rejects.
BAD_CERT_TITLE = b"<title>400 The SSL certificate error</title>"


@dataclass
class Verified:
    """A running Strict/Passthrough gateway with a chosen upload and client-auth settings."""

    gateway: Gateway
    backend_port: int

    def port(self, listener: str = STRICT_LISTENER) -> int:
        return self.gateway.ports[listener]

    @property
    def last(self) -> AccessRecord:
        return self.gateway.access_log[-1]


def gateway_template(client_auth: Mapping[str, Any]) -> dict[str, Any]:
    """The ``up`` template with ``client_auth`` merged into the Strict profile's settings."""
    template = demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    gateway = next(r for r in template["resources"] if r["type"].endswith("/applicationGateways"))
    strict = gateway["properties"]["sslProfiles"][0]["properties"]
    strict["clientAuthConfiguration"].update(client_auth)
    return template


async def start_verified(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    *,
    upload_pem: bytes | None = None,
    client_auth: Mapping[str, Any] | None = None,
    explain: bool = False,
    ocsp: OcspChecker | None = None,
    access_log_sink: Any = None,
) -> Verified:
    """Stub backend + gateway; the Strict profile trusts ``upload_pem`` (default root + int)."""
    _host, backend_port = await nursery.start(
        functools.partial(backend_stub.serve, backend_stub.StubConfig(), host="127.0.0.1", port=0)
    )
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(gateway_template(client_auth or {})))
    upload = upload_pem if upload_pem is not None else pki.trusted_client_ca_pem
    parameters = [
        "certData=" + base64.b64encode(pki.server_pfx).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(upload).decode(),
    ]
    config = build_gateway_config(
        select_gateway(load_template(path, parameters), None), now=datetime.now(UTC)
    )
    config = with_backend_overrides(
        config, {"stub-backend": (BackendAddress("127.0.0.1", backend_port),)}
    )
    gateway = Gateway(
        config,
        listen={8443: 0, 9443: 0},
        explain=explain,
        ocsp=ocsp,
        access_log_sink=access_log_sink,
    )
    await nursery.start(gateway.serve)
    return Verified(gateway, backend_port)


async def request_with(
    stack: Verified,
    pki: PkiBundle,
    cert: IssuedCert | None,
    *,
    with_chain: bool = False,
    listener: str = STRICT_LISTENER,
) -> Reply:
    """One GET through ``listener`` presenting ``cert`` (with its chain when asked)."""
    ctx: ssl.SSLContext = client_context(pki, cert, with_chain=with_chain)
    return await https_request(stack.port(listener), ctx)
