"""The dashboard's JSON API over real sockets (issue #11).

A real demo PKI (``certs init``), the real stub backend, a real gateway running the ``up``
template, and the dashboard in front of them, all on 127.0.0.1 with OS-chosen ports. The API is
called with the stdlib ``http.client`` (in a worker thread, so the trio loop keeps serving), and
gateway traffic is real mutual TLS from the stdlib ``ssl`` module.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    load_pem_private_key,
    pkcs7,
    pkcs12,
)

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.dashboard import server as dashboard_server
from emulator.pki.demo import (
    CLIENT_CERT,
    CLIENT_EXPIRED_CERT,
    CLIENT_KEY,
    SERVER_PFX,
    TRUSTED_CLIENT_CA_CHAIN,
    DemoPki,
)
from tests.helpers.dashboard import (
    API_TIMEOUT_S,
    READY_DASHBOARD,
    api,
    call_blocking,
    demo_https_get,
    running,
)
from tests.helpers.processes import started

# -- /api/config -----------------------------------------------------------------------------------


async def test_config_shows_both_listeners_with_their_mode_and_local_port(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki) as run:
        answer = await api(run.port, "GET", "/api/config")
    assert answer.status == 200
    config = answer.json()
    listeners = {entry["name"]: entry for entry in config["gateway"]["listeners"]}
    assert listeners[STRICT_LISTENER]["mode"] == "Strict"
    assert listeners[PASSTHROUGH_LISTENER]["mode"] == "Passthrough"
    assert listeners[STRICT_LISTENER]["localPort"] == run.gateway.ports[STRICT_LISTENER]
    assert listeners[STRICT_LISTENER]["verifyClientCertIssuerDN"] is False
    assert listeners[STRICT_LISTENER]["verifyClientRevocation"] == "None"
    assert listeners[STRICT_LISTENER]["sslProfile"]["trustedClientCaSubjects"]
    assert config["try"]["targets"] == {
        "Strict": STRICT_LISTENER,
        "Passthrough": PASSTHROUGH_LISTENER,
    }
    keys = [identity["key"] for identity in config["try"]["identities"]]
    assert keys == ["valid", "expired", "not-yet-valid", "unrelated-ca", "self-signed", "none"]
    assert config["try"]["unavailable"] is None


async def test_config_without_a_pki_offers_no_certificate_and_says_how_to_create_one(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki, with_pki=False) as run:
        config = (await api(run.port, "GET", "/api/config")).json()
        refused = await api(run.port, "POST", "/api/try", {"identity": "expired"})
    assert [identity["key"] for identity in config["try"]["identities"]] == ["none"]
    assert "appgw-emulator certs init certs" in config["try"]["unavailable"]
    assert "--pki certs" in config["try"]["unavailable"]
    assert refused.status == 400
    assert "certs init" in refused.json()["error"]


# -- /api/requests ---------------------------------------------------------------------------------


async def test_requests_appear_after_traffic_with_certificate_and_backend_view(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki) as run:
        strict, passthrough = (
            run.gateway.ports[n] for n in (STRICT_LISTENER, PASSTHROUGH_LISTENER)
        )
        assert (await api(run.port, "GET", "/api/requests")).json()["requests"] == []
        no_cert = await trio.to_thread.run_sync(
            demo_https_get, strict, demo_pki.directory, None, None
        )
        with_cert = await trio.to_thread.run_sync(
            demo_https_get, passthrough, demo_pki.directory, CLIENT_CERT, CLIENT_KEY
        )
        with trio.fail_after(5):
            await run.gateway.wait_for_access(2)
        rows = (await api(run.port, "GET", "/api/requests")).json()["requests"]
    assert (no_cert, with_cert) == (400, 200)
    newest, oldest = rows
    assert oldest["listener"] == STRICT_LISTENER
    assert oldest["mode"] == "Strict"
    assert oldest["status"] == 400
    assert oldest["clientCertificate"] is None
    assert oldest["verification"] == "NONE"
    assert oldest["backend"]["reached"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", oldest["traceId"])
    assert newest["listener"] == PASSTHROUGH_LISTENER
    assert newest["verification"] == "PASSTHROUGH"
    assert newest["clientCertificate"]["subject"] == "CN=demo-client"
    assert newest["clientCertificate"]["validity"] == "valid"
    assert newest["clientCertificate"]["demoIdentity"] == "valid"
    assert newest["backend"]["reached"] is True
    assert newest["backend"]["observed"] is True
    received = dict(newest["backend"]["certHeaders"])
    assert received["X-Client-Cert-Verification"] == "PASSTHROUGH"
    assert received["X-Client-Cert-Subject"] == "CN=demo-client"


# -- /api/try --------------------------------------------------------------------------------------

#: identity → (Strict status, Strict verification prefix, Passthrough verification).
TRY_TABLE: Final = {
    "valid": (200, "SUCCESS", "PASSTHROUGH"),
    "expired": (400, "FAILED:certificate has expired", "PASSTHROUGH"),
    "not-yet-valid": (400, "FAILED:certificate is not yet valid", "PASSTHROUGH"),
    "unrelated-ca": (400, "FAILED:", "PASSTHROUGH"),
    "self-signed": (400, "FAILED:", "PASSTHROUGH"),
    "none": (400, "NONE", "NONE"),
}


async def test_try_expired_gets_strict_400_and_passthrough_200_with_passthrough(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/try", {"identity": "expired"})
        rows = (await api(run.port, "GET", "/api/requests")).json()["requests"]
    assert answer.status == 200
    strict, passthrough = answer.json()["results"]
    assert (strict["mode"], strict["status"], strict["backendReached"]) == ("Strict", 400, False)
    assert strict["page"] == "400 The SSL certificate error"
    assert "expired" in strict["explanation"]
    assert (passthrough["mode"], passthrough["status"]) == ("Passthrough", 200)
    assert passthrough["verification"] == "PASSTHROUGH"
    assert passthrough["backendReached"] is True
    assert dict(passthrough["certHeaders"])["X-Client-Cert-Verification"] == "PASSTHROUGH"
    assert passthrough["forwardedCertificate"]["subject"] == "CN=demo-client-expired"
    # Both requests went through the gateway for real: they are in its log with the same ids.
    assert {row["traceId"] for row in rows} == {strict["traceId"], passthrough["traceId"]}


@pytest.mark.parametrize("identity", list(TRY_TABLE))
async def test_try_sends_each_identity_to_both_listeners(demo_pki: DemoPki, identity: str) -> None:
    strict_status, strict_verify, passthrough_verify = TRY_TABLE[identity]
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/try", {"identity": identity})
    strict, passthrough = answer.json()["results"]
    assert strict["status"] == strict_status
    assert strict["verification"].startswith(strict_verify)
    assert strict["backendReached"] is (strict_status == 200)
    assert passthrough["status"] == 200
    assert passthrough["verification"] == passthrough_verify


async def test_try_unknown_identity_is_a_400_naming_the_choices(demo_pki: DemoPki) -> None:
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/try", {"identity": "admin"})
    assert answer.status == 400
    assert "valid, expired, not-yet-valid" in answer.json()["error"]


# -- /api/check-ca ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_check_ca_accepts_the_chain_and_says_an_expired_client_fails_strict(
    demo_pki: DemoPki,
) -> None:
    chain = (demo_pki.directory / TRUSTED_CLIENT_CA_CHAIN).read_bytes()
    expired = (demo_pki.directory / CLIENT_EXPIRED_CERT).read_bytes()
    async with running(demo_pki) as run:
        answer = await api(
            run.port,
            "POST",
            "/api/check-ca",
            {"file": _b64(chain), "name": "chain.pem", "clientCert": _b64(expired)},
        )
    assert answer.status == 200
    report = answer.json()["report"]
    assert report["valid"] is True
    assert report["file"] == "chain.pem"
    assert len(report["certificates"]) == 2
    assert report["client"]["passesStrict"] is False
    assert report["client"]["sslClientVerify"] == "FAILED:certificate has expired"


async def test_check_ca_rejects_a_leaf_and_asks_for_the_chain(demo_pki: DemoPki) -> None:
    leaf = (demo_pki.directory / CLIENT_CERT).read_bytes()
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/check-ca", {"file": _b64(leaf)})
    report = answer.json()["report"]
    assert report["valid"] is False
    assert report["code"]
    assert "CA" in report["advice"]


async def test_check_ca_opens_a_pfx_with_its_password_and_never_echoes_key_or_password(
    demo_pki: DemoPki,
) -> None:
    pfx = (demo_pki.directory / SERVER_PFX).read_bytes()
    password = demo_pki.server_pfx_password
    async with running(demo_pki) as run:
        opened = await api(
            run.port, "POST", "/api/check-ca", {"file": _b64(pfx), "password": password}
        )
        wrong = await api(
            run.port, "POST", "/api/check-ca", {"file": _b64(pfx), "password": "not-it"}
        )
    document = opened.json()
    assert document["report"]["valid"] is False
    assert document["pfx"]["opened"] is True
    assert document["pfx"]["hasPrivateKey"] is True
    assert "private key" in document["pfx"]["message"]
    assert wrong.json()["pfx"] == {
        "opened": False,
        "message": "The password does not open this PFX.",
    }
    for body in (opened.body, wrong.body):
        assert password.encode() not in body
        assert b"PRIVATE KEY" not in body


def _chain_certs(demo_pki: DemoPki) -> list[x509.Certificate]:
    pem = (demo_pki.directory / TRUSTED_CLIENT_CA_CHAIN).read_bytes()
    return x509.load_pem_x509_certificates(pem)


@pytest.mark.parametrize("encoding", [Encoding.PEM, Encoding.DER], ids=["pem", "der"])
async def test_check_ca_reads_a_p7b_and_gives_the_verdict_on_its_cas(
    demo_pki: DemoPki, encoding: Encoding
) -> None:
    p7b = pkcs7.serialize_certificates(_chain_certs(demo_pki), encoding)
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/check-ca", {"file": _b64(p7b)})
    document = answer.json()
    report = document["report"]
    assert report["valid"] is False
    assert report["hasPrivateKey"] is False
    assert "bundles a private key" not in json.dumps(document)
    assert report["contents"]["valid"] is True
    assert document["pfx"] is None


async def test_check_ca_opens_a_keyless_pfx_and_never_claims_a_key(demo_pki: DemoPki) -> None:
    keyless = pkcs12.serialize_key_and_certificates(
        None, None, None, _chain_certs(demo_pki), BestAvailableEncryption(b"ca-pw")
    )
    async with running(demo_pki) as run:
        locked = await api(run.port, "POST", "/api/check-ca", {"file": _b64(keyless)})
        opened = await api(
            run.port, "POST", "/api/check-ca", {"file": _b64(keyless), "password": "ca-pw"}
        )
    locked_doc, opened_doc = locked.json(), opened.json()
    assert locked_doc["report"]["hasPrivateKey"] is None
    assert locked_doc["pfx"]["opened"] is False
    assert "password" in locked_doc["pfx"]["message"]
    assert opened_doc["pfx"]["opened"] is True
    assert opened_doc["pfx"]["hasPrivateKey"] is False
    assert "certificates only, no private key" in opened_doc["pfx"]["message"]
    assert opened_doc["pfx"]["caCertificates"]["valid"] is True
    for body in (locked.body, opened.body):
        assert b"bundles a private key" not in body
        assert b"ca-pw" not in body


async def test_check_ca_reads_a_client_pfx_with_the_password(demo_pki: DemoPki) -> None:
    chain = (demo_pki.directory / TRUSTED_CLIENT_CA_CHAIN).read_bytes()
    directory = demo_pki.directory
    client = x509.load_pem_x509_certificate((directory / CLIENT_CERT).read_bytes())
    key = load_pem_private_key((directory / CLIENT_KEY).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    client_pfx = pkcs12.serialize_key_and_certificates(
        b"client", key, client, None, BestAvailableEncryption(b"client-pw")
    )
    body = {"file": _b64(chain), "clientCert": _b64(client_pfx), "password": "client-pw"}
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/check-ca", body)
    report = answer.json()["report"]
    assert report["valid"] is True
    assert report["client"]["passesStrict"] is True
    assert b"client-pw" not in answer.body
    assert b"PRIVATE KEY" not in answer.body


async def test_check_ca_refuses_a_body_that_is_not_base64(demo_pki: DemoPki) -> None:
    async with running(demo_pki) as run:
        answer = await api(run.port, "POST", "/api/check-ca", {"file": "not base64!"})
    assert answer.status == 400
    assert "base64" in answer.json()["error"]


# -- Host / Origin ---------------------------------------------------------------------------------


def _bad_requests(port: int) -> Iterator[tuple[str, str, str, dict[str, str], object, int]]:
    try_body = {"identity": "expired"}
    yield "rebinding GET", "GET", "/api/requests", {"Host": f"evil.example:{port}"}, None, 403
    yield "rebinding page", "GET", "/", {"Host": "attacker.test"}, None, 403
    yield "rebinding POST", "POST", "/api/try", {"Host": f"evil.example:{port}"}, try_body, 403
    yield (
        "foreign origin",
        "POST",
        "/api/try",
        {"Origin": "http://evil.example"},
        try_body,
        403,
    )
    yield "null origin", "POST", "/api/check-ca", {"Origin": "null"}, {"file": "AA=="}, 403
    yield (
        "other port",
        "POST",
        "/api/try",
        {"Origin": f"http://127.0.0.1:{port + 1}"},
        try_body,
        403,
    )
    yield (
        "cross-site fetch",
        "POST",
        "/api/try",
        {"Sec-Fetch-Site": "cross-site"},
        try_body,
        403,
    )
    yield "form post", "POST", "/api/try", {"Content-Type": "text/plain"}, try_body, 415
    yield "GET on try", "GET", "/api/try", {}, None, 405


async def test_host_and_origin_checks_refuse_rebinding_and_cross_site_requests(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki) as run:
        for name, method, path, headers, body, status in _bad_requests(run.port):
            answer = await api(run.port, method, path, body, headers=headers)
            assert answer.status == status, (name, answer.body)
            assert "error" in answer.json(), name
        # Nothing refused reached the gateway.
        assert len(run.gateway.access_log) == 0
        same_origin = await api(
            run.port,
            "POST",
            "/api/try",
            {"identity": "none"},
            headers={"Origin": f"http://127.0.0.1:{run.port}", "Sec-Fetch-Site": "same-origin"},
        )
        by_name = await api(
            run.port, "GET", "/api/config", headers={"Host": f"localhost:{run.port}"}
        )
    assert same_origin.status == 200
    assert by_name.status == 200


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=API_TIMEOUT_S) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


async def test_a_malformed_request_gets_400_and_the_dashboard_keeps_serving(
    demo_pki: DemoPki,
) -> None:
    async with running(demo_pki) as run:
        garbage = await trio.to_thread.run_sync(_raw_exchange, run.port, b"NOT HTTP AT ALL\r\n\r\n")
        head = await trio.to_thread.run_sync(
            _raw_exchange,
            run.port,
            b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        after = await api(run.port, "GET", "/api/config")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")  # a HEAD answer has no body
    assert after.status == 200


async def test_a_trickled_request_is_dropped_at_its_deadline(
    demo_pki: DemoPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #15: a byte every 0.25 s re-armed a per-read timeout, so this never ended.
    deadline_s = 1.0
    monkeypatch.setattr(dashboard_server, "IDLE_TIMEOUT_S", deadline_s)
    async with running(demo_pki) as run:
        stream = await trio.open_tcp_stream("127.0.0.1", run.port)
        await stream.send_all(b"GET /api/config HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        started = trio.current_time()
        closed = False
        with trio.move_on_after(10):
            while not closed:
                await trio.sleep(0.25)
                try:
                    await stream.send_all(b"a")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed = True
                    break
                with trio.move_on_after(0):
                    try:
                        closed = await stream.receive_some(1024) == b""
                    except trio.BrokenResourceError:
                        closed = True
        elapsed = trio.current_time() - started
        await stream.aclose()
        after = await api(run.port, "GET", "/api/config")
    assert closed
    assert elapsed < deadline_s + 3.0
    assert after.status == 200


async def test_page_is_served_with_a_csp_and_its_script_from_the_package(demo_pki: DemoPki) -> None:
    async with running(demo_pki) as run:
        page = await api(run.port, "GET", "/")
        script = await api(run.port, "GET", "/static/app.js")
        style = await api(run.port, "GET", "/static/app.css")
        missing = await api(run.port, "GET", "/static/../server.py")
    assert page.status == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert b'<script src="/static/app.js"' in page.body
    assert b"http://" not in page.body  # nothing from a CDN
    assert b"https://" not in page.body
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"textContent" in script.body
    assert b"innerHTML" not in script.body
    assert style.status == 200
    assert missing.status == 404


async def test_no_response_carries_key_material_or_the_pfx_password(demo_pki: DemoPki) -> None:
    directory = demo_pki.directory
    # The key files' names too: not even the path of a key is handed out.
    secrets = [demo_pki.server_pfx_password.encode(), b"PRIVATE KEY", b".key"]
    # The base64 body of each private key file, a line of it, must never appear either.
    for key_file in directory.glob("*.key"):
        secrets.append(key_file.read_bytes().splitlines()[1])
    key_and_cert = (directory / CLIENT_KEY).read_bytes() + (directory / CLIENT_CERT).read_bytes()
    async with running(demo_pki) as run:
        bodies = [(await api(run.port, "GET", path)).body for path in ("/", "/api/config")]
        for identity in TRY_TABLE:
            bodies.append((await api(run.port, "POST", "/api/try", {"identity": identity})).body)
        bodies.append((await api(run.port, "GET", "/api/requests?limit=1000")).body)
        for file, password in (
            (key_and_cert, None),
            ((directory / SERVER_PFX).read_bytes(), demo_pki.server_pfx_password),
        ):
            request: dict[str, str] = {"file": _b64(file)}
            if password:
                request["password"] = password
            bodies.append((await api(run.port, "POST", "/api/check-ca", request)).body)
    for body in bodies:
        for secret in secrets:
            assert secret not in body, secret


# -- the command line ------------------------------------------------------------------------------


def _run_args(pki: DemoPki, *extra: str) -> list[str]:
    template = pki.directory.parent / "up-template.json"
    template.write_text(
        json.dumps(
            demo_template(
                strict_port=8443,
                passthrough_port=9443,
                backend_host="127.0.0.1",
                backend_port=1,
            )
        )
    )
    return [
        "run",
        "--template-file",
        str(template),
        "--parameters",
        f"certData={_b64(pki.server_pfx)}",
        f"certPassword={pki.server_pfx_password}",
        f"trustedClientCaData={_b64(pki.trusted_client_ca_pem)}",
        "--listen",
        "8443=0",
        "--listen",
        "9443=0",
        *extra,
    ]


def test_run_with_dashboard_and_no_pki_prints_the_ready_line_and_explains_the_pki(
    demo_pki: DemoPki, tmp_path: Path
) -> None:
    with started(_run_args(demo_pki, "--dashboard", "0"), cwd=tmp_path) as process:
        url = process.wait_for_stdout(READY_DASHBOARD)["url"]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert url == f"http://127.0.0.1:{port}/"
        config = call_blocking(port, "GET", "/api/config").json()
        assert "--pki" in config["try"]["unavailable"]
        assert "warning: the dashboard listens" not in process.stderr


def test_run_with_pki_offers_its_identities_and_warns_about_a_public_bind(
    demo_pki: DemoPki, tmp_path: Path
) -> None:
    args = _run_args(
        demo_pki,
        "--dashboard",
        "0",
        "--pki",
        str(demo_pki.directory),
        "--dashboard-bind",
        "0.0.0.0",
    )
    with started(args, cwd=tmp_path) as process:
        url = process.wait_for_stdout(READY_DASHBOARD)["url"]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        config = call_blocking(port, "GET", "/api/config").json()
        process.wait_for_stderr(re.compile("not on loopback"))
    assert len(config["try"]["identities"]) == 6
    assert config["try"]["pkiDirectory"] == str(demo_pki.directory)


def test_up_keeps_running_when_the_default_dashboard_port_is_busy(tmp_path: Path) -> None:
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 8000))
            blocker.listen(1)
        except OSError:
            pass  # something else holds port 8000 already: just as busy
        args = ["up", "--strict-port", "0", "--passthrough-port", "0", "--backend-port", "0"]
        with started(args, cwd=tmp_path) as process:
            process.wait_for_stdout(re.compile(r"^Ctrl-C stops\.$"))
            process.wait_for_stderr(
                re.compile(r"^warning: dashboard not started: port 8000 is in use")
            )
            assert not any(READY_DASHBOARD.match(line) for line in process.stdout_lines)
    finally:
        blocker.close()


@pytest.mark.parametrize("enable_http2", [True, False], ids=["enableHttp2", "http11-only"])
async def test_try_can_send_over_http2(demo_pki: DemoPki, enable_http2: bool) -> None:
    async with running(demo_pki, enable_http2=enable_http2) as run:
        answer = await api(run.port, "POST", "/api/try", {"identity": "expired", "http2": True})
        wrong = await api(run.port, "POST", "/api/try", {"identity": "valid", "http2": "yes"})
        records = list(run.gateway.access_log)
    strict, passthrough = answer.json()["results"]
    version = "HTTP/2" if enable_http2 else "HTTP/1.1"
    assert (strict["status"], strict["httpVersion"]) == (400, version)
    assert strict["page"] == "400 The SSL certificate error"
    assert (passthrough["status"], passthrough["httpVersion"]) == (200, version)
    assert passthrough["verification"] == "PASSTHROUGH"
    assert {r.httpVersion for r in records} == {"HTTP/2.0" if enable_http2 else "HTTP/1.1"}
    assert wrong.status == 400
    assert b"'http2' must be true or false" in wrong.body
