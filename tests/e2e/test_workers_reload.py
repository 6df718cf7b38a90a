"""``run --workers N``: hot reload and ``/health`` (issue #20, items 4 and 6), over real sockets.

The supervisor answers ``/health`` on ``--health-port``; it is ready only when every worker of
the serving configuration accepts. A reload (SIGHUP, or ``--watch`` seeing a change) is checked
by the supervisor first: an invalid template leaves the workers serving; a valid one gets a new
generation of workers, and the old one drains (a request in flight finishes) and exits. A port
both configurations have keeps its listening socket, so it never refuses a connection.

Ports are free ports chosen by the test (the template's own frontend ports, no ``--listen``),
so a reload that moves a listener shows both halves: the new port serves, the old one closes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, write_demo_template
from emulator.pki.demo import write_demo_pki
from tests.helpers.http import Reply, forwarded, https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.pki import write_demo_parameters
from tests.helpers.ports import free_ports
from tests.helpers.processes import (
    READY_LISTENER,
    STUB_LISTENING,
    CliProcess,
    ready_listeners,
    run_to_exit,
    started,
)

#: A reload is seen within the watch interval (0.5 s) plus loading and forking; generous.
RELOAD_TIMEOUT_S: Final = 30.0
#: Each worker of a generation: the supervisor's pid is the parent of all of them.
WORKERS: Final = 2
#: The backend stub's /delay/ path: long enough to still be in flight when the signal lands,
#: short of the drain's 5 s grace.
SLOW_S: Final = 3.0

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not Path("/proc/self/stat").exists(),
    reason="--workers forks; the tests find the workers through /proc (Linux)",
)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _health(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with closing(conn):
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())


def _wait_stderr(process: CliProcess, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while sum(text in line for line in process.stderr_lines) < count:
        assert time.monotonic() < deadline, process.describe()
        assert process.popen.poll() is None, process.describe()
        time.sleep(0.05)


def _ready_count(process: CliProcess) -> int:
    return sum(bool(READY_LISTENER.match(line)) for line in process.stdout_lines)


@dataclass
class Setup:
    cwd: Path
    stub_port: int
    ports: list[int]

    @property
    def cafile(self) -> Path:
        return self.cwd / "certs" / "server-root-ca.pem"

    def template(self, strict_port: int, passthrough_port: int) -> Path:
        return write_demo_template(
            self.cwd,
            strict_port=strict_port,
            passthrough_port=passthrough_port,
            backend_host="127.0.0.1",
            backend_port=self.stub_port,
        )

    def mtls(self, port: int, path: str = "/") -> Reply:
        return https_get(
            port,
            cafile=self.cafile,
            cert=self.cwd / "certs" / "client.pem",
            key=self.cwd / "certs" / "client.key",
            path=path,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    pki = write_demo_pki(tmp_path / "certs")
    write_demo_parameters(pki, tmp_path / "parameters.json")
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])
        yield Setup(tmp_path, stub_port, free_ports(4))


def _start(setup: Setup, path: Path, health_port: int, *extra: str) -> list[str]:
    return [
        "run", "-f", str(path), "-p", "@parameters.json",
        "--workers", str(WORKERS), "--health-port", str(health_port), *extra,
    ]  # fmt: skip


def _wait_ready(process: CliProcess, count: int) -> None:
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while _ready_count(process) < count:
        assert time.monotonic() < deadline, process.describe()
        assert process.popen.poll() is None, process.describe()
        time.sleep(0.02)


def _send_slow(setup: Setup, port: int) -> http.client.HTTPSConnection:
    """A slow mTLS request, sent: its handshake is done, so a worker serving now holds it."""
    ctx = ssl.create_default_context(cafile=str(setup.cafile))
    ctx.load_cert_chain(setup.cwd / "certs" / "client.pem", setup.cwd / "certs" / "client.key")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    conn.request("GET", f"/delay/{SLOW_S}")
    return conn


def _finish(conn: http.client.HTTPSConnection) -> int:
    with closing(conn):
        response = conn.getresponse()
        response.read()
        return response.status


class _Hammer:
    """HTTPS requests to one port, one after another on fresh connections, until stopped."""

    def __init__(self, setup: Setup, port: int) -> None:
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(setup, port), daemon=True)

    def _run(self, setup: Setup, port: int) -> None:
        for _ in range(2000):  # bounded: about 5 s of requests at most here
            if self._stop.is_set():
                return
            try:
                self.statuses.append(https_get(port, cafile=setup.cafile).status)
            except OSError as exc:
                self.errors.append(repr(exc))

    def __enter__(self) -> _Hammer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.parametrize("trigger", ["sighup", "watch"])
def test_reload_under_workers_refuses_an_invalid_template_and_reforks_for_a_valid_one(
    setup: Setup, trigger: str
) -> None:
    strict, passthrough, moved, health_port = setup.ports
    path = setup.template(strict, passthrough)
    extra = ["--watch"] if trigger == "watch" else []
    with started(_start(setup, path, health_port, *extra), cwd=setup.cwd) as process:
        _wait_ready(process, 2)
        status, before = _health(health_port)
        assert status == 200, before
        first = set(before["workers"]["pids"])
        assert first == _children(process.pid)
        assert before["answeredBy"] == {"process": "supervisor", "pid": process.pid}
        assert forwarded(setup.mtls(strict), "X-Client-Cert-Verification") == ["SUCCESS"]
        assert https_get(strict, cafile=setup.cafile).status == 400  # Strict, no certificate

        def poke() -> None:
            if trigger == "sighup":
                process.popen.send_signal(signal.SIGHUP)

        # Invalid: the supervisor refuses it with the error; the same workers keep serving.
        path.write_text('{"resources": [')
        poke()
        _wait_stderr(process, "reload refused, the previous configuration keeps serving")
        assert "not valid JSON" in process.stderr
        assert setup.mtls(strict).status == 200
        status, refused = _health(health_port)
        assert status == 200
        assert refused["workers"]["generation"] == 1
        assert set(refused["workers"]["pids"]) == first

        # Valid, moving the Strict listener; a request in flight on an old worker finishes,
        # and the Passthrough port (in both configurations) never refuses a connection.
        with _Hammer(setup, passthrough) as hammer:
            slow = _send_slow(setup, strict)  # on an old worker: a port the reload removes
            setup.template(moved, passthrough)
            poke()
            _wait_stderr(process, "reloaded ")
            _wait_ready(process, 4)
            time.sleep(0.3)
        assert _finish(slow) == 200
        assert hammer.errors == []
        assert hammer.statuses
        assert set(hammer.statuses) == {200}

        assert ready_listeners(process.stdout_lines)[STRICT_LISTENER].port == moved
        assert ready_listeners(process.stdout_lines)[PASSTHROUGH_LISTENER].port == passthrough
        reply = setup.mtls(moved)
        assert reply.status == 200
        assert forwarded(reply, "X-Forwarded-Port") == [str(moved)]
        assert forwarded(reply, "X-Client-Cert-Verification") == ["SUCCESS"]
        assert _refused(strict)

        status, after = _health(health_port)
        assert status == 200, after
        assert after["workers"]["generation"] == 2
        second = set(after["workers"]["pids"])
        assert len(second) == WORKERS
        assert not second & first
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while any(_alive(pid) for pid in first):  # the old generation drained and exited
            assert time.monotonic() < deadline, process.describe()
            time.sleep(0.05)
        assert _children(process.pid) == second
        assert after["listeners"] == {
            STRICT_LISTENER: f"127.0.0.1:{moved}",
            PASSTHROUGH_LISTENER: f"127.0.0.1:{passthrough}",
        }
        assert process.stop() == 0
        assert_no_traceback(process.stderr)


def test_health_under_workers_is_ready_only_with_every_worker_and_503_while_draining(
    setup: Setup,
) -> None:
    strict, passthrough, _unused, health_port = setup.ports
    path = setup.template(strict, passthrough)
    with started(_start(setup, path, health_port), cwd=setup.cwd) as process:
        # From the start: refused (not bound yet) or 503, until every worker accepts; a 200
        # always counts every worker.
        seen: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while not seen or seen[-1][0] != 200:
            assert time.monotonic() < deadline, process.describe()
            try:
                seen.append(_health(health_port))
            except OSError:
                time.sleep(0.01)
        for status, document in seen:
            assert status in (200, 503), document
            assert document["ready"] is (status == 200)
            if status == 503:
                assert document["state"] == "starting"
                assert document["workers"]["ready"] < WORKERS
        status, document = seen[-1]
        assert document["state"] == "serving"
        assert document["workers"]["ready"] == WORKERS
        assert set(document["workers"]["pids"]) == _children(process.pid)
        _wait_ready(process, 2)
        assert f"ready: health http://127.0.0.1:{health_port}/health" in process.stdout_lines

        # A worker replaced after it died: ready again once the new one accepts.
        victim = min(document["workers"]["pids"])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while True:
            status, document = _health(health_port)
            pids = set(document["workers"]["pids"])
            if status == 200 and victim not in pids and len(pids) == WORKERS:
                break
            assert document["state"] in ("serving", "degraded"), document
            assert time.monotonic() < deadline, process.describe()
            time.sleep(0.05)
        assert setup.mtls(strict).status == 200

        # Draining: a request in flight keeps the workers up; readiness is 503, liveness 200.
        slow = _send_slow(setup, strict)
        process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while True:
            status, document = _health(health_port)
            if document["state"] == "draining":
                break
            assert time.monotonic() < deadline, process.describe()
            time.sleep(0.02)
        assert status == 503
        assert document["ready"] is False
        assert _health(health_port, "/health/live") == (200, {"live": True})
        assert _finish(slow) == 200
        assert process.wait_exit() == 0
        assert_no_traceback(process.stderr)


def _closed_without_answer(sock: socket.socket) -> bool:
    """Read until the peer closes; True when it sent nothing (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data == b""


def test_health_under_workers_survives_hostile_probes(setup: Setup) -> None:
    """The supervisor's own HTTP loop: garbage, an oversized head and a flood of idle
    connections neither stop it nor keep a real probe from an answer."""
    strict, passthrough, _unused, health_port = setup.ports
    path = setup.template(strict, passthrough)
    with started(_start(setup, path, health_port), cwd=setup.cwd) as process:
        _wait_ready(process, 2)
        stalled = [socket.create_connection(("127.0.0.1", health_port)) for _ in range(40)]
        try:
            status, document = _health(health_port)  # answered, the idle ones notwithstanding
            assert status == 200, document
            with socket.create_connection(("127.0.0.1", health_port), timeout=10) as garbage:
                garbage.sendall(b"\x16\x03\x01\x00\xff not http at all\r\n\r\n")
                assert _closed_without_answer(garbage)
            with socket.create_connection(("127.0.0.1", health_port), timeout=10) as huge:
                with contextlib.suppress(OSError):  # closed while it still sends
                    huge.sendall(b"GET /health HTTP/1.1\r\nX: " + b"a" * 200_000)
                assert _closed_without_answer(huge)
            assert _health(health_port, "/nope")[0] == 404
            conn = http.client.HTTPConnection("127.0.0.1", health_port, timeout=10)
            with closing(conn):
                conn.request("POST", "/health", body=b"{}")
                assert conn.getresponse().status == 405
        finally:
            for stall in stalled:
                stall.close()
        assert setup.mtls(strict).status == 200

        # SIGHUP is the supervisor's: a worker that gets one (a hangup sent to the whole
        # process group) ignores it, and the supervisor's reloads once.
        workers = _children(process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)
        assert _children(process.pid) == workers
        process.popen.send_signal(signal.SIGHUP)
        _wait_stderr(process, "reloaded ")
        assert setup.mtls(strict).status == 200
        assert process.stop() == 0
        assert_no_traceback(process.stderr)
        assert not any(_alive(pid) for pid in workers)


@pytest.mark.parametrize("flag", ["--health-port", "--dashboard"])
def test_a_busy_health_port_under_workers_fails_before_any_worker_starts(
    setup: Setup, flag: str
) -> None:
    strict, passthrough, _unused, _health_port = setup.ports
    path = setup.template(strict, passthrough)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["run", "-f", str(path), "-p", "@parameters.json", "--workers", str(WORKERS)]
        done = run_to_exit([*args, flag, str(port)], cwd=setup.cwd)
    assert done.returncode == 1, done.stderr
    assert f"the health port 127.0.0.1:{port} is already in use" in done.stderr
    assert "[EmulatorPortInUse]" in done.stderr
    assert f"choose another port: {flag} PORT" in done.stderr
    assert "serving from" not in done.stderr  # no worker was forked
    assert not done.stdout
    assert _refused(strict)
    assert_no_traceback(done.stderr)
