"""The echo backend over real TCP on 127.0.0.1: what it reports, how it enforces, how it runs.

The certificates are the suite's PKI (``tests/helpers/pki.py``), the ones the gateway tests
forward: a root, an intermediate, leaves that are valid, expired, not yet valid, or from an
unrelated root.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from backend_stub import (
    IDLE_TIMEOUT_S,
    MAX_HEADER_BYTES,
    SERVER_NAME,
    CertificateParseError,
    RecordedRequest,
    StubConfig,
    StubConfigError,
    load_trust_ca,
    parse_forwarded_certificate,
    serve,
)
from emulator.pki import IssuedCert
from tests.helpers.pki import PkiBundle

# --------------------------------------------------------------------------- test PKI


def _pem(issued: IssuedCert) -> str:
    return issued.cert_pem.decode("ascii")


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _expected_serial(certificate: x509.Certificate) -> str:
    digits = f"{certificate.serial_number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


# --------------------------------------------------------------------------- clients

Response = tuple[int, dict[str, str], bytes]


async def start_stub(
    nursery: trio.Nursery,
    config: StubConfig | None = None,
    *,
    recorder: Callable[[RecordedRequest], None] | None = None,
) -> int:
    _, port = await nursery.start(
        lambda task_status: serve(
            config or StubConfig(), recorder=recorder, task_status=task_status
        )
    )
    assert isinstance(port, int)
    return port


async def http_get(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
) -> Response:
    """One request with stdlib ``http.client``, run in a thread (it blocks)."""

    def run() -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    return await trio.to_thread.run_sync(run)


async def http_json(
    port: int, target: str, *, headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, dict[str, object]]:
    status, _, body = await http_get(port, target, headers=headers)
    document = json.loads(body)
    assert isinstance(document, dict)
    return status, document


class RawClient:
    """A byte-exact HTTP/1.1 client on one TCP connection, for keep-alive and chunked tests."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        with trio.fail_after(10):
            data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    async def response(self, *, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        raw_head, _, _ = bytes(self.buffer).partition(b"\r\n\r\n")
        del self.buffer[: len(raw_head) + 4]
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return int(status_line.split()[1]), headers, body


# --------------------------------------------------------------------------- echo


async def test_echo_reports_method_path_query_and_headers_with_duplicates(
    nursery: trio.Nursery,
) -> None:
    port = await start_stub(nursery)
    status, headers, body = await http_get(
        port,
        "/api/items?a=1&b=two",
        method="PUT",
        headers=[("X-Dup", "first"), ("X-Other", "o"), ("x-dup", "second")],
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["server"] == SERVER_NAME
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    assert document["method"] == "PUT"
    assert document["path"] == "/api/items"
    assert document["query"] == "a=1&b=two"
    assert document["target"] == "/api/items?a=1&b=two"
    assert document["http_version"] == "1.1"
    assert document["headers"] == [
        ["Host", f"127.0.0.1:{port}"],
        ["X-Dup", "first"],
        ["X-Other", "o"],
        ["x-dup", "second"],
    ]
    assert document["client"]["host"] == "127.0.0.1"
    assert document["body_bytes"] == 0
    assert document["client_certificate"] is None
    assert document["client_certificate_error"] is None
    assert document["authorization"] is None


async def test_keep_alive_serves_two_requests_on_one_connection(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        client = RawClient(stream)
        await stream.send_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        first_status, _, first_body = await client.response()
        await stream.send_all(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        second_status, _, second_body = await client.response()
    first, second = json.loads(first_body), json.loads(second_body)
    assert (first_status, second_status) == (200, 200)
    assert (first["path"], second["path"]) == ("/first", "/second")
    assert first["client"]["port"] == second["client"]["port"]


async def test_chunked_request_body_is_counted(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        client = RawClient(stream)
        await stream.send_all(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        # The second chunk arrives later: the stub must keep counting, not answer early.
        await trio.sleep(0.05)
        await stream.send_all(b"6\r\n world\r\n0\r\n\r\n")
        status, _, body = await client.response()
    assert status == 200
    assert json.loads(body)["body_bytes"] == 11


async def test_head_gets_headers_only_and_connection_stays_usable(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        client = RawClient(stream)
        await stream.send_all(b"HEAD /thing HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = await client.response(head=True)
        await stream.send_all(b"GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n")
        next_status, _, next_body = await client.response()
    assert status == 200
    assert int(headers["content-length"]) > 0
    # Had the stub sent a body after HEAD, it would now sit in front of the next response.
    assert next_status == 200
    assert json.loads(next_body)["path"] == "/after-head"


async def test_status_path_204_answers_without_body(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    status, headers, body = await http_get(port, "/status/204")
    assert status == 204
    assert body == b""
    assert "content-length" not in headers


async def test_status_path_500_answers_with_the_echo(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    status, document = await http_json(port, "/status/500")
    assert status == 500
    assert document["path"] == "/status/500"


async def test_status_path_rejects_a_non_status(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    status, document = await http_json(port, "/status/99")
    assert status == 400
    assert "200-599" in str(document["error"])


async def test_delay_path_waits_before_answering(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    started = trio.current_time()
    status, document = await http_json(port, "/delay/0.3")
    assert status == 200
    assert trio.current_time() - started >= 0.3
    assert document["path"] == "/delay/0.3"


async def test_bytes_path_streams_the_requested_size(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    size = 3 * 1024 * 1024 + 7

    def download() -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", f"/bytes/{size}")
            response = connection.getresponse()
            pieces = []
            while piece := response.read(256 * 1024):
                pieces.append(piece)
            data = b"".join(pieces)
            return response.status, response.getheader("Content-Type", ""), data
        finally:
            connection.close()

    status, content_type, data = await trio.to_thread.run_sync(download)
    assert status == 200
    assert content_type == "application/octet-stream"
    assert len(data) == size
    pattern = b"0123456789abcdef"
    assert data == (pattern * (size // len(pattern) + 1))[:size]


async def test_malformed_request_gets_400_and_server_keeps_serving(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"THIS IS NOT HTTP\r\n\r\n")
        status, _, body = await RawClient(stream).response()
    assert status == 400
    assert "bad request" in json.loads(body)["error"]
    assert (await http_get(port, "/still-alive"))[0] == 200


async def test_oversized_headers_get_431(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        huge = b"X-Big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n"
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n" + huge + b"\r\n")
        status, _, _ = await RawClient(stream).response()
    assert status == 431


async def test_silent_connection_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    port = await start_stub(nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        started = trio.current_time()
        assert await stream.receive_some(1024) == b""
    assert trio.current_time() - started >= IDLE_TIMEOUT_S


async def test_recorder_receives_each_request(nursery: trio.Nursery, pki: PkiBundle) -> None:
    recorded: list[RecordedRequest] = []
    port = await start_stub(nursery, recorder=recorded.append)
    cert_value = urllib.parse.quote(_pem(pki.client), safe="")
    await http_get(port, "/one?x=1", headers=[("X-Client-Cert", cert_value)])
    await http_get(port, "/two", method="DELETE")
    assert [(r.method, r.path, r.query) for r in recorded] == [
        ("GET", "/one", "x=1"),
        ("DELETE", "/two", ""),
    ]
    first = recorded[0]
    assert first.target == "/one?x=1"
    assert first.header_values("x-client-cert") == (cert_value,)
    assert first.client[0] == "127.0.0.1"
    assert first.body_bytes == 0
    assert first.certificate is not None
    assert first.certificate.certificate == pki.client.cert
    assert first.certificate_error is None
    assert recorded[1].certificate is None


# --------------------------------------------------------------------------- forwarded cert


def _forwarded_formats(issued: IssuedCert) -> dict[str, str]:
    return {
        # Azure's {var_client_certificate}: URL-encoded PEM.
        "url-encoded-pem": urllib.parse.quote(_pem(issued), safe=""),
        "form-encoded-pem": urllib.parse.quote_plus(_pem(issued), safe=""),
        "pem-newlines-as-spaces": _pem(issued).replace("\n", " "),
        "base64-der": base64.b64encode(_der(issued.cert)).decode("ascii"),
    }


@pytest.mark.parametrize(
    "form", ["url-encoded-pem", "form-encoded-pem", "pem-newlines-as-spaces", "base64-der"]
)
async def test_forwarded_certificate_is_parsed_in_each_format(
    nursery: trio.Nursery, pki: PkiBundle, form: str
) -> None:
    port = await start_stub(nursery)
    value = _forwarded_formats(pki.client)[form]
    status, document = await http_json(port, "/", headers=[("X-Client-Cert", value)])
    assert status == 200
    assert document["client_certificate_error"] is None
    leaf = pki.client.cert
    assert document["client_certificate"] == {
        "subject": "CN=appgw-test-client",
        "issuer": "CN=appgw-emulator Test Client CA,O=appgw-emulator",
        "serial": _expected_serial(leaf),
        "not_before": leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha1_fingerprint": leaf.fingerprint(hashes.SHA1()).hex(),
        "header": "X-Client-Cert",
    }


def test_parser_accepts_raw_pem_with_real_newlines(pki: PkiBundle) -> None:
    # Cannot travel in an HTTP/1.1 header, but a library user may hand it over directly.
    parsed = parse_forwarded_certificate(_pem(pki.client).replace("\n", "\r\n"))
    assert parsed.certificate == pki.client.cert
    assert parsed.serial == _expected_serial(pki.client.cert)


def test_parser_takes_the_first_certificate_of_a_chain(pki: PkiBundle) -> None:
    parsed = parse_forwarded_certificate(
        urllib.parse.quote(pki.client.chain_pem.decode("ascii"), safe="")
    )
    assert parsed.subject == "CN=appgw-test-client"


@pytest.mark.parametrize(
    ("value", "reason_fragment"),
    [
        ("   ", "present but empty"),
        ("not a certificate!", "neither PEM nor base64 DER"),
        ("-----BEGIN CERTIFICATE-----%0AMIIB", "never ends"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "PRIVATE KEY"),
        ("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----", "base64"),
        (base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "does not decode as X.509"),
    ],
)
def test_parser_explains_why_a_value_is_not_a_certificate(value: str, reason_fragment: str) -> None:
    with pytest.raises(
        CertificateParseError, match=r"^header value is not a certificate: "
    ) as info:
        parse_forwarded_certificate(value)
    assert reason_fragment in info.value.reason


async def test_garbage_certificate_header_is_reported_not_fatal(nursery: trio.Nursery) -> None:
    port = await start_stub(nursery)
    status, document = await http_json(port, "/", headers=[("X-Client-Cert", "%%garbage%%")])
    assert status == 200
    assert document["client_certificate"] is None
    assert str(document["client_certificate_error"]).startswith(
        "header value is not a certificate: "
    )


async def test_custom_certificate_header_name_is_honoured(
    nursery: trio.Nursery, pki: PkiBundle
) -> None:
    port = await start_stub(nursery, StubConfig(cert_header="X-ARR-ClientCert"))
    value = base64.b64encode(_der(pki.client.cert)).decode("ascii")
    _, document = await http_json(port, "/", headers=[("x-arr-clientcert", value)])
    certificate = document["client_certificate"]
    assert isinstance(certificate, dict)
    assert certificate["header"] == "X-ARR-ClientCert"


# --------------------------------------------------------------------------- --trust-ca


@pytest.fixture
def trust_file(tmp_path: Path, pki: PkiBundle) -> Path:
    path = tmp_path / "trusted.pem"
    path.write_text(pki.trusted_client_ca_pem.decode("ascii"))
    return path


async def _enforcing_stub(nursery: trio.Nursery, trust_file: Path) -> int:
    return await start_stub(nursery, StubConfig(trust_ca=load_trust_ca(trust_file)))


async def _authorization(port: int, issued: IssuedCert | None) -> tuple[int, dict[str, object]]:
    headers = (
        [] if issued is None else [("X-Client-Cert", urllib.parse.quote(_pem(issued), safe=""))]
    )
    status, document = await http_json(port, "/secure", headers=headers)
    authorization = document["authorization"]
    assert isinstance(authorization, dict)
    return status, authorization


async def test_trust_ca_allows_a_leaf_from_the_trusted_root(
    nursery: trio.Nursery, pki: PkiBundle, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    by_root = pki.client_root.issue_client("appgw-test-by-root")
    status, authorization = await _authorization(port, by_root)
    assert status == 200
    assert authorization["allowed"] is True


async def test_trust_ca_allows_a_leaf_through_an_intermediate_in_the_trust_file(
    nursery: trio.Nursery, pki: PkiBundle, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, authorization = await _authorization(port, pki.client)
    assert status == 200
    assert "appgw-emulator Test Client CA" in str(authorization["reason"])


async def test_trust_ca_rejects_an_expired_leaf_naming_the_date(
    nursery: trio.Nursery, pki: PkiBundle, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, authorization = await _authorization(port, pki.expired)
    assert status == 403
    assert authorization["allowed"] is False
    expiry = pki.expired.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert authorization["reason"] == f"client certificate expired on {expiry}"


async def test_trust_ca_rejects_a_leaf_not_yet_valid(
    nursery: trio.Nursery, pki: PkiBundle, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, authorization = await _authorization(port, pki.not_yet_valid)
    assert status == 403
    assert "not yet valid" in str(authorization["reason"])


async def test_trust_ca_rejects_a_leaf_from_an_unrelated_root(
    nursery: trio.Nursery, pki: PkiBundle, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, authorization = await _authorization(port, pki.unrelated)
    assert status == 403
    assert "not issued by a trusted CA" in str(authorization["reason"])
    assert "Unrelated Root CA" in str(authorization["reason"])


async def test_trust_ca_rejects_a_request_without_certificate(
    nursery: trio.Nursery, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, authorization = await _authorization(port, None)
    assert status == 403
    assert authorization == {
        "allowed": False,
        "reason": "no client certificate was forwarded in X-Client-Cert",
    }


async def test_trust_ca_rejects_an_unparsable_header_with_the_parse_reason(
    nursery: trio.Nursery, trust_file: Path
) -> None:
    port = await _enforcing_stub(nursery, trust_file)
    status, document = await http_json(port, "/", headers=[("X-Client-Cert", "nonsense!")])
    assert status == 403
    assert document["authorization"] == {
        "allowed": False,
        "reason": document["client_certificate_error"],
    }


def test_load_trust_ca_reads_der(tmp_path: Path, pki: PkiBundle) -> None:
    path = tmp_path / "root.der"
    path.write_bytes(_der(pki.client_root.cert))
    assert load_trust_ca(path) == (pki.client_root.cert,)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"hello, I am text", "not a certificate file"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a certificate"),
    ],
)
def test_load_trust_ca_refuses_what_is_not_a_certificate(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "trust.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StubConfigError, match=message):
        load_trust_ca(path)


def test_load_trust_ca_refuses_a_file_without_a_root(tmp_path: Path, pki: PkiBundle) -> None:
    path = tmp_path / "intermediate.pem"
    path.write_text(pki.client_ca.cert_pem.decode("ascii"))
    with pytest.raises(StubConfigError, match="no self-signed"):
        load_trust_ca(path)


# --------------------------------------------------------------------------- CLI


def _stub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "backend_stub", *args]


def test_cli_prints_ready_line_serves_and_exits_0_on_sigterm() -> None:
    process = subprocess.Popen(
        _stub_command("--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("backend_stub listening on http://127.0.0.1:")
        port = int(ready.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/from-cli")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["path"] == "/from-cli"
        connection.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert '"GET /from-cli HTTP/1.1" 200' in stderr


def test_cli_exits_1_with_one_line_when_the_port_is_busy() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            _stub_command("--port", str(port)), capture_output=True, text=True, timeout=10
        )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"backend_stub: error: cannot listen on 127.0.0.1:{port}")


def test_cli_exits_1_with_one_line_when_trust_ca_is_unreadable(tmp_path: Path) -> None:
    result = subprocess.run(
        _stub_command("--trust-ca", str(tmp_path / "missing.pem")),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"backend_stub: error: cannot read trusted CA file {tmp_path / 'missing.pem'}:"
        " No such file or directory"
    ]
