"""The access log's records: one per request that reached the HTTP layer.

Field names are Azure's (``ApplicationGatewayAccessLog``) where Azure has them; the emulator's
own additions say so. :func:`access_record` builds one from a request's facts and how it was
answered, and writes the access logger's one-line summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from emulator.core.certinfo import ClientCertInfo
from emulator.core.rewrite import RequestFacts
from emulator.core.routing import Route
from emulator.core.tls_policy import CertDecision
from emulator.logsafe import escaped_logger
from emulator.model import RoutingRule
from emulator.runtime.client_facts import timestamp

__all__ = ["AccessRecord", "access_record"]

ACCESS_LOGGER = escaped_logger("emulator.access")


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One served request, with the access log's field names where Azure has them."""

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


def access_record(
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
) -> AccessRecord:
    """The record of one request (``routed``: the backend's ``host:port``, "" when none), also
    written to the ``emulator.access`` logger."""
    current = route
    tls_on = tls
    user_agent = original_host = ""
    for name, value in facts.headers:  # one pass for both (the first of each, as nginx)
        lower = name.lower()
        if lower == "host":
            original_host = original_host or value
        elif lower == "user-agent":
            user_agent = user_agent or value
    record = AccessRecord(
        listenerName=listener,
        ruleName=rule.name if rule is not None else "",
        backendPoolName=current.pool.name if current and current.pool else "",
        clientIP=facts.client_ip,
        clientPort=facts.client_port,
        httpMethod=facts.method,
        requestUri=facts.path,
        httpStatus=status,
        sslEnabled="on" if tls_on else "off",
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
        timeStamp=timestamp(),
        httpVersion=f"HTTP/{facts.http_version}",
        originalRequestUriWithArgs=facts.target,
        requestQuery=facts.target.partition("?")[2],
        userAgent=user_agent,
        host=original_host.rsplit(":", 1)[0],
        originalHost=original_host,
        backendSettingName=current.settings.name if current and current.settings else "",
        clientCertFailureExplained=decision.explanation if decision else "",
    )
    if ACCESS_LOGGER.isEnabledFor(logging.INFO):
        ACCESS_LOGGER.info(
            '%s %s:%s "%s %s HTTP/%s" %s verify=%s backend=%s %.1fms',
            record.listenerName,
            record.clientIP,
            record.clientPort,
            record.httpMethod,
            facts.target,
            facts.http_version,
            status,
            record.sslClientVerify,
            routed or "-",
            record.timeTaken * 1000,
        )
    return record
