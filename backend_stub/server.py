"""An HTTP/1.1 echo backend: every answer describes the request the gateway forwarded.

The stub stands in for the user's API behind the emulated Application Gateway. It answers each
request with a JSON document of what it received (method, target, headers in order with duplicates,
body size, the TCP peer) and, when the gateway forwarded a client certificate in a header
(``X-Client-Cert`` by default), what that certificate is. That is how a user sees what Azure would
send their backend, including the URL-encoded PEM of ``{var_client_certificate}``.

With ``trust_ca`` set the stub also *enforces*, the way a backend behind a Passthrough SSL profile
is meant to: the gateway lets every certificate through, so the backend verifies the forwarded leaf
against its own trust list and answers 403 when it does not chain, is expired or is missing. A
refused request gets that 403 whatever its path: no special path below runs for it.

Special paths, so tests can drive the gateway's error and streaming paths:

``/status/<code>``
    Answer with that status (200-599). 204 and 304 carry no body; others carry the usual JSON.
``/delay/<seconds>``
    Wait that long (decimal allowed, capped at ``MAX_DELAY_S``) before answering; the gateway's
    504 on backend timeout is tested with it.
``/bytes/<n>``
    Answer with ``n`` bytes of ``application/octet-stream`` (capped at ``MAX_STREAM_BYTES``), sent
    in ``STREAM_CHUNK_BYTES`` pieces of a repeating ``0123456789abcdef`` pattern, so a client can
    check both the streaming and the content.

Any other path gets the echo. A malformed special path (``/status/abc``) gets 400 with an
``error`` member, and a request the stub cannot parse gets 400 (431 for oversized headers).

Concurrency: one trio task per connection, keep-alive honoured, each wait for client bytes bounded
by ``IDLE_TIMEOUT_S``. A bad or vanishing client is logged and its connection closed; it never
stops the server. Request bodies are counted as they arrive and never held in memory.
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final

import h11
import trio
from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from backend_stub.certparse import (
    CertificateParseError,
    ParsedCertificate,
    parse_forwarded_certificate,
)

__all__ = [
    "DEFAULT_CERT_HEADER",
    "DEFAULT_CONFIG",
    "IDLE_TIMEOUT_S",
    "MAX_DELAY_S",
    "MAX_HEADER_BYTES",
    "MAX_STREAM_BYTES",
    "SERVER_NAME",
    "Authorization",
    "HeaderNameError",
    "RecordedRequest",
    "StubConfig",
    "StubConfigError",
    "StubError",
    "StubStartupError",
    "TrustFileError",
    "authorize",
    "load_trust_ca",
    "serve",
]

logger = logging.getLogger(__name__)

DEFAULT_CERT_HEADER: Final = "X-Client-Cert"
SERVER_NAME: Final = "appgw-emulator-backend-stub"
#: Largest request head (request line + headers) accepted; h11's own default is 16 KiB, raised
#: because a forwarded PEM chain in a header easily passes that. Beyond it the client gets 431.
#: h11 checks the limit against its buffer of unparsed bytes, so it is enforced to within one
#: socket read (``STREAM_CHUNK_BYTES``), not to the byte.
MAX_HEADER_BYTES: Final = 64 * 1024
#: How long a connection may stay silent (between requests or inside one) before it is closed.
#: nginx's default ``keepalive_timeout``, a value backends commonly run with.
IDLE_TIMEOUT_S: Final = 75.0
#: Upper bound of ``/delay/<seconds>``: long enough to pass any gateway timeout a test sets,
#: short enough that a typo cannot hang a test run.
MAX_DELAY_S: Final = 60.0
#: Upper bound of ``/bytes/<n>``: 100 MiB exercises streaming without letting a typo fill a disk.
MAX_STREAM_BYTES: Final = 100 * 1024 * 1024
#: Size of each body piece sent by ``/bytes/<n>`` and of each socket read.
STREAM_CHUNK_BYTES: Final = 64 * 1024
#: After answering with ``Connection: close``, how long to drain what the client still sends, so
#: closing with unread data does not reset the connection and destroy the answer in flight.
CLOSE_DRAIN_S: Final = 1.0

_STREAM_PATTERN: Final = b"0123456789abcdef"
# A whole number of patterns per chunk keeps every chunk aligned on the pattern.
_STREAM_BLOCK: Final = _STREAM_PATTERN * (STREAM_CHUNK_BYTES // len(_STREAM_PATTERN))
_STATUS_PATH: Final = re.compile(r"/status/(?P<arg>[^/]*)")
_DELAY_PATH: Final = re.compile(r"/delay/(?P<arg>[^/]*)")
_BYTES_PATH: Final = re.compile(r"/bytes/(?P<arg>[^/]*)")
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Statuses whose responses never carry a body (RFC 9110 §15.3.5, §15.4.5).
_BODYLESS_STATUSES: Final = frozenset({204, 304})
#: A header field name is an RFC 9110 §5.6.2 token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

Client = tuple[str, int]


class StubError(Exception):
    """Base of the errors the stub raises on purpose; the CLI prints them as one line."""


class StubConfigError(StubError):
    """The stub's configuration is unusable; subclasses say which part."""


class TrustFileError(StubConfigError):
    """The ``--trust-ca`` data cannot serve as a trust list.

    ``problem`` is ``"unreadable"``, ``"not_certificate"`` or ``"no_root"``; ``path`` is ``None``
    when the certificates were passed in memory (``StubConfig(trust_ca=...)``).
    """

    _TEMPLATES: ClassVar[dict[str, str]] = {
        "unreadable": "cannot read {source}: {detail}",
        "not_certificate": "{source} is not a certificate file (PEM bundle or DER): {detail}",
        "no_root": "{source} holds no self-signed (root) certificate to anchor a chain",
    }

    def __init__(self, path: Path | None, problem: str, detail: str = "") -> None:
        super().__init__(path, problem, detail)
        self.path = path
        self.problem = problem
        self.detail = detail

    def __str__(self) -> str:
        source = "the trusted CA list" if self.path is None else f"trusted CA file {self.path}"
        return self._TEMPLATES[self.problem].format(source=source, detail=self.detail)


class HeaderNameError(StubConfigError):
    """The certificate header name is not an HTTP field name (RFC 9110 §5.1)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"{self.name!r} is not a valid HTTP header name"


class StubStartupError(StubError):
    """The stub could not start serving (port busy, address not available)."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(host, port, detail)
        self.host = host
        self.port = port
        self.detail = detail

    def __str__(self) -> str:
        return f"cannot listen on {self.host}:{self.port}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StubConfig:
    """How the stub reads and judges the forwarded client certificate.

    Attributes:
        cert_header: the request header the gateway's rewrite rule puts the certificate in.
        trust_ca: when set, the stub enforces: roots are the self-signed certificates, the others
            serve as intermediates. ``None`` only reports.
        server_name: the ``Server`` response header, so a user can tell the stub answered.
    """

    cert_header: str = DEFAULT_CERT_HEADER
    trust_ca: tuple[x509.Certificate, ...] | None = None
    server_name: str = SERVER_NAME

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.cert_header):
            raise HeaderNameError(self.cert_header)
        if self.trust_ca is not None and not _roots(self.trust_ca):
            raise TrustFileError(None, "no_root")


@dataclass(frozen=True, slots=True)
class Authorization:
    """The stub's decision on a forwarded certificate under ``trust_ca``; ``reason`` says why."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the stub received it, handed to the ``recorder`` callback of :func:`serve`.

    Attributes:
        target: the request target exactly as sent (path and query, not decoded).
        path: the target up to ``?``.
        query: the target after ``?``, ``""`` when there is none.
        headers: ``(name, value)`` pairs in the order received, duplicates kept, names in the
            case the sender used; values decoded as Latin-1 (RFC 9110 §5.5 allows obs-text).
        body_bytes: size of the request body after de-chunking.
        client: the TCP peer, which behind the gateway is the gateway itself.
        certificate: the forwarded certificate when the header held one.
        certificate_error: why the header could not be read, when it was present but bad.
        http_version: ``"1.1"`` or ``"1.0"``.
        authorization: the enforcement decision; ``None`` when ``trust_ca`` is not set.
    """

    method: str
    target: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_bytes: int
    client: Client
    certificate: ParsedCertificate | None
    certificate_error: str | None
    http_version: str
    authorization: Authorization | None

    def header_values(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name`` (case-insensitive), in order received."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


Recorder = Callable[[RecordedRequest], None]

DEFAULT_CONFIG: Final = StubConfig()


def load_trust_ca(path: Path) -> tuple[x509.Certificate, ...]:
    """Read the backend's trusted CAs: a PEM bundle (one or more certificates) or one DER file.

    Raises:
        StubConfigError: the file cannot be read, holds no certificate, or has no self-signed root.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustFileError(path, "unreadable", exc.strerror or str(exc)) from exc
    # cryptography's parse errors name ASN.1 tags; the user needs to know which format failed.
    if b"-----BEGIN" in data:
        try:
            certificates = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            detail = "it is PEM but holds no readable CERTIFICATE block"
            raise TrustFileError(path, "not_certificate", detail) from exc
    else:
        try:
            certificates = (x509.load_der_x509_certificate(data),)
        except ValueError as exc:
            detail = "it is not PEM, and not DER that decodes as X.509"
            raise TrustFileError(path, "not_certificate", detail) from exc
    if not _roots(certificates):
        raise TrustFileError(path, "no_root")
    return certificates


def authorize(
    trust_ca: Sequence[x509.Certificate],
    *,
    certificate: ParsedCertificate | None,
    certificate_error: str | None,
    cert_header: str,
    now: datetime,
) -> Authorization:
    """Decide whether a forwarded certificate passes the backend's own trust check.

    Pure: the clock is a parameter. Validity dates are checked before the chain so the reason can
    name the exact date; the chain is then verified with ``cryptography``'s client verifier.
    """
    if certificate is None:
        if certificate_error is not None:
            return Authorization(allowed=False, reason=certificate_error)
        return Authorization(
            allowed=False,
            reason=f"no client certificate was forwarded in {cert_header}",
        )
    leaf = certificate.certificate
    if now < leaf.not_valid_before_utc:
        return Authorization(
            allowed=False,
            reason=f"client certificate is not yet valid: valid from {certificate.not_before}",
        )
    if now > leaf.not_valid_after_utc:
        return Authorization(
            allowed=False,
            reason=f"client certificate expired on {certificate.not_after}",
        )
    roots = _roots(trust_ca)
    intermediates = [cert for cert in trust_ca if cert not in roots]
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return Authorization(allowed=False, reason=_explain_verification_error(exc, certificate))
    chain = " <- ".join(cert.subject.rfc4514_string() for cert in verified.chain)
    return Authorization(allowed=True, reason=f"issued by a trusted CA (chain: {chain})")


# The web PKI profile demands a subjectAltName and an authorityKeyIdentifier on the leaf. Client
# certificates often have neither and OpenSSL, which the gateway and most backends use, does not
# ask for them, so they are optional here; the clientAuth EKU check stays.
_EE_POLICY: Final = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
)


def _roots(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    return [cert for cert in certificates if cert.subject == cert.issuer]


def _explain_verification_error(exc: VerificationError, certificate: ParsedCertificate) -> str:
    """Turn cryptography's terse verifier message into a sentence a backend developer can act on."""
    detail = str(exc).removeprefix("validation failed: ")
    detail = re.sub(r"\s*\(encountered processing <Certificate.*\)$", "", detail, flags=re.DOTALL)
    if "candidates exhausted" in detail:
        return (
            f"client certificate is not issued by a trusted CA: its issuer {certificate.issuer}"
            " does not chain to a certificate in the trusted CA file"
        )
    if "required EKU not found" in detail:
        return "client certificate's extended key usage does not allow client authentication"
    if "not valid at validation time" in detail:
        return f"a certificate in the chain is outside its validity period ({detail})"
    return f"client certificate failed verification: {detail}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to answer, decided from the request before any byte is sent."""

    status: int
    delay_s: float = 0.0
    stream_bytes: int | None = None
    error: str | None = None


def _plan(path: str, authorization: Authorization | None) -> _Plan:
    if authorization is not None and not authorization.allowed:
        return _Plan(status=403)
    if match := _STATUS_PATH.fullmatch(path):
        arg = match["arg"]
        if not arg.isdigit() or not 200 <= int(arg) <= 599:
            return _Plan(status=400, error=f"/status/ needs a status code 200-599, got {arg!r}")
        return _Plan(status=int(arg))
    if match := _DELAY_PATH.fullmatch(path):
        arg = match["arg"]
        if not _DECIMAL.fullmatch(arg):
            return _Plan(status=400, error=f"/delay/ needs a number of seconds, got {arg!r}")
        return _Plan(status=200, delay_s=min(float(arg), MAX_DELAY_S))
    if match := _BYTES_PATH.fullmatch(path):
        arg = match["arg"]
        if not arg.isdigit() or int(arg) > MAX_STREAM_BYTES:
            return _Plan(
                status=400,
                error=f"/bytes/ needs a byte count 0-{MAX_STREAM_BYTES}, got {arg!r}",
            )
        return _Plan(status=200, stream_bytes=int(arg))
    return _Plan(status=200)


def _document(request: RecordedRequest, config: StubConfig, plan: _Plan) -> dict[str, object]:
    certificate: dict[str, str] | None = None
    if request.certificate is not None:
        parsed = request.certificate
        certificate = {
            "subject": parsed.subject,
            "issuer": parsed.issuer,
            "serial": parsed.serial,
            "not_before": parsed.not_before,
            "not_after": parsed.not_after,
            "sha1_fingerprint": parsed.sha1_fingerprint,
            "header": config.cert_header,
        }
    authorization: dict[str, object] | None = None
    if request.authorization is not None:
        authorization = {
            "allowed": request.authorization.allowed,
            "reason": request.authorization.reason,
        }
    document: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "target": request.target,
        "http_version": request.http_version,
        "headers": [[name, value] for name, value in request.headers],
        "client": {"host": request.client[0], "port": request.client[1]},
        "body_bytes": request.body_bytes,
        "client_certificate": certificate,
        "client_certificate_error": request.certificate_error,
        "authorization": authorization,
    }
    if plan.error is not None:
        document["error"] = plan.error
    return document


def _read_certificate(
    headers: Sequence[tuple[str, str]], cert_header: str
) -> tuple[ParsedCertificate | None, str | None]:
    wanted = cert_header.lower()
    values = [value for name, value in headers if name.lower() == wanted]
    if not values:
        return None, None
    if len(values) > 1:
        return None, (
            f"{cert_header} was sent {len(values)} times; a gateway forwards one certificate"
        )
    try:
        return parse_forwarded_certificate(values[0]), None
    except CertificateParseError as exc:
        return None, str(exc)


def _reason_phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class _UnexpectedEventError(Exception):
    """h11 produced an event this state cannot have; a bug here, never the client's fault."""

    def __init__(self, event: object, where: str) -> None:
        super().__init__(event, where)
        self.event = event
        self.where = where

    def __str__(self) -> str:
        return f"h11 gave {self.event!r} {self.where}"


class _IdleTimeoutError(Exception):
    """The client stayed silent for ``IDLE_TIMEOUT_S``."""


class _Connection:
    """Serves the requests of one client connection, one after the other (no pipelining races:
    h11 queues a pipelined request until the current response is done)."""

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        client: Client,
        config: StubConfig,
        recorder: Recorder | None,
    ) -> None:
        self._stream = stream
        self._client = client
        self._config = config
        self._recorder = recorder
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def run(self) -> None:
        """Serve until the client closes, goes silent, errs, or a response ends with close.

        Does not close the stream; the caller owns it.
        """
        while True:
            try:
                event = await self._next_event()
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    raise _UnexpectedEventError(event, "where a request starts")
                await self._answer(event)
            except h11.RemoteProtocolError as exc:
                await self._reject(exc)
                return
            if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
                self._conn.start_next_cycle()
            else:
                await self._close_gracefully()
                return

    async def _next_event(self) -> h11.Event:
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_after(IDLE_TIMEOUT_S) as scope:
                    data = await self._stream.receive_some(STREAM_CHUNK_BYTES)
                if scope.cancelled_caught:
                    raise _IdleTimeoutError
                self._conn.receive_data(data)
                continue
            if isinstance(event, h11.Event):
                return event
            raise _UnexpectedEventError(event, "while reading")

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def _answer(self, request: h11.Request) -> None:
        if self._conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        body_bytes = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body_bytes += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _UnexpectedEventError(event, "inside a request body")

        recorded = self._record(request, body_bytes)
        if self._recorder is not None:
            self._recorder(recorded)
        plan = _plan(recorded.path, recorded.authorization)
        if plan.delay_s:
            await trio.sleep(plan.delay_s)
        head_only = recorded.method == "HEAD"
        if plan.stream_bytes is not None:
            await self._stream_bytes(plan.stream_bytes, head_only=head_only)
        else:
            document = _document(recorded, self._config, plan)
            body = (json.dumps(document, indent=2) + "\n").encode("utf-8")
            await self._send_whole(plan.status, body, head_only=head_only)
        logger.info(
            '%s:%d "%s %s HTTP/%s" %d body=%d certificate=%s%s',
            self._client[0],
            self._client[1],
            recorded.method,
            recorded.target,
            recorded.http_version,
            plan.status,
            recorded.body_bytes,
            recorded.certificate.subject if recorded.certificate else "none",
            _authorization_note(recorded),
        )
        if recorded.certificate_error is not None:
            logger.debug("certificate header unreadable: %s", recorded.certificate_error)

    def _record(self, request: h11.Request, body_bytes: int) -> RecordedRequest:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw_items()
        )
        certificate, certificate_error = _read_certificate(headers, self._config.cert_header)
        authorization = None
        if self._config.trust_ca is not None:
            authorization = authorize(
                self._config.trust_ca,
                certificate=certificate,
                certificate_error=certificate_error,
                cert_header=self._config.cert_header,
                now=datetime.now(UTC),
            )
        return RecordedRequest(
            method=request.method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            headers=headers,
            body_bytes=body_bytes,
            client=self._client,
            certificate=certificate,
            certificate_error=certificate_error,
            http_version=request.http_version.decode("ascii"),
            authorization=authorization,
        )

    def _headers(self, content_type: str, length: int | None) -> list[tuple[str, str]]:
        headers = [("Server", self._config.server_name)]
        if length is not None:
            headers += [("Content-Type", content_type), ("Content-Length", str(length))]
        return headers

    async def _send_whole(
        self,
        status: int,
        body: bytes,
        *,
        head_only: bool,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        bodyless = status in _BODYLESS_STATUSES
        headers = self._headers("application/json", None if bodyless else len(body))
        headers += extra_headers
        await self._send(
            h11.Response(status_code=status, headers=headers, reason=_reason_phrase(status))
        )
        if not (bodyless or head_only):
            await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _stream_bytes(self, total: int, *, head_only: bool) -> None:
        headers = self._headers("application/octet-stream", total)
        await self._send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        remaining = 0 if head_only else total
        while remaining:
            chunk = _STREAM_BLOCK[: min(remaining, STREAM_CHUNK_BYTES)]
            await self._send(h11.Data(data=chunk))
            remaining -= len(chunk)
        await self._send(h11.EndOfMessage())

    async def _reject(self, exc: h11.RemoteProtocolError) -> None:
        """Answer a request h11 could not parse, if the connection still allows an answer."""
        logger.warning(
            "%s:%d bad request: %s (answering %d)",
            self._client[0],
            self._client[1],
            exc,
            exc.error_status_hint,
        )
        if self._conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return
        body = (json.dumps({"error": f"bad request: {exc}"}) + "\n").encode("utf-8")
        await self._send_whole(
            exc.error_status_hint, body, head_only=False, extra_headers=[("Connection", "close")]
        )
        await self._close_gracefully()

    async def _close_gracefully(self) -> None:
        """Half-close, then drain briefly so unread client bytes cannot reset the answer away."""
        await self._stream.send_eof()
        with trio.move_on_after(CLOSE_DRAIN_S):
            while await self._stream.receive_some(STREAM_CHUNK_BYTES):
                pass


def _authorization_note(recorded: RecordedRequest) -> str:
    if recorded.authorization is None:
        return ""
    verdict = "allowed" if recorded.authorization.allowed else "denied"
    return f" {verdict}: {recorded.authorization.reason}"


def _peer(stream: trio.SocketStream) -> Client:
    peer = stream.socket.getpeername()
    return (str(peer[0]), int(peer[1]))


async def _serve_connection(
    stream: trio.SocketStream, *, config: StubConfig, recorder: Recorder | None
) -> None:
    """Serve one connection and close it; never raises, so one client cannot stop the server."""
    async with stream:
        try:
            client = _peer(stream)
        except OSError as exc:
            logger.debug("client left before it could be served: %s", exc)
            return
        try:
            await _Connection(stream, client=client, config=config, recorder=recorder).run()
        except _IdleTimeoutError:
            logger.debug("%s:%d idle for %.0f s, closing", client[0], client[1], IDLE_TIMEOUT_S)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("%s:%d connection lost: %s", client[0], client[1], exc)
        except Exception:
            # The last line of defence for the server: log with the traceback, drop this client.
            logger.exception("%s:%d unexpected error, closing the connection", *client)


async def serve(
    config: StubConfig = DEFAULT_CONFIG,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    recorder: Recorder | None = None,
    task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve until cancelled.

    Reports ``(host, bound_port)`` through ``task_status`` once listening, so with ``port=0``
    ``await nursery.start(serve, ...)`` returns the port the OS chose. When ``host`` resolves to
    several addresses and ``port`` is 0, only the first is used (each would get a different port).
    ``recorder`` is called, in the connection's task, with every request before it is answered.
    Closes its listeners and connections when cancelled.

    Raises:
        StubStartupError: the address cannot be bound (port busy, unknown host), before
            ``task_status.started`` is called.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise StubStartupError(host, port, exc.strerror or str(exc)) from exc
    if port == 0:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    sockname = listeners[0].socket.getsockname()
    bound: Client = (str(sockname[0]), int(sockname[1]))

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, config=config, recorder=recorder)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        logger.debug("listening on %s:%d", *bound)
        task_status.started(bound)
