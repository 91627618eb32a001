"""The read cache's byte budget, lanes and eviction order."""

from __future__ import annotations

import random

import pytest

from aisbatchfs.ais import BucketRef
from aisbatchfs.fs.cache import ItemKey, ReadCache

B = BucketRef("b")


def key(i: int, size: int = 100) -> ItemKey:
    return ItemKey(B, f"o{i}", "", size, "1", "")


def put(cache: ReadCache, i: int, size: int = 100, demanded: bool = False) -> bool:
    if not cache.reserve(size, demanded=demanded):
        return False
    cache.fill(key(i, size), b"x" * size, size)
    return True


def test_budget_counts_cached_and_reserved_bytes_together():
    c = ReadCache(1000, demand_lane=200)
    assert c.reserve(500, demanded=False)
    assert c.reserve(300, demanded=False)
    assert not c.reserve(1, demanded=False)  # the last 200 bytes are the demand lane
    assert c.reserve(200, demanded=True)
    assert c.used == 1000 and not c.reserve(1, demanded=True)
    c.unreserve(500)
    assert c.used == 500


def test_prefetch_never_evicts_unread_items_but_a_demand_may():
    c = ReadCache(1000, demand_lane=200)
    for i in range(8):
        assert put(c, i)
    assert not put(c, 99)  # only unread items are cached: prefetch waits
    assert put(c, 100, demanded=True) and put(c, 101, demanded=True)
    assert c.counters["evicted_unread"] == 0  # the lane was free
    assert put(c, 102, demanded=True)  # now something unread must go
    assert c.counters["evicted_unread"] == 1


def test_items_already_read_go_before_unread_ones():
    c = ReadCache(1000, demand_lane=0)
    for i in range(10):
        put(c, i)
    for i in range(5):
        assert c.get(key(i)) is not None
    for i in range(10, 15):
        assert put(c, i)  # prefetch room comes from the read tier
    assert all(key(i) in c for i in range(5, 15))
    assert c.counters["evicted_unread"] == 0


def test_oversized_items_are_not_cached():
    c = ReadCache(1600)
    assert not c.cacheable(101) and c.cacheable(100)
    assert not c.reserve(2000, demanded=True)


def test_a_second_epoch_larger_than_the_cache_still_hits():
    c = ReadCache(10_000, demand_lane=0)
    hits = 0
    for epoch in range(2):
        for i in range(200):  # 20,000 bytes: twice the budget
            if c.get(key(i)) is not None:
                hits += epoch
                continue
            assert put(c, i, demanded=True)
            assert c.get(key(i)) is not None
    assert hits > 0


def test_invariant_holds_under_a_random_workload():
    rng = random.Random(1)
    c = ReadCache(5000, demand_lane=1000)
    reserved = []
    for _ in range(20_000):
        op = rng.random()
        size = rng.randint(1, 400)
        if op < 0.4:
            if c.reserve(size, demanded=rng.random() < 0.3):
                reserved.append(size)
        elif op < 0.7 and reserved:
            n = reserved.pop(rng.randrange(len(reserved)))
            c.fill(key(rng.randint(0, 300), n), b"y" * n, n)
        elif op < 0.8 and reserved:
            c.unreserve(reserved.pop())
        else:
            c.get(key(rng.randint(0, 300)))
        assert c.used <= c.budget
    assert c.peak <= c.budget


def test_zero_budget_is_refused():
    with pytest.raises(ValueError):
        ReadCache(0)
