"""The dashboard's HTTP server: trio + h11, a handful of routes, static files from the package.

Routes: ``GET /`` (the page), ``GET /static/app.js`` and ``/static/app.css``, ``GET /api/config``,
``GET /api/requests`` and ``DELETE /api/requests`` (forget them), ``GET /api/server-ca`` (the
PEM a client must trust), ``GET /health`` and ``/health/live`` (:mod:`emulator.runtime.health`),
``POST /api/try``, ``POST /api/check-ca``. Every request is first checked
by :func:`emulator.dashboard.views.refusal` (``Host`` for all, ``Origin`` and content type for the
two POSTs). Responses are never cached and the page runs under a Content-Security-Policy that
allows only its own script and style: the table shows attacker-chosen text (certificate subjects,
URIs), which the script inserts as text, never as markup.

Resource ownership: :meth:`Dashboard.serve` owns its listening socket and every connection it
accepts; cancelling it closes them before it returns.
"""

from __future__ import annotations

import errno
import functools
import json
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from emulator.arm import bounded_json
from emulator.dashboard.defaults import DEFAULT_DASHBOARD_PORT, DEFAULT_TRY_PATH, check_try_path
from emulator.dashboard.identity import DemoIdentities
from emulator.dashboard.trying import try_identity
from emulator.dashboard.views import (
    BackendObservations,
    InputError,
    Refusal,
    check_ca_view,
    config_view,
    find_try_targets,
    parse_check_ca_input,
    refusal,
    request_view,
)
from emulator.errors import StartupError
from emulator.logsafe import escaped_logger
from emulator.runtime.health import HEALTH_PATH, LIVE_PATH, health_response

if TYPE_CHECKING:
    from emulator.runtime.gateway import Gateway

__all__ = ["DEFAULT_DASHBOARD_PORT", "Dashboard"]

LOGGER = escaped_logger("emulator.dashboard")

#: A request line plus headers beyond this is refused (a browser sends well under 8 KB).
MAX_HEAD_BYTES: Final = 16 * 1024
#: Request bodies: the inspector's upload, base64-encoded. check-ca itself flags any file over
#: Azure's 25 KB limit, so anything far beyond that is refused before parsing.
MAX_BODY_BYTES: Final = 1024 * 1024
#: A request must be whole (head and body) this long after the wait for it began, else the
#: connection is closed: one deadline per request, which bytes trickling in do not move (a
#: timeout per read would let a client sending a byte now and then hold a connection forever).
#: It also closes a keep-alive connection with no new request.
IDLE_TIMEOUT_S: Final = 30.0
RECEIVE_BYTES: Final = 64 * 1024
#: Rows ``/api/requests`` returns by default, and at most (``?limit=``).
DEFAULT_REQUEST_ROWS: Final = 100
MAX_REQUEST_ROWS: Final = 1000
SERVER_HEADER: Final = "appgw-emulator-dashboard"

_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_GET_API: Final = frozenset(
    {"/api/config", "/api/requests", "/api/server-ca", HEALTH_PATH, LIVE_PATH}
)
_POST_API: Final = frozenset({"/api/try", "/api/check-ca"})
#: The page's script and style come from this server only; nothing inline, nothing framed.
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_COMMON_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Server", SERVER_HEADER),
)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    extra: list[tuple[str, str]] = field(default_factory=list)
    #: Content-Length when it differs from the body's (a HEAD answer announces the GET's).
    length: int | None = None


class _BodyTooLarge(Exception):
    pass


def _json(status: int, document: object) -> _Response:
    return _Response(status, json.dumps(document, indent=1).encode("utf-8"))


def _error(status: int, message: str) -> _Response:
    return _json(status, {"error": message})


def _load_static() -> dict[str, bytes]:
    folder = resources.files("emulator.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name, _ in _STATIC.values()}


class Dashboard:
    """The dashboard for a running :class:`~emulator.runtime.gateway.Gateway`.

    Args:
        gateway: the gateway to show; it must be serving before a "try" can reach it.
        identities: the "try it" identities (:func:`emulator.dashboard.identities.load_identities`).
        observations: what the stub backend received, when it runs in this process (``up``).
        bind: address to listen on; loopback by default, the CLI warns about anything else.
        port: 0 picks a free port (read it back from :attr:`port`).
        port_flag: the command-line flag that sets the port, for a busy port's fix.
        allowed_hosts: further names a ``Host`` header may carry (``--dashboard-allowed-host``),
            for a dashboard reached through a published name; the DNS-rebinding check stays
            on for every other name.
        try_path: the path "try it" requests go to (``--try-path``), marker query appended.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        identities: DemoIdentities,
        observations: BackendObservations | None = None,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_DASHBOARD_PORT,
        port_flag: str = "--dashboard-port",
        allowed_hosts: tuple[str, ...] = (),
        try_path: str = DEFAULT_TRY_PATH,
    ) -> None:
        self.gateway = gateway
        self.try_path = check_try_path(try_path)
        self.identities = identities
        self.observations = observations
        self.bind = bind
        self.requested_port = port
        self.port_flag = port_flag
        self.port: int | None = None
        self._targets = find_try_targets(gateway.config)
        self._static = _load_static()
        # A name the user bound to (``--dashboard-bind myhost``) is also a valid Host, and so
        # is each ``--dashboard-allowed-host`` (a compose or Kubernetes service name).
        self._extra_hosts = (bind, *allowed_hosts)
        #: One inspector upload at a time: more would only share the same CPUs.
        self._inspector_limiter = trio.CapacityLimiter(1)

    @property
    def url(self) -> str:
        if self.port is None:
            msg = "the dashboard is not serving yet"
            raise RuntimeError(msg)
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the URL as started, serve until cancelled.

        Raises:
            StartupError: the port is busy or the address cannot be bound.
        """
        try:
            listeners = await trio.open_tcp_listeners(self.requested_port, host=self.bind)
        except OSError as exc:
            where = f"{self.bind}:{self.requested_port}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"the dashboard's port {where} is already in use",
                    fix=f"stop what uses it, or choose another port: {self.port_flag} PORT "
                    "(0 picks a free one)",
                    code="EmulatorPortInUse",
                ) from exc
            raise StartupError(
                f"cannot serve the dashboard on {where}: {exc.strerror or exc}",
                fix=f"check --dashboard-bind and {self.port_flag}",
                code="EmulatorBindFailed",
            ) from exc
        self.port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.url)
                await trio.serve_listeners(
                    self._serve_connection, listeners, handler_nursery=nursery
                )
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            while True:
                try:
                    request = await self._read_request(conn, stream)
                except _BodyTooLarge:
                    response = _error(413, f"request body over {MAX_BODY_BYTES} bytes")
                    await self._send(conn, stream, response, close=True)
                    return
                if request is None:
                    return
                try:
                    response = await self._respond(request)
                except Exception:
                    # A bug in one handler must not take down the gateway serving beside it.
                    LOGGER.exception(
                        "dashboard.handler_failed %s %s", request.method, request.target
                    )
                    response = _error(500, "internal error; the emulator's log has the details")
                if request.method == "HEAD":
                    response = _Response(
                        response.status,
                        b"",
                        response.content_type,
                        response.extra,
                        length=len(response.body),
                    )
                await self._send(conn, stream, response, close=False)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            LOGGER.debug("dashboard.bad_request: %s", exc)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                response = _error(exc.error_status_hint, str(exc))
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send(conn, stream, response, close=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            LOGGER.debug("dashboard.connection_closed")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> _Request | None:
        head: h11.Request | None = None
        body = bytearray()
        deadline = trio.current_time() + IDLE_TIMEOUT_S
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.fail_at(deadline):
                    data = await stream.receive_some(RECEIVE_BYTES)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    headers[name.decode("latin-1").lower()] = value.decode("latin-1")
                return _Request(
                    method=head.method.decode("ascii"),
                    target=head.target.decode("latin-1"),
                    headers=headers,
                    body=bytes(body),
                )

    async def _send(
        self, conn: h11.Connection, stream: trio.SocketStream, response: _Response, *, close: bool
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            (
                "Content-Length",
                str(len(response.body) if response.length is None else response.length),
            ),
            *_COMMON_HEADERS,
            *response.extra,
        ]
        if close:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode("ascii")
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data += conn.send(h11.Data(data=response.body)) if response.body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)

    # -- routing ------------------------------------------------------------------------------

    async def _respond(self, request: _Request) -> _Response:
        path = urlsplit(request.target).path
        deleting = path == "/api/requests" and request.method == "DELETE"
        state_changing = path in _POST_API or deleting
        refused: Refusal | None = refusal(
            request.method,
            request.headers,
            state_changing=state_changing,
            extra_hosts=self._extra_hosts,
            state_method="DELETE" if deleting else "POST",
        )
        if refused is not None:
            LOGGER.info(
                "dashboard.refused %s %s host=%r origin=%r: %s",
                request.method,
                path,
                request.headers.get("host"),
                request.headers.get("origin"),
                refused.reason,
            )
            response = _error(refused.status, refused.reason)
            if refused.status == 405:
                response.extra.append(("Allow", "POST"))
            return response
        if deleting:
            return self._clear_requests()
        if path in _STATIC or path in _GET_API:
            if request.method not in ("GET", "HEAD"):
                response = _error(405, "use GET")
                allow = "GET, HEAD, DELETE" if path == "/api/requests" else "GET, HEAD"
                response.extra.append(("Allow", allow))
                return response
            return self._get(path, request.target)
        if path == "/api/try":
            return await self._try(request)
        if path == "/api/check-ca":
            return await self._check_ca(request)
        return _error(404, f"no such page: {path}")

    def _get(self, path: str, target: str) -> _Response:
        now = datetime.now(UTC)
        if path in _STATIC:
            name, content_type = _STATIC[path]
            response = _Response(200, self._static[name], content_type)
            if name == "index.html":
                response.extra.append(("Content-Security-Policy", _CSP))
            return response
        health = health_response(path, self.gateway.readiness())
        if health is not None:
            return _json(*health)
        if path == "/api/server-ca":
            return _Response(200, self.server_ca(), "application/x-pem-file")
        if path == "/api/config":
            view = config_view(
                self.gateway.config,
                ports=self.gateway.ports,
                identities=self.identities,
                targets=self._targets,
                now=now,
            )
            view["backendObserved"] = self.observations is not None
            return _json(200, view)
        query = parse_qs(urlsplit(target).query)
        try:
            limit = int(query.get("limit", [str(DEFAULT_REQUEST_ROWS)])[0])
        except ValueError:
            return _error(400, "limit must be a number")
        limit = max(1, min(limit, MAX_REQUEST_ROWS))
        records = list(self.gateway.access_log)[-limit:]
        rows = [
            request_view(
                record,
                config=self.gateway.config,
                identities=self.identities,
                observations=self.observations,
                now=now,
            )
            for record in reversed(records)
        ]
        return _json(200, {"kept": len(self.gateway.access_log), "requests": rows})

    def show(self, gateway: Gateway) -> None:
        """Show ``gateway`` from now on (``run`` reloaded its configuration)."""
        self.gateway = gateway
        self._targets = find_try_targets(gateway.config)

    def server_ca(self) -> bytes:
        """The PEM a client must trust to reach the gateway's HTTPS listeners.

        What the listeners' PFX files carry, plus the demo PKI's server root when there is one
        (a PFX usually holds no root); each certificate once.
        """
        pems = [self.gateway.server_ca, self.identities.server_root_pem]
        blocks: list[bytes] = []
        for pem in pems:
            for block in pem.split(b"-----END CERTIFICATE-----"):
                text = block.strip()
                if text:
                    full = text + b"\n-----END CERTIFICATE-----\n"
                    if full not in blocks:
                        blocks.append(full)
        return b"".join(blocks)

    def _clear_requests(self) -> _Response:
        """``DELETE /api/requests``: forget the recent requests, so a test starts clean."""
        cleared = len(self.gateway.access_log)
        self.gateway.access_log.clear()
        if self.observations is not None:
            self.observations.clear()
        LOGGER.info("dashboard.requests_cleared count=%s", cleared)
        return _json(200, {"cleared": cleared})

    def _body(self, request: _Request) -> Any:
        try:
            return bounded_json.loads(request.body or b"null")
        except bounded_json.JsonTooDeep as exc:
            raise InputError(f"the body is refused: {exc}") from None
        except ValueError as exc:
            raise InputError(f"the body is not JSON: {exc}") from exc

    async def _try(self, request: _Request) -> _Response:
        try:
            body = self._body(request)
        except InputError as exc:
            return _error(400, str(exc))
        key = body.get("identity") if isinstance(body, dict) else None
        identity = self.identities.identities.get(key) if isinstance(key, str) else None
        if identity is None:
            known = ", ".join(self.identities.identities)
            message = f"'identity' must be one of: {known}"
            if self.identities.unavailable_reason:
                message += ". " + self.identities.unavailable_reason
            return _error(400, message)
        http2 = body.get("http2", False) if isinstance(body, dict) else False
        if not isinstance(http2, bool):
            return _error(400, "'http2' must be true or false")
        server_ca = self.gateway.server_ca + b"\n" + self.identities.server_root_pem
        LOGGER.info("dashboard.try identity=%s http2=%s", identity.spec.key, http2)
        results = await try_identity(
            self.gateway,
            self._targets,
            identity,
            server_ca=server_ca,
            path=self.try_path,
            http2=http2,
        )
        return _json(200, {"identity": identity.to_json(datetime.now(UTC)), "results": results})

    async def _check_ca(self, request: _Request) -> _Response:
        """The inspector: parsing certificates and opening a PFX is CPU work on untrusted
        input, so it runs in a worker thread, one upload at a time, while the event loop the
        gateway's listeners share keeps serving."""
        try:
            given = parse_check_ca_input(self._body(request))
        except InputError as exc:
            return _error(400, str(exc))
        view = await trio.to_thread.run_sync(
            functools.partial(check_ca_view, given, now=datetime.now(UTC)),
            limiter=self._inspector_limiter,
        )
        return _json(200, view)
