"""HTTP/2 on the frontend (``enableHttp2: true``), end to end over real TLS sockets.

The Strict / Passthrough x client-certificate table of ``test_mtls_modes.py`` (there over
HTTP/1.1) holds stream by stream over h2, with two independent clients: python-hyper's h2
through httpx, and curl ``--http2``. Every stream of a connection carries the connection's
certificate variables; the access record and ``http_version`` say ``HTTP/2.0``; the backend
leg stays HTTP/1.1.
"""

from __future__ import annotations

import email.utils
import functools
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.pki import IssuedCert
from tests.helpers.h2client import h2_template
from tests.helpers.http import client_context
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.stack import (
    DEMO_LISTEN,
    Stack,
    start_stack,
    wait_for_access_records,
)

BAD_CERTS = ["expired", "not_yet_valid", "unrelated", "self_signed"]
NO_CERT_TITLE = b"<title>400 No required SSL certificate was sent</title>"
BAD_CERT_TITLE = b"<title>400 The SSL certificate error</title>"

#: (listener, certificate presented) → (status, X-Client-Cert-Verification the backend sees,
#: whether the certificate is forwarded). None for the verification: the backend is not
#: contacted. The same table as test_mtls_modes.py's tests over HTTP/1.1.
MODE_TABLE: dict[tuple[str, str | None], tuple[int, str | None, bool]] = {
    (STRICT_LISTENER, "client"): (200, "SUCCESS", True),
    (STRICT_LISTENER, None): (400, None, False),
    **{(STRICT_LISTENER, bad): (400, None, False) for bad in BAD_CERTS},
    (PASSTHROUGH_LISTENER, None): (200, "NONE", False),
    (PASSTHROUGH_LISTENER, "client"): (200, "PASSTHROUGH", True),
    **{(PASSTHROUGH_LISTENER, bad): (200, "PASSTHROUGH", True) for bad in BAD_CERTS},
}


@pytest.fixture
async def h2_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The demo gateway (Strict and Passthrough) with ``enableHttp2: true``."""
    return await start_stack(
        nursery,
        h2_template(),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen=DEMO_LISTEN,
        backend_pool="stub-backend",
    )


def _cert(pki: PkiBundle, which: str | None) -> IssuedCert | None:
    return None if which is None else getattr(pki, which)


def h2_get(
    port: int, ctx: ssl.SSLContext, paths: list[str], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """GET each path on one HTTP/2 connection (blocking; run it in a thread)."""
    with httpx.Client(http2=True, verify=ctx, timeout=20) as client:
        return [
            client.get(f"https://localhost:{port}{path}", headers=headers or {}) for path in paths
        ]


def echoed(reply: httpx.Response, name: str) -> list[str]:
    return [v for k, v in reply.json()["headers"] if k.lower() == name.lower()]


@pytest.mark.parametrize(("key", "expected"), MODE_TABLE.items(), ids=str)
async def test_mode_table_over_h2_with_httpx(
    h2_stack: Stack,
    pki: PkiBundle,
    key: tuple[str, str | None],
    expected: tuple[int, str | None, bool],
) -> None:
    listener, which = key
    status, verification, forwarded_cert = expected
    cert = _cert(pki, which)
    ctx = client_context(pki, cert)
    replies = await trio.to_thread.run_sync(
        h2_get, h2_stack.port(listener), ctx, ["/a", "/b", "/c"], {"X-Client-Cert": "forged"}
    )
    assert [r.http_version for r in replies] == ["HTTP/2"] * 3
    assert [r.status_code for r in replies] == [status] * 3
    if verification is None:
        title = NO_CERT_TITLE if which is None else BAD_CERT_TITLE
        assert all(title in r.content for r in replies)
        assert all(r.headers["server"] == "Microsoft-Azure-Application-Gateway/v2" for r in replies)
        # The page's head as over HTTP/1.1, in nginx's order, without HTTP/1's Connection.
        for reply in replies:
            names = [name.decode().lower() for name, _ in reply.headers.raw]
            assert names == ["server", "date", "content-type", "content-length"]
            assert email.utils.parsedate_to_datetime(reply.headers["date"]).tzinfo is not None
        assert h2_stack.recorded == []
    else:
        # Every stream carries the connection's certificate variables.
        for reply in replies:
            assert echoed(reply, "X-Client-Cert-Verification") == [verification]
            values = [unquote(v) for v in echoed(reply, "X-Client-Cert")]
            assert "forged" not in values
            if forwarded_cert:
                assert cert is not None
                assert values == [cert.cert.public_bytes(Encoding.PEM).decode()]
            else:
                assert values == []
        assert len(h2_stack.recorded) == 3
    await wait_for_access_records(h2_stack.gateway, 3)
    records = list(h2_stack.gateway.access_log)[-3:]
    assert [r.httpVersion for r in records] == ["HTTP/2.0"] * 3
    assert [r.httpStatus for r in records] == [status] * 3


def _curl(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def curl_files(pki: PkiBundle, tmp_path: Path) -> dict[str, Path]:
    ca = tmp_path / "server-ca.pem"
    ca.write_bytes(pki.server_ca)
    cert, key = pki.client_files(pki.client, "curl-client")
    return {"ca": ca, "cert": Path(cert), "key": Path(key)}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("listener", "with_cert", "status", "verification"),
    [
        (STRICT_LISTENER, True, 200, "SUCCESS"),
        (STRICT_LISTENER, False, 400, None),
        (PASSTHROUGH_LISTENER, False, 200, "NONE"),
        (PASSTHROUGH_LISTENER, True, 200, "PASSTHROUGH"),
    ],
)
async def test_mode_table_over_h2_with_curl(
    h2_stack: Stack,
    curl_files: dict[str, Path],
    listener: str,
    with_cert: bool,
    status: int,
    verification: str | None,
) -> None:
    port = h2_stack.port(listener)
    args = ["--http2", "--cacert", str(curl_files["ca"]), "-w", "\n%{http_version} %{http_code}"]
    if with_cert:
        args += ["--cert", str(curl_files["cert"]), "--key", str(curl_files["key"])]
    url = f"https://localhost:{port}/curl"
    done = await trio.to_thread.run_sync(_curl, [*args, url, url])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"\n2 {status}") == 2
    if verification is not None:
        seen = re.findall(
            r'"X-Client-Cert-Verification",\s*"([A-Z]+)"', done.stdout, flags=re.IGNORECASE
        )
        assert seen == [verification, verification]
        assert len(h2_stack.recorded) == 2
    else:
        assert h2_stack.recorded == []


async def test_without_enable_http2_alpn_stays_http11(demo_stack: Stack, pki: PkiBundle) -> None:
    ctx = client_context(pki, pki.client)
    replies = await trio.to_thread.run_sync(h2_get, demo_stack.port(STRICT_LISTENER), ctx, ["/"])
    assert replies[0].http_version == "HTTP/1.1"
    assert replies[0].status_code == 200


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is missing")
async def test_short_h2load_run_is_all_2xx(h2_stack: Stack) -> None:
    # h2load presents no client certificate: the Passthrough listener serves it. Bounded: 400
    # requests, 4 connections, 10 streams each at a time.
    port = h2_stack.port(PASSTHROUGH_LISTENER)
    done = await trio.to_thread.run_sync(
        functools.partial(
            subprocess.run,
            ["h2load", "-n", "400", "-c", "4", "-m", "10", f"https://127.0.0.1:{port}/load"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    assert "400 succeeded, 0 failed, 0 errored" in done.stdout, done.stdout
    assert "status codes: 400 2xx" in done.stdout, done.stdout
    assert "Application protocol: h2" in done.stdout
    assert len(h2_stack.recorded) == 400


async def test_rewrite_sees_http_version_2(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    template = h2_template()
    rule_set = template["resources"][0]["properties"]["rewriteRuleSets"][0]
    actions = rule_set["properties"]["rewriteRules"][0]["actionSet"]
    actions["requestHeaderConfigurations"].append(
        {"headerName": "X-Http-Version", "headerValue": "{var_http_version}"}
    )
    stack = await start_stack(
        nursery,
        template,
        template_parameters(pki),
        tmp_path=tmp_path,
        listen=DEMO_LISTEN,
        backend_pool="stub-backend",
    )
    ctx = client_context(pki, pki.client)
    (h2_reply,) = await trio.to_thread.run_sync(h2_get, stack.port(STRICT_LISTENER), ctx, ["/"])
    assert echoed(h2_reply, "X-Http-Version") == ["HTTP/2.0"]
    with httpx.Client(verify=ctx, timeout=20) as client:  # the same listener over HTTP/1.1
        h1_reply = await trio.to_thread.run_sync(
            client.get, f"https://localhost:{stack.port(STRICT_LISTENER)}/"
        )
    assert h1_reply.http_version == "HTTP/1.1"
    assert echoed(h1_reply, "X-Http-Version") == ["HTTP/1.1"]
