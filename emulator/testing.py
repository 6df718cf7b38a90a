"""pytest plugin: a PKI, a recording backend and a running gateway per test, and a client.

Installing appgw-emulator registers this module through the ``pytest11`` entry point, so the
fixtures are there in every test suite of the environment:

``appgw_pki`` (session)
    :class:`AppgwPki`: a client CA hierarchy (root → issuing intermediate), a separate server
    root and a ``localhost`` server certificate, ready-made client certificates (``client``,
    ``expired``, ``not_yet_valid``, ``unrelated``, ``self_signed``) and
    :meth:`AppgwPki.issue_client` for more. EC P-256 keys throughout (the gateway's v2 TLS
    policies, e.g. AppGwSslPolicy20220101, carry ECDHE-ECDSA suites), because a P-256 key
    costs well under a millisecond where RSA 2048 costs tens; for RSA, issue your own with
    ``appgw_pki.issue_client(cn, key_type="rsa")``. Made once per session, lazily.
``appgw_backend``
    :class:`RecordingBackend`: the stub backend (:mod:`backend_stub`) in-process on a free
    port, recording every request with the parsed forwarded certificate.
``appgw_gateway``
    A factory: ``appgw_gateway("strict" | "passthrough")`` runs the ``appgw-emulator up``
    listener of that mode (forwarding the certificate in ``X-Client-Cert*`` headers) in front
    of ``appgw_backend``; ``appgw_gateway(template=path_or_dict_or_config, parameters=...)``
    runs your own gateway, every pool pointed at ``appgw_backend`` unless you say otherwise.
    Returns a started :class:`emulator.sync.Gateway` on free ports.
``appgw_client``
    A factory: ``appgw_client(gateway, cert=None)`` gives an :class:`AppgwClient` (stdlib
    ``http.client``) that trusts the gateway's server certificate and presents ``cert``.
``appgw_mode`` and ``@pytest.mark.appgw_modes("strict", "passthrough")``
    The mode ``appgw_gateway()`` uses; the marker runs the test once per mode (no arguments:
    both).

All fixtures are synchronous and run their trio loops on background threads, so they serve
plain ``def`` tests and ``async def`` tests under pytest-trio alike. At teardown every gateway
and backend a test started is stopped, and the fixture asserts that its thread has ended and
its ports can be bound again.

Why this module imports so little: pytest imports it in every run of every project installed
next to appgw-emulator. trio, pyOpenSSL and cryptography are imported inside the fixtures, and
the only global effect is registering the ``appgw_modes`` marker; no pytest setting changes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

import pytest

if TYPE_CHECKING:
    import os
    import ssl
    import threading

    from cryptography import x509

    from backend_stub import RecordedRequest
    from emulator.loading import BackendSpec, Parameters
    from emulator.model import GatewayConfig
    from emulator.pki import CA, IssuedCert
    from emulator.sync import Gateway, LoopThread

__all__ = [
    "MODES",
    "PFX_PASSWORD",
    "AppgwClient",
    "AppgwPki",
    "ClientFactory",
    "GatewayFactory",
    "RecordingBackend",
    "Response",
    "appgw_backend",
    "appgw_client",
    "appgw_gateway",
    "appgw_mode",
    "appgw_pki",
    "assert_released",
]

#: The SSL profile modes, spelled as the marker and ``appgw_gateway(mode)`` take them.
MODES: Final = ("strict", "passthrough")
#: Password of :attr:`AppgwPki.server_pfx`; a test PKI, so a fixed value is fine.
PFX_PASSWORD: Final = "appgw-emulator-test"
#: Seconds a client request may take before the test fails instead of hanging.
CLIENT_TIMEOUT_S: Final = 10.0
_MARKER: Final = "appgw_modes"
#: The ``up`` template's frontend ports; never bound as such, ``listen`` maps them to 0.
_DEMO_STRICT_PORT: Final = 8443
_DEMO_PASSTHROUGH_PORT: Final = 9443


def _normalise_mode(mode: str) -> str:
    lowered = mode.lower()
    if lowered not in MODES:
        msg = f"unknown SSL profile mode {mode!r}; use one of: {', '.join(MODES)}"
        raise ValueError(msg)
    return lowered


# -- PKI -----------------------------------------------------------------------------------------


class AppgwPki:
    """The session's certificates, each made on first use and then reused.

    Attributes are :class:`emulator.pki.CA` / :class:`emulator.pki.IssuedCert` objects, so
    ``.cert_pem``, ``.key_pem``, ``.chain_pem``, ``.pfx()`` and ``.configure_ssl_context()``
    are all there.
    """

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._configs: dict[str, GatewayConfig] = {}

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    @property
    def client_root(self) -> CA:
        """Root of the client hierarchy (the SSL profile's upload holds it)."""
        from emulator.pki import CA

        result: CA = self._once("client_root", lambda: CA("appgw-emulator Test Client Root CA"))
        return result

    @property
    def client_ca(self) -> CA:
        """The intermediate that issues the client certificates."""
        result: CA = self._once(
            "client_ca", lambda: self.client_root.intermediate("appgw-emulator Test Client CA")
        )
        return result

    @property
    def server_root(self) -> CA:
        """The separate root that issued the gateway's server certificate."""
        from emulator.pki import CA

        result: CA = self._once("server_root", lambda: CA("appgw-emulator Test Server Root CA"))
        return result

    @property
    def server(self) -> IssuedCert:
        """The listener certificate: SAN ``localhost``, ``127.0.0.1``, ``::1``."""
        result: IssuedCert = self._once(
            "server", lambda: self.server_root.issue_server("localhost", "127.0.0.1", "::1")
        )
        return result

    @property
    def server_ca(self) -> bytes:
        """PEM a client trusts to reach a gateway using :attr:`server`."""
        return self.server_root.cert_pem

    @property
    def server_pfx(self) -> bytes:
        """:attr:`server` as a PFX protected by :data:`PFX_PASSWORD` (a template's certData)."""
        result: bytes = self._once("server_pfx", lambda: self.server.pfx(PFX_PASSWORD))
        return result

    @property
    def trusted_client_ca_pem(self) -> bytes:
        """The SSL profile's upload: client root + intermediate, public certificates only."""
        return self.client_root.cert_pem + self.client_ca.cert_pem

    def _issued(self, name: str, make: Callable[[], IssuedCert]) -> IssuedCert:
        result: IssuedCert = self._once(name, make)
        return result

    @property
    def client(self) -> IssuedCert:
        """A valid client certificate, CN ``appgw-test-client``."""
        return self._issued("client", lambda: self.issue_client("appgw-test-client"))

    @property
    def expired(self) -> IssuedCert:
        """Issued by the trusted intermediate; validity ended yesterday."""
        return self._issued(
            "expired", lambda: self.issue_client("appgw-test-expired", expired=True)
        )

    @property
    def not_yet_valid(self) -> IssuedCert:
        """Issued by the trusted intermediate; valid from 30 days ahead."""
        return self._issued(
            "not_yet_valid", lambda: self.issue_client("appgw-test-future", not_yet_valid=True)
        )

    @property
    def unrelated_root(self) -> CA:
        """A root the gateway does not trust (it issued :attr:`unrelated`)."""
        from emulator.pki import CA

        result: CA = self._once("unrelated_root", lambda: CA("appgw-emulator Unrelated Root CA"))
        return result

    @property
    def unrelated(self) -> IssuedCert:
        """Valid, but from a root the gateway does not trust."""
        return self._issued(
            "unrelated", lambda: self.unrelated_root.issue_client("appgw-test-unrelated")
        )

    @property
    def self_signed(self) -> IssuedCert:
        """A self-signed client certificate, trusted by nobody."""
        from emulator.pki import self_signed_client

        return self._issued("self_signed", lambda: self_signed_client("appgw-test-self-signed"))

    def issue_client(self, common_name: str, **options: Any) -> IssuedCert:
        """A new client certificate from the trusted intermediate (not cached).

        ``options`` are :meth:`emulator.pki.CA.issue_client`'s (``expired=True``, ...).
        """
        return self.client_ca.issue_client(common_name, **options)

    def demo_parameters(self) -> dict[str, object]:
        """Parameters for the ``up`` gateway template (:mod:`emulator.arm.demo_template`)."""
        return {
            "certData": self.server_pfx,
            "certPassword": PFX_PASSWORD,
            "trustedClientCaData": self.trusted_client_ca_pem,
        }

    def mode_config(self, mode: str) -> GatewayConfig:
        """The ``up`` gateway reduced to its listener for ``mode``; built once per mode.

        Loading the template and opening the PFX is the one costly step of a gateway start,
        and it does not depend on the test, so the session keeps the result.
        """
        mode = _normalise_mode(mode)
        if mode not in self._configs:
            from dataclasses import replace

            from emulator.arm.demo_template import (
                PASSTHROUGH_LISTENER,
                STRICT_LISTENER,
                demo_template,
            )
            from emulator.loading import load_config

            template = demo_template(
                strict_port=_DEMO_STRICT_PORT,
                passthrough_port=_DEMO_PASSTHROUGH_PORT,
                backend_host="127.0.0.1",
                backend_port=80,
            )
            full = load_config(template, self.demo_parameters())
            keep = STRICT_LISTENER if mode == "strict" else PASSTHROUGH_LISTENER
            self._configs[mode] = replace(
                full,
                listeners=tuple(item for item in full.listeners if item.name == keep),
                rules=tuple(rule for rule in full.rules if rule.listener.name == keep),
            )
        return self._configs[mode]


# -- the recording backend -----------------------------------------------------------------------


class RecordingBackend:
    """The stub backend on a background thread, recording every request it answers.

    Args:
        trust_ca: when set (certificates, or PEM bytes holding a root), the backend enforces
            like a Passthrough backend should: 403 unless the forwarded certificate chains to
            it. ``None`` only records.
        cert_header: the header the gateway forwards the certificate in.
        host, port: where to listen; port 0 picks a free port.
    """

    def __init__(
        self,
        *,
        trust_ca: Sequence[x509.Certificate] | bytes | None = None,
        cert_header: str = "X-Client-Cert",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._trust_ca = trust_ca
        self._cert_header = cert_header
        self._host = host
        self._port = port
        self._recorded: list[RecordedRequest] = []
        self._bound: tuple[str, int] | None = None
        self._loop: LoopThread[tuple[str, int]] | None = None

    def start(self) -> Self:
        """Listen and serve in the background; returns once the port is bound."""
        from contextlib import asynccontextmanager
        from functools import partial

        import trio

        import backend_stub
        from emulator.sync import LoopThread

        trust = self._trust_ca
        if isinstance(trust, bytes):
            from cryptography import x509

            trust = x509.load_pem_x509_certificates(trust)
        config = backend_stub.StubConfig(
            cert_header=self._cert_header,
            trust_ca=tuple(trust) if trust is not None else None,
        )
        serve = partial(
            backend_stub.serve,
            config,
            host=self._host,
            port=self._port,
            recorder=self._recorded.append,
        )

        @asynccontextmanager
        async def serving() -> Any:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(serve)
                try:
                    yield bound
                finally:
                    nursery.cancel_scope.cancel()

        self._loop = LoopThread(serving, name="appgw-emulator-backend")
        self._bound = self._loop.start()
        return self

    def close(self) -> None:
        """Stop; the socket is closed and the thread joined when this returns."""
        if self._loop is not None:
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def thread(self) -> threading.Thread | None:
        return self._loop.thread if self._loop is not None else None

    @property
    def host(self) -> str:
        return self._address()[0]

    @property
    def port(self) -> int:
        return self._address()[1]

    @property
    def address(self) -> str:
        """``host:port``, the form ``backends=`` and ``--backend`` take."""
        host, port = self._address()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    def _address(self) -> tuple[str, int]:
        if self._bound is None:
            msg = "the backend has not been started"
            raise RuntimeError(msg)
        return self._bound

    @property
    def requests(self) -> tuple[RecordedRequest, ...]:
        """Every request received so far, oldest first (a snapshot).

        A request is recorded before it is answered, so once a client has its response the
        request is here.
        """
        return tuple(self._recorded)

    @property
    def last(self) -> RecordedRequest:
        """The most recent request.

        Raises:
            AssertionError: the backend received nothing (for example the gateway answered 400
                itself), so a test's ``backend.last`` line reads as the failed expectation.
        """
        if not self._recorded:
            msg = "the backend received no request"
            raise AssertionError(msg)
        return self._recorded[-1]


# -- the client ----------------------------------------------------------------------------------

_TITLE: Final = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response, read completely.

    The ``repr`` names the status, the request and, for the gateway's own error pages, the
    page title, so a failed ``assert response.status == 200`` says what the gateway answered.
    """

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: ``HTTP/1.1``, or ``HTTP/2`` for a client made with ``http2=True`` that negotiated it.
    http_version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (the stub backend's echo, for instance)."""
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        title = _TITLE.search(self.text) if self.body.lstrip().startswith(b"<") else None
        detail = f" ({title.group(1).strip()})" if title else ""
        return f"<Response {self.status} {self.reason}{detail} for {self.method} {self.url}>"


class AppgwClient:
    """A stdlib HTTPS client for one gateway listener, with an optional client certificate.

    Every request uses a new connection, so each one performs the TLS handshake (and the
    gateway's certificate check) afresh. The server is verified against ``server_ca`` with
    ``VERIFY_X509_PARTIAL_CHAIN``, so a leaf certificate works as the trust anchor too.

    ``http2=True`` sends over HTTP/2 when the gateway offers it (``enableHttp2: true``; else
    HTTP/1.1, as a browser would) through httpx, which the ``[http2]`` extra installs; the
    default client stays the standard library's.
    """

    def __init__(
        self,
        base_url: str,
        *,
        server_ca: bytes,
        cert: IssuedCert | None = None,
        timeout: float = CLIENT_TIMEOUT_S,
        http2: bool = False,
    ) -> None:
        from urllib.parse import urlsplit

        self.http2 = http2
        self.base_url = base_url
        self.cert = cert
        self.timeout = timeout
        parts = urlsplit(base_url)
        if parts.hostname is None:
            msg = f"not an absolute URL: {base_url!r}"
            raise ValueError(msg)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self.ssl_context = self._make_context(server_ca, cert) if self._https else None

    @staticmethod
    def _make_context(server_ca: bytes, cert: IssuedCert | None) -> ssl.SSLContext:
        import ssl

        ctx = ssl.create_default_context(cadata=server_ca.decode("ascii"))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if cert is not None:
            cert.configure_ssl_context(ctx)
        return ctx

    def request(
        self,
        method: str,
        path: str = "/",
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """Send one request and read the whole response."""
        if self.http2:
            return self._request_h2(method, path, headers=headers, body=body)
        import http.client

        connection: http.client.HTTPConnection
        if self.ssl_context is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, context=self.ssl_context, timeout=self.timeout
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        url = self.base_url.rstrip("/") + path
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            reply = connection.getresponse()
            return Response(
                method=method,
                url=url,
                status=reply.status,
                reason=reply.reason,
                headers=tuple(reply.getheaders()),
                body=reply.read(),
                http_version="HTTP/1.0" if reply.version == 10 else "HTTP/1.1",
            )
        finally:
            connection.close()

    def _request_h2(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None,
        body: bytes | None,
    ) -> Response:
        try:
            import httpx
        except ImportError as exc:
            msg = (
                "appgw_client(..., http2=True) needs httpx with h2: "
                "pip install 'appgw-emulator[http2]'"
            )
            raise RuntimeError(msg) from exc
        url = self.base_url.rstrip("/") + path
        verify: ssl.SSLContext | bool = self.ssl_context or False
        with httpx.Client(http2=True, verify=verify, timeout=self.timeout) as client:
            reply = client.request(method, url, headers=dict(headers or {}), content=body)
        return Response(
            method=method,
            url=url,
            status=reply.status_code,
            reason=reply.reason_phrase,
            headers=tuple(reply.headers.multi_items()),
            body=reply.content,
            http_version=reply.http_version,
        )

    def get(self, path: str = "/", *, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str = "/", body: bytes = b"", *, headers: Mapping[str, str] | None = None
    ) -> Response:
        return self.request("POST", path, headers=headers, body=body)


# -- fixtures ------------------------------------------------------------------------------------


class GatewayLike(Protocol):
    """What :class:`ClientFactory` needs: the sync or the async gateway both fit."""

    def url(self, listener: str | None = None, /) -> str: ...

    @property
    def server_ca(self) -> bytes: ...


class GatewayFactory(Protocol):
    """The ``appgw_gateway`` fixture's call signature."""

    def __call__(
        self,
        mode: str | None = None,
        *,
        template: str | os.PathLike[str] | Mapping[str, Any] | GatewayConfig | None = None,
        parameters: Parameters = (),
        backends: Mapping[str, BackendSpec] | None = None,
        backend: str | None = None,
        listen: Mapping[int, int] | None = None,
        gateway: str | None = None,
        server_ca: bytes | None = None,
    ) -> Gateway: ...


class ClientFactory(Protocol):
    """The ``appgw_client`` fixture's call signature."""

    def __call__(
        self,
        gateway: GatewayLike,
        cert: IssuedCert | None = None,
        *,
        listener: str | None = None,
        timeout: float = CLIENT_TIMEOUT_S,
        http2: bool = False,
    ) -> AppgwClient: ...


def assert_released(
    what: str, thread: threading.Thread | None, bind: str, ports: Sequence[int]
) -> None:
    """Teardown check: the thread ended and every port can be bound again.

    Public so a suite's own fixtures (a second backend, say) can make the same promise.

    Raises:
        AssertionError: naming ``what`` and the thread or port still in use.
    """
    if thread is not None and thread.is_alive():
        msg = f"{what}: thread {thread.name!r} still running after close"
        raise AssertionError(msg)
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # The same option the gateway binds with, so TIME_WAIT leftovers do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind, port))
            except OSError as exc:
                msg = f"{what}: port {port} on {bind} is still in use after close ({exc})"
                raise AssertionError(msg) from exc


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*modes): run the test once per SSL profile mode "
        f"({', '.join(MODES)}; default both) through the appgw_mode fixture",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is None:
        return
    if "appgw_mode" not in metafunc.fixturenames:
        msg = (
            f"{metafunc.definition.nodeid}: @pytest.mark.{_MARKER} needs the appgw_mode or "
            "appgw_gateway fixture"
        )
        raise pytest.UsageError(msg)
    modes = [_normalise_mode(str(mode)) for mode in marker.args] or list(MODES)
    metafunc.parametrize("appgw_mode", modes, ids=modes)


@pytest.fixture(scope="session")
def appgw_pki() -> AppgwPki:
    """The session's test PKI (EC P-256, made lazily, reused by every test)."""
    return AppgwPki()


@pytest.fixture
def appgw_mode() -> str:
    """The mode ``appgw_gateway()`` uses: ``strict`` unless ``@pytest.mark.appgw_modes``."""
    return "strict"


@pytest.fixture
def appgw_backend() -> Iterator[RecordingBackend]:
    """A recording stub backend on a free port, stopped (and checked) after the test."""
    backend = RecordingBackend().start()
    port = backend.port
    try:
        yield backend
    finally:
        backend.close()
        assert_released("appgw_backend", backend.thread, "127.0.0.1", [port])


@pytest.fixture
def appgw_gateway(
    appgw_pki: AppgwPki, appgw_backend: RecordingBackend, appgw_mode: str
) -> Iterator[GatewayFactory]:
    """Factory for running gateways; every one is stopped (and checked) after the test."""
    from emulator.loading import load_config
    from emulator.model import GatewayConfig
    from emulator.sync import Gateway

    started: list[Gateway] = []

    def make(
        mode: str | None = None,
        *,
        template: str | os.PathLike[str] | Mapping[str, Any] | GatewayConfig | None = None,
        parameters: Parameters = (),
        backends: Mapping[str, BackendSpec] | None = None,
        backend: str | None = None,
        listen: Mapping[int, int] | None = None,
        gateway: str | None = None,
        server_ca: bytes | None = None,
    ) -> Gateway:
        if template is None:
            config = appgw_pki.mode_config(mode or appgw_mode)
            if server_ca is None:
                server_ca = appgw_pki.server_ca
        elif mode is not None:
            msg = "mode applies to the built-in gateway; your template's SSL profile decides"
            raise ValueError(msg)
        elif isinstance(template, GatewayConfig):
            config = template
        else:
            config = load_config(template, parameters, gateway=gateway)
        if backends is None:
            target = backend if backend is not None else appgw_backend.address
            backends = {pool.name: target for pool in config.pools}
        if listen is None:
            listen = {rule.listener.frontend_port: 0 for rule in config.rules}
        running = Gateway.from_config(config, backends=backends, listen=listen, server_ca=server_ca)
        running.start()
        started.append(running)
        return running

    yield make

    failures: list[BaseException] = []
    for running in reversed(started):
        try:
            running.close()
            bind = running.async_gateway.bind
            assert_released("appgw_gateway", running.thread, bind, list(running.ports.values()))
        except BaseException as exc:  # close the others first, then report
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        msg = "several gateways failed to stop cleanly"
        raise BaseExceptionGroup(msg, failures)


@pytest.fixture
def appgw_client() -> ClientFactory:
    """Factory for HTTPS clients of a gateway, presenting a given client certificate (stdlib;
    ``http2=True``: httpx over HTTP/2, from the ``[http2]`` extra)."""

    def make(
        gateway: GatewayLike,
        cert: IssuedCert | None = None,
        *,
        listener: str | None = None,
        timeout: float = CLIENT_TIMEOUT_S,
        http2: bool = False,
    ) -> AppgwClient:
        return AppgwClient(
            gateway.url(listener),
            server_ca=gateway.server_ca,
            cert=cert,
            timeout=timeout,
            http2=http2,
        )

    return make
