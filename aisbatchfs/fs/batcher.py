"""The batcher: wanted items become GetBatch requests; each item is handed over on arrival.

- Nothing is fetched twice: an item queued or on its way is waited for, not asked again (a
  hedge, below, is the one counted exception).
- Coalescing: demanded items wait up to `coalesce` seconds from the first of them for others
  (from any process) to join; then one GetBatch carries them all, demanded items first and
  predicted or hinted ones after, within `max_items`, `max_bytes` and the cache budget. While
  other readers' demanded items are on their way (or arrived less than `coalesce` ago), a miss
  is held for their next misses, up to MAX_HOLD: concurrent readers then share one batch per
  round instead of splitting into cohorts that each pay a round trip (8 shuffled readers:
  7.6 items per batch instead of 4.4).
- Pipelining: up to `in_flight` batches at once; a waiting reader wakes when its own item has
  arrived in the stream, not when the batch ends (the stream's thread posts each item to trio
  with run_sync_soon: no round trip per item).
- Head-of-line: a batch must show its first byte within `first_byte_timeout`. A reader whose
  item is still queued behind others after `hedge_after` may fetch it alone (a hedge), while
  hedges stay under `hedge_share` of the items fetched.
- Failure: a missing item is confirmed by a plain GET (GetBatch does not cold-fetch remote
  objects, so its 404 can be wrong): ENOENT only if that GET says so too. A batch that fails
  as a whole is split in two and retried, down to one item, then a plain GET. On 429 the
  batcher backs off with jitter and halves the batches in flight (growing back by one per
  success): throttling is never answered with a storm of single GETs.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from aisbatchfs.ais import (
    AisError,
    Batch,
    DeadlineExceeded,
    BatchItem,
    BucketRef,
    ObjectNotFound,
    RequestRejected,
    Throttled,
)
from aisbatchfs.ais.aio import AsyncAis
from aisbatchfs.ais.batch import extract_members
from aisbatchfs.fs.cache import ItemKey, ReadCache
from aisbatchfs.fs.namespace import Entry, Kind

log = logging.getLogger(__name__)

# the longest a miss is held for readers whose items are still on their way
MAX_HOLD = 0.025


def item_key(e: Entry) -> ItemKey:
    assert e.bucket is not None
    return ItemKey(e.bucket, e.path, e.member if e.kind is Kind.MEMBER else "", e.size,
                   e.version, e.checksum)


@dataclass(eq=False)
class Want:
    key: ItemKey
    entry: Entry
    demanded: bool
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    missing: bool = False
    error: Exception | None = None
    reserved: int = 0
    dispatched: bool = False
    waiters: int = 0
    awaited: bool = False  # counted in Batcher._awaited: demanded and on its way


class Batcher:
    def __init__(
        self,
        ais: AsyncAis,
        cache: ReadCache,
        direct: Callable[..., Awaitable[bytes]],
        checksum_type: Callable[[BucketRef], str],
        *,
        max_items: int,
        max_bytes: int,
        in_flight: int,
        coalesce: float,
        first_byte_timeout: float,
        read_timeout: float,
        hedge_after: float | None = None,
        hedge_share: float = 0.05,
    ) -> None:
        self.ais = ais
        self.cache = cache
        self.direct = direct  # direct(entry, timeout=...): one item alone (fallbacks, hedges)
        self.checksum_type = checksum_type
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_in_flight = in_flight
        self.in_flight_limit = in_flight
        self.coalesce = coalesce
        self.max_hold = max(coalesce, MAX_HOLD)
        self.first_byte_timeout = first_byte_timeout
        self.read_timeout = read_timeout
        self.hedge_after = hedge_after if hedge_after is not None else first_byte_timeout / 2
        self.hedge_share = hedge_share
        self.counters: Counter[str] = Counter()
        self.first_byte_ms: deque[float] = deque(maxlen=1000)
        self._wants: dict[ItemKey, Want] = {}
        self._demand: deque[Want] = deque()
        self._prefetch: deque[Want] = deque()
        self._first_demand_at: float | None = None
        self._awaited = 0  # demanded items on their way
        self._awaited_done_at = 0.0  # when the last of them arrived (or failed)
        self._running = 0
        self._backoff_until = 0.0
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        # told of every item that arrives (the page pusher stores it in the kernel's cache)
        self.on_arrival: Callable[[Entry, bytes], None] = lambda e, data: None

    # -- asking ----------------------------------------------------------------------------------

    def kick(self) -> None:
        self._wake.set()

    def prefetch(self, entries: Iterable[Entry]) -> int:
        """Queue items expected to be read soon; returns how many were new."""
        n = 0
        for e in entries:
            key = item_key(e)
            if key in self._wants or key in self.cache:
                continue
            w = Want(key, e, demanded=False)
            self._wants[key] = w
            self._prefetch.append(w)
            n += 1
        if n:
            self.counters["predicted"] += n
            self.kick()
        return n

    async def get(self, e: Entry) -> bytes:
        """The item's bytes, through a batch (joining one already on its way, if any)."""
        key = item_key(e)
        w = self._wants.get(key)
        if w is None:
            w = Want(key, e, demanded=True)
            self._wants[key] = w
            self._queue_demand(w)
        elif not w.demanded:
            w.demanded = True
            if not w.dispatched:
                self._queue_demand(w)  # promoted from the prefetch queue
            else:
                self._await(w)
        w.waiters += 1
        deadline = trio.current_time() + self.read_timeout
        try:
            with trio.fail_after(self.read_timeout):
                with trio.move_on_after(self.hedge_after):
                    await w.done.wait()
                if not w.done.is_set():
                    if self._may_hedge():
                        self.counters["hedges"] += 1
                        return await self.direct(e, timeout=self._left(deadline, e))
                    await w.done.wait()
        except trio.TooSlowError:
            raise DeadlineExceeded(f"no bytes within the read deadline of {self.read_timeout:g}s",
                                   what=f"read {e.bucket}/{e.path}") from None
        finally:
            w.waiters -= 1
        if w.data is not None:
            self.cache.mark_read(key)
            return w.data
        if w.error is not None and not isinstance(w.error, _Dropped):
            raise w.error
        # missing in the batch (confirm), or dropped after a failure: fetch it alone, within
        # what is left of this read's deadline
        self.counters["fallbacks"] += 1
        try:
            return await self.direct(e, timeout=self._left(deadline, e))
        except ObjectNotFound:
            self.counters["missing"] += 1
            raise

    def _left(self, deadline: float, e: Entry) -> float:
        left = deadline - trio.current_time()
        if left <= 0.01:
            raise DeadlineExceeded(f"read deadline of {self.read_timeout:g}s passed",
                                   what=f"read {e.bucket}/{e.path}")
        return left

    def _queue_demand(self, w: Want) -> None:
        if self._first_demand_at is None:
            self._first_demand_at = trio.current_time()
        self._demand.append(w)
        self.kick()

    def _may_hedge(self) -> bool:
        return self.counters["hedges"] < self.hedge_share * max(self.counters["items"], 20)

    # -- dispatching -----------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The dispatcher; runs for the mount's lifetime in its nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._wake = trio.Event()
                now = trio.current_time()
                if now < self._backoff_until:
                    await trio.sleep(self._backoff_until - now)
                    continue
                if self._first_demand_at is not None:
                    ready = self._first_demand_at + self.coalesce
                    if len(self._demand) < self.max_items:
                        # Readers whose items are on their way, or just arrived, will miss
                        # again in a moment: hold new misses for them (up to max_hold), so
                        # concurrent readers share one batch instead of splitting into
                        # cohorts that each pay a round trip.
                        hold = self._first_demand_at + self.max_hold
                        ready = max(ready, hold if self._awaited
                                    else min(self._awaited_done_at + self.coalesce, hold))
                    wait = ready - now
                    if wait > 0:
                        with trio.move_on_after(wait):
                            await self._wake.wait()
                        continue
                if self._running >= self.in_flight_limit:
                    await self._wake.wait()
                    continue
                items = self._take()
                if not items:
                    await self._wake.wait()
                    continue
                self._running += 1
                nursery.start_soon(self._run_batch, items)

    def _take(self) -> list[Want]:
        """Demanded items first, then predicted ones, within the caps and the budget."""
        items: list[Want] = []
        nbytes = 0
        while self._demand and len(items) < self.max_items:
            w = self._demand[0]
            if w.dispatched:
                self._demand.popleft()
                continue
            if items and nbytes + w.entry.size > self.max_bytes:
                break
            if not self.cache.reserve(w.entry.size, demanded=True):
                break  # the budget is all in flight: wait for a batch to land
            self._demand.popleft()
            w.reserved, w.dispatched = w.entry.size, True
            self._await(w)
            items.append(w)
            nbytes += w.entry.size
        if not self._demand:
            self._first_demand_at = None
        while self._prefetch and len(items) < self.max_items:
            w = self._prefetch[0]
            if w.dispatched:
                self._prefetch.popleft()
                continue
            if nbytes + w.entry.size > self.max_bytes and items:
                break
            if not self.cache.reserve(w.entry.size, demanded=False):
                self.counters["prefetch_waits_for_budget"] += 1
                break
            self._prefetch.popleft()
            w.reserved, w.dispatched = w.entry.size, True
            items.append(w)
            nbytes += w.entry.size
        return items

    async def _run_batch(self, items: list[Want]) -> None:
        try:
            await self._fetch(items)
        finally:
            self._running -= 1
            self.kick()

    async def _fetch(self, items: list[Want]) -> None:
        self.counters["batches"] += 1
        self.counters["items"] += len(items)
        client = self.ais.client
        batch = Batch(client, continue_on_error=True, timeout=self.read_timeout,
                      first_byte_timeout=self.first_byte_timeout)
        for w in items:
            e = w.entry
            checksum = None
            if e.kind is Kind.FILE and e.checksum:
                ctype = self.checksum_type(e.bucket)
                checksum = (ctype, e.checksum) if ctype else None
            batch.items.append(BatchItem(
                e.path, e.bucket, archpath=e.member if e.kind is Kind.MEMBER else None,
                size=e.size, checksum=checksum))
        token = trio.lowlevel.current_trio_token()
        started = trio.current_time()
        first = [True]

        def stream() -> None:  # in a worker thread: one hand-over to trio per network read
            for group in batch.get_groups():
                if first[0]:
                    first[0] = False
                    token.run_sync_soon(self._first_item, started)
                token.run_sync_soon(self._arrived_group, [
                    (items[out.index], out.missing, data) for out, data in group])

        try:
            await self.ais.data(stream)
            if self.in_flight_limit < self.max_in_flight:
                self.in_flight_limit += 1
            return
        except Throttled as e:
            self.counters["throttled"] += 1
            self.in_flight_limit = max(1, self.in_flight_limit // 2)
            self._backoff_until = trio.current_time() + random.uniform(0.05, 0.5)
            log.info("GetBatch throttled (%s): %d batches in flight at most, backing off",
                     e.message, self.in_flight_limit)
            self._requeue([w for w in items if not w.done.is_set()])
            return
        except (AisError, OSError) as e:
            failure: Exception = e
        left = [w for w in items if not w.done.is_set()]
        if not left:
            return
        self.counters["batch_failures"] += 1
        if isinstance(failure, RequestRejected) or len(left) == 1:
            log.debug("GetBatch of %d items failed (%s); single GETs for demanded items",
                      len(items), failure)
            for w in left:
                self._finish(w, error=_Dropped(str(failure)))
            return
        self.counters["splits"] += 1
        log.debug("GetBatch of %d items failed after %d arrived (%s); splitting",
                  len(items), len(items) - len(left), failure)
        half = len(left) // 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch, left[:half])
            nursery.start_soon(self._fetch, left[half:])

    async def stream_shard(self, members: list[Entry], demanded: Entry) -> None:
        """Fetch every member of one compressed shard by reading the shard once and extracting
        on this side. A GetBatch of many members of one .tgz or .tar.lz4 would make the server
        decompress from the start for each member; one GET decompresses it once. Members the
        budget has no room for are left to later batches."""
        wants: dict[str, Want] = {}
        for e in members:
            key = item_key(e)
            if key in self._wants or key in self.cache:
                continue
            is_demanded = e.member == demanded.member
            if not self.cache.reserve(e.size, demanded=is_demanded):
                if is_demanded:
                    return  # let the normal path (which waits for room) serve it
                continue
            w = Want(key, e, demanded=is_demanded, reserved=e.size, dispatched=True)
            self._wants[key] = w
            wants[e.member] = w
        if not wants:
            return
        self.counters["shard_streams"] += 1
        self.counters["items"] += len(wants)
        client = self.ais.client
        token = trio.lowlevel.current_trio_token()
        fmt = ".tar.lz4" if demanded.path.lower().endswith(".tar.lz4") else ".tgz"

        def stream() -> None:  # in a worker thread
            with client.open(demanded.bucket, demanded.path, timeout=self.read_timeout) as s:
                for group in extract_members(s.chunks(), fmt):
                    ready = [(wants[name], False, data) for name, data in group
                             if name in wants and len(data) == wants[name].entry.size]
                    if ready:
                        token.run_sync_soon(self._arrived_group, ready)

        try:
            await self.ais.data(stream)
        except (AisError, OSError, ValueError, RuntimeError) as e:
            log.info("streaming shard %s/%s failed: %s", demanded.bucket, demanded.path, e)
        for w in wants.values():
            if not w.done.is_set():
                self._finish(w, error=_Dropped("not in the shard stream"))

    def _requeue(self, wants: list[Want]) -> None:
        for w in reversed(wants):
            self.cache.unreserve(w.reserved)
            w.reserved, w.dispatched = 0, False
            self._unawait(w)
            (self._demand if w.demanded else self._prefetch).appendleft(w)
        if self._demand and self._first_demand_at is None:
            self._first_demand_at = trio.current_time()

    def _first_item(self, started: float) -> None:
        self.first_byte_ms.append((trio.current_time() - started) * 1000)

    def _arrived_group(self, group: list[tuple[Want, bool, bytes]]) -> None:
        for w, missing, data in group:
            self._arrived(w, missing, data)

    def _arrived(self, w: Want, missing: bool, data: bytes) -> None:
        if missing:
            self._finish(w, missing=True)
            return
        self.counters["bytes"] += len(data)
        self.on_arrival(w.entry, data)
        if self.cache.cacheable(len(data)):
            self.cache.fill(w.key, data, w.reserved)
        else:
            self.cache.unreserve(w.reserved)
        w.reserved = 0
        w.data = data
        self._finish(w)

    def _finish(self, w: Want, *, missing: bool = False, error: Exception | None = None) -> None:
        if w.reserved:
            self.cache.unreserve(w.reserved)
            w.reserved = 0
        w.missing = missing
        w.error = error
        if self._wants.get(w.key) is w:
            del self._wants[w.key]
        self._unawait(w)
        w.done.set()
        self.kick()

    def _await(self, w: Want) -> None:
        if not w.awaited:
            w.awaited = True
            self._awaited += 1

    def _unawait(self, w: Want) -> None:
        if w.awaited:
            w.awaited = False
            self._awaited -= 1
            self._awaited_done_at = trio.current_time()

    def stats(self) -> dict:
        lat = sorted(self.first_byte_ms)
        out = dict(self.counters)
        out["in_flight_limit"] = self.in_flight_limit
        out["queued"] = len(self._wants)
        if self.counters["batches"]:
            out["items_per_batch"] = round(self.counters["items"] / self.counters["batches"], 1)
        if lat:
            out["first_byte_ms_p50"] = round(lat[len(lat) // 2], 1)
            out["first_byte_ms_p90"] = round(lat[int(len(lat) * 0.9)], 1)
        return out


class _Dropped(Exception):
    """A batch gave up on this item; whoever needs it fetches it alone."""
