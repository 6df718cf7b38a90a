"""The Node and Go example backends, each behind the emulated gateway in Strict and Passthrough,
checked by ``appgw-emulator verify`` against the same expectations as the Python example.

Each backend is a real process listening on loopback; the gateway, the relay in front of the
backend and every client handshake are real TLS. A backend whose toolchain is missing is
skipped with the reason (``.ci/run`` installs node's packages and Debian's golang when it can).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.cli.main import main
from emulator.pki.demo import DemoPki, write_demo_pki

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "mtls_api"
VERIFY_CN = "appgw-verify-client"
#: Generous: a first ``go build`` compiles the standard library packages it uses.
BUILD_TIMEOUT_S = 300
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
_READY = re.compile(r"ready: \w+ orders API http://([\d.]+:\d+)/orders")


@pytest.fixture(scope="module")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return write_demo_pki(tmp_path_factory.mktemp("backends") / "certs")


def _node_command(tmp: Path) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs npm)")
    if not (HERE / "node" / "node_modules" / "express").is_dir():
        pytest.skip(
            "express is not installed: run `npm ci` in examples/backends/node (.ci/run does)"
        )
    return [node, str(HERE / "node" / "server.js")]


def _go_command(tmp: Path) -> list[str]:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (apt-get install golang-go)")
    binary = tmp / "orders-backend"
    env = {
        **os.environ,
        "GOCACHE": str(tmp / "gocache"),
        "GOPATH": str(tmp / "gopath"),
        # Standard library only: nothing may be downloaded, not even a newer toolchain.
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=HERE / "go",
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return [str(binary)]


@pytest.fixture(params=["node", "go"])
def backend(request: pytest.FixtureRequest, demo_pki: DemoPki, tmp_path: Path) -> Iterator[str]:
    """The backend's address; the process is stopped (by its PID) after the test."""
    command = (_node_command if request.param == "node" else _go_command)(tmp_path)
    dash = "--" if request.param == "node" else "-"
    chain = demo_pki.directory / "trusted-client-ca-chain.pem"
    args = [
        f"{dash}port",
        "0",
        f"{dash}trust-ca",
        str(chain),
        f"{dash}allow",
        f"{VERIFY_CN}=reader",
    ]
    process = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    found: list[str] = []
    seen: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            match = _READY.search(line)
            if match and not found:
                found.append(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = threading.Event()
        for _ in range(READY_TIMEOUT_S * 20):
            if found or process.poll() is not None:
                break
            deadline.wait(0.05)
        assert found, f"{request.param} backend did not start: {''.join(seen)}"
        yield found[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=STOP_TIMEOUT_S)


def test_backend_passes_the_matrix_in_both_modes(
    backend: str, demo_pki: DemoPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = demo_pki.directory
    junit = tmp_path / "verify.xml"
    code = main(
        [
            "verify",
            "--template-file",
            str(EXAMPLE / "gateway.json"),
            "--parameters",
            f"certData={base64.b64encode((certs / 'server.pfx').read_bytes()).decode()}",
            f"certPassword={(certs / 'server-pfx-password.txt').read_text().strip()}",
            f"trustedClientCaData={(certs / 'trusted-client-ca-chain.b64').read_text().strip()}",
            "--backend",
            f"orders-api={backend}",
            "--client-ca",
            str(certs / "intermediate-ca.pem"),
            "--client-ca-key",
            str(certs / "intermediate-ca.key"),
            "--path",
            "/orders",
            "--expect",
            str(EXAMPLE / "verify-expectations.json"),
            "--junit",
            str(junit),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "0"
    assert suite.get("errors") == "0"
    modes = {c.get("classname") for c in suite.findall("testcase")}
    assert modes == {"orders-gateway.strict-listener", "orders-gateway.passthrough-listener"}
