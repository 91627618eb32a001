"""Reading a (compressed) TAR shard whole, in one GET, and extracting members on this side;
and indexing an archive's headers, and reading a member's bytes by where they lie in it.

A GetBatch of many members of one .tgz or .tar.lz4 makes the server decompress the shard from
its start for each member; one GET of the shard decompresses it once. The filesystem does this
for small compressed shards that a reader walks (fs/reader.py decides when).

Checks: the reply's version and stored checksum are compared with what the listing said
before any byte is used; the raw bytes are hashed as they arrive and the members are handed
out only once the whole object matched its stored checksum (when Python can compute its
type), so a shard that changed, was cut short or was corrupted in flight yields an error,
never a wrong member. Members nobody wants are skipped unbuffered: a 200 MiB member beside
the 6-byte one a reader asked for costs decompression time, not memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import lz4.frame

from aisbatchfs.ais.archindex import ArchiveIndex
from aisbatchfs.ais.checksum import check_digest, incremental
from aisbatchfs.ais.errors import ObjectChanged, ProtocolError
from aisbatchfs.ais.models import BucketRef
from aisbatchfs.ais.tarstream import TarFormatError, TarHeader, TarMember, TarStreamParser

if TYPE_CHECKING:
    from aisbatchfs.ais.client import AisClient

STREAMABLE = (".tar", ".tgz", ".tar.gz", ".tar.lz4")


class Inflater:
    """Undo the shard's compression chunk by chunk; `finish()` raises if the compressed
    stream itself ended early (a cut that TAR framing alone might not show)."""

    def __init__(self, name: str) -> None:
        low = name.lower()
        self._gzip = self._lz4 = None
        if low.endswith((".tgz", ".tar.gz")):
            self._gzip = zlib.decompressobj(wbits=31)
        elif low.endswith(".tar.lz4"):
            self._lz4 = lz4.frame.LZ4FrameDecompressor()
        elif not low.endswith(".tar"):
            raise ValueError(f"{name}: not a TAR shard")

    def feed(self, chunk: bytes) -> bytes:
        if self._gzip is not None:
            return self._gzip.decompress(chunk)
        if self._lz4 is not None:
            return self._lz4.decompress(chunk)
        return chunk

    def finish(self) -> bytes:
        if self._gzip is not None:
            rest = self._gzip.flush()
            if not self._gzip.eof:
                raise ProtocolError("the gzip stream ends early")
            return rest
        if self._lz4 is not None and not self._lz4.eof:
            raise ProtocolError("the lz4 frame ends early")
        return b""


def read_shard(
    client: AisClient,
    bucket: BucketRef,
    obj: str,
    want: Callable[[str, int], bool],
    *,
    expected_version: str = "",
    expected_checksum: str = "",
    checksum_type: str = "",
    timeout: float | None = None,
) -> list[tuple[str, bytes]]:
    """The wanted regular-file members of the shard as (name, bytes), names as the archive
    listing gives them (a leading './' dropped). A name stored twice yields both, in order:
    the last one is what tar extraction leaves."""
    what = f"GET {bucket}/{obj} (whole shard)"
    inflater = Inflater(obj)
    hasher = incremental(checksum_type) if expected_checksum else None

    def on_header(h: TarHeader) -> bool:
        return want(h.name.removeprefix("./"), h.size)

    parser = TarStreamParser(on_header=on_header)
    members: list[TarMember] = []
    nbytes = 0
    try:
        with client.open(bucket, obj, timeout=timeout) as s:
            version = s.headers.get("Ais-Version", "")
            if expected_version and version and version != expected_version:
                raise ObjectChanged(f"version is {version}, listed as {expected_version}",
                                    what=what)
            stored = s.headers.get("Ais-Checksum-Value", "")
            if expected_checksum and stored and stored != expected_checksum:
                raise ObjectChanged(f"checksum is {stored}, listed as {expected_checksum}",
                                    what=what)
            for chunk in s.chunks():
                nbytes += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                members.extend(parser.feed(inflater.feed(chunk)))
        members.extend(parser.feed(inflater.finish()))
        parser.close()
    except (TarFormatError, zlib.error, RuntimeError, EOFError) as e:  # lz4: RuntimeError
        raise ProtocolError(f"bad archive: {e}", what=what) from e
    if hasher is not None:
        check_digest(checksum_type, expected_checksum, hasher.hexdigest(), nbytes, what)
    return [(m.name.removeprefix("./"), m.data) for m in members]


# an archive is indexed (streamed through once) up to this size; past it, reads keep the
# server's semantics (first of duplicates, links as 0 bytes) and say so in the log
INDEX_MAX = 1 << 30


def index_archive(client: AisClient, bucket: BucketRef, obj: str, *, timeout: float | None = None,
                  ) -> ArchiveIndex:
    """Read the archive's TAR headers (streaming it through, keeping nothing else)."""
    what = f"GET {bucket}/{obj} (its TAR headers)"
    inflater = Inflater(obj)
    try:
        with client.open(bucket, obj, timeout=timeout) as s:
            index = ArchiveIndex(s.headers.get("Ais-Version", ""))
            parser = TarStreamParser(on_header=lambda h: False, on_entry=index.add)
            size = int(s.headers.get("Content-Length") or 0)
            if size > INDEX_MAX:
                raise ProtocolError(f"{size} bytes: too large to index (over {INDEX_MAX})",
                                    what=what)
            for chunk in s.chunks():
                parser.feed(inflater.feed(chunk))
        parser.feed(inflater.finish())
        parser.close()
    except (TarFormatError, zlib.error, RuntimeError, EOFError) as e:
        raise ProtocolError(f"bad archive: {e}", what=what) from e
    return index


def read_archive_range(client: AisClient, bucket: BucketRef, obj: str, offset: int, size: int,
                       *, expected_version: str = "", timeout: float | None = None) -> bytes:
    """Bytes [offset, offset+size) of the archive's uncompressed TAR stream: a ranged GET of
    a plain .tar; for a compressed one, inflating from the start up to them."""
    what = f"GET {bucket}/{obj} [{offset}:{offset + size}]"
    if size == 0:
        return b""
    if obj.lower().endswith(".tar"):
        return client.get(bucket, obj, start=offset, length=size,
                          expected_version=expected_version or None, timeout=timeout)
    inflater = Inflater(obj)
    out = bytearray()
    at = 0  # uncompressed bytes passed so far
    try:
        with client.open(bucket, obj, timeout=timeout) as s:
            version = s.headers.get("Ais-Version", "")
            if expected_version and version and version != expected_version:
                raise ObjectChanged(f"version is {version}, listed as {expected_version}",
                                    what=what)
            for chunk in s.chunks():
                data = inflater.feed(chunk)
                lo, hi = max(offset - at, 0), min(offset + size - at, len(data))
                if lo < hi:
                    out += data[lo:hi]
                at += len(data)
                if len(out) == size:
                    return bytes(out)
    except (zlib.error, RuntimeError, EOFError) as e:
        raise ProtocolError(f"bad archive: {e}", what=what) from e
    raise ProtocolError(f"the archive ends before byte {offset + size}", what=what)
