"""Incremental (push) TAR parser for GetBatch replies.

GetBatch streams a TAR whose length is unknown up front and which the server may cut short at
any byte when something fails after the 200. So the parser is fed chunks as they arrive, hands
out each member the moment its last byte is in, and on `close()` says whether the stream ended
cleanly. It understands what AIStore's writer (Go archive/tar) emits: USTAR and PAX headers
(`path`, `size` records), GNU long names ('L'), and base-256 sizes; other entry types are
skipped. Only regular files become members.

A caller that knows how big a member should be passes `on_header`, which sees each header
before any of its data is buffered and may raise to abort: that is how a member larger than its
reservation is refused without being read into memory. Returning False skips the member: its
data is passed over, never buffered (a shard streamed for a few of its members).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")  # '7' is contiguous file, read as regular
_PAX_LOCAL = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
_MAX_META = 1 << 20  # PAX records or a GNU long name larger than this are not sane
_ZERO_BLOCK = bytes(BLOCK)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarFormatError(ValueError):
    """The bytes are not a well-formed TAR stream (bad header checksum, bad size field...)."""


class TarTruncatedError(TarFormatError):
    """The stream ended inside a header or a member's data."""


@dataclass(frozen=True, slots=True)
class TarHeader:
    name: str
    size: int
    mtime: int
    mode: int


@dataclass(frozen=True, slots=True)
class TarEntry:
    """Any entry's header (regular file, link, directory...), with where its data starts in
    the (uncompressed) stream: enough to index an archive without keeping its data."""

    name: str
    kind: bytes  # the type flag: b"0" file, b"1" hard link, b"2" symlink, b"5" directory...
    size: int
    offset: int
    linkname: str = ""


@dataclass(frozen=True, slots=True)
class TarMember:
    name: str
    size: int
    mtime: int
    mode: int
    data: bytes


def _octal_or_base256(field: bytes) -> int:
    """Numeric header field: NUL/space-terminated octal, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise TarFormatError("negative base-256 number in TAR header")
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad octal field {bytes(field)!r} in TAR header") from None


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _check_header(block: bytes) -> None:
    stored = _octal_or_base256(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise TarFormatError("TAR header checksum mismatch (stream corrupt or not a TAR)")


def _parse_pax(data: bytes) -> dict[str, str]:
    """PAX extended header records: '<len> <key>=<value>\\n', len counting the whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarFormatError("bad PAX record length") from None
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("bad PAX record length")
        record = data[sp + 1 : pos + length - 1]  # drop the trailing newline
        key, eq, value = record.partition(b"=")
        if not eq:
            raise TarFormatError("bad PAX record")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarStreamParser:
    """Feed bytes in any chunking; get complete regular-file members back in stream order."""

    def __init__(self, on_header: Callable[[TarHeader], bool | None] | None = None,
                 on_entry: Callable[[TarEntry], None] | None = None) -> None:
        self._on_header = on_header
        self._on_entry = on_entry  # every entry's header, with its data offset
        self.position = 0  # bytes fed so far
        self._buf = bytearray()  # bytes of the current header/metadata block(s) not yet consumed
        self._state = "header"  # header | data | meta | skip | end
        self._need = BLOCK  # bytes still wanted in the current state
        self._header: TarHeader | None = None
        self._parts: list[bytes | memoryview] = []
        self._meta_kind = b""
        self._meta_size = 0
        self._header_skip_is_data = False  # a cut inside skipped entry data is a truncation too
        self._pending_name: str | None = None  # from PAX path / GNU long name, for the next member
        self._pending_size: int | None = None  # from PAX size
        self._pending_link: str | None = None  # from PAX linkpath / GNU long link name
        self._zero_blocks = 0
        self.members = 0
        self.ended = False  # saw the end-of-archive marker

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[TarMember]:
        out: list[TarMember] = []
        view = memoryview(chunk).cast("B")
        pos = 0
        n = len(view)
        while pos < n:
            state = self._state
            if state == "end":
                return out  # zero padding after the end-of-archive marker
            take = min(self._need, n - pos)
            if state == "data":
                self._parts.append(view[pos : pos + take])
            elif state != "skip":
                self._buf += view[pos : pos + take]
            pos += take
            self.position += take
            self._need -= take
            if self._need:
                continue
            if state == "header":
                member = self._on_block()
                if member is not None:
                    out.append(member)
            elif state == "data":
                out.append(self._finish_member())
            elif state == "meta":
                self._on_meta()
            else:  # skip: padding or an entry we do not return
                self._state, self._need = "header", BLOCK
        return out

    def close(self) -> None:
        """The stream is over: raise TarTruncatedError if it stopped inside a header or member."""
        inside = self._state in ("data", "meta") or (self._state == "header" and self._buf)
        if inside or (self._state == "skip" and self._header_skip_is_data):
            raise TarTruncatedError(f"stream ended inside a TAR entry after {self.members} members")

    # -- states ---------------------------------------------------------------------------------

    def _skip(self, nbytes: int, is_data: bool) -> None:
        self._header_skip_is_data = is_data
        if nbytes:
            self._state, self._need = "skip", nbytes
        else:
            self._state, self._need = "header", BLOCK

    def _on_block(self) -> TarMember | None:
        block = bytes(self._buf)
        self._buf.clear()
        self._state, self._need = "header", BLOCK
        if block == _ZERO_BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self._state = "end"
                self.ended = True
            return None
        if self._zero_blocks:
            raise TarFormatError("data after a zero block in TAR stream")
        _check_header(block)
        kind = block[156:157]
        size = _octal_or_base256(block[124:136])
        if size < 0:
            raise TarFormatError(f"negative size {size} in TAR header")
        if kind in (_PAX_LOCAL, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
            if size > _MAX_META:
                raise TarFormatError(f"TAR metadata entry of {size} bytes")
            self._meta_kind, self._meta_size = kind, size
            if size:
                self._state, self._need = "meta", _padded(size)
            else:
                self._on_meta()
            return None
        name = self._pending_name
        if name is None:
            name = _cstr(block[0:100])
            prefix = _cstr(block[345:500]) if block[257:262] == b"ustar" else ""
            if prefix:
                name = f"{prefix}/{name}"
        if self._pending_size is not None:
            size = self._pending_size
        link = self._pending_link if self._pending_link is not None else _cstr(block[157:257])
        self._pending_name = self._pending_size = self._pending_link = None
        if size < 0:
            raise TarFormatError(f"negative size {size} in TAR header")
        if self._on_entry is not None:
            self._on_entry(TarEntry(name, kind, size, self.position, link))
        if kind not in _REGULAR:
            self._skip(_padded(size), is_data=True)
            return None
        header = TarHeader(
            name=name,
            size=size,
            mtime=_octal_or_base256(block[136:148]),
            mode=_octal_or_base256(block[100:108]),
        )
        if self._on_header is not None and self._on_header(header) is False:
            self._skip(_padded(size), is_data=True)  # not wanted: never buffered
            return None
        self._header = header
        if size == 0:
            return self._finish_member()
        self._state, self._need = "data", size
        return None

    def _on_meta(self) -> None:
        data = bytes(self._buf[: self._meta_size])
        self._buf.clear()
        self._state, self._need = "header", BLOCK
        if self._meta_kind == _GNU_LONGNAME:
            self._pending_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._meta_kind == _GNU_LONGLINK:
            self._pending_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._meta_kind == _PAX_LOCAL:
            records = _parse_pax(data)
            if "path" in records:
                self._pending_name = records["path"]
            if "linkpath" in records:
                self._pending_link = records["linkpath"]
            if "size" in records:
                try:
                    self._pending_size = int(records["size"])
                except ValueError:
                    raise TarFormatError("bad PAX size record") from None

    def _finish_member(self) -> TarMember:
        header = self._header
        assert header is not None
        parts = self._parts
        data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._header = None
        self.members += 1
        self._skip(_padded(header.size) - header.size, is_data=False)
        return TarMember(header.name, header.size, header.mtime, header.mode, data)
