"""The superblock: what each name stands for, inode numbers, listings with TTLs, negative cache.

Rules of the tree (docs/tree.md):
- Directories come from '/' in object names, read with non-recursive (paged) listings.
- The whole cluster: one directory per plain `ais://` bucket; buckets of other providers or in a
  namespace live under `@<provider>[<namespace>]/` (e.g. `@s3/data`, `@ais#ns1/data`). Bucket
  names cannot contain '@', so the two never collide.
- A name that is both an object and a prefix (`x` and `x/...`) is the directory; the object is
  shadowed, counted and logged once. The same for an archive's member directory (`archives=dir`)
  beside a real prefix of the same name: the real prefix wins.
- Names the kernel cannot take are skipped and counted: an empty component (`a//b`, `/a`; AIStore
  itself stores `a//b` as `a/b`, so these come only from other backends), `.`, `..`, or a
  component over 255 bytes (AIStore lists such names flattened at the top of a non-recursive
  listing). `.aisbatchfs` at the mount root is the control directory.
- Inode numbers are a hash of what the name stands for, so a name keeps its number after the
  kernel forgets it and across remounts, and no number is ever given to another name within a
  mount (a hash collision with a live node takes the next free number in a fixed probe order).
- A node lives while the kernel holds a lookup reference (lookups minus forgets) or a handle is
  open; then it is dropped. Listings live in an LRU bounded by entry count.
- A lookup in a directory not listed yet asks about that one name (a one-entry listing of
  `name/` and a HEAD of `name`); after a few such lookups the directory is listed once instead.
"""

from __future__ import annotations

import itertools
import logging
import posixpath
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TypeVar

import trio
import xxhash

from aisbatchfs.ais import AisError, BucketRef, ObjectNotFound, Unavailable
from aisbatchfs.ais.api import AisApi
from aisbatchfs.ais.models import ArchiveMember, Item, ObjectEntry, is_archive_name
from aisbatchfs.fs.clustermap import ClusterWatch
from aisbatchfs.logs import RateLimited

log = logging.getLogger(__name__)
limited = RateLimited(log)

ROOT_INO = 1
CONTROL_DIR_INO = 2
CONTROL_DIR = ".aisbatchfs"
_RESERVED = 16  # inode numbers below this are fixed ones
EPHEMERAL_BASE = 1 << 62  # inode numbers from here on are ephemeral (stats snapshots)
NAME_MAX = 255
PROBES_BEFORE_LISTING = 3  # lookups in a directory not listed yet, before listing it
FAILURE_MEMORY = 1.0  # seconds a failed request about a directory is repeated, not retried
# a listing with fewer than this share of the last one's entries is confirmed before it is
# believed: with two targets, one missing takes about half of them
SHRINK = 0.9
T = TypeVar("T")


class Kind(IntEnum):
    ROOT = 1  # the whole cluster: buckets
    PROVIDER = 2  # @s3, @ais#ns: buckets of one provider/namespace
    DIR = 3  # a bucket, or a prefix inside one
    FILE = 4  # an object
    ARCHIVE = 5  # an archive object seen as a directory of its members
    MEMBER_DIR = 6  # a directory inside an archive
    MEMBER = 7  # a file inside an archive
    CONTROL_DIR = 8
    CONTROL_FILE = 9
    MEMBER_LINK = 10  # a symbolic link inside an archive, pointing inside it


DIR_KINDS = frozenset({Kind.ROOT, Kind.PROVIDER, Kind.DIR, Kind.ARCHIVE, Kind.MEMBER_DIR,
                       Kind.CONTROL_DIR})


@dataclass(frozen=True, slots=True)
class Entry:
    """What a name in a directory stands for, as listed."""

    name: str
    kind: Kind
    bucket: BucketRef | None = None
    path: str = ""  # object name (FILE, ARCHIVE, MEMBER*) or prefix without '/' (DIR)
    member: str = ""  # path inside the archive (MEMBER, MEMBER_DIR)
    size: int = 0
    checksum: str = ""
    version: str = ""
    link: str = ""  # MEMBER_LINK: the target, relative to the link's directory

    @property
    def is_dir(self) -> bool:
        return self.kind in DIR_KINDS

    @property
    def key(self) -> tuple:
        """Identity: what the inode number is derived from (the name in the parent is not)."""
        b = self.bucket
        bkey = (b.provider, b.namespace, b.name) if b else ()
        return (int(self.kind), bkey, self.path, self.member)


@dataclass(slots=True)
class Node:
    ino: int
    entry: Entry
    lookups: int = 0
    opens: int = 0
    page_ident: Item | None = None  # the version the kernel has attributes and pages of
    next_ident: Item | None = None  # the version it is being switched to (pagecache.py)
    fresh_until: float = 0.0  # the entry was confirmed by a listing or HEAD until then

    @property
    def kind(self) -> Kind:
        return self.entry.kind


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakly held by dentries.py
class Listing:
    """A directory's children at one moment: sorted, de-duplicated, immutable."""

    entries: tuple[Entry, ...]
    by_name: dict[str, Entry]
    expires: float


class Namespace:
    def __init__(
        self,
        ais: AisApi,
        *,
        bucket: BucketRef | None = None,
        prefix: str = "",
        archives: str = "dir",
        archive_suffix: str = ".d",
        ttl: float = 60.0,
        negative_ttl: float = 10.0,
        metadata_timeout: float = 10.0,
        max_listed_entries: int = 1_000_000,
        cluster: ClusterWatch | None = None,
    ) -> None:
        self.ais = ais
        self.cluster = cluster or ClusterWatch(ais)
        self.archives = archives
        self.archive_suffix = archive_suffix
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = metadata_timeout
        self.max_listed_entries = max_listed_entries
        self.counters: Counter[str] = Counter()
        if bucket is None:
            root = Entry("", Kind.ROOT)
        else:
            root = Entry("", Kind.DIR, bucket, prefix.strip("/"))
        self.nodes: dict[int, Node] = {ROOT_INO: Node(ROOT_INO, root, lookups=1)}
        self.by_key: dict[tuple, int] = {root.key: ROOT_INO}
        control = Entry(CONTROL_DIR, Kind.CONTROL_DIR, path=CONTROL_DIR)
        self.nodes[CONTROL_DIR_INO] = Node(CONTROL_DIR_INO, control, lookups=1)
        self.by_key[control.key] = CONTROL_DIR_INO
        stats = Entry("stats", Kind.CONTROL_FILE, path="stats")  # a snapshot per lookup
        self.control_listing = Listing((stats,), {"stats": stats}, float("inf"))
        self._listings: OrderedDict[tuple, Listing] = OrderedDict()
        self._listed_entries = 0
        self._loading: dict[tuple, trio.Event] = {}
        # member lists of archives, so each directory inside one costs no further request
        self._archives: OrderedDict[tuple, tuple[list[ArchiveMember], float]] = OrderedDict()
        self._negative: dict[tuple[int, str], float] = {}
        self._probes: dict[tuple, int] = {}  # lookups probed per directory since its last listing
        self._logged_shadows: set[tuple] = set()
        self.bucket_created_ns: dict[BucketRef, int] = {}  # st_mtime of everything in a bucket
        self.checksum_types: dict[BucketRef, str] = {}
        self._props_retry: dict[BucketRef, float] = {}  # after a failure, not before this
        self._ephemeral = itertools.count(EPHEMERAL_BASE)
        self.archive_problems: dict[tuple, str] = {}  # why an archive lists no members
        self._failures: dict[tuple, tuple[float, AisError]] = {}  # by directory key

    # -- what the read path sees ----------------------------------------------------------------

    def item(self, e: Entry) -> Item:
        """What reading `e` fetches and checks: the object or member with its identity."""
        assert e.bucket is not None and e.kind in (Kind.FILE, Kind.MEMBER), e
        return Item(e.bucket, e.path, e.member if e.kind is Kind.MEMBER else "", e.size,
                    e.version, e.checksum, self.checksum_types.get(e.bucket, ""))

    def archive_item(self, member: Entry) -> Item:
        """The archive object holding a member (its size is not known here; reading it whole
        is checked by version and stored checksum)."""
        assert member.bucket is not None and member.kind is Kind.MEMBER, member
        return Item(member.bucket, member.path, "", 0, member.version, member.checksum,
                    self.checksum_types.get(member.bucket, ""))

    def node_of(self, item: Item) -> Node | None:
        """The live node reading `item` goes through, if the kernel knows one."""
        b = item.bucket
        kind = Kind.MEMBER if item.member else Kind.FILE
        ino = self.by_key.get((int(kind), (b.provider, b.namespace, b.name), item.obj, item.member))
        return self.nodes.get(ino) if ino is not None else None

    async def load_bucket_props(self, bucket: BucketRef) -> None:
        """Creation time (every entry's times) and checksum type of a bucket, once; a failure
        leaves them unknown until the next try (times are cosmetic, checksums optional)."""
        if bucket in self.bucket_created_ns or self._props_retry.get(bucket, 0) > trio.current_time():
            return
        try:
            props = await self.ais.bucket_props(bucket)
        except AisError as e:
            log.debug("properties of %s: %s", bucket, e)
            self._props_retry[bucket] = trio.current_time() + self.negative_ttl
            return
        self.bucket_created_ns[bucket] = props.created_ns
        self.checksum_types[bucket] = props.checksum_type

    # -- nodes -----------------------------------------------------------------------------------

    def get(self, ino: int) -> Node:
        """The node for an inode the kernel knows; KeyError if it is not one."""
        return self.nodes[ino]

    def remember(self, entry: Entry) -> Node:
        """The node for `entry` (made if new), with one more kernel lookup reference."""
        node = self.node_for(entry)
        node.lookups += 1
        return node

    def drop_if_unused(self, node: Node) -> None:
        """For a node made by `node_for` that the kernel did not take after all."""
        self._maybe_drop(node)

    def node_for(self, entry: Entry) -> Node:
        """The node for `entry`, made if new, without a lookup reference (see remember)."""
        key = entry.key
        ino = self.by_key.get(key)
        if ino is not None:
            node = self.nodes[ino]
            if node.entry != entry:
                node.entry = entry  # same object, newer listing (size, version...)
            return node
        ino = self._ino_for(key)
        node = Node(ino, entry, fresh_until=trio.current_time() + self.ttl)
        self.nodes[ino] = node
        self.by_key[key] = ino
        return node

    def _ino_for(self, key: tuple) -> int:
        raw = repr(key).encode("utf-8", "surrogateescape")
        probe = 0
        while True:
            h = xxhash.xxh64_intdigest(raw, seed=probe) & (EPHEMERAL_BASE - 1)
            if h >= _RESERVED and h not in self.nodes:
                return h
            probe += 1
            self.counters["inode_hash_collisions"] += 1

    def forget(self, ino: int, nlookup: int) -> None:
        node = self.nodes.get(ino)
        if node is None or ino < _RESERVED:
            return
        node.lookups = max(node.lookups - nlookup, 0)
        self._maybe_drop(node)

    def opened(self, node: Node) -> None:
        node.opens += 1

    def closed(self, node: Node) -> None:
        node.opens -= 1
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if node.lookups == 0 and node.opens == 0 and node.ino >= _RESERVED:
            del self.nodes[node.ino]
            if self.by_key.get(node.entry.key) == node.ino:  # ephemeral nodes have no key
                del self.by_key[node.entry.key]

    def ephemeral(self, entry: Entry) -> Node:
        """A node of its own for content made at lookup (a stats snapshot): each lookup of
        the name gets a new inode, so a reader sees one snapshot whole while the next reader
        gets a newer one. It lives while the kernel holds it."""
        while True:
            ino = next(self._ephemeral)
            if ino not in self.nodes:
                break
        node = self.nodes[ino] = Node(ino, entry, lookups=1)
        return node

    async def refresh(self, node: Node) -> None:
        """Bring an object's entry up to date once its confirmation has expired (an attribute
        refresh after metadata_ttl): a new size, version or checksum shows up here. The
        directory's listing is loaded again if it was listed (one load serves every file in
        it); a file looked up alone is asked about alone (HEAD)."""
        e = node.entry
        if e.kind not in (Kind.FILE, Kind.ARCHIVE) or e.bucket is None:
            return
        if trio.current_time() < node.fresh_until:
            return
        parent_path = e.path.rpartition("/")[0]
        parent = Entry(parent_path.rpartition("/")[2], Kind.DIR, e.bucket, parent_path)
        if parent.key in self._listings:
            await self.listing(parent)  # updates every live node it lists
            node.fresh_until = max(node.fresh_until, trio.current_time() + self.ttl)
            return
        attrs = await self.ais.head(e.bucket, e.path)
        rel = e.path.rpartition("/")[2]
        obj = ObjectEntry(e.path, attrs.size, attrs.checksum, attrs.version)
        for new in self._object_entries(e.bucket, rel, obj):
            if new.key == e.key:
                node.entry = replace(new, name=e.name)
        node.fresh_until = trio.current_time() + self.ttl

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(self, parent: Node, name: str) -> Node | None:
        """The child `name` of `parent` with a new lookup reference, or None if there is none."""
        if parent.kind is Kind.CONTROL_DIR:
            entry = self.control_listing.by_name.get(name)
            return self.ephemeral(entry) if entry else None
        if parent.ino == ROOT_INO and name == CONTROL_DIR:
            return self.remember(self.nodes[CONTROL_DIR_INO].entry)
        if not self._nameable(name):
            return None
        neg_key = (parent.ino, name)
        expiry = self._negative.get(neg_key)
        if expiry is not None:
            if expiry > trio.current_time():
                self.counters["negative_hits"] += 1
                return None
            del self._negative[neg_key]
        listing = self._fresh_listing(parent.entry)
        if listing is None and parent.kind is Kind.DIR and parent.entry.key not in self._listings:
            # a directory looked up name by name (a shuffled file list, no readdir): a few
            # probes, then one listing serves all its names
            probes = self._probes.get(parent.entry.key, 0)
            if probes < PROBES_BEFORE_LISTING:
                self._probes[parent.entry.key] = probes + 1
                if len(self._probes) > 100_000:
                    self._probes.clear()
                self._failing(parent.entry.key)
                entry = await self._remembering(parent.entry.key, self._probe(parent.entry, name))
                if entry is None:
                    await self._missing(neg_key, parent.entry, name)
                    return None
                return self.remember(entry)
        listing = listing or await self.listing(parent.entry)
        entry = listing.by_name.get(name)
        if entry is None:
            await self._missing(neg_key, parent.entry, name)
            return None
        return self.remember(entry)

    async def _missing(self, key: tuple[int, str], parent: Entry, name: str) -> None:
        """A name the cluster says is not there. While its map lacks storage targets, that may
        be false (their objects are missing from listings and HEAD says 404): then it is an
        error, not a missing name, and nothing is remembered."""
        degraded = await self.cluster.degraded(fresh=True)
        if degraded is not None:
            where = f"{parent.bucket}/{parent.path}/{name}" if parent.bucket else name
            raise Unavailable(f"not found while the cluster map {degraded}", what=where)
        self._remember_missing(key)

    def _remember_missing(self, key: tuple[int, str]) -> None:
        if len(self._negative) > 100_000:
            now = trio.current_time()
            self._negative = {k: v for k, v in self._negative.items() if v > now}
            if len(self._negative) > 100_000:
                self._negative.clear()
        self._negative[key] = trio.current_time() + self.negative_ttl

    async def _probe(self, parent: Entry, name: str) -> Entry | None:
        """Look up one name in a directory not listed yet: is it a prefix, an object, both?

        Two requests at once (a one-entry listing of `name/` and a HEAD of `name`) instead of
        listing a directory that may hold millions of objects. Same rules as a listing.
        """
        bucket = parent.bucket
        assert bucket is not None
        path = f"{parent.path}/{name}" if parent.path else name
        self.counters["lookup_probes"] += 1
        found: dict[str, object] = {}

        async def is_dir() -> None:
            page = await self.ais.list_page(bucket, path + "/", recursive=False, page_size=1,
                                            props="name")
            found["dir"] = bool(page.entries)

        async def head(obj: str) -> None:
            try:
                found["attrs"] = await self.ais.head(bucket, obj)
            except ObjectNotFound:
                found["attrs"] = None

        base = name
        if self.archives == "both" and name.endswith(self.archive_suffix):
            base = name[: -len(self.archive_suffix)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(is_dir)
            nursery.start_soon(head, f"{parent.path}/{base}" if parent.path else base)
        if found["dir"]:
            return Entry(name, Kind.DIR, bucket, path)
        attrs = found["attrs"]
        if attrs is None:
            return None
        obj = ObjectEntry(f"{parent.path}/{base}" if parent.path else base, attrs.size,
                          attrs.checksum, attrs.version)
        for entry in self._object_entries(bucket, base, obj):
            if entry.name == name:
                return entry
        return None

    # -- listings --------------------------------------------------------------------------------

    def parent_listing(self, entry: Entry) -> tuple[tuple, Listing] | None:
        """The cached listing of the directory that holds `entry` (fresh or not), if any."""
        b = entry.bucket
        if b is None:
            return None
        bkey = (b.provider, b.namespace, b.name)
        if entry.kind is Kind.MEMBER:
            parent, _, _ = entry.member.rpartition("/")
            key = ((int(Kind.MEMBER_DIR), bkey, entry.path, parent) if parent
                   else (int(Kind.ARCHIVE), bkey, entry.path, ""))
        else:
            key = (int(Kind.DIR), bkey, entry.path.rpartition("/")[0], "")
        listing = self._listings.get(key)
        return (key, listing) if listing is not None else None

    def archive_members(self, member: Entry) -> list[Entry]:
        """Every file member of the archive that holds `member`, as entries (from the cached
        archive listing; empty if it is not cached)."""
        cached = self._archives.get((member.bucket, member.path))
        if cached is None:
            return []
        return [Entry(m.name.rpartition("/")[2], Kind.MEMBER, member.bucket, member.path,
                      m.name, size=m.size, version=member.version, checksum=member.checksum)
                for m in cached[0] if not m.link]

    async def resolve(self, path: str) -> Entry | None:
        """The entry at `path` (relative to the mount root), listing each directory on the way
        once; no kernel reference is taken (for hints)."""
        entry = self.nodes[ROOT_INO].entry
        for name in (p for p in path.split("/") if p):
            if not entry.is_dir or entry.kind is Kind.CONTROL_DIR:
                return None
            entry = (await self.listing(entry)).by_name.get(name)
            if entry is None:
                return None
        return entry

    def _fresh_listing(self, entry: Entry) -> Listing | None:
        key = entry.key
        listing = self._listings.get(key)
        if listing is None:
            return None
        if listing.expires <= trio.current_time():
            return None
        self._listings.move_to_end(key)
        return listing

    def listed(self, entry: Entry) -> Listing | None:
        """The directory's listing if one is loaded and fresh (never loads one)."""
        return self._fresh_listing(entry)

    def mount_path(self, entry: Entry) -> str | None:
        """Where a bucket or prefix directory is, relative to the mount's root ('' for the
        root); None for other kinds."""
        if entry.kind is not Kind.DIR or entry.bucket is None:
            return None
        root = self.nodes[ROOT_INO].entry
        if root.kind is Kind.DIR:  # a bucket (or a prefix in one) is mounted
            prefix = root.path
            if entry.bucket != root.bucket or not (
                    entry.path == prefix or not prefix or entry.path.startswith(prefix + "/")):
                return None
            return entry.path[len(prefix):].lstrip("/")
        b = entry.bucket
        return "/".join(p for p in (_group_name(b), b.name, entry.path) if p)

    async def list_dir(self, node: Node) -> Listing:
        return await self.listing(node.entry)

    async def listing(self, entry: Entry) -> Listing:
        """The directory's children, from the cache while fresh; one load at a time per dir."""
        if entry.kind is Kind.CONTROL_DIR:
            return self.control_listing
        while True:
            listing = self._fresh_listing(entry)
            if listing is not None:
                return listing
            key = entry.key
            pending = self._loading.get(key)
            if pending is not None:
                await pending.wait()
                continue
            self._failing(key)
            done = self._loading[key] = trio.Event()
            try:
                listing = await self._remembering(key, self._load(entry))
                self._store(key, listing)
                return listing
            finally:
                del self._loading[key]
                done.set()

    async def _remembering(self, key: tuple, call: Awaitable[T]) -> T:
        """Await a request about a directory; if it fails, the next ones about that directory
        fail at once for FAILURE_MEMORY seconds. Without it a stalled cluster would cost every
        waiting lookup a whole deadline, one after another (the kernel sends the lookups of
        one directory one at a time)."""
        try:
            return await call
        except AisError as e:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures[key] = (trio.current_time(), e)
            raise

    def _failing(self, key: tuple) -> None:
        failed = self._failures.get(key)
        if failed is None:
            return
        when, error = failed
        if trio.current_time() - when < FAILURE_MEMORY:
            self.counters["failures_repeated"] += 1
            raise error
        del self._failures[key]

    def _store(self, key: tuple, listing: Listing) -> None:
        self._probes.pop(key, None)
        old = self._listings.pop(key, None)
        if old is not None:
            self._listed_entries -= len(old.entries)
        self._listings[key] = listing
        self._listed_entries += len(listing.entries)
        while self._listed_entries > self.max_listed_entries and len(self._listings) > 1:
            _, dropped = self._listings.popitem(last=False)
            self._listed_entries -= len(dropped.entries)
        for e in listing.entries:  # live nodes see the newest size and version
            ino = self.by_key.get(e.key)
            if ino is not None:
                node = self.nodes[ino]
                node.fresh_until = listing.expires
                if node.entry != e:
                    node.entry = e

    def invalidate(self, entry: Entry) -> None:
        """Forget a directory's listing, e.g. after a read found an object changed."""
        old = self._listings.pop(entry.key, None)
        if old is not None:
            self._listed_entries -= len(old.entries)

    async def _load(self, entry: Entry) -> Listing:
        if entry.kind in (Kind.ROOT, Kind.PROVIDER):
            return self._listing_of(entry, await self._children(entry), self.ttl)
        return await self._trusted_load(entry)

    async def _children(self, entry: Entry) -> list[Entry]:
        self.counters["listings"] += 1
        if entry.kind is Kind.ROOT:
            return await self._list_buckets()
        if entry.kind is Kind.PROVIDER:
            return [e for e in await self._list_buckets(grouped=False)
                    if _group_name(e.bucket) == entry.name]
        if entry.kind is Kind.DIR:
            return await self._list_prefix(entry)
        return await self._list_archive_dir(entry)  # ARCHIVE, MEMBER_DIR

    def _listing_of(self, entry: Entry, children: list[Entry], ttl: float) -> Listing:
        by_name: dict[str, Entry] = {}
        for child in children:
            self._add(by_name, child, entry)
        ordered = tuple(sorted(by_name.values(),
                               key=lambda e: e.name.encode("utf-8", "surrogateescape")))
        return Listing(ordered, by_name, trio.current_time() + ttl)

    async def _trusted_load(self, entry: Entry) -> Listing:
        """A directory's listing, not trusted as is when it may be a false picture.

        While a storage target is out of the cluster map (paused, restarting, rejoining),
        AIStore answers listings with 200 and only what the other targets hold: nothing at
        all with one target. A listing that is empty where the last one was not, or lost more
        than a tenth of it, or comes while the cluster map misses targets, is asked
        again (backing off) within `metadata_timeout`. It is trusted once a second one agrees
        and the map is whole (objects really deleted); if it is still in doubt at the deadline,
        the previous listing (if any) is kept, else the doubtful one is served, either way for
        `negative_ttl` only, counted and logged."""
        previous = self._listings.get(entry.key)
        deadline = trio.current_time() + self.timeout
        children = await self._children(entry)
        degraded = await self.cluster.degraded()
        why = _doubt(previous, children, degraded)
        if why is None:
            return self._listing_of(entry, children, self.ttl)
        self.counters["doubtful_listings"] += 1
        pause = 0.1
        while trio.current_time() + pause < deadline:
            await trio.sleep(pause)
            pause = min(pause * 2, 2.0)
            again = await self._children(entry)
            degraded = await self.cluster.degraded()
            why = _doubt(previous, again, degraded)
            confirmed = not degraded and _names(again) == _names(children)
            if why is None or confirmed:
                return self._listing_of(entry, again, self.ttl)
            children = again
        where = f"{entry.bucket}/{entry.path}" if entry.bucket else entry.name
        self.counters["doubtful_listings_served"] += 1
        if previous is not None:
            limited.log(logging.WARNING, "listing", "listing of %s: %s, still after %gs; "
                        "keeping the previous listing (%d entries) for %gs", where, why,
                        self.timeout, len(previous.entries), self.negative_ttl)
            return Listing(previous.entries, previous.by_name,
                           trio.current_time() + self.negative_ttl)
        limited.log(logging.WARNING, "listing", "listing of %s: %s, still after %gs; serving "
                    "its %d entries for %gs only", where, why, self.timeout, len(children),
                    self.negative_ttl)
        return self._listing_of(entry, children, self.negative_ttl)

    def _add(self, by_name: dict[str, Entry], child: Entry, parent: Entry) -> None:
        if not self._nameable(child.name):
            self.counters["skipped_bad_names"] += 1
            if len(child.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
                self.counters["skipped_long_names"] += 1
            else:
                self.counters["skipped_empty_components"] += 1
            return
        if parent.key == self.nodes[ROOT_INO].entry.key:
            if child.name == CONTROL_DIR:
                self._shadowed(child, "the control directory")
                return
        have = by_name.get(child.name)
        if have is None:
            by_name[child.name] = child
            return
        winner, loser = (have, child) if _rank(have) >= _rank(child) else (child, have)
        by_name[child.name] = winner
        self._shadowed(loser, winner)

    def _shadowed(self, loser: Entry, by: Entry | str) -> None:
        self.counters["shadowed_names"] += 1
        if loser.key not in self._logged_shadows and len(self._logged_shadows) < 100_000:
            self._logged_shadows.add(loser.key)
            if isinstance(by, Entry):
                by = f"the {_describe(by)} of the same name"
            log.warning("the %s is hidden by %s", _describe(loser), by)

    @staticmethod
    def _nameable(name: str) -> bool:
        return (bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name
                and len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX)

    async def _list_buckets(self, grouped: bool = True) -> list[Entry]:
        buckets = await self.ais.list_buckets(None)
        out = []
        groups = set()
        for b in buckets:
            group = _group_name(b)
            if group and grouped:
                groups.add(group)
            else:
                out.append(Entry(b.name, Kind.DIR, b, ""))
        out += [Entry(g, Kind.PROVIDER) for g in sorted(groups)]
        return out

    async def _list_prefix(self, entry: Entry) -> list[Entry]:
        bucket = entry.bucket
        assert bucket is not None
        prefix = entry.path + "/" if entry.path else ""
        out: list[Entry] = []
        token = uuid = ""
        while True:
            page = await self.ais.list_page(bucket, prefix, recursive=False, token=token,
                                            uuid=uuid)
            for obj in page.entries:
                rel = obj.name[len(prefix):]
                if not obj.name.startswith(prefix) or not rel:
                    self.counters["skipped_empty_components"] += 1
                    continue
                if "/" in rel:
                    # AIStore keeps names with a component over 255 bytes aside and lists them,
                    # flattened, at the top of a non-recursive listing and nowhere below
                    parts = rel.split("/")
                    kind = ("skipped_long_names" if any(len(p.encode("utf-8", "surrogateescape"))
                                                        > NAME_MAX for p in parts)
                            else "skipped_empty_components")
                    self.counters[kind] += 1
                    continue
                if obj.is_dir:
                    out.append(Entry(rel, Kind.DIR, bucket, obj.name))
                else:
                    out.extend(self._object_entries(bucket, rel, obj))
            if not page.token:
                return out
            token, uuid = page.token, page.uuid

    def _object_entries(self, bucket: BucketRef, rel: str, obj: ObjectEntry) -> Iterable[Entry]:
        """An object as it appears in its directory: a file, an archive directory, or both."""
        file = Entry(rel, Kind.FILE, bucket, obj.name, size=obj.size, checksum=obj.checksum,
                     version=obj.version)
        if self.archives == "file" or not is_archive_name(rel):
            return (file,)
        archive = replace(file, kind=Kind.ARCHIVE)
        if self.archives == "dir":
            return (archive,)
        return (file, replace(archive, name=rel + self.archive_suffix))

    def _archive_children(self, entry: Entry, members: list[ArchiveMember]) -> list[Entry]:
        out = []
        for child in _members_under(entry, members):
            if child.kind is Kind.MEMBER_LINK and not child.link:
                self.counters["hidden_links"] += 1  # it would lead out of the archive
                continue
            out.append(child)
        return out

    async def _list_archive_dir(self, entry: Entry) -> list[Entry]:
        bucket = entry.bucket
        assert bucket is not None
        key = (bucket, entry.path)
        cached = self._archives.get(key)
        if cached is None or cached[1] <= trio.current_time():
            listed = await self.ais.list_archive(bucket, entry.path)
            self._archives[key] = cached = (listed.members, trio.current_time() + self.ttl)
            while len(self._archives) > 1024:
                self._archives.popitem(last=False)
            self._archive_problem(entry, listed.problem)
            if listed.escaped:
                self.counters["escaping_members"] += listed.escaped
                log.warning("%s/%s: %d of its entries climb out of it (names with '..'): left "
                            "out", bucket, entry.path, listed.escaped)
        self._archives.move_to_end(key)
        return self._archive_children(entry, cached[0])

    def _archive_problem(self, archive: Entry, problem: str) -> None:
        """An archive the server cannot read lists as an empty directory (an error there
        would make find and rsync fail for the whole tree): one log line, a counter, and
        the reason in the directory's user.ais.error xattr."""
        key = (archive.bucket, archive.path, archive.version)
        if not problem:
            self.archive_problems.pop(key, None)
            return
        if key not in self.archive_problems:
            self.counters["unreadable_archives"] += 1
            log.warning("%s/%s: %s; it shows as an empty directory", archive.bucket,
                        archive.path, problem)
        self.archive_problems[key] = problem
        while len(self.archive_problems) > 10_000:
            self.archive_problems.pop(next(iter(self.archive_problems)))

    def archive_problem(self, archive: Entry) -> str:
        return self.archive_problems.get((archive.bucket, archive.path, archive.version), "")


def _describe(e: Entry) -> str:
    """An entry for a log line, e.g. 'member file ais://b/x.tar/sub'."""
    where = f"{e.bucket}/{e.path}" + (f"/{e.member}" if e.member else "") if e.bucket else e.name
    what = {Kind.FILE: "object", Kind.DIR: "directory", Kind.ARCHIVE: "archive",
            Kind.MEMBER: "member file", Kind.MEMBER_DIR: "member directory"}.get(e.kind, "entry")
    return f"{what} {where}"


def _names(children: list[Entry]) -> set[str]:
    return {e.name for e in children}


def _doubt(previous: Listing | None, children: list[Entry], degraded: str | None) -> str | None:
    """Why a fresh listing may be a false picture, or None."""
    before = len(previous.entries) if previous is not None else 0
    if degraded is not None and (previous is None or len(children) < before):
        return f"the cluster map {degraded}"
    if before and not children:
        return f"empty, where the last listing had {before} entries"
    if before >= 8 and len(children) < before * SHRINK:
        return f"{len(children)} entries, where the last listing had {before}"
    return None


def _members_under(d: Entry, members: list[ArchiveMember]):
    """The entries of an archive directory (the archive itself or a directory inside it):
    members and subdirectories, carrying the archive's version and checksum, so that a new
    version of the archive makes new cache keys for its members. A symbolic link shows as one
    only if its target stays inside the archive; the caller counts the others."""
    bucket, archive, under = d.bucket, d.path, d.member
    ident = {"version": d.version, "checksum": d.checksum}
    head = under + "/" if under else ""
    dirs: set[str] = set()
    for m in members:
        if not m.name.startswith(head):
            continue
        rest = m.name[len(head):]
        first, slash, _ = rest.partition("/")
        if slash:
            if first not in dirs:
                dirs.add(first)
                yield Entry(first, Kind.MEMBER_DIR, bucket, archive, head + first, **ident)
        elif m.link:
            if _link_inside(m.name, m.link):
                yield Entry(rest, Kind.MEMBER_LINK, bucket, archive, m.name, size=len(m.link),
                            link=m.link, **ident)
            else:
                yield Entry(rest, Kind.MEMBER_LINK, bucket, archive, m.name, **ident)  # hidden
        else:
            yield Entry(rest, Kind.MEMBER, bucket, archive, m.name, size=m.size, **ident)


def _link_inside(member: str, target: str) -> bool:
    """Does a symlink stored at `member` point inside its archive?"""
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    return resolved != ".." and not resolved.startswith("../") and resolved != "."


def _group_name(b: BucketRef | None) -> str:
    """'' for a plain ais bucket; else the top-level directory its provider/namespace gets."""
    if b is None or (b.provider == "ais" and not b.namespace):
        return ""
    return f"@{b.provider}{b.namespace}"


def _rank(e: Entry) -> int:
    """Who keeps a contested name: real directories, then objects, then derived names."""
    if e.kind in (Kind.DIR, Kind.MEMBER_DIR):
        return 3  # a directory keeps its name: it holds more than the file that loses it
    if e.kind in (Kind.FILE, Kind.MEMBER, Kind.MEMBER_LINK):
        return 2
    if e.kind is Kind.ARCHIVE and e.name == e.path.rsplit("/", 1)[-1]:
        return 2  # archives=dir: the archive under its own name
    return 1
