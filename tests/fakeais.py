"""An in-memory AIStore behind the filesystem's one async interface (aisbatchfs.ais.api.AisApi).

Unit tests of the read path's core run against it under trio's MockClock: every latency is a
`trio.sleep`, so with `autojump_threshold=0` time jumps as soon as every task waits, and a test
of coalescing, hedging or backoff is exact and instant, never a wall-clock threshold. Faults
are scripted per kind of call (`fail_next`), and every call is recorded (`calls`), so a test
can say exactly which requests a scenario costs. It checks what the real client checks: an
item whose size or version differs from the stored object is ObjectChanged, an unknown one is
missing. Integration tests against aisnode cover what only the real server shows.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from aisbatchfs.ais.aio import sole
from aisbatchfs.ais.api import Arrival, Buffer, ShardMember
from aisbatchfs.ais.client import LIST_PROPS, ListPage
from aisbatchfs.ais.errors import (
    AisError,
    BatchTruncated,
    DeadlineExceeded,
    ObjectChanged,
    ObjectNotFound,
)
from aisbatchfs.ais.models import (
    ENTRY_IS_DIR,
    ArchiveListing,
    ArchiveMember,
    BucketProps,
    BucketRef,
    ClusterMap,
    Item,
    ObjectAttrs,
    ObjectEntry,
)


@dataclass
class Stored:
    data: bytes
    version: str = "1"
    members: dict[str, bytes] = field(default_factory=dict)  # an archive's, by name

    def item(self, bucket: BucketRef, name: str) -> Item:
        return Item(bucket, name, "", len(self.data), self.version, f"ck{self.version}",
                    "xxhash2")


@dataclass
class Fault:
    """What the next call of a kind does instead of answering: raise `error` after
    `after` items (batches) and/or after `stall` seconds."""

    error: AisError | None = None
    after: int = 0
    stall: float = 0.0


class FakeAis:
    def __init__(self, *, first_byte: float = 0.002, per_item: float = 0.0001,
                 get_latency: float = 0.001, meta_latency: float = 0.001) -> None:
        self.first_byte = first_byte
        self.per_item = per_item
        self.get_latency = get_latency
        self.meta_latency = meta_latency
        self.store: dict[tuple[BucketRef, str], Stored] = {}
        self.calls: list[tuple] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.running: dict[str, int] = defaultdict(int)  # calls under way, by kind
        self.peak: dict[str, int] = defaultdict(int)
        # a cluster whose map lacks targets: their objects are missing from listings
        self.active = 1  # storage targets in the map
        self.map_version = 1  # moves when targets leave or join
        self.hidden: set[str] = set()  # objects on absent targets: unlisted and unreadable

    # -- setting up ------------------------------------------------------------------------------

    def put(self, bucket: BucketRef, name: str, data: bytes, version: str = "1") -> Item:
        self.store[(bucket, name)] = Stored(data, version)
        return self.store[(bucket, name)].item(bucket, name)

    def put_archive(self, bucket: BucketRef, name: str, members: dict[str, bytes],
                    version: str = "1") -> list[Item]:
        """An archive object (its own bytes do not matter here) and its members as items."""
        blob = b"".join(members.values())
        self.store[(bucket, name)] = Stored(blob, version, dict(members))
        return [Item(bucket, name, m, len(d), version, f"ck{version}", "xxhash2")
                for m, d in members.items()]

    def archive(self, bucket: BucketRef, name: str) -> Item:
        return self.store[(bucket, name)].item(bucket, name)

    def fail_next(self, kind: str, error: AisError | None = None, *, after: int = 0,
                  stall: float = 0.0, times: int = 1) -> None:
        """Script the next `times` calls of `kind` (batch, get, shard, list, head)."""
        for _ in range(times):
            self.faults[kind].append(Fault(error, after, stall))

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c[0] == kind)

    # -- helpers ---------------------------------------------------------------------------------

    def _fault(self, kind: str) -> Fault:
        q = self.faults.get(kind)
        return q.popleft() if q else Fault()

    def _bytes(self, item: Item) -> bytes | None:
        """The stored bytes the item names; ObjectChanged if its identity moved on."""
        stored = self.store.get((item.bucket, item.obj))
        if stored is None or item.obj in self.hidden:
            return None
        if stored.version != item.version:
            raise ObjectChanged(f"version is {stored.version}, listed as {item.version}",
                                what=str(item))
        data = stored.members.get(item.member) if item.member else stored.data
        if data is not None and len(data) != item.size:
            raise ObjectChanged(f"size is {len(data)}, listed as {item.size}", what=str(item))
        return data

    async def _enter(self, kind: str, *record: object) -> Fault:
        self.calls.append((kind, *record))
        self.running[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.running[kind])
        return self._fault(kind)

    # -- the interface ---------------------------------------------------------------------------

    async def cluster_map(self) -> ClusterMap:
        self.calls.append(("smap",))
        await trio.sleep(self.meta_latency)
        return ClusterMap(self.map_version, self.active, self.active)

    async def list_buckets(self, provider: str | None = None) -> list[BucketRef]:
        await trio.sleep(self.meta_latency)
        return sorted({b for b, _ in self.store}, key=str)

    async def bucket_props(self, bucket: BucketRef) -> BucketProps:
        await trio.sleep(self.meta_latency)
        return BucketProps(created_ns=1, checksum_type="xxhash2")

    async def list_page(self, bucket: BucketRef, prefix: str = "", *, recursive: bool = True,
                        token: str = "", uuid: str = "", page_size: int = 0,
                        props: str = LIST_PROPS) -> ListPage:
        fault = await self._enter("list", bucket, prefix)
        try:
            await trio.sleep(self.meta_latency + fault.stall)
            if fault.error is not None:
                raise fault.error
            entries: dict[str, ObjectEntry] = {}
            for (b, name), stored in sorted(self.store.items(), key=lambda kv: kv[0][1]):
                if b != bucket or not name.startswith(prefix) or name in self.hidden:
                    continue
                rest = name[len(prefix):]
                if not recursive and "/" in rest:
                    d = prefix + rest.split("/", 1)[0]
                    entries[d] = ObjectEntry(d, flags=ENTRY_IS_DIR)
                else:
                    entries[name] = ObjectEntry(name, len(stored.data), f"ck{stored.version}",
                                                stored.version)
            return ListPage(list(entries.values()), "", "")
        finally:
            self.running["list"] -= 1

    async def list_archive(self, bucket: BucketRef, obj: str) -> ArchiveListing:
        await trio.sleep(self.meta_latency)
        stored = self.store.get((bucket, obj))
        if stored is None:
            raise ObjectNotFound(f"{obj} does not exist", status=404)
        return ArchiveListing([ArchiveMember(m, len(d)) for m, d in stored.members.items()])

    async def head(self, bucket: BucketRef, obj: str) -> ObjectAttrs:
        fault = await self._enter("head", bucket, obj)
        try:
            await trio.sleep(self.meta_latency + fault.stall)
            if fault.error is not None:
                raise fault.error
            stored = self.store.get((bucket, obj))
            if stored is None:
                raise ObjectNotFound(f"{obj} does not exist", status=404, what=f"HEAD {obj}")
            return ObjectAttrs(len(stored.data), "xxhash2", f"ck{stored.version}", stored.version)
        finally:
            self.running["head"] -= 1

    async def get(self, item: Item, start: int = 0, length: int | None = None, *,
                  timeout: float | None = None) -> Buffer:
        length = item.size - start if length is None else length
        fault = await self._enter("get", item, start, length)
        try:
            with _deadline(timeout, str(item)):
                await trio.sleep(self.get_latency + fault.stall)
                if fault.error is not None:
                    raise fault.error
                data = self._bytes(item)
                if data is None:
                    raise ObjectNotFound(f"{item} does not exist", status=404, what=str(item))
                return data[start:start + length]
        finally:
            self.running["get"] -= 1

    @asynccontextmanager
    async def batch(self, items: Sequence[Item], *, timeout: float | None = None,
                    first_byte_timeout: float | None = None,
                    ) -> AsyncIterator[AsyncIterator[list[Arrival]]]:
        fault = await self._enter("batch", tuple(items))

        async def produce(send: trio.MemorySendChannel) -> None:
            with _deadline(timeout, f"GetBatch of {len(items)} items"):
                with _deadline(first_byte_timeout, "first byte"):
                    await trio.sleep(self.first_byte + (fault.stall if not fault.after else 0))
                    if fault.error is not None and not fault.after:
                        raise fault.error
                for i, item in enumerate(items):
                    if fault.error is not None and fault.after and i == fault.after:
                        await trio.sleep(fault.stall)
                        raise fault.error
                    if i:
                        await trio.sleep(self.per_item)
                    try:
                        data = self._bytes(item)
                    except ObjectChanged:
                        raise BatchTruncated(f"item {i} changed", first_missing=i) from None
                    await send.send([(i, data)])

        async with self._stream("batch", produce) as arrivals:
            yield arrivals

    @asynccontextmanager
    async def shard(self, archive: Item, want: Callable[[str, int], bool], *,
                    timeout: float | None = None,
                    ) -> AsyncIterator[AsyncIterator[list[ShardMember]]]:
        fault = await self._enter("shard", archive)

        async def produce(send: trio.MemorySendChannel) -> None:
            with _deadline(timeout, str(archive)):
                await trio.sleep(self.get_latency + fault.stall)
                if fault.error is not None:
                    raise fault.error
                stored = self.store.get((archive.bucket, archive.obj))
                if stored is None:
                    raise ObjectNotFound(f"{archive} does not exist", status=404)
                await send.send([(m, d) for m, d in stored.members.items() if want(m, len(d))])

        async with self._stream("shard", produce) as members:
            yield members

    @asynccontextmanager
    async def _stream(self, kind: str, produce: Callable) -> AsyncIterator[AsyncIterator]:
        """Like the real client: a producer task feeds a channel; its error comes after its
        arrivals; leaving early ends it."""
        send, recv = trio.open_memory_channel(math.inf)

        async def run() -> None:
            async with send:
                try:
                    await produce(send)
                except AisError as e:
                    await send.send(_Failed(e))

        async def arrivals() -> AsyncIterator:
            async for group in recv:
                if isinstance(group, _Failed):
                    raise group.error
                yield group

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                it = arrivals()
                try:
                    yield it
                finally:
                    nursery.cancel_scope.cancel()
                    await it.aclose()
        except BaseExceptionGroup as group:
            raise sole(group) from None
        finally:
            self.running[kind] -= 1

    def needs_own_read(self, item: Item) -> bool:
        return False

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for c in self.calls:
            out[f"calls_{c[0]}"] += 1
        return dict(out)


class _Failed:
    def __init__(self, error: AisError) -> None:
        self.error = error


class _deadline:
    """trio.fail_after that raises the client's DeadlineExceeded, as the real one does."""

    def __init__(self, seconds: float | None, what: str) -> None:
        self.scope = trio.move_on_after(math.inf if seconds is None else seconds)
        self.what = what
        self.seconds = seconds

    def __enter__(self) -> None:
        self.scope.__enter__()

    def __exit__(self, *exc: object) -> bool | None:
        handled = self.scope.__exit__(*exc)
        if self.scope.cancelled_caught:
            raise DeadlineExceeded(f"no complete answer within {self.seconds:g}s", what=self.what)
        return handled
