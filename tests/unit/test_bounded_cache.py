"""The bounded cache behind the hot paths' memos (JA4, Strict verdicts, rewrite rule sets)."""

from __future__ import annotations

import threading

import pytest

from emulator.core.bounded_cache import ClearingCache


def test_stored_value_is_returned_and_missing_key_gives_none() -> None:
    cache: ClearingCache[str, int] = ClearingCache(4)
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.get("b") is None


def test_store_into_a_full_cache_empties_it_first() -> None:
    cache: ClearingCache[int, int] = ClearingCache(3)
    for key in range(3):
        cache.put(key, key)
    assert len(cache) == 3
    cache.put(99, 99)
    assert len(cache) == 1
    assert cache.get(0) is None
    assert cache.get(99) == 99


def test_get_still_sees_the_cache_after_clear() -> None:
    # get is the dict's own bound method: clear must keep that dict.
    cache: ClearingCache[str, str] = ClearingCache(2)
    cache.put("x", "1")
    cache.clear()
    assert len(cache) == 0
    cache.put("y", "2")
    assert cache.get("y") == "2"


def test_unhashable_key_raises_type_error_like_a_dict() -> None:
    cache: ClearingCache[object, int] = ClearingCache(2)
    with pytest.raises(TypeError):
        cache.get([1, 2])


def test_stores_from_many_threads_never_exceed_the_bound() -> None:
    cache: ClearingCache[tuple[int, int], int] = ClearingCache(50)
    sizes: list[int] = []

    def fill(worker: int) -> None:
        for key in range(2_000):
            cache.put((worker, key), key)
            sizes.append(len(cache))

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(sizes) <= 50
