"""Starting and stopping (issue #10, item 6): graceful drain, SIGTERM, failed starts, leaks.

* :meth:`Gateway.drain` stops accepting, closes idle connections at once, lets requests in
  flight finish, and cancels what outlasts the grace period.
* SIGTERM to ``up`` drains the same way and exits 0; a second signal stops at once.
* A start that fails (a busy port, a bad template) leaves no port bound and no descriptor open.
* A short soak (``bench/soak.py``) ends with the descriptor count back at its baseline.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, write_demo_template
from emulator.errors import StartupError
from tests.helpers.http import RAW_SOCKET_TIMEOUT_S, client_context, raw_tls_socket, read_to_eof
from tests.helpers.logs import assert_no_traceback, logged
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.ports import free_port, port_is_free
from tests.helpers.processes import CliProcess, ready_listeners, run_to_exit, started
from tests.helpers.resources import open_fds, wait_until
from tests.helpers.stack import demo_gateway, start_demo

REPO = Path(__file__).resolve().parents[2]
UP = [
    "up",
    "--certs",
    "certs",
    "--strict-port",
    "0",
    "--passthrough-port",
    "0",
    "--backend-port",
    "0",
    "--no-dashboard",
]
#: The soak test's load time; bench/soak.py runs 10 minutes by default.
SOAK_TEST_S = 6


pytestmark = pytest.mark.usefixtures("no_internal_errors")


def _timed_get(port: int, ctx: ssl.SSLContext, path: str, out: dict[str, object]) -> None:
    """GET ``path`` on a new connection; stores status, body and when it finished."""
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        out["body"] = response.read()
        out["status"] = response.status
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = exc
    finally:
        out["done"] = time.monotonic()
        conn.close()


def _idle_keep_alive(port: int, ctx: ssl.SSLContext, out: dict[str, object]) -> None:
    """One request on a connection, then wait (reading) until the gateway closes it."""
    with raw_tls_socket(port, ctx, timeout=30) as tls:
        tls.sendall(b"GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = http.client.HTTPResponse(tls)
        response.begin()
        response.read()
        out["ready"] = time.monotonic()
        out["rest"] = read_to_eof(tls)
        out["closed"] = time.monotonic()


async def test_drain_finishes_requests_in_flight_closes_idle_ones_and_stops_accepting(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.gateway")
    stack = await start_demo(nursery, pki, tmp_path)
    port = stack.port(PASSTHROUGH_LISTENER)
    slow: dict[str, object] = {}
    idle: dict[str, object] = {}
    threads = [
        threading.Thread(target=_timed_get, args=(port, client_context(pki), "/delay/1", slow)),
        threading.Thread(target=_idle_keep_alive, args=(port, client_context(pki), idle)),
    ]
    for thread in threads:
        thread.start()
    await wait_until(lambda: "ready" in idle and stack.gateway.open_connections >= 2)
    started_at = time.monotonic()
    cancelled = await stack.gateway.drain(grace_s=5)
    drained_at = time.monotonic()
    for thread in threads:
        await trio.to_thread.run_sync(thread.join, 10)
    assert cancelled == 0
    assert (slow.get("status"), slow.get("error")) == (200, None)
    assert 0.5 < drained_at - started_at < 2.5  # the slow request, not the 5 s grace
    assert idle["rest"] == b""
    assert float(idle["closed"]) - started_at < 0.5  # type: ignore[arg-type]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S)
    assert logged(caplog, "gateway.draining")
    assert logged(caplog, "gateway.drained: every request in flight finished")


async def test_drain_cancels_requests_that_outlast_the_grace_period(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_demo(nursery, pki, tmp_path)
    port = stack.port(PASSTHROUGH_LISTENER)
    slow: dict[str, object] = {}
    thread = threading.Thread(
        target=_timed_get, args=(port, client_context(pki), "/delay/20", slow)
    )
    thread.start()
    await wait_until(lambda: stack.gateway.open_connections >= 1)
    await trio.sleep(0.1)
    started_at = time.monotonic()
    cancelled = await stack.gateway.drain(grace_s=0.5)
    elapsed = time.monotonic() - started_at
    await trio.to_thread.run_sync(thread.join, 10)
    assert cancelled == 1
    assert 0.4 < elapsed < 2.0
    assert "status" not in slow  # no response: the connection was closed under it
    assert stack.gateway.open_connections == 0
    assert logged(caplog, "gateway.drained cancelled=1")


def _up_ports(process: CliProcess) -> dict[str, int]:
    # Listeners print their ready lines in rule order; the Passthrough one comes last.
    process.wait_for_stdout(re.compile(rf"^ready: {PASSTHROUGH_LISTENER} "))
    return {name: ready.port for name, ready in ready_listeners(process.stdout_lines).items()}


def _certs_context(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "certs" / "server-root-ca.pem"))


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with started(UP, cwd=tmp_path) as process:
        ports = _up_ports(process)
        port = ports[PASSTHROUGH_LISTENER]
        slow: dict[str, object] = {}
        thread = threading.Thread(
            target=_timed_get, args=(port, _certs_context(tmp_path), "/delay/1.5", slow)
        )
        thread.start()
        time.sleep(0.5)
        sent = time.monotonic()
        code = process.stop(signal.SIGTERM)
        stopped = time.monotonic()
        thread.join(10)
    assert code == 0, process.describe()
    assert (slow.get("status"), slow.get("error")) == (200, None), slow
    assert float(slow["done"]) <= stopped  # type: ignore[arg-type]
    assert stopped - sent < 5.0
    assert "stopping (SIGTERM)" in process.stderr
    assert "gateway.draining" in process.stderr
    assert_no_traceback(process.stderr)
    assert all(port_is_free(p) for p in ports.values())


def test_a_second_signal_during_the_drain_stops_at_once(tmp_path: Path) -> None:
    with started(UP, cwd=tmp_path) as process:
        ports = _up_ports(process)
        slow: dict[str, object] = {}
        thread = threading.Thread(
            target=_timed_get,
            args=(ports[PASSTHROUGH_LISTENER], _certs_context(tmp_path), "/delay/30", slow),
        )
        thread.start()
        time.sleep(0.5)
        sent = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code = process.stop(signal.SIGINT)
        elapsed = time.monotonic() - sent
        thread.join(10)
    assert code == 0, process.describe()
    assert elapsed < 3.0  # well inside the 5 s grace
    assert "stopping now (SIGINT)" in process.stderr
    assert_no_traceback(process.stderr)


def test_run_with_a_busy_second_port_exits_without_serving_anything(
    tmp_path: Path, pki: PkiBundle
) -> None:
    template = write_demo_template(
        tmp_path, strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    first = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        result = run_to_exit(
            [
                "run",
                "-f",
                str(template),
                "-p",
                *template_parameters(pki),
                "--listen",
                f"8443={first}",
                "--listen",
                f"9443={busy}",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 1, result.stderr
        assert "EmulatorPortInUse" in result.stderr
        assert "ready:" not in result.stdout
        assert_no_traceback(result.stderr)
        assert port_is_free(first)


async def test_a_failed_start_releases_every_port_and_descriptor(
    pki: PkiBundle, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        gateway = demo_gateway(pki, tmp_path, backend_port=1)
        gateway.listen[9443] = busy
        before = open_fds()
        for _ in range(3):
            with pytest.raises(StartupError):
                await gateway.serve()
        assert open_fds() == before
        assert port_is_free(gateway.ports[STRICT_LISTENER])
    # Nothing half-started is left: the same instance serves once the port is free.
    gateway.listen[9443] = 0
    async with gateway:
        assert gateway.open_connections == 0


def test_short_soak_returns_descriptors_to_baseline() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            "--duration",
            str(SOAK_TEST_S),
            "--interval",
            "2",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=SOAK_TEST_S + 60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "flat"
    assert report["final_fds"] <= report["baseline_fds"] + report["fd_allowance"]
    assert report["errors"] == 0
    assert report["exit_code"] == 0
    assert report["requests"] > 50
