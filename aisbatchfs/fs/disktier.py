"""The disk tier of the read path: what the batcher and the reader ask of the disk cache, by
Item (diskcache.py works on full identities: the cluster's UUID, the bucket's creation time).

Where it sits: a miss in memory (and in the kernel's page cache, or the read would not have
come) looks at the disk before the cluster; what arrives from the cluster is written to it as
it arrives, off the event loop, never delaying a reader (a full write queue drops the write).
Disk hits of predicted files take the same way as network arrivals: into the memory cache
and, ahead of their readers, the kernel's page cache. (FUSE passthrough, which would let the
kernel read the cached file itself, is set in the OPEN reply: it cannot coexist with a
connection that never sends OPEN, and stored-ahead pages already serve reads with no request.)
An item whose bucket's creation time is not known yet is not looked up or stored: its key
would not say which incarnation of the bucket it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.diskcache import DiskCache, DiskKey
from aisbatchfs.fs.namespace import Namespace


class DiskTier:
    def __init__(self, cache: DiskCache, ns: Namespace) -> None:
        self.cache = cache
        self.ns = ns

    def _key(self, item: Item, offset: int = 0) -> DiskKey | None:
        created = self.ns.bucket_created_ns.get(item.bucket)
        return None if not created else self.cache.key(item, created, offset)

    async def get_many(self, items: Sequence[Item]) -> list[Buffer | None]:
        """The bytes of each item found on disk (checked), None for the others."""
        keys = [self._key(item) for item in items]
        asked = [(k, item.size) for k, item in zip(keys, items) if k is not None]
        found = iter(await self.cache.get_many(asked) if asked else [])
        return [next(found) if k is not None else None for k in keys]

    async def get_range(self, item: Item, start: int, length: int) -> Buffer | None:
        key = self._key(item)
        return None if key is None else await self.cache.get_range(key, start, length)

    def put(self, item: Item, data: Buffer) -> None:
        key = self._key(item)
        if key is not None:
            self.cache.put(key, data)

    def put_range(self, item: Item, start: int, data: Buffer) -> None:
        key = self._key(item)
        if key is not None:
            self.cache.put_range(key, start, data)

    def stats(self) -> dict:
        return self.cache.stats()
