"""Hot reload of ``run`` (issue #20, item 6): ``--watch`` and ``SIGHUP``, over real sockets.

The template's frontend ports are free ports chosen by the test (no ``--listen``), so a reload
that changes a port shows both halves: the new port is bound, the removed one is closed.
"""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Final

import pytest

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, write_demo_template
from emulator.pki.demo import write_demo_pki
from tests.helpers.http import forwarded, https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.pki import write_demo_parameters
from tests.helpers.ports import free_ports
from tests.helpers.processes import (
    READY_LISTENER,
    STUB_LISTENING,
    CliProcess,
    ready_listeners,
    started,
)

#: A reload is seen within the watch interval (0.5 s) plus loading; generous under load.
RELOAD_TIMEOUT_S: Final = 20.0


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_stderr(process: CliProcess, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while sum(text in line for line in process.stderr_lines) < count:
        assert time.monotonic() < deadline, process.describe()
        assert process.popen.poll() is None, process.describe()
        time.sleep(0.05)


def _ready_count(process: CliProcess) -> int:
    return sum(bool(READY_LISTENER.match(line)) for line in process.stdout_lines)


@pytest.mark.parametrize("trigger", ["watch", "sighup"])
def test_reload_keeps_an_invalid_template_out_and_swaps_in_a_valid_one(
    tmp_path: Path, trigger: str
) -> None:
    pki = write_demo_pki(tmp_path / "certs")
    write_demo_parameters(pki, tmp_path / "parameters.json")
    strict, passthrough, moved = free_ports(3)
    cafile = tmp_path / "certs" / "server-root-ca.pem"
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])

        def template(strict_port: int) -> Path:
            return write_demo_template(
                tmp_path,
                strict_port=strict_port,
                passthrough_port=passthrough,
                backend_host="127.0.0.1",
                backend_port=stub_port,
            )

        path = template(strict)
        args = ["run", "-f", str(path), "-p", "@parameters.json"]
        if trigger == "watch":
            args.append("--watch")
        with started(args, cwd=tmp_path) as process:
            process.wait_for_stdout(READY_LISTENER)
            while _ready_count(process) < 2:
                time.sleep(0.02)
            assert ready_listeners(process.stdout_lines)[STRICT_LISTENER].port == strict

            def poke() -> None:
                if trigger == "sighup":
                    process.popen.send_signal(signal.SIGHUP)

            # An invalid template: refused with its error, the running one keeps serving.
            path.write_text('{"resources": [')
            poke()
            _wait_stderr(process, "reload refused, the previous configuration keeps serving")
            assert https_get(strict, cafile=cafile).status == 400  # Strict, no cert: served
            assert https_get(passthrough, cafile=cafile).status == 200

            # A valid one that moves the Strict listener: bound there, the old port closed.
            template(moved)
            poke()
            _wait_stderr(process, "reloaded ")
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while _ready_count(process) < 4:
                assert time.monotonic() < deadline, process.describe()
                time.sleep(0.02)
            assert ready_listeners(process.stdout_lines)[STRICT_LISTENER].port == moved
            reply = https_get(
                moved,
                cafile=cafile,
                cert=tmp_path / "certs" / "client.pem",
                key=tmp_path / "certs" / "client.key",
            )
            assert reply.status == 200
            assert forwarded(reply, "X-Forwarded-Port") == [str(moved)]
            assert _refused(strict)
            assert https_get(passthrough, cafile=cafile).status == 200
            assert ready_listeners(process.stdout_lines)[PASSTHROUGH_LISTENER].port == passthrough
            assert process.stop() == 0
            assert_no_traceback(process.stderr)


def _read_response(tls: ssl.SSLSocket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(tls)
    response.begin()
    response.read()
    return response


def test_a_keep_alive_connection_open_across_a_reload_gets_connection_close(
    tmp_path: Path,
) -> None:
    # Issue 20: a reload drains the old gateway; a connection with a request in progress
    # finishes it with Connection: close (the client learns to reconnect, to the new
    # configuration) and then closes, instead of being cut off or kept on the old one.
    pki = write_demo_pki(tmp_path / "certs")
    write_demo_parameters(pki, tmp_path / "parameters.json")
    strict, passthrough = free_ports(2)
    cafile = tmp_path / "certs" / "server-root-ca.pem"
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])
        path = write_demo_template(
            tmp_path,
            strict_port=strict,
            passthrough_port=passthrough,
            backend_host="127.0.0.1",
            backend_port=stub_port,
        )
        with started(["run", "-f", str(path), "-p", "@parameters.json"], cwd=tmp_path) as process:
            while _ready_count(process) < 2:
                assert process.popen.poll() is None, process.describe()
                time.sleep(0.02)
            ctx = ssl.create_default_context(cafile=str(cafile))
            raw = socket.create_connection(("127.0.0.1", passthrough), timeout=RELOAD_TIMEOUT_S)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
                first = _read_response(tls)
                assert first.status == 200
                assert first.getheader("Connection") == "keep-alive"  # kept alive (nginx says so)
                # The next request has begun (its head is not complete) when the reload comes.
                tls.sendall(b"GET /second HTTP/1.1\r\nHost: localhost\r\n")
                time.sleep(0.1)
                process.popen.send_signal(signal.SIGHUP)
                _wait_stderr(process, "reloaded ")
                tls.sendall(b"\r\n")
                second = _read_response(tls)
                assert second.status == 200
                assert second.getheader("Connection") == "close"
                assert tls.recv(1) == b""  # and the connection is closed after it
            assert https_get(passthrough, cafile=cafile).status == 200  # the new gateway
            assert process.stop() == 0
            assert_no_traceback(process.stderr)
