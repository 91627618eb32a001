"""Hints: the read order a program announces through the mount's control socket
(aisbatchfs.control.prefetch, AnnouncedSampler, `aisbatchfs prefetch`).

A training job with a shuffled sampler knows its order; the filesystem cannot guess it. Paths
(relative to the mount root, one per line) are resolved in the order written and handed to the
batcher's prefetch queue, which fetches them in that order, in batches, as the budget allows.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable

import trio

from aisbatchfs.ais.models import Item
from aisbatchfs.fs.batcher import Batcher
from aisbatchfs.fs.namespace import Entry, Namespace

log = logging.getLogger(__name__)
CHUNK = 256  # hand resolved paths to the batcher this many at a time


class Hints:
    def __init__(self, ns: Namespace, batcher: Batcher, batchable: Callable[[Entry], bool],
                 max_queue: int = 1_000_000) -> None:
        self.ns = ns
        self.batcher = batcher
        self.batchable = batchable
        self.max_queue = max_queue
        self.counters: Counter[str] = Counter()
        self._paths: deque[str] = deque()
        self._wake = trio.Event()

    def add(self, path: str) -> None:
        path = path.strip().strip("/")
        if not path:
            return
        if len(self._paths) >= self.max_queue:
            self.counters["dropped"] += 1
            return
        self.counters["received"] += 1
        self._paths.append(path)
        self._wake.set()

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            if not self._paths:
                await self._wake.wait()
                continue
            ready: list[Item] = []
            while self._paths and len(ready) < CHUNK:
                path = self._paths.popleft()
                try:
                    entry = await self.ns.resolve(path)
                except Exception as e:  # noqa: BLE001 - a bad hint must not stop the others
                    log.debug("hint %r: %s", path, e)
                    entry = None
                if entry is None or not self.batchable(entry):
                    self.counters["ignored"] += 1
                    continue
                ready.append(self.ns.item(entry))
            self.counters["queued"] += self.batcher.prefetch(ready)

    def stats(self) -> dict:
        return dict(self.counters, pending=len(self._paths))
