"""HTTP/1.1 chunked transfer coding, decoded from large reads.

A streamed GetBatch reply is chunked, and AIStore writes it in small chunks (~5 KiB: 795 of
them for 256 files of 16 KiB). http.client's `read1` hands back at most one chunk per call,
and every call is a read on the socket that releases the interpreter lock and must take it
back. In the daemon, where the FUSE loop holds the lock most of the time, each of those
hand-backs waits for the loop to let go, and a batch arrived at a third of the speed the same
client reached on its own. Reading up to 1 MiB at a time and undoing the chunk framing here
costs one hand-back per read instead of one per chunk; when the reader falls behind, each
read simply brings more.

`Dechunker.feed` takes bytes as they come and returns the payload in them; it raises
ChunkedError on any framing it does not expect, and `done` turns true once the last chunk
and the trailer have been read (bytes past that are an error: one reply per connection at
a time).
"""

from __future__ import annotations

MAX_LINE = 8192  # a chunk-size or trailer line longer than this is not HTTP
_HEX = b"0123456789abcdefABCDEF"


class ChunkedError(ValueError):
    """The body is not valid chunked transfer coding."""


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class Dechunker:
    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # payload bytes still due in the current chunk
        self._pending = b""  # undecoded bytes: a part of a line, or of a chunk's CRLF

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """The payload carried by `data` (possibly empty)."""
        buf = self._pending + data if self._pending else data
        self._pending = b""
        view = memoryview(buf)
        out: list[memoryview] = []
        pos, n = 0, len(buf)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                out.append(view[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ChunkedError("a chunk does not end with CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _DONE:
                raise ChunkedError(f"{n - pos} bytes after the end of the body")
            else:  # a line: a chunk's size, or a trailer field
                eol = buf.find(b"\n", pos)
                if eol < 0:
                    if n - pos > MAX_LINE:
                        raise ChunkedError("a chunk-size or trailer line is too long")
                    break
                line = buf[pos:eol].rstrip(b"\r")
                pos = eol + 1
                if state == _SIZE:
                    self._chunk(line)
                elif not line:  # the empty line that ends the trailer
                    self._state = _DONE
        if pos < n:
            self._pending = bytes(view[pos:])
        return b"".join(out)

    def _chunk(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].strip()  # (chunk extensions are ignored)
        if not digits or digits.strip(_HEX) or len(digits) > 16:
            raise ChunkedError(f"bad chunk size {line[:40]!r}")
        size = int(digits, 16)
        if size == 0:
            self._state = _TRAILER
        else:
            self._left, self._state = size, _DATA
