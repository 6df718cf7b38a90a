"""Running the emulator from scripts, containers and orchestrators (issue #20).

* ``GET /health`` answers 503 before the listeners are bound, 200 with each bound address once
  they are, 503 again while draining; ``/health/live`` answers 200 throughout.
* ``appgw-emulator wait URL`` exits 0 once ready, 1 with the last answer on a timeout.
* ``GET /api/server-ca`` is the PEM a client must trust; ``DELETE /api/requests`` forgets the
  record, guarded like the other state-changing dashboard routes.
* ``certs init``/``up --server-name`` put a service name in the listener certificate.
* ``--access-log stdout``, ``--log-format json``, ``--version``, ``--dashboard-allowed-host``.
"""

from __future__ import annotations

import functools
import http.client
import json
import re
import socket
import ssl
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.runtime.health import serve_health
from tests.helpers.http import client_context, https_request
from tests.helpers.logs import assert_no_traceback
from tests.helpers.pki import PkiBundle
from tests.helpers.processes import ready_listeners, run_to_exit, started
from tests.helpers.stack import demo_gateway

REQUEST_TIMEOUT_S: Final = 10.0
#: The drain's grace in the readiness test: long enough to look at /health while it lasts.
DRAIN_GRACE_S: Final = 1.5
READY_DASHBOARD: Final = re.compile(r"^ready: dashboard http://127\.0\.0\.1:(?P<port>\d+)/$")
READY_HEALTH: Final = re.compile(
    r"^ready: health (?P<url>http://127\.0\.0\.1:(?P<port>\d+)/health)$"
)
SERVICE_NAME: Final = "appgw-emulator.test"
QUICKSTART: Final = (
    Path(__file__).parents[1] / "fixtures" / "quickstart" / "deploymentTemplate.json"
)


def _http(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    with closing(conn):
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _health(port: int, path: str = "/health") -> tuple[int, Any]:
    status, _headers, body = _http(port, "GET", path)
    return status, json.loads(body)


# -- readiness over the gateway's life, in process -----------------------------------------------


async def test_health_is_503_before_binding_200_when_bound_and_503_while_draining(
    pki: PkiBundle, tmp_path: Path
) -> None:
    stalled = trio.Event()

    async def stalling_backend(stream: trio.SocketStream) -> None:
        stalled.set()  # a request is now in flight at the gateway; never answer it
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        backend_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, stalling_backend, backend_listeners)
        backend_port = backend_listeners[0].socket.getsockname()[1]
        gateway = demo_gateway(pki, tmp_path, backend_port=backend_port)
        url = await nursery.start(
            functools.partial(serve_health, gateway.readiness, host="127.0.0.1", port=0)
        )
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        async def health(path: str = "/health") -> tuple[int, Any]:
            return await trio.to_thread.run_sync(_health, port, path)

        assert await health() == (503, {"ready": False, "state": "starting", "listeners": {}})
        assert await health("/health/live") == (200, {"live": True})

        await nursery.start(gateway.serve)
        status, document = await health()
        assert status == 200
        assert document == {
            "ready": True,
            "state": "serving",
            "listeners": {
                STRICT_LISTENER: f"127.0.0.1:{gateway.port(STRICT_LISTENER)}",
                PASSTHROUGH_LISTENER: f"127.0.0.1:{gateway.port(PASSTHROUGH_LISTENER)}",
            },
        }

        async def in_flight() -> None:
            with suppress(OSError, http.client.HTTPException):
                await https_request(gateway.port(PASSTHROUGH_LISTENER), client_context(pki))

        nursery.start_soon(in_flight)
        with trio.fail_after(REQUEST_TIMEOUT_S):
            await stalled.wait()
        async with trio.open_nursery() as draining:
            draining.start_soon(gateway.drain, DRAIN_GRACE_S)
            with trio.fail_after(REQUEST_TIMEOUT_S):
                # Polled over HTTP, as a probe would: no event to wait on from outside.
                while (await health())[1]["state"] != "draining":  # noqa: ASYNC110
                    await trio.sleep(0.02)
            status, document = await health()
            assert (status, document["ready"], document["state"]) == (503, False, "draining")
            assert await health("/health/live") == (200, {"live": True})
        status, document = await health()
        assert status == 503
        assert document["ready"] is False
        # Not a probe's business: other paths and methods are refused plainly.
        code, _h, _b = await trio.to_thread.run_sync(_http, port, "GET", "/other")
        assert code == 404
        code, _h, _b = await trio.to_thread.run_sync(_http, port, "POST", "/health")
        assert code == 405
        nursery.cancel_scope.cancel()


# -- the command line ----------------------------------------------------------------------------


def _up_args(*extra: str) -> list[str]:
    return [
        "up",
        "--certs",
        "certs",
        "--strict-port",
        "0",
        "--passthrough-port",
        "0",
        "--backend-port",
        "0",
        *extra,
    ]


def _trusting(pem: bytes, tmp_path: Path, client: Path) -> ssl.SSLContext:
    cafile = tmp_path / "server-ca-from-api.pem"
    cafile.write_bytes(pem)
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.load_cert_chain(client / "client.pem", client / "client.key")
    return ctx


def _get_by_name(port: int, ctx: ssl.SSLContext, server_name: str) -> tuple[int, bytes]:
    """GET / over TLS to 127.0.0.1:port, verifying the certificate against ``server_name``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.fixture(scope="module")
def up_process(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cwd = tmp_path_factory.mktemp("operability")
    args = _up_args(
        "--dashboard-port",
        "0",
        "--server-name",
        SERVICE_NAME,
        "--dashboard-allowed-host",
        SERVICE_NAME,
        "--access-log",
        "stdout",
        "--log-format",
        "json",
    )
    with started(["--log-level", "info", *args], cwd=cwd) as process:
        match = process.wait_for_stdout(READY_DASHBOARD)
        yield process, int(match["port"]), cwd


def test_health_lists_every_listener_and_wait_exits_zero(up_process: Any) -> None:
    process, port, cwd = up_process
    status, document = _health(port)
    listeners = ready_listeners(process.stdout_lines)
    assert status == 200
    assert document["ready"] is True
    assert document["listeners"] == {
        name: f"127.0.0.1:{ready.port}" for name, ready in listeners.items()
    }
    waited = run_to_exit(["wait", "--timeout", "10", f"http://127.0.0.1:{port}/health"], cwd=cwd)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith(f"ready: http://127.0.0.1:{port}/health")


def test_wait_times_out_with_the_last_answer(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    waited = run_to_exit(
        ["wait", "--timeout", "0.5", f"http://127.0.0.1:{port}/health"], cwd=tmp_path
    )
    assert waited.returncode == 1
    assert f"http://127.0.0.1:{port}/health was not ready after 0.5 s" in waited.stderr
    assert "refused" in waited.stderr.lower()
    assert_no_traceback(waited.stderr)


def test_server_ca_from_the_api_and_the_service_name_pass_a_strict_mtls_request(
    up_process: Any, tmp_path: Path
) -> None:
    process, port, cwd = up_process
    status, headers, pem = _http(port, "GET", "/api/server-ca")
    assert status == 200
    assert headers["content-type"] == "application/x-pem-file"
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" not in pem
    strict = ready_listeners(process.stdout_lines)[STRICT_LISTENER].port
    ctx = _trusting(pem, tmp_path, cwd / "certs")
    code, data = _get_by_name(strict, ctx, SERVICE_NAME)
    assert code == 200, data
    # A name the certificate does not carry still fails hostname verification.
    with pytest.raises(ssl.SSLCertVerificationError):
        _get_by_name(strict, ctx, "other.test")


def test_access_log_on_stdout_and_delete_requests_clears_the_record(
    up_process: Any, tmp_path: Path
) -> None:
    process, port, cwd = up_process
    _status, _headers, pem = _http(port, "GET", "/api/server-ca")
    passthrough = ready_listeners(process.stdout_lines)[PASSTHROUGH_LISTENER].port
    assert _get_by_name(passthrough, _trusting(pem, tmp_path, cwd / "certs"), "localhost")[0] == 200
    record = process.wait_for_stdout(re.compile(r'^\{.*"listenerName": "passthrough'))
    entry = json.loads(record.string)
    assert entry["operationName"] == "ApplicationGatewayAccess"

    status, _h, body = _http(port, "GET", "/api/requests")
    assert status == 200
    assert json.loads(body)["kept"] >= 1
    # Guarded like the POST routes: another site's page is refused, and so is a foreign Host.
    refused = _http(port, "DELETE", "/api/requests", {"Origin": "http://evil.example"})
    assert refused[0] == 403
    assert _http(port, "DELETE", "/api/requests", {"Host": "evil.example"})[0] == 403
    assert json.loads(_http(port, "GET", "/api/requests")[2])["kept"] >= 1
    status, _h, body = _http(port, "DELETE", "/api/requests")
    assert status == 200
    assert json.loads(body)["cleared"] >= 1
    assert json.loads(_http(port, "GET", "/api/requests")[2]) == {"kept": 0, "requests": []}


def test_dashboard_allowed_host_is_accepted_and_other_names_are_not(up_process: Any) -> None:
    _process, port, _cwd = up_process
    assert _http(port, "GET", "/api/config", {"Host": f"{SERVICE_NAME}:{port}"})[0] == 200
    assert _http(port, "GET", "/api/config", {"Host": f"other.test:{port}"})[0] == 403


def test_json_log_lines_carry_the_text_log_fields(up_process: Any) -> None:
    process, port, _cwd = up_process
    assert _http(port, "GET", "/api/config", {"Host": "rebound.example"})[0] == 403
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while not any("dashboard.refused" in line for line in process.stderr_lines):
        assert time.monotonic() < deadline, process.describe()
        time.sleep(0.05)
    records = [json.loads(line) for line in process.stderr_lines if line.startswith("{")]
    assert any(r["message"].startswith("dashboard.refused GET /api/config") for r in records)
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}
    assert any(r["logger"].startswith("emulator") for r in records)


def test_run_health_port_without_dashboard(tmp_path: Path) -> None:
    init = run_to_exit(["certs", "init", "certs"], cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    args = [
        "run",
        "--template-file",
        str(QUICKSTART),
        "--parameters",
        "@certs/deploymentParameters.json",
        "--backend",
        "pool2=127.0.0.1:1",
        "--listen",
        "444=0",
        "--health-port",
        "0",
    ]
    with started(args, cwd=tmp_path) as process:
        match = process.wait_for_stdout(READY_HEALTH)
        listeners = ready_listeners(process.stdout_lines)
        status, document = _health(int(match["port"]))
        assert status == 200
        assert document["listeners"] == {"listener2": f"127.0.0.1:{listeners['listener2'].port}"}
        waited = run_to_exit(["wait", "-q", match["url"]], cwd=tmp_path)
        assert (waited.returncode, waited.stdout) == (0, "")
        assert process.stop() == 0
        assert_no_traceback(process.stderr)


def test_version_and_access_log_help(tmp_path: Path) -> None:
    version = run_to_exit(["--version"], cwd=tmp_path)
    assert version.returncode == 0
    assert re.fullmatch(r"appgw-emulator \d+\.\d+\.\d+\S*\n", version.stdout)
    helptext = run_to_exit(["up", "--help"], cwd=tmp_path)
    assert "stdout" in helptext.stdout
    assert "--server-name" in helptext.stdout


def test_a_bad_server_name_is_a_clear_error(tmp_path: Path) -> None:
    result = run_to_exit(["certs", "init", "certs", "--server-name", "no spaces"], cwd=tmp_path)
    assert result.returncode == 1
    assert "--server-name 'no spaces' is not a DNS name or an IP address" in result.stderr
    assert "fix:" in result.stderr
    assert not (tmp_path / "certs").exists()
    assert_no_traceback(result.stderr)


def test_every_command_has_a_description_and_an_example_and_every_option_help() -> None:
    """Checked on the parser as built, before the environment layer adds its ``[env: ...]``."""
    import argparse

    from emulator.cli.envconfig import _walk
    from emulator.cli.main import build_parser

    for command, prog in _walk(build_parser()):
        if prog != "appgw-emulator":
            assert command.description, prog
            assert (command.epilog or "").startswith("example: appgw-emulator "), prog
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (prog, action.option_strings or action.dest)
