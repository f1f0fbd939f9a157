"""The read cache: an answer only for the generation it was read at, bounded by size."""

from __future__ import annotations

from hwrepo.service_layer.readcache import ReadCache


def test_read_cache_gives_an_answer_only_for_its_generation() -> None:
    cache = ReadCache(max_bytes=100)
    cache.put("a", 3, "three", 10)
    assert cache.get("a", 3) == "three"
    assert cache.get("a", 4) is None  # the index changed since
    cache.put("a", 2, "older", 10)  # an answer computed before the kept one never replaces it
    assert cache.get("a", 3) == "three"
    cache.put("big", 3, "x" * 200, 200)  # larger than the whole cache: not kept
    assert cache.get("big", 3) is None
    for i in range(20):
        cache.put(i, 3, i, 10)
    assert cache.get("a", 3) is None  # the least recently used went first
    assert cache.get(19, 3) == 19
