"""The read cache: whole small objects and members, under one byte budget.

The budget counts cached bytes and bytes reserved for items still on their way together, so
memory stays bounded whatever the dataset and the number of readers. Invariant, asserted on
every change: cached + reserved <= budget.

- Prefetch takes only free budget, and never the last `demand_lane` bytes: a demanded read
  always has room to land even when prefetch has filled the cache (no deadlock).
- Items larger than `max_item` are never cached; they stream through the reader.
- Eviction suits epochs larger than the cache. Two tiers: items prefetched and not read yet
  (`unread`, LRU), and items already read (`read`). Read items go first. Among them the victim
  is random: in a cyclic scan bigger than the cache, LRU keeps exactly the items needed last
  (a second epoch would never hit), while random replacement keeps a random share of them.
- Keys are object identities including version and checksum: a new version is a new key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cachetools

from aisbatchfs.ais import BucketRef


@dataclass(frozen=True, slots=True)
class ItemKey:
    bucket: BucketRef
    path: str  # object name (or the archive's, for a member)
    member: str  # "" for a whole object
    size: int
    version: str
    checksum: str


class ReadCache:
    def __init__(self, budget: int, *, max_item: int | None = None,
                 demand_lane: int | None = None) -> None:
        if budget <= 0:
            raise ValueError("cache budget must be positive")
        self.budget = budget
        self.max_item = max_item if max_item is not None else max(budget // 16, 1)
        self.demand_lane = demand_lane if demand_lane is not None else budget // 8
        self._unread: cachetools.LRUCache = cachetools.LRUCache(budget, getsizeof=len)
        self._read: cachetools.RRCache = cachetools.RRCache(budget, getsizeof=len)
        self.reserved = 0
        self.peak = 0
        self.counters: Counter[str] = Counter()

    # -- accounting ------------------------------------------------------------------------------

    @property
    def cached(self) -> int:
        return self._unread.currsize + self._read.currsize

    @property
    def used(self) -> int:
        return self.cached + self.reserved

    def _check(self) -> None:
        used = self.used
        assert used <= self.budget, f"cache over budget: {used} > {self.budget}"
        self.peak = max(self.peak, used)

    def cacheable(self, size: int) -> bool:
        return size <= self.max_item

    def reserve(self, n: int, *, demanded: bool) -> bool:
        """Set aside n bytes for an item on its way. Prefetch evicts only items already read
        and leaves the demand lane free; a demand may evict anything cached."""
        limit = self.budget if demanded else self.budget - self.demand_lane
        if n > limit:
            return False
        while self.used + n > limit and len(self._read):
            self._evict(self._read, unread=False)
        while demanded and self.used + n > limit and len(self._unread):
            self._evict(self._unread, unread=True)
        if self.used + n > limit:
            return False
        self.reserved += n
        self._check()
        return True

    def unreserve(self, n: int) -> None:
        self.reserved -= n
        assert self.reserved >= 0
        self._check()

    def _evict(self, tier: cachetools.Cache, *, unread: bool) -> None:
        tier.popitem()
        self.counters["evictions"] += 1
        if unread:
            self.counters["evicted_unread"] += 1  # predicted, fetched, never read

    # -- items -----------------------------------------------------------------------------------

    def fill(self, key: ItemKey, data: bytes, reserved: int) -> None:
        """An item arrived: its reservation becomes cached bytes (as not read yet)."""
        self.reserved -= reserved
        if key in self._unread or key in self._read or len(data) > reserved:
            self._check()
            return
        self._unread[key] = data
        self._check()

    def get(self, key: ItemKey) -> bytes | None:
        """The bytes if cached; the item moves to the already-read tier."""
        data = self._read.get(key)
        if data is not None:
            self.counters["hits"] += 1
            self.counters["reread_hits"] += 1  # read before and kept: reuse across epochs
            return data
        data = self._unread.pop(key, None)
        if data is None:
            self.counters["misses"] += 1
            return None
        self.counters["hits"] += 1
        self.counters["prefetch_used"] += 1
        self._read[key] = data
        return data

    def mark_read(self, key: ItemKey) -> None:
        """A reader took this item straight from its batch: it belongs to the read tier now."""
        data = self._unread.pop(key, None)
        if data is not None:
            self._read[key] = data

    def __contains__(self, key: ItemKey) -> bool:
        return key in self._unread or key in self._read

    def stats(self) -> dict:
        return dict(self.counters, budget=self.budget, used=self.used, cached=self.cached,
                    reserved=self.reserved, peak=self.peak, items=len(self._unread) + len(self._read))
