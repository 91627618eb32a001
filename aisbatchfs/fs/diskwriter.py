"""The disk cache's writer processes: entries are written to disk by a process of their own.

Why a process and not a thread: in the daemon, a worker thread must take the GIL back after
every system call, and while GetBatch data arrives the FUSE loop's thread holds it nearly all
the time. Writing an entry is nine system calls (open, writev, fadvise, close, stat, rename,
and the delayed fadvise's open, fadvise, close); measured in the daemon during P5-disk's first
epoch, two writer threads wrote ~330 entries of 64 KiB a second, against ~10,000 a second for
the same code alone, so three quarters of the epoch's writes were dropped from a full queue. A
process has its own interpreter: the daemon's side is one pipe write per pipe-full (1 MiB) of
data and one read of the reply per batch of entries, with the GIL released throughout.

Protocol over the child's stdin and stdout, one batch at a time: the parent sends an 8-byte
length, a pickled list of (tmp, final, identity, data length, budget), then the data of each
entry back to back; the child answers with an 8-byte length and a pickled (done, error), where
`done` is `diskcache._write_entries`' list of booleans and `error` None or (errno, strerror).
The child exits at EOF on its stdin, and dies with the daemon (PR_SET_PDEATHSIG): a `kill -9`
of the daemon leaves at most a file in DIR/tmp/, which the next mount sets aside unread. The
death signal follows the *thread* that forked the child, so WriterProcess must be created on a
thread that lives as long as the writer is needed (the trio thread), never in a worker thread,
which exits when idle and would take its writer with it.
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

from aisbatchfs.ais.api import Buffer

_LEN = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # the pipe's capacity (Linux's default pipe-max-size): one write per MiB
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1

# one entry to write: tmp path, final path, identity, data, most bytes it may take on disk
Request = tuple[str, str, bytes, "Buffer | memoryview", int]


class WriterGone(OSError):
    """The writer process died or stopped answering: the disk cache stops writing."""


class WriterProcess:
    """The parent's end. `write` blocks (call it from a worker thread), one call at a time."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "aisbatchfs.fs.diskwriter", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to = self._proc.stdin.fileno()
        self._from = self._proc.stdout  # unbuffered: a FileIO
        with contextlib.suppress(OSError):  # a smaller pipe only costs more writes
            fcntl.fcntl(self._to, F_SETPIPE_SZ, PIPE_BYTES)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def write(self, reqs: Sequence[Request]) -> tuple[list[bool], OSError | None]:
        """`diskcache._write_entries` of `reqs`, done by the child."""
        views = [memoryview(r[3]).cast("B") for r in reqs]
        meta = pickle.dumps([(r[0], r[1], r[2], len(v), r[4]) for r, v in zip(reqs, views)])
        try:
            write_all(self._to, [_LEN.pack(len(meta)), meta, *views])
            n = _LEN.unpack(_read_exact(self._from, _LEN.size))[0]
            done, err = pickle.loads(_read_exact(self._from, n))
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            raise WriterGone(errno.EPIPE, f"the disk cache's writer process "
                                          f"(pid {self._proc.pid}) is gone: {e}") from None
        return done, None if err is None else OSError(*err)

    def close(self, timeout: float = 10.0) -> None:
        """EOF to the child, which drops its last files' pages and exits."""
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._from.close()


def write_all(fd: int, parts: list) -> None:
    """Write every byte of `parts` to `fd`, gathered (the disk cache's entries use it too)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.writev(fd, views[:64])
        while n:
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0] = views[0][n:]
                n = 0


def _read_exact(f, n: int) -> bytes:  # noqa: ANN001 - a raw (unbuffered) binary file
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return bytes(buf)


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def main() -> None:
    """The child: write batches until EOF."""
    from aisbatchfs.fs.diskcache import FADVISE_LAG, _DropLater, _write_entries

    _die_with_parent(int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of a foreground daemon is its own
    inp = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115 - for the process's life
    out = 1
    later = _DropLater(FADVISE_LAG)
    try:
        while True:
            try:
                n = _LEN.unpack(_read_exact(inp, _LEN.size))[0]
            except EOFError:
                return
            meta = pickle.loads(_read_exact(inp, n))
            reqs = [(tmp, final, identity, _read_exact(inp, size), budget)
                    for tmp, final, identity, size, budget in meta]
            done, err = _write_entries(reqs, later)
            reply = pickle.dumps((done, None if err is None else (err.errno, err.strerror)))
            write_all(out, [_LEN.pack(len(reply)), reply])
    finally:
        later.flush()


if __name__ == "__main__":
    main()
