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

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from itertools import filterfalse
from struct import Struct, pack, unpack_from
from struct import error as struct_error
from typing import Final, TypeAlias

from emulator.core.bounded_cache import ClearingCache

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


#: What :func:`ja4` caches by: legacy version, cipher suites, extension types, first ALPN
#: protocol, supported versions and signature algorithms, all as sent.
_CacheKey: TypeAlias = tuple[
    int, tuple[int, ...], tuple[int, ...], bytes | None, tuple[int, ...], tuple[int, ...]
]


class ClientHelloError(ValueError):
    """The bytes are not a complete, well-formed TLS ClientHello."""


def is_grease(value: int) -> bool:
    """True for the 16 GREASE values of RFC 8701: 0x0A0A, 0x1A1A … 0xFAFA."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


#: :func:`is_grease` as a set (0x0A0A, 0x1A1A, … 0xFAFA), to filter whole lists in one pass.
_GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))
_IS_GREASE: Final = _GREASE.__contains__
#: Extensions left out of JA4's hashed extension list: GREASE, SNI and ALPN.
_IS_UNHASHED_EXTENSION: Final = (_GREASE | {EXT_SERVER_NAME, EXT_ALPN}).__contains__


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


#: Messages of :class:`ClientHelloError`, named once so every bounds check raises the same text.
_TRUNCATED_HEADER: Final = "truncated handshake header"
_TRUNCATED_BODY: Final = "truncated ClientHello"
_ODD_LIST: Final = "odd-length list of 16-bit values in ClientHello"
#: An extension's header: type and body length, both 16-bit.
_UNPACK_EXTENSION_HEADER: Final = Struct(">HH").unpack_from
#: The extensions whose bodies the parser reads; the others are stepped over.
_READ_EXTENSIONS: Final = frozenset(
    (EXT_SERVER_NAME, EXT_ALPN, EXT_SUPPORTED_VERSIONS, EXT_SIGNATURE_ALGORITHMS)
)
#: Where the ClientHello body starts when the first record holds the whole message.
_FIRST_BODY: Final = _RECORD_HEADER_LEN + _HANDSHAKE_HEADER_LEN


def parse_client_hello_records(records: bytes) -> ClientHello:
    """Parse the ClientHello carried by TLS handshake records (what a client sends first).

    Handshake records are joined until the ClientHello message is complete, so a ClientHello
    fragmented over several records parses like one in a single record. Bytes after it (another
    record the client sent early) are ignored.

    Raises:
        ClientHelloError: not handshake records, not a ClientHello, or incomplete.
    """
    # Nearly every client sends its whole ClientHello in the first record: parse it in place,
    # without copying, when that record holds the complete message.
    size = len(records)
    if size >= _FIRST_BODY and records[0] == _RECORD_HANDSHAKE:
        record_len = (records[3] << 8) | records[4]
        body_len = (records[6] << 16) | (records[7] << 8) | records[8]
        body_end = _FIRST_BODY + body_len
        if _HANDSHAKE_HEADER_LEN + body_len <= record_len and body_end <= size:
            if records[_RECORD_HEADER_LEN] != _HANDSHAKE_CLIENT_HELLO:
                raise ClientHelloError("the handshake message is not a ClientHello")
            return _parse_body(records, _FIRST_BODY, body_end)
    handshake = bytearray()
    offset = 0
    while offset < size:
        if size - offset < _RECORD_HEADER_LEN:
            break
        content_type = records[offset]
        length = (records[offset + 3] << 8) | records[offset + 4]
        if content_type != _RECORD_HANDSHAKE:
            if not handshake:
                raise ClientHelloError(f"record type {content_type:#04x} is not a handshake")
            break
        handshake += records[offset + _RECORD_HEADER_LEN : offset + _RECORD_HEADER_LEN + length]
        offset += _RECORD_HEADER_LEN + length
        if len(handshake) >= _HANDSHAKE_HEADER_LEN:
            needed = _HANDSHAKE_HEADER_LEN + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= needed:
                return parse_client_hello(bytes(handshake[:needed]))
    raise ClientHelloError("the records end before the ClientHello does")


def parse_client_hello(message: bytes) -> ClientHello:
    """Parse one ClientHello handshake message (type, 3-byte length, body).

    Bytes after the length the header announces are ignored.

    Raises:
        ClientHelloError: not a ClientHello, or malformed.
    """
    if not message:
        raise ClientHelloError(_TRUNCATED_HEADER)
    if message[0] != _HANDSHAKE_CLIENT_HELLO:
        raise ClientHelloError("the handshake message is not a ClientHello")
    if len(message) < _HANDSHAKE_HEADER_LEN:
        raise ClientHelloError(_TRUNCATED_HEADER)
    end = _HANDSHAKE_HEADER_LEN + int.from_bytes(message[1:4], "big")
    if end > len(message):
        raise ClientHelloError(_TRUNCATED_HEADER)
    return _parse_body(message, _HANDSHAKE_HEADER_LEN, end)


def _parse_body(buf: bytes, pos: int, end: int) -> ClientHello:
    """Parse the ClientHello body held in ``buf[pos:end]``.

    One function walking integer offsets over the caller's buffer: the proxy parses one
    ClientHello per connection, and a cursor object or a slice per field cost several times the
    parse itself. Every length is checked against the end of the vector that encloses it (the
    body, the extension block, one extension), so a lying length raises
    :class:`ClientHelloError` instead of reading a neighbour's bytes. Extension bodies the
    fingerprint does not read are stepped over, never copied.
    """
    # legacy_version (2) and random (32).
    p = pos + 2 + _RANDOM_LEN
    if p >= end:  # also needs the session id's length byte
        raise ClientHelloError(_TRUNCATED_BODY)
    legacy_version = (buf[pos] << 8) | buf[pos + 1]
    p += 1 + buf[p]  # legacy_session_id
    if p + 2 > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    length = (buf[p] << 8) | buf[p + 1]
    p += 2
    if p + length > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    if length & 1:
        raise ClientHelloError(_ODD_LIST)
    ciphers: tuple[int, ...] = unpack_from(f">{length >> 1}H", buf, p)
    p += length
    if p >= end:  # legacy_compression_methods' length byte
        raise ClientHelloError(_TRUNCATED_BODY)
    p += 1 + buf[p]
    if p > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    extensions: list[int] = []
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    # A TLS 1.0-1.2 ClientHello may end here: extensions are optional before TLS 1.3. Bytes
    # after the extension block are ignored.
    if p < end:
        if p + 2 > end:
            raise ClientHelloError(_TRUNCATED_BODY)
        block_end = p + 2 + ((buf[p] << 8) | buf[p + 1])
        p += 2
        if block_end > end:
            raise ClientHelloError(_TRUNCATED_BODY)
        append = extensions.append
        while p < block_end:
            data = p + 4
            if data > block_end:
                raise ClientHelloError(_TRUNCATED_BODY)
            ext_type, length = _UNPACK_EXTENSION_HEADER(buf, p)
            p = data + length
            if p > block_end:
                raise ClientHelloError(_TRUNCATED_BODY)
            append(ext_type)
            if ext_type not in _READ_EXTENSIONS:
                continue
            if ext_type == EXT_SERVER_NAME:
                server_name = _server_name(buf, data, p)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(buf, data, p)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                if data >= p:
                    raise ClientHelloError(_TRUNCATED_BODY)
                versions = _u16_list(buf, data + 1, buf[data], p)
            elif ext_type == EXT_SIGNATURE_ALGORITHMS:
                if data + 2 > p:
                    raise ClientHelloError(_TRUNCATED_BODY)
                sigalgs = _u16_list(buf, data + 2, (buf[data] << 8) | buf[data + 1], p)
    # Positional: a third cheaper than keywords, and this runs once per connection.
    return ClientHello(
        legacy_version, ciphers, tuple(extensions), server_name, alpn, versions, sigalgs
    )


def _u16_list(buf: bytes, start: int, length: int, end: int) -> tuple[int, ...]:
    """The ``length`` bytes at ``start`` (which must end by ``end``) as big-endian 16-bit values."""
    if start + length > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    if length & 1:
        raise ClientHelloError(_ODD_LIST)
    # One struct call for the whole list (its format strings are cached by the struct module).
    values: tuple[int, ...] = unpack_from(f">{length >> 1}H", buf, start)
    return values


def _server_name(buf: bytes, p: int, end: int) -> str | None:
    """The host_name entry of a server_name extension (RFC 6066 section 3); None when empty."""
    if p >= end:
        return None
    if p + 2 > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    names_end = p + 2 + ((buf[p] << 8) | buf[p + 1])
    if names_end > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    p += 2
    while p < names_end:
        if p + 3 > names_end:
            raise ClientHelloError(_TRUNCATED_BODY)
        name_type = buf[p]
        name_end = p + 3 + ((buf[p + 1] << 8) | buf[p + 2])
        if name_end > names_end:
            raise ClientHelloError(_TRUNCATED_BODY)
        if name_type == 0:
            return str(buf[p + 3 : name_end], "ascii", "replace")
        p = name_end
    return None


def _alpn(buf: bytes, p: int, end: int) -> tuple[bytes, ...]:
    """The protocol names of an ALPN extension (RFC 7301 section 3.1), in the order sent."""
    if p + 2 > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    protocols_end = p + 2 + ((buf[p] << 8) | buf[p + 1])
    if protocols_end > end:
        raise ClientHelloError(_TRUNCATED_BODY)
    p += 2
    out: list[bytes] = []
    while p < protocols_end:
        name_end = p + 1 + buf[p]
        if name_end > protocols_end:
            raise ClientHelloError(_TRUNCATED_BODY)
        out.append(bytes(buf[p + 1 : name_end]))
        p = name_end
    return tuple(out)


def _alpn_chars(hello: ClientHello) -> str:
    if not hello.alpn or not hello.alpn[0]:
        return "00"
    first = hello.alpn[0]
    if first[0] in _ALPHANUMERIC and first[-1] in _ALPHANUMERIC:
        return chr(first[0]) + chr(first[-1])
    # A non-alphanumeric first or last byte: first and last digit of the value's hex form.
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _hex_list(values: Sequence[int]) -> str:
    """``values`` as comma-separated 4-digit lowercase hex (``002f,0035``)."""
    try:
        # Packing to big-endian 16-bit words and letting bytes.hex insert a comma every two
        # bytes is the same text as formatting each value, several times faster.
        return pack(f">{len(values)}H", *values).hex(",", 2)
    except struct_error:
        # A hand-built ClientHello with a value outside 0..0xFFFF: format it digit by digit.
        return ",".join(map("{:04x}".format, values))


def _parts(hello: ClientHello) -> tuple[str, str, str]:
    """JA4's ``a`` part and the two raw lists that ``b`` and ``c`` hash."""
    # filterfalse with a set's __contains__ filters in C, without a Python-level loop.
    ciphers = sorted(filterfalse(_IS_GREASE, hello.cipher_suites))
    extensions = hello.extensions
    hashed_extensions = sorted(filterfalse(_IS_UNHASHED_EXTENSION, extensions))
    # SNI and ALPN are counted but not hashed (and are never GREASE).
    extension_count = (
        len(hashed_extensions) + extensions.count(EXT_SERVER_NAME) + extensions.count(EXT_ALPN)
    )
    versions = list(filterfalse(_IS_GREASE, hello.supported_versions))
    version = max(versions) if versions else hello.legacy_version
    a = (
        f"t{_VERSIONS.get(version, '00')}{'d' if EXT_SERVER_NAME in extensions else 'i'}"
        f"{min(len(ciphers), _MAX_COUNT):02d}{min(extension_count, _MAX_COUNT):02d}"
        f"{_alpn_chars(hello)}"
    )
    b_raw = _hex_list(ciphers)
    c_raw = _hex_list(hashed_extensions)
    if c_raw:
        sigalgs = list(filterfalse(_IS_GREASE, hello.signature_algorithms))
        if sigalgs:
            c_raw += "_" + _hex_list(sigalgs)
    return a, b_raw, c_raw


def _truncated_sha256(text: str) -> str:
    if not text:
        return _EMPTY_HASH
    return sha256(text.encode("ascii")).hexdigest()[:_HASH_LEN]


def _fingerprint(hello: ClientHello) -> str:
    a, b_raw, c_raw = _parts(hello)
    return f"{a}_{_truncated_sha256(b_raw)}_{_truncated_sha256(c_raw)}"


#: Bound of :data:`_JA4_CACHE`, in entries. A ClientHello's shape is chosen by the client
#: (see :mod:`emulator.core.bounded_cache`); the clients of one local emulator send a handful of
#: shapes, far below this.
_JA4_CACHE_SIZE: Final = 256
#: Most fingerprints the process has computed, keyed by everything :func:`ja4` reads.
_JA4_CACHE: Final[ClearingCache[_CacheKey, str]] = ClearingCache(_JA4_CACHE_SIZE)


def ja4(hello: ClientHello) -> str:
    """The JA4 fingerprint, e.g. ``t13d1516h2_8daaf6152771_d8a2da3f94cd``.

    The proxy computes one per connection, and a client sends the same ClientHello shape on
    every connection (only its random, session id and key shares change), so the finished
    string is cached by the fields it depends on: a hit skips the sorting, the two SHA-256 and
    the formatting. Clients that shuffle their extensions or pick new GREASE values per
    connection (Chrome) miss, and pay the full computation.
    """
    alpn = hello.alpn
    key = (
        hello.legacy_version,
        hello.cipher_suites,
        hello.extensions,
        alpn[0] if alpn else None,
        hello.supported_versions,
        hello.signature_algorithms,
    )
    cache = _JA4_CACHE
    try:
        fingerprint = cache.get(key)
    except TypeError:
        # A hand-built ClientHello holding lists or bytearrays: unhashable, so not cached.
        return _fingerprint(hello)
    if fingerprint is None:
        fingerprint = _fingerprint(hello)
        cache.put(key, fingerprint)
    return fingerprint


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
