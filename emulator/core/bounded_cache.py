"""A bounded cache for hot paths whose keys come from outside the process.

Several per-request or per-connection steps remember results keyed by what a client or the
configuration chooses: JA4 fingerprints by ClientHello shape (:mod:`emulator.core.tls.ja4`), valid
Host values (:mod:`emulator.core.http.codec`), header-name facts
(:mod:`emulator.core.request.rewrite`) and,
per frontend port, Strict decisions by presented chain
(:class:`emulator.core.tls.policy.VerdictCache`). Each needs a bound, so that a client varying
its input cannot grow the process without limit; none needs least-recently-used order. When
full, the cache is emptied whole: that costs each live key one recomputation, while LRU
bookkeeping would cost every hit.

Lookups take no lock (a dict read is atomic in CPython, and :meth:`ClearingCache.get` *is* the
dict's own ``get``, so a hit costs no Python call); stores do: the module-level caches above
are shared by gateways running in several threads of one process (``emulator.sync``, the
pytest plugin), and must keep their bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ClearingCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ClearingCache(Generic[K, V]):
    """At most ``max_entries`` entries; a store into a full cache empties it first."""

    __slots__ = ("_entries", "_lock", "get", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, V] = {}
        self._lock = threading.Lock()
        #: The value stored for a key, else None (raises ``TypeError`` for an unhashable key,
        #: as a dict does). The dict's bound method itself: :meth:`clear` keeps the dict.
        self.get: Callable[[K], V | None] = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
