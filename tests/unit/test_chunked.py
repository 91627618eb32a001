"""The chunked transfer decoder (ais/chunked.py): any chunking of the body, any split of the
bytes on the wire, chunk extensions and trailers give back exactly the payload, and `done`
only at the end; framing that is not HTTP raises ChunkedError, never a wrong byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisbatchfs.ais.chunked import ChunkedError, Dechunker


def encode(pieces: list[bytes], ext: bool, trailer: bool, upper: bool) -> bytes:
    out = b""
    for p in pieces:
        size = f"{len(p):X}" if upper else f"{len(p):x}"
        out += size.encode() + (b";name=v" if ext else b"") + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n" + (b"X-Trailer: 1\r\n" if trailer else b"") + b"\r\n"


def feed_in(body: bytes, cuts: list[int]) -> tuple[bytes, Dechunker]:
    d = Dechunker()
    got, at = b"", 0
    for cut in sorted(set(c % (len(body) + 1) for c in cuts)) + [len(body)]:
        got += d.feed(body[at:cut])
        at = cut
    return got, d


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=12), st.booleans(),
       st.booleans(), st.booleans(), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_and_any_split_give_the_payload(pieces, ext, trailer, upper, cuts):
    body = encode(pieces, ext, trailer, upper)
    got, d = feed_in(body, cuts)
    assert got == b"".join(pieces)
    assert d.done


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
       st.integers(0, 10_000))
def test_a_cut_body_is_never_done_and_hands_out_only_a_prefix(pieces, cut):
    body = encode(pieces, False, False, False)
    cut %= len(body)  # anywhere before the last byte
    got, d = feed_in(body[:cut], [])
    assert not d.done
    assert b"".join(pieces).startswith(got)


@pytest.mark.parametrize("body", [
    b"zz\r\nabc\r\n",  # not hex
    b"0x3\r\nabc\r\n",  # a prefix int() would take
    b"1_0\r\n",  # an underscore int() would take
    b"-3\r\nabc\r\n",
    b"3\r\nabcXY",  # no CRLF after the data
    b"3\r\nabc\r\n0\r\n\r\nextra",  # bytes after the end
    b"f" * 9000,  # a size line that never ends
])
def test_framing_that_is_not_http_raises(body):
    with pytest.raises(ChunkedError):
        Dechunker().feed(body)


def test_one_feed_of_many_chunks_is_one_payload():
    """The point of it: a read that brought many chunks gives them back in one piece."""
    pieces = [bytes([i]) * 5000 for i in range(40)]
    d = Dechunker()
    assert d.feed(encode(pieces, False, False, False)) == b"".join(pieces)
    assert d.done
