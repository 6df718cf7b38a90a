"""``appgw-emulator up`` and the command line's contract, driven as a real subprocess.

The README promises: ``up`` in an empty directory creates ``./certs/``, starts a Strict and a
Passthrough listener in front of the stub backend and prints four ``curl`` commands that show
the two modes. These tests run the command as a user would (``python -m emulator`` is the
installed ``appgw-emulator``), read the ports from its ready lines, and run the very ``curl``
commands it printed, so the printed text is proven true. They also pin the exit codes: 0 on
SIGTERM / Ctrl-C, 1 with one ``error:`` block (no traceback) for configuration and start-up
errors, 2 for usage errors.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.helpers.http import Reply, https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import (
    BAD_CERT_TEXT,
    NO_CERT_TEXT,
    READY_STUB,
    CliProcess,
    ReadyListener,
    ready_listeners,
    run_to_exit,
    sha1_fingerprint,
    started,
)

FREE_PORTS: Final = ("--strict-port", "0", "--passthrough-port", "0", "--backend-port", "0")
UP: Final = ("up", *FREE_PORTS)
LAST_UP_LINE: Final = re.compile(r"^Ctrl-C stops\.$")
PRINTED_CURL: Final = re.compile(r"^\s+(?P<command>curl .*?)\s+# (?P<outcome>.+)$")

STRICT: Final = "strict-listener"
PASSTHROUGH: Final = "passthrough-listener"

#: The files the README's demo PKI table documents (``up-gateway.json`` is ``up``'s, not the PKI's).
DEMO_PKI_FILES: Final = frozenset(
    {
        "trusted-client-ca-chain.pem",
        "trusted-client-ca-chain.b64",
        "root-ca.pem",
        "intermediate-ca.pem",
        "server.pfx",
        "server-pfx-password.txt",
        "server-root-ca.pem",
        "client.pem",
        "client.key",
        "client-chain.pem",
        *(
            f"client-{name}.{ext}"
            for name in ("expired", "not-yet-valid", "unrelated-ca", "self-signed")
            for ext in ("pem", "key")
        ),
        "deploymentParameters.json",
        "unrelated-root-ca.pem",
        # The issuing CA's key: the demo OCSP responder signs with it.
        "intermediate-ca.key",
        # The server root's key: `run --loose` issues development listener certificates.
        "server-root-ca.key",
    }
)
#: Seconds within which a signal must end ``up`` (it normally takes a fraction of a second).
SIGNAL_EXIT_S: Final = 5.0


@dataclass(frozen=True)
class PrintedCurl:
    argv: list[str]
    outcome: str


@dataclass(frozen=True)
class UpSession:
    """A running ``up`` and what it printed."""

    cwd: Path
    process: CliProcess
    backend_port: int
    listeners: dict[str, ReadyListener]
    curls: list[PrintedCurl]

    @property
    def certs(self) -> Path:
        return self.cwd / "certs"

    def curl_for(self, outcome_prefix: str) -> PrintedCurl:
        matches = [c for c in self.curls if c.outcome.startswith(outcome_prefix)]
        assert len(matches) == 1, (outcome_prefix, self.curls)
        return matches[0]


def _wait_up_ready(process: CliProcess, cwd: Path) -> UpSession:
    process.wait_for_stdout(LAST_UP_LINE)
    stub = process.wait_for_stdout(READY_STUB)
    curls = []
    for line in process.stdout_lines:
        match = PRINTED_CURL.match(line)
        if match is not None:
            curls.append(PrintedCurl(shlex.split(match["command"]), match["outcome"]))
    return UpSession(cwd, process, int(stub["port"]), ready_listeners(process.stdout_lines), curls)


@pytest.fixture(scope="module")
def up_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpSession]:
    """One ``up`` with no --certs in an empty directory, shared by the read-only tests."""
    cwd = tmp_path_factory.mktemp("up-empty-cwd")
    with started(UP, cwd=cwd) as process:
        yield _wait_up_ready(process, cwd)


# -- what `up` creates and prints -----------------------------------------------------------------


def test_up_creates_the_documented_demo_pki_in_cwd_certs(up_session: UpSession) -> None:
    certs = up_session.certs
    manifest = json.loads((certs / "manifest.json").read_text())
    assert manifest["format"] == "appgw-emulator-demo-pki"
    assert manifest["key_type"] == "ec"
    assert set(manifest["files"]) == DEMO_PKI_FILES
    on_disk = {p.name for p in certs.iterdir()}
    assert on_disk >= DEMO_PKI_FILES | {"manifest.json"}
    assert "demo PKI: created in certs" in up_session.process.stderr


def test_up_prints_one_ready_line_per_listener(up_session: UpSession) -> None:
    listeners = up_session.listeners
    assert set(listeners) == {STRICT, PASSTHROUGH}
    assert listeners[STRICT].mode == "Strict"
    assert listeners[PASSTHROUGH].mode == "Passthrough"
    assert {r.pool for r in listeners.values()} == {"stub-backend"}
    ports = {up_session.backend_port, listeners[STRICT].port, listeners[PASSTHROUGH].port}
    assert len(ports) == 3, "each ready line must report its own real port"
    assert 0 not in ports


def test_up_prints_four_curl_commands_against_the_ready_ports(up_session: UpSession) -> None:
    assert len(up_session.curls) == 4
    urls = {c.argv[-1] for c in up_session.curls}
    assert urls == {f"https://localhost:{r.port}/" for r in up_session.listeners.values()}
    for curl in up_session.curls:
        assert curl.argv[1:3] == ["--cacert", "certs/server-root-ca.pem"]


# -- the four cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FourCase:
    outcome: str  # how the printed curl comment begins
    listener: str
    with_cert: bool
    status: int
    verification: str | None  # X-Client-Cert-Verification the backend sees, when forwarded


FOUR_CASES: Final = [
    pytest.param(FourCase("Strict, valid cert", STRICT, True, 200, "SUCCESS"), id="strict-cert"),
    pytest.param(FourCase("Strict, no cert", STRICT, False, 400, None), id="strict-no-cert"),
    pytest.param(
        FourCase("Passthrough, cert", PASSTHROUGH, True, 200, "PASSTHROUGH"),
        id="passthrough-cert",
    ),
    pytest.param(
        FourCase("Passthrough, no cert", PASSTHROUGH, False, 200, None),
        id="passthrough-no-cert",
    ),
]


def _echoed(document: Any, name: str) -> list[str]:
    return [v for k, v in document["headers"] if k.lower() == name.lower()]


def _check_case(case: FourCase, session: UpSession, status: int, body: bytes) -> None:
    assert status == case.status, body[:500]
    if case.status == 400:
        assert f"<title>400 {NO_CERT_TEXT}</title>".encode() in body
        return
    document = json.loads(body)
    if case.with_cert:
        assert document["client_certificate"]["sha1_fingerprint"] == sha1_fingerprint(
            session.certs / "client.pem"
        )
        assert len(_echoed(document, "X-Client-Cert")) == 1
        assert _echoed(document, "X-Client-Cert-Verification") == [case.verification]
    else:
        assert document["client_certificate"] is None
        assert _echoed(document, "X-Client-Cert") == []


@pytest.mark.parametrize("case", FOUR_CASES)
def test_printed_curl_command_does_what_its_comment_says(
    up_session: UpSession, case: FourCase
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    printed = up_session.curl_for(case.outcome)
    assert printed.argv[-1] == f"https://localhost:{up_session.listeners[case.listener].port}/"
    assert ("--cert" in printed.argv) is case.with_cert
    # Exactly the printed command; the added options only make curl report the status code.
    result = subprocess.run(
        [*printed.argv, "--silent", "--show-error", "--write-out", "\n%{http_code}"],
        cwd=up_session.cwd,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition(b"\n")
    _check_case(case, up_session, int(code), body)


@pytest.mark.parametrize("case", FOUR_CASES)
def test_python_ssl_client_sees_the_same_four_cases(up_session: UpSession, case: FourCase) -> None:
    certs = up_session.certs
    reply: Reply = https_get(
        up_session.listeners[case.listener].port,
        cafile=certs / "server-root-ca.pem",
        cert=certs / "client.pem" if case.with_cert else None,
        key=certs / "client.key" if case.with_cert else None,
    )
    _check_case(case, up_session, reply.status, reply.body)


def test_strict_listener_rejects_an_expired_client_cert_with_400(up_session: UpSession) -> None:
    certs = up_session.certs
    reply = https_get(
        up_session.listeners[STRICT].port,
        cafile=certs / "server-root-ca.pem",
        cert=certs / "client-expired.pem",
        key=certs / "client-expired.key",
    )
    assert reply.status == 400
    assert BAD_CERT_TEXT.encode() in reply.body


# -- openssl s_client ----------------------------------------------------------------------------


def _s_client(
    session: UpSession, *options: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    return subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{session.listeners[STRICT].port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(session.certs / "server-root-ca.pem"),
            *options,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def _common_name(pem_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return value if isinstance(value, str) else value.decode()


TLS_FLAGS: Final = [pytest.param("-tls1_2", id="tls12"), pytest.param("-tls1_3", id="tls13")]


@pytest.mark.parametrize("tls_flag", TLS_FLAGS)
def test_strict_handshake_completes_without_client_cert_and_answers_400(
    up_session: UpSession, tls_flag: str
) -> None:
    request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    result = _s_client(up_session, "-brief", tls_flag, "-ign_eof", stdin=request)
    assert result.returncode == 0, result.stderr
    assert "CONNECTION ESTABLISHED" in result.stderr
    assert "Verification: OK" in result.stderr
    assert result.stdout.startswith("HTTP/1.1 400 Bad Request"), result.stdout
    assert NO_CERT_TEXT in result.stdout


@pytest.mark.parametrize("tls_flag", TLS_FLAGS)
def test_strict_listener_lists_the_uploaded_ca_subjects(
    up_session: UpSession, tls_flag: str
) -> None:
    result = _s_client(up_session, tls_flag)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Acceptable client certificate CA names") + 1
    names = []
    for line in lines[start:]:
        if line.startswith(("Requested Signature", "Client Certificate Types", "---")):
            break
        names.append(line)
    certs = up_session.certs
    expected = [_common_name(certs / "root-ca.pem"), _common_name(certs / "intermediate-ca.pem")]
    assert len(names) == 2, names
    assert sorted(n.rpartition("CN = ")[2] for n in names) == sorted(expected)


def test_strict_listener_selects_http11_from_offered_alpn(up_session: UpSession) -> None:
    result = _s_client(up_session, "-alpn", "h2,http/1.1")
    assert result.returncode == 0, result.stderr
    assert "ALPN protocol: http/1.1" in result.stdout


# -- the demo PKI is reused, a foreign directory is refused ---------------------------------------


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.name in DEMO_PKI_FILES}


def test_second_up_reuses_the_demo_pki_untouched(tmp_path: Path) -> None:
    with started(UP, cwd=tmp_path) as first:
        _wait_up_ready(first, tmp_path)
        assert first.stop() == 0
    assert "demo PKI: created in certs" in first.stderr
    before = _mtimes(tmp_path / "certs")
    manifest_before = (tmp_path / "certs" / "manifest.json").read_bytes()
    assert set(before) == DEMO_PKI_FILES

    with started(UP, cwd=tmp_path) as second:
        session = _wait_up_ready(second, tmp_path)
        assert "demo PKI: reusing certs" in second.stderr
        reply = https_get(
            session.listeners[STRICT].port,
            cafile=tmp_path / "certs" / "server-root-ca.pem",
            cert=tmp_path / "certs" / "client.pem",
            key=tmp_path / "certs" / "client.key",
        )
        assert reply.status == 200
        assert second.stop() == 0
    assert _mtimes(tmp_path / "certs") == before
    assert (tmp_path / "certs" / "manifest.json").read_bytes() == manifest_before


def test_up_refuses_a_foreign_certs_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "my-certs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    result = run_to_exit([*UP, "--certs", "my-certs"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    assert result.stderr.startswith("error: my-certs: ")
    assert "is not an appgw-emulator demo PKI" in result.stderr
    assert "\n  fix: " in result.stderr
    assert "ready:" not in result.stdout
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


# -- stopping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_stops_up_with_exit_code_0(tmp_path: Path, signum: signal.Signals) -> None:
    with started(UP, cwd=tmp_path) as process:
        session = _wait_up_ready(process, tmp_path)
        # An idle keep-alive client (a request answered, the connection kept open) must not
        # hold the shutdown up. (One that has had no request answered yet may still send one
        # within the drain's grace, as on nginx: tests/e2e/test_drain_new_connections.py.)
        ctx = ssl.create_default_context(cafile=str(session.certs / "server-root-ca.pem"))
        port = session.listeners[PASSTHROUGH].port
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /keep-alive HTTP/1.1\r\nHost: localhost\r\n\r\n")
            response = http.client.HTTPResponse(tls)
            response.begin()
            assert response.status == 200
            response.read()
            assert not response.will_close
            assert process.stop(signum, timeout=SIGNAL_EXIT_S) == 0
    assert f"stopping ({signum.name})" in process.stderr
    assert_no_traceback(process.stderr)


# -- start-up and usage errors -------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a plain listening socket for the length of the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--strict-port", "--passthrough-port", "--backend-port"])
def test_up_on_a_busy_port_names_the_port_and_the_flag(
    tmp_path: Path, busy_port: int, flag: str
) -> None:
    args = list(UP)
    args[args.index(flag) + 1] = str(busy_port)
    result = run_to_exit(args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    error = result.stderr[result.stderr.index("error: ") :]
    assert str(busy_port) in error.splitlines()[0]
    assert "[EmulatorPortInUse]" in error
    fix = error.splitlines()[1]
    assert fix.startswith("  fix: ")
    assert f"{flag} PORT" in fix
    assert "ready:" not in result.stdout


def test_up_with_only_strict_port_set_to_the_passthrough_default_starts(tmp_path: Path) -> None:
    """``--strict-port 9443`` alone (Passthrough left at 0) must not clash with a hidden default.

    9443 is the Passthrough listener's default template port, so this test has to bind it.
    """
    args = ["up", "--strict-port", "9443", "--passthrough-port", "0", "--backend-port", "0"]
    with started(args, cwd=tmp_path) as process:
        try:
            session = _wait_up_ready(process, tmp_path)
        except AssertionError:
            if "9443" in process.stderr and "in use" in process.stderr:
                pytest.skip("port 9443 is busy on this machine")
            raise
        assert session.listeners[STRICT].port == 9443
        assert session.listeners[PASSTHROUGH].port not in (0, 9443)
        assert process.stop() == 0


USAGE_ERRORS: Final = [
    pytest.param([], id="no-command"),
    pytest.param(["run"], id="run-without-template-file"),
    pytest.param(["run", "-f", "t.json", "--listen", "abc"], id="listen-not-a-mapping"),
    pytest.param(["run", "-f", "t.json", "--listen", "444=70000"], id="listen-port-too-big"),
    pytest.param(["run", "-f", "t.json", "--backend", "nopool"], id="backend-without-address"),
    pytest.param(["run", "-f", "t.json", "--backend", "pool=host"], id="backend-without-port"),
    pytest.param(["up", "--strict-port", "http"], id="port-not-a-number"),
    pytest.param(["up", "--strict-port", "9000", "--passthrough-port", "9000"], id="same-up-ports"),
    pytest.param(["certs"], id="certs-without-action"),
    pytest.param(["frobnicate"], id="unknown-command"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_usage_errors_exit_2_with_usage(tmp_path: Path, args: list[str]) -> None:
    result = run_to_exit(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "usage: appgw-emulator" in result.stderr
    assert "error: " in result.stderr
    assert_no_traceback(result.stderr)
    assert list(tmp_path.iterdir()) == [], "a usage error must not create anything"
