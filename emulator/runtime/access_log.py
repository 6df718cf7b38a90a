"""Access records as Azure Application Gateway (v2) writes them, one JSON object per line.

``--access-log PATH`` (or ``stdout``, or ``stderr`` alias ``-``) on ``run`` and ``up`` writes
each request the gateway served in the shape of App Gateway's access log as a diagnostic
setting delivers it (appgw-behaviour.md §7b): an envelope (``timeStamp``, ``resourceId``
upper-cased, ``listenerName``, ``ruleName``, ``backendPoolName``, ``backendSettingName``,
``operationName: ApplicationGatewayAccess``, ``category: ApplicationGatewayAccessLog``) and
``properties`` with Azure's field names, so the same queries and parsers work on both.

The fields and their order are the v2 sample record of the monitoring reference
(monitor-application-gateway-reference, "Access log category"), with its types: byte counts,
``httpStatus`` and ``clientResponseTime`` are numbers; ``serverStatus``,
``serverResponseLatency`` and ``upstreamSourcePort`` are strings. The WAF fields
(``WAFEvaluationTime``, ``WAFMode``) are left out: the emulator is a Standard_v2 gateway,
without a WAF. One field is the emulator's own:
``properties.clientCertFailureExplained``, the sentence that says why a Strict certificate
failed (empty otherwise).

:func:`access_record` is where the request path gets its record: the pure
:func:`emulator.core.access.build_record` with the clock's time stamp, and the
``emulator.access`` logger's one-line summary.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, Any, Final

from emulator.core.access import AccessRecord, build_record
from emulator.core.request.rewrite import RequestFacts
from emulator.logsafe import escaped_logger
from emulator.runtime.client_facts import timestamp

__all__ = ["OPERATION_NAME", "AccessLogWriter", "access_log_entry", "access_record"]

ACCESS_LOGGER = escaped_logger("emulator.access")

OPERATION_NAME: Final = "ApplicationGatewayAccess"
CATEGORY: Final = "ApplicationGatewayAccessLog"
#: ``properties.instanceId``: Azure names the scale-set instance; there is one here.
INSTANCE_ID: Final = "appgw-emulator_0"
STDERR_TARGET: Final = "-"
#: ``--access-log stdout``: where a container's log collector reads (``stderr`` also works;
#: a file of that name is ``./stdout``).
STDOUT_TARGET: Final = "stdout"


def access_log_entry(record: AccessRecord, *, resource_id: str) -> dict[str, object]:
    """One access record in Azure's JSON shape (plain data)."""
    uri_with_args = record.originalRequestUriWithArgs or record.requestUri
    return {
        "timeStamp": record.timeStamp,
        "resourceId": resource_id.upper(),
        "listenerName": record.listenerName,
        "ruleName": record.ruleName,
        "backendPoolName": record.backendPoolName,
        "backendSettingName": record.backendSettingName,
        "operationName": OPERATION_NAME,
        "category": CATEGORY,
        "properties": {
            "instanceId": INSTANCE_ID,
            "clientIP": record.clientIP,
            "clientPort": record.clientPort,
            "httpMethod": record.httpMethod,
            "originalRequestUriWithArgs": uri_with_args,
            "requestUri": record.requestUri,
            "requestQuery": record.requestQuery,
            "userAgent": record.userAgent,
            "httpStatus": record.httpStatus,
            "httpVersion": record.httpVersion,
            "receivedBytes": record.receivedBytes,
            "sentBytes": record.sentBytes,
            "clientResponseTime": record.clientResponseTime,
            "timeTaken": record.timeTaken,
            "transactionId": record.transactionId,
            "sslEnabled": record.sslEnabled,
            "sslCipher": record.sslCipher,
            "sslProtocol": record.sslProtocol,
            "sslClientVerify": record.sslClientVerify,
            "sslClientCertificateFingerprint": record.sslClientCertificateFingerprint,
            "sslClientCertificateIssuerName": record.sslClientCertificateIssuerName,
            "serverRouted": record.serverRouted,
            "serverStatus": record.serverStatus,
            "serverResponseLatency": record.serverResponseLatency,
            "upstreamSourcePort": record.upstreamSourcePort,
            "originalHost": record.originalHost,
            "host": record.host,
            "error_info": record.error_info,
            "contentType": record.contentType,
            "clientCertFailureExplained": record.clientCertFailureExplained,
        },
    }


class AccessLogWriter:
    """A sink for the gateway's access records: appends JSON lines to a file, or stderr.

    The file is opened at construction (a bad path fails at startup, not at the first request)
    and flushed after every record so ``tail -f`` and tests see each request at once. Owns the
    file: :meth:`close` closes it (stderr is never closed).
    """

    def __init__(self, target: str | Path, *, resource_id: str) -> None:
        self.resource_id = resource_id
        self._stream: IO[str]
        if str(target) in (STDERR_TARGET, "stderr"):
            self._stream = sys.stderr
            self._owned = False
        elif str(target) == STDOUT_TARGET:
            self._stream = sys.stdout
            self._owned = False
        else:
            self._stream = Path(target).open("a", encoding="utf-8")  # noqa: SIM115 - owned
            self._owned = True

    def __call__(self, record: AccessRecord) -> None:
        line = json.dumps(access_log_entry(record, resource_id=self.resource_id))
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def access_record(facts: RequestFacts, status: int, elapsed_s: float, **how: Any) -> AccessRecord:
    """The record of one request, stamped now and written to the ``emulator.access`` logger
    (``how``: :func:`~emulator.core.access.build_record`'s keyword arguments)."""
    record = build_record(facts, status, elapsed_s, time_stamp=timestamp(), **how)
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
            record.serverRouted or "-",
            record.timeTaken * 1000,
        )
    return record
