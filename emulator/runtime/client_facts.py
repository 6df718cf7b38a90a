"""What every request of one client connection shares: its TLS facts, computed at first use.

The server variables (:mod:`emulator.core.request.server_variables`) read the negotiated version and
cipher, the ClientHello's JA4 and offered ciphers, and the TCP round-trip time; this module
gets them from the connection's TLS stream and socket, each once and only when a request needs
it. It also makes the per-request values the access record and the default headers need: the
trace id and the timestamp.
"""

from __future__ import annotations

import functools
import random
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Final

import trio
from cryptography import x509

from emulator.core.request.rewrite import RequestFacts
from emulator.core.request.server_variables import openssl_cipher_list
from emulator.core.tls.certinfo import ClientCertInfo
from emulator.core.tls.ja4 import ClientHello, ClientHelloError, parse_client_hello_records
from emulator.core.tls.ja4 import ja4 as ja4_fingerprint
from emulator.logsafe import escaped_logger
from emulator.model import Listener
from emulator.runtime.tls_stream import TlsServerStream
from emulator.runtime.transport import tcp_rtt_us

__all__ = ["ClientConnectionFacts", "cert_info", "timestamp", "trace_id"]

LOGGER = escaped_logger("emulator.proxy")


class ClientConnectionFacts:
    """What every request of one connection shares, each computed once and only when needed.

    The ClientHello, the negotiated version and cipher do not change during a connection, so
    parsing the ClientHello for every keep-alive request (JA4, ``ciphers_supported``) would
    repeat the same work; ``ciphers_supported`` is only formatted when a rule reads it. The
    TCP round-trip time does change, so ``tcp_rtt_us`` asks the kernel at each read — which
    only happens when a rule uses ``client_tcp_rtt``. Implements
    :class:`emulator.core.request.server_variables.ConnectionFacts`.
    """

    __slots__ = (
        "_certificate",
        "_cipher_codes",
        "_ciphers",
        "_hello_done",
        "_ja4",
        "_ja4_header",
        "_listener",
        "_peer",
        "_server_port",
        "_socket_stream",
        "_tls",
        "cipher",
        "tls_version",
    )

    def __init__(
        self,
        tls: TlsServerStream | None,
        stream: trio.abc.Stream,
        peer: tuple[str, int],
        *,
        listener: Listener,
        server_port: int,
        certificate: ClientCertInfo | None,
    ) -> None:
        self._tls = tls
        self._socket_stream = tls.transport_stream if tls is not None else stream
        self._listener = listener.name
        self._peer = peer
        self._server_port = server_port
        self._certificate = certificate
        # X-Azure-JA4-Fingerprint comes with the 2022 policies, which are also the ones that
        # offer TLS 1.3 (CustomV2 too: the docs are silent, it is the same family).
        self._ja4_header = listener.ssl_policy.tls13
        self._hello_done = False
        self._ja4: str | None = None
        self._cipher_codes = b""
        self._ciphers: str | None = None
        self.tls_version = tls.tls_version if tls is not None else None
        self.cipher = tls.cipher if tls is not None else None

    def request(
        self,
        method: str,
        target: str,
        version: str,
        headers: Sequence[tuple[str, str]],
        verification: str,
        *,
        received_bytes: int | None = None,
    ) -> RequestFacts:
        """One request's facts: the connection's and the request's own (a fresh trace id).
        ``received_bytes``: the request's length as received (``received_bytes``)."""
        return RequestFacts(
            client_ip=self._peer[0],
            client_port=self._peer[1],
            server_port=self._server_port,
            scheme="https" if self._tls is not None else "http",
            method=method,
            target=target,
            http_version=version,
            headers=headers,
            trace_id=trace_id(),
            tls_version=self.tls_version,
            cipher=self.cipher,
            certificate=self._certificate,
            verification=verification,
            ja4=self.ja4 if self._ja4_header else None,
            connection=self,
            received_bytes=received_bytes,
        )

    def _take_client_hello(self) -> None:
        """Parse the ClientHello once and keep only what the variables need — the JA4 and the
        offered cipher codes (2 bytes each) — then let the stream drop the raw records: an
        idle connection should not hold the 0.5 to 2 KB it no longer needs."""
        if self._hello_done:
            return
        self._hello_done = True
        tls = self._tls
        if tls is None:
            return
        try:
            hello: ClientHello | None = parse_client_hello_records(tls.client_hello)
        except ClientHelloError as exc:
            LOGGER.debug("tls.client_hello_unparsed listener=%s reason=%s", self._listener, exc)
            hello = None
        tls.forget_client_hello()
        if hello is not None:
            self._ja4 = ja4_fingerprint(hello)
            codes = hello.cipher_suites
            self._cipher_codes = struct.pack(f">{len(codes)}H", *codes)

    @property
    def ja4(self) -> str | None:
        self._take_client_hello()
        return self._ja4

    @property
    def ciphers_supported(self) -> str:
        if self._ciphers is None:
            self._take_client_hello()
            codes = self._cipher_codes
            self._ciphers = (
                openssl_cipher_list(
                    struct.unpack(f">{len(codes) // 2}H", codes), _openssl_cipher_names()
                )
                if codes
                else ""
            )
        return self._ciphers

    @property
    def tcp_rtt_us(self) -> int | None:
        return tcp_rtt_us(self._socket_stream)


#: Client certificates whose server variables are kept computed: clients reconnect with the
#: same certificate, and formatting the DNs and escaping the PEM would be redone per
#: connection (bench/README.md, "Costs behind the request path's caches").
CERT_INFO_CACHE_SIZE: Final = 256


@functools.lru_cache(maxsize=CERT_INFO_CACHE_SIZE)
def cert_info(leaf: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> ClientCertInfo:
    """:meth:`ClientCertInfo.from_certificates`, cached: certificates hash and compare by DER."""
    return ClientCertInfo.from_certificates(leaf, chain)


@functools.lru_cache(maxsize=2)
def _second_text(second: int) -> str:
    """``second`` (Unix time) as ISO 8601 UTC up to the seconds. Cached: a busy gateway stamps
    many records per second, and only their milliseconds differ."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def timestamp() -> str:
    """Now as the access record's ``timeStamp``: ISO 8601 UTC with milliseconds and ``Z``."""
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{_second_text(second)}.{nanoseconds // 1_000_000:03d}Z"


def trace_id() -> str:
    """A fresh ``X-AppGW-Trace-Id``: 32 lowercase hex digits.

    It correlates a request's log lines and headers; it is not a secret, so the process's
    Mersenne Twister serves (no ``getrandom`` system call per request, as ``secrets`` makes).
    The ``random`` module reseeds itself in a forked child, so workers never share a sequence.
    """
    return f"{random.getrandbits(128):032x}"


@functools.cache
def _openssl_cipher_names() -> dict[int, str]:
    """Cipher suite code → OpenSSL name, for ``ciphers_supported`` (nginx ``$ssl_ciphers``).

    Read once from the local OpenSSL with every suite enabled; the two signalling values are
    added by hand because OpenSSL names them but lists them nowhere.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    except ssl.SSLError:
        LOGGER.debug("the local OpenSSL refuses 'ALL:COMPLEMENTOFALL'; using its defaults")
    # ``id`` is 0x0300XXXX: the protocol's 0x03 byte, then the 2-byte code.
    names = {int(c["id"]) & 0xFFFF: str(c["name"]) for c in ctx.get_ciphers()}
    names.setdefault(0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV")
    names.setdefault(0x5600, "TLS_FALLBACK_SCSV")
    return names
