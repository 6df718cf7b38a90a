"""The dashboard in front of the ``up`` gateway and the stub backend (a demo PKI from
``certs init``), and its JSON API called with the stdlib client from a worker thread."""

from __future__ import annotations

import functools
import http.client
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

import backend_stub
from emulator.arm.demo_template import demo_template
from emulator.dashboard import BackendObservations, Dashboard, load_identities
from emulator.dashboard.defaults import DEFAULT_TRY_PATH
from emulator.pki.demo import SERVER_ROOT_CA, DemoPki
from emulator.runtime.gateway import Gateway
from tests.helpers.http import https_get

#: Bound of one API call from the test client (a "try" makes two TLS requests; well under 1 s).
API_TIMEOUT_S: Final = 10.0
READY_DASHBOARD: Final = re.compile(r"^ready: dashboard (?P<url>http://\S+/)$")


@dataclass(frozen=True)
class Answer:
    """One dashboard API response; header names lowercased."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call_blocking(
    port: int,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    """One API call (``body`` sent as JSON, or ``raw`` bytes as they are), blocking."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=API_TIMEOUT_S)
    with closing(conn):
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )


async def api(port: int, method: str, path: str, body: object = None, **options: Any) -> Answer:
    """:func:`call_blocking` from a worker thread, so the trio loop keeps serving."""
    return await trio.to_thread.run_sync(
        functools.partial(call_blocking, port, method, path, body, **options)
    )


def demo_https_get(port: int, pki_dir: Path, cert: str | None, key: str | None) -> int:
    """The status of one GET through the gateway with the demo PKI's files (``certs init``)."""
    reply = https_get(
        port,
        cafile=pki_dir / SERVER_ROOT_CA,
        cert=pki_dir / cert if cert is not None else None,
        key=pki_dir / key if key is not None else None,
        path="/from-a-test",
    )
    return reply.status


@dataclass
class Running:
    dashboard: Dashboard
    gateway: Gateway
    pki: DemoPki

    @property
    def port(self) -> int:
        assert self.dashboard.port is not None
        return self.dashboard.port


@asynccontextmanager
async def running(
    pki: DemoPki,
    *,
    with_pki: bool = True,
    enable_http2: bool = False,
    identities_dir: Path | None = None,
    try_path: str = DEFAULT_TRY_PATH,
) -> AsyncIterator[Running]:
    """Stub backend → gateway (the ``up`` template) → dashboard, stopped when the block ends.

    The dashboard offers the identities of ``identities_dir`` when given, else of the demo PKI
    (none without ``with_pki``), and tries them on ``try_path``."""
    observations = BackendObservations()
    identities = (
        identities_dir if identities_dir is not None else (pki.directory if with_pki else None)
    )
    async with trio.open_nursery() as nursery:
        _host, backend_port = await nursery.start(
            functools.partial(
                backend_stub.serve,
                backend_stub.StubConfig(),
                host="127.0.0.1",
                port=0,
                recorder=observations.record,
            )
        )
        template = demo_template(
            strict_port=8443,
            passthrough_port=9443,
            backend_host="127.0.0.1",
            backend_port=backend_port,
        )
        if enable_http2:
            template["resources"][0]["properties"]["enableHttp2"] = True
        parameters = {
            "certData": pki.server_pfx,
            "certPassword": pki.server_pfx_password,
            "trustedClientCaData": pki.trusted_client_ca_pem,
        }
        gateway = Gateway.from_config(template, parameters, listen={8443: 0, 9443: 0})
        await nursery.start(gateway.serve)
        dashboard = Dashboard(
            gateway,
            identities=load_identities(identities),
            observations=observations,
            port=0,
            try_path=try_path,
        )
        await nursery.start(dashboard.serve)
        yield Running(dashboard, gateway, pki)
        nursery.cancel_scope.cancel()
