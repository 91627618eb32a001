"""The streaming TAR parser: every format AIStore's writer emits, any chunking, and cuts."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from aisbatchfs.ais.tarstream import (
    BLOCK,
    TarFormatError,
    TarHeader,
    TarStreamParser,
    TarTruncatedError,
)


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parse(data: bytes, chunk: int | None = None) -> tuple[list, TarStreamParser]:
    parser = TarStreamParser()
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    return out, parser


SAMPLE = [
    ("bck/a.txt", b"hello"),
    ("bck/empty", b""),
    ("bck/exact-block", bytes(range(256)) * 2),
    ("bck/big", random.Random(1).randbytes(70_001)),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("chunk", [None, 1, 7, 511, 512, 513, 65536])
def test_members_come_out_whole_and_in_order_for_any_chunking(fmt, chunk):
    members, parser = parse(make_tar(SAMPLE, fmt), chunk)
    assert [(m.name, m.data) for m in members] == SAMPLE
    assert [m.size for m in members] == [len(d) for _, d in SAMPLE]
    assert parser.ended and parser.members == len(SAMPLE)
    parser.close()


def test_pax_long_unicode_names():
    name = "bck/" + "ünïcødé-" * 40 + "/x y%#?+.bin"
    members, _ = parse(make_tar([(name, b"1234")], tarfile.PAX_FORMAT), 100)
    assert members[0].name == name and members[0].data == b"1234"


def test_gnu_long_names():
    name = "bck/" + "d" * 300 + "/file"
    members, _ = parse(make_tar([(name, b"xyz")], tarfile.GNU_FORMAT), 64)
    assert members[0].name == name


def test_ustar_prefix_field_is_joined():
    name = "p" * 120 + "/" + "n" * 20
    members, _ = parse(make_tar([(name, b"z")], tarfile.USTAR_FORMAT))
    assert members[0].name == name


def _with_base256_size(tar: bytes) -> bytes:
    """Rewrite the first header's size field in GNU base-256 and fix its checksum."""
    head = bytearray(tar[:BLOCK])
    size = int(head[124:136].split(b"\0")[0], 8)
    head[124:136] = b"\x80" + size.to_bytes(11, "big")
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    return bytes(head) + tar[BLOCK:]


def test_base256_size_field():
    tar = _with_base256_size(make_tar([("bck/b", b"q" * 1000)], tarfile.USTAR_FORMAT))
    members, _ = parse(tar, 300)
    assert members[0].size == 1000 and members[0].data == b"q" * 1000


def test_other_entry_types_are_skipped():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "x" * 200
        tf.addfile(link)
        f = tarfile.TarInfo("dir/f")
        f.size = 3
        tf.addfile(f, io.BytesIO(b"abc"))
    members, parser = parse(buf.getvalue(), 13)
    assert [(m.name, m.data) for m in members] == [("dir/f", b"abc")]
    assert parser.members == 1


def test_cut_mid_member_raises_truncated_on_close():
    tar = make_tar(SAMPLE)
    cut = tar.index(b"hello") + 3
    members, parser = parse(tar[:cut], 50)
    assert members == []
    with pytest.raises(TarTruncatedError):
        parser.close()


def test_cut_mid_header_raises_truncated_on_close():
    tar = make_tar(SAMPLE)
    members, parser = parse(tar[:BLOCK // 2])
    with pytest.raises(TarTruncatedError):
        parser.close()


def test_cut_on_member_boundary_is_silent_but_counted():
    """A cut exactly between members is invisible to the parser: only the count can tell."""
    full = make_tar(SAMPLE)
    members_all, _ = parse(full)
    # the boundary after the second member ('bck/empty') is where the third header begins
    offset = full.index(b"bck/exact-block") // BLOCK * BLOCK
    pax_start = full.rfind(b"PaxHeader", 0, offset)
    boundary = pax_start // BLOCK * BLOCK if pax_start >= 0 else offset
    members, parser = parse(full[:boundary], 512)
    parser.close()  # no error: nothing was cut inside an entry
    assert [m.name for m in members] == ["bck/a.txt", "bck/empty"]
    assert parser.members == 2 and not parser.ended
    assert len(members_all) == 4


def test_on_header_can_abort_before_data_is_buffered():
    seen: list[TarHeader] = []

    def refuse_big(h: TarHeader) -> None:
        seen.append(h)
        if h.size > 1000:
            raise OverflowError(h.name)

    parser = TarStreamParser(on_header=refuse_big)
    with pytest.raises(OverflowError, match="bck/big"):
        parser.feed(make_tar(SAMPLE))
    assert [h.name for h in seen] == [n for n, _ in SAMPLE]


def test_garbage_is_rejected():
    with pytest.raises(TarFormatError):
        TarStreamParser().feed(b"<html>" + b"x" * 1000)


def test_trailing_padding_after_end_marker_is_ignored():
    members, parser = parse(make_tar(SAMPLE) + bytes(10 * BLOCK), 4096)
    assert len(members) == 4 and parser.ended
    parser.close()
