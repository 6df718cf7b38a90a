"""The library API (issue #7): ``Gateway.from_template`` / ``from_config``, ``async with``, the
blocking twin ``emulator.sync.Gateway``, and that stopping either releases every thread, socket
and port.

Real parts throughout: the `up` gateway template, the PKI made at test time, the stub backend,
stdlib TLS clients.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

import backend_stub
import emulator
from emulator import sync
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.errors import StartupError
from emulator.loading import load_config, parse_backends
from emulator.model import BackendAddress, GatewayConfig
from emulator.pki import CA
from emulator.runtime.gateway import Gateway
from emulator.testing import RecordingBackend
from tests.helpers.pki import PFX_PASSWORD, PkiBundle
from tests.helpers.ports import port_is_free

POOL = "stub-backend"
LISTEN = {8443: 0, 9443: 0}


def template() -> dict[str, Any]:
    return demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )


def parameters(pki: PkiBundle, *, pfx: bytes | None = None) -> dict[str, object]:
    """As a mapping: bytes values are base64-encoded by the API, as template data fields expect."""
    return {
        "certData": pfx if pfx is not None else pki.server.pfx(PFX_PASSWORD),
        "certPassword": PFX_PASSWORD,
        "trustedClientCaData": pki.trusted_client_ca_pem,
    }


def client_ctx(server_ca: bytes, pki: PkiBundle, *, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=server_ca.decode())
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if with_cert:
        pki.client.configure_ssl_context(ctx)
    return ctx


def get(url_port: int, ctx: ssl.SSLContext, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("localhost", url_port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def open_sockets(*, local_ports: Collection[int], remote_ports: Collection[int] = ()) -> list[str]:
    """TCP sockets this process holds with one of ``local_ports`` or ``remote_ports`` (Linux).

    Scoped by port because other sockets come and go on their own schedule: the stub backend
    on its thread closes its end of a keep-alive connection only after it reads the EOF.
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the fd listdir itself used, closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[9] in inodes and (
                    local_port in local_ports or remote_port in remote_ports
                ):
                    found.append(f"{fields[1]} -> {fields[2]} state {fields[3]}")
    return found


def gateway_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "appgw-emulator-gateway"]


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    with RecordingBackend() as running:
        yield running


# -- async API -----------------------------------------------------------------------------------


async def test_from_template_serves_on_free_ports_and_logs_access(
    pki: PkiBundle, tmp_path: Path, nursery: trio.Nursery
) -> None:
    recorded: list[backend_stub.RecordedRequest] = []
    _host, backend_port = await nursery.start(
        functools.partial(backend_stub.serve, port=0, recorder=recorded.append)
    )
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(template()))
    gateway = Gateway.from_template(
        path,
        parameters(pki),
        backends={POOL: ("127.0.0.1", backend_port)},
        listen=LISTEN,
        server_ca=pki.server_root.cert_pem,
    )
    async with gateway as gw:
        assert gw is gateway
        port = gw.port(STRICT_LISTENER)
        assert port not in (0, 8443)
        assert gw.url(STRICT_LISTENER) == f"https://localhost:{port}/"
        assert gw.ports == {
            STRICT_LISTENER: port,
            PASSTHROUGH_LISTENER: gw.port(PASSTHROUGH_LISTENER),
        }
        ctx = client_ctx(gw.server_ca, pki)
        status, _body = await trio.to_thread.run_sync(get, port, ctx, "/orders?id=1")
        assert status == 200
        with trio.fail_after(5):
            await gw.wait_for_access(1)
        record = gw.access_log[-1]
        assert (record.listenerName, record.httpStatus, record.requestUri) == (
            STRICT_LISTENER,
            200,
            "/orders",
        )
        assert record.sslClientVerify == "SUCCESS"
    assert recorded[-1].certificate is not None
    assert recorded[-1].certificate.subject == "CN=appgw-test-client"


async def test_leaving_the_block_releases_every_port_and_socket(
    pki: PkiBundle, backend: RecordingBackend
) -> None:
    gateway = Gateway.from_config(
        template(), parameters(pki), backends={POOL: backend.address}, listen=LISTEN
    )
    async with gateway as gw:
        ports = set(gw.ports.values())
        assert not any(port_is_free(port) for port in ports)
        ctx = client_ctx(pki.server_root.cert_pem, pki)
        status, _ = await trio.to_thread.run_sync(get, gw.port(STRICT_LISTENER), ctx)
        assert status == 200
        # Listening sockets, and the pooled keep-alive connection to the backend.
        assert open_sockets(local_ports=ports, remote_ports={backend.port})
    assert all(port_is_free(port) for port in ports)
    assert open_sockets(local_ports=ports, remote_ports={backend.port}) == []


async def test_an_error_in_the_block_propagates_unwrapped_and_stops_the_gateway(
    pki: PkiBundle,
) -> None:
    gateway = Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    problem = LookupError("from the test")
    try:
        async with gateway:
            ports = list(gateway.ports.values())
            raise problem
    except LookupError as exc:
        assert exc is problem  # noqa: PT017 - identity is the point: not a wrapped copy
    else:
        pytest.fail("the block's exception was swallowed")
    assert all(port_is_free(port) for port in ports)


async def test_a_busy_port_raises_startup_error_and_binds_nothing(pki: PkiBundle) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        gateway = Gateway.from_config(template(), parameters(pki), listen={8443: 0, 9443: busy})
        with pytest.raises(StartupError) as caught:
            async with gateway:
                pytest.fail("the gateway started on a busy port")
        assert caught.value.error_code == "EmulatorPortInUse"
        strict_port = gateway.ports[STRICT_LISTENER]  # bound first, then released
        assert port_is_free(strict_port)
    # Not serving, so the instance can start again once the port is free.
    gateway.listen[9443] = 0
    async with gateway:
        assert gateway.port(PASSTHROUGH_LISTENER) != busy


async def test_serve_in_a_nursery_still_works(pki: PkiBundle) -> None:
    gateway = Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(gateway.serve)
        assert started is gateway
        with pytest.raises(RuntimeError, match="already serving"):
            async with gateway:
                pass
        nursery.cancel_scope.cancel()
    assert port_is_free(gateway.port(STRICT_LISTENER))


# -- construction and accessors ------------------------------------------------------------------


def test_from_config_takes_a_built_config_but_not_parameters_with_it(pki: PkiBundle) -> None:
    config = load_config(template(), parameters(pki))
    assert isinstance(config, GatewayConfig)
    gateway = Gateway.from_config(config, listen=LISTEN)
    assert gateway.listener_names == (STRICT_LISTENER, PASSTHROUGH_LISTENER)
    with pytest.raises(ValueError, match="already resolved"):
        Gateway.from_config(config, parameters(pki))


def test_parameters_may_be_cli_style_strings(pki: PkiBundle) -> None:
    strings = [
        "certData=" + base64.b64encode(pki.server.pfx(PFX_PASSWORD)).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(pki.trusted_client_ca_pem).decode(),
    ]
    gateway = Gateway.from_config(template(), strings, listen=LISTEN)
    assert gateway.config.name == "appgw-emulator-demo"


def test_listen_for_a_port_no_listener_uses_is_an_error(pki: PkiBundle) -> None:
    with pytest.raises(StartupError) as caught:
        Gateway.from_config(template(), parameters(pki), listen={8444: 0})
    assert caught.value.error_code == "EmulatorUnknownListenPort"
    assert "8443" in str(caught.value)


def test_backends_accept_strings_pairs_and_lists() -> None:
    parsed = parse_backends(
        {
            "a": "10.0.0.1:8080",
            "b": ("localhost", 9000),
            "c": ["10.0.0.2:81", ("10.0.0.3", 82), BackendAddress("h", 83)],
            "d": "[::1]:8080",
            "e": "backend.internal",
        }
    )
    assert parsed == {
        "a": (BackendAddress("10.0.0.1", 8080),),
        "b": (BackendAddress("localhost", 9000),),
        "c": (
            BackendAddress("10.0.0.2", 81),
            BackendAddress("10.0.0.3", 82),
            BackendAddress("h", 83),
        ),
        "d": (BackendAddress("::1", 8080),),
        "e": (BackendAddress("backend.internal", None),),
    }
    with pytest.raises(ValueError, match="pool 'x'"):
        parse_backends({"x": [42]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        parse_backends({"x": []})


def test_port_before_serving_says_so(pki: PkiBundle) -> None:
    gateway = Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    with pytest.raises(RuntimeError, match="not serving yet"):
        gateway.port(STRICT_LISTENER)
    with pytest.raises(ValueError, match="several listeners"):
        gateway.port()
    with pytest.raises(KeyError, match="no listener 'nope'"):
        gateway.port("nope")


def test_server_ca_is_the_leaf_when_the_pfx_carries_no_root(pki: PkiBundle) -> None:
    gateway = Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    assert gateway.server_ca == pki.server.cert_pem  # both listeners share it: listed once


def test_server_ca_is_the_root_when_the_pfx_carries_it(pki: PkiBundle) -> None:
    root = CA("library-api Server Root")
    issuing = root.intermediate("library-api Server Issuing CA")
    server = issuing.issue_server("localhost", "127.0.0.1")
    pfx = pkcs12.serialize_key_and_certificates(
        b"server", server.key, server.cert, [issuing.cert, root.cert], NoEncryption()
    )
    params = parameters(pki, pfx=pfx)
    params["certPassword"] = ""
    gateway = Gateway.from_config(template(), params, listen=LISTEN)
    assert gateway.server_ca == root.cert_pem
    assert root.cert.fingerprint(hashes.SHA256()) != server.cert.fingerprint(hashes.SHA256())


def test_server_ca_override_wins(pki: PkiBundle) -> None:
    override = pki.server_root.cert_pem
    gateway = Gateway.from_config(template(), parameters(pki), listen=LISTEN, server_ca=override)
    assert gateway.server_ca == override


def test_package_exports_resolve_lazily() -> None:
    assert emulator.Gateway is Gateway
    assert emulator.sync.Gateway is sync.Gateway
    from emulator import pki

    assert pki.CA is CA
    assert set(emulator.__all__) <= set(dir(emulator))


# -- the blocking twin ---------------------------------------------------------------------------


def test_sync_gateway_serves_blocking_clients_and_leaves_nothing_behind(
    pki: PkiBundle, backend: RecordingBackend
) -> None:
    threads_before = set(threading.enumerate())
    gateway = sync.Gateway.from_config(
        template(),
        parameters(pki),
        backends={POOL: backend.address},
        listen=LISTEN,
        server_ca=pki.server_root.cert_pem,
    )
    with gateway as gw:
        assert gw.thread is not None
        assert gw.thread.name == "appgw-emulator-gateway"
        status, _ = get(gw.port(STRICT_LISTENER), client_ctx(gw.server_ca, pki))
        assert status == 200
        status, body = get(gw.port(STRICT_LISTENER), client_ctx(gw.server_ca, pki, with_cert=False))
        assert status == 400
        assert b"No required SSL certificate was sent" in body
        gw.wait_for_access(2)
        assert [r.httpStatus for r in gw.access_log] == [200, 400]
        ports = set(gw.ports.values())
    assert backend.last.certificate is not None
    assert not gw.thread.is_alive()
    assert set(threading.enumerate()) <= threads_before
    assert all(port_is_free(port) for port in ports)
    assert open_sockets(local_ports=ports, remote_ports={backend.port}) == []


def test_sync_startup_error_is_raised_in_the_caller_with_no_thread_left(pki: PkiBundle) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        gateway = sync.Gateway.from_config(
            template(), parameters(pki), listen={8443: busy, 9443: 0}
        )
        with pytest.raises(StartupError, match="already in use"):
            gateway.start()
    assert gateway.thread is not None
    assert not gateway.thread.is_alive()
    assert gateway_threads() == []


def test_sync_wait_for_access_times_out_with_a_clear_message(pki: PkiBundle) -> None:
    gateway = sync.Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    with gateway, pytest.raises(TimeoutError, match=r"0 access records after 0\.05 s"):
        gateway.wait_for_access(1, timeout=0.05)
    assert gateway_threads() == []


def test_sync_gateway_can_start_again_after_close(pki: PkiBundle) -> None:
    gateway = sync.Gateway.from_config(template(), parameters(pki), listen=LISTEN)
    with gateway:
        first = gateway.port(STRICT_LISTENER)
    with gateway:
        assert gateway.port(STRICT_LISTENER) > 0
    assert port_is_free(first)
    assert gateway_threads() == []


async def test_sync_gateway_works_from_an_async_test(
    pki: PkiBundle, backend: RecordingBackend
) -> None:
    with sync.Gateway.from_config(
        template(), parameters(pki), backends={POOL: backend.address}, listen=LISTEN
    ) as gw:
        ctx = client_ctx(gw.server_ca, pki)
        status, _ = await trio.to_thread.run_sync(get, gw.port(PASSTHROUGH_LISTENER), ctx)
        assert status == 200
    assert gateway_threads() == []
