"""The read path: `read(handle, offset, size)` for files and archive members.

Two strategies behind one interface (`Reader`):
- DirectReader: plain requests. A small object or member is fetched whole on its first read
  and kept with the handle (the kernel asks in 128 KiB pieces). A large one is read in windows
  with ranged GETs (members: one-item GetBatch ranges, since the server refuses Range with
  archpath). The window starts small and doubles while reads stay sequential, so scattered
  small reads (Parquet footers, zip directories, HDF5) do not fetch far more than they read;
  a seek resets it; a sequential reader gets the next window fetched in the background.
- BatchedReader: small objects and members come from the cache, filled by GetBatch requests
  that the planner predicts and the batcher coalesces. Large ones go the direct way.
Every fetch checks the object is still the one listed (size, version), so a handle never mixes
bytes of two versions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from aisbatchfs.ais import BucketRef, ObjectNotFound, ProtocolError
from aisbatchfs.ais.aio import AsyncAis
from aisbatchfs.fs.batcher import Batcher, item_key
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.namespace import Entry, Kind
from aisbatchfs.fs.planner import Planner

MiB = 1 << 20
# reading members of these one by one makes the server decompress from the start each time
COMPRESSED = (".tgz", ".tar.gz", ".tar.lz4")
# After a failed fetch the kernel retries the same page at once (readahead, then a synchronous
# read): answer that retry with the same error instead of waiting out a second deadline.
FAILURE_MEMORY = 2.0


@dataclass(eq=False)
class _Ahead:
    start: int
    held: int = 0  # bytes reserved in the budget for it
    dropped: bool = False  # the handle let go of it before it arrived
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | bytearray | None = None


@dataclass(eq=False)
class ReadHandle:
    """One open file: what it is (as listed at open) and the bytes fetched for it so far."""

    entry: Entry
    buf_start: int = 0
    buf: bytes | bytearray = b""
    held: int = 0  # bytes of buf reserved in the budget
    lock: trio.Lock = field(default_factory=trio.Lock)
    failed: tuple[int, float, Exception] | None = None  # (offset, when, error) of the last failure
    window: int = 0
    next_off: int = -1  # where a sequential reader reads next
    ahead: _Ahead | None = None


class Reader(Protocol):
    def open(self, entry: Entry) -> ReadHandle: ...

    async def read(self, handle: ReadHandle, offset: int, size: int) -> bytes | memoryview: ...

    def release(self, handle: ReadHandle) -> None: ...


class DirectReader:
    """One GET (or ranged GET, or one-item GetBatch) per fetch; no cache across handles.

    The windows a handle holds count against the byte budget (`budget`, the read cache's):
    a window is reserved before it is fetched (read-ahead only from free budget) and given
    back when the handle moves on or closes. When the budget has no room, a read fetches just
    the bytes it asked for, so memory outside the budget stays within one FUSE request per
    read in progress."""

    def __init__(
        self,
        ais: AsyncAis,
        *,
        read_timeout: float,
        budget: ReadCache,
        whole_max: int = 4 * MiB,
        first_window: int = 512 << 10,
        max_window: int = 16 * MiB,  # larger buffers come from mmap: page faults on each one
    ) -> None:
        self.ais = ais
        self.timeout = read_timeout
        self.budget = budget
        self.whole_max = whole_max
        self.first_window = first_window
        self.max_window = max_window
        self.nursery: trio.Nursery | None = None  # set by the daemon: read-ahead runs there
        self.dotted: set[tuple[BucketRef, str]] = set()  # archives storing `./name` members
        self.counters: Counter[str] = Counter()

    def open(self, entry: Entry) -> ReadHandle:
        return ReadHandle(entry)

    def release(self, handle: ReadHandle) -> None:
        self._hold(handle, b"", 0, 0)
        self._drop_ahead(handle)

    async def read(self, handle: ReadHandle, offset: int, size: int) -> bytes | memoryview:
        total = handle.entry.size
        if offset >= total or size <= 0:
            return b""
        end = min(offset + size, total)
        pieces = []
        async with handle.lock:  # concurrent reads of one handle share one fetch
            # A read may span windows (the kernel asks up to its read-ahead size, which can
            # exceed the first window): the reply must cover all of it, since FUSE takes a
            # short reply for the end of the file.
            pos = offset
            while pos < end:
                if not handle.buf_start <= pos < handle.buf_start + len(handle.buf):
                    await self._refill(handle, pos, end, total)
                    if not handle.buf_start <= pos < handle.buf_start + len(handle.buf):
                        raise ProtocolError(f"a fetch at offset {pos} returned no bytes there",
                                            what=f"read {handle.entry.path}")
                # a view, not a copy: pyfuse3 replies from any buffer
                piece = memoryview(handle.buf)[pos - handle.buf_start : end - handle.buf_start]
                pieces.append(piece)
                pos += len(piece)
                handle.next_off = pos
            self._read_ahead(handle, end, total)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # -- the byte budget ---------------------------------------------------------------------------

    def _unreserve(self, n: int) -> None:
        if n:
            self.budget.unreserve(n)

    def _hold(self, handle: ReadHandle, buf: bytes | bytearray, start: int, held: int) -> None:
        """Make `buf` the handle's window, giving back what the previous one held."""
        self._unreserve(handle.held)
        handle.buf, handle.buf_start, handle.held = buf, start, held

    def _drop_ahead(self, handle: ReadHandle) -> None:
        ahead, handle.ahead = handle.ahead, None
        if ahead is None:
            return
        if ahead.done.is_set():
            self._unreserve(ahead.held)
            ahead.held, ahead.data = 0, None
        else:
            ahead.dropped = True  # its fetch gives the reservation back when it ends

    # -- fetching ----------------------------------------------------------------------------------

    async def _refill(self, handle: ReadHandle, offset: int, end: int, total: int) -> None:
        """Fetch the window holding `offset` (the read wants bytes up to `end`)."""
        if total <= self.whole_max:
            start, length = 0, total
        else:
            sequential = offset == handle.next_off
            handle.window = (min(max(handle.window * 2, self.first_window), self.max_window)
                             if sequential else self.first_window)
            start, length = offset, min(handle.window, total - offset)
        ahead = handle.ahead
        if ahead is not None and ahead.start == start:
            await ahead.done.wait()
            if ahead.data is not None and len(ahead.data) >= min(length, total - start):
                handle.ahead = None
                self._hold(handle, ahead.data, start, ahead.held)
                return
        self._drop_ahead(handle)
        failed = handle.failed
        if failed and failed[0] == start and trio.current_time() - failed[1] < FAILURE_MEMORY:
            raise failed[2]
        self._hold(handle, b"", 0, 0)
        held = length if self.budget.reserve(length, demanded=True) else 0
        if not held:  # no room: just this read's bytes, outside the budget
            self.counters["over_budget_reads"] += 1
            start, length = offset, end - offset
        try:
            buf = await self.fetch(handle.entry, start, length)
        except Exception as e:
            self._unreserve(held)
            handle.failed = (start, trio.current_time(), e)
            raise
        handle.failed = None
        self._hold(handle, buf, start, held)

    def _read_ahead(self, handle: ReadHandle, pos: int, total: int) -> None:
        """A sequential reader past half its window: fetch the next window now, if the budget
        has room for it."""
        end = handle.buf_start + len(handle.buf)
        if (self.nursery is None or total <= self.whole_max or end >= total
                or handle.ahead is not None or handle.window < 2 * self.first_window
                or pos < handle.buf_start + len(handle.buf) // 2):
            return
        length = min(min(handle.window * 2, self.max_window), total - end)
        if not self.budget.reserve(length, demanded=False):
            self.counters["read_ahead_skipped"] += 1
            return
        ahead = handle.ahead = _Ahead(end, held=length)
        self.counters["read_ahead"] += 1

        async def fetch() -> None:
            try:
                ahead.data = await self.fetch(handle.entry, end, length)
            except Exception:  # noqa: BLE001 - the reader refetches and reports it then
                ahead.data = None
            finally:
                if ahead.data is None or ahead.dropped:
                    self._unreserve(ahead.held)
                    ahead.held, ahead.data = 0, None
                ahead.done.set()

        self.nursery.start_soon(fetch)

    async def fetch(self, e: Entry, start: int = 0, length: int | None = None,
                    timeout: float | None = None) -> bytes | bytearray:
        """Bytes [start, start+length) of an object or member (all of it by default), within
        `timeout` seconds (default: the read deadline)."""
        client = self.ais.client
        assert e.bucket is not None
        timeout = self.timeout if timeout is None else timeout
        length = e.size - start if length is None else length
        whole = start == 0 and length == e.size
        if e.kind is Kind.FILE:
            return await self.ais.data(
                client.get, e.bucket, e.path,
                start=start, length=None if whole else length,
                expected_size=e.size, expected_version=e.version or None, timeout=timeout,
            )
        assert e.kind is Kind.MEMBER
        key = (e.bucket, e.path)
        if key not in self.dotted:
            try:
                if whole:
                    return await self.ais.data(client.get, e.bucket, e.path, archpath=e.member,
                                               expected_size=e.size, timeout=timeout)
                return await self.ais.data(client.get_member_range, e.bucket, e.path, e.member,
                                           start, length, timeout=timeout)
            except ObjectNotFound:
                pass
        # the member is stored as `./name`: only an archregx request (or, for a zip, opening
        # it here) reaches it, and it returns the whole member
        data = await self.ais.data(client.get_dotted_member, e.bucket, e.path, e.member,
                                   expected_size=e.size, timeout=timeout)
        self.dotted.add(key)
        return data[start : start + length]


class BatchedReader:
    """Small objects and members through the cache and GetBatch; the rest the direct way."""

    def __init__(self, direct: DirectReader, cache: ReadCache, batcher: Batcher,
                 planner: Planner | None, *, max_object: int) -> None:
        self.direct = direct
        self.cache = cache
        self.batcher = batcher
        self.planner = planner
        self.max_object = max_object
        self._streamed: dict[tuple, bool] = {}  # compressed shards already streamed once
        self.shard_members: Callable[[Entry], list[Entry]] = lambda e: []

    def batchable(self, e: Entry) -> bool:
        return (e.kind in (Kind.FILE, Kind.MEMBER) and 0 < e.size <= self.max_object
                and self.cache.cacheable(e.size) and (e.bucket, e.path) not in self.direct.dotted)

    def open(self, entry: Entry) -> ReadHandle:
        # An open is what predicts the next files (a read may never come here: the kernel
        # serves it from pages stored ahead). Members of a compressed shard are predicted by
        # streaming the shard, on their first read.
        if self.batchable(entry) and not _compressed_member(entry):
            self._predict(entry)
        return ReadHandle(entry)

    def release(self, handle: ReadHandle) -> None:
        self.direct.release(handle)

    def _predict(self, e: Entry) -> None:
        assert self.planner is not None
        ahead = self.planner.accessed(e)
        if ahead:
            self.batcher.prefetch(ahead)

    async def read(self, handle: ReadHandle, offset: int, size: int) -> bytes | memoryview:
        e = handle.entry
        if not self.batchable(e):
            return await self.direct.read(handle, offset, size)
        if offset >= e.size or size <= 0:
            return b""
        data = handle.buf
        if not data:
            async with handle.lock:
                if not handle.buf:
                    failed = handle.failed
                    if failed and trio.current_time() - failed[1] < FAILURE_MEMORY:
                        raise failed[2]
                    try:
                        handle.buf = await self._obtain(e)
                    except Exception as exc:
                        handle.failed = (0, trio.current_time(), exc)
                        raise
            data = handle.buf
        if offset == 0 and size >= len(data):
            return data  # the usual case: a small file in one read
        return memoryview(data)[offset : offset + size]

    async def _obtain(self, e: Entry) -> bytes | bytearray:
        data = self.cache.get(item_key(e))
        if data is None and _compressed_member(e):
            shard = (e.bucket, e.path, e.version)
            if shard not in self._streamed:
                self._streamed[shard] = True
                while len(self._streamed) > 4096:
                    self._streamed.pop(next(iter(self._streamed)))
                members = self.shard_members(e)
                if sum(m.size for m in members) <= self.cache.budget // 4:
                    await self.batcher.stream_shard(members, e)
                    data = self.cache.get(item_key(e))
            if data is None:
                self._predict(e)  # too large to stream whole: its members come by batch
        if data is not None:
            self.batcher.kick()  # an unread item became read: prefetch may have room now
            return data
        return await self.batcher.get(e)


def _compressed_member(e: Entry) -> bool:
    return e.kind is Kind.MEMBER and e.path.lower().endswith(COMPRESSED)
