"""SSL policies on real sockets: the predefined policies' cipher suites and the backend leg.

The listener runs with an **RSA** server key: with an EC key every ECDHE-RSA suite fails for
want of a matching certificate, whatever the policy, and the test would prove nothing. The
client is ``openssl s_client`` (the tool a user checks a gateway with), the backend a stdlib
``ssl`` server on 127.0.0.1:0.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from emulator.arm.demo_template import demo_template
from emulator.errors import BackendConnectError
from emulator.pki import CA, IssuedCert
from emulator.runtime.backend import BackendTls, open_backend_connection
from tests.helpers.pki import PFX_PASSWORD, PkiBundle
from tests.helpers.stack import Stack, start_stack

REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def rsa_server_root() -> CA:
    return CA("e2e RSA Server Root", key_type="rsa")


@pytest.fixture(scope="module")
def rsa_server(rsa_server_root: CA) -> IssuedCert:
    return rsa_server_root.issue_server("localhost", "127.0.0.1", key_type="rsa")


def _with_policy(policy_name: str) -> dict[str, Any]:
    template = demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    gateway = template["resources"][0]["properties"]
    gateway["sslPolicy"] = {"policyType": "Predefined", "policyName": policy_name}
    # One policy for the whole gateway: the passthrough profile inherits it.
    gateway["sslProfiles"][1]["properties"].pop("sslPolicy")
    return template


async def _rsa_stack(
    nursery: trio.Nursery, tmp_path: Path, pki: PkiBundle, server: IssuedCert, policy: str
) -> Stack:
    parameters = [
        "certData=" + base64.b64encode(server.pfx(PFX_PASSWORD)).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(pki.trusted_client_ca_pem).decode(),
    ]
    return await start_stack(
        nursery,
        _with_policy(policy),
        parameters,
        tmp_path=tmp_path,
        listen={8443: 0, 9443: 0},
        backend_pool="stub-backend",
    )


def _s_client(port: int, root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    return subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(root),
            "-brief",
            "-ign_eof",
            *options,
        ],
        input=REQUEST,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.mark.parametrize(
    ("policy", "cipher", "accepted"),
    [
        ("AppGwSslPolicy20170401S", "ECDHE-RSA-AES256-SHA384", False),
        ("AppGwSslPolicy20170401S", "ECDHE-RSA-AES128-SHA256", False),
        ("AppGwSslPolicy20170401S", "ECDHE-RSA-AES256-SHA", True),
        ("AppGwSslPolicy20170401S", "AES128-GCM-SHA256", True),
        ("AppGwSslPolicy20220101", "ECDHE-RSA-AES256-SHA384", True),
        ("AppGwSslPolicy20220101", "ECDHE-RSA-AES256-SHA", False),
        ("AppGwSslPolicy20220101S", "ECDHE-RSA-AES256-SHA384", False),
        ("AppGwSslPolicy20220101S", "ECDHE-RSA-AES128-GCM-SHA256", True),
    ],
)
async def test_rsa_listener_offers_exactly_the_policy_table_suites(
    nursery: trio.Nursery,
    tmp_path: Path,
    pki: PkiBundle,
    rsa_server: IssuedCert,
    rsa_server_root: CA,
    policy: str,
    cipher: str,
    accepted: bool,
) -> None:
    stack = await _rsa_stack(nursery, tmp_path, pki, rsa_server, policy)
    root = tmp_path / "rsa-root.pem"
    root.write_bytes(rsa_server_root.cert_pem)

    result = await trio.to_thread.run_sync(
        _s_client, stack.port("passthrough-listener"), root, "-tls1_2", "-cipher", cipher
    )

    if accepted:
        assert result.returncode == 0, result.stderr
        assert f"Ciphersuite: {cipher}" in result.stderr
        assert result.stdout.startswith("HTTP/1.1 "), result.stdout
    else:
        assert result.returncode != 0
        assert "CONNECTION ESTABLISHED" not in result.stderr
        assert "handshake failure" in result.stderr or "alert" in result.stderr, result.stderr


# -- the backend leg --------------------------------------------------------------------------


async def _tls_backend(
    server: IssuedCert, *, max_version: ssl.TLSVersion, task_status: Any
) -> None:
    """A TLS server that completes handshakes and closes (the test looks at the handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = max_version
    if max_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0/1.1 otherwise
    server.configure_ssl_context(ctx)

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            return
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    ssl_listeners = [trio.SSLListener(lis, ctx) for lis in listeners]
    await trio.serve_listeners(handle, ssl_listeners, task_status=task_status)


_OLD_TLS_WARNING = "ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"


@pytest.mark.filterwarnings(_OLD_TLS_WARNING)
async def test_backend_connection_prefers_tls_1_3(nursery: trio.Nursery, pki: PkiBundle) -> None:
    listeners = await nursery.start(
        lambda task_status: _tls_backend(
            pki.server, max_version=ssl.TLSVersion.TLSv1_3, task_status=task_status
        )
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    tls = BackendTls(server_name="localhost", trusted_roots_pem=pki.server_root.cert_pem)

    conn = await open_backend_connection(("127.0.0.1", port), tls)

    assert conn.stream is not None
    assert conn.stream.version() == "TLSv1.3"
    conn.close()


@pytest.mark.filterwarnings(_OLD_TLS_WARNING)
@pytest.mark.parametrize(
    "backend_max", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["1.0", "1.1"]
)
async def test_backend_below_tls_1_2_is_refused_whatever_the_policy(
    nursery: trio.Nursery, pki: PkiBundle, backend_max: ssl.TLSVersion
) -> None:
    listeners = await nursery.start(
        lambda task_status: _tls_backend(
            pki.server, max_version=backend_max, task_status=task_status
        )
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    tls = BackendTls(server_name="localhost", trusted_roots_pem=pki.server_root.cert_pem)

    with pytest.raises(BackendConnectError, match="TLS handshake with backend"):
        await open_backend_connection(("127.0.0.1", port), tls)
