"""The disk tier of the read path: what the batcher and the reader ask of the disk cache, by
Item (diskcache.py works on full identities: the cluster's UUID, the bucket's creation time).

Where it sits: a miss in memory (and in the kernel's page cache, or the read would not have
come) looks at the disk before the cluster; what arrives from the cluster is written to it as
it arrives, off the event loop, never delaying a reader. Disk hits of predicted files take the
same way as network arrivals: into the memory cache and, ahead of their readers, the kernel's
page cache. (FUSE passthrough, which would let the kernel read the cached file itself, is set
in the OPEN reply: it cannot coexist with a connection that never sends OPEN, and stored-ahead
pages already serve reads with no request.) An item whose bucket's creation time is not known
yet is not looked up or stored: its key would not say which incarnation of the bucket it
belongs to.

Owed writes. Arrivals come in bursts (a GetBatch of 16 MiB lands in a few ms, four at once)
faster than the disk takes them, and the write queue is bounded (`queue_bytes`). A small file
that finds the queue full is not dropped: its Item is owed (MAX_OWED of them, a few hundred
bytes each, no data) and offered again, with the bytes the memory cache still holds, once the
queue is half empty. Its data is not kept for it: one the memory cache has let go by then is
dropped (`write_drops_queue_full`), so owing costs no memory. In P5-disk's first epoch 5-11%
of the writes were dropped from a full queue, and the second epoch fetched them again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import trio

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.diskcache import DiskCache, DiskKey
from aisbatchfs.fs.namespace import Namespace

MAX_OWED = 1 << 16  # owed writes remembered; past it, the oldest is dropped


class DiskTier:
    def __init__(self, cache: DiskCache, ns: Namespace, memory: ReadCache) -> None:
        self.cache = cache
        self.ns = ns
        self.memory = memory  # where an owed write's bytes are looked for
        self._owed: OrderedDict[Item, DiskKey] = OrderedDict()
        self._owing = trio.Event()  # set while something is owed
        self.counters = {"write_deferred": 0, "write_deferred_done": 0}

    def _key(self, item: Item, offset: int = 0) -> DiskKey | None:
        created = self.ns.bucket_created_ns.get(item.bucket)
        return None if not created else self.cache.key(item, created, offset)

    async def get_many(self, items: Sequence[Item]) -> list[Buffer | None]:
        """The bytes of each item found on disk (checked), None for the others."""
        keys = [self._key(item) for item in items]
        asked = [(k, item.size) for k, item in zip(keys, items) if k is not None]
        found = iter(await self.cache.get_many(asked) if asked else [])
        return [next(found) if k is not None else None for k in keys]

    def holds(self, item: Item) -> bool:
        """Whether the disk cache's index has the item (a read may still miss: a bad entry)."""
        key = self._key(item)
        return key is not None and self.cache.holds(key)

    async def get_range(self, item: Item, start: int, length: int) -> Buffer | None:
        key = self._key(item)
        return None if key is None else await self.cache.get_range(key, start, length)

    def put(self, item: Item, data: Buffer) -> None:
        key = self._key(item)
        if key is None:
            return
        if len(data) > self.cache.cfg.queue_bytes // 2:  # never fits beside a half-full queue
            self.cache.put(key, data)
        elif self._owed or not self.cache.put(key, data, deferrable=True):
            self._owe(item, key)  # after those owed already: written in arrival order

    def put_range(self, item: Item, start: int, data: Buffer) -> None:
        key = self._key(item)
        if key is not None:
            self.cache.put_range(key, start, data)

    def _owe(self, item: Item, key: DiskKey) -> None:
        if item in self._owed:
            return
        self._owed[item] = key
        self.counters["write_deferred"] += 1
        if len(self._owed) > MAX_OWED:
            self._owed.popitem(last=False)
            self.cache.drop("queue_full")
        self._owing.set()

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Offers owed writes again as the queue empties, for the mount's lifetime."""
        task_status.started()
        while True:
            await self._owing.wait()
            await self.cache.room()
            self._repay()

    def _repay(self) -> None:
        """Queue owed writes whose bytes memory still holds, oldest first, until the queue is
        full again. After `room()`, the first always fits (none is over half the queue)."""
        while self._owed:
            item, key = next(iter(self._owed.items()))
            data = self.memory.peek(item)
            if data is not None and not self.cache.put(key, data, deferrable=True):
                return
            del self._owed[item]
            if data is None:
                self.cache.drop("queue_full")
            else:
                self.counters["write_deferred_done"] += 1
        self._owing = trio.Event()

    async def flush(self) -> None:
        """Queue what is owed (as room comes) and wait until all is written or dropped."""
        while self._owed:
            await self.cache.room()
            self._repay()
        await self.cache.flush()

    def stats(self) -> dict:
        return {**self.cache.stats(), **self.counters, "owed": len(self._owed)}
