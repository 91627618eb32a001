"""Plain data the client returns: buckets, listing entries, object attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

# listing entry flags (api/apc/lsmsg.go)
ENTRY_IS_CACHED = 64
ENTRY_IN_ARCH = 128
ENTRY_IS_DIR = 256
ENTRY_IS_ARCHIVE = 512

# cluster map node flags (meta/smap.go): a target in maintenance or leaving serves nothing
SNODE_MAINT = 1 << 2
SNODE_DECOMM = 1 << 3

# listing request flags
LS_ARCH_DIR = 8
LS_NO_RECURSION = 2048

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip", ".tar.lz4")


def is_archive_name(name: str) -> bool:
    """AIStore detects archives by extension only (cmn/archive/mime.go)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class BucketRef:
    """A bucket as the API names it: name, provider and namespace (`@uuid#name` on the wire)."""

    name: str
    provider: str = "ais"
    namespace: str = ""

    def params(self) -> dict[str, str]:
        p = {"provider": self.provider}
        if self.namespace:
            p["namespace"] = self.namespace
        return p

    def __str__(self) -> str:
        scheme = {"aws": "s3", "gcp": "gs", "azure": "az", "oci": "oc"}.get(
            self.provider, self.provider
        )
        return f"{scheme}://{self.namespace + '/' if self.namespace else ''}{self.name}"

    @classmethod
    def from_json(cls, doc: dict) -> BucketRef:
        ns = doc.get("namespace") or {}
        uuid, nsname = ns.get("uuid", ""), ns.get("name", "")
        namespace = f"@{uuid}#{nsname}" if uuid else (f"#{nsname}" if nsname else "")
        return cls(doc["name"], doc.get("provider") or "ais", namespace)


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One listing entry. Directories (non-recursive listings) have `is_dir` and no trailing '/'."""

    name: str
    size: int = 0
    checksum: str = ""  # value only; the type is the bucket's (xxhash2 by default)
    version: str = ""
    flags: int = 0

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & ENTRY_IS_DIR)

    @property
    def in_archive(self) -> bool:
        return bool(self.flags & ENTRY_IN_ARCH)

    @classmethod
    def from_json(cls, doc: dict) -> ObjectEntry:
        flags = int(doc.get("flags") or 0)
        name = doc["name"]
        if flags & ENTRY_IS_DIR:
            name = name.rstrip("/")
        return cls(
            name=name,
            size=int(doc.get("size") or 0),  # a JSON string, absent for empty objects
            checksum=doc.get("checksum") or "",
            version=doc.get("version") or "",
            flags=flags,
        )


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """A file inside an archive object. `name` is relative to the archive, as listed (cleaned).
    `link`: a symbolic link's target (known only where the client indexed the archive)."""

    name: str
    size: int
    link: str = ""


@dataclass(frozen=True, slots=True)
class ArchiveListing:
    """An archive object's members as the server lists them; `problem` says why it could
    not read the object as an archive (corrupt, truncated, not an archive at all): then
    there are no members, and that is not the same as an empty archive."""

    members: list[ArchiveMember]
    problem: str = ""
    escaped: int = 0  # entries whose names climb out of the archive, left out


@dataclass(frozen=True, slots=True)
class BucketProps:
    """The parts of a bucket's properties the filesystem uses."""

    created_ns: int  # creation time: a modification time that never moves
    checksum_type: str  # of every object in it (listings give only the value)


@dataclass(frozen=True, slots=True)
class ObjectAttrs:
    """What HEAD (or a whole-object GET) says about an object."""

    size: int
    checksum_type: str = ""
    checksum: str = ""
    version: str = ""
    atime_ns: int = 0  # access time: moves on every GET, never a modification time
    mtime: str = ""  # Last-Modified as the server sent it (HEAD v2), when known
    present: bool = True


@dataclass(frozen=True, slots=True)
class Item:
    """One readable thing, as the filesystem knows it: an object, or a member of an archive
    object, with the identity every read of it is checked against. Hashable: it is the key
    of cached bytes, so a new version (size, version or checksum) is a new key.

    For a member, `version` and `checksum` are the archive object's (AIStore lists members
    with a name and a size only): a new version of the archive makes new member keys.
    """

    bucket: BucketRef
    obj: str
    member: str = ""  # path inside the archive object; "" for the object itself
    size: int = 0
    version: str = ""
    checksum: str = ""  # the object's stored checksum value ("" when unknown)
    # its type is the bucket's; not part of the identity (it may become known later)
    checksum_type: str = field(default="", compare=False)
    # an item is a dict key at every layer of a read (hashed ~30 times per file): hash once
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.bucket, self.obj, self.member, self.size,
                                                self.version, self.checksum)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        # a string's hash differs between processes: a copy hashes again where it lands
        return (Item, (self.bucket, self.obj, self.member, self.size, self.version,
                       self.checksum, self.checksum_type))

    @property
    def is_member(self) -> bool:
        return bool(self.member)

    def __str__(self) -> str:
        return f"{self.bucket}/{self.obj}" + (f"/{self.member}" if self.member else "")


@dataclass(frozen=True, slots=True)
class ClusterMap:
    """What the cluster map (Smap) says about storage targets: whether a listing can be
    complete right now."""

    version: int
    targets: int  # targets in the map
    active: int  # of those, neither in maintenance nor being decommissioned
    uuid: str = ""  # the cluster's: what a disk cache entry's identity starts with

    @property
    def degraded(self) -> bool:
        return self.active < self.targets or self.targets == 0
