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

The daemon reads its own mount in a child process, never in one of its threads: the
READDIRPLUS it sends is answered by this daemon's event loop, so a reader inside the daemon
would tie the daemon's shutdown to its own answers. A child that waits for an answer the
stopping daemon will not give cannot be killed either (a FUSE request already read by the
daemon is waited for uninterruptibly), so on cancellation the child is sent SIGKILL and not
waited for: it ends when the unmount that follows aborts its request. The child's opendir is
answered without keep_cache (`owns`), so the kernel reads the directory from the daemon again
instead of serving it from its own readdir cache, which carries no dentries.

One directory at a time, once per listing the namespace loaded (a new listing, after
metadata_ttl, renews the names the kernel let expire), and only directories of MIN_ENTRIES to
MAX_ENTRIES names: a handful of names is not worth a process, and each name costs the kernel an
inode and a dentry until it reclaims them (a directory of millions is better looked up name by
name). Priming is an optimisation: when the queue is full or the child fails or times out,
nothing is lost but lookups; any failure is counted and logged, never raised.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

import trio

from aisbatchfs.fs.namespace import Listing

log = logging.getLogger(__name__)

MAX_ENTRIES = 65_536  # names a directory may have to be read whole for the kernel
MIN_ENTRIES = 32  # fewer names than this are looked up one by one (not worth a process)
QUEUE = 16  # directories waiting to be read; past it, new ones are not
MAX_PRIMED = 4096  # directories remembered as read (with the listing they were read for)
SCAN_TIMEOUT = 60.0  # seconds the child may take to read one directory
_SCAN = "import os, sys\nfor _ in os.scandir(sys.argv[1]):\n    pass\n"


async def scan_in_child(path: str, started: Callable[[int], None]) -> None:
    """Read the directory at `path` (its names only) in a child process; `started` gets its
    pid. Cancelled, the child is killed and not waited for (see above)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-I", "-S", "-c", _SCAN, path], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started(proc.pid)
    try:
        code = await proc.wait()
    except BaseException:
        proc.kill()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, "scandir")


class DentryPrimer:
    def __init__(self, mountpoint: str,
                 scan: Callable[[str, Callable[[int], None]], Awaitable[None]] = scan_in_child,
                 ) -> None:
        self.mountpoint = mountpoint
        self.scan = scan  # reads a directory of the mount (a child process; a fake in tests)
        self.counters: Counter[str] = Counter()
        self._send, self._recv = trio.open_memory_channel[tuple[str, int]](QUEUE)
        # directory key: the listing it was read for or is queued to be, held weakly so that
        # no listing the namespace let go of is kept alive here
        self._primed: OrderedDict[tuple, weakref.ref[Listing]] = OrderedDict()
        self._child: int | None = None  # the pid of the child reading a directory now

    def owns(self, pid: int) -> bool:
        """Is this the child reading a directory for the kernel? (Its opendir must not let
        the kernel answer from its readdir cache.)"""
        return pid == self._child

    def offer(self, key: tuple, listing: Listing, path: str) -> None:
        """A name was looked up in the directory `key` (at `path`, relative to the mount),
        whose names the namespace has listed in `listing`: read it for the kernel, unless it
        was for this listing already, or its size is out of bounds."""
        done = self._primed.get(key)
        if done is not None and done() is listing:
            return
        names = len(listing.entries)
        if not MIN_ENTRIES <= names <= MAX_ENTRIES:
            self.counters["too_small" if names < MIN_ENTRIES else "too_large"] += 1
        else:
            try:
                self._send.send_nowait((path, names))
            except trio.WouldBlock:
                self.counters["dropped"] += 1
                return  # its next lookup offers it again
        self._primed[key] = weakref.ref(listing)  # counted or read once per listing
        self._primed.move_to_end(key)
        while len(self._primed) > MAX_PRIMED:
            self._primed.popitem(last=False)

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Read queued directories, one at a time, for the mount's lifetime."""
        task_status.started()
        async for path, names in self._recv:
            where = os.path.join(self.mountpoint, path)
            try:
                with trio.fail_after(SCAN_TIMEOUT):
                    await self.scan(where, self._started)
            except Exception as e:  # an optimisation: a failure costs lookups, never the mount
                self.counters["failed"] += 1
                log.info("reading %s for the kernel's dentry cache failed: %r", where, e)
                continue
            finally:
                self._child = None
            self.counters["primed"] += 1
            self.counters["names"] += names

    def _started(self, pid: int) -> None:
        self._child = pid

    def stats(self) -> dict:
        return dict(self.counters, queued=self._recv.statistics().current_buffer_used)
