"""Timeouts and size limits of client connections: one frozen value per gateway.

The gateway is built with a :class:`ProxyLimits` (``Gateway(..., limits=...)``), hands it to
every port it serves, and the request path reads its numbers from there; nothing reads a
module constant at request time. The defaults are the gateway's (Azure's documented limits,
else nginx's defaults, as each field says); tests pass small values instead of waiting the
real ones out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

__all__ = ["ProxyLimits"]

_GIB: Final = 1024**3
_MIB: Final = 1024**2


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyLimits:
    """How long a client connection may take for each step, and how large a request may be.

    Raises:
        ValueError: a value is not positive (``__post_init__``).
    """

    #: A client that has not finished its TLS handshake by then is dropped (nginx and hypercorn
    #: use similar values; Azure does not document one).
    handshake_timeout_s: float = 10.0
    #: The whole request line and headers within this → 408 (appgw-behaviour.md §7: "no
    #: request within 60 s"; nginx ``client_header_timeout``). One deadline per head, set when
    #: the wait for a connection's first request starts, or when the first byte of a
    #: keep-alive request arrives; bytes that trickle in never move it.
    request_header_timeout_s: float = 60.0
    #: Longest wait for the next bytes of a request body (nginx ``client_body_timeout``), per
    #: read as nginx's.
    client_body_timeout_s: float = 60.0
    #: Longest wait for one write to the client (a response piece of at most ~64 KB) to be
    #: taken (nginx ``send_timeout``). Differs from Azure: nginx re-arms it whenever the client
    #: accepts a few bytes; here each write has one deadline.
    client_send_timeout_s: float = 60.0
    #: An idle keep-alive connection is closed silently after this long.
    keepalive_idle_s: float = 120.0
    #: Lingering close after a gateway-generated 400: read and discard for at most
    #: ``linger_total_s``, stopping after ``linger_idle_s`` of silence (nginx lingering_close,
    #: shortened). ``linger_total_s`` also bounds the wait for a body the gateway drops.
    linger_total_s: float = 2.0
    linger_idle_s: float = 0.5
    #: Maximum request size on v2 (application-gateway limits: 4 GB); a longer body gets 413,
    #: as nginx's ``client_max_body_size``, before anything is forwarded when it is declared.
    max_request_body_bytes: int = 4 * _GIB
    #: A buffered request body stays in memory up to this, the rest goes to an unnamed
    #: temporary file (nginx ``client_body_buffer_size`` / ``client_body_temp_path``).
    request_body_memory_bytes: int = _MIB
    #: Response bytes a slow client has not taken yet stay in memory up to this per
    #: connection, then go to an unnamed temporary file (nginx ``proxy_buffers``).
    response_buffer_memory_bytes: int = _MIB
    #: At most this much of a response waits in the temporary file; past it the backend is
    #: read only as fast as the client reads (nginx ``proxy_max_temp_file_size``, 1 GB).
    response_buffer_file_bytes: int = _GIB
    #: Maximum request line + headers: 32 KB (Azure application gateway limits) → 414 when
    #: the request line alone is longer, else nginx's "400 Request Header Or Cookie Too Large".
    max_request_header_bytes: int = 32 * 1024
    #: Header fields per request; one more → nginx's 494 page (HTTP/2: 431). Differs from
    #: Azure: it documents no count
    #: (nginx is bounded only by the 32 KB); 1,000 is far above what clients send.
    max_request_header_fields: int = 1000
    #: A request the gateway answers itself (redirect, 404, 421) keeps its connection when its
    #: body is at most this long: it is read and dropped; a longer one closes the connection.
    discard_body_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not value > 0:
                msg = f"ProxyLimits.{item.name} must be positive, got {value!r}"
                raise ValueError(msg)
