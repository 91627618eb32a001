"""An archive's members as tar extraction would leave them, read from its own TAR headers.

AIStore's archive listing and member reads disagree with extraction in ways that make a
listed member unreadable or wrong: names are listed path-cleaned (`a/b/../../c.txt` as
`c.txt`, `x/./y` as `x/y`) while `archpath` takes only the stored spelling (and refuses `.`
and `..` components); a name stored twice is listed twice and read as its first copy, where
extraction keeps the last; hard links and symlinks are listed with no type and read as 0
bytes. The server cannot be told, so for an archive whose listing shows such signs
(duplicate names, members of size 0), or whose listed member a read cannot find, the client
reads the archive's headers once (the archive streamed through, nothing buffered but the
headers) and builds this index:

- names are placed where extraction puts them: a leading `/` or `./` dropped, `.` and `..`
  resolved; an entry whose name climbs out of the archive is left out (counted);
- the last entry of a name wins; a hard link reads as its target as stored before it;
- a symlink keeps its target text (the namespace decides whether it stays inside);
- each readable entry knows where its bytes lie in the uncompressed TAR stream, so it is read
  with a ranged GET of a plain .tar, or by inflating a compressed one up to it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from aisbatchfs.ais.tarstream import TarEntry

KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
         b"5": "dir"}


def extraction_name(stored: str) -> str | None:
    """Where tar extraction puts an entry stored as `stored`, relative to the archive; None
    if it climbs out of it (or names the archive itself)."""
    parts: list[str] = []
    for part in stored.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts) or None


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str  # where extraction puts it
    kind: str  # file, symlink, dir (a hard link is a file: its target's bytes)
    size: int
    offset: int  # of its bytes in the uncompressed TAR stream
    stored: str  # the name as stored (what archpath would need)
    link: str = ""  # a symlink's target, as stored


@dataclass
class ArchiveIndex:
    version: str  # of the archive object it was built from
    entries: dict[str, IndexEntry] = field(default_factory=dict)  # by extraction name
    escaped: int = 0  # entries whose names climb out of the archive
    special: set[str] = field(default_factory=set)  # names archpath cannot read right

    def add(self, e: TarEntry) -> None:
        name = extraction_name(e.name)
        if name is None:
            self.escaped += 1
            return
        kind = KINDS.get(e.kind, "other")
        if kind == "hardlink":
            target = self.entries.get(extraction_name(e.linkname) or "")
            if target is None or target.kind != "file":
                return  # a link to nothing readable: extraction would fail on it too
            entry = IndexEntry(name, "file", target.size, target.offset, e.name)
        elif kind == "other":
            return  # devices, fifos: nothing a program could read
        else:
            entry = IndexEntry(name, kind, e.size if kind == "file" else 0, e.offset, e.name,
                               e.linkname if kind == "symlink" else "")
        if (name in self.entries or kind != "file" or e.name != name
                or e.kind not in (b"0", b"\0", b"7")):
            self.special.add(name)  # a duplicate, a link, or a spelling archpath cannot take
        self.entries[name] = entry

    def files(self) -> list[IndexEntry]:
        return [e for e in self.entries.values() if e.kind in ("file", "symlink")]
