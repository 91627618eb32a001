"""The AIStore client for trio code: each blocking call runs in a worker thread.

Metadata calls (listings, HEAD) and data calls (GET, GetBatch) have their own thread limiters,
as they have their own connection pools, so `ls` and `stat` stay quick while readers wait on
long transfers. A thread cannot be cancelled, but every client call has an enforced deadline,
so each thread comes back in bounded time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from aisbatchfs.ais.client import AisClient

T = TypeVar("T")


class AsyncAis:
    def __init__(self, client: AisClient, meta_threads: int = 16, data_threads: int = 32) -> None:
        self.client = client
        self._meta = trio.CapacityLimiter(meta_threads)
        self._data = trio.CapacityLimiter(data_threads)

    async def meta(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a metadata call (a bound method of the client) in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                             limiter=self._meta)

    async def data(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a data call in a worker thread of the data pool."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                             limiter=self._data)
