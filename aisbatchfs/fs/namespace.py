"""The superblock: what each name stands for, inode numbers, listings with TTLs, negative cache.

Rules of the tree (README, "Namespace"):
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

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum

import trio
import xxhash

from aisbatchfs.ais import AisError, BucketRef, ObjectNotFound
from aisbatchfs.ais.api import AisApi
from aisbatchfs.ais.models import ArchiveMember, Item, ObjectEntry, is_archive_name

log = logging.getLogger(__name__)

ROOT_INO = 1
CONTROL_DIR_INO = 2
STATS_INO = 3
PREFETCH_INO = 4
CONTROL_DIR = ".aisbatchfs"
_RESERVED = 16  # inode numbers below this are fixed ones
NAME_MAX = 255
PROBES_BEFORE_LISTING = 3  # lookups in a directory not listed yet, before listing it


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
    page_ident: Item | None = None  # what the kernel's page cache holds of this file

    @property
    def kind(self) -> Kind:
        return self.entry.kind


@dataclass(frozen=True, slots=True)
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
    ) -> None:
        self.ais = ais
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
        stats = Entry("stats", Kind.CONTROL_FILE, path="stats")
        prefetch = Entry("prefetch", Kind.CONTROL_FILE, path="prefetch")
        for ino, e in ((CONTROL_DIR_INO, control), (STATS_INO, stats), (PREFETCH_INO, prefetch)):
            self.nodes[ino] = Node(ino, e, lookups=1)
            self.by_key[e.key] = ino
        self.control_listing = Listing((prefetch, stats), {"stats": stats, "prefetch": prefetch},
                                       float("inf"))
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
        if bucket in self.bucket_created_ns or self._props_retry.get(bucket, 0) > time.monotonic():
            return
        try:
            props = await self.ais.bucket_props(bucket)
        except AisError as e:
            log.debug("properties of %s: %s", bucket, e)
            self._props_retry[bucket] = time.monotonic() + self.negative_ttl
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
        node = Node(ino, entry)
        self.nodes[ino] = node
        self.by_key[key] = ino
        return node

    def _ino_for(self, key: tuple) -> int:
        raw = repr(key).encode("utf-8", "surrogateescape")
        probe = 0
        while True:
            h = xxhash.xxh64_intdigest(raw, seed=probe) & 0x7FFF_FFFF_FFFF_FFFF
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
            del self.by_key[node.entry.key]

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(self, parent: Node, name: str) -> Node | None:
        """The child `name` of `parent` with a new lookup reference, or None if there is none."""
        if parent.kind is Kind.CONTROL_DIR:
            entry = self.control_listing.by_name.get(name)
            return self.remember(entry) if entry else None
        if parent.ino == ROOT_INO and name == CONTROL_DIR:
            return self.remember(self.nodes[CONTROL_DIR_INO].entry)
        if not self._nameable(name):
            return None
        neg_key = (parent.ino, name)
        expiry = self._negative.get(neg_key)
        if expiry is not None:
            if expiry > time.monotonic():
                self.counters["negative_hits"] += 1
                return None
            del self._negative[neg_key]
        listing = self._fresh_listing(parent.entry)
        if listing is None and parent.kind is Kind.DIR:
            # a directory looked up name by name (a shuffled file list, no readdir): a few
            # probes, then one listing serves all its names
            probes = self._probes.get(parent.entry.key, 0)
            if probes < PROBES_BEFORE_LISTING:
                self._probes[parent.entry.key] = probes + 1
                if len(self._probes) > 100_000:
                    self._probes.clear()
                entry = await self._probe(parent.entry, name)
                if entry is None:
                    self._remember_missing(neg_key)
                    return None
                return self.remember(entry)
        listing = listing or await self.listing(parent.entry)
        entry = listing.by_name.get(name)
        if entry is None:
            self._remember_missing(neg_key)
            return None
        return self.remember(entry)

    def _remember_missing(self, key: tuple[int, str]) -> None:
        if len(self._negative) > 100_000:
            now = time.monotonic()
            self._negative = {k: v for k, v in self._negative.items() if v > now}
            if len(self._negative) > 100_000:
                self._negative.clear()
        self._negative[key] = time.monotonic() + self.negative_ttl

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
        """Every member of the archive that holds `member`, as entries (from the cached
        archive listing; empty if it is not cached)."""
        cached = self._archives.get((member.bucket, member.path))
        if cached is None:
            return []
        return [Entry(m.name.rpartition("/")[2], Kind.MEMBER, member.bucket, member.path,
                      m.name, size=m.size, version=member.version, checksum=member.checksum)
                for m in cached[0]]

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
        if listing.expires <= time.monotonic():
            return None
        self._listings.move_to_end(key)
        return listing

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
            done = self._loading[key] = trio.Event()
            try:
                listing = await self._load(entry)
                self._store(key, listing)
                return listing
            finally:
                del self._loading[key]
                done.set()

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
            if ino is not None and self.nodes[ino].entry != e:
                self.nodes[ino].entry = e

    def invalidate(self, entry: Entry) -> None:
        """Forget a directory's listing, e.g. after a read found an object changed."""
        old = self._listings.pop(entry.key, None)
        if old is not None:
            self._listed_entries -= len(old.entries)

    async def _load(self, entry: Entry) -> Listing:
        self.counters["listings"] += 1
        if entry.kind is Kind.ROOT:
            children = await self._list_buckets()
        elif entry.kind is Kind.PROVIDER:
            children = [e for e in await self._list_buckets(grouped=False)
                        if _group_name(e.bucket) == entry.name]
        elif entry.kind is Kind.DIR:
            children = await self._list_prefix(entry)
        else:  # ARCHIVE, MEMBER_DIR
            children = await self._list_archive_dir(entry)
        by_name: dict[str, Entry] = {}
        for child in children:
            self._add(by_name, child, entry)
        ordered = tuple(sorted(by_name.values(), key=lambda e: e.name.encode("utf-8", "surrogateescape")))
        return Listing(ordered, by_name, time.monotonic() + self.ttl)

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
        self._shadowed(loser, f"a {winner.kind.name.lower()} of the same name")

    def _shadowed(self, loser: Entry, by: str) -> None:
        self.counters["shadowed_names"] += 1
        if loser.key not in self._logged_shadows and len(self._logged_shadows) < 100_000:
            self._logged_shadows.add(loser.key)
            where = f"{loser.bucket}/{loser.path}" if loser.bucket else loser.name
            log.warning("%s (%s) is hidden by %s", where, loser.kind.name.lower(), by)

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

    async def _list_archive_dir(self, entry: Entry) -> list[Entry]:
        bucket = entry.bucket
        assert bucket is not None
        key = (bucket, entry.path)
        cached = self._archives.get(key)
        if cached is None or cached[1] <= time.monotonic():
            members = await self.ais.list_archive(bucket, entry.path)
            self._archives[key] = cached = (members, time.monotonic() + self.ttl)
            while len(self._archives) > 1024:
                self._archives.popitem(last=False)
        self._archives.move_to_end(key)
        return list(_members_under(entry, cached[0]))


def _members_under(d: Entry, members: list[ArchiveMember]):
    """The entries of an archive directory (the archive itself or a directory inside it):
    members and subdirectories, carrying the archive's version and checksum, so that a new
    version of the archive makes new cache keys for its members."""
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
        else:
            yield Entry(rest, Kind.MEMBER, bucket, archive, m.name, size=m.size, **ident)


def _group_name(b: BucketRef | None) -> str:
    """'' for a plain ais bucket; else the top-level directory its provider/namespace gets."""
    if b is None or (b.provider == "ais" and not b.namespace):
        return ""
    return f"@{b.provider}{b.namespace}"


def _rank(e: Entry) -> int:
    """Who keeps a contested name: real directories, then objects, then derived names."""
    if e.kind is Kind.DIR:
        return 3
    if e.kind in (Kind.FILE, Kind.MEMBER, Kind.MEMBER_DIR):
        return 2
    if e.kind is Kind.ARCHIVE and e.name == e.path.rsplit("/", 1)[-1]:
        return 2  # archives=dir: the archive under its own name
    return 1
