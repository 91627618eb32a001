"""The disk cache's worker processes: entries are written, and read and checked, by processes
of their own, and what they move crosses a pipe that the trio loop reads and writes itself.

Why processes and not threads: in the daemon, a worker thread must take the GIL back after
every system call, and while data arrives the FUSE loop's thread holds it most of the time.
Writing an entry is nine system calls (open, writev, fadvise, close, stat, rename, and the
delayed fadvise's open, fadvise, close); measured in the daemon during P5-disk's first epoch,
two writer threads wrote ~330 entries of 64 KiB a second, against ~10,000 a second for the
same code alone. Reading one is five (open, fstat, pread, fadvise, close): four reader threads
took 1.4 ms a file in P5-disk's second epoch (86 ms for a chunk of 32), against 0.5 ms alone,
and the epoch ran at the speed of those reads. A process has its own interpreter; the daemon's
side is a few non-blocking reads or writes of the pipe per batch, made by the trio loop
(`trio.lowlevel.wait_readable`/`wait_writable`), with no thread and no GIL hand-over at all.

Protocol over the child's stdin and stdout, one message each way per call, both framed alike:
an 8-byte length, a pickled (meta, blob sizes), then the blobs back to back.
- write: meta is a list of (tmp, final, identity, budget), the blobs the entries' data; the
  reply's meta is (done, error): `diskcache._write_entries`' booleans and None or (errno,
  strerror).
- read: meta is (requests, until_miss), a request being `diskcache._read_entry`'s arguments;
  the reply's meta one (outcome, charge, detail, errno) per entry read, the blobs the data of
  the hits, in order.

The child exits at EOF on its stdin, and dies with the daemon (PR_SET_PDEATHSIG): a `kill -9`
of the daemon leaves at most a file in DIR/tmp/, which the next mount sets aside unread. The
death signal follows the *thread* that forked the child, so a WorkerProcess is created on the
trio thread, which lives as long as the mount, never in a worker thread, which exits when idle
and would take its child with it. A call cancelled or failed half-way leaves the pipe in an
unknown state: the process is killed, and `WorkerGone` raised.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from aisbatchfs.ais.api import Buffer

_LEN = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # the pipes' capacity (Linux's default pipe-max-size): one write per MiB
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1

# one entry to write: tmp path, final path, identity, data, most bytes it may take on disk
WriteRequest = tuple[str, str, bytes, "Buffer | memoryview", int]
# one entry to read: path, identity, expected data length, whether to stamp its mtime
ReadRequest = tuple[str, bytes, int, bool]
# what a read found: outcome, charge, detail, errno (diskcache._Read without its data)
ReadResult = tuple[str, int, str, int]


class WorkerGone(OSError):
    """The worker process died, stopped answering, or was cut off half-way through a call."""


class WorkerProcess:
    """The parent's end: `role` is "write" or "read". Calls may overlap: their requests go
    out one after another, and each waits for its reply in the order they went out, so the
    child finds the next request in its pipe when it finishes one instead of waiting for the
    daemon's loop to notice its reply and send another (while data arrived, two writers sat
    idle three quarters of the time that way, and a third of the writes found a full queue).
    """

    def __init__(self, role: str) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p))
        self.role = role
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "aisbatchfs.fs.diskworkers", role, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to = self._proc.stdin.fileno()
        self._from = self._proc.stdout.fileno()
        for fd in (self._to, self._from):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):  # a smaller pipe only costs more calls
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
        self.gone = False
        self._sending = trio.Lock()
        self._replies = trio.Lock()  # fair: taken in the order the requests went out

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def write(self, reqs: Sequence[WriteRequest]) -> tuple[list[bool], OSError | None]:
        """`diskcache._write_entries` of `reqs`, done by the child."""
        assert self.role == "write"
        (done, err), _ = await self._call(
            [(r[0], r[1], r[2], r[4]) for r in reqs], [r[3] for r in reqs])
        return done, None if err is None else OSError(*err)

    async def read(self, reqs: Sequence[ReadRequest], until_miss: bool
                   ) -> list[tuple[ReadResult, bytearray | None]]:
        """`diskcache._read_entries` of `reqs`, done by the child: what each entry read held
        (its data for a hit)."""
        assert self.role == "read"
        results, blobs = await self._call((list(reqs), until_miss), [])
        found = iter(blobs)
        return [(r, next(found) if r[0] == "hit" else None) for r in results]

    async def _call(self, meta: object, blobs: Sequence[Buffer | memoryview]
                    ) -> tuple[object, list[bytearray]]:
        if self.gone:
            raise WorkerGone(errno.EPIPE, f"the disk cache's {self.role}r process "
                                          f"(pid {self.pid}) is gone")
        try:
            views = [memoryview(b).cast("B") for b in blobs]
            head = pickle.dumps((meta, [len(v) for v in views]))
            async with self._sending:
                await _send(self._to, [_LEN.pack(len(head)), head, *views])
                # in line for the reply before the next request goes out
                await self._replies.acquire()
            try:
                n = _LEN.unpack(await _recv(self._from, _LEN.size))[0]
                reply, sizes = pickle.loads(await _recv(self._from, n))
                return reply, [await _recv(self._from, size) for size in sizes]
            finally:
                self._replies.release()
        except BaseException as e:  # the pipe is mid-message: this process cannot go on
            self.gone = True
            self._proc.kill()
            if isinstance(e, (OSError, EOFError, pickle.UnpicklingError)):
                raise WorkerGone(errno.EPIPE, f"the disk cache's {self.role}r process "
                                              f"(pid {self.pid}) is gone: {e}") from None
            raise

    def close(self, timeout: float = 10.0) -> None:
        """EOF to the child, which drops its last files' pages and exits. Blocking: from a
        worker thread."""
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()  # type: ignore[union-attr]


async def _send(fd: int, parts: list) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        try:
            n = os.writev(fd, views[:64])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        _advance(views, n)
    await trio.lowlevel.checkpoint()


async def _recv(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        try:
            k = os.readv(fd, [view[got:]])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not k:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return buf


def write_all(fd: int, parts: list) -> None:
    """Write every byte of `parts` to a blocking `fd`, gathered (the disk cache's entries and
    the children's replies)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        _advance(views, os.writev(fd, views[:64]))


def _advance(views: list[memoryview], n: int) -> None:
    """Drop the first `n` bytes of `views`, written."""
    while n:
        if n >= len(views[0]):
            n -= len(views.pop(0))
        else:
            views[0] = views[0][n:]
            n = 0


def _read_exact(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return buf


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def main() -> None:
    """The child: serve calls until EOF."""
    from aisbatchfs.fs.diskcache import FADVISE_LAG, _DropLater, _read_entries, _write_entries

    role, parent = sys.argv[1], int(sys.argv[2])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of a foreground daemon is its own
    later = _DropLater(FADVISE_LAG)
    try:
        while True:
            try:
                n = _LEN.unpack(_read_exact(0, _LEN.size))[0]
            except EOFError:
                return
            meta, sizes = pickle.loads(_read_exact(0, n))
            blobs = [_read_exact(0, size) for size in sizes]
            if role == "write":
                done, err = _write_entries(
                    [(tmp, final, identity, data, budget)
                     for (tmp, final, identity, budget), data in zip(meta, blobs, strict=True)],
                    later)
                reply: object = (done, None if err is None else (err.errno, err.strerror))
                out: list = []
            else:
                reqs, until_miss = meta
                got = _read_entries(reqs, until_miss)
                reply = [(g.outcome, g.charge, g.detail, g.err) for g in got]
                out = [g.data for g in got if g.outcome == "hit"]
            head = pickle.dumps((reply, [len(b) for b in out]))
            write_all(1, [_LEN.pack(len(head)), head, *out])
    finally:
        later.flush()


if __name__ == "__main__":
    main()
