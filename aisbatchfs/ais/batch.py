"""GetBatch (`/v1/ml/moss`): many objects, archive members and byte ranges in one request.

    batch = client.batch(bucket=BucketRef("data"), continue_on_error=True)
    batch.add("a.txt").add("shard.tar", archpath="x/1.jpg").add("b.bin", bucket=other)
    for out, data in batch.get():
        ...   # request order; out.missing marks a `__404__` placeholder

Items come back strictly in request order, each the moment its last byte is in, while the
reply is still arriving: memory holds one item, never the whole reply. Nothing unchecked is
handed out. Members are matched by position and their names checked against the request;
sizes against what the caller listed; whole objects against their checksum. A streamed
reply that stops early (the server reports errors after the 200 by cutting the TAR) raises
BatchTruncated naming the first item that did not arrive. A reply with more missing items
than the cluster's `get_batch.max_soft_errs` is a whole-batch failure (BatchFailed), so the
caller can split and retry.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import lz4.frame

from aisbatchfs.ais.checksum import verify
from aisbatchfs.ais.errors import AisError, BatchTruncated, ProtocolError, RequestRejected
from aisbatchfs.ais.models import BucketRef
from aisbatchfs.ais.multipart import MultipartError, boundary_of, split_multipart
from aisbatchfs.ais.tarstream import (
    TarFormatError,
    TarHeader,
    TarMember,
    TarStreamParser,
    TarTruncatedError,
)
from aisbatchfs.ais.transport import Abort

if TYPE_CHECKING:
    from aisbatchfs.ais.client import AisClient

MISSING_PREFIX = "__404__/"
FORMATS = (".tar", ".tgz", ".tar.gz", ".zip", ".tar.lz4")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One thing to fetch: an object, a member of an archive object, or a byte range of either.

    `size` (what the listing said) and `checksum` ((type, value) of a whole object) are
    optional; when given, the reply is checked against them.
    """

    objname: str
    bucket: BucketRef | None = None  # None: the batch's default bucket
    archpath: str | None = None
    start: int = 0
    length: int | None = None  # None: whole; > 0: exactly that many bytes; -1: to the end
    opaque: bytes | None = None
    size: int | None = None
    checksum: tuple[str, str] | None = None

    def wire(self, default: BucketRef | None) -> dict:
        bck = self.bucket or default
        for name in (self.objname, self.archpath or ""):
            if any(c in (".", "..") for c in name.split("/")):
                raise RequestRejected(f"name {name!r} has a '.' or '..' component")
        if bck is None:
            raise ValueError(f"item {self.objname!r} names no bucket and the batch has none")
        d: dict = {"objname": self.objname, "bucket": bck.name, "provider": bck.provider}
        if self.archpath:
            d["archpath"] = self.archpath
        if self.opaque is not None:
            d["opaque"] = base64.b64encode(self.opaque).decode()  # Go []byte: standard base64
        if self.length is not None:
            d["start"] = self.start
            d["length"] = self.length
        return d

    def expected_size(self) -> int | None:
        if self.length is not None and self.length > 0:
            return self.length
        if self.size is None:
            return None
        if self.length == -1:
            return max(self.size - self.start, 0)
        return self.size


@dataclass(frozen=True, slots=True)
class BatchOut:
    """What came back for one item: `missing` marks a `__404__` placeholder (continue-on-error)."""

    index: int
    item: BatchItem
    missing: bool = False
    err_msg: str = ""


@dataclass
class Batch:
    """A GetBatch request: fill with `add`, then iterate `get()` for (BatchOut, bytes) pairs."""

    client: AisClient
    bucket: BucketRef | None = None
    output_format: str = ".tar"
    continue_on_error: bool = False
    streaming: bool = True
    only_obj_name: bool = False
    timeout: float | None = None
    first_byte_timeout: float | None = None  # fail unless the first item starts this soon
    retry_throttled: bool = True  # False: a 429 is the caller's to pace (it raises Throttled)
    items: list[BatchItem] = field(default_factory=list)
    _abort: Abort = field(default_factory=Abort, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.bucket, str):
            self.bucket = BucketRef(self.bucket)
        if self.output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {FORMATS}")

    def add(
        self,
        objname: str,
        *,
        bucket: BucketRef | str | None = None,
        archpath: str | None = None,
        start: int = 0,
        length: int | None = None,
        opaque: bytes | None = None,
        size: int | None = None,
        checksum: tuple[str, str] | None = None,
    ) -> Batch:
        if isinstance(bucket, str):
            bucket = BucketRef(bucket)
        if start and length is None:
            raise ValueError("a range needs a length (-1: to the end)")
        self.items.append(
            BatchItem(objname, bucket, archpath, start, length, opaque, size, checksum)
        )
        return self

    def extend(self, items: Iterable[BatchItem]) -> Batch:
        self.items.extend(items)
        return self

    def request_body(self) -> dict:
        return {
            "in": [it.wire(self.bucket) for it in self.items],
            "mime": self.output_format,
            "coer": self.continue_on_error,
            "onob": self.only_obj_name,
            "strm": self.streaming,
        }

    def __iter__(self) -> Iterator[tuple[BatchOut, bytes]]:
        return self.get()

    def abort(self) -> None:
        """From any thread: end the request now (its reader gets DeadlineExceeded)."""
        self._abort()

    def get(self) -> Iterator[tuple[BatchOut, bytes]]:
        """Send the request and yield each item as soon as it is complete and checked."""
        for group in self.get_groups():
            yield from group

    def get_groups(self) -> Iterator[list[tuple[BatchOut, bytes]]]:
        """Like get(), but the items completed by one network read come as one list: a
        consumer that hands items to another thread can do it once per read, not per item."""
        if not self.items:
            raise ValueError("empty batch")
        t = self.client.transport
        url = t.url("ml", "moss", self.bucket.name) if self.bucket else t.url("ml", "moss")
        params = self.bucket.params() if self.bucket else {}
        what = f"GetBatch of {len(self.items)} items"
        with t.request(
            "moss", "GET", url, pool="data", params=params, json_body=self.request_body(),
            timeout=self.timeout, first_byte_timeout=self.first_byte_timeout, what=what,
            abort=self._abort, retry_throttled=self.retry_throttled,
        ) as stream:
            matcher = _Matcher(self, what)
            if self.streaming:
                yield from matcher.run(stream.chunks(256 << 10))
            else:
                yield from matcher.run_multipart(
                    stream.chunks(256 << 10), boundary_of(stream.headers.get("Content-Type", ""))
                )


def _decompressor(fmt: str) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    if fmt in (".tgz", ".tar.gz"):
        z = zlib.decompressobj(wbits=31)
        return z.decompress, z.flush
    if fmt == ".tar.lz4":
        d = lz4.frame.LZ4FrameDecompressor()
        return d.decompress, lambda: b""
    return (lambda b: b), (lambda: b"")


class _Matcher:
    """Pairs reply members with request items by position and checks each one."""

    def __init__(self, batch: Batch, what: str) -> None:
        self.batch = batch
        self.items = batch.items
        self.what = what
        self.next_header = 0
        self.next_member = 0
        self.err_msgs: list[str] | None = None  # from multipart metadata

    def expected_name(self, item: BatchItem) -> str:
        base = item.objname
        if not self.batch.only_obj_name:
            base = f"{(item.bucket or self.batch.bucket).name}/{base}"
        if item.archpath:
            base = f"{base}/{item.archpath.lstrip('/')}"
        return base

    def classify(self, index: int, name: str) -> bool:
        """True if the member is a `__404__` placeholder for item `index`; raise if foreign."""
        item = self.items[index]
        expected = self.expected_name(item)
        if name == expected:
            return False
        if name.startswith(MISSING_PREFIX):
            rest = name[len(MISSING_PREFIX):]
            # the placeholder drops the archpath when the shard itself is missing
            if rest == expected or expected.startswith(rest + "/"):
                return True
        raise ProtocolError(
            f"reply member {index} is {name!r}, expected {expected!r}", what=self.what
        )

    def on_header(self, h: TarHeader) -> None:
        """Check a member before its data is read: the right item, and not bigger than asked."""
        i = self.next_header
        if i >= len(self.items):
            raise ProtocolError(f"more members than the {len(self.items)} requested", what=self.what)
        missing = self.classify(i, h.name)
        want = self.items[i].expected_size()
        if missing:
            if h.size:
                raise ProtocolError(f"placeholder {h.name!r} has {h.size} bytes", what=self.what)
        elif want is not None and h.size != want:
            raise ProtocolError(
                f"item {i} ({h.name}) has {h.size} bytes, expected {want}", what=self.what
            )
        self.next_header += 1

    def finish(self, m: TarMember) -> tuple[BatchOut, bytes]:
        i = self.next_member
        item = self.items[i]
        self.next_member += 1
        missing = m.name.startswith(MISSING_PREFIX) and m.name != self.expected_name(item)
        err = self.err_msgs[i] if self.err_msgs else ""
        if err and not missing:
            raise ProtocolError(f"item {i} has data and an error: {err}", what=self.what)
        if missing and not self.batch.continue_on_error:
            # a peer target sends placeholders even in strict mode (multi-target clusters)
            raise BatchTruncated(
                f"item {i} ({self.expected_name(item)}) is missing and the batch is strict",
                first_missing=i,
                what=self.what,
            )
        if missing:
            return BatchOut(i, item, True, err or "missing"), b""
        if item.checksum and item.archpath is None and item.length is None:
            verify(item.checksum[0], item.checksum[1], m.data, f"{self.what}: {m.name}")
        return BatchOut(i, item), m.data

    def _group(self, members: list[TarMember]) -> Iterator[list[tuple[BatchOut, bytes]]]:
        """The members one read completed, checked, as one group. When one fails its check,
        those before it are still handed out first: an error's `first_missing` then names
        the first item the caller did not get."""
        out = []
        for m in members:
            try:
                out.append(self.finish(m))
            except AisError:
                if out:
                    yield out
                raise
        if out:
            yield out

    def run(self, chunks: Iterable[bytes]) -> Iterator[list[tuple[BatchOut, bytes]]]:
        fmt = self.batch.output_format
        if fmt == ".zip":
            yield list(self._run_zip(b"".join(chunks)))
            return
        decompress, flush = _decompressor(fmt)
        parser = TarStreamParser(on_header=self.on_header)
        try:
            for chunk in chunks:
                yield from self._group(parser.feed(decompress(chunk)))
            yield from self._group(parser.feed(flush()))
            parser.close()
        except TarTruncatedError as e:
            self._truncated()  # raises unless every item arrived before the cut
            raise ProtocolError(f"reply ends inside a TAR entry after its last item: {e}",
                                what=self.what) from e
        except (TarFormatError, zlib.error, RuntimeError) as e:  # lz4 raises RuntimeError
            raise ProtocolError(f"bad archive in reply: {e}", what=self.what) from e
        self._truncated()

    def _truncated(self) -> None:
        n = self.next_member
        if n >= len(self.items):
            return
        item = self.items[n]
        raise BatchTruncated(
            f"reply ended after {n} of {len(self.items)} items; item {n} "
            f"({self.expected_name(item)}) and the rest did not arrive (a missing item in "
            "strict mode, more missing items than get_batch.max_soft_errs, or a server fault)",
            first_missing=n,
            what=self.what,
        )

    def _run_zip(self, body: bytes) -> Iterator[tuple[BatchOut, bytes]]:
        """ZIP keeps its directory at the end, so a .zip reply is read whole before parsing."""
        try:
            zf = zipfile.ZipFile(io.BytesIO(body))
        except zipfile.BadZipFile:
            if self.next_member < len(self.items) and body:
                self._truncated()
            raise ProtocolError("reply is not a readable ZIP", what=self.what) from None
        for info in zf.infolist():
            if info.is_dir():
                continue
            self.on_header(TarHeader(info.filename, info.file_size, 0, 0o644))
            yield self.finish(TarMember(info.filename, info.file_size, 0, 0o644, zf.read(info)))
        self._truncated()

    def run_multipart(
        self, chunks: Iterable[bytes], boundary: str
    ) -> Iterator[list[tuple[BatchOut, bytes]]]:
        parts = self._parts(chunks, boundary)
        meta = bytearray()
        archive_first: bytes | None = None
        for name, piece in parts:
            if name == "metadata":
                meta += piece
                continue
            archive_first = piece
            break
        try:  # JSON of another shape: TypeError or AttributeError; nested too deep: RecursionError
            outs = json.loads(meta)["out"]
            err_msgs = [o.get("err_msg") or "" for o in outs]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise ProtocolError(f"bad multipart metadata: {bytes(meta[:200])!r}",
                                what=self.what) from None
        if len(outs) != len(self.items):
            raise ProtocolError(
                f"metadata lists {len(outs)} items, requested {len(self.items)}", what=self.what
            )
        self.err_msgs = err_msgs

        def archive() -> Iterator[bytes]:
            if archive_first is not None:
                yield archive_first
            for name, piece in parts:
                if name == "archive":
                    yield piece

        yield from self.run(archive())

    def _parts(self, chunks: Iterable[bytes], boundary: str) -> Iterator[tuple[str, bytes]]:
        """The reply's parts; a body the splitter cannot read (cut, no boundary) is a bad
        reply, like a bad TAR."""
        try:
            yield from split_multipart(chunks, boundary)
        except MultipartError as e:
            raise ProtocolError(f"bad multipart reply: {e}", what=self.what) from e
