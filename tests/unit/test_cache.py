"""The read cache's byte budget, lanes and eviction order."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import pytest

from aisbatchfs.ais import BucketRef
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.cache import ReadCache

B = BucketRef("b")


def key(i: int, size: int = 100) -> Item:
    return Item(B, f"o{i}", "", size, "1", "")


def put(cache: ReadCache, i: int, size: int = 100, demanded: bool = False) -> bool:
    r = cache.reserve(size, demanded=demanded)
    if r is None:
        return False
    cache.fill(key(i, size), b"x" * size, r)
    return True


def test_budget_counts_cached_and_reserved_bytes_together():
    c = ReadCache(1000, demand_lane=200, max_item=100)
    a = c.reserve(500, demanded=False)
    assert a is not None and c.reserve(300, demanded=False) is not None
    assert c.reserve(1, demanded=False) is None  # the last 200 bytes are the demand lane
    assert c.reserve(200, demanded=True) is not None
    assert c.used == 1000 and c.reserve(1, demanded=True) is None
    a.release()
    assert c.used == 500


def test_a_reservation_is_given_back_once_by_its_owner():
    c = ReadCache(1000, demand_lane=0, max_item=100)
    with c.reserve(600, demanded=True, kind="window") as r:
        assert r.held and c.reserved == 600 and c.stats()["reserved_window"] == 600
    assert not r.held and c.reserved == 0
    r.release()  # again: nothing more is given back
    assert c.reserved == 0
    r = c.reserve(100, demanded=True)
    c.fill(key(1), b"x" * 100, r)  # the reservation became cached bytes
    assert not r.held and c.reserved == 0 and c.cached == 100


def test_an_item_larger_than_its_reservation_is_not_kept():
    c = ReadCache(1000, demand_lane=0, max_item=100)
    r = c.reserve(50, demanded=True)
    c.fill(key(1), b"x" * 100, r)
    assert key(1) not in c and c.used == 0


def test_prefetch_never_evicts_unread_items_but_a_demand_may():
    c = ReadCache(1000, demand_lane=200, max_item=100)
    for i in range(8):
        assert put(c, i)
    assert not put(c, 99)  # only unread items are cached: prefetch waits
    assert put(c, 100, demanded=True) and put(c, 101, demanded=True)
    assert c.counters["evicted_unread"] == 0  # the lane was free
    assert put(c, 102, demanded=True)  # now something unread must go
    assert c.counters["evicted_unread"] == 1


def test_items_already_read_go_before_unread_ones():
    c = ReadCache(1000, demand_lane=0, max_item=100)
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
    assert c.reserve(2000, demanded=True) is None


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
            r = c.reserve(size, demanded=rng.random() < 0.3)
            if r is not None:
                reserved.append(r)
        elif op < 0.7 and reserved:
            r = reserved.pop(rng.randrange(len(reserved)))
            c.fill(key(rng.randint(0, 300), r.nbytes), b"y" * r.nbytes, r)
        elif op < 0.8 and reserved:
            reserved.pop().release()
        else:
            c.get(key(rng.randint(0, 300)))
        assert c.used <= c.budget
    assert c.peak <= c.budget


def test_zero_budget_is_refused():
    with pytest.raises(ValueError):
        ReadCache(0)


def test_an_item_is_a_key_by_identity_and_keeps_its_hash_across_processes():
    """Items key cached bytes and hash once; a copy made elsewhere (pickled to a disk worker,
    where strings hash differently) must find the same entry as one built there."""
    a = Item(B, "o", "m", 5, "1", "c", checksum_type="xxhash")
    assert a == Item(B, "o", "m", 5, "1", "c") and {a: 1}[Item(B, "o", "m", 5, "1", "c")] == 1
    assert Item(B, "o", "m", 6, "1", "c") != a and Item(B, "o", "m", 5, "2", "c") != a
    probe = ("import pickle, sys; from aisbatchfs.ais import BucketRef; "
             "from aisbatchfs.ais.models import Item; "
             "a = pickle.loads(sys.stdin.buffer.read()); "
             "print({Item(BucketRef('b'), 'o', 'm', 5, '1', 'c'): 1}.get(a), a.checksum_type)")
    out = subprocess.run([sys.executable, "-c", probe], input=pickle.dumps(a), capture_output=True,
                         timeout=60, env={"PYTHONHASHSEED": "12345"}, check=True).stdout.split()
    assert out == [b"1", b"xxhash"]
