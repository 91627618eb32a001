"""`ThreadedAis`: the async interface (api.py) over the blocking client, in worker threads.

Metadata calls (listings, HEAD) and data calls (GET, GetBatch, shard reads) have their own
thread limiters, as they have their own connection pools, so `ls` and `stat` stay quick while
readers wait on long transfers. Metadata threads are many (128: a lookup probe takes two),
so lookups of other names never queue behind dozens stuck on a stalled cluster. A thread cannot be cancelled, but every client call has an
enforced deadline, and a stream whose consumer leaves is aborted (its socket shut down), so
each thread comes back in bounded time; the trio side waits for it, leaving no orphan work.

A GetBatch reply is parsed in its worker thread; each group of items one network read
completed is posted to the event loop without a round trip (`run_sync_soon`), into an
unbounded channel: memory is bounded by what the caller reserved before asking.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from aisbatchfs.ais.api import Arrival, Buffer, ShardMember
from aisbatchfs.ais.batch import Batch, BatchItem
from aisbatchfs.ais.client import LIST_PROPS, AisClient, ListPage
from aisbatchfs.ais.archindex import ArchiveIndex
from aisbatchfs.ais.errors import AisError, ObjectChanged, ObjectNotFound, ProtocolError
from aisbatchfs.ais.models import (
    ArchiveListing,
    ArchiveMember,
    BucketProps,
    BucketRef,
    ClusterMap,
    Item,
    ObjectAttrs,
)
from aisbatchfs.ais.shard import STREAMABLE, index_archive, read_archive_range, read_shard

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_INDEXES = 256  # archives whose headers are kept indexed


class ThreadedAis:
    """The cluster as the filesystem sees it. One per mount."""

    def __init__(self, client: AisClient, meta_threads: int = 128, data_threads: int = 32) -> None:
        self.client = client
        self._meta = trio.CapacityLimiter(meta_threads)
        self._data = trio.CapacityLimiter(data_threads)
        # archives whose members are stored as `./name`: only an archregx request (or, for a
        # zip, opening it here) reaches those, so ask that way at once next time
        self._dotted: set[tuple[BucketRef, str]] = set()
        # archives whose TAR headers the client read itself (archindex.py)
        self._indexes: OrderedDict[tuple[BucketRef, str], ArchiveIndex] = OrderedDict()

    async def _in_thread(self, limiter: trio.CapacityLimiter, fn: Callable[..., T],
                         *args: Any, **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                             limiter=limiter)

    # -- metadata --------------------------------------------------------------------------------

    async def cluster_map(self) -> ClusterMap:
        return await self._in_thread(self._meta, self.client.cluster_map)

    async def list_buckets(self, provider: str | None = None) -> list[BucketRef]:
        return await self._in_thread(self._meta, self.client.list_buckets, provider)

    async def bucket_props(self, bucket: BucketRef) -> BucketProps:
        return await self._in_thread(self._meta, self.client.bucket_props, bucket)

    async def list_page(self, bucket: BucketRef, prefix: str = "", *, recursive: bool = True,
                        token: str = "", uuid: str = "", page_size: int = 0,
                        props: str = LIST_PROPS) -> ListPage:
        return await self._in_thread(self._meta, self.client.list_page, bucket, prefix,
                                     recursive=recursive, token=token, uuid=uuid,
                                     page_size=page_size, props=props)

    async def list_archive(self, bucket: BucketRef, obj: str) -> ArchiveListing:
        """The server's listing, or, where it shows signs of members the server reads wrong
        (a name twice, members of size 0: links?), the client's own index of the headers."""
        listed = await self._in_thread(self._meta, self.client.list_archive, bucket, obj)
        names = [m.name for m in listed.members]
        if listed.problem or not obj.lower().endswith(STREAMABLE) or (
                len(set(names)) == len(names) and all(m.size for m in listed.members)):
            return listed  # (a .zip has no TAR headers to index: the server's view stands)
        try:
            index = await self._index(bucket, obj)
        except AisError as e:
            log.warning("%s/%s: cannot read its TAR headers (%s); its duplicates and links "
                        "read as the server gives them", bucket, obj, e)
            return listed
        return ArchiveListing([ArchiveMember(e.name, e.size, e.link) for e in index.files()],
                              escaped=index.escaped)

    async def _index(self, bucket: BucketRef, obj: str) -> ArchiveIndex:
        index = await self._in_thread(self._data, index_archive, self.client, bucket, obj)
        self._indexes[(bucket, obj)] = index
        while len(self._indexes) > MAX_INDEXES:
            self._indexes.popitem(last=False)
        return index

    def needs_own_read(self, item: Item) -> bool:
        """Members GetBatch would read wrong or not at all: read them with get()."""
        if not item.member:
            return False
        if (item.bucket, item.obj) in self._dotted:
            return True
        index = self._indexes.get((item.bucket, item.obj))
        return index is not None and item.member in index.special

    async def head(self, bucket: BucketRef, obj: str) -> ObjectAttrs:
        return await self._in_thread(self._meta, self.client.head, bucket, obj)

    # -- data ------------------------------------------------------------------------------------

    async def get(self, item: Item, start: int = 0, length: int | None = None, *,
                  timeout: float | None = None) -> Buffer:
        length = item.size - start if length is None else length
        whole = start == 0 and length == item.size
        c = self.client
        if not item.member:
            return await self._in_thread(
                self._data, c.get, item.bucket, item.obj, start=start,
                length=None if whole else length, expected_size=item.size,
                expected_version=item.version or None, expected_checksum=item.checksum or None,
                timeout=timeout)
        key = (item.bucket, item.obj)
        index = self._indexes.get(key)
        if index is not None and item.member in index.special:
            return await self._read_indexed(item, index, start, length, timeout)
        if key not in self._dotted:
            try:
                if whole:
                    return await self._in_thread(self._data, c.get, item.bucket, item.obj,
                                                 archpath=item.member, expected_size=item.size,
                                                 timeout=timeout)
                return await self._in_thread(self._data, c.get_member_range, item.bucket,
                                             item.obj, item.member, start, length,
                                             timeout=timeout)
            except ObjectNotFound:
                pass
        try:
            data = await self._in_thread(self._data, c.get_dotted_member, item.bucket, item.obj,
                                         item.member, expected_size=item.size, timeout=timeout)
        except ObjectNotFound:
            # listed, yet archpath cannot name it (stored as a/../b, x/./y): read its headers
            index = await self._index(item.bucket, item.obj)
            if item.member not in index.entries:
                raise
            return await self._read_indexed(item, index, start, length, timeout)
        self._dotted.add(key)
        return data if whole else data[start:start + length]

    async def _read_indexed(self, item: Item, index: ArchiveIndex, start: int, length: int,
                            timeout: float | None) -> Buffer:
        """A member read where it lies in the archive, as extraction would give it."""
        entry = index.entries.get(item.member)
        if entry is None or entry.kind != "file":
            raise ObjectNotFound(f"{item.member} is not a file in {item.bucket}/{item.obj}",
                                 status=404, what=str(item))
        if entry.size != item.size:
            raise ObjectChanged(f"size is {entry.size}, listed as {item.size}", what=str(item))
        length = min(length, entry.size - start)
        return await self._in_thread(self._data, read_archive_range, self.client, item.bucket,
                                     item.obj, entry.offset + start, max(length, 0),
                                     expected_version=item.version or index.version,
                                     timeout=timeout)


    @asynccontextmanager
    async def batch(self, items: Sequence[Item], *, timeout: float | None = None,
                    first_byte_timeout: float | None = None,
                    ) -> AsyncIterator[AsyncIterator[list[Arrival]]]:
        batch = Batch(self.client, continue_on_error=True, timeout=timeout,
                      first_byte_timeout=first_byte_timeout,
                      retry_throttled=False)  # the batcher paces its requests on 429
        batch.items.extend(
            BatchItem(it.obj, it.bucket, archpath=it.member or None, size=it.size,
                      checksum=(it.checksum_type, it.checksum)
                      if it.checksum and it.checksum_type and not it.member else None)
            for it in items)

        def produce(post: Callable[[list[Arrival]], None]) -> None:
            for group in batch.get_groups():
                post([(out.index, None if out.missing else data) for out, data in group])

        async with self._stream(produce, batch.abort) as arrivals:
            yield arrivals

    @asynccontextmanager
    async def shard(self, archive: Item, want: Callable[[str, int], bool], *,
                    timeout: float | None = None,
                    ) -> AsyncIterator[AsyncIterator[list[ShardMember]]]:
        def produce(post: Callable[[list[ShardMember]], None]) -> None:
            post(read_shard(self.client, archive.bucket, archive.obj, want,
                            expected_version=archive.version,
                            expected_checksum=archive.checksum,
                            checksum_type=archive.checksum_type, timeout=timeout))

        async with self._stream(produce, lambda: None) as members:
            yield members

    @asynccontextmanager
    async def _stream(self, produce: Callable[[Callable[[Any], None]], None],
                      abort: Callable[[], None]) -> AsyncIterator[AsyncIterator[Any]]:
        """Run `produce(post)` in a data thread; what it posts comes out of the yielded
        iterator, then whatever error ended it. Leaving early aborts the transfer."""
        send, recv = trio.open_memory_channel[Any](math.inf)
        token = trio.lowlevel.current_trio_token()

        def post(group: Any) -> None:  # in the trio thread
            try:
                send.send_nowait(group)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the consumer left; the thread is being aborted

        async def pump() -> None:
            try:
                await self._in_thread(
                    self._data, produce, lambda group: token.run_sync_soon(post, group))
            except AisError as e:
                post(_Failed(e))
            except Exception as e:  # noqa: BLE001 - a parser bug must not pass as success
                log.exception("a stream from AIStore failed unexpectedly")
                post(_Failed(ProtocolError(f"{type(e).__name__}: {e}")))
            finally:
                send.close()

        async def arrivals() -> AsyncIterator[Any]:
            async for group in recv:
                if isinstance(group, _Failed):
                    raise group.error
                yield group

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                it = arrivals()
                try:
                    yield it
                finally:
                    abort()
                    recv.close()
                    await it.aclose()
        except BaseExceptionGroup as group:
            raise sole(group) from None

    def counters(self) -> dict[str, int]:
        return self.client.counters()


def sole(group: BaseExceptionGroup) -> BaseException:
    """The one exception a nursery wrapped (the consumer's, raised in the body of a context
    manager that yields inside a nursery), so callers see the client's own errors; a group
    of several stays a group."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        e = pending.pop()
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)
        else:
            leaves.append(e)
    return leaves[0] if len(leaves) == 1 else group


class _Failed:
    """The error that ended a stream, carried through its channel after its arrivals."""

    __slots__ = ("error",)

    def __init__(self, error: AisError) -> None:
        self.error = error
