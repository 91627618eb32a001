"""The read cache: whole small objects and members, and every other byte the read path holds,
under one byte budget.

The budget counts cached bytes and `Reservation`s together: bytes set aside for items on
their way, for the windows of large reads, and for pages stored in the kernel's page cache
ahead of their readers. Memory stays bounded whatever the dataset and the number of readers.
Invariant, asserted on every change: cached + reserved <= budget.

- A reservation is an object with one owner, who releases it exactly once (`release()` is
  idempotent; `with` releases on any exit) or hands it to `fill`, which turns it into cached
  bytes. No integer is given back by hand.
- Prefetch takes only free budget, and never the last `demand_lane` bytes: a demanded read
  always has room to land even when prefetch has filled the cache (no deadlock).
- Items larger than `max_item` are never cached; they stream through the reader.
- Eviction suits epochs larger than the cache. Two tiers: items prefetched and not read yet
  (`unread`, LRU), and items already read (`read`). Read items go first. Among them the victim
  is random: in a cyclic scan bigger than the cache, LRU keeps exactly the items needed last
  (a second epoch would never hit), while random replacement keeps a random share of them.
- Keys are `Item`s: object identities including version and checksum, so a new version is a
  new key.
"""

from __future__ import annotations

from collections import Counter

import cachetools

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import Item


class Reservation:
    """`nbytes` of the budget, held for one purpose (`kind`: fetch, window, pushed...)."""

    __slots__ = ("_cache", "nbytes", "kind")

    def __init__(self, cache: ReadCache, nbytes: int, kind: str) -> None:
        self._cache: ReadCache | None = cache
        self.nbytes = nbytes
        self.kind = kind

    @property
    def held(self) -> bool:
        return self._cache is not None

    def release(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            cache._give_back(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Reservation({self.nbytes}, {self.kind}, {'held' if self.held else 'released'})"


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
        self.reserved_by_kind: Counter[str] = Counter()
        self.peak = 0
        self.counters: Counter[str] = Counter()

    # -- accounting ------------------------------------------------------------------------------

    @property
    def cached(self) -> int:
        return self._unread.currsize + self._read.currsize

    @property
    def used(self) -> int:
        return self.cached + self.reserved

    @property
    def free(self) -> int:
        return self.budget - self.used

    def _check(self) -> None:
        used = self.used
        assert used <= self.budget, f"cache over budget: {used} > {self.budget}"
        assert self.reserved >= 0 and self.reserved == sum(self.reserved_by_kind.values())
        self.peak = max(self.peak, used)

    def cacheable(self, size: int) -> bool:
        return size <= self.max_item

    def reserve(self, n: int, *, demanded: bool, kind: str = "fetch") -> Reservation | None:
        """Set aside n bytes, or None if they do not fit. Prefetch evicts only items already
        read and leaves the demand lane free; a demand may evict anything cached."""
        limit = self.budget if demanded else self.budget - self.demand_lane
        if n > limit:
            return None
        while self.used + n > limit and len(self._read):
            self._evict(self._read, unread=False)
        while demanded and self.used + n > limit and len(self._unread):
            self._evict(self._unread, unread=True)
        if self.used + n > limit:
            return None
        self.reserved += n
        self.reserved_by_kind[kind] += n
        self._check()
        return Reservation(self, n, kind)

    def _give_back(self, r: Reservation) -> None:
        self.reserved -= r.nbytes
        self.reserved_by_kind[r.kind] -= r.nbytes
        self._check()

    def _evict(self, tier: cachetools.Cache, *, unread: bool) -> None:
        tier.popitem()
        self.counters["evictions"] += 1
        if unread:
            self.counters["evicted_unread"] += 1  # predicted, fetched, never read

    # -- items -----------------------------------------------------------------------------------

    def fill(self, item: Item, data: Buffer, reservation: Reservation) -> None:
        """An item arrived: its reservation becomes cached bytes (as not read yet). Data
        larger than what was reserved for it, or not cacheable, is not kept."""
        keep = (reservation.held and len(data) <= reservation.nbytes
                and self.cacheable(len(data)) and item not in self)
        reservation.release()
        if keep:
            self._unread[item] = data
            self._check()

    def get(self, item: Item) -> Buffer | None:
        """The bytes if cached; the item moves to the already-read tier."""
        data = self._read.get(item)
        if data is not None:
            self.counters["hits"] += 1
            self.counters["reread_hits"] += 1  # read before and kept: reuse across epochs
            return data
        data = self._unread.pop(item, None)
        if data is None:
            self.counters["misses"] += 1
            return None
        self.counters["hits"] += 1
        self.counters["prefetch_used"] += 1
        self._read[item] = data
        return data

    def peek(self, item: Item) -> Buffer | None:
        """The bytes if cached, without counting a hit or changing tiers."""
        data = self._unread.get(item)
        return data if data is not None else self._read.get(item)

    def mark_read(self, item: Item) -> None:
        """A reader took this item straight from its batch: it belongs to the read tier now."""
        data = self._unread.pop(item, None)
        if data is not None:
            self._read[item] = data

    def __contains__(self, item: Item) -> bool:
        return item in self._unread or item in self._read

    def stats(self) -> dict:
        return dict(self.counters, budget=self.budget, used=self.used, cached=self.cached,
                    reserved=self.reserved, peak=self.peak,
                    items=len(self._unread) + len(self._read),
                    **{f"reserved_{k}": v for k, v in self.reserved_by_kind.items() if v})
