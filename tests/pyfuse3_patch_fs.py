"""A tiny pyfuse3 file system that counts the requests it gets, for test_pyfuse3_patch.py.

    python tests/pyfuse3_patch_fs.py MOUNTPOINT --report FILE [--open enosys|fh]
                                     [--opendir int|keep|nokeep] [--files N]
                                     [--slow-lookup SECONDS] [--serial-dirops] [--debug]
                                     [--block FIFO] [--ioctl-thread] [--ioctl-spin-us N]

The root directory holds regular files of the same size and different bytes: a.txt, b.txt
and, with --files N > 2, f002.txt ... up to N files. After
every request the daemon rewrites FILE (JSON, replaced atomically) with how many requests of
each kind it got, the (fh, inode, off, size) of every read, and the flags of every open, so a
test can tell what reached the daemon and what the kernel answered by itself.

--open enosys    open raises FUSEError(ENOSYS): the kernel stops sending OPEN and RELEASE for
                 regular files and sends every READ with fh 0 (needs read_with_inode to work)
--open fh        open returns a FileInfo with a handle of its own per open, as usual
--opendir int    opendir returns an int, as stock pyfuse3 requires
--opendir keep   opendir returns FileInfo(fh, keep_cache=True, cache_readdir=True)
--opendir nokeep opendir returns FileInfo(fh, keep_cache=False, cache_readdir=True)
--slow-lookup S  add slow.txt, whose lookup answers only after S seconds (trio.sleep)
--serial-dirops  enable_parallel_dirops = False (pyfuse3 patch 2): the kernel then sends one
                 lookup or readdir of a directory at a time (without it: True)
--debug          mount with libfuse's debug option (every request and the INIT flags on stderr)
--block FIFO     add block.txt, whose READ blocks the whole event loop (a blocking read of FIFO
                 in the trio thread) until a byte is written to FIFO; the report says "blocked"
--ioctl-thread   pyfuse3.main(ioctl_thread=True) (patch 5): a thread of its own reads requests
                 and answers FUSE_IOCTL without the event loop
--ioctl-spin-us N  with --ioctl-thread: main(ioctl_spin_us=N) (patch 6), the thread polls on for
                 up to N us after it answers an ioctl

The report also has the names whose lookup is under way ("pending") and the most lookups that
were under way at once ("max_pending"): 2 or more only if the kernel sent them in parallel.

Unmount with fusermount3 -u; the daemon then exits 0.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import stat
from collections import Counter

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
SLOW_NAME = b"slow.txt"
BLOCK_NAME = b"block.txt"
SIZE = 3 * 4096 + 100  # more than a page, not a multiple of one
TIMEOUT = 300.0  # the kernel keeps entries and attributes for the whole test


def make_files(n: int = 2) -> dict[bytes, tuple[int, bytes]]:
    """name -> (inode, bytes): same size, different bytes, so a mixed-up read shows."""
    files = {b"a.txt": (ROOT + 1, (b"abcdefgh" * (SIZE // 8 + 1))[:SIZE]),
             b"b.txt": (ROOT + 2, (b"ABCDEFGH" * (SIZE // 8 + 1))[:SIZE])}
    for i in range(2, n):
        files[b"f%03d.txt" % i] = (ROOT + 1 + i, (b"%07d\n" % i * (SIZE // 8 + 1))[:SIZE])
    return files


FILES = make_files()


class CountingFs(pyfuse3.Operations):
    read_with_inode = True  # read(fh, off, size, inode) with the patch; ignored by stock pyfuse3

    def __init__(self, report: str, open_mode: str, opendir_mode: str, nfiles: int = 2,
                 slow_lookup: float = 0.0, block: str | None = None) -> None:
        super().__init__()
        self.files = make_files(nfiles)
        self.slow_lookup = slow_lookup
        if slow_lookup:
            ino = ROOT + 1 + len(self.files)
            self.files[SLOW_NAME] = (ino, (b"slow" * (SIZE // 4 + 1))[:SIZE])
        self.block = block
        self.blocked = False
        if block:
            ino = ROOT + 1 + len(self.files)
            self.files[BLOCK_NAME] = (ino, (b"block" * (SIZE // 5 + 1))[:SIZE])
        self.by_inode = {ino: data for ino, data in self.files.values()}
        self.report = report
        self.open_mode = open_mode
        self.opendir_mode = opendir_mode
        self.counts: Counter[str] = Counter()
        self.reads: list[list[int | None]] = []
        self.open_flags: list[int] = []
        self.pending: list[str] = []
        self.max_pending = 0
        self.fhs = itertools.count(1)
        self.write_report()

    def count(self, op: str) -> None:
        self.counts[op] += 1
        self.write_report()

    def write_report(self) -> None:
        tmp = self.report + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"counts": self.counts, "reads": self.reads, "open_flags": self.open_flags,
                       "pending": self.pending, "max_pending": self.max_pending,
                       "blocked": self.blocked,
                       "pyfuse3": pyfuse3.__version__,
                       # every request read from the kernel, by opcode (patch 4)
                       "request_counts": getattr(pyfuse3, "request_counts", dict)(),
                       # FUSE_IOCTL answered by the request thread (patch 5)
                       "ioctls_answered_apart": getattr(pyfuse3, "ioctls_answered_apart",
                                                        lambda: 0)(),
                       # spins after an ioctl, and those that found a request (patch 6)
                       "ioctl_spins": getattr(pyfuse3, "ioctl_spins", lambda: (0, 0))()}, f)
        os.replace(tmp, self.report)

    def attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        if inode == ROOT:
            e.st_mode, e.st_size, e.st_nlink = stat.S_IFDIR | 0o555, 0, 2
        elif inode in self.by_inode:
            e.st_mode, e.st_size, e.st_nlink = stat.S_IFREG | 0o444, len(self.by_inode[inode]), 1
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        e.st_ino = inode
        e.st_uid, e.st_gid = os.getuid(), os.getgid()
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = 1_700_000_000 * 10**9
        e.entry_timeout = e.attr_timeout = TIMEOUT
        return e

    async def getattr(self, inode, ctx=None):
        self.count("getattr")
        return self.attrs(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        self.count("lookup")
        self.pending.append(name.decode(errors="replace"))
        self.max_pending = max(self.max_pending, len(self.pending))
        self.write_report()
        try:
            if name == SLOW_NAME and self.slow_lookup:
                await trio.sleep(self.slow_lookup)
            if parent_inode != ROOT or name not in self.files:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attrs(self.files[name][0])
        finally:
            self.pending.remove(name.decode(errors="replace"))
            self.write_report()

    async def open(self, inode, flags, ctx):
        self.open_flags.append(flags)
        self.count("open")
        if self.open_mode == "enosys":
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return pyfuse3.FileInfo(fh=next(self.fhs))

    async def read(self, fh, off, size, inode=None):
        self.reads.append([fh, inode, off, size])
        self.count("read")
        if inode is None:  # stock pyfuse3: fh 0 could be any file
            raise pyfuse3.FUSEError(errno.EIO)
        if self.block and inode == self.files[BLOCK_NAME][0]:
            self.blocked = True
            self.write_report()
            with open(self.block, "rb") as fifo:  # no await: nothing else runs meanwhile
                fifo.read(1)
            self.blocked = False
            self.write_report()
        return self.by_inode[inode][off : off + size]

    async def flush(self, fh):
        self.count("flush")
        raise pyfuse3.FUSEError(errno.ENOSYS)  # as pyfuse3's default: the kernel stops sending it

    async def release(self, fh):
        self.count("release")

    async def opendir(self, inode, ctx):
        self.count("opendir")
        if inode != ROOT:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self.fhs)
        if self.opendir_mode == "int":
            return fh
        keep = self.opendir_mode == "keep"
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, cache_readdir=True)

    async def readdir(self, fh, start_id, token):
        self.count("readdir")
        for i, (name, (ino, _)) in enumerate(self.files.items()):
            if i >= start_id and not pyfuse3.readdir_reply(token, name, self.attrs(ino), i + 1):
                break

    async def releasedir(self, fh):
        self.count("releasedir")

    async def getxattr(self, inode, name, ctx):
        """user.store_many on the root: store every file's bytes in the kernel's page cache
        with one notify_store_many (patch 3), an unknown inode in the middle; the value is
        the errno of each store, as JSON."""
        if inode != ROOT or name != b"user.store_many":
            raise pyfuse3.FUSEError(errno.ENODATA)
        stores = [(ino, 0, data) for ino, data in self.by_inode.items()]
        stores.insert(1, (ROOT + 1000, 0, b"nobody"))
        return json.dumps(pyfuse3.notify_store_many(stores)).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--report", required=True)
    ap.add_argument("--open", choices=["enosys", "fh"], default="enosys")
    ap.add_argument("--opendir", choices=["int", "keep", "nokeep"], default="int")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--slow-lookup", type=float, default=0.0)
    ap.add_argument("--serial-dirops", action="store_true")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--block")
    ap.add_argument("--ioctl-thread", action="store_true")
    ap.add_argument("--ioctl-spin-us", type=int, default=0)
    args = ap.parse_args()
    fs = CountingFs(args.report, args.open, args.opendir, args.files, args.slow_lookup,
                    args.block)
    # read by pyfuse3's init handler (patch 2), whatever its default; stock pyfuse3 ignores it
    fs.enable_parallel_dirops = not args.serial_dirops
    options = set(pyfuse3.default_options) | {"fsname=pyfuse3-patch-test", "ro"}
    if args.debug:
        options.add("debug")
    pyfuse3.init(fs, args.mountpoint, options)
    try:
        if args.ioctl_thread and args.ioctl_spin_us:
            trio.run(lambda: pyfuse3.main(ioctl_thread=True, ioctl_spin_us=args.ioctl_spin_us))
        elif args.ioctl_thread:
            trio.run(lambda: pyfuse3.main(ioctl_thread=True))
        else:
            trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
