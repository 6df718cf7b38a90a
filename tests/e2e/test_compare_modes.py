"""``--compare-modes``: each mTLS listener of the user's template also served in the other mode,
by ``run`` (real process, real TLS) and by ``verify`` (with the old-API note)."""

from __future__ import annotations

import base64
import copy
import functools
import http.client
import json
import re
import ssl
from contextlib import closing
from pathlib import Path
from typing import Any

import trio

import backend_stub
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.cli.verify_matrix import ClientMaterial, run_matrix
from emulator.loading import load_config
from emulator.model import BackendAddress
from emulator.model.mode_twins import with_mode_twins
from emulator.pki.demo import (
    CLIENT_EXPIRED_CERT,
    CLIENT_EXPIRED_KEY,
    SERVER_ROOT_CA,
    DemoPki,
)
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.processes import ready_listeners, started

EXAMPLE = Path(__file__).parents[2] / "examples" / "mtls_api" / "gateway.json"
READY_LAST_TWIN = re.compile(rf"^ready: {PASSTHROUGH_LISTENER}-as-strict \(Strict\) ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _get(port: int, pki_dir: Path) -> int:
    ctx = ssl.create_default_context(cafile=pki_dir / SERVER_ROOT_CA)
    ctx.load_cert_chain(pki_dir / CLIENT_EXPIRED_CERT, pki_dir / CLIENT_EXPIRED_KEY)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    with closing(conn):
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status


def test_run_serves_each_listener_in_both_modes(demo_pki: DemoPki, tmp_path: Path) -> None:
    template = tmp_path / "gateway.json"
    template.write_text(
        json.dumps(
            demo_template(
                strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
            )
        )
    )
    args = [
        "run",
        "--template-file",
        str(template),
        "--parameters",
        f"certData={_b64(demo_pki.server_pfx)}",
        f"certPassword={demo_pki.server_pfx_password}",
        f"trustedClientCaData={_b64(demo_pki.trusted_client_ca_pem)}",
        "--listen",
        "8443=0",
        "--listen",
        "9443=0",
        "--compare-modes",
        "--pki",
        str(demo_pki.directory),
    ]
    with started(args, cwd=tmp_path) as process:
        process.wait_for_stdout(READY_LAST_TWIN)
        ready = ready_listeners(process.stdout.splitlines())
        assert {name: r.mode for name, r in ready.items()} == {
            STRICT_LISTENER: "Strict",
            PASSTHROUGH_LISTENER: "Passthrough",
            f"{STRICT_LISTENER}-as-passthrough": "Passthrough",
            f"{PASSTHROUGH_LISTENER}-as-strict": "Strict",
        }
        assert f"is the Strict twin of '{PASSTHROUGH_LISTENER}'" in process.stderr
        # An expired client: refused by both Strict listeners, forwarded by both Passthrough
        # ones (to a backend that is down, hence 502: the gateway did let it through).
        statuses = {name: _get(r.port, demo_pki.directory) for name, r in ready.items()}
    assert statuses == {
        STRICT_LISTENER: 400,
        f"{PASSTHROUGH_LISTENER}-as-strict": 400,
        PASSTHROUGH_LISTENER: 502,
        f"{STRICT_LISTENER}-as-passthrough": 502,
    }


def _old_api_template() -> dict[str, Any]:
    """The example with an API version before Passthrough existed: both profiles Strict."""
    document: dict[str, Any] = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    resource = document["resources"][0]
    resource["apiVersion"] = "2023-09-01"
    profiles = resource["properties"]["sslProfiles"]
    profiles[1]["properties"] = copy.deepcopy(profiles[0]["properties"])
    return document


def test_twin_of_a_strict_listener_on_an_old_api_says_azure_would_refuse_it(
    pki: PkiBundle, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(_old_api_template()))
    twins = with_mode_twins(load_config(path, template_parameters(pki)), strict_trust=None)
    assert set(twins.twin_of) == {
        "strict-listener-as-passthrough",
        "passthrough-listener-as-passthrough",
    }
    assert len(twins.notes) == 2
    assert all("API version 2023-09-01 predates 2025-03-01" in note for note in twins.notes)
    assert len(set(twins.ports)) == 2
    assert not set(twins.ports) & {443, 444}


async def test_verify_compares_both_modes_on_the_template(pki: PkiBundle, tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(_old_api_template()))
    config = load_config(path, template_parameters(pki))
    async with trio.open_nursery() as nursery:
        _host, port = await nursery.start(
            functools.partial(
                backend_stub.serve, backend_stub.StubConfig(), host="127.0.0.1", port=0
            )
        )
        report = await run_matrix(
            config,
            ClientMaterial(compare_modes=True),
            backends={"orders-api": (BackendAddress("127.0.0.1", port),)},
            scenarios=["valid", "expired"],
        )
        nursery.cancel_scope.cancel()
    cells = {(c.listener, c.scenario): c for c in report.cells}
    assert cells[("strict-listener", "expired")].outcome == "gateway 400"
    twin = cells[("strict-listener-as-passthrough", "expired")]
    assert twin.outcome == "backend 200"
    assert twin.verification == "PASSTHROUGH"
    assert twin.mode == "Passthrough (twin)"
    assert twin.twin_of == "strict-listener"
    assert any("predates 2025-03-01" in note for note in report.notes)
