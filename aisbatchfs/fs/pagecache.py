"""Pushing files that arrive in a batch into the kernel's page cache (FUSE notify_store).

A small file read through FUSE costs three requests: open, read, release. When a batch brings
a file whose inode the kernel already knows (listed with readdirplus, or looked up), its bytes
can be stored in the kernel's page cache before anyone opens it: the open keeps that cache and
the read never reaches the daemon (P1, 2,000 x 16 KiB in listing order: 9 reads of 2,000
reached it).

Safety: a store is the bytes of one version, made only while the file's entry is still the
one the bytes belong to. An open compares versions as always (keep_cache only when the
kernel's pages are of the version being opened). A store of the version being opened may land
before or after the open: either way the pages hold that version's bytes. An open of another
version while a store is under way waits for the store (`settled`), so its own invalidation of
the old pages comes after them: pages of an old version are dropped, never read.

The store is a write to /dev/fuse that may wait for a page lock held by a read the event loop
has still to answer, so it runs in a thread of its own, never on the event loop. It is only an
optimisation: when the queue is full, the file is open, or the kernel forgot the inode, nothing
is stored and reads take the usual way.
"""

from __future__ import annotations

import errno
import logging
from collections import Counter
from collections.abc import Callable

import pyfuse3
import trio

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import Item
from aisbatchfs.fs.namespace import Namespace, Node

log = logging.getLogger(__name__)

QUEUE = 1024  # files waiting to be stored; past it, new arrivals are not stored
GROUP = 64  # files stored per trip to the storing thread


class PagePusher:
    def __init__(self, ns: Namespace, on_stored: Callable[[Item], None] = lambda item: None) -> None:
        self.ns = ns
        self.on_stored = on_stored  # e.g. the cache: this file's reads will not come here
        self.counters: Counter[str] = Counter()
        self._send, self._recv = trio.open_memory_channel[tuple[Node, Item, Buffer]](QUEUE)
        self._limiter = trio.CapacityLimiter(1)
        self._storing: dict[int, tuple[trio.Event, Item]] = {}  # ino: (stored, what)
        self._supported = True

    def offer(self, item: Item, data: Buffer) -> None:
        """A file arrived: queue it for the kernel's page cache if the kernel knows its inode
        and nobody has it open."""
        if not self._supported or len(data) != item.size or not data:
            return
        node = self.ns.node_of(item)
        if (node is None or node.lookups == 0 or node.opens or self.ns.item(node.entry) != item
                or node.page_ident == item):
            return
        try:
            self._send.send_nowait((node, item, data))
        except trio.WouldBlock:
            self.counters["page_stores_dropped"] += 1

    async def settled(self, node: Node) -> None:
        """Called by open: return once no store of another version than the node's entry is
        under way for this file."""
        storing = self._storing.get(node.ino)
        if storing is not None and storing[1] != self.ns.item(node.entry):
            self.counters["opens_waited"] += 1
            await storing[0].wait()

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Store queued files, a group per trip to the thread; runs for the mount's lifetime."""
        task_status.started()
        while True:
            group = [await self._recv.receive()]
            while len(group) < GROUP:
                try:
                    group.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            done = trio.Event()
            for node, item, _ in group:
                self._storing[node.ino] = (done, item)
            try:
                stored = await trio.to_thread.run_sync(self._store, group, limiter=self._limiter)
                for node, item in stored:
                    node.page_ident = item  # the next open keeps these pages
                    self.on_stored(item)
            finally:
                for node, _, _ in group:
                    if self._storing.get(node.ino, (None,))[0] is done:
                        del self._storing[node.ino]
                done.set()

    def _store(self, group: list[tuple[Node, Item, Buffer]]) -> list[tuple[Node, Item]]:
        """In the storing thread. An open of another version waits for this group (settled)."""
        stored = []
        for node, item, data in group:
            if self.ns.item(node.entry) != item:
                self.counters["page_stores_skipped"] += 1
                continue
            try:
                pyfuse3.notify_store(node.ino, 0, data)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    log.info("the kernel does not take notify_store: not pushing pages")
                    self._supported = False
                    break
                if e.errno != errno.ENOENT:  # ENOENT: the kernel forgot the inode meanwhile
                    log.debug("notify_store of inode %d failed: %s", node.ino, e)
                self.counters["page_stores_failed"] += 1
                continue
            self.counters["page_stores"] += 1
            stored.append((node, item))
        return stored

    def stats(self) -> dict:
        return dict(self.counters, queued=self._recv.statistics().current_buffer_used)
