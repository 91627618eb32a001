"""The read path: `read(handle, offset, size)` for files and archive members.

One interface (`Reader`), so the batched GetBatch path can take the place of this direct one.
DirectReader uses plain requests: a small object or member is fetched whole on its first read
and kept with the open handle (the kernel reads a file in 128 KiB pieces); a large one is read in
windows with ranged GETs, or for members (the server refuses Range with archpath) with a
one-item GetBatch carrying start/length. Every fetch checks that the object is still the one
listed (size and version), so a handle never mixes bytes of two versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import trio

from aisbatchfs.ais import BucketRef, ObjectNotFound
from aisbatchfs.ais.aio import AsyncAis
from aisbatchfs.fs.namespace import Entry, Kind

MiB = 1 << 20


# After a failed fetch the kernel retries the same page at once (readahead, then a synchronous
# read): answer that retry with the same error instead of waiting out a second deadline.
FAILURE_MEMORY = 2.0


@dataclass
class ReadHandle:
    """One open file: what it is (as listed at open) and the bytes fetched for it so far."""

    entry: Entry
    buf_start: int = 0
    buf: bytes = b""
    lock: trio.Lock = field(default_factory=trio.Lock)
    failed: tuple[int, float, Exception] | None = None  # (offset, when, error) of the last failure


class Reader(Protocol):
    def open(self, entry: Entry) -> ReadHandle: ...

    async def read(self, handle: ReadHandle, offset: int, size: int) -> bytes: ...

    def release(self, handle: ReadHandle) -> None: ...


class DirectReader:
    """One GET (or ranged GET, or one-item GetBatch) per fetch; no cache across handles."""

    def __init__(
        self,
        ais: AsyncAis,
        *,
        read_timeout: float,
        whole_max: int = 8 * MiB,
        window: int = 8 * MiB,
    ) -> None:
        self.ais = ais
        self.timeout = read_timeout
        self.whole_max = whole_max
        self.window = window
        self._dotted: set[tuple[BucketRef, str]] = set()  # archives storing `./name` members

    def open(self, entry: Entry) -> ReadHandle:
        return ReadHandle(entry)

    def release(self, handle: ReadHandle) -> None:
        handle.buf = b""

    async def read(self, handle: ReadHandle, offset: int, size: int) -> bytes:
        total = handle.entry.size
        if offset >= total or size <= 0:
            return b""
        size = min(size, total - offset)
        async with handle.lock:  # concurrent reads of one handle share one fetch
            buf, start = handle.buf, handle.buf_start
            if not (start <= offset and offset + size <= start + len(buf)):
                start = 0 if total <= self.whole_max else offset
                length = total if total <= self.whole_max else min(self.window, total - offset)
                failed = handle.failed
                if failed and failed[0] == start and trio.current_time() - failed[1] < FAILURE_MEMORY:
                    raise failed[2]
                try:
                    buf = await self._fetch(handle.entry, start, length)
                except Exception as e:
                    handle.failed = (start, trio.current_time(), e)
                    raise
                handle.buf, handle.buf_start, handle.failed = buf, start, None
        return buf[offset - start : offset - start + size]

    async def _fetch(self, e: Entry, start: int, length: int) -> bytes:
        client = self.ais.client
        assert e.bucket is not None
        whole = start == 0 and length == e.size
        if e.kind is Kind.FILE:
            return await self.ais.data(
                client.get, e.bucket, e.path,
                start=start, length=None if whole else length,
                expected_size=e.size, expected_version=e.version or None, timeout=self.timeout,
            )
        assert e.kind is Kind.MEMBER
        key = (e.bucket, e.path)
        if key not in self._dotted:
            try:
                if whole:
                    return await self.ais.data(client.get, e.bucket, e.path, archpath=e.member,
                                               expected_size=e.size, timeout=self.timeout)
                return await self.ais.data(client.get_member_range, e.bucket, e.path, e.member,
                                           start, length, timeout=self.timeout)
            except ObjectNotFound:
                pass
        # the member is stored as `./name`: only an anchored archregx request reaches it, and
        # it returns the whole member
        data = await self.ais.data(client.get_dotted_member, e.bucket, e.path, e.member,
                                   expected_size=e.size, timeout=self.timeout)
        self._dotted.add(key)
        return data[start : start + length]
