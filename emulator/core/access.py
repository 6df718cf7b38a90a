"""The access log's records: one per request that reached the HTTP layer.

Field names are Azure's (``ApplicationGatewayAccessLog``) where Azure has them; the emulator's
own additions say so. :func:`build_record` builds one from a request's facts, how it was
answered, and the request's :class:`RequestMeter` (bytes, times and the backend leg, which the
pump and the exchange fill in as the request goes). Sans I/O: the caller passes the time
stamp, and :func:`emulator.runtime.access_log.access_record` adds the clock and the access
logger's one-line summary. Meanings follow the monitoring reference
(monitor-application-gateway-reference,
"Access log category", v2): ``requestUri`` and ``host`` are the request *after* the rewrite,
``sslEnabled`` says whether the backend leg used TLS; the README's access-log table maps every
field to where its value comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from emulator.core.http.error_info import CLIENT_CLOSED_REQUEST, NO_ERROR, error_info_for_page
from emulator.core.http.pages import GatewayPage
from emulator.core.request.rewrite import RequestFacts
from emulator.core.request.routing import Route
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.core.tls.policy import CertDecision
from emulator.model import RoutingRule

__all__ = ["CLIENT_GONE_STATUS", "AccessRecord", "RequestMeter", "build_record"]

#: nginx's status for a client that left before the response (the record's httpStatus).
CLIENT_GONE_STATUS = 499


@dataclass(slots=True)
class RequestMeter:
    """What one request's access record needs beyond its facts, filled in as it is served
    (mutable: one per request, owned by the connection or stream serving it).

    Times are ``time.perf_counter()`` values (None: it did not happen).
    """

    #: Bytes of the request as received: request line, headers and body (nginx's
    #: ``$request_length``: framing included, e.g. chunk sizes).
    received_bytes: int = 0
    #: Bytes of the response written to the client (nginx's ``$bytes_sent``), head included.
    sent_bytes: int = 0
    first_sent: float | None = None
    last_sent: float | None = None
    #: The request went to the backend, and the backend's response head came back.
    backend_sent: float | None = None
    backend_answered: float | None = None
    #: The gateway's source port of the backend connection.
    upstream_port: int | None = None
    #: The backend leg used TLS (the reference's ``sslEnabled``).
    backend_tls: bool = False
    #: The response's Content-Type ("" when it has none).
    content_type: str = ""
    #: The reason code (``error_info``); "" means ERRORINFO_NO_ERROR.
    error_info: str = ""
    #: The request path and Host after the rewrite (None: not rewritten or not forwarded,
    #: the client's are logged).
    request_uri: str | None = None
    host: str | None = None

    def page_sent(self, page: GatewayPage) -> None:
        """The response is one of the gateway's pages: HTML, and the page's reason code unless
        the error behind it already named a more precise one."""
        self.content_type = "text/html"
        if not self.error_info:
            self.error_info = error_info_for_page(page)

    def sent(self, size: int, at: float) -> None:
        """``size`` bytes went to the client at ``at``."""
        if self.first_sent is None:
            self.first_sent = at
        self.last_sent = at
        self.sent_bytes += size


class AccessRecord(NamedTuple):
    """One served request, with the access log's field names where Azure has them.

    A named tuple rather than a frozen dataclass: one is built for every request, and a
    frozen dataclass of this many fields costs ~10 µs to build (a guarded attribute write per
    field), a tuple under 2 µs. Immutable all the same.
    """

    listenerName: str
    ruleName: str
    backendPoolName: str
    clientIP: str
    clientPort: int
    httpMethod: str
    requestUri: str
    httpStatus: int
    sslEnabled: str
    sslProtocol: str
    sslCipher: str
    sslClientVerify: str
    sslClientCertificateFingerprint: str
    sslClientCertificateIssuerName: str
    serverRouted: str
    serverStatus: str
    timeTaken: float
    transactionId: str
    clientCertSubject: str = ""
    #: ISO 8601 UTC time the request completed (the envelope's ``timeStamp``).
    timeStamp: str = ""
    httpVersion: str = ""
    originalRequestUriWithArgs: str = ""
    requestQuery: str = ""
    userAgent: str = ""
    host: str = ""
    originalHost: str = ""
    backendSettingName: str = ""
    #: Emulator-only: why a Strict client certificate failed, in words (empty otherwise).
    clientCertFailureExplained: str = ""
    receivedBytes: int = 0
    sentBytes: int = 0
    #: Seconds between the first and the last byte sent to the client.
    clientResponseTime: float = 0.0
    #: Seconds from sending the request to the backend to its response head, as the
    #: reference's sample writes it (a string with three decimals; "" when not proxied).
    serverResponseLatency: str = ""
    #: The backend connection's source port, a string as in the reference's sample.
    upstreamSourcePort: str = ""
    contentType: str = ""
    error_info: str = NO_ERROR


def build_record(
    facts: RequestFacts,
    status: int,
    elapsed_s: float,
    *,
    listener: str,
    rule: RoutingRule | None,
    route: Route | None,
    decision: CertDecision | None,
    cert: ClientCertInfo | None,
    tls: bool,
    routed: str,
    server_status: str,
    meter: RequestMeter | None = None,
    time_stamp: str = "",
) -> AccessRecord:
    """The record of one request (``routed``: the backend's ``host:port``, "" when none;
    ``time_stamp``: when it completed, ISO 8601 UTC).

    ``tls`` is whether the client's leg used TLS (``sslProtocol`` and ``sslCipher`` are that
    leg's); ``meter`` the request's bytes, times and backend leg."""
    current = route
    tls_on = tls
    meter = meter if meter is not None else RequestMeter()
    user_agent = original_host = ""
    for name, value in facts.headers:  # one pass for both (the first of each, as nginx)
        lower = name.lower()
        if lower == "host":
            original_host = original_host or value
        elif lower == "user-agent":
            user_agent = user_agent or value
    host = meter.host if meter.host is not None else original_host
    latency = ""
    if meter.backend_sent is not None and meter.backend_answered is not None:
        latency = f"{max(0.0, meter.backend_answered - meter.backend_sent):.3f}"
    response_time = 0.0
    if meter.first_sent is not None and meter.last_sent is not None:
        response_time = round(meter.last_sent - meter.first_sent, 3)
    record = AccessRecord(
        listenerName=listener,
        ruleName=rule.name if rule is not None else "",
        backendPoolName=current.pool.name if current and current.pool else "",
        clientIP=facts.client_ip,
        clientPort=facts.client_port,
        httpMethod=facts.method,
        requestUri=meter.request_uri if meter.request_uri is not None else facts.path,
        httpStatus=status,
        sslEnabled="on" if meter.backend_tls else "off",
        sslProtocol=(facts.tls_version or "") if tls_on else "",
        sslCipher=(facts.cipher or "") if tls_on else "",
        sslClientVerify=decision.ssl_client_verify if decision else "NONE",
        sslClientCertificateFingerprint=cert.fingerprint_sha1 if cert else "",
        sslClientCertificateIssuerName=cert.issuer if cert else "",
        serverRouted=routed,
        serverStatus=server_status,
        timeTaken=round(elapsed_s, 4),
        transactionId=facts.trace_id,
        clientCertSubject=cert.subject if cert else "",
        timeStamp=time_stamp,
        httpVersion=f"HTTP/{facts.http_version}",
        originalRequestUriWithArgs=facts.target,
        requestQuery=facts.target.partition("?")[2],
        userAgent=user_agent,
        host=_without_port(host),
        originalHost=original_host,
        backendSettingName=current.settings.name if current and current.settings else "",
        clientCertFailureExplained=decision.explanation if decision else "",
        receivedBytes=meter.received_bytes,
        sentBytes=meter.sent_bytes,
        clientResponseTime=response_time,
        serverResponseLatency=latency,
        upstreamSourcePort=str(meter.upstream_port) if meter.upstream_port is not None else "",
        contentType=meter.content_type,
        error_info=meter.error_info
        or (CLIENT_CLOSED_REQUEST if status == CLIENT_GONE_STATUS else NO_ERROR),
    )
    return record


def _without_port(host: str) -> str:
    """A Host value without its port (an IPv6 literal keeps its brackets)."""
    if host.endswith("]") or ":" not in host:
        return host
    return host.rsplit(":", 1)[0]
