"""Whether the cluster can give a whole picture right now: its map's storage targets.

While a target is paused, restarting or rejoining, the cluster map lacks it (a target that
stops answering leaves the map after a keepalive timeout, ~35 s; one that comes back is in
it again ~5 s later), and meanwhile listings hold only what the other targets have and a
GET of its objects can say 404. No listing flag says so; the map's target count does. The
most targets ever seen is "whole"; fewer is degraded. A cluster that really shrank
(decommissioned targets) is taken as whole again once the smaller map has held for
ADOPT_AFTER seconds. A map that changed within SETTLE seconds is not trusted either, though
whole: a target that has just rejoined still answers 404 for its own objects for a moment
(seen by the soak, 1-2 s after a restart). The map is asked at most every REFRESH seconds; if it cannot be read
(no permission, no answer) the cluster is taken as whole: nothing is held back on a guess.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from aisbatchfs.ais.api import AisApi
from aisbatchfs.ais.errors import AisError, ObjectNotFound, Unavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

REFRESH = 2.0  # seconds a reading of the map is trusted
FRESH = 0.1  # ... when a 404 is to be believed or not
ADOPT_AFTER = 600.0  # seconds a smaller map must hold before it counts as whole
SETTLE = 10.0  # seconds after the map changed during which it is not trusted


class ClusterWatch:
    def __init__(self, api: AisApi) -> None:
        self.api = api
        self.most = 0  # storage targets in the fullest map seen
        self.uuid = ""  # the cluster's, once the map was read
        self.counters = {"map_reads": 0, "degraded_seen": 0, "unsure_404": 0}
        self._reason: str | None = None
        self._read_at = -REFRESH
        self._short_since: float | None = None  # since when the map has lacked targets
        self._version = 0  # of the map last read
        self._changed_at: float | None = None  # when its version last moved
        self._lock = trio.Lock()

    async def degraded(self, *, fresh: bool = False) -> str | None:
        """None when the map holds every target ever seen (or cannot be read), else why not,
        e.g. 'has 1 of 2 storage targets'. `fresh`: read the map now (before believing a 404,
        which a target that just left would also give)."""
        async with self._lock:  # concurrent callers share one reading
            now = trio.current_time()
            if now - self._read_at < (FRESH if fresh else REFRESH):
                return self._reason
            self._read_at = now
            self.counters["map_reads"] += 1
            try:
                smap = await self.api.cluster_map()
            except AisError as e:
                log.debug("cluster map: %s", e)
                self._reason = None
                return None
            self.uuid = smap.uuid or self.uuid
            self.most = max(self.most, smap.targets)
            if self._version and smap.version != self._version:
                self._changed_at = now
            self._version = smap.version
            active = smap.active
            if active >= self.most and smap.targets:
                self._short_since = None
                if self._changed_at is not None and now - self._changed_at < SETTLE:
                    self.counters["degraded_seen"] += 1
                    self._reason = f"changed {now - self._changed_at:.1f}s ago"
                    return self._reason
                self._reason = None
                return None
            if self._short_since is None:
                self._short_since = now
            elif now - self._short_since > ADOPT_AFTER and active:
                log.info("the cluster has had %d storage targets (of %d seen) for %.0fs: "
                         "taking that as whole", active, self.most, now - self._short_since)
                self.most, self._short_since, self._reason = active, None, None
                return None
            self.counters["degraded_seen"] += 1
            self._reason = f"has {active} of {self.most} storage targets"
            return self._reason

    async def fetch(self, fetch: Callable[[], Awaitable[T]], what: str, deadline: float) -> T:
        """fetch() (a GET), whose 404 is passed on only while the map is whole and settled:
        while a target is away or has just rejoined its objects say 404 too, so the fetch is
        tried again, with growing pauses, until the map settles or `deadline` (trio time)
        comes; then Unavailable (EIO), never a false ENOENT."""
        pause = 0.25
        while True:
            try:
                return await fetch()
            except ObjectNotFound as e:
                degraded = await self.degraded(fresh=True)
                if degraded is None:
                    raise
                self.counters["unsure_404"] += 1
                if deadline - trio.current_time() <= pause:
                    raise Unavailable(f"not found while the cluster map {degraded}",
                                      what=what) from e
                await trio.sleep(pause)
                pause = min(2 * pause, 2.0)

    def stats(self) -> dict:
        return dict(self.counters, most_targets=self.most)
