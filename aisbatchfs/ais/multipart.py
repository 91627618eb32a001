"""Streaming splitter for GetBatch's buffered (multipart/mixed) reply.

The reply is two parts, `metadata` (JSON) then `archive` (the TAR), and the archive can be large,
so parts are handed out chunk by chunk as they arrive instead of parsing the whole body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_NAME = re.compile(rb'name="([^"]*)"', re.I)


class MultipartError(ValueError):
    pass


def boundary_of(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise MultipartError(f"no multipart boundary in Content-Type {content_type!r}")
    return m.group(1)


def split_multipart(chunks: Iterable[bytes], boundary: str) -> Iterator[tuple[str, bytes]]:
    """Yield (part name, bytes) pieces in order; one part may come in many pieces."""
    delim = b"\r\n--" + boundary.encode()
    buf = bytearray(b"\r\n")  # so the first boundary looks like every other one
    it = iter(chunks)
    state = "preamble"
    name = ""

    def more() -> bool:
        chunk = next(it, None)
        if chunk is None:
            return False
        buf.extend(chunk)
        return True

    while True:
        if state == "preamble":
            i = buf.find(delim)
            if i < 0:
                if not more():
                    raise MultipartError("multipart body ended before its first boundary")
                continue
            del buf[: i + len(delim)]
            state = "after-delim"
        elif state == "after-delim":
            if len(buf) < 2 and more():
                continue
            if buf[:2] == b"--":
                return  # closing delimiter
            j = buf.find(b"\r\n\r\n")
            if j < 0:
                if not more():
                    raise MultipartError("multipart body ended inside part headers")
                continue
            m = _NAME.search(bytes(buf[:j]))
            name = m.group(1).decode("utf-8", "surrogateescape") if m else ""
            del buf[: j + 4]
            state = "body"
        else:  # body: hand out everything that cannot be the start of the next delimiter
            i = buf.find(delim)
            if i >= 0:
                if i:
                    yield name, bytes(buf[:i])
                del buf[: i + len(delim)]
                state = "after-delim"
                continue
            keep = len(delim) - 1
            if len(buf) > keep:
                yield name, bytes(buf[:-keep])
                del buf[:-keep]
            if not more():
                raise MultipartError(f"multipart body ended inside part {name!r}")
