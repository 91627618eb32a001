"""The disk cache: bytes that arrived from AIStore, kept in local files, so that a second epoch
or a remount reads them from disk instead of the cluster (`-o disk_cache=DIR`).

Layout. DIR is created 0700; what is in it is 0600 (files) and 0700 (directories):

    DIR/lock      flock()ed by the one mount using DIR; holds its pid
    DIR/state     a 64-byte record: format version and `bound` (see Limit)
    DIR/tmp/      entries being written; each is renamed into data/ once whole
    DIR/trash.*/  set aside by a mount (the last mount's tmp/, a cleared data/), deleted in
                  the background
    DIR/data/CLUSTER/BUCKET/HH/NAME
                  CLUSTER: the cluster's UUID; BUCKET: provider,namespace,name,creation time,
                  each %-quoted (a recreated bucket is another directory); NAME: 16 hex digits
                  of XXH3-64 of the entry's identity; HH: its first two. Removing CLUSTER or
                  BUCKET (while unmounted) clears one cluster or bucket.

An entry is a whole small file (offset 0), or one `block_size` block of a large object at a
multiple of it (as in mountpoint-s3). Its file is a header, then the data:

    b"AISBFSDC", format u32, identity length u32, data length u64   (little endian)
    identity: length-prefixed UTF-8 fields: cluster UUID, provider, namespace, bucket,
              bucket creation time, object, member, object size, version, checksum, offset
    XXH3-64 of all of the above followed by the data

Checked on every read, before a byte is served: the header is whole and of this format; its
identity equals the key's, byte for byte (a name collision, a misplaced file, another
version); the data has the length asked for and the file is exactly header + data long (else
torn); the checksum. A failure is counted, logged (rate-limited), the file removed, and the
read is a miss: the caller fetches again. Buckets without checksums (checksum type `none`, or
a remote bucket whose listing has none): their keys hold "" as checksum, so an entry is
checked against the object's size and version only (our own checksum still guards against the
disk): an object rewritten in place with the same size and version, possible only where the
backend keeps no versions, would be served from the old entry, as the memory cache would.

Crashes. An entry is written into tmp/ and renamed into data/ only once whole; nothing is
fsynced (the per-entry checksum is the guarantee). kill -9 can leave files in tmp/, which are
never read: the next mount moves tmp/ into the trash before anything else. A power cut can
leave a renamed file short or full of garbage: torn or a bad checksum, removed on first read.

Lock: flock(LOCK_EX | LOCK_NB) on DIR/lock, so a second mount on one DIR (in any process,
this one included) is refused with DiskCacheError naming the holder's pid. Sharing would need
both to agree on usage and evictions through the filesystem. The kernel releases the lock
when its holder dies: a crash never leaves DIR locked.

Limit: the smaller of `size` and what keeps `min_free` of the filesystem free (looked at again
every `refresh` seconds), in bytes on disk: an entry is its blocks plus DIRENT bytes of
directory, a directory DIR_BLOCKS blocks. `used` (entries indexed, directories, writes under
way with their temp files, evictions under way, and `unscanned`: a bound on what DIR holds
that is not indexed yet) is at every moment at least what DIR holds. A write reserves its bytes
first, evicting if that makes room, and is dropped if it cannot. A remount answers at once,
before knowing what DIR holds: `unscanned` starts as the `bound` in DIR/state, which is raised
(written and fdatasync'ed, every ~1/32 of the limit) before `used` may pass it, so it covers
DIR even after kill -9 or a power cut (with no state file: the filesystem's used bytes). A walk
in the background then indexes DIR one directory at a time, moving bytes from `unscanned` to
the index. Until it ends, a write evicts only entries found so far (and only if that makes
room), and a read of an entry not indexed yet opens its file directly. A limit below what DIR
holds (a smaller `size`, a fuller filesystem) is reached by eviction once the walk has ended;
nothing is written before.

Eviction suits epochs, as in the memory cache (cache.py): entries read from disk in this mount
go first (this epoch is done with them), random among them (in a cyclic scan larger than the
cache, random replacement keeps a random share; LRU keeps nothing needed soon); then entries
of earlier mounts not read in this one (the rest of this epoch, or a dataset no longer read),
least recently used first (a first read in a mount stamps the file's mtime: the access time
persists at one metadata write per entry and mount); then entries written in this mount
(fetched for this epoch: needed again in the next), random among them.

Errors never reach a reader (a failed read is a miss). Any error while writing (ENOSPC,
EDQUOT, EROFS, EIO...) logs one line and stops writes for the mount's lifetime: memory only
from then on. Entries on disk are still read, unless a read fails with EIO, which stops reads
too.

Threads and processes: entries are read (and checked) by `readers` processes of their own and
written by `writers` (diskworkers.py says why: in the daemon's process a thread waits for the
GIL after each of its system calls; writer threads fell 30x behind, reader threads ran at a
third of the disk's speed); the trio loop moves their bytes through pipes itself. Before
`run()` (a test looking at DIR) and with `processes=False`, reads and writes run in worker
threads instead. Evictions and the state file run in `write_threads` worker threads; the walk
and the look at free space in one. A call reads or writes several entries (`get_many`: a
batcher's chunk, a range's blocks; a writer takes what is queued, up to WRITE_BATCH). A written
file gets posix_fadvise(DONTNEED) once written, which starts its writeback, and again
FADVISE_LAG writes later, when its pages are clean and can go; a file read gets it at once:
the page cache keeps no second copy of what the FUSE page
cache holds. Memory: about 200 bytes per entry indexed.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import heapq
import itertools
import logging
import math
import os
import random
import shutil
import stat
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import trio
import xxhash

from aisbatchfs.ais.api import Buffer
from aisbatchfs.ais.models import BucketRef, Item
from aisbatchfs.fs.diskworkers import WorkerGone, WorkerProcess, write_all
from aisbatchfs.logs import RateLimited

log = logging.getLogger(__name__)

MiB = 1 << 20
FORMAT = 1
MAGIC = b"AISBFSDC"
_HEAD = struct.Struct("<8sIIQ")  # magic, format, identity length, data length
_SUM = struct.Struct("<Q")
_FIELD = struct.Struct("<I")
STATE_MAGIC = b"AISBFSST"
_STATE = struct.Struct("<8sIQ")  # magic, format, bound; then XXH3-64 of these (_SUM)
STATE_SIZE = 64
# bytes of directory an entry's name takes: ext4 stores 8 + 16 bytes in blocks ~3/4 full,
# and a directory past one block adds an index root (htree) block, which this covers too
DIRENT = 96
DIR_BLOCKS = 1  # a directory's first block
SMALL = 68 << 10  # files up to this size are read with one pread
PEEK = 4096  # the first read of a larger file: its header, unless the identity is huge
FADVISE_LAG = 32  # written files whose pages are dropped again this many writes later
WRITE_BATCH = 16  # entries written in one worker call: the thread hop is paid once
WRITE_BATCH_BYTES = 8 * MiB  # ... and at most these bytes (a writer holds them reserved)
WRITER_CALLS = 2  # calls under way per writer process (diskworkers.py says why)
SLACK_SHARE = 32  # the persisted bound runs ahead of `used` by limit/32 (one fdatasync each)
MAX_SLACK = 256 * MiB  # ... at most, so a remount after a crash overestimates by little
BUCKET_BITS = 24  # an index value packs (charge << BUCKET_BITS | bucket directory id)
HEX = frozenset("0123456789abcdef")


class DiskCacheError(Exception):
    """The disk cache cannot be used as configured (in use by another mount, not a directory,
    no permission). Raised only by `DiskCache.open` and `clear`, never on a read."""


@dataclass(frozen=True)
class DiskCacheConfig:
    root: Path  # disk_cache=DIR
    size: int | None = None  # disk_cache_size; None: only min_free bounds it
    min_free: float = 0.05  # share of DIR's filesystem always left free (the 5%)
    clear_on_mount: bool = False  # disk_cache_clear_on_mount: start empty
    # blocks of large objects (mountpoint-s3's size): a read-ahead window is a few of them
    block_size: int = MiB
    # bytes waiting to be written; past it a put is refused (the disk tier owes it, or it is
    # dropped), so a slow disk holds no memory
    queue_bytes: int = 64 * MiB
    # reads at once, each in a reader process: a data loader's workers each wait on one, and
    # a batch's chunks are read in parallel (four: what the disk here gains from, 326 -> 457
    # MB/s from one to four readers of 64 KiB files)
    readers: int = 4
    write_threads: int = 2  # evictions and state writes at once
    writers: int = 2  # writer processes (batches written at once): two cores
    # read and write in processes of their own (diskworkers.py); False: in worker threads of
    # this process, for tests that make the file system calls themselves fail or stall
    processes: bool = True
    refresh: float = 1.0  # seconds between looks at the filesystem's free space


@dataclass(frozen=True, slots=True)
class DiskKey:
    """What an entry holds: an object or archive member with its full identity, and which part
    (`offset`). A new version, a recreated bucket or another cluster is another key."""

    cluster: str  # the cluster's UUID
    bucket: BucketRef
    bucket_created_ns: int  # ais:// versions restart at 1 in a bucket created again
    obj: str
    member: str
    size: int  # of the object or member
    version: str
    checksum: str  # "" in buckets without checksums: checked by size and version only
    offset: int = 0  # 0: the whole file, or its first block; else a multiple of block_size

    @classmethod
    def of(cls, item: Item, cluster_uuid: str, bucket_created_ns: int,
           offset: int = 0) -> DiskKey:
        assert cluster_uuid, "a disk cache key needs the cluster's UUID"
        return cls(cluster_uuid, item.bucket, bucket_created_ns, item.obj, item.member,
                   item.size, item.version, item.checksum, offset)

    def at(self, offset: int) -> DiskKey:
        return dataclasses.replace(self, offset=offset)

    def identity(self) -> bytes:
        """The bytes an entry's header holds and its name hashes."""
        out = bytearray()
        for f in (self.cluster, self.bucket.provider, self.bucket.namespace, self.bucket.name,
                  str(self.bucket_created_ns), self.obj, self.member, str(self.size),
                  self.version, self.checksum, str(self.offset)):
            b = f.encode("utf-8", "surrogatepass")
            out += _FIELD.pack(len(b)) + b
        return bytes(out)

    def bucket_dir(self) -> str:
        """data/CLUSTER/BUCKET, relative to DIR."""
        b = self.bucket
        parts = (b.provider, b.namespace, b.name, str(self.bucket_created_ns))
        return f"data/{_segment(self.cluster)}/{','.join(_segment(p) for p in parts)}"

    def __str__(self) -> str:
        member = f"/{self.member}" if self.member else ""
        return f"{self.bucket}/{self.obj}{member}@{self.offset}"


def _segment(s: str) -> str:
    q = quote(s, safe="")
    return q.replace(".", "%2E") if q in (".", "..") else q


def _name(identity: bytes) -> int:
    return xxhash.xxh3_64_intdigest(identity)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


class _Pick:
    """Names, one of which can be taken at random in O(1): random replacement."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: int) -> bool:
        return name in self._pos

    def add(self, name: int) -> None:
        if name not in self._pos:
            self._pos[name] = len(self._items)
            self._items.append(name)

    def discard(self, name: int) -> None:
        i = self._pos.pop(name, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._pos[last] = i

    def take(self, rng: random.Random) -> int:
        name = self._items[rng.randrange(len(self._items))]
        self.discard(name)
        return name


@dataclass(eq=False, slots=True)
class _Job:
    """A put on its way to disk."""

    key: DiskKey
    identity: bytes
    name: int
    data: Buffer | memoryview
    nbytes: int


@dataclass(eq=False, slots=True)
class _ReadReq:
    """A read planned by `get_many`: where its answer goes, and the worker's arguments."""

    index: int
    key: DiskKey
    name: int
    bucket_dir: str
    size: int
    args: tuple[str, bytes, int, bool]  # path, identity, expected size, first use


@dataclass(slots=True)
class _Read:
    """What a worker found at an entry's path."""

    outcome: str  # hit, absent, error, or a bad entry (removed): torn, checksum, identity
    data: bytes | None = None
    charge: int = 0  # bytes on disk (a hit)
    detail: str = ""
    err: int = 0


@dataclass(slots=True)
class _Listing:
    """One directory of the walk."""

    files: list[tuple[str, int, int]]  # (name, bytes on disk, mtime_ns) of entries
    dirs: list[str]
    freed: int = 0  # bytes removed: trash, and strays (what is not an entry) in data/
    strays: int = 0


class DiskCache:
    """Open with `DiskCache.open` (blocking, no threads: callable before daemonizing), run
    `run()` in the mount's nursery, `close()` after it ended."""

    def __init__(self, cfg: DiskCacheConfig, cluster_uuid: str) -> None:
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.cluster = cluster_uuid
        self.counters: Counter[str] = Counter(dict.fromkeys(
            ("hits", "misses", "writes", "write_drops", "evictions", "checksum_failures",
             "torn_files", "identity_mismatches", "read_errors"), 0))
        self._lock_fd = -1
        self._state_fd = -1
        self._bsize = 4096
        self._dircost = DIR_BLOCKS * 4096
        # the index: name -> charge << BUCKET_BITS | bucket id; tiers in eviction order
        self._bytes: dict[int, int] = {}
        self._buckets: list[str] = []  # id -> data/CLUSTER/BUCKET
        self._bucket_ids: dict[str, int] = {}
        self._hit = _Pick()  # read from disk in this mount
        self._old: list[tuple[int, int]] = []  # heap (mtime_ns, name): found by the walk
        self._new = _Pick()  # written in this mount, not read from disk since
        self._dirs: set[str] = set()  # directories under data/ charged for
        self._rng = random.Random()
        # accounting, in bytes on disk (see `used`)
        self._files = 0  # entries indexed
        self._fixed = 0  # directories, lock and state
        self._reserved = 0  # writes under way
        self._evicting = 0  # files being removed
        self._unscanned = 0  # bound on what DIR holds that is not indexed
        self._persisted = 0  # the bound in DIR/state: >= used whenever bytes are written
        self._fs_limit = 0  # what keeps min_free of the filesystem free
        self._walked = False  # the index holds everything under data/
        self._gone: set[int] = set()  # removed while the walk runs: it must not index them
        self._busy: set[int] = set()  # being removed
        self._writing: set[int] = set()  # queued or being written
        # being read: not written meanwhile, so what a read finds is what the index says
        self._reading: Counter[int] = Counter()
        self._queued = 0  # bytes queued
        self._pending = 0  # puts queued or being written
        self._drained = trio.Event()
        self._drained.set()
        self._roomy = trio.Event()  # set while the queue is at most half full
        self._roomy.set()
        self._writes_off = ""  # why writes stopped
        self._reads_off = ""  # why reads stopped
        self._room = trio.Lock()  # reservations, evictions and the persisted bound
        self._send, self._recv = trio.open_memory_channel[_Job](math.inf)  # bounded in bytes
        self._readers = trio.CapacityLimiter(cfg.readers)  # reads at once
        self._writers = trio.CapacityLimiter(cfg.write_threads)
        # worker processes: started by run(), all closed when it ends
        self._procs: list[WorkerProcess] = []
        self._idle_send, self._idle = trio.open_memory_channel[WorkerProcess | None](math.inf)
        # reads go to reader processes while run() runs (idle ones here; a gone one is
        # replaced by the next read), else to worker threads
        self._read_procs_on = False
        self._idle_readers: list[WorkerProcess] = []
        self._background = trio.CapacityLimiter(1)
        self._later = _DropLater(FADVISE_LAG)
        self._tmp_seq = 0
        self._bad_log = RateLimited(log)

    # -- opening and closing ---------------------------------------------------------------------

    @classmethod
    def open(cls, cfg: DiskCacheConfig, cluster_uuid: str) -> DiskCache:
        """Take DIR (created 0700) for this mount. Reads nothing but DIR's top level: what is
        in it is indexed by `run()` in the background."""
        dc = cls(cfg, cluster_uuid)
        try:
            dc._open()
        except OSError as e:
            dc.close()
            raise DiskCacheError(f"disk cache {cfg.root}: {e.strerror or e}") from e
        except BaseException:
            dc.close()
            raise
        return dc

    def _open(self) -> None:
        root = self.root
        if not root.is_dir():
            root.mkdir(mode=0o700, parents=True)
            os.chmod(root, 0o700)
        self._lock_fd = _take_lock(root)
        names = set(os.listdir(root))  # a handful of names: the top level only
        bound, fmt = _read_state(root / "state")
        reset = self.cfg.clear_on_mount
        if fmt is not None and fmt != FORMAT:
            log.info("disk cache %s holds format %d, not %d: starting empty", root, fmt, FORMAT)
            reset = True
        st = os.statvfs(root)
        if bound is None:  # no state: nothing there, or the filesystem's used bytes bound it
            bound = 0 if names <= {"lock"} else (st.f_blocks - st.f_bfree) * st.f_frsize
        stamp = time.time_ns()
        for name in ("tmp", "data") if reset else ("tmp",):
            if name in names:  # half-written files of a crash, or what is cleared
                os.rename(root / name, root / f"trash.{stamp}.{name}")
        for name in ("data", "tmp"):
            if not (root / name).is_dir():
                os.mkdir(root / name, 0o700)
        self._state_fd = os.open(root / "state", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._bsize = st.f_frsize
        self._dircost = DIR_BLOCKS * st.f_frsize
        self._fixed = 3 * self._dircost + 2 * self._bsize  # DIR, data, tmp; lock, state
        self._unscanned = max(0, bound - self._fixed)
        self._fs_limit = self.used + self._fs_room(st)
        self._write_state(self.used)
        self._persisted = self.used
        log.info("disk cache %s: limit %d bytes, up to %d there from earlier mounts",
                 root, self.limit, self._unscanned)

    def close(self) -> None:
        """Save the bound on what DIR holds and let DIR go. After `run()` has ended."""
        if self._lock_fd < 0:
            return
        self._later.flush()
        if self._state_fd >= 0:
            if self._persisted:  # opened whole: `used` means something
                try:
                    self._write_state(self.used)
                except OSError as e:
                    log.debug("disk cache %s: state not saved: %s", self.root, e)
            os.close(self._state_fd)
            self._state_fd = -1
        os.close(self._lock_fd)  # releases the flock
        self._lock_fd = -1

    def __enter__(self) -> DiskCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Writers, the walk of what earlier mounts left, and the look at free space live
        here, for the mount's lifetime."""
        await trio.to_thread.run_sync(_note_pid, self._lock_fd, limiter=self._background)
        try:
            # processes are started from this thread, not a worker: a child's death signal
            # follows the thread that forked it, and trio's workers exit when idle
            for _ in range(self.cfg.writers):
                if self.cfg.processes:  # two calls each: one written, the next in the pipe
                    self._procs.append(WorkerProcess("write"))
                    for _ in range(WRITER_CALLS):
                        self._idle_send.send_nowait(self._procs[-1])
                else:
                    self._idle_send.send_nowait(None)  # None: write in a worker thread
            if self.cfg.processes:  # one reader now, the others when reads overlap
                self._idle_readers = [self._new_reader()]
                self._read_procs_on = True
            async with trio.open_nursery() as nursery:
                for _ in range(self.cfg.writers * (WRITER_CALLS if self.cfg.processes else 1)):
                    nursery.start_soon(self._writer)
                nursery.start_soon(self._walk)
                nursery.start_soon(self._watch_space)
                task_status.started()
        finally:
            self._read_procs_on = False  # reads go to threads from now on
            self._idle_readers.clear()
            with trio.CancelScope(shield=True):
                for proc in self._procs:
                    await trio.to_thread.run_sync(proc.close)
            self._procs.clear()

    def _new_reader(self) -> WorkerProcess:
        proc = WorkerProcess("read")
        self._procs.append(proc)
        return proc

    # -- accounting ------------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """At least what DIR holds, at every moment."""
        return self._files + self._fixed + self._reserved + self._evicting + self._unscanned

    @property
    def limit(self) -> int:
        fs = self._fs_limit
        return max(0, fs if self.cfg.size is None else min(self.cfg.size, fs))

    def _fs_room(self, st: os.statvfs_result) -> int:
        return st.f_bavail * st.f_frsize - math.ceil(self.cfg.min_free * st.f_blocks
                                                     * st.f_frsize)

    def _check(self) -> None:
        assert min(self._files, self._fixed, self._reserved, self._evicting, self._unscanned,
                   self._queued, self._pending) >= 0, self.stats()

    def _slack(self) -> int:
        return min(max(self.limit // SLACK_SHARE, self._bsize), MAX_SLACK)

    def _write_state(self, bound: int) -> None:
        head = _STATE.pack(STATE_MAGIC, FORMAT, bound)
        rec = head + _SUM.pack(xxhash.xxh3_64_intdigest(head))
        os.pwrite(self._state_fd, rec.ljust(STATE_SIZE, b"\0"), 0)
        os.fdatasync(self._state_fd)

    # -- the index -------------------------------------------------------------------------------

    def _bucket_id(self, rel: str) -> int:
        bid = self._bucket_ids.get(rel)
        if bid is None:
            bid = self._bucket_ids[rel] = len(self._buckets)
            assert bid < 1 << BUCKET_BITS
            self._buckets.append(rel)
        return bid

    def _path(self, bucket_dir: str, name: int) -> str:
        h = f"{name:016x}"
        return f"{self.root}/{bucket_dir}/{h[:2]}/{h}"

    def _index(self, name: int, bucket_dir: str, charge: int) -> None:
        """Count an entry on disk (replacing what the index said of its name)."""
        self._forget(name)
        self._bytes[name] = charge << BUCKET_BITS | self._bucket_id(bucket_dir)
        self._files += charge

    def _forget(self, name: int) -> tuple[int, int]:
        """Drop a name from the index: (its charge, its bucket id), or (0, 0)."""
        v = self._bytes.pop(name, None)
        if v is None:
            return 0, 0
        self._hit.discard(name)
        self._new.discard(name)  # in _old it is skipped when popped
        charge = v >> BUCKET_BITS
        self._files -= charge
        return charge, v & ((1 << BUCKET_BITS) - 1)

    def _victim(self) -> int | None:
        if self._hit:
            return self._hit.take(self._rng)
        while self._old:
            _, name = heapq.heappop(self._old)
            if name in self._bytes and name not in self._hit and name not in self._new:
                return name
        if self._new:
            return self._new.take(self._rng)
        return None

    # -- reading ---------------------------------------------------------------------------------

    def key(self, item: Item, bucket_created_ns: int, offset: int = 0) -> DiskKey:
        return DiskKey.of(item, self.cluster, bucket_created_ns, offset)

    def path(self, key: DiskKey) -> Path:
        """Where the key's entry lives (whether or not it is there)."""
        return Path(self._path(key.bucket_dir(), _name(key.identity())))

    def known(self, key: DiskKey) -> bool | None:
        """Without I/O: True if the index holds the key (its check comes at the read), False
        if it is surely not on disk, None while the walk has not told yet."""
        name = _name(key.identity())
        if name in self._bytes:
            return True
        if self._walked or self._reads_off or name in self._gone:
            return False
        return None

    def holds(self, key: DiskKey) -> bool:
        """Whether the index has the entry, readable now (no file is looked at)."""
        name = _name(key.identity())
        return (name in self._bytes and not self._reads_off and name not in self._writing
                and name not in self._busy)

    async def get(self, key: DiskKey, expected_size: int) -> bytes | None:
        """The entry's bytes, checked; None on a miss (not there, or bad: counted and
        removed). Never raises for a disk error."""
        return (await self.get_many([(key, expected_size)]))[0]

    async def get_many(self, wanted: Sequence[tuple[DiskKey, int]], *,
                       until_miss: bool = False) -> list[bytes | None]:
        """`get` of several entries (key, expected size) in one worker call, which pays the
        thread hop (~100-150 us here) once: predicted files, the blocks of a range.
        `until_miss`: stop reading at the first miss (the rest are None, not counted)."""
        out: list[bytes | None] = [None] * len(wanted)
        reads: list[_ReadReq] = []
        for i, (key, size) in enumerate(wanted):
            identity = key.identity()
            name = _name(identity)
            if self._reads_off or name in self._writing or (name not in self._bytes and (
                    self._walked or name in self._gone or name in self._busy)):
                self.counters["misses"] += 1
                if until_miss:
                    break
                continue
            first_use = name not in self._hit and name not in self._new
            bucket_dir = key.bucket_dir()
            reads.append(_ReadReq(i, key, name, bucket_dir, size, (
                self._path(bucket_dir, name), identity, size, first_use)))
        if not reads:
            return out
        for r in reads:
            self._reading[r.name] += 1
        try:
            if self._read_procs_on:
                gots = await self._read_in_process([r.args for r in reads], until_miss)
            else:
                gots = await trio.to_thread.run_sync(
                    _read_entries, [r.args for r in reads], until_miss, limiter=self._readers)
        finally:
            for r in reads:
                self._reading[r.name] -= 1
                if not self._reading[r.name]:
                    del self._reading[r.name]
        for r, got in zip(reads, gots, strict=False):
            out[r.index] = self._settle(r, got)
        self._check()
        return out

    async def _read_in_process(self, reqs: list[tuple[str, bytes, int, bool]],
                               until_miss: bool) -> list[_Read]:
        """`_read_entries` in an idle reader process. One that is gone (killed, crashed, or
        cut off by a cancellation) is left; the next read starts another. Its entries are
        read errors (misses: fetched from the cluster), which stop nothing."""
        async with self._readers:
            if self._idle_readers:
                proc = self._idle_readers.pop()
            else:
                try:
                    proc = self._new_reader()
                except OSError as e:
                    self._stop("reads", f"starting a reader process: {e.strerror}")
                    return [_Read("error", detail=str(e.strerror))] * len(reqs)
            try:
                found = await proc.read(reqs, until_miss)
            except WorkerGone as e:
                self.counters["reader_restarts"] += 1
                return [_Read("error", detail=str(e.strerror))] * len(reqs)
            self._idle_readers.append(proc)
        return [_Read(outcome, data, charge, detail, err)
                for (outcome, charge, detail, err), data in found]

    def _settle(self, r: _ReadReq, got: _Read) -> bytes | None:
        """Count what a worker found, and update the index."""
        name = r.name
        if got.outcome == "hit":
            self.counters["hits"] += 1
            self.counters["hit_bytes"] += r.size
            if name in self._bytes:
                self._new.discard(name)
                self._hit.add(name)
            elif not self._walked and name not in self._gone and name not in self._busy:
                charge = got.charge + DIRENT  # an earlier mount's: from unscanned to the index
                self._index(name, r.bucket_dir, charge)
                self._unscanned = max(0, self._unscanned - charge)
                self._hit.add(name)
            return got.data
        self.counters["misses"] += 1
        if got.outcome == "absent":
            if name in self._bytes:  # removed behind our back
                self._forget(name)
                self.counters["vanished"] += 1
        elif got.outcome == "error":
            self.counters["read_errors"] += 1
            self._bad_log.log(logging.WARNING, "read error", "disk cache: reading %s: %s",
                              r.key, got.detail)
            if got.err == errno.EIO:
                self._stop("reads", got.detail)
        else:  # a bad entry, removed by the worker
            self.counters[{"torn": "torn_files", "checksum": "checksum_failures",
                           "identity": "identity_mismatches"}[got.outcome]] += 1
            self._bad_log.log(logging.WARNING, "bad entry",
                              "disk cache: bad entry for %s removed (%s): fetching it again",
                              r.key, got.detail)
            self._forget(name)
            if not self._walked:
                self._gone.add(name)
        return None

    async def get_range(self, key: DiskKey, start: int, length: int) -> bytes | None:
        """Bytes of a large object from `start`: as far as its blocks are cached without a
        gap, up to `length`; None if the first is not."""
        bs = self.cfg.block_size
        end = min(start + length, key.size)
        first = start - start % bs
        blocks = await self.get_many(
            [(key.at(o), min(bs, key.size - o)) for o in range(first, end, bs)], until_miss=True)
        pieces = []
        for data in blocks:
            if data is None:
                break
            pieces.append(data)
        pos = first + sum(len(p) for p in pieces)
        if pos <= start:
            return None
        return b"".join(pieces)[start - first:min(pos, end) - first]

    # -- writing ---------------------------------------------------------------------------------

    def put(self, key: DiskKey, data: Buffer | memoryview, *, deferrable: bool = False) -> bool:
        """Queue an entry to be written, and return at once: not queued when writes are off,
        the key is there or on its way, or the queue is full (dropped; False if `deferrable`:
        the caller offers it again once `room()` returns, and owns the drop if it cannot).
        `data` must not change after."""
        if self._writes_off:
            self.drop("off")
            return True
        identity = key.identity()
        name = _name(identity)
        if (name in self._bytes or name in self._writing or name in self._busy
                or name in self._reading):
            return True
        nbytes = memoryview(data).nbytes
        if self._queued + nbytes > self.cfg.queue_bytes:
            if self._roomy.is_set():  # a new one only: tasks may wait on the one there
                self._roomy = trio.Event()
            if deferrable:
                return False
            self.drop("queue_full")
            return True
        self._queued += nbytes
        self._writing.add(name)
        if not self._pending:
            self._drained = trio.Event()
        self._pending += 1
        self._send.send_nowait(_Job(key, identity, name, data, nbytes))
        return True

    def put_range(self, key: DiskKey, start: int, data: Buffer | memoryview) -> None:
        """Queue the blocks of a large object that `data` (its bytes from `start`) holds
        whole."""
        bs = self.cfg.block_size
        view = memoryview(data).cast("B")
        end = start + len(view)
        pos = _round_up(start, bs)
        while pos < end:
            n = min(bs, key.size - pos)
            if pos + n > end:
                break
            self.put(key.at(pos), view[pos - start:pos - start + n])
            pos += n

    async def flush(self) -> None:
        """Wait until what was put so far is written or dropped."""
        while self._pending:
            await self._drained.wait()

    async def room(self) -> None:
        """Wait until the queue is at most half full (or writes are off)."""
        while self._queued > self.cfg.queue_bytes // 2 and not self._writes_off:
            await self._roomy.wait()

    def drop(self, why: str) -> None:
        """Count a write not made, and why."""
        self.counters["write_drops"] += 1
        self.counters[f"write_drops_{why}"] += 1

    async def _writer(self) -> None:
        """Takes what is queued, up to WRITE_BATCH entries or bytes, into one worker call."""
        while True:
            jobs = [await self._recv.receive()]
            nbytes = jobs[0].nbytes
            while len(jobs) < WRITE_BATCH and nbytes < WRITE_BATCH_BYTES:
                try:
                    jobs.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
                nbytes += jobs[-1].nbytes
            self._queued -= nbytes
            if self._queued <= self.cfg.queue_bytes // 2:
                self._roomy.set()
            try:
                await self._write(jobs)
            finally:
                self._writing.difference_update(j.name for j in jobs)
                self._pending -= len(jobs)
                if not self._pending:
                    self._drained.set()

    async def _write(self, jobs: list[_Job]) -> None:
        plans: list[tuple[_Job, str, int, tuple]] = []  # job, bucket dir, cost, worker args
        # one turn of the lock for all: each turn is a trip through the busy event loop
        async with self._room:
            for job in jobs:
                bucket_dir = job.key.bucket_dir()
                hexname = f"{job.name:016x}"
                hh = f"{bucket_dir}/{hexname[:2]}"
                est = _round_up(_HEAD.size + len(job.identity) + _SUM.size + job.nbytes,
                                self._bsize)
                parts = hh.split("/")
                chain = ["/".join(parts[:i]) for i in range(2, len(parts) + 1)]  # data/C/B/HH
                if not await self._reserve(est + DIRENT, chain):
                    self.drop("off" if self._writes_off else "no_room")
                    continue
                self._tmp_seq += 1
                plans.append((job, bucket_dir, est + DIRENT, (
                    f"{self.root}/tmp/{hexname}.{self._tmp_seq}", f"{self.root}/{hh}/{hexname}",
                    job.identity, job.data, est)))
        if not plans:
            return
        done: list[bool] = []
        lost = False  # a writer process died: what it was given may be on disk, unindexed
        taken: list[WorkerProcess | None] = []
        try:
            proc = await self._idle.receive()
            taken.append(proc)
            reqs = [p[3] for p in plans]
            try:
                if proc is None:
                    done, error = await trio.to_thread.run_sync(_write_entries, reqs, self._later)
                else:
                    done, error = await proc.write(reqs)
            except WorkerGone as e:
                lost, error = True, e
            if error is not None:
                self._stop("writes", f"{errno.errorcode.get(error.errno or 0, error.errno)}: "
                                     f"{error.strerror}")
        finally:
            for proc in taken:
                self._idle_send.send_nowait(proc)
            for (job, bucket_dir, cost, _), written in itertools.zip_longest(plans, done):
                self._reserved -= cost
                if written:
                    self._index(job.name, bucket_dir, cost)
                    self._new.add(job.name)
                    self.counters["writes"] += 1
                    self.counters["write_bytes"] += job.nbytes
                elif written is False:
                    self.drop("larger_than_estimated")
                else:  # not attempted: after an error, or the mount is ending
                    self.drop("off" if self._writes_off else "cancelled")
                    if lost:  # may be there all the same: count it against the limit
                        self._unscanned += cost
            self._check()

    async def _reserve(self, cost: int, chain: list[str]) -> bool:
        """Set aside `cost` bytes and the directories in `chain` not charged yet, evicting
        if that makes room; raise the persisted bound first if they pass it. The caller
        holds `_room`."""
        assert self._room.locked()
        new = [d for d in chain if d not in self._dirs]
        need = cost + len(new) * self._dircost
        if not await self._fit(need):
            return False
        self._reserved += cost
        self._fixed += len(new) * self._dircost
        self._dirs.update(new)
        assert self.used <= self.limit, self.stats()
        if self.used > self._persisted:
            target = min(self.used + self._slack(), max(self.limit, self.used))
            try:
                await trio.to_thread.run_sync(self._write_state, target,
                                              limiter=self._writers)
                self._persisted = target
            except OSError as e:
                self._reserved -= cost
                self._fixed -= len(new) * self._dircost
                self._dirs.difference_update(new)
                self._stop("writes", f"saving the state: {e.strerror}")
                return False
        # nothing is written that the persisted bound does not cover: a crash now leaves
        # DIR within it (the walk may find more than `unscanned` said, but finds no new
        # bytes: only what an earlier mount charged more than it took)
        assert self.used <= self._persisted, self.stats()
        return True

    async def _fit(self, need: int) -> bool:
        """Evict until `need` more bytes fit under the limit; False, evicting nothing, if
        all entries indexed would not make room (the walk has not found enough yet), or if
        writes are off."""
        assert self._room.locked()
        while self.used + need > self.limit and not self._writes_off:
            over = self.used + need - self.limit
            if over > self._files or not await self._evict(over):
                return False
        return not self._writes_off

    async def _evict(self, nbytes: int) -> int:
        """Remove entries worth at least `nbytes` (fewer if the index runs out); returns what
        they were charged. Their bytes stay counted until their files are gone."""
        victims, paths, freed = [], [], 0
        while freed < nbytes:
            name = self._victim()
            if name is None:
                break
            charge, bid = self._forget(name)
            victims.append(name)
            paths.append(self._path(self._buckets[bid], name))
            freed += charge
        self._evicting += freed
        self._busy.update(victims)
        if not self._walked:
            self._gone.update(victims)
        try:
            await trio.to_thread.run_sync(_unlink_all, paths, limiter=self._writers)
        except OSError as e:
            self._unscanned += freed  # some may be left: counted, never indexed again
            self._stop("writes", f"evicting: {e.strerror}")
        finally:
            self._evicting -= freed
            self._busy.difference_update(victims)
            self.counters["evictions"] += len(victims)
        return freed

    async def _shrink(self) -> None:
        """Down to the limit (lowered, or DIR fuller than it), by eviction. Only once the walk
        has ended: before, `used` may overestimate, and the entries found so far would go for
        nothing."""
        assert self._walked
        async with self._room:
            while self.used > self.limit and not self._writes_off:
                if not await self._evict(self.used - self.limit):
                    break

    def _stop(self, what: str, why: str) -> None:
        """Stop writes (or reads) for good, with one log line."""
        if what == "writes" and not self._writes_off:
            self._writes_off = why
            self._roomy.set()  # nothing waits for room that will not come
            log.warning("disk cache %s: writing stopped (%s); memory only from now on",
                        self.root, why)
        elif what == "reads" and not self._reads_off:
            self._reads_off = why
            log.warning("disk cache %s: reading stopped (%s); memory only from now on",
                        self.root, why)

    # -- what earlier mounts left, and the filesystem's free space ---------------------------

    async def _walk(self) -> None:
        """Index DIR one directory at a time (trash first, deleting it), moving bytes from
        `unscanned` to the index; at the end, what is not indexed is not there."""
        t0 = time.monotonic()
        try:
            top = await trio.to_thread.run_sync(os.listdir, self.root,
                                                limiter=self._background)
        except OSError as e:
            log.warning("disk cache %s: cannot list it (%s): entries of earlier mounts are "
                        "read but never evicted", self.root, e)
            return
        # (path relative to DIR, depth under data/; TRASH: delete it; RMDIR: remove it now)
        stack: list[tuple[str, int]] = [("data", 0)]
        stack += [(n, TRASH) for n in top if n.startswith("trash.")]
        while stack:
            rel, depth = stack.pop()
            path = f"{self.root}/{rel}"
            if depth == RMDIR:
                freed = await trio.to_thread.run_sync(_rmdir, path, limiter=self._background)
                self._unscanned = max(0, self._unscanned - freed)
                continue
            try:
                ls = await trio.to_thread.run_sync(_list_dir, path, depth, limiter=self._background)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("disk cache %s: walk stopped at %s (%s): entries of earlier mounts "
                            "there are read but not evicted", self.root, rel, e)
                return
            self._unscanned = max(0, self._unscanned - ls.freed)
            self.counters["strays_removed"] += ls.strays
            if depth == TRASH:
                stack.append((rel, RMDIR))
                stack += [(f"{rel}/{d}", TRASH) for d in ls.dirs]
                continue
            for d in ls.dirs:
                sub = f"{rel}/{d}"
                if depth >= 3 or (depth == 2 and not _is_hh(d)):
                    stack.append((sub, TRASH))  # not ours: a stray
                    continue
                if sub not in self._dirs:
                    self._dirs.add(sub)
                    self._fixed += self._dircost
                    self._unscanned = max(0, self._unscanned - self._dircost)
                stack.append((sub, depth + 1))
            if depth == 3:
                await self._found(rel, ls.files)
            self._check()
            await trio.sleep(0)
        leftover, self._unscanned = self._unscanned, 0
        self._fs_limit -= leftover  # it was counted in `used` when the room was measured
        self._walked = True
        self._gone.clear()
        log.info("disk cache %s: %d entries, %d bytes in %.1fs", self.root, len(self._bytes),
                 self.used, time.monotonic() - t0)
        await self._shrink()
        async with self._room:
            if not self._writes_off:
                exact = self.used  # no more guesses: the bound can come down to it
                try:
                    await trio.to_thread.run_sync(self._write_state, exact,
                                                  limiter=self._writers)
                    self._persisted = exact
                except OSError as e:
                    self._stop("writes", f"saving the state: {e.strerror}")
        self._check()

    async def _found(self, hh_dir: str, files: list[tuple[str, int, int]]) -> None:
        bucket_dir = hh_dir.rsplit("/", 1)[0]
        for i, (fname, nbytes, mtime) in enumerate(files):
            name = int(fname, 16)
            if name in self._bytes or name in self._gone or name in self._busy:
                continue  # written or read in this mount (counted then), or removed since
            charge = nbytes + DIRENT
            self._index(name, bucket_dir, charge)
            self._unscanned = max(0, self._unscanned - charge)
            heapq.heappush(self._old, (mtime, name))
            if i % 1000 == 999:
                await trio.sleep(0)

    async def _watch_space(self) -> None:
        while True:
            await trio.sleep(self.cfg.refresh)
            before = self.used - self._reserved
            try:
                st = await trio.to_thread.run_sync(os.statvfs, self.root,
                                                   limiter=self._background)
            except OSError:
                continue
            # bytes removed meanwhile are free in `st` and gone from `after`; bytes written
            # meanwhile are in neither `before` nor free space: the smaller is safe
            ours = min(before, self.used - self._reserved)
            self._fs_limit = ours + self._fs_room(st)
            if self._walked and self.used > self.limit:
                await self._shrink()

    def stats(self) -> dict:
        return dict(self.counters, bytes=self.used, limit=self.limit, entries=len(self._bytes),
                    unscanned=self._unscanned, reserved=self._reserved, queued=self._queued,
                    pending=self._pending, walked=self._walked, disabled=self._writes_off or self._reads_off,
                    reads_disabled=self._reads_off)


TRASH = -1
RMDIR = -2


def _is_hh(name: str) -> bool:
    return len(name) == 2 and set(name) <= HEX


# -- in worker threads ---------------------------------------------------------------------------


def _read_entries(reqs: list[tuple[str, bytes, int, bool]], until_miss: bool) -> list[_Read]:
    out = []
    for req in reqs:
        got = _read_entry(*req)
        out.append(got)
        if until_miss and got.outcome != "hit":
            break
    return out


def _read_entry(path: str, identity: bytes, expected: int, stamp: bool) -> _Read:
    """Read and check an entry; remove it if bad. `stamp`: record its use in its mtime."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Read("absent")
    except OSError as e:
        return _Read("error", detail=str(e), err=e.errno or 0)
    try:
        got = _check_entry(fd, identity, expected)
        if got.outcome == "hit":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if stamp:
                try:
                    os.utime(fd)
                except OSError:
                    pass  # a read-only disk: the access time is not kept, nothing else
    except OSError as e:
        return _Read("error", detail=str(e), err=e.errno or 0)
    finally:
        os.close(fd)
    if got.outcome != "hit":
        try:
            os.unlink(path)
        except OSError:
            pass
    return got


def _check_entry(fd: int, identity: bytes, expected: int) -> _Read:
    st = os.fstat(fd)
    size = st.st_size
    head = os.pread(fd, size if size <= SMALL else PEEK, 0)
    if len(head) < _HEAD.size:
        return _Read("torn", detail=f"{size} bytes: shorter than a header")
    magic, fmt, idlen, dlen = _HEAD.unpack_from(head)
    if magic != MAGIC or fmt != FORMAT:
        return _Read("torn", detail="not an entry of this format")
    hlen = _HEAD.size + idlen + _SUM.size
    if size != hlen + dlen:
        return _Read("torn", detail=f"{size} bytes, its header says {hlen + dlen}")
    if len(head) < hlen:
        head = os.pread(fd, hlen, 0)
    if head[_HEAD.size:_HEAD.size + idlen] != identity:
        return _Read("identity", detail="it holds another object, version or part")
    if dlen != expected:
        return _Read("identity", detail=f"{dlen} bytes, {expected} expected")
    data = head[hlen:] if size <= SMALL else os.pread(fd, dlen, hlen)
    if len(data) != dlen:
        return _Read("torn", detail="shorter than its header says")
    h = xxhash.xxh3_64(memoryview(head)[:hlen - _SUM.size])
    h.update(data)
    if h.intdigest() != _SUM.unpack_from(head, hlen - _SUM.size)[0]:
        return _Read("checksum", detail="checksum mismatch")
    return _Read("hit", data, st.st_blocks * 512)


def _write_entries(reqs: list[tuple[str, str, bytes, Buffer | memoryview, int]],
                   later: _DropLater) -> tuple[list[bool], OSError | None]:
    """`_write_entry` of each, up to the first error, which ends the batch."""
    done = []
    for req in reqs:
        try:
            done.append(_write_entry(*req, later))
        except OSError as e:
            return done, e
    return done, None


def _write_entry(tmp: str, final: str, identity: bytes, data: Buffer | memoryview,
                 budget: int, later: _DropLater) -> bool:
    """Write an entry to `tmp` and rename it to `final`. False (nothing left) if it takes
    more than `budget` bytes on disk."""
    view = memoryview(data).cast("B")
    head = _HEAD.pack(MAGIC, FORMAT, len(identity), len(view)) + identity
    h = xxhash.xxh3_64(head)
    h.update(view)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(fd, [head + _SUM.pack(h.intdigest()), view])
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # starts writeback
        finally:
            os.close(fd)  # XFS trims speculative preallocation on close: measure after it
        if os.stat(tmp).st_blocks * 512 > budget:
            os.unlink(tmp)
            return False
        try:
            os.rename(tmp, final)
        except FileNotFoundError:  # its directory is new
            os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
            os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    later.add(final)
    return True


def _unlink_all(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _list_dir(path: str, depth: int) -> _Listing:
    """One directory of the walk: entries (at depth 3: data/C/B/HH), subdirectories; files
    of the trash and strays in data/ are removed."""
    ls = _Listing([], [])
    hh = os.path.basename(path)
    with os.scandir(path) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                ls.dirs.append(e.name)
                continue
            if (depth == 3 and stat.S_ISREG(st.st_mode) and len(e.name) == 16
                    and e.name.startswith(hh) and set(e.name) <= HEX):
                ls.files.append((e.name, st.st_blocks * 512, st.st_mtime_ns))
                continue
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                continue
            ls.freed += st.st_blocks * 512
            ls.strays += depth != TRASH
    return ls


def _rmdir(path: str) -> int:
    try:
        nbytes = os.lstat(path).st_blocks * 512
        os.rmdir(path)
    except OSError:
        return 0
    return nbytes


class _DropLater:
    """Files just written: their pages are dropped from the page cache again `lag` writes
    later, once written back (DONTNEED skips dirty pages; the first call started writeback)."""

    def __init__(self, lag: int) -> None:
        self._lag = lag
        self._paths: deque[str] = deque()
        self._lock = threading.Lock()  # writer threads share it

    def add(self, path: str) -> None:
        with self._lock:
            self._paths.append(path)
            due = self._paths.popleft() if len(self._paths) > self._lag else None
        if due is not None:
            _drop_pages(due)

    def flush(self) -> None:
        with self._lock:
            paths, self._paths = self._paths, deque()
        for p in paths:
            _drop_pages(p)


def _drop_pages(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # evicted meanwhile
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- the lock, the state, clearing ---------------------------------------------------------------


def _take_lock(root: Path) -> int:
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise DiskCacheError(
            f"disk cache {root} is in use by another aisbatchfs mount{pid}; two mounts cannot "
            f"share one: give each its own disk_cache=DIR") from None
    except BaseException:
        os.close(fd)
        raise
    _note_pid(fd)
    return fd


def _note_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _read_state(path: Path) -> tuple[int | None, int | None]:
    """(bound, format) from DIR/state; bound None if missing, damaged or of another format."""
    try:
        rec = path.read_bytes()
    except FileNotFoundError:
        return None, None
    if (len(rec) < _STATE.size + _SUM.size or rec[:8] != STATE_MAGIC
            or xxhash.xxh3_64_intdigest(rec[:_STATE.size])
            != _SUM.unpack_from(rec, _STATE.size)[0]):
        return None, None  # a later format keeps this record's first fields and checksum
    _, fmt, bound = _STATE.unpack_from(rec)
    return (bound if fmt == FORMAT else None), fmt


def clear(root: Path) -> None:
    """Empty a disk cache directory (`aisbatchfs cache clear [DIR]`): refused while a mount
    uses it, and on a directory that is not a disk cache."""
    root = Path(root)
    if not root.is_dir():
        return
    if not (root / "lock").exists() and not (root / "state").exists():
        raise DiskCacheError(f"{root} is not an aisbatchfs disk cache (no lock or state file "
                             f"in it): not touching it")
    try:
        fd = _take_lock(root)
    except OSError as e:
        raise DiskCacheError(f"disk cache {root}: {e.strerror or e}") from e
    try:
        for name in os.listdir(root):
            p = root / name
            if name in ("data", "tmp") or name.startswith("trash."):
                shutil.rmtree(p)
            elif name == "state":
                p.unlink()
    finally:
        os.close(fd)
