"""FUSE operations: a thin layer from kernel requests to the namespace and the read path.

It knows FUSE and errno and nothing of HTTP. Every handler turns any exception into an errno
(fs/errors.py), so no object name, listing page or server fault can end the daemon. Write-type
requests get EROFS from the daemon itself: the kernel mount stays read-write so the control
directory can take a writable file later.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3

from aisbatchfs import __version__
from aisbatchfs.fs.errors import to_fuse_error
from aisbatchfs.fs.namespace import (
    DIR_KINDS,
    NAME_MAX,
    PREFETCH_INO,
    STATS_INO,
    Entry,
    Kind,
    Namespace,
    Node,
)
from aisbatchfs.fs.pagecache import PagePusher
from aisbatchfs.fs.reader import Reader
from aisbatchfs.metrics import OpTimings

XATTR_PREFIX = "user.ais."
BLKSIZE = 128 << 10


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
    """Wrap a handler so every failure becomes an errno with a log line naming the object.
    `by_handle`: the first argument is a file handle, not an inode."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def wrapper(self: AisOperations, *args: Any) -> Any:
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

    def __init__(self, ns: Namespace, reader: Reader, look: Presentation,
                 stats: Callable[[], dict], hint: Callable[[str], None] | None = None,
                 pusher: PagePusher | None = None) -> None:
        super().__init__()
        self.ns = ns
        self.reader = reader
        self.look = look
        self.stats = stats
        self.hint = hint  # takes one path written to /.aisbatchfs/prefetch
        self.pusher = pusher  # stores arrived files in the kernel's page cache
        self.timings: OpTimings | None = None  # FUSE op latencies, only when metrics are on
        self._fh = itertools.count(1)
        self._dirs: dict[int, tuple[Entry, ...]] = {}
        # open files: the node, and what was opened (the entry as listed at open, a stats
        # snapshot, or a hints buffer)
        self._files: dict[int, tuple[Node, Entry | bytes | bytearray]] = {}
        self.counters = {"opens": 0, "reads": 0, "bytes_read": 0}

    def _describe(self, args: tuple, by_handle: bool) -> str:
        """The path a request is about, for log lines: bucket URL, object, member, and the
        name looked up when there is one."""
        if not args or not isinstance(args[0], int):
            return repr(args[:2])
        if by_handle:
            node = self._files.get(args[0], (None,))[0]
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
        else:
            a.st_mode = stat.S_IFREG | self.look.file_mode
            a.st_size = e.size
        if e.kind is Kind.CONTROL_FILE:
            a.attr_timeout = a.entry_timeout = 0
            a.st_size = 0  # generated at open and served with direct_io
            if node.ino == PREFETCH_INO:
                a.st_mode = stat.S_IFREG | 0o200 | (self.look.file_mode & 0o444)
        a.st_nlink = 1  # directories too: "unknown", so find does not count subdirectories
        a.st_uid = self.look.uid
        a.st_gid = self.look.gid
        a.st_blksize = BLKSIZE
        a.st_blocks = (a.st_size + 511) // 512
        t = self.ns.bucket_created_ns.get(e.bucket, 0) if e.bucket else 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = t
        return a

    # -- names -----------------------------------------------------------------------------------

    @handler("lookup")
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if parent.kind not in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if len(name) > NAME_MAX:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        node = await self.ns.lookup(parent, os.fsdecode(name))
        if node is None:  # a negative entry the kernel may cache
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = self.look.negative_ttl
            return a
        if node.entry.bucket is not None:
            await self.ns.load_bucket_props(node.entry.bucket)
        return self.attrs(node)

    @handler("getattr")
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.attrs(self._node(inode))

    @handler("forget")
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.ns.forget(ino, n)

    # -- directories -----------------------------------------------------------------------------

    @handler("opendir")
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self._node(inode)
        if node.kind not in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = await self.ns.list_dir(node)
        for b in {e.bucket for e in listing.entries if e.bucket is not None}:
            await self.ns.load_bucket_props(b)
        fh = next(self._fh)
        self._dirs[fh] = listing.entries  # this handle's snapshot: stable order, no repeats
        return fh

    @handler("readdir", by_handle=True)
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs.get(fh)
        if entries is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for i in range(start_id, len(entries)):
            entry = entries[i]
            node = self.ns.node_for(entry)
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
        node = self._node(inode)
        if node.ino == PREFETCH_INO:  # the one writable file: hints, one path per line
            if not flags & (os.O_WRONLY | os.O_RDWR) or self.hint is None:
                raise pyfuse3.FUSEError(errno.EACCES if self.hint else errno.EROFS)
            fh = next(self._fh)
            self._files[fh] = (node, bytearray())  # per handle: concurrent writers never mix
            self.ns.opened(node)
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if node.kind in DIR_KINDS:
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = next(self._fh)
        self.counters["opens"] += 1
        if node.ino == STATS_INO:
            snapshot = json.dumps(self.stats(), indent=1, sort_keys=True).encode() + b"\n"
            self._files[fh] = (node, snapshot)
            self.ns.opened(node)
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if self.pusher is not None:
            await self.pusher.settled(node)  # no await from here on
        e = node.entry
        item = self.ns.item(e)
        keep = node.page_ident == item  # the kernel's cached pages are of this same version
        node.page_ident = item
        self._files[fh] = (node, e)
        self.ns.opened(node)
        self.reader.accessed(e)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @handler("read", by_handle=True)
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        node, h = self._files[fh]
        if isinstance(h, bytearray):
            raise pyfuse3.FUSEError(errno.EBADF)
        if isinstance(h, bytes):
            data = h[off : off + size]
        else:
            data = await self.reader.read(h, off, size)
        self.counters["reads"] += 1
        self.counters["bytes_read"] += len(data)
        return data

    @handler("release", by_handle=True)
    async def release(self, fh: int) -> None:
        item = self._files.pop(fh, None)
        if item is None:
            return
        node, h = item
        if isinstance(h, Entry):
            if node.opens == 1:
                self.reader.forget(h)  # its last reader is gone: drop its windows now
        elif isinstance(h, bytearray) and h and self.hint:
            self.hint(h.decode("utf-8", "surrogateescape"))  # a last line without a newline
        self.ns.closed(node)

    @handler("write", by_handle=True)
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        item = self._files.get(fh)
        if item is None or not isinstance(item[1], bytearray):
            raise pyfuse3.FUSEError(errno.EROFS)
        pending = item[1]
        pending += buf
        *lines, rest = pending.split(b"\n")
        pending[:] = rest
        assert self.hint is not None
        for line in lines:
            if line.strip():
                self.hint(line.decode("utf-8", "surrogateescape"))
        return len(buf)

    @handler("setattr")
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        if inode == PREFETCH_INO and not (fields.update_mode or fields.update_uid
                                          or fields.update_gid):
            return self.attrs(self._node(inode))  # O_TRUNC and utimes on the hints file: no-op
        raise pyfuse3.FUSEError(errno.EROFS)

    # -- extended attributes ---------------------------------------------------------------------

    def _xattrs(self, node: Node) -> dict[str, bytes]:
        e = node.entry
        if e.bucket is None or e.kind in (Kind.CONTROL_DIR, Kind.CONTROL_FILE):
            return {}
        out = {"bucket": e.bucket.name, "provider": e.bucket.provider}
        if e.bucket.namespace:
            out["namespace"] = e.bucket.namespace
        if e.kind in (Kind.FILE, Kind.ARCHIVE):
            out["name"] = e.path
            out["size"] = str(e.size)
            if e.version:
                out["version"] = e.version
            if e.checksum:
                out["checksum"] = e.checksum
                out["checksum_type"] = self.ns.checksum_types.get(e.bucket, "")
        elif e.kind in (Kind.MEMBER, Kind.MEMBER_DIR):
            out["archive"] = e.path
            out["archpath"] = e.member
            if e.kind is Kind.MEMBER:
                out["size"] = str(e.size)
        elif e.kind is Kind.DIR:
            out["prefix"] = e.path + "/" if e.path else ""
        return {XATTR_PREFIX + k: v.encode() for k, v in out.items() if v != ""}

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

    # -- the rest ----------------------------------------------------------------------------------

    @handler("statfs")
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = (1 << 50) // s.f_frsize  # nominal 1 PiB: nothing here to measure
        s.f_bfree = s.f_bavail = 0  # read-only: no room to write
        s.f_files = len(self.ns.nodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    @handler("access")
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        node = self._node(inode)
        if mode & os.W_OK and not (inode == PREFETCH_INO and self.hint):
            raise pyfuse3.FUSEError(errno.EROFS)
        if mode & os.X_OK and node.kind not in DIR_KINDS:
            return bool(self.look.file_mode & 0o111)
        return True

    async def _read_only(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EROFS)

    mknod = mkdir = symlink = link = create = _read_only
    unlink = rmdir = rename = setxattr = removexattr = _read_only


def stats_snapshot(ops: AisOperations, client_counters: Callable[[], dict],
                   **sections: Callable[[], dict]) -> dict:
    out = {
        "version": __version__,
        "pid": os.getpid(),
        "time": time.time(),
        "fs": dict(ops.counters),
        "namespace": dict(ops.ns.counters, nodes=len(ops.ns.nodes)),
        "client": client_counters(),
    }
    out.update({name: fn() for name, fn in sections.items()})
    return out
