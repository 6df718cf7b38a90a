"""Open a PKCS#12 (PFX) file only when opening it costs a bounded amount of work.

A PFX names its own key-derivation cost: the MAC's iteration count and each encrypted bag's
PBKDF2 (or PKCS#12 PBE) iteration count. OpenSSL runs every one of them before it can say
whether the password was right, so a file of a few hundred bytes with a MAC iteration count of
2^31-1 keeps a CPU busy for minutes (a "PFX bomb"). Every PFX the emulator reads (a template's
``sslCertificates``, ``check-ca``, the dashboard's inspector) goes through :func:`load_pkcs12`,
which reads the counts from the DER first and refuses a file whose counts add up to more than
:data:`MAX_PKCS12_ITERATIONS`.

The counts are found without the password: the MAC data and the parameters of every PBE
algorithm whose structure is in the clear (the key bag and the encrypted certificate bag of the
files OpenSSL, Windows, Java and cryptography write). A bag nested inside an encrypted bag is
only visible after decrypting, and is not counted.

Pure: no I/O; the caller decides where the (bounded) work runs.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography.hazmat.primitives.serialization import pkcs12

__all__ = [
    "MAX_PKCS12_ITERATIONS",
    "Pkcs12TooCostly",
    "load_pkcs12",
    "pkcs12_iterations",
]

#: The most key-derivation iterations, summed over the file, that opening a PFX may cost. The
#: tools that write PFX files use a few thousand per count (OpenSSL 2048, Windows 2000, Java's
#: keytool 10000; hardened exports 100000), so real files stay far below; a million takes about
#: a third of a second, where a bomb's 2^31-1 takes minutes.
MAX_PKCS12_ITERATIONS: Final = 1_000_000
#: How deep the DER walk goes (a PFX nests about ten levels) and how many elements it reads at
#: most: the walk itself must be bounded on hostile input.
_MAX_DER_DEPTH: Final = 32
_MAX_DER_ELEMENTS: Final = 20_000

_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02
_OCTET_STRING: Final = 0x04
_CONSTRUCTED: Final = 0x20


class Pkcs12TooCostly(Exception):
    """The PFX asks for more key-derivation iterations than :data:`MAX_PKCS12_ITERATIONS`."""

    def __init__(self, iterations: int) -> None:
        super().__init__(
            f"the PFX asks for {iterations:,} key-derivation iterations; the emulator opens at "
            f"most {MAX_PKCS12_ITERATIONS:,} (the tools that write PFX files use a few thousand)"
        )
        self.iterations = iterations


class _NotDer(Exception):
    pass


def _header(data: bytes, i: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the element at ``i``."""
    if i + 2 > end:
        raise _NotDer
    tag, length = data[i], data[i + 1]
    i += 2
    if tag & 0x1F == 0x1F:
        raise _NotDer  # high tag numbers do not occur in PKCS#12
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or i + size > end:
            raise _NotDer
        length = int.from_bytes(data[i : i + size], "big")
        i += size
    if i + length > end:
        raise _NotDer
    return tag, i, i + length


class _Walk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.elements = 0
        self.total = 0

    def children(self, start: int, end: int, depth: int) -> list[tuple[int, int, int]]:
        """The elements between ``start`` and ``end``, which must fill it exactly."""
        if depth > _MAX_DER_DEPTH:
            raise _NotDer
        found = []
        i = start
        while i < end:
            self.elements += 1
            if self.elements > _MAX_DER_ELEMENTS:
                raise _NotDer
            tag, content, i = _header(self.data, i, end)
            found.append((tag, content, i))
        return found

    def visit(self, start: int, end: int, depth: int) -> None:
        items = self.children(start, end, depth)
        previous = None
        for tag, content, stop in items:
            if tag == _INTEGER and previous == _OCTET_STRING and stop - content <= 8:
                # salt OCTET STRING, then the count: MacData, PBKDF2-params, pkcs-12PbeParams.
                self.total += int.from_bytes(self.data[content:stop], "big", signed=True)
            elif tag & _CONSTRUCTED:
                self.visit(content, stop, depth + 1)
            elif tag == _OCTET_STRING and self.data[content : content + 1] == bytes([_SEQUENCE]):
                # ContentInfo data and bag values wrap DER in OCTET STRINGs; ciphertext does
                # not parse as DER to the byte, and is skipped.
                saved = (self.elements, self.total)
                try:
                    self.visit(content, stop, depth + 1)
                except _NotDer:
                    self.elements, self.total = saved
            previous = tag


def pkcs12_iterations(data: bytes) -> int:
    """The iteration counts of ``data``'s MAC and clear PBE parameters, summed (0: not DER)."""
    walk = _Walk(data)
    try:
        tag, content, end = _header(data, 0, len(data))
        if tag != _SEQUENCE:
            return 0
        walk.visit(content, end, 1)
    except _NotDer:
        return walk.total
    return walk.total


def load_pkcs12(data: bytes, password: bytes | None) -> tuple[Any, Any, list[Any]]:
    """``pkcs12.load_key_and_certificates`` after the cost check.

    Raises:
        Pkcs12TooCostly: the counts add up to more than :data:`MAX_PKCS12_ITERATIONS`.
        ValueError: not a PFX, or the password does not open it (from ``cryptography``).
    """
    iterations = pkcs12_iterations(data)
    if iterations > MAX_PKCS12_ITERATIONS:
        raise Pkcs12TooCostly(iterations)
    key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    return key, cert, list(extra)
