"""The one typed async interface through which the filesystem reaches AIStore.

`fs/` never sees HTTP, sockets or worker threads: it awaits these calls, which raise only the
client's own errors (errors.py) and hand out only bytes that were checked against the `Item`
asked for (size always; version and stored checksum for whole objects; the archive's checksum
for members of a shard streamed whole). `ThreadedAis` (aio.py) implements it over the
blocking client in worker threads; `tests/fakeais.py` implements it in memory, so the read
path's core runs under trio's MockClock in unit tests, deterministically.

Streams (a GetBatch reply, a shard read whole) are async context managers yielding groups of
arrivals: everything one network read completed, in request order. Leaving the context early
(a consumer that no longer needs the rest, a cancellation) ends the transfer at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from aisbatchfs.ais.client import LIST_PROPS, ListPage
from aisbatchfs.ais.models import ArchiveListing, BucketProps, BucketRef, ClusterMap, Item, ObjectAttrs

Buffer = bytes | bytearray
# (index in the request, the item's bytes) or (index, None): the server has no such item
Arrival = tuple[int, Buffer | None]
# (member name as listed, bytes) of a shard streamed whole
ShardMember = tuple[str, Buffer]


class AisApi(Protocol):
    """What the filesystem asks of a cluster. Deadlines: metadata calls end within the
    client's metadata deadline; data calls within `timeout` (default: its read deadline)."""

    async def cluster_map(self) -> ClusterMap: ...

    async def list_buckets(self, provider: str | None = None) -> list[BucketRef]: ...

    async def bucket_props(self, bucket: BucketRef) -> BucketProps: ...

    async def list_page(self, bucket: BucketRef, prefix: str = "", *, recursive: bool = True,
                        token: str = "", uuid: str = "", page_size: int = 0,
                        props: str = LIST_PROPS) -> ListPage: ...

    async def list_archive(self, bucket: BucketRef, obj: str) -> ArchiveListing: ...

    async def head(self, bucket: BucketRef, obj: str) -> ObjectAttrs: ...

    async def get(self, item: Item, start: int = 0, length: int | None = None, *,
                  timeout: float | None = None) -> Buffer:
        """Bytes [start, start+length) of the item (all of it by default), checked: a changed
        object raises ObjectChanged, a missing one ObjectNotFound."""
        ...

    def batch(self, items: Sequence[Item], *, timeout: float | None = None,
              first_byte_timeout: float | None = None,
              ) -> AbstractAsyncContextManager[AsyncIterator[list[Arrival]]]:
        """One GetBatch (continue on error): arrivals in request order. A reply cut short
        raises BatchTruncated(first_missing) after the arrivals before the cut."""
        ...

    def shard(self, archive: Item, want: Callable[[str, int], bool], *,
              timeout: float | None = None,
              ) -> AbstractAsyncContextManager[AsyncIterator[list[ShardMember]]]:
        """The regular-file members of a (compressed) archive object read whole, extracted on
        this side; `want(name, size)` picks the members to keep (the rest are never
        buffered). Members come only once the whole archive has arrived and matched its
        stored checksum (when Python can compute its type)."""
        ...

    def needs_own_read(self, item: Item) -> bool:
        """True for members GetBatch would read wrong or not at all (duplicates, links,
        names stored in a spelling archpath cannot take): read those with get()."""
        ...

    def counters(self) -> dict[str, int]: ...
