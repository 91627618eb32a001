"""The read path: `read(item, offset, size)` for objects and archive members.

Reads are keyed by what is read (an `Item`: object or member, with its version), never by an
open file handle: when the kernel opens and closes files by itself (no OPEN reaches the
daemon), the inode is all a READ carries. Two kinds of files:

- Small ones (up to `max_object`, batched): whole, from the cache, filled by GetBatch
  requests that the planner predicts and the batcher coalesces. A member of a small
  compressed shard comes from streaming the shard once (when what it inflates to fits a
  share of the budget; past that, members are fetched alone, never a 200 MiB inflation for
  a 6-byte member).
- Large ones: in windows of ranged GETs (members: one-item GetBatch ranges, since the server
  refuses Range with archpath), kept per file in a few sequential streams, so several
  readers at different offsets (8 workers on one file) each keep their own window. A window
  starts small and doubles while reads stay sequential (Parquet footers, zip directories and
  HDF5 do not fetch far more than they read); a seek starts a new stream; a sequential
  reader gets its next window fetched in the background. Windows count against the byte
  budget (read-ahead only from free budget); with no room, a read fetches just its own
  bytes. A stream that reads to the end of its file is dropped at once; since nothing else
  says a reader has left, streams unused for `idle` seconds are dropped too, and their
  reservations released.

Every fetch checks the object is still the one listed (size, version, checksum), so no read
mixes bytes of two versions. After a failed fetch the kernel retries the same page at once
(read-ahead, then a synchronous read): that retry gets the same error for a moment instead
of waiting out a second deadline, unless another fetch has succeeded since (the cluster is
back).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import trio

from aisbatchfs.ais.api import AisApi, Buffer
from aisbatchfs.ais.errors import AisError, DeadlineExceeded, ProtocolError
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.batcher import Batcher
from aisbatchfs.fs.cache import ReadCache, Reservation
from aisbatchfs.fs.disktier import DiskTier
from aisbatchfs.fs.namespace import Entry, Kind, Namespace
from aisbatchfs.fs.pagecache import KernelCache
from aisbatchfs.fs.planner import Planner

MiB = 1 << 20
# reading members of these one by one makes the server decompress from the start each time
COMPRESSED = (".tgz", ".tar.gz", ".tar.lz4")
# seconds a failed fetch is answered with the same error: the kernel retries at once; a
# program retrying later, or any fetch succeeding meanwhile, gets a new try
FAILURE_MEMORY = 1.0
MAX_STREAMS = 8  # sequential streams kept per large file
MAX_FILES = 4096  # large files with streams; past it, the least recently read go


@dataclass(frozen=True)
class ReaderConfig:
    max_object: int = MiB  # batch_max_object: batched up to this size
    batch: bool = True  # False: every small file with its own GET (--no-batch)
    whole_max: int = 4 * MiB  # unbatched files up to this are fetched whole
    first_window: int = 512 << 10
    max_window: int = 16 * MiB  # larger buffers come from mmap: page faults on each one
    idle: float = 10.0  # seconds a stream of a large file lives without reads
    shard_share: int = 16  # stream a compressed shard whole if it inflates to <= budget/this
    read_timeout: float = 30.0


@dataclass(eq=False)
class _Window:
    start: int
    data: Buffer
    reservation: Reservation | None  # None: an over-budget piece of one read

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def drop(self) -> None:
        if self.reservation is not None:
            self.reservation.release()


@dataclass(eq=False)
class _Ahead:
    """The next window of a sequential stream, on its way in the background."""

    start: int
    reservation: Reservation
    done: trio.Event = field(default_factory=trio.Event)
    window: _Window | None = None
    dropped: bool = False  # its stream let go of it before it arrived


@dataclass(eq=False)
class _Stream:
    """One sequential reader of a large file."""

    next_off: int
    used: float
    size: int = 0  # current window size
    claimed: int = -1  # where the read under way ends: a read from there continues this stream
    window: _Window | None = None
    ahead: _Ahead | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)

    def close(self) -> None:
        if self.window is not None:
            self.window.drop()
            self.window = None
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            if ahead.done.is_set():
                if ahead.window is not None:
                    ahead.window.drop()
            else:
                ahead.dropped = True  # its fetch releases the reservation when it ends


class Reader:
    def __init__(self, ns: Namespace, api: AisApi, cache: ReadCache, batcher: Batcher | None,
                 planner: Planner | None, cfg: ReaderConfig,
                 kernel: KernelCache | None = None, disk: DiskTier | None = None) -> None:
        self.ns = ns
        self.api = api
        self.cache = cache
        self.batcher = batcher
        self.planner = planner
        self.cfg = cfg
        self.kernel = kernel  # the kernel's page cache: told where the reader is
        self.disk = disk  # blocks of large files: looked at before the cluster, kept there
        self.counters: Counter[str] = Counter()
        self._large: OrderedDict[Item, list[_Stream]] = OrderedDict()
        self._failed: dict[tuple[Item, int], tuple[float, int | None, AisError]] = {}
        self._streamed: OrderedDict[Item, None] = OrderedDict()  # shards read whole once
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Read-ahead fetches and the sweep of idle streams live here, for the mount's
        lifetime."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(self.cfg.idle / 2)
                self.sweep()

    def batched(self, item: Item) -> bool:
        return (self.batcher is not None and self.cfg.batch
                and 0 < item.size <= self.cfg.max_object and self.cache.cacheable(item.size)
                and not self.api.needs_own_read(item))

    def accessed(self, entry: Entry) -> None:
        """A file is being read (opened, or its first read arrived): fetch what comes next.
        Members of a compressed shard are predicted by streaming the shard instead."""
        item = self.ns.item(entry)
        if self.planner is None or self.batcher is None or not self.batched(item):
            return
        if _compressed_member(item) and self.archive_streamable(entry):
            return
        plan = self.planner.accessed(entry)
        if self.kernel is not None:
            if plan.tripwire is not None:
                self.kernel.keep_out(self.ns.item(plan.tripwire))
            if plan.passed:
                self.kernel.passed(self.ns.item(e) for e in plan.passed)
        if plan.fetch:
            self.batcher.prefetch([self.ns.item(e) for e in plan.fetch])

    async def read(self, entry: Entry, offset: int, size: int,
                   version: Item | None = None) -> Buffer | memoryview:
        """Bytes of the file at `entry`, of `version` if given (the one the kernel holds,
        which may be older than the entry: then the fetch fails, never mixes versions)."""
        item = version or self.ns.item(entry)
        if offset >= item.size or size <= 0:
            return b""
        batched = self.batched(item)
        key = (item, 0 if batched else offset)
        failed = self._failed.get(key)
        if failed is not None:
            when, progress, error = failed
            if trio.current_time() - when < FAILURE_MEMORY and progress in (None, self._progress()):
                raise error
            del self._failed[key]
        if self.kernel is not None and offset == 0:
            self.kernel.missed(item)  # if it was stored ahead, the kernel has let it go
        try:
            if batched:
                data = await self._small(entry, item)
                if offset == 0 and size >= len(data):
                    return data  # the usual case: a small file in one read
                return memoryview(data)[offset:offset + size]
            return await self._ranged(item, offset, size)
        except AisError as e:
            if len(self._failed) > 10_000:
                self._failed.clear()
            # a passing state (timeout, unreachable) is not repeated once the cluster answers
            # again; a definite answer (missing, changed) is, for the moment
            transient = e.transient or isinstance(e, DeadlineExceeded)
            self._failed[key] = (trio.current_time(), self._progress() if transient else None, e)
            raise

    def _progress(self) -> int:
        """Grows with every fetch that succeeds: a failure remembered before the last success
        is not repeated (the cluster is back)."""
        fetched = self.batcher.counters["bytes"] if self.batcher is not None else 0
        return fetched + self.counters["ranged_fetches"]

    # -- small files -----------------------------------------------------------------------------

    async def _small(self, entry: Entry, item: Item) -> Buffer:
        assert self.batcher is not None
        data = self.cache.get(item)
        if data is None and _compressed_member(item) and self.archive_streamable(entry):
            await self._stream_shard(entry, item)
            data = self.cache.get(item)
        if data is not None:
            self.batcher.kick()  # an unread item became read: prefetch may have room now
            return data
        return await self.batcher.get(item)

    def archive_streamable(self, member: Entry) -> bool:
        """Is the shard holding this member small enough to read whole: what it inflates to
        (from the archive listing's sizes) within a share of the budget?"""
        members = self.ns.archive_members(member)
        return bool(members) and (sum(m.size for m in members)
                                  <= self.cache.budget // self.cfg.shard_share)

    async def _stream_shard(self, entry: Entry, item: Item) -> None:
        """A member of a small compressed shard: read the shard whole once, so its other
        members are in the cache when the reader gets to them."""
        assert self.batcher is not None
        archive = self.ns.archive_item(entry)
        if archive in self._streamed:
            return
        self._streamed[archive] = None
        while len(self._streamed) > 4096:
            self._streamed.popitem(last=False)
        members = [self.ns.item(m) for m in self.ns.archive_members(entry)]
        await self.batcher.stream_shard(archive, members, item)

    # -- large files -----------------------------------------------------------------------------

    def _streams(self, item: Item) -> list[_Stream]:
        streams = self._large.get(item)
        if streams is None:
            streams = self._large[item] = []
            while len(self._large) > MAX_FILES:
                _, gone = self._large.popitem(last=False)
                for st in gone:
                    st.close()
        self._large.move_to_end(item)
        return streams

    def _stream_for(self, item: Item, offset: int) -> _Stream:
        """The stream this read continues (its window holds `offset`, or it reads on from
        where it stopped), or a new one."""
        streams = self._streams(item)
        now = trio.current_time()
        for st in streams:
            w = st.window
            if (w is not None and w.start <= offset < w.end) or offset in (st.next_off,
                                                                            st.claimed) or (
                    st.ahead is not None and st.ahead.start == offset):
                st.used = now
                return st
        if len(streams) >= MAX_STREAMS:
            oldest = min(streams, key=lambda s: s.used)
            oldest.close()
            streams.remove(oldest)
        st = _Stream(next_off=-1, used=now)
        streams.append(st)
        return st

    async def _ranged(self, item: Item, offset: int, size: int) -> Buffer | memoryview:
        end = min(offset + size, item.size)
        st = self._stream_for(item, offset)
        st.claimed = end  # the kernel's next read-ahead request may come before this one ends
        pieces = []
        async with st.lock:  # concurrent reads of one stream share one fetch
            # A read may span windows (the kernel asks up to its read-ahead size, which can
            # exceed the first window): the reply must cover all of it, since FUSE takes a
            # short reply for the end of the file.
            pos = offset
            while pos < end:
                w = st.window
                if w is None or not w.start <= pos < w.end:
                    w = await self._refill(item, st, pos, end)
                    if not w.start <= pos < w.end:
                        raise ProtocolError(f"a fetch at offset {pos} returned no bytes there",
                                            what=f"read {item}")
                piece = memoryview(w.data)[pos - w.start:end - w.start]  # a view, not a copy
                pieces.append(piece)
                pos += len(piece)
                st.next_off = pos
            if end == item.size:
                self._drop_stream(item, st)  # read to its end: this reader is done with it
            else:
                self._read_ahead(item, st, end)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _drop_stream(self, item: Item, st: _Stream) -> None:
        st.close()
        streams = self._large.get(item)
        if streams is not None and st in streams:
            streams.remove(st)
            if not streams:
                del self._large[item]

    async def _refill(self, item: Item, st: _Stream, offset: int, end: int) -> _Window:
        """Fetch the window holding `offset` (the read wants bytes up to `end`)."""
        total = item.size
        if total <= self.cfg.whole_max:
            start, length = 0, total
        else:
            sequential = offset == st.next_off
            st.size = (min(max(st.size * 2, self.cfg.first_window), self.cfg.max_window)
                       if sequential else self.cfg.first_window)
            start, length = offset, min(st.size, total - offset)
        ahead = st.ahead
        if ahead is not None and ahead.start == start:
            await ahead.done.wait()
            st.ahead = None
            if ahead.window is not None and ahead.window.end >= min(start + length, total):
                self._hold(st, ahead.window)
                return ahead.window
            if ahead.window is not None:
                ahead.window.drop()
        elif ahead is not None:
            st.ahead = None
            ahead.dropped = True
        self._hold(st, None)
        r = self.cache.reserve(length, demanded=True, kind="window")
        if r is None:  # no room: just this read's bytes, outside the budget
            self.counters["over_budget_reads"] += 1
            start, length = offset, end - offset
        try:
            data = await self._fetch(item, start, length)
        except BaseException:
            if r is not None:
                r.release()
            raise
        window = _Window(start, data, r)
        self._hold(st, window)
        return window

    def _hold(self, st: _Stream, window: _Window | None) -> None:
        if st.window is not None and st.window is not window:
            st.window.drop()
        st.window = window

    def _read_ahead(self, item: Item, st: _Stream, pos: int) -> None:
        """A sequential reader past half its window: fetch the next window now, if the budget
        has room for it."""
        w, total = st.window, item.size
        if (self._nursery is None or w is None or total <= self.cfg.whole_max
                or w.end >= total or st.ahead is not None
                or st.size < 2 * self.cfg.first_window or pos < w.start + len(w.data) // 2):
            return
        start = w.end
        length = min(min(st.size * 2, self.cfg.max_window), total - start)
        r = self.cache.reserve(length, demanded=False, kind="window")
        if r is None:
            self.counters["read_ahead_skipped"] += 1
            return
        ahead = st.ahead = _Ahead(start, r)
        self.counters["read_ahead"] += 1
        self._nursery.start_soon(self._fetch_ahead, item, ahead, length)

    async def _fetch_ahead(self, item: Item, ahead: _Ahead, length: int) -> None:
        try:
            data = await self._fetch(item, ahead.start, length)
            ahead.window = _Window(ahead.start, data, ahead.reservation)
        except AisError:
            pass  # the reader fetches the window itself, and reports a failure then
        finally:
            if ahead.window is None or ahead.dropped:
                ahead.reservation.release()
                ahead.window = None
            ahead.done.set()

    async def _fetch(self, item: Item, start: int, length: int) -> Buffer:
        """Bytes [start, start+length): what the disk cache holds of them from `start` on,
        the rest from the cluster (and kept on disk)."""
        have = b""
        if self.disk is not None:
            have = await self.disk.get_range(item, start, length) or b""
            if have:
                self.counters["disk_bytes"] += len(have)
            if len(have) >= length:
                return have
        deadline = trio.current_time() + self.cfg.read_timeout
        rest = await self.ns.cluster.fetch(
            lambda: self.api.get(item, start + len(have), length - len(have),
                                 timeout=deadline - trio.current_time()),
            str(item), deadline)
        self.counters["ranged_fetches"] += 1
        if self.disk is not None:
            self.disk.put_range(item, start + len(have), rest)
        return have + rest if have else rest

    def sweep(self) -> None:
        """Drop the streams of large files nobody read for `idle` seconds."""
        cutoff = trio.current_time() - self.cfg.idle
        for item in list(self._large):
            streams = self._large[item]
            for st in [s for s in streams if s.used < cutoff and not s.lock.locked()]:
                st.close()
                streams.remove(st)
                self.counters["idle_streams_dropped"] += 1
            if not streams:
                del self._large[item]

    def forget(self, entry: Entry) -> None:
        """Nobody reads this file any more (its last handle closed, or the kernel forgot it)."""
        if entry.kind in (Kind.FILE, Kind.MEMBER):
            for st in self._large.pop(self.ns.item(entry), []):
                st.close()

    def stats(self) -> dict:
        return dict(self.counters, large_files=len(self._large),
                    streams=sum(len(s) for s in self._large.values()))


def _compressed_member(item: Item) -> bool:
    return bool(item.member) and item.obj.lower().endswith(COMPRESSED)
