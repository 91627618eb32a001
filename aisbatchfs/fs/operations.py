"""FUSE operations: a thin layer from kernel requests to the namespace and the read path.

It knows FUSE and errno and nothing of HTTP. Every handler turns any exception into an errno
(fs/errors.py), so no object name, listing page or server fault can end the daemon.
stats["fuse"] counts every request read from the kernel by opcode (pyfuse3 patch 4), those
libfuse answers itself included: Python's open() sends a FUSE_IOCTL (isatty) for every file,
which no handler sees; without the patch, the requests the handlers saw.

Two ways files are opened:
- `kernel_open` (the default, with the patched pyfuse3): `open` answers ENOSYS once, and the
  kernel then opens and closes every file of the connection by itself: no OPEN, FLUSH or
  RELEASE ever reaches the daemon, and a file whose pages are in the kernel's cache is read
  with no request at all. READ carries the inode. The kernel keeps a file's pages across
  opens, so a new version must drop them: every reply that gives the kernel attributes
  (lookup, readdirplus, getattr after an attribute refresh) first switches the node to the
  current version (pagecache.KernelCache.switch), and READs ask for the version the kernel
  holds, never a newer one: no read() mixes two versions.
- daemon open: every open and close reaches the daemon; the open compares versions and
  answers keep_cache accordingly (the path before 0.2, kept for comparison).

The mount is read-only in the kernel (`ro`): write-type calls, O_TRUNC opens included, fail
with EROFS at open or at the call, before reaching the daemon; the handlers below answer EROFS
too, should one come. Control: `.aisbatchfs/stats` is a snapshot made at each lookup (an
inode of its own, read whole and current); hints go through the control socket named by the
root's `user.aisbatchfs.control` xattr (fs/control.py).
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3

from aisbatchfs import __version__
from aisbatchfs.control import XATTR as CONTROL_XATTR
from aisbatchfs.fs.dentries import DentryPrimer
from aisbatchfs.fs.errors import to_fuse_error
from aisbatchfs.fs.namespace import (
    DIR_KINDS,
    NAME_MAX,
    ROOT_INO,
    Entry,
    Kind,
    Listing,
    Namespace,
    Node,
)
from aisbatchfs.fs.pagecache import KernelCache
from aisbatchfs.fs.reader import Reader
from aisbatchfs.metrics import OpTimings

XATTR_PREFIX = "user.ais."
BLKSIZE = 128 << 10
FILE_KINDS = (Kind.FILE, Kind.MEMBER)
CONTROL_DIR_TTL = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Presentation:
    """How entries look to programs: owner, modes, cache lifetimes."""

    uid: int
    gid: int
    file_mode: int
    dir_mode: int
    ttl: float
    negative_ttl: float


def handler(op: str, by_handle: bool = False) -> Callable:
    """Wrap a handler so every failure becomes an errno with a log line naming the object,
    and the request is counted. `by_handle`: the first argument is a file handle."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def wrapper(self: AisOperations, *args: Any) -> Any:
            self.fuse_ops[op] += 1
            t0 = time.perf_counter() if self.timings is not None else 0.0
            try:
                return await fn(self, *args)
            except pyfuse3.FUSEError:
                raise
            except Exception as e:  # noqa: BLE001 - the daemon must survive anything
                raise to_fuse_error(e, op, self._describe(args, by_handle)) from None
            finally:
                if self.timings is not None:
                    self.timings.observe(op, time.perf_counter() - t0)

        return wrapper

    return wrap


class AisOperations(pyfuse3.Operations):
    supports_dot_lookup = False  # no NFS export: the kernel resolves '..' itself
    enable_writeback_cache = False
    enable_acl = False
    # lookups of different names in one directory must not wait for each other: one may be
    # waiting on a stalled cluster (needs the libfuse and pyfuse3 patches in patches/)
    enable_parallel_dirops = True

    def __init__(self, ns: Namespace, reader: Reader, look: Presentation,
                 stats: Callable[[], dict], kernel: KernelCache, *, kernel_open: bool,
                 control_path: str = "", cache_readdir: bool = False,
                 dentries: DentryPrimer | None = None) -> None:
        super().__init__()
        self.ns = ns
        self.reader = reader
        self.look = look
        self.stats = stats
        self.kernel = kernel  # the kernel's page cache: stores ahead, version switches
        self.dentries = dentries  # the kernel's dentry cache: directories read for it
        self.kernel_open = kernel_open
        self.read_with_inode = kernel_open  # the patched pyfuse3 passes READ's inode
        self.cache_readdir = cache_readdir  # the patched pyfuse3 takes a FileInfo at opendir
        self.control_path = control_path
        self.timings: OpTimings | None = None  # FUSE op latencies, only when metrics are on
        self.fuse_ops: Counter[str] = Counter()
        self._fh = itertools.count(1)
        self._dirs: dict[int, tuple[Node, tuple[Entry, ...]]] = {}
        self._dir_cached: dict[int, Listing] = {}  # what the kernel caches of a directory
        self._files: dict[int, tuple[Node, Entry]] = {}  # daemon open: entry as at open
        self._snapshots: dict[int, bytes] = {}  # stats snapshots by their inode
        self.counters: Counter[str] = Counter()

    def _describe(self, args: tuple, by_handle: bool) -> str:
        """The path a request is about, for log lines: bucket URL, object, member, and the
        name looked up when there is one."""
        if not args or not isinstance(args[0], int):
            return repr(args[:2])
        if by_handle and args[0] in self._files:
            node: Node | None = self._files[args[0]][0]
        elif by_handle and len(args) > 3 and isinstance(args[3], int):
            node = self.ns.nodes.get(args[3])  # READ without OPEN: (fh 0, off, size, inode)
        else:
            node = self.ns.nodes.get(args[0])
        if node is None:
            return f"inode {args[0]}"
        e = node.entry
        if e.bucket is not None:
            where = f"{e.bucket}/{e.path}" + (f"/{e.member}" if e.member else "")
        else:
            where = "/" + e.name
        if len(args) > 1 and isinstance(args[1], bytes):
            where = f"{where.rstrip('/')}/{os.fsdecode(args[1])}"
        return where

    def _node(self, ino: int) -> Node:
        try:
            return self.ns.get(ino)
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    # -- attributes ------------------------------------------------------------------------------

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        e = node.entry
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = self.look.ttl
        a.attr_timeout = self.look.ttl
        if e.kind in DIR_KINDS:
            a.st_mode = stat.S_IFDIR | self.look.dir_mode
            a.st_size = 0
            if e.kind is Kind.CONTROL_DIR:
                # it never changes: the kernel keeps it, so reaching the stats file needs no
                # lookup in the root, where one waiting on a stalled cluster would hold it up
                a.entry_timeout = a.attr_timeout = CONTROL_DIR_TTL
        elif e.kind is Kind.MEMBER_LINK:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_size = len(os.fsencode(e.link))
        else:
            a.st_mode = stat.S_IFREG | self.look.file_mode
            a.st_size = e.size
            if self.kernel_open and node.page_ident is not None:
                a.st_size = node.page_ident.size  # the version the kernel holds (switched first)
        t = self.ns.bucket_created_ns.get(e.bucket, 0) if e.bucket else 0
        if e.kind is Kind.CONTROL_FILE:
            a.attr_timeout = a.entry_timeout = 0
            a.st_size = len(self._snapshots.get(node.ino, b""))
            t = time.time_ns()
        a.st_nlink = 1  # directories too: "unknown", so find does not count subdirectories
        a.st_uid = self.look.uid
        a.st_gid = self.look.gid
        a.st_blksize = BLKSIZE
        a.st_blocks = (a.st_size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = t
        return a

    async def _current(self, node: Node) -> None:
        """Before the kernel is told a file's attributes: in kernel-open mode, drop what it
        holds of another version first."""
        if self.kernel_open and node.kind in FILE_KINDS:
            await self.kernel.switch(node)

    # -- names -----------------------------------------------------------------------------------

    @handler("lookup")
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if parent.kind not in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if len(name) > NAME_MAX:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        node = await self.ns.lookup(parent, os.fsdecode(name))
        if self.dentries is not None and parent.kind is Kind.DIR:
            # a name looked up alone in a directory the namespace has listed: the kernel
            # may as well learn all of them
            listing = self.ns.listed(parent.entry)
            where = self.ns.mount_path(parent.entry) if listing is not None else None
            if listing is not None and where is not None:
                self.dentries.offer(parent.entry.key, listing, where)
        if node is None:  # a negative entry the kernel may cache
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = self.look.negative_ttl
            return a
        if node.kind is Kind.CONTROL_FILE:
            self._snapshots[node.ino] = json.dumps(self.stats(), indent=1,
                                                   sort_keys=True).encode() + b"\n"
        if node.entry.bucket is not None:
            await self.ns.load_bucket_props(node.entry.bucket)
        await self._current(node)
        return self.attrs(node)

    @handler("getattr")
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if node.kind in FILE_KINDS or node.kind is Kind.ARCHIVE:
            await self.ns.refresh(node)  # after metadata_ttl: is it still this version?
        await self._current(node)
        return self.attrs(node)

    @handler("forget")
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            node = self.ns.nodes.get(ino)
            self.ns.forget(ino, n)
            if node is not None and ino not in self.ns.nodes:
                self._snapshots.pop(ino, None)
                if node.kind in FILE_KINDS:
                    self.reader.forget(node.entry)

    @handler("readlink")
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self._node(inode)
        if node.kind is not Kind.MEMBER_LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.entry.link)

    # -- directories -----------------------------------------------------------------------------

    @handler("opendir")
    async def opendir(self, inode: int, ctx: Any = None) -> int | pyfuse3.FileInfo:
        node = self._node(inode)
        if node.kind not in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = await self.ns.list_dir(node)
        for b in {e.bucket for e in listing.entries if e.bucket is not None}:
            await self.ns.load_bucket_props(b)
        fh = next(self._fh)
        self._dirs[fh] = (node, listing.entries)  # this handle's snapshot: no repeats
        if not self.cache_readdir:
            return fh
        # The kernel may keep serving its cached copy of this listing only while it is the
        # same: entries, their attributes and the versions the kernel holds.
        cached = self._dir_cached.get(inode)
        keep = cached is not None and (cached is listing or cached.entries == listing.entries)
        if keep and self.dentries is not None and ctx is not None and self.dentries.owns(ctx.pid):
            keep = False  # read for the dentries READDIRPLUS brings; a cached copy has none
        self._dir_cached[inode] = listing
        if len(self._dir_cached) > 100_000:
            self._dir_cached.clear()
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, cache_readdir=True)

    @handler("readdir", by_handle=True)
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        held = self._dirs.get(fh)
        if held is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        _, entries = held
        for i in range(start_id, len(entries)):
            entry = entries[i]
            node = self.ns.node_for(entry)
            await self._current(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(entry.name), self.attrs(node), i + 1):
                self.ns.drop_if_unused(node)
                return
            node.lookups += 1  # readdirplus entries count as lookups

    @handler("releasedir", by_handle=True)
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files -----------------------------------------------------------------------------------

    @handler("open")
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if self.kernel_open:
            # "no open support": from now on the kernel opens and closes files by itself
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self._node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if node.kind in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = next(self._fh)
        self.counters["opens"] += 1
        if node.kind is Kind.CONTROL_FILE:
            self._files[fh] = (node, node.entry)
            self.ns.opened(node)
            return pyfuse3.FileInfo(fh=fh, keep_cache=False)
        await self.kernel.settled(node)  # no await from here on
        e = node.entry
        item = self.ns.item(e)
        keep = node.page_ident == item  # the kernel's cached pages are of this same version
        node.page_ident = item
        self._files[fh] = (node, e)
        self.ns.opened(node)
        self.reader.accessed(e)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @handler("read", by_handle=True)
    async def read(self, fh: int, off: int, size: int, inode: int | None = None,
                   ) -> bytes | memoryview:
        if fh in self._files:  # daemon open: the entry as it was at open
            node, entry = self._files[fh]
            version = self.ns.item(entry) if node.kind in FILE_KINDS else None
        else:  # kernel open: the version the kernel holds
            if inode is None:
                raise pyfuse3.FUSEError(errno.EBADF)
            node = self._node(inode)
            entry = node.entry
            version = node.page_ident
        if node.kind is Kind.CONTROL_FILE:
            data: bytes | memoryview = self._snapshots.get(node.ino, b"")[off:off + size]
        elif node.kind in FILE_KINDS:
            if self.kernel_open and off == 0:
                self.reader.accessed(entry)  # a read reached the daemon: the reader is here
            data = await self.reader.read(entry, off, size, version)
        else:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self.counters["reads"] += 1
        self.counters["bytes_read"] += len(data)
        return data

    @handler("release", by_handle=True)
    async def release(self, fh: int) -> None:
        held = self._files.pop(fh, None)
        if held is None:
            return
        node, entry = held
        if node.kind in FILE_KINDS and node.opens == 1:
            self.reader.forget(entry)  # its last reader is gone: drop its windows now
        self.ns.closed(node)

    # -- extended attributes ---------------------------------------------------------------------

    def _xattrs(self, node: Node) -> dict[str, bytes]:
        e = node.entry
        if node.ino == ROOT_INO and self.control_path:
            out = {CONTROL_XATTR: self.control_path.encode()}
        else:
            out = {}
        if e.bucket is None or e.kind in (Kind.CONTROL_DIR, Kind.CONTROL_FILE):
            return out
        ais = {"bucket": e.bucket.name, "provider": e.bucket.provider}
        if e.bucket.namespace:
            ais["namespace"] = e.bucket.namespace
        if e.kind in (Kind.FILE, Kind.ARCHIVE):
            ais["name"] = e.path
            ais["size"] = str(e.size)
            if e.version:
                ais["version"] = e.version
            if e.checksum:
                ais["checksum"] = e.checksum
                ais["checksum_type"] = self.ns.checksum_types.get(e.bucket, "")
            if e.kind is Kind.ARCHIVE:
                ais["error"] = self.ns.archive_problem(e)  # why it lists no members
        elif e.kind in (Kind.MEMBER, Kind.MEMBER_DIR, Kind.MEMBER_LINK):
            ais["archive"] = e.path
            ais["archpath"] = e.member
            if e.kind is Kind.MEMBER:
                ais["size"] = str(e.size)
        elif e.kind is Kind.DIR:
            ais["prefix"] = e.path + "/" if e.path else ""
        out.update({XATTR_PREFIX + k: v.encode() for k, v in ais.items() if v != ""})
        return out

    @handler("getxattr")
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        key = os.fsdecode(name)
        if not key.startswith("user."):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # security.*, system.*: no ACLs, no labels
        node = self._node(inode)
        if key == XATTR_PREFIX + "checksum_type" and node.entry.bucket is not None:
            await self.ns.load_bucket_props(node.entry.bucket)
        value = self._xattrs(node).get(key)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @handler("listxattr")
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        node = self._node(inode)
        if node.entry.checksum and node.entry.bucket is not None:
            await self.ns.load_bucket_props(node.entry.bucket)
        return [k.encode() for k in self._xattrs(node)]

    # -- the rest --------------------------------------------------------------------------------

    @handler("statfs")
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = (1 << 50) // s.f_frsize  # nominal 1 PiB: nothing here to measure
        s.f_bfree = s.f_bavail = 0  # read-only: no room to write
        s.f_files = len(self.ns.nodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = NAME_MAX
        return s

    @handler("access")
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        node = self._node(inode)
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        if mode & os.X_OK and node.kind not in DIR_KINDS:
            return bool(self.look.file_mode & 0o111)
        return True

    async def _read_only(self, *args: Any) -> None:
        self.fuse_ops["write-type"] += 1
        raise pyfuse3.FUSEError(errno.EROFS)

    mknod = mkdir = symlink = link = create = write = setattr = _read_only
    unlink = rmdir = rename = setxattr = removexattr = _read_only


# FUSE opcodes (include/uapi/linux/fuse.h), for stats["fuse"]
OPCODES = {
    1: "lookup", 2: "forget", 3: "getattr", 4: "setattr", 5: "readlink", 6: "symlink",
    8: "mknod", 9: "mkdir", 10: "unlink", 11: "rmdir", 12: "rename", 13: "link", 14: "open",
    15: "read", 16: "write", 17: "statfs", 18: "release", 20: "fsync", 21: "setxattr",
    22: "getxattr", 23: "listxattr", 24: "removexattr", 25: "flush", 26: "init",
    27: "opendir", 28: "readdir", 29: "releasedir", 30: "fsyncdir", 31: "getlk", 32: "setlk",
    33: "setlkw", 34: "access", 35: "create", 36: "interrupt", 37: "bmap", 38: "destroy",
    39: "ioctl", 40: "poll", 41: "notify_reply", 42: "batch_forget", 43: "fallocate",
    44: "readdirplus", 45: "rename2", 46: "lseek", 47: "copy_file_range", 50: "syncfs",
    51: "tmpfile", 52: "statx",
}


def fuse_requests(handled: Counter[str]) -> dict[str, int]:
    """Requests read from the kernel, by opcode name (all of them, with pyfuse3 patch 4;
    else the ones that reached a handler)."""
    counts = getattr(pyfuse3, "request_counts", None)
    if counts is None:
        return dict(handled)
    return {OPCODES.get(op, f"opcode_{op}" if op else "other"): n for op, n in counts().items()
            if op != 26}  # (INIT: the mount's own handshake)


def ioctls_apart() -> dict[str, int]:
    """FUSE_IOCTLs answered by pyfuse3's request thread (pyfuse3 patch 5), if it has one, and
    its spins after them (patch 6): begun, and those that found the next request."""
    answered = getattr(pyfuse3, "ioctls_answered_apart", None)
    out = {"ioctls_answered_apart": answered()} if answered is not None else {}
    spins = getattr(pyfuse3, "ioctl_spins", None)
    if spins is not None:
        out["ioctl_spins"], out["ioctl_spin_hits"] = spins()
    return out


def stats_snapshot(ops: AisOperations, client_counters: Callable[[], dict],
                   **sections: Callable[[], dict]) -> dict:
    out = {
        "version": __version__,
        "pid": os.getpid(),
        "time": time.time(),
        "fs": dict(ops.counters, kernel_open=ops.kernel_open, **ioctls_apart()),
        "fuse": fuse_requests(ops.fuse_ops),
        "namespace": dict(ops.ns.counters, nodes=len(ops.ns.nodes)),
        "client": client_counters(),
    }
    out.update({name: fn() for name, fn in sections.items()})
    return out
