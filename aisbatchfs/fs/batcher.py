"""The batcher: wanted items become GetBatch requests; each item is handed over on arrival.

- Nothing is fetched twice: an item queued or on its way is waited for, not asked again (a
  hedge, below, is the one counted exception).
- Coalescing: demanded items wait up to `coalesce` seconds from the first of them for others
  (from any process) to join; then one GetBatch carries them all, demanded items first and
  predicted or hinted ones after, within `max_items`, `max_bytes` and the cache budget. While
  other readers' demanded items are on their way (or arrived less than `coalesce` ago), a miss
  is held for their next misses, up to MAX_HOLD: concurrent readers then share one batch per
  round instead of splitting into cohorts that each pay a round trip.
- Pipelining: up to `in_flight` batches at once; a waiting reader wakes when its own item has
  arrived in the stream, not when the batch ends.
- Head-of-line: a batch must show its first byte within `first_byte_timeout`. A reader whose
  item is still queued behind others after `hedge_after` may fetch it alone (a hedge), while
  hedges stay under `hedge_share` of the items fetched.
- Failure: a missing item is confirmed by a plain GET (GetBatch does not cold-fetch remote
  objects, so its 404 can be wrong): ENOENT only if that GET says so too. A batch that fails
  as a whole is split in two and retried, down to one item, then a plain GET. On 429 the
  batcher backs off with jitter and halves the batches in flight (growing back by one per
  success): throttling is never answered with a storm of single GETs.

Every wanted item is a `Want` in an explicit state (queued, in flight, then arrived, missing
or dropped). A want in flight owns its budget reservation; whatever ends a request (its last
byte, an error, a cancellation) settles every want it carried, in a `finally`: no waiter is
ever left to its deadline by a failure elsewhere, and no reservation outlives its request.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from aisbatchfs.ais.api import AisApi, Buffer
from aisbatchfs.ais.errors import (
    AisError,
    DeadlineExceeded,
    ObjectNotFound,
    RequestRejected,
    Throttled,
)
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.cache import ReadCache, Reservation
from aisbatchfs.fs.clustermap import ClusterWatch
from aisbatchfs.fs.disktier import DiskTier

log = logging.getLogger(__name__)

# the longest a miss is held for readers whose items are still on their way
MAX_HOLD = 0.025
# items of a batch one disk cache read takes (2 MiB of 64 KiB files): small enough that a
# batch's chunks read in parallel and its first items arrive early, large enough that the
# call to a reader process is a small part of it
DISK_CHUNK = 32


class State(enum.Enum):
    QUEUED = "queued"  # in the demand or the prefetch queue
    IN_FLIGHT = "in flight"  # part of a request under way; holds a reservation
    ARRIVED = "arrived"  # bytes handed over
    MISSING = "missing"  # the batch said the server has no such item (a GET confirms)
    DROPPED = "dropped"  # the batch gave up on it; whoever needs it fetches it alone


DONE = frozenset({State.ARRIVED, State.MISSING, State.DROPPED})


@dataclass(eq=False)
class Want:
    item: Item
    demanded: bool
    state: State = State.QUEUED
    done: trio.Event = field(default_factory=trio.Event)
    data: Buffer | None = None
    why: AisError | None = None  # why it was dropped
    reservation: Reservation | None = None  # held exactly while in flight
    waiters: int = 0
    awaited: bool = False  # counted in Batcher._awaited: demanded and on its way

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """In flight exactly while holding a reservation; done exactly once settled."""
        assert (self.state is State.IN_FLIGHT) == (
            self.reservation is not None and self.reservation.held), self
        assert (self.state in DONE) == self.done.is_set(), self


@dataclass(frozen=True)
class BatcherConfig:
    max_items: int = 256  # items in one GetBatch (the option batch_max_items)
    max_bytes: int = 32 << 20  # bytes in one GetBatch (batch_max_bytes)
    in_flight: int = 4  # GetBatch requests under way at once (batches_in_flight)
    coalesce: float = 0.001  # seconds a miss waits for others to join (coalesce_ms)
    first_byte_timeout: float = 5.0  # a batch must start within this
    read_timeout: float = 30.0  # a read gets its bytes within this, or EIO
    hedge_share: float = 0.05  # hedges stay under this share of the items fetched

    @property
    def hedge_after(self) -> float:
        """A reader still waiting after this long may fetch its item alone."""
        return self.first_byte_timeout / 2


class Batcher:
    def __init__(self, api: AisApi, cache: ReadCache, cfg: BatcherConfig,
                 on_arrival: Callable[[Item, Buffer, bool], None] = lambda item, data, d: None,
                 cluster: ClusterWatch | None = None, disk: DiskTier | None = None) -> None:
        self.api = api
        self.cluster = cluster  # a 404 while the map lacks targets is no answer
        self.disk = disk  # looked at before the cluster; what the cluster sends is kept there
        self.cache = cache
        self.cfg = cfg
        self.max_hold = max(cfg.coalesce, MAX_HOLD)
        # told of every item that arrives, and whether a reader asked for it (the reader
        # stores predicted ones in the kernel's cache)
        self.on_arrival = on_arrival
        self.in_flight_limit = cfg.in_flight
        self.counters: Counter[str] = Counter()
        self.first_byte_ms: deque[float] = deque(maxlen=1000)
        self._wants: dict[Item, Want] = {}
        self._demand: deque[Want] = deque()
        self._prefetch: deque[Want] = deque()
        self._first_demand_at: float | None = None
        self._awaited = 0  # demanded items on their way
        self._awaited_done_at = -1.0  # when the last of them arrived (or failed)
        self._running = 0
        self._backoff_until = 0.0
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- asking ----------------------------------------------------------------------------------

    def kick(self) -> None:
        self._wake.set()

    def pending(self, item: Item) -> bool:
        return item in self._wants

    def prefetch(self, items: Iterable[Item]) -> int:
        """Queue items expected to be read soon; returns how many were new."""
        n = 0
        for item in items:
            if item in self._wants or item in self.cache:
                continue
            w = Want(item, demanded=False)
            self._wants[item] = w
            self._prefetch.append(w)
            n += 1
        if n:
            self.counters["predicted"] += n
            self.kick()
        return n

    async def get(self, item: Item) -> Buffer:
        """The item's bytes, through a batch (joining one already on its way, if any),
        within the read deadline."""
        w = self._wants.get(item)
        if w is None:
            w = Want(item, demanded=True)
            self._wants[item] = w
            if not self._from_disk_now(w):
                self._queue_demand(w)
        elif not w.demanded:
            w.demanded = True
            if w.state is State.QUEUED:
                self._queue_demand(w)  # promoted from the prefetch queue
            else:
                self._await(w)
        w.waiters += 1
        deadline = trio.current_time() + self.cfg.read_timeout
        try:
            with trio.fail_after(self.cfg.read_timeout):
                with trio.move_on_after(self.cfg.hedge_after):
                    await w.done.wait()
                if not w.done.is_set():
                    if self._may_hedge():
                        self.counters["hedges"] += 1
                        return await self._get_alone(item, deadline)
                    await w.done.wait()
        except trio.TooSlowError:
            raise DeadlineExceeded(f"no bytes within the read deadline of "
                                   f"{self.cfg.read_timeout:g}s", what=f"read {item}") from None
        finally:
            w.waiters -= 1
        if w.state is State.ARRIVED:
            assert w.data is not None
            self.cache.mark_read(item)
            return w.data
        if w.state is State.DROPPED and isinstance(w.why, RequestRejected):
            raise w.why  # the request itself is wrong: a GET of it would be too
        # missing in the batch (to confirm), or dropped by a failed batch: fetch it alone,
        # within what is left of this read's deadline
        self.counters["fallbacks"] += 1
        return await self._get_alone(item, deadline)

    async def _get_alone(self, item: Item, deadline: float) -> Buffer:
        """A GET of one item, within what is left of its read's deadline; a 404 is believed
        only when the cluster map says it can be (ClusterWatch.fetch)."""
        async def get() -> Buffer:
            return await self.api.get(item, timeout=self._left(deadline, item))

        try:
            if self.cluster is None:
                return await get()
            return await self.cluster.fetch(get, str(item), deadline)
        except ObjectNotFound:
            self.counters["missing"] += 1
            raise

    def _left(self, deadline: float, item: Item) -> float:
        left = deadline - trio.current_time()
        if left <= 0.01:
            raise DeadlineExceeded(f"read deadline of {self.cfg.read_timeout:g}s passed",
                                   what=f"read {item}")
        return left

    def _from_disk_now(self, w: Want) -> bool:
        """A demanded item the disk cache holds is read from there at once: coalescing is
        for round trips to the cluster, and a shuffled reader's miss held for others' (up to
        MAX_HOLD) waited far longer than the disk takes. False: left to the queue."""
        if self.disk is None or self._nursery is None or not self.disk.holds(w.item):
            return False
        r = self.cache.reserve(w.item.size, demanded=True)
        if r is None:
            return False
        self._transition(w, State.IN_FLIGHT, reservation=r)
        self._await(w)
        self.counters["disk_direct"] += 1
        self._nursery.start_soon(self._direct_from_disk, w)
        return True

    async def _direct_from_disk(self, w: Want) -> None:
        """The disk's answer for one demanded item; if it has gone meanwhile, the item joins
        the demand queue after all."""
        try:
            if await self._from_disk([w]):
                self._requeue([w])
                self.kick()
        except Exception:  # noqa: BLE001 - a bug here must not end the mount
            log.exception("reading %s from the disk cache failed unexpectedly", w.item)
            if w.state is State.IN_FLIGHT:
                self._settle(w, State.DROPPED, why=AisError("disk cache read failed"))

    def _queue_demand(self, w: Want) -> None:
        if self._first_demand_at is None:
            self._first_demand_at = trio.current_time()
        self._demand.append(w)
        self.kick()

    def _may_hedge(self) -> bool:
        return self.counters["hedges"] < self.cfg.hedge_share * max(self.counters["items"], 20)

    # -- dispatching -----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
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
                    ready = self._first_demand_at + self.cfg.coalesce
                    if len(self._demand) < self.cfg.max_items:
                        # Readers whose items are on their way, or just arrived, will miss
                        # again in a moment: hold new misses for them (up to max_hold), so
                        # concurrent readers share one batch instead of splitting into
                        # cohorts that each pay a round trip.
                        hold = self._first_demand_at + self.max_hold
                        ready = max(ready, hold if self._awaited
                                    else min(self._awaited_done_at + self.cfg.coalesce, hold))
                    wait = ready - now
                    if wait > 0:
                        with trio.move_on_after(wait):
                            await self._wake.wait()
                        continue
                if self._running >= self.in_flight_limit:
                    await self._wake.wait()
                    continue
                wants = self._take()
                if not wants:
                    await self._wake.wait()
                    continue
                self._running += 1
                nursery.start_soon(self._run_batch, wants)

    def _take(self) -> list[Want]:
        """Demanded items first, then predicted ones, within the caps and the budget."""
        wants: list[Want] = []
        nbytes = 0
        for queue, demanded in ((self._demand, True), (self._prefetch, False)):
            while queue and len(wants) < self.cfg.max_items:
                w = queue[0]
                if w.state is not State.QUEUED or (not demanded and w.demanded):
                    queue.popleft()  # taken already, or promoted to the demand queue
                    continue
                size = w.item.size
                if wants and nbytes + size > self.cfg.max_bytes:
                    break
                r = self.cache.reserve(size, demanded=demanded)
                if r is None:
                    if not demanded:
                        self.counters["prefetch_waits_for_budget"] += 1
                    break  # the budget is all in flight: wait for a batch to land
                queue.popleft()
                self._transition(w, State.IN_FLIGHT, reservation=r)
                if demanded:
                    self._await(w)
                wants.append(w)
                nbytes += size
            if demanded and not self._demand:
                self._first_demand_at = None
        return wants

    async def _run_batch(self, wants: list[Want]) -> None:
        try:
            if self.disk is not None:
                wants = await self._from_disk(wants)
            if wants:
                await self._fetch(wants)
        except Exception:  # noqa: BLE001 - a bug here must not end the mount; _fetch settled all
            log.exception("a GetBatch of %d items failed unexpectedly", len(wants))
        finally:
            self._running -= 1
            self.kick()

    async def _from_disk(self, wants: list[Want]) -> list[Want]:
        """Items found in the disk cache arrive from there, as they would from the cluster
        (into memory, and ahead into the kernel's cache); the rest are left to fetch, in
        their order. The batch is read in chunks of DISK_CHUNK, in parallel (up to the disk
        cache's readers), each arriving as it is read: one worker reading a whole batch
        kept one disk read at a time in flight, and its first item waited for its last."""
        assert self.disk is not None
        disk = self.disk
        left: list[tuple[int, Want]] = []

        async def read(first: int, part: list[Want]) -> None:
            found = await disk.get_many([w.item for w in part])
            for i, (w, data) in enumerate(zip(part, found, strict=True)):
                if data is None:
                    left.append((first + i, w))
                else:
                    self.counters["disk_hits"] += 1
                    self._arrived(w, data, from_disk=True)

        try:
            async with trio.open_nursery() as nursery:
                for first in range(0, len(wants), DISK_CHUNK):
                    nursery.start_soon(read, first, wants[first:first + DISK_CHUNK])
        except BaseException:  # a cancellation (disk errors are misses): leave nothing behind
            for w in wants:
                if w.state is State.IN_FLIGHT:
                    self._settle(w, State.DROPPED, why=AisError("cancelled"))
            raise
        return [w for _, w in sorted(left, key=lambda p: p[0])]

    async def _fetch(self, wants: list[Want]) -> None:
        """One GetBatch of `wants`; on a failure, the parts not yet arrived are split and
        fetched again. Every want is settled when this returns, whatever happened."""
        self.counters["batches"] += 1
        self.counters["items"] += len(wants)
        started = trio.current_time()
        failure: AisError | None = None
        try:
            async with self.api.batch([w.item for w in wants], timeout=self.cfg.read_timeout,
                                      first_byte_timeout=self.cfg.first_byte_timeout) as arrivals:
                first = True
                async for group in arrivals:
                    if first:
                        first = False
                        self.first_byte_ms.append((trio.current_time() - started) * 1000)
                    for index, data in group:
                        self._arrived(wants[index], data)
        except Throttled as e:
            self.counters["throttled"] += 1
            self.in_flight_limit = max(1, self.in_flight_limit // 2)
            self._backoff_until = trio.current_time() + random.uniform(0.05, 0.5)
            log.info("GetBatch throttled (%s): %d batches in flight at most, backing off",
                     e.message, self.in_flight_limit)
            self._requeue([w for w in wants if w.state is State.IN_FLIGHT])
            return
        except AisError as e:
            failure = e
        finally:
            # a cancellation or a bug: nothing in flight may be left behind
            for w in wants:
                if w.state is State.IN_FLIGHT and failure is None:
                    self._settle(w, State.DROPPED, why=AisError("the request ended early"))
        if failure is None:
            if self.in_flight_limit < self.cfg.in_flight:
                self.in_flight_limit += 1
            return
        left = [w for w in wants if w.state is State.IN_FLIGHT]
        if not left:
            return
        self.counters["batch_failures"] += 1
        no_start = isinstance(failure, DeadlineExceeded) and len(left) == len(wants)
        if isinstance(failure, RequestRejected) or len(left) == 1 or no_start:
            # a wrong request fails again whole or split; a batch that never started would
            # make each half wait out the first-byte deadline again: single GETs instead
            if no_start:
                self.counters["batches_not_started"] += 1
            log.debug("GetBatch of %d items failed (%s); single GETs for demanded items",
                      len(wants), failure)
            for w in left:
                self._settle(w, State.DROPPED, why=failure)
            return
        self.counters["splits"] += 1
        self.counters["items_retried"] += len(left)  # counted again in "items"
        log.debug("GetBatch of %d items failed after %d arrived (%s); splitting",
                  len(wants), len(wants) - len(left), failure)
        half = len(left) // 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch, left[:half])
            nursery.start_soon(self._fetch, left[half:])

    async def stream_shard(self, archive: Item, members: Sequence[Item], demanded: Item) -> None:
        """Fetch the members of one compressed shard by reading the shard once and extracting
        on this side (a GetBatch of many members of one .tgz or .tar.lz4 would make the
        server decompress from the start for each one). Members the budget has no room for
        are left to later requests."""
        wants: dict[str, Want] = {}
        for item in members:
            if item in self._wants or item in self.cache:
                continue
            is_demanded = item == demanded
            r = self.cache.reserve(item.size, demanded=is_demanded)
            if r is None:
                if is_demanded:
                    return  # let the normal path (which waits for room) serve it
                continue
            w = Want(item, demanded=is_demanded)
            self._wants[item] = w
            self._transition(w, State.IN_FLIGHT, reservation=r)
            wants[item.member] = w
        if not wants:
            return
        self.counters["shard_streams"] += 1
        self.counters["items"] += len(wants)
        try:
            async with self.api.shard(archive, lambda name, size: name in wants,
                                      timeout=self.cfg.read_timeout) as groups:
                arrived: dict[str, Buffer] = {}
                async for group in groups:
                    arrived.update(group)  # a name stored twice: the last one, as tar does
                for name, data in arrived.items():
                    w = wants[name]
                    if len(data) == w.item.size:
                        self._arrived(w, data)
        except AisError as e:
            self.counters["shard_failures"] += 1
            log.warning("reading shard %s whole failed (%s: %s); its members are fetched alone",
                        archive, type(e).__name__, e.message)
        finally:
            for w in wants.values():
                if w.state is State.IN_FLIGHT:
                    self._settle(w, State.DROPPED, why=AisError("not in the shard stream"))

    # -- state changes ---------------------------------------------------------------------------

    def _transition(self, w: Want, state: State, *, reservation: Reservation | None = None) -> None:
        """QUEUED -> IN_FLIGHT (taking a reservation) or IN_FLIGHT -> QUEUED (giving it back)."""
        assert {w.state, state} == {State.QUEUED, State.IN_FLIGHT}, (w, state)
        if state is State.IN_FLIGHT:
            assert reservation is not None and reservation.held
            w.reservation = reservation
        else:
            assert w.reservation is not None
            w.reservation.release()
            w.reservation = None
        w.state = state
        w._check()

    def _requeue(self, wants: list[Want]) -> None:
        for w in reversed(wants):
            self._transition(w, State.QUEUED)
            self._unawait(w)
            (self._demand if w.demanded else self._prefetch).appendleft(w)
        if self._demand and self._first_demand_at is None:
            self._first_demand_at = trio.current_time()

    def _arrived(self, w: Want, data: Buffer | None, *, from_disk: bool = False) -> None:
        if w.state is not State.IN_FLIGHT:
            return  # settled already (a duplicate in a reply is refused upstream)
        if data is None:
            self._settle(w, State.MISSING)
            return
        if not from_disk:
            self.counters["bytes"] += len(data)
            if self.disk is not None:
                self.disk.put(w.item, data)  # queued: written off the loop, never waited for
        r, w.reservation = w.reservation, None
        assert r is not None
        self.cache.fill(w.item, data, r)  # the reservation becomes cached bytes
        w.data = data
        w.state = State.IN_FLIGHT  # (still: settled just below)
        self._settle(w, State.ARRIVED)
        self.on_arrival(w.item, data, w.demanded)

    def _settle(self, w: Want, state: State, *, why: AisError | None = None) -> None:
        """IN_FLIGHT -> ARRIVED, MISSING or DROPPED: wake its waiters, free its slot."""
        assert w.state is State.IN_FLIGHT and state in DONE, (w, state)
        if w.reservation is not None:
            w.reservation.release()
            w.reservation = None
        w.state = state
        w.why = why
        if self._wants.get(w.item) is w:
            del self._wants[w.item]
        self._unawait(w)
        w.done.set()
        w._check()
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
