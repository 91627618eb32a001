"""The kernel's dentry cache, from the daemon's side: a directory whose names are looked up one
by one is read once through the mount, so the kernel learns all of them at once.

A program that opens files by name without listing their directory (a DataLoader over a list
of paths, shuffled) sends the daemon a LOOKUP for every file: the kernel knows a name only from
a lookup or a READDIRPLUS. Each LOOKUP costs the event loop a request, and until it comes the
kernel does not know the file's inode, so its pages cannot be stored ahead either (pagecache.py
stores only into inodes the kernel knows): the file's READ reaches the daemon too. Once the
namespace has listed such a directory (after a few lookups, namespace.py), reading it through
the mount makes the kernel send READDIRPLUS, whose entries carry each name's inode and
attributes for the same TTL a lookup reply gives: later opens find their names in the dentry
cache, and arriving files are stored ahead (8 shuffled readers over 10,000 files: LOOKUPs
10,001 -> under 100, READs 10,000 -> ~4,000, ~20% faster; docs/read-path.md).

The daemon reads its own mount in a child process, never in its own threads: the READDIRPLUS
it sends is answered by this daemon's event loop, and a child can be killed if that never
happens (the daemon stopping meanwhile). One directory at a time, each at most once per
listing the namespace loaded (a new listing, after metadata_ttl, may bring new names), and
only directories of at most MAX_ENTRIES names: each name costs the kernel an inode and a
dentry until it reclaims them, and a directory of millions is better looked up name by name.
Priming is an optimisation: when the queue is full, the child fails or times out, nothing is
lost but lookups.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

import trio

from aisbatchfs.fs.namespace import Listing

log = logging.getLogger(__name__)

MAX_ENTRIES = 65_536  # names a directory may have to be read whole for the kernel
QUEUE = 16  # directories waiting to be read; past it, new ones are not
MAX_PRIMED = 4096  # directories remembered as read (with the listing they were read for)
SCAN_TIMEOUT = 60.0  # seconds the child may take to read one directory
_SCAN = "import os, sys\nfor _ in os.scandir(sys.argv[1]):\n    pass\n"


async def scan_in_child(path: str) -> None:
    """Read the directory at `path` (its names only) in a child process."""
    await trio.run_process([sys.executable, "-I", "-S", "-c", _SCAN, path],
                           stdin=b"", capture_stdout=True, capture_stderr=True)


class DentryPrimer:
    def __init__(self, mountpoint: str,
                 scan: Callable[[str], Awaitable[None]] = scan_in_child) -> None:
        self.mountpoint = mountpoint
        self.scan = scan  # reads a directory of the mount (a child process; a fake in tests)
        self.counters: Counter[str] = Counter()
        self._send, self._recv = trio.open_memory_channel[tuple[str, Listing]](QUEUE)
        # directory key: the listing it was read for (or is queued to be)
        self._primed: OrderedDict[tuple, Listing] = OrderedDict()

    def offer(self, key: tuple, listing: Listing, path: str) -> None:
        """A name was looked up in the directory `key` (at `path`, relative to the mount),
        whose names the namespace has listed in `listing`: read it for the kernel, unless it
        was for this listing already or it is too large."""
        if self._primed.get(key) is listing:
            return
        if len(listing.entries) > MAX_ENTRIES:
            self.counters["too_large"] += 1
            self._primed[key] = listing  # counted once per listing
            return
        try:
            self._send.send_nowait((path, listing))
        except trio.WouldBlock:
            self.counters["dropped"] += 1
            return
        self._primed[key] = listing
        self._primed.move_to_end(key)
        while len(self._primed) > MAX_PRIMED:
            self._primed.popitem(last=False)

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Read queued directories, one at a time, for the mount's lifetime."""
        task_status.started()
        async for path, listing in self._recv:
            where = os.path.join(self.mountpoint, path)
            try:
                with trio.fail_after(SCAN_TIMEOUT):
                    await self.scan(where)
            except (OSError, trio.TooSlowError, subprocess.CalledProcessError) as e:
                self.counters["failed"] += 1
                log.info("reading %s for the kernel's dentry cache failed: %s", where, e)
                continue
            self.counters["primed"] += 1
            self.counters["names"] += len(listing.entries)

    def stats(self) -> dict:
        return dict(self.counters, queued=self._recv.statistics().current_buffer_used)
