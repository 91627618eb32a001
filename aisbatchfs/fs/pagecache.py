"""The kernel's page cache, from the daemon's side: files stored ahead of their readers (FUSE
notify_store), and pages of a version that is gone dropped (notify_inval_inode).

Both are writes to /dev/fuse that may wait for a page lock held by a READ the event loop has
still to answer, so they run in one thread of their own, never on the event loop, one after
another: an invalidation always comes after any store that started before it.

What the kernel holds of a file is `Node.page_ident`: the version (an Item) whose attributes
the kernel was told and whose pages it may hold. When a listing, a lookup or an attribute
refresh shows another version:
- Files opened by the kernel alone (no OPEN reaches the daemon) keep their pages across
  opens. `switch()` marks the node as switching (`Node.next_ident`: no store may start), drops
  its pages and attributes in the kernel (after any store under way), and only then makes the
  new version the node's `page_ident`. Meanwhile READs ask for the old version, which fails
  with ObjectChanged (EIO) if the object changed: never a mix of versions within one read().
- Files the daemon opens: each open compares versions and answers keep_cache accordingly;
  an open of another version waits for a store under way (`settled`), so its invalidation
  comes after it.

A file that arrives in a batch is stored when the kernel knows its inode with attributes of
that version, nobody has it open (daemon open), no switch is under way, and it is not a
tripwire (a file kept out so that its read tells the daemon where the reader is). The daemon
keeps its own copy among the files already read (evicted first), so a read that comes after
the kernel dropped the pages still finds it. Pushed pages are clean and not yet read, so the
kernel reclaims them first, and they are charged to the daemon's memory cgroup: the bytes
pushed and not yet read (until the reader is past them, a READ shows the kernel dropped them,
or PUSH_TTL passes) stay under `push_budget`; past it, files wait in the daemon's cache for
their reads. Storing is an optimisation: when the queue is full or the kernel forgot the
inode, nothing is stored and reads take the usual way.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyfuse3
import trio

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.namespace import Namespace, Node

log = logging.getLogger(__name__)

QUEUE = 1024  # files waiting to be stored; past it, new arrivals are not stored
GROUP = 64  # files stored per trip to the storing thread
PUSH_TTL = 30.0  # seconds pushed bytes count as unread at most
MAX_TRIPWIRES = 4096


@dataclass(eq=False)
class _Job:
    """One notify call for the kernel thread: store a file's bytes, or drop its pages."""

    node: Node
    item: Item | None = None  # a store: the version the bytes are of
    data: Buffer = b""
    done: trio.Event = field(default_factory=trio.Event)  # an invalidation: set once made


class KernelCache:
    def __init__(self, ns: Namespace, cache: ReadCache, *, kernel_open: bool,
                 push: bool = True, push_budget: int | None = None) -> None:
        self.ns = ns
        self.cache = cache
        self.kernel_open = kernel_open
        self.push = push
        # bytes pushed and not yet read, at most (default: half the cache budget)
        self.push_budget = cache.budget // 2 if push_budget is None else push_budget
        self.pushed_bytes = 0
        self.counters: Counter[str] = Counter()
        self._send, self._recv = trio.open_memory_channel[_Job](QUEUE)
        self._limiter = trio.CapacityLimiter(1)  # one thread: stores and invalidations in order
        self._storing: dict[int, tuple[trio.Event, Item]] = {}  # ino: (stored, what)
        self._switching: dict[int, trio.Event] = {}  # ino: set when its switch is over
        self._pushed: OrderedDict[Item, float] = OrderedDict()  # pushed, unread: since when
        self._tripwires: OrderedDict[Item, None] = OrderedDict()
        self._supported = True

    # -- storing ahead ---------------------------------------------------------------------------

    def keep_out(self, item: Item) -> None:
        """Never store this file ahead: its read must reach the daemon (the planner's
        tripwire: it tells where a reader is, so the next window is fetched in time)."""
        self._tripwires[item] = None
        while len(self._tripwires) > MAX_TRIPWIRES:
            self._tripwires.popitem(last=False)

    def offer(self, item: Item, data: Buffer, demanded: bool = False) -> None:
        """A batch brought a file: queue it for the kernel's page cache if it was predicted
        (a file a reader asked for is being read right now: its READ fills the cache), the
        kernel knows its inode with attributes of this version, and nothing forbids it."""
        if (demanded or not (self.push and self._supported) or len(data) != item.size
                or not data or item in self._tripwires):
            return
        if self.pushed_bytes + item.size > self.push_budget:
            self.counters["push_budget_full"] += 1
            return
        node = self.ns.node_of(item)
        if node is None or node.lookups == 0 or node.opens or node.next_ident is not None:
            return
        current = self.ns.item(node.entry)
        if current != item:
            return
        if self.kernel_open and node.page_ident != item:
            return  # the kernel was not told this version's attributes
        if not self.kernel_open and node.page_ident == item:
            return  # already in the kernel's cache
        try:
            self._send.send_nowait(_Job(node, item, data))
        except trio.WouldBlock:
            self.counters["page_stores_dropped"] += 1

    def passed(self, items: Iterable[Item]) -> None:
        """The reader is past these files: their pushed pages are read (or never will be)."""
        for item in items:
            self._forget_pushed(item)

    def missed(self, item: Item) -> None:
        """A READ of the file reached the daemon: a tripwire was crossed, or the kernel
        dropped pages stored ahead."""
        self._tripwires.pop(item, None)
        if self._forget_pushed(item):
            self.counters["pushed_pages_lost"] += 1

    def _forget_pushed(self, item: Item) -> bool:
        if self._pushed.pop(item, None) is None:
            return False
        self.pushed_bytes -= item.size
        assert self.pushed_bytes >= 0
        return True

    def sweep(self) -> None:
        now = trio.current_time()
        while self._pushed:
            item, when = next(iter(self._pushed.items()))
            if now - when < PUSH_TTL:
                break
            self._forget_pushed(item)

    # -- versions --------------------------------------------------------------------------------

    async def settled(self, node: Node) -> None:
        """Daemon open: return once no store of another version than the node's entry is
        under way for this file."""
        storing = self._storing.get(node.ino)
        if storing is not None and storing[1] != self.ns.item(node.entry):
            self.counters["opens_waited"] += 1
            await storing[0].wait()

    async def switch(self, node: Node) -> None:
        """Kernel open: the node's entry is another version than the kernel holds: drop the
        kernel's pages and attributes of the old one, then serve the new one."""
        while (under_way := self._switching.get(node.ino)) is not None:
            await under_way.wait()
        new = self.ns.item(node.entry)
        if node.page_ident is None or node.page_ident == new:
            node.page_ident = new
            return
        over = self._switching[node.ino] = trio.Event()
        node.next_ident = new
        try:
            job = _Job(node)
            await self._send.send(job)  # after every store queued before it
            await job.done.wait()
            self.counters["invalidations"] += 1
        finally:
            node.page_ident, node.next_ident = self.ns.item(node.entry), None
            del self._switching[node.ino]
            over.set()

    # -- the thread ------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Stores and invalidations, a group per trip to the thread, in the order queued; runs
        for the mount's lifetime."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            while True:
                group = [await self._recv.receive()]
                while len(group) < GROUP:
                    try:
                        group.append(self._recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._process(group)

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(PUSH_TTL / 4)
            self.sweep()

    async def _process(self, group: list[_Job]) -> None:
        done = trio.Event()
        stores = [job for job in group if job.item is not None]
        for job in stores:
            self._storing[job.node.ino] = (done, job.item)  # type: ignore[assignment]
        try:
            stored = await trio.to_thread.run_sync(self._in_thread, group, limiter=self._limiter)
            for job in stored:
                assert job.item is not None
                if not self.kernel_open:
                    job.node.page_ident = job.item  # the next open keeps these pages
                self.cache.mark_read(job.item)  # the daemon's copy goes first when room is due
                self._forget_pushed(job.item)
                self._pushed[job.item] = trio.current_time()
                self.pushed_bytes += job.item.size
        finally:
            for job in stores:
                if self._storing.get(job.node.ino, (None,))[0] is done:
                    del self._storing[job.node.ino]
            done.set()
            for job in group:
                job.done.set()

    def _in_thread(self, group: list[_Job]) -> list[_Job]:
        """In the kernel thread: stores (each still current when it is made) and invalidations,
        in order. Consecutive stores go to the kernel together, with one release of the GIL
        (with one per store, the thread waits to take it back after each one)."""
        stored: list[_Job] = []
        stores: list[_Job] = []
        for job in group:
            node = job.node
            if job.item is not None:
                if (node.next_ident is not None or self.ns.item(node.entry) != job.item
                        or (self.kernel_open and node.page_ident != job.item)):
                    self.counters["page_stores_skipped"] += 1
                else:
                    stores.append(job)
                continue
            stored += self._store(stores)
            stores = []
            try:
                pyfuse3.invalidate_inode(node.ino)
            except OSError as e:  # ENOENT: the kernel forgot the inode meanwhile
                if e.errno != errno.ENOENT:
                    log.debug("invalidating inode %d failed: %s", node.ino, e)
        return stored + self._store(stores)

    def _store(self, jobs: list[_Job]) -> list[_Job]:
        if not jobs or not self._supported:
            return []
        stored = []
        results = _notify_store_many([(job.node.ino, 0, job.data) for job in jobs])
        for job, err in zip(jobs, results, strict=True):
            if err == 0:
                self.counters["page_stores"] += 1
                stored.append(job)
                continue
            if err == errno.ENOSYS:
                log.info("the kernel does not take notify_store: not pushing pages")
                self._supported = False
            elif err != errno.ENOENT:  # ENOENT: the kernel forgot the inode meanwhile
                log.debug("notify_store of inode %d failed: %s", job.node.ino,
                          os.strerror(err))
            self.counters["page_stores_failed"] += 1
        return stored

    def stats(self) -> dict:
        return dict(self.counters, queued=self._recv.statistics().current_buffer_used,
                    pushed_unread=len(self._pushed), pushed_unread_bytes=self.pushed_bytes,
                    push_budget=self.push_budget)


def _notify_store_many(stores: list[tuple[int, int, Buffer]]) -> list[int]:
    """pyfuse3.notify_store_many (patches/pyfuse3-3.5.0-3): one errno per store; with a
    pyfuse3 built without the patch, one notify_store after another."""
    many = getattr(pyfuse3, "notify_store_many", None)
    if many is not None:
        return many(stores)
    results = []
    for ino, offset, data in stores:
        try:
            pyfuse3.notify_store(ino, offset, data)
            results.append(0)
        except OSError as e:
            results.append(e.errno or errno.EIO)
    return results
