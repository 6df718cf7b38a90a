"""Asking an OCSP responder over HTTP, for ``verifyClientRevocation: OCSP``.

The verify callback runs inside the TLS handshake and cannot wait for the network, so the proxy
calls :meth:`OcspChecker.check` after the handshake and before it routes the connection's first
request. The checker answers from its :class:`~emulator.core.tls.ocsp.OcspCache` when it can, else
POSTs the DER request (RFC 6960 appendix A.1, ``application/ocsp-request``) to the URL from the
certificate's AIA with h11, bounded by ``OCSP_TIMEOUT_S``, and checks the answer with
:func:`~emulator.core.tls.ocsp.evaluate_response`.

# Differs from Azure: the gateway documents that the first lookup may fail while its cache
# fills; here every lookup waits for the responder (up to the timeout), so results do not depend
# on timing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from emulator.core.tls.chain import OcspQuery
from emulator.core.tls.ocsp import OcspCache, OcspOutcome, build_request, evaluate_response
from emulator.logsafe import escaped_logger

__all__ = ["OCSP_TIMEOUT_S", "OcspChecker", "OcspFetchError", "fetch_ocsp"]

LOGGER = escaped_logger("emulator.ocsp")

#: Connect + request + response, seconds. nginx's resolver/OCSP timeouts are 30 s by default,
#: far longer than a request should hang in local testing; Azure does not document one.
OCSP_TIMEOUT_S: Final = 5.0
#: Largest response accepted; a signed OCSP answer with a responder certificate is ~2-4 KB.
MAX_RESPONSE_BYTES: Final = 64 * 1024
RECEIVE_SIZE: Final = 16384
DEFAULT_HTTP_PORT: Final = 80


class OcspFetchError(Exception):
    """The responder could not be asked or did not answer with an OCSP response."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def fetch_ocsp(url: str, request: bytes, *, timeout_s: float = OCSP_TIMEOUT_S) -> bytes:
    """POST ``request`` to ``url`` and return the response body (DER).

    Raises:
        OcspFetchError: unsupported URL, connection failure, timeout, non-200 status, too large.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        # OCSP over HTTPS would need OCSP to check the responder's own certificate; RFC 6960
        # and every public CA use plain HTTP.
        raise OcspFetchError(f"unsupported OCSP URL '{url}' (only http:// is supported)")
    host = parts.hostname
    port = parts.port or DEFAULT_HTTP_PORT
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                return await _exchange(stream, host, port, target, request)
    except trio.TooSlowError as exc:
        raise OcspFetchError(f"no answer from {url} within {timeout_s:g} s") from exc
    except OSError as exc:
        raise OcspFetchError(f"cannot reach {url}: {exc.strerror or exc}") from exc
    except (trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise OcspFetchError(f"broken HTTP exchange with {url}: {exc}") from exc


async def _exchange(
    stream: trio.SocketStream, host: str, port: int, target: str, request: bytes
) -> bytes:
    conn = h11.Connection(h11.CLIENT)
    host_header = host if port == DEFAULT_HTTP_PORT else f"{host}:{port}"
    out = conn.send(
        h11.Request(
            method="POST",
            target=target,
            headers=[
                ("Host", host_header),
                ("Content-Type", "application/ocsp-request"),
                ("Content-Length", str(len(request))),
                ("Connection", "close"),
            ],
        )
    )
    out = (out or b"") + (conn.send(h11.Data(data=request)) or b"")
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_RESPONSE_BYTES:
                raise OcspFetchError(f"OCSP response larger than {MAX_RESPONSE_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if status != 200:
        raise OcspFetchError(f"the responder answered HTTP {status}")
    return bytes(body)


class OcspChecker:
    """OCSP lookups with a cache shared by every connection of one gateway.

    Args:
        timeout_s: bound on one lookup.
        clock: the time used for response validity and the cache (tests inject one).
    """

    def __init__(
        self,
        *,
        timeout_s: float = OCSP_TIMEOUT_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.timeout_s = timeout_s
        self.cache = OcspCache()
        self._clock = clock
        #: Lookups that went to the network (tests use it to see the cache at work).
        self.fetches = 0

    async def check(self, query: OcspQuery) -> OcspOutcome:
        """The revocation status of ``query.certificate``; never raises for responder faults."""
        now = self._clock()
        cached = self.cache.get(query.certificate, query.issuer, at=now)
        if cached is not None:
            return cached
        self.fetches += 1
        try:
            der = await fetch_ocsp(
                query.url, build_request(query.certificate, query.issuer), timeout_s=self.timeout_s
            )
        except OcspFetchError as exc:
            LOGGER.info("ocsp.failed url=%s reason=%s", query.url, exc)
            return OcspOutcome.error(str(exc))
        outcome = evaluate_response(der, cert=query.certificate, issuer=query.issuer, at=now)
        LOGGER.info(
            "ocsp.answer url=%s serial=%X status=%s %s",
            query.url,
            query.certificate.serial_number,
            outcome.status.value,
            outcome.detail,
        )
        self.cache.put(query.certificate, query.issuer, outcome, at=now)
        return outcome
