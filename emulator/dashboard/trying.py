"""The "try it" panel: real mutual-TLS requests from this process to the gateway's own listeners.

The browser never holds a client certificate: the dashboard loads the chosen demo identity's
certificate and key into a stdlib ``ssl`` context here, connects to the listener over TCP, does
the TLS handshake (presenting the certificate when the listener asks), sends one ``GET`` and
reads the answer with h11; or, when the panel asks for HTTP/2 and the gateway negotiates it
(``enableHttp2: true``), over one h2 stream (python-hyper's h2, imported on use). Each request
carries a fresh nonce in its query string, so its access record, and through the trace id what
the backend received, can be found afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import h11
import trio

from emulator.dashboard.defaults import DEFAULT_TRY_PATH
from emulator.dashboard.identity import Identity
from emulator.dashboard.views import TryTargets, received_cert_headers
from emulator.model import Listener

if TYPE_CHECKING:
    from emulator.core.access import AccessRecord
    from emulator.runtime.gateway import Gateway

__all__ = [
    "TRY_PATH",
    "TRY_TIMEOUT_S",
    "try_identity",
    "try_target",
]

#: Bound of one try request, connect to last byte. The listener is on this machine; a few
#: seconds only pass when an OCSP responder is slow (the gateway waits up to 5 s for it).
TRY_TIMEOUT_S: Final = 8.0
#: How long to look for the request's access record after the response: the gateway writes it
#: right after the response's last byte, so this is only a margin for a loaded machine.
RECORD_WAIT_S: Final = 2.0
RECORD_POLL_S: Final = 0.01
#: Response bytes kept for the page (the 400 page and the stub's JSON echo are a few KB).
MAX_BODY_BYTES: Final = 64 * 1024
RECEIVE_BYTES: Final = 16 * 1024
#: The query parameter that marks a try request; also visible in the live table's URI.
TRY_PARAMETER: Final = "appgw-dashboard-try"
TRY_PATH: Final = f"{DEFAULT_TRY_PATH}?{TRY_PARAMETER}="


def try_target(path: str, nonce: str) -> str:
    """``path`` with the try marker appended to its query (a query it has is kept)."""
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{TRY_PARAMETER}={nonce}"


USER_AGENT: Final = "appgw-emulator-dashboard"
_TITLE: Final = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "HTTP/1.1"


def _connect_host(bind: str) -> str:
    """Where this process reaches a listener bound to ``bind`` (a wildcard means loopback)."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def client_context(identity: Identity, server_ca: bytes, *, http2: bool = False) -> ssl.SSLContext:
    """A client context presenting ``identity`` and trusting the listeners' certificates.

    Host name checking is off on purpose: the request goes to this gateway's own socket, and a
    template's server certificate names the real site (``api.contoso.com``), not ``localhost``.
    The chain is still verified, against the listeners' trust anchors (``Gateway.server_ca``,
    which may be a leaf, hence ``VERIFY_X509_PARTIAL_CHAIN``) and the demo PKI's server root.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if server_ca.strip():
        ctx.load_verify_locations(cadata=server_ca.decode("ascii"))
    if identity.cert_path is not None and identity.key_path is not None:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    # http2: offered first, as a browser does; a gateway without enableHttp2 picks http/1.1.
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return ctx


async def _request(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    server_name: str,
    target: str,
    extra_headers: Sequence[tuple[str, str]] = (),
    user_agent: str = USER_AGENT,
) -> _Reply:
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=server_name)
    conn = h11.Connection(h11.CLIENT)
    try:
        await stream.do_handshake()
        if stream.selected_alpn_protocol() == "h2":
            return await _h2_request(
                stream,
                authority=f"{server_name}:{port}",
                target=target,
                headers=[("user-agent", user_agent), ("accept", "*/*"), *extra_headers],
            )
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", f"{server_name}:{port}"),
                ("User-Agent", user_agent),
                ("Accept", "*/*"),
                ("Connection", "close"),
                *extra_headers,
            ],
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, reason, headers, body = 0, "", [], bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECEIVE_BYTES)))
                continue
            if isinstance(event, h11.Response):
                status, reason = event.status_code, event.reason.decode("latin-1")
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data[: MAX_BODY_BYTES - len(body)]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return _Reply(status, reason, headers, bytes(body))
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _h2_request(
    stream: trio.SSLStream[trio.SocketStream],
    *,
    authority: str,
    target: str,
    headers: Sequence[tuple[str, str]],
) -> _Reply:
    """One GET on a fresh HTTP/2 connection (the client side of python-hyper's h2)."""
    import h2.events
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.exceptions import ProtocolError

    conn = H2Connection(H2Configuration(client_side=True, header_encoding="latin-1"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    fields = [(":method", "GET"), (":scheme", "https"), (":authority", authority)]
    fields += [(":path", target), *((name.lower(), value) for name, value in headers)]
    conn.send_headers(sid, fields, end_stream=True)
    status, found, body = 0, list[tuple[str, str]](), bytearray()
    try:
        while True:
            await stream.send_all(conn.data_to_send())
            data = bytes(await stream.receive_some(RECEIVE_BYTES))
            if not data:
                raise trio.BrokenResourceError("the gateway closed the HTTP/2 connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    for raw_name, raw_value in event.headers or ():
                        # header_encoding makes them str; h2's annotation says bytes.
                        name, value = str(raw_name), str(raw_value)
                        if name == ":status":
                            status = int(value)
                        else:
                            found.append((name, value))
                elif isinstance(event, h2.events.DataReceived):
                    body += (event.data or b"")[: MAX_BODY_BYTES - len(body)]
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    return _Reply(status, "", found, bytes(body), http_version="HTTP/2")
                elif isinstance(event, h2.events.StreamReset):
                    msg = f"the gateway reset the HTTP/2 stream (error {event.error_code})"
                    raise trio.BrokenResourceError(msg)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    msg = f"the gateway ended the HTTP/2 connection (error {event.error_code})"
                    raise trio.BrokenResourceError(msg)
    except ProtocolError as exc:
        raise trio.BrokenResourceError(f"HTTP/2 protocol error: {exc}") from exc


async def _access_record(gateway: Gateway, nonce: str) -> AccessRecord | None:
    # Polling, not wait_for_access: the log is a bounded deque whose length stops growing.
    with trio.move_on_after(RECORD_WAIT_S):
        while True:
            for record in reversed(gateway.access_log):
                if nonce in record.originalRequestUriWithArgs:
                    return record
            await trio.sleep(RECORD_POLL_S)
    return None


def _backend_echo(reply: _Reply) -> dict[str, Any] | None:
    """The stub backend's JSON description of what it received, when the body is one."""
    content_type = next((v for n, v in reply.headers if n.lower() == "content-type"), "")
    if "json" not in content_type:
        return None
    try:
        document = json.loads(reply.body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("headers"), list):
        return None
    return document


def _outcome(
    gateway: Gateway,
    listener: Listener,
    mode: str,
    reply: _Reply,
    record: AccessRecord | None,
) -> dict[str, Any]:
    text = reply.body.decode("utf-8", "replace")
    title = _TITLE.search(text)
    echo = _backend_echo(reply)
    cert_headers: list[list[str]] | None = None
    forwarded: Any = None
    if echo is not None:
        pairs: Sequence[tuple[str, str]] = [
            (str(item[0]), str(item[1])) for item in echo["headers"] if len(item) == 2
        ]
        rule = listener_rule(gateway, listener)
        cert_headers = received_cert_headers(gateway.config, rule, pairs)
        forwarded = echo.get("client_certificate")
    return {
        "listener": listener.name,
        "mode": mode,
        "port": gateway.ports.get(listener.name),
        "error": None,
        "status": reply.status,
        "reason": reply.reason,
        "httpVersion": reply.http_version,
        "page": title.group(1).strip() if title else None,
        "verification": record.sslClientVerify if record else None,
        "backendReached": bool(record.serverRouted) if record else echo is not None,
        "backendStatus": record.serverStatus if record else None,
        "explanation": (record.clientCertFailureExplained or None) if record else None,
        "traceId": record.transactionId if record else None,
        "certHeaders": cert_headers,
        "forwardedCertificate": forwarded,
        "body": text[:4000],
    }


def listener_rule(gateway: Gateway, listener: Listener) -> str:
    return next(r.name for r in gateway.config.rules if r.listener.name == listener.name)


async def _try_one(
    gateway: Gateway,
    listener: Listener,
    mode: str,
    identity: Identity,
    server_ca: bytes,
    path: str = DEFAULT_TRY_PATH,
    http2: bool = False,
) -> dict[str, Any]:
    nonce = secrets.token_hex(8)
    port = gateway.ports.get(listener.name)
    if port is None:
        return _failure(gateway, listener, mode, "the listener is not bound (is the gateway up?)")
    # SNI and Host pick the listener when several share a port; a wildcard name needs a label.
    server_name = listener.host_names[0] if listener.host_names else "localhost"
    server_name = server_name.replace("*", "dashboard-try")
    try:
        ctx = client_context(identity, server_ca, http2=http2)
        with trio.fail_after(TRY_TIMEOUT_S):
            reply = await _request(
                _connect_host(gateway.bind),
                port,
                ctx,
                server_name=server_name,
                target=try_target(path, nonce),
            )
    except (OSError, ssl.SSLError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        return _failure(gateway, listener, mode, f"{type(exc).__name__}: {exc}")
    except trio.TooSlowError:
        return _failure(gateway, listener, mode, f"no answer within {TRY_TIMEOUT_S} s")
    return _outcome(gateway, listener, mode, reply, await _access_record(gateway, nonce))


def _failure(gateway: Gateway, listener: Listener, mode: str, error: str) -> dict[str, Any]:
    return {
        "listener": listener.name,
        "mode": mode,
        "port": gateway.ports.get(listener.name),
        "error": error,
        "status": None,
    }


async def try_identity(
    gateway: Gateway,
    targets: TryTargets,
    identity: Identity,
    *,
    server_ca: bytes,
    path: str = DEFAULT_TRY_PATH,
    http2: bool = False,
) -> list[dict[str, Any]]:
    """Send ``identity`` to the Strict and the Passthrough listener at once; one result each.
    ``http2``: offer h2 by ALPN (used when the gateway has ``enableHttp2: true``).

    A mode the gateway has no listener for gets ``{"mode": ..., "listener": None, "error": ...}``.
    Network and TLS failures are results (with ``error``), not exceptions.
    """
    results: dict[str, dict[str, Any]] = {}

    async def run(mode: str, listener: Listener) -> None:
        results[mode] = await _try_one(gateway, listener, mode, identity, server_ca, path, http2)

    async with trio.open_nursery() as nursery:
        for mode, listener in targets.pairs():
            if listener is None:
                results[mode] = {
                    "listener": None,
                    "mode": mode,
                    "port": None,
                    "error": f"this gateway has no HTTPS listener with a {mode} SSL profile",
                    "status": None,
                }
            else:
                nursery.start_soon(run, mode, listener)
    return [results[mode] for mode, _ in targets.pairs()]
