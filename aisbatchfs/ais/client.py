"""The AIStore client: buckets, listings, HEAD, GET (whole, ranged, archive member), GetBatch.

Plain `requests`, no SDK at run time. Every call has a total deadline (see transport.py), typed
errors (errors.py), and never returns bytes it has not checked: sizes against Content-Length
and the listing, and whole objects against their stored checksum where Python can compute it.
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aisbatchfs.ais.batch import Batch
from aisbatchfs.ais.checksum import verify
from aisbatchfs.ais.config import ClientConfig
from aisbatchfs.ais.errors import AisError, ObjectChanged, ObjectNotFound, ProtocolError
from aisbatchfs.ais.models import (
    LS_ARCH_DIR,
    LS_NO_RECURSION,
    ENTRY_IS_ARCHIVE,
    SNODE_DECOMM,
    SNODE_MAINT,
    ArchiveListing,
    ArchiveMember,
    BucketProps,
    BucketRef,
    ClusterMap,
    ObjectAttrs,
    ObjectEntry,
)
from aisbatchfs.ais.tarstream import TarFormatError, TarMember, TarStreamParser
from aisbatchfs.ais.transport import Stream, Transport

LIST_PROPS = "name,size,checksum,version"
HEAD_PROPS = "checksum,version,atime,last-modified"


@dataclass(frozen=True, slots=True)
class ListPage:
    entries: list[ObjectEntry]
    token: str  # "" on the last page
    uuid: str


class AisClient:
    """Thread-safe; one per cluster. Blocking: run it in worker threads from async code."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.transport = Transport(cfg)

    @classmethod
    def from_env(cls, endpoint: str | None = None, **overrides) -> AisClient:
        return cls(ClientConfig.from_env(endpoint, **overrides))

    def counters(self) -> dict[str, int]:
        """Requests made so far, by kind (calls_list, calls_get, calls_moss...) and in all."""
        return self.transport.counters()

    # -- the cluster -----------------------------------------------------------------------------

    def cluster_map(self, *, timeout: float | None = None) -> ClusterMap:
        """The cluster map's view of storage targets (from the proxy we talk to)."""
        t = self.transport
        with t.request("smap", "GET", t.url("daemon"), params={"what": "smap"},
                       timeout=timeout, what="cluster map") as s:
            doc = _json(s.read_all(), "cluster map")
        try:
            tmap = doc.get("tmap") or {}
            inactive = sum(1 for node in tmap.values()
                           if int(node.get("flags") or 0) & (SNODE_MAINT | SNODE_DECOMM))
            return ClusterMap(int(doc.get("version") or 0), len(tmap), len(tmap) - inactive,
                              str(doc.get("uuid") or ""))
        except (AttributeError, TypeError, ValueError):
            raise ProtocolError(f"bad cluster map {doc!r:.200}", what="cluster map") from None

    # -- buckets ---------------------------------------------------------------------------------

    def list_buckets(
        self, provider: str | None = "ais", *, timeout: float | None = None
    ) -> list[BucketRef]:
        """Buckets the cluster knows; provider=None lists every provider's."""
        t = self.transport
        params = {"provider": provider} if provider else {}
        with t.request(
            "list_buckets", "GET", t.url("buckets"), params=params,
            json_body={"action": "list", "name": "", "value": None}, timeout=timeout,
            what="list buckets",
        ) as s:
            doc = _json(s.read_all(), "list buckets")
        return [BucketRef.from_json(b) for b in doc or []]

    def bucket_props(self, bucket: BucketRef, *, timeout: float | None = None) -> BucketProps:
        t = self.transport
        what = f"HEAD {bucket}"
        with t.request("head_bucket", "HEAD", t.url("buckets", bucket.name),
                       params=bucket.params(), timeout=timeout, what=what) as s:
            raw = s.headers.get("Ais-Bucket-Props", "")
        try:
            props = json.loads(raw)
            return BucketProps(
                created_ns=int(props.get("created") or 0),
                checksum_type=(props.get("checksum") or {}).get("type", ""),
            )
        except (ValueError, TypeError, AttributeError):
            raise ProtocolError(f"bad Ais-Bucket-Props header {raw[:200]!r}", what=what) from None

    # -- listing ---------------------------------------------------------------------------------

    def list_page(
        self,
        bucket: BucketRef,
        prefix: str = "",
        *,
        recursive: bool = True,
        archives: bool = False,
        token: str = "",
        uuid: str = "",
        page_size: int = 0,
        props: str = LIST_PROPS,
        timeout: float | None = None,
    ) -> ListPage:
        """One page of a listing. Non-recursive listings return virtual directories too."""
        flags = (0 if recursive else LS_NO_RECURSION) | (LS_ARCH_DIR if archives else 0)
        value = {
            "prefix": prefix,
            "pagesize": page_size,
            "uuid": uuid,
            "props": props,
            "continuation_token": token,
            "flags": str(flags),  # a JSON string holding a decimal number, or 400
            "target": "",
        }
        t = self.transport
        what = f"list {bucket}/{prefix}"
        with t.request(
            "list", "GET", t.url("buckets", bucket.name), params=bucket.params(),
            json_body={"action": "list", "name": "", "value": value}, timeout=timeout, what=what,
        ) as s:
            doc = _json(s.read_all(), what)
        if not isinstance(doc, dict):
            raise ProtocolError(f"listing reply is not an object: {doc!r:.200}", what=what)
        entries = [ObjectEntry.from_json(e) for e in doc.get("entries") or []]
        return ListPage(entries, doc.get("continuation_token") or "", doc.get("uuid") or "")

    def list_objects(
        self,
        bucket: BucketRef,
        prefix: str = "",
        *,
        recursive: bool = True,
        archives: bool = False,
        page_size: int = 0,
        props: str = LIST_PROPS,
        timeout: float | None = None,
    ) -> Iterator[ObjectEntry]:
        """Every entry under `prefix`, page after page (continuation token and listing uuid).
        `timeout` is each page's deadline."""
        token = uuid = ""
        while True:
            page = self.list_page(
                bucket, prefix, recursive=recursive, archives=archives, token=token,
                uuid=uuid, page_size=page_size, props=props, timeout=timeout,
            )
            yield from page.entries
            if not page.token:
                return
            token, uuid = page.token, page.uuid

    def list_archive(
        self, bucket: BucketRef, obj: str, *, timeout: float | None = None
    ) -> ArchiveListing:
        """Members of an archive object, via the server's archive listing (never a download).

        Names are as the server lists them: path-cleaned (`./a` is listed as `a`). The prefix
        `obj` also matches `obj.bak` and its members, so only `obj/...` entries are kept. An
        object the server cannot open as an archive is listed alone, without the archive flag
        (and without members): that is reported as the listing's `problem`.
        """
        head = obj + "/"
        members, own = [], None
        for e in self.list_objects(bucket, obj, archives=True, props="name,size",
                                   timeout=timeout):
            if e.name == obj:
                own = e
            elif e.name.startswith(head) and e.in_archive:
                members.append(ArchiveMember(e.name[len(head):], e.size))
        if own is None:
            raise ObjectNotFound(f"{obj} does not exist", status=404,
                                 what=f"list {bucket}/{obj}")
        problem = ""
        if not own.flags & ENTRY_IS_ARCHIVE:
            problem = "AIStore cannot read it as an archive (corrupt, truncated, or not one)"
        return ArchiveListing(members, problem)

    # -- objects ---------------------------------------------------------------------------------

    def head(self, bucket: BucketRef, obj: str, *, timeout: float | None = None) -> ObjectAttrs:
        t = self.transport
        what = f"HEAD {bucket}/{obj}"
        params = dict(bucket.params(), props=HEAD_PROPS)
        with t.request("head", "HEAD", t.url("objects", bucket.name, obj), params=params,
                       timeout=timeout, what=what) as s:
            h = s.headers
        return ObjectAttrs(
            size=int(h.get("Content-Length") or 0),
            checksum_type=h.get("Ais-Checksum-Type", ""),
            checksum=h.get("Ais-Checksum-Value", ""),
            version=h.get("Ais-Version", ""),
            atime_ns=int(h.get("Ais-Atime") or 0),
            mtime=h.get("Last-Modified", ""),
            present=h.get("Ais-Present", "true") != "false",
        )

    def open(
        self,
        bucket: BucketRef,
        obj: str,
        *,
        start: int = 0,
        length: int | None = None,
        archpath: str | None = None,
        timeout: float | None = None,
    ) -> Stream:
        """Start a GET and return its reply as a Stream (for reads too large to hold at once).

        A byte range is `start` and `length` (None: to the end). Ranges inside an archive member
        are refused by the server (501); use a GetBatch item with start/length for that.
        """
        t = self.transport
        params = bucket.params()
        headers = {}
        if archpath is not None:
            if start or length is not None:
                raise ValueError("a byte range with archpath: use a GetBatch item instead")
            params["archpath"] = archpath
        ranged = bool(start) or length is not None
        if ranged:
            end = "" if length is None else str(start + length - 1)
            headers["Range"] = f"bytes={start}-{end}"
        kind = "get_member" if archpath is not None else ("get_range" if ranged else "get")
        what = f"GET {bucket}/{obj}" + (f" [{archpath}]" if archpath else "")
        return t.request(kind, "GET", t.url("objects", bucket.name, obj), pool="data",
                         params=params, headers=headers, ok=(206,) if ranged else (200,),
                         timeout=timeout, what=what)

    def get(
        self,
        bucket: BucketRef,
        obj: str,
        *,
        start: int = 0,
        length: int | None = None,
        archpath: str | None = None,
        expected_size: int | None = None,
        expected_version: str | None = None,
        expected_checksum: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Bytes of an object, a byte range of it, or one archive member, checked.

        Whole objects are checked against their stored checksum; every read against
        Content-Length and, when given, `expected_size` (of the whole object or member, as
        listed). `expected_version` and `expected_checksum` (the stored checksum the listing
        gave) raise ObjectChanged when the object was overwritten since it was listed, so a
        range of a new version is never mixed with bytes of an old one.
        """
        if length == 0:
            return b""  # the server answers 416 to any range of an empty object
        what = f"GET {bucket}/{obj}" + (f" [{archpath}]" if archpath else "")
        deadline = time.monotonic() + (self.cfg.deadlines.read if timeout is None else timeout)
        attempt = 0
        while True:  # a reply cut mid-body is asked again, as a failure before it would be
            try:
                with self.open(bucket, obj, start=start, length=length, archpath=archpath,
                               timeout=max(deadline - time.monotonic(), 0.001)) as s:
                    data = s.read_all()
                    h = s.headers
                break
            except AisError as e:
                pause = random.uniform(0.5, 1.0) * min(self.cfg.max_backoff,
                                                        self.cfg.backoff * 2 ** attempt)
                if not e.transient or time.monotonic() + pause >= deadline:
                    raise
                attempt += 1
                time.sleep(pause)
        declared = h.get("Content-Length")
        if declared is not None and int(declared) != len(data):
            raise ProtocolError(f"got {len(data)} bytes, Content-Length {declared}", what=what)
        version = h.get("Ais-Version")
        if expected_version and version and version != expected_version:
            raise ObjectChanged(f"version is {version}, listed as {expected_version}", what=what)
        stored = h.get("Ais-Checksum-Value")
        if expected_checksum and stored and archpath is None and stored != expected_checksum:
            raise ObjectChanged(f"checksum is {stored}, listed as {expected_checksum}", what=what)
        if expected_size is not None:
            whole = len(data)
            if start or length is not None:  # a range: Content-Range gives the object's size
                whole = int(h.get("Content-Range", "/-1").rsplit("/", 1)[1])
            if whole != expected_size:
                raise ObjectChanged(f"size is {whole}, listed as {expected_size}", what=what)
        if not start and length is None and archpath is None:
            verify(h.get("Ais-Checksum-Type", ""), h.get("Ais-Checksum-Value", ""), data, what)
        return data

    def get_member(
        self,
        bucket: BucketRef,
        obj: str,
        member: str,
        *,
        expected_size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """One archive member by the name the archive listing gives it.

        Listings clean `./a` to `a`, but `archpath` matches stored names exactly, and the server
        refuses an archpath with a `.` component (400). So when the plain name is not found, the
        member is asked for again with an anchored regular expression that also matches the
        `./`-prefixed spelling, and the one matching entry is taken from the small TAR reply.
        """
        try:
            return self.get(bucket, obj, archpath=member, expected_size=expected_size,
                            timeout=timeout)
        except ObjectNotFound:
            return self.get_dotted_member(bucket, obj, member, expected_size=expected_size,
                                          timeout=timeout)

    def get_member_range(
        self,
        bucket: BucketRef,
        obj: str,
        member: str,
        start: int,
        length: int,
        *,
        timeout: float | None = None,
    ) -> bytes:
        """Bytes [start, start+length) of an archive member: a one-item GetBatch, since the
        server refuses a Range header together with archpath (501)."""
        batch = Batch(self, bucket=bucket, continue_on_error=True, timeout=timeout)
        batch.add(obj, archpath=member, start=start, length=length)
        for out, data in batch.get():
            if out.missing:
                raise ObjectNotFound(f"{member} in {bucket}/{obj} does not exist",
                                     status=404, what=f"GetBatch {bucket}/{obj} [{member}]")
            return data
        raise ProtocolError("empty GetBatch reply", what=f"GetBatch {bucket}/{obj} [{member}]")

    def get_dotted_member(
        self,
        bucket: BucketRef,
        obj: str,
        member: str,
        *,
        expected_size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """A member stored as `./member` (or `member`), which `archpath` cannot name.

        Tar-family archives: an anchored `archregx` request. ZIP: aisnode v1.5.0 panics on any
        `archregx` over a .zip, so the archive is opened here over ranged GETs (its central
        directory, then the member's bytes) instead.
        """
        if obj.lower().endswith(".zip"):
            return self._zip_member(bucket, obj, member, expected_size, timeout)
        params = dict(bucket.params(), archregx=f"^(\\./)?{_go_regexp_escape(member)}$",
                      archmode="regexp")
        t = self.transport
        what = f"GET {bucket}/{obj} [{member}]"
        parser = TarStreamParser()
        found: list[TarMember] = []
        try:
            with t.request("get_member", "GET", t.url("objects", bucket.name, obj), pool="data",
                           params=params, timeout=timeout, what=what) as s:
                for chunk in s.chunks():
                    found.extend(parser.feed(chunk))
            parser.close()
        except TarFormatError as e:
            raise ProtocolError(f"bad archive in reply: {e}", what=what) from e
        exact = [m for m in found if m.name.removeprefix("./") == member]
        if len(exact) != 1:
            raise ObjectNotFound(f"{member} in {bucket}/{obj} does not exist", status=404,
                                 what=what)
        data = exact[0].data
        if expected_size is not None and len(data) != expected_size:
            raise ObjectChanged(f"member has {len(data)} bytes, listed as {expected_size}",
                                what=what)
        return data

    def _zip_member(self, bucket: BucketRef, obj: str, member: str,
                    expected_size: int | None, timeout: float | None) -> bytes:
        what = f"GET {bucket}/{obj} [{member}]"
        size = self.head(bucket, obj, timeout=timeout).size
        raw = _RangedObject(self, bucket, obj, size, timeout)
        try:
            with zipfile.ZipFile(io.BufferedReader(raw, buffer_size=1 << 20)) as zf:
                names = [n for n in zf.namelist() if n.removeprefix("./") == member]
                if len(names) != 1:
                    raise ObjectNotFound(f"{member} in {bucket}/{obj} does not exist",
                                         status=404, what=what)
                data = zf.read(names[0])
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ProtocolError(f"cannot read the archive: {e}", what=what) from e
        if expected_size is not None and len(data) != expected_size:
            raise ObjectChanged(f"member has {len(data)} bytes, listed as {expected_size}",
                                what=what)
        return data

    def batch(self, **options) -> Batch:
        """A GetBatch request to fill with `add(...)` and iterate; see aisbatchfs.ais.batch."""
        return Batch(self, **options)


class _RangedObject(io.RawIOBase):
    """A read-only, seekable file over an object, read with ranged GETs (for zipfile)."""

    def __init__(self, client: AisClient, bucket: BucketRef, obj: str, size: int,
                 timeout: float | None) -> None:
        self._client, self._bucket, self._obj = client, bucket, obj
        self._size, self._timeout, self._pos = size, timeout, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buf) -> int:  # noqa: ANN001 - a writable buffer
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._client.get(self._bucket, self._obj, start=self._pos, length=n,
                                timeout=self._timeout)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


_GO_RE_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def _go_regexp_escape(text: str) -> str:
    """Escape for Go's RE2 syntax (Python's re.escape escapes characters RE2 may refuse)."""
    return "".join("\\" + c if c in _GO_RE_SPECIAL else c for c in text)


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtocolError(f"reply is not JSON: {raw[:200]!r}", what=what) from None

