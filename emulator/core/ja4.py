"""JA4 TLS client fingerprints, computed from the raw bytes of a client's ClientHello.

With the 2022 SSL policies Azure Application Gateway adds ``X-Azure-JA4-Fingerprint`` to every
request it forwards: the JA4 fingerprint (FoxIO's public specification,
https://github.com/FoxIO-LLC/ja4/blob/main/technical_details/JA4.md) of the ClientHello that
opened the connection. A backend that scores bots by it must see the value the real gateway would
compute, so the fingerprint is computed here from the bytes the client sent, never from what
OpenSSL later made of them.

A JA4 fingerprint has three parts, ``a_b_c``:

* ``a``: ``t`` (TLS over TCP), the 2-character TLS version (the highest non-GREASE value of the
  ``supported_versions`` extension, else the ClientHello's ``legacy_version``), ``d`` when an SNI
  extension is present else ``i``, the number of cipher suites and of extensions (GREASE
  excluded, SNI and ALPN included; two digits, at most 99), and the first and last characters of
  the first ALPN protocol (``00`` without one);
* ``b``: the first 12 hex digits of the SHA-256 of the cipher suites, 4-digit lowercase hex,
  sorted, comma-separated (``000000000000`` when there are none);
* ``c``: the same for the extensions, sorted, without SNI (``0000``) and ALPN (``0010``), then
  ``_`` and the signature algorithms in the order sent (no ``_`` when there are none).

GREASE values (RFC 8701) are ignored everywhere.

Sans-I/O: bytes in, strings out. The ClientHello may be split across several TLS records (a
post-quantum key share makes it larger than one Ethernet frame, and a client may also fragment it
on purpose); the records are reassembled before parsing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ClientHello",
    "ClientHelloError",
    "is_grease",
    "ja4",
    "ja4_from_records",
    "ja4_raw",
    "parse_client_hello",
    "parse_client_hello_records",
]

#: TLS record content type of handshake messages (RFC 8446 section 5.1).
_RECORD_HANDSHAKE: Final = 0x16
#: Record header: type (1), legacy version (2), length (2).
_RECORD_HEADER_LEN: Final = 5
#: Handshake message type of a ClientHello (RFC 8446 section 4).
_HANDSHAKE_CLIENT_HELLO: Final = 0x01
#: Handshake header: type (1), length (3).
_HANDSHAKE_HEADER_LEN: Final = 4
#: ClientHello.random is always 32 bytes.
_RANDOM_LEN: Final = 32

EXT_SERVER_NAME: Final = 0x0000
EXT_ALPN: Final = 0x0010
EXT_SIGNATURE_ALGORITHMS: Final = 0x000D
EXT_SUPPORTED_VERSIONS: Final = 0x002B

#: Two-character version codes (JA4 specification, "TLS and DTLS Version"); anything else: "00".
_VERSIONS: Final = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
#: A count that does not fit two digits is printed as this (the specification's cap).
_MAX_COUNT: Final = 99
#: Hex digits kept of each SHA-256 (the specification's truncation).
_HASH_LEN: Final = 12
_EMPTY_HASH: Final = "0" * _HASH_LEN
_ALPHANUMERIC: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class ClientHelloError(ValueError):
    """The bytes are not a complete, well-formed TLS ClientHello."""


def is_grease(value: int) -> bool:
    """True for the 16 GREASE values of RFC 8701: 0x0A0A, 0x1A1A … 0xFAFA."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


#: :func:`is_grease` as a set (0x0A0A, 0x1A1A, … 0xFAFA), to filter whole lists in one pass.
_GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The fields of a ClientHello that fingerprints and server variables need, as sent.

    Lists keep the client's order and its GREASE values; :func:`ja4` filters them.
    """

    legacy_version: int
    cipher_suites: tuple[int, ...]
    #: Extension types in the order sent.
    extensions: tuple[int, ...]
    #: The host name of the SNI extension, when it has one.
    server_name: str | None
    #: The ALPN protocol names in the order sent (empty without the extension).
    alpn: tuple[bytes, ...]
    supported_versions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]


class _Reader:
    """A cursor over bytes that raises :class:`ClientHelloError` instead of reading past the end."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise ClientHelloError(f"truncated {self.what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.uint(length_size)), self.what)

    def u16_list(self, length_size: int) -> tuple[int, ...]:
        raw = self.take(self.uint(length_size))
        if len(raw) % 2:
            raise ClientHelloError(f"odd-length list of 16-bit values in {self.what}")
        # One struct call for the whole list: a ClientHello carries dozens of these values,
        # and the proxy parses one per connection.
        return struct.unpack(f">{len(raw) // 2}H", raw)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def parse_client_hello_records(records: bytes) -> ClientHello:
    """Parse the ClientHello carried by TLS handshake records (what a client sends first).

    Handshake records are joined until the ClientHello message is complete, so a ClientHello
    fragmented over several records parses like one in a single record. Bytes after it (another
    record the client sent early) are ignored.

    Raises:
        ClientHelloError: not handshake records, not a ClientHello, or incomplete.
    """
    handshake = bytearray()
    offset = 0
    while offset < len(records):
        if len(records) - offset < _RECORD_HEADER_LEN:
            break
        content_type = records[offset]
        length = int.from_bytes(records[offset + 3 : offset + 5], "big")
        if content_type != _RECORD_HANDSHAKE:
            if not handshake:
                raise ClientHelloError(f"record type {content_type:#04x} is not a handshake")
            break
        body = records[offset + _RECORD_HEADER_LEN : offset + _RECORD_HEADER_LEN + length]
        handshake += body
        offset += _RECORD_HEADER_LEN + length
        if len(handshake) >= _HANDSHAKE_HEADER_LEN:
            needed = _HANDSHAKE_HEADER_LEN + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= needed:
                return parse_client_hello(bytes(handshake[:needed]))
    raise ClientHelloError("the records end before the ClientHello does")


def parse_client_hello(message: bytes) -> ClientHello:
    """Parse one ClientHello handshake message (type, 3-byte length, body).

    Raises:
        ClientHelloError: not a ClientHello, or malformed.
    """
    head = _Reader(message, "handshake header")
    if head.uint(1) != _HANDSHAKE_CLIENT_HELLO:
        raise ClientHelloError("the handshake message is not a ClientHello")
    r = _Reader(head.take(head.uint(3)), "ClientHello")
    legacy_version = r.uint(2)
    r.take(_RANDOM_LEN)
    r.vector(1)  # legacy_session_id
    ciphers = r.u16_list(2)
    r.vector(1)  # legacy_compression_methods
    extensions: list[int] = []
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    # A TLS 1.0-1.2 ClientHello may end here: extensions are optional before TLS 1.3.
    if not r.done:
        block = r.vector(2)
        while not block.done:
            ext_type = block.uint(2)
            data = block.vector(2)
            extensions.append(ext_type)
            if ext_type == EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(data)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                versions = data.u16_list(1)
            elif ext_type == EXT_SIGNATURE_ALGORITHMS:
                sigalgs = data.u16_list(2)
    return ClientHello(
        legacy_version=legacy_version,
        cipher_suites=ciphers,
        extensions=tuple(extensions),
        server_name=server_name,
        alpn=alpn,
        supported_versions=versions,
        signature_algorithms=sigalgs,
    )


def _server_name(data: _Reader) -> str | None:
    """The host_name entry of a server_name extension (RFC 6066 section 3); None when empty."""
    if data.done:
        return None
    names = data.vector(2)
    while not names.done:
        name_type = names.uint(1)
        name = names.take(names.uint(2))
        if name_type == 0:
            return name.decode("ascii", errors="replace")
    return None


def _alpn(data: _Reader) -> tuple[bytes, ...]:
    protocols = data.vector(2)
    out: list[bytes] = []
    while not protocols.done:
        out.append(protocols.take(protocols.uint(1)))
    return tuple(out)


def _version(hello: ClientHello) -> str:
    offered = [v for v in hello.supported_versions if not is_grease(v)]
    version = max(offered) if offered else hello.legacy_version
    return _VERSIONS.get(version, "00")


def _alpn_chars(hello: ClientHello) -> str:
    if not hello.alpn or not hello.alpn[0]:
        return "00"
    first = hello.alpn[0]
    if first[0] in _ALPHANUMERIC and first[-1] in _ALPHANUMERIC:
        return chr(first[0]) + chr(first[-1])
    # A non-alphanumeric first or last byte: first and last digit of the value's hex form.
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _count(values: Sequence[int]) -> str:
    return f"{min(len(values), _MAX_COUNT):02d}"


def _hex_list(values: Sequence[int]) -> str:
    return ",".join(map("{:04x}".format, values))


def _parts(hello: ClientHello) -> tuple[str, str, str]:
    """JA4's ``a`` part and the two raw lists that ``b`` and ``c`` hash."""
    grease = _GREASE
    ciphers = [c for c in hello.cipher_suites if c not in grease]
    extensions = [e for e in hello.extensions if e not in grease]
    a = (
        "t"
        + _version(hello)
        + ("d" if EXT_SERVER_NAME in extensions else "i")
        + _count(ciphers)
        + _count(extensions)
        + _alpn_chars(hello)
    )
    b_raw = _hex_list(sorted(ciphers))
    hashed_extensions = sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    sigalgs = [s for s in hello.signature_algorithms if s not in grease]
    c_raw = _hex_list(hashed_extensions)
    if c_raw and sigalgs:
        c_raw += "_" + _hex_list(sigalgs)
    return a, b_raw, c_raw


def _truncated_sha256(text: str) -> str:
    if not text:
        return _EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:_HASH_LEN]


def ja4(hello: ClientHello) -> str:
    """The JA4 fingerprint, e.g. ``t13d1516h2_8daaf6152771_d8a2da3f94cd``."""
    a, b_raw, c_raw = _parts(hello)
    return f"{a}_{_truncated_sha256(b_raw)}_{_truncated_sha256(c_raw)}"


def ja4_raw(hello: ClientHello) -> str:
    """The unhashed form (the specification's ``JA4_r``): ``a``, then the sorted lists."""
    a, b_raw, c_raw = _parts(hello)
    return f"{a}_{b_raw}_{c_raw}"


def ja4_from_records(records: bytes) -> str | None:
    """JA4 of the ClientHello in ``records``, or None when they hold no complete ClientHello.

    None rather than an exception because the caller (the proxy) only adds a header: a client
    whose ClientHello cannot be parsed still completed a handshake OpenSSL accepted.
    """
    try:
        return ja4(parse_client_hello_records(records))
    except ClientHelloError:
        return None
