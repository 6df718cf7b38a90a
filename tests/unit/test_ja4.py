"""JA4 fingerprints from raw ClientHello bytes, checked against the specification's own examples.

Every ClientHello here is built byte by byte from the cipher, extension and signature-algorithm
lists of a published example (FoxIO's JA4 technical details, and the widely published Chrome
fingerprint ``t13d1516h2_8daaf6152771_d8a2da3f94cd``), never taken from the local OpenSSL, whose
ClientHello changes from build to build.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Sequence

import pytest

from emulator.core.tls import ja4 as ja4_module
from emulator.core.tls.ja4 import (
    ClientHello,
    ClientHelloError,
    is_grease,
    ja4,
    ja4_from_records,
    ja4_raw,
    parse_client_hello_records,
)

# -- building ClientHellos ------------------------------------------------------------------------


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def u16_list(values: Sequence[int], *, length_bytes: int = 2) -> bytes:
    body = b"".join(u16(v) for v in values)
    return len(body).to_bytes(length_bytes, "big") + body


def sni(host: str) -> bytes:
    name = host.encode("ascii")
    entry = b"\x00" + u16(len(name)) + name
    return u16(len(entry)) + entry


def alpn(*protocols: bytes) -> bytes:
    body = b"".join(bytes([len(p)]) + p for p in protocols)
    return u16(len(body)) + body


Extension = tuple[int, bytes]


def client_hello(
    ciphers: Sequence[int],
    extensions: Sequence[Extension] | None,
    *,
    legacy_version: int = 0x0303,
) -> bytes:
    """One ClientHello handshake message (no record header)."""
    body = u16(legacy_version) + bytes(32) + b"\x20" + bytes(32) + u16_list(ciphers) + b"\x01\x00"
    if extensions is not None:
        block = b"".join(u16(t) + u16(len(d)) + d for t, d in extensions)
        body += u16(len(block)) + block
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message: bytes, *, cut: Sequence[int] = ()) -> bytes:
    """``message`` in TLS handshake records, split at the offsets in ``cut``."""
    bounds = [0, *cut, len(message)]
    return b"".join(
        b"\x16\x03\x01" + u16(end - start) + message[start:end]
        for start, end in itertools.pairwise(bounds)
    )


# The published Chrome example: lists in the order the client sent them (its JA4_ro).
CHROME_CIPHERS = [
    0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
    0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035,
]  # fmt: skip
CHROME_EXTENSION_ORDER = [
    0x002D, 0x0033, 0x0010, 0xFE0D, 0x0017, 0x44CD, 0x0000, 0x000B,
    0x000A, 0x002B, 0xFF01, 0x0023, 0x0012, 0x0005, 0x000D, 0x001B,
]  # fmt: skip
SIGNATURE_ALGORITHMS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
CHROME_JA4 = "t13d1516h2_8daaf6152771_d8a2da3f94cd"
CHROME_JA4_RAW = (
    "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
    "0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_"
    "0403,0804,0401,0503,0805,0501,0806,0601"
)
GREASE_CIPHER = 0x2A2A
GREASE_EXTENSIONS = (0x0A0A, 0xFAFA)


def extension(ext_type: int, *, host: str = "example.com") -> Extension:
    if ext_type == 0x0000:
        return ext_type, sni(host)
    if ext_type == 0x0010:
        return ext_type, alpn(b"h2", b"http/1.1")
    if ext_type == 0x002B:
        return ext_type, u16_list([0x5A5A, 0x0304, 0x0303], length_bytes=1)
    if ext_type == 0x000D:
        return ext_type, u16_list(SIGNATURE_ALGORITHMS)
    return ext_type, b""


def chrome_hello(
    *, drop: Sequence[int] = (), grease: bool = True, replace: Sequence[Extension] = ()
) -> bytes:
    """The Chrome example with GREASE as Chrome sends it (a cipher, two extensions)."""
    replaced = dict(replace)
    exts = [
        (t, replaced[t]) if t in replaced else extension(t)
        for t in CHROME_EXTENSION_ORDER
        if t not in drop
    ]
    ciphers = list(CHROME_CIPHERS)
    if grease:
        ciphers.insert(0, GREASE_CIPHER)
        exts.insert(0, (GREASE_EXTENSIONS[0], b""))
        exts.append((GREASE_EXTENSIONS[1], b"\x00"))
    return client_hello(ciphers, exts)


def fingerprint(message: bytes) -> str:
    return ja4(parse_client_hello_records(records(message)))


def truncated_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- the published examples ------------------------------------------------------------------------


def test_published_example_raw_form_hashes_to_the_published_fingerprint() -> None:
    # Independent of the parser: the published raw form's lists hash to the published b and c.
    a, b_list, c_exts, c_sigs = CHROME_JA4_RAW.split("_")

    assert f"{a}_{truncated_sha256(b_list)}_{truncated_sha256(c_exts + '_' + c_sigs)}" == (
        CHROME_JA4
    )


def test_chrome_client_hello_gives_the_published_fingerprint_and_raw_form() -> None:
    hello = parse_client_hello_records(records(chrome_hello()))

    assert ja4(hello) == CHROME_JA4
    assert ja4_raw(hello) == CHROME_JA4_RAW


def test_grease_values_change_nothing() -> None:
    assert fingerprint(chrome_hello(grease=False)) == fingerprint(chrome_hello(grease=True))


def test_specification_example_with_its_own_extensions() -> None:
    # The specification's worked example: extensions 0015 and 4469, c = e5627efa2ab1.
    order = [
        0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D,
        0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015,
    ]  # fmt: skip
    message = client_hello(CHROME_CIPHERS, [extension(t) for t in order])

    assert fingerprint(message) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_without_signature_algorithms_the_extension_list_is_hashed_alone() -> None:
    # The specification: "the string ends without an underscore" → 6d807ffa2a79.
    order = [
        0x0005, 0x000A, 0x000B, 0x000D, 0x0012, 0x0015, 0x0017,
        0x001B, 0x0023, 0x002B, 0x002D, 0x0033, 0x4469, 0xFF01,
    ]  # fmt: skip
    exts = [(t, u16_list([])) if t == 0x000D else extension(t) for t in order]

    assert fingerprint(client_hello(CHROME_CIPHERS, exts)).endswith("_6d807ffa2a79")


# -- the a part ------------------------------------------------------------------------------------


def test_no_sni_is_i() -> None:
    assert fingerprint(chrome_hello(drop=[0x0000])).startswith("t13i1515h2_")


def test_no_alpn_is_00() -> None:
    assert fingerprint(chrome_hello(drop=[0x0010])).startswith("t13d151500_")


def test_sni_and_alpn_do_not_change_the_hashed_parts() -> None:
    full = fingerprint(chrome_hello()).split("_")[1:]
    bare = fingerprint(chrome_hello(drop=[0x0000, 0x0010])).split("_")[1:]

    assert full == bare


@pytest.mark.parametrize(
    ("protocol", "chars"),
    [
        (b"http/1.1", "h1"),
        (b"h2", "h2"),
        (b"h", "hh"),
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"", "00"),
    ],
)
def test_alpn_first_and_last_characters(protocol: bytes, chars: str) -> None:
    message = chrome_hello(replace=[(0x0010, alpn(protocol, b"h2"))])

    assert fingerprint(message)[8:10] == chars


def test_tls12_only_client_uses_the_legacy_version() -> None:
    # No supported_versions extension: the version is ClientHello.legacy_version.
    exts = [extension(0x0000), extension(0x000A), extension(0x000B), extension(0x000D)]

    fp = fingerprint(client_hello([0xC02F, 0xC030, 0x009C], exts, legacy_version=0x0303))

    assert fp.startswith("t12d030400_")
    assert fp.split("_")[1] == truncated_sha256("009c,c02f,c030")
    expected_c = "000a,000b,000d_" + ",".join(f"{s:04x}" for s in SIGNATURE_ALGORITHMS)
    assert fp.split("_")[2] == truncated_sha256(expected_c)


def test_supported_versions_wins_over_the_legacy_version_and_ignores_grease() -> None:
    versions = (0x002B, u16_list([0x1A1A, 0x0303, 0x0302], length_bytes=1))

    assert fingerprint(client_hello([0x1301], [versions])).startswith("t12i0101")


@pytest.mark.parametrize(
    ("version", "code"), [(0x0301, "10"), (0x0302, "11"), (0x0300, "s3"), (0x0305, "00")]
)
def test_version_codes(version: int, code: str) -> None:
    assert fingerprint(client_hello([0x002F], [], legacy_version=version))[1:3] == code


def test_hello_without_extensions_has_an_all_zero_c() -> None:
    # An old TLS 1.0 client may omit the extension block altogether.
    fp = fingerprint(client_hello([0x002F, 0x0035], None, legacy_version=0x0301))

    assert fp == f"t10i020000_{truncated_sha256('002f,0035')}_000000000000"


def test_no_ciphers_gives_an_all_zero_b() -> None:
    assert fingerprint(client_hello([], [])).split("_")[1] == "000000000000"


def test_counts_stop_at_99() -> None:
    ciphers = list(range(0x0100, 0x0100 + 120))

    assert fingerprint(client_hello(ciphers, []))[4:6] == "99"


@pytest.mark.parametrize("value", [0x0A0A, 0x1A1A, 0x2A2A, 0xFAFA])
def test_grease_values_are_recognised(value: int) -> None:
    assert is_grease(value)


@pytest.mark.parametrize("value", [0x0A1A, 0x0A0B, 0x1301, 0x0000, 0x0B0B])
def test_other_values_are_not_grease(value: int) -> None:
    assert not is_grease(value)


# -- records ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [[1], [3, 4], [50, 51, 150], [100]])
def test_client_hello_split_across_records_parses_the_same(cut: list[int]) -> None:
    message = chrome_hello()

    assert ja4(parse_client_hello_records(records(message, cut=cut))) == CHROME_JA4


def test_bytes_after_the_client_hello_are_ignored() -> None:
    change_cipher_spec = b"\x14\x03\x03\x00\x01\x01"

    assert ja4_from_records(records(chrome_hello()) + change_cipher_spec) == CHROME_JA4


def test_server_name_is_read() -> None:
    message = chrome_hello(replace=[(0x0000, sni("gw.contoso.com"))])

    assert parse_client_hello_records(records(message)).server_name == "gw.contoso.com"


def test_incomplete_client_hello_is_an_error() -> None:
    data = records(chrome_hello())[:-10]

    with pytest.raises(ClientHelloError):
        parse_client_hello_records(data)
    assert ja4_from_records(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x17\x03\x03\x00\x02ab",
        records(b"\x02\x00\x00\x00"),
        records(client_hello([0x1301], [(0x002B, b"\x03\x03\x04")])),
    ],
    ids=["empty", "http", "application-data", "server-hello", "odd-length-list"],
)
def test_not_a_client_hello_is_an_error(data: bytes) -> None:
    with pytest.raises(ClientHelloError):
        parse_client_hello_records(data)


def test_client_hello_in_a_bytearray_or_memoryview_parses_like_bytes() -> None:
    data = records(chrome_hello(replace=[(0x0000, sni("gw.contoso.com"))]))
    expected = parse_client_hello_records(data)

    assert parse_client_hello_records(bytearray(data)) == expected  # type: ignore[arg-type]
    assert parse_client_hello_records(memoryview(data)) == expected  # type: ignore[arg-type]


# -- the fingerprint cache -------------------------------------------------------------------------


def test_same_shape_with_a_new_random_and_session_id_gives_the_same_fingerprint() -> None:
    # What a client does on every new connection: only the random and the session id change.
    first = chrome_hello()
    second = first[:6] + bytes(range(32)) + b"\x20" + bytes(range(32, 64)) + first[71:]

    assert second != first
    assert fingerprint(first) == fingerprint(second) == CHROME_JA4


def test_cached_fingerprint_is_not_reused_for_another_shape() -> None:
    assert fingerprint(chrome_hello()) == CHROME_JA4

    assert fingerprint(chrome_hello(drop=[0x0000])).startswith("t13i1515h2_")
    assert fingerprint(chrome_hello(replace=[(0x0010, alpn(b"http/1.1"))]))[8:10] == "h1"
    assert fingerprint(chrome_hello()) == CHROME_JA4


def test_fingerprint_cache_stays_bounded_under_many_shapes() -> None:
    limit = ja4_module._JA4_CACHE_SIZE
    shapes = [client_hello([0x0100 + i], []) for i in range(limit + 10)]

    fingerprints = [fingerprint(message) for message in shapes]

    assert len(ja4_module._JA4_CACHE) <= limit
    assert fingerprints[0] == f"t12i010000_{truncated_sha256('0100')}_000000000000"
    assert fingerprint(shapes[0]) == fingerprints[0]


def test_hand_built_client_hello_with_lists_is_fingerprinted_uncached() -> None:
    # Lists and bytearrays cannot key the cache; the fingerprint must not depend on that.
    parsed = parse_client_hello_records(records(chrome_hello()))
    hand_built = ClientHello(
        legacy_version=parsed.legacy_version,
        cipher_suites=list(parsed.cipher_suites),  # type: ignore[arg-type]
        extensions=list(parsed.extensions),  # type: ignore[arg-type]
        server_name=parsed.server_name,
        alpn=tuple(bytearray(p) for p in parsed.alpn),  # type: ignore[misc]
        supported_versions=parsed.supported_versions,
        signature_algorithms=list(parsed.signature_algorithms),  # type: ignore[arg-type]
    )

    assert ja4(hand_built) == CHROME_JA4
    assert ja4_raw(hand_built) == CHROME_JA4_RAW


def test_values_beyond_16_bits_in_a_hand_built_hello_are_printed_in_full() -> None:
    hello = ClientHello(
        legacy_version=0x0303,
        cipher_suites=(0x1FFFF, 0x002F),
        extensions=(0x000D,),
        server_name=None,
        alpn=(),
        supported_versions=(),
        signature_algorithms=(0x0403,),
    )

    assert ja4_raw(hello) == "t12i020100_002f,1ffff_000d_0403"
