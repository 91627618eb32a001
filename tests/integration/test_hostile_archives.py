"""Archives that are broken or built to mislead, read through a real mount of a real cluster:
the right bytes or a clear error, quickly, and never a member that lists but cannot be read.
"""

from __future__ import annotations

import os
import time
import zlib

import pytest

from tests.helpers import make_archive

pytestmark = pytest.mark.both_open_modes

KiB = 1 << 10


def timed_read(path) -> tuple[float, bytes | OSError]:
    t0 = time.monotonic()
    try:
        with open(path, "rb") as f:
            return time.monotonic() - t0, f.read()
    except OSError as e:
        return time.monotonic() - t0, e


def with_bad_gzip_check(archive: bytes) -> bytes:
    """The .tgz with a wrong CRC32 in its gzip trailer: AIStore lists and reads its members
    (it stops at the TAR end marker), while inflating it whole fails at the very end."""
    damaged = bytearray(archive)
    damaged[-8] ^= 0xFF
    return bytes(damaged)


def test_a_corrupt_tgz_streamed_whole_still_serves_its_members_and_leaves_nothing_waiting(
        cluster, make_bucket, mounter):
    """Streaming a corrupt .tgz once raised zlib.error past the stream's error handling: its
    members' waiters were never released, so every read of them waited out the read deadline,
    until remount. Now the failed stream releases them at once and each member is fetched
    alone (the server reads members without the trailer), so every read is right and quick."""
    b = make_bucket(cluster)
    members = {f"m{i:03d}.bin": os.urandom(4 * KiB) for i in range(60)}
    raw = make_archive(members.items(), ".tgz")
    bad = with_bad_gzip_check(raw)
    try:
        zlib.decompress(bad, wbits=31)
        raise AssertionError("the damage went unnoticed")
    except zlib.error:
        pass
    b.object("bad.tgz").get_writer().put_content(bad)
    b.object("ok.txt").get_writer().put_content(b"still fine\n")
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", "read_timeout=8")
    root = m.path / "bad.tgz"
    names = sorted(os.listdir(root))
    assert names == sorted(members)
    t0 = time.monotonic()
    for name in names:
        took, got = timed_read(root / name)
        assert took < 4, (name, took)  # never the read deadline
        assert got == members[name], (name, got)  # never a wrong byte
    assert time.monotonic() - t0 < 30
    assert (m.path / "ok.txt").read_bytes() == b"still fine\n"
    stats = m.stats()
    assert stats["batch"]["shard_failures"] == 1 and stats["cache"]["reserved"] == 0
    assert "bad.tgz" in m.log_text() and "Traceback" not in m.log_text()


def test_a_member_file_never_hides_a_member_directory_and_the_log_names_both(
        cluster, make_bucket, mounter):
    """A tar holding a file `sub` and `sub/x.txt`: like objects and prefixes, the directory
    keeps the name (it holds more), and the one log line names both members."""
    b = make_bucket(cluster)
    b.object("t.tar").get_writer().put_content(
        make_archive([("sub", b"a file\n"), ("sub/x.txt", b"under it\n")], ".tar"))
    m = mounter(cluster.endpoint, "--bucket", b.name)
    assert os.listdir(m.path / "t.tar") == ["sub"]
    assert (m.path / "t.tar" / "sub").is_dir()
    assert (m.path / "t.tar" / "sub" / "x.txt").read_bytes() == b"under it\n"
    log = m.log_text()
    assert f"member file ais://{b.name}/t.tar/sub is hidden by the member directory " \
           f"ais://{b.name}/t.tar/sub" in log, log
    assert m.stats()["namespace"]["shadowed_names"] == 1


def test_unreadable_archives_list_empty_with_a_reason_a_counter_and_a_log_line(
        cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    good = make_archive([(f"m{i}.txt", b"x" * 700) for i in range(4)], ".tar")
    broken_header = bytearray(good)
    broken_header[148:156] = b"0000000\0"  # the first header's checksum
    bad = {
        "broken-header.tar": bytes(broken_header),
        "truncated.tar": good[:1200],
        "garbage.zip": os.urandom(3000),
        "text.tar": b"this is not an archive\n" * 40,
    }
    for name, data in bad.items():
        b.object(name).get_writer().put_content(data)
    b.object("empty.tar").get_writer().put_content(bytes(10240))  # a valid, empty archive
    m = mounter(cluster.endpoint, "--bucket", b.name)
    for name in bad:
        d = m.path / name
        assert os.listdir(d) == [], name  # a directory still: find and rsync go on
        reason = os.getxattr(d, "user.ais.error").decode()
        assert "cannot read it as an archive" in reason, (name, reason)
        assert f"ais://{b.name}/{name}" in m.log_text(), name
    assert os.listdir(m.path / "empty.tar") == []
    assert "user.ais.error" not in os.listxattr(m.path / "empty.tar")
    assert m.stats()["namespace"]["unreadable_archives"] == len(bad)
    found = sorted(os.path.relpath(os.path.join(p, n), m.path)
                   for p, ds, fs in os.walk(m.path) for n in ds + fs)
    assert found == sorted(list(bad) + ["empty.tar"])


def hostile_tar(fmt: str) -> bytes:
    """Names stored twice, spellings archpath cannot take, links in and out of the archive."""
    import gzip
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)

        add("dup.txt", b"first\n")
        add("dup.txt", b"second, longer\n")
        add("a/b/../../c.txt", b"climbs back in\n")
        add("x/./y.txt", b"dot segment\n")
        add("hl", kind=tarfile.LNKTYPE, link="dup.txt")
        add("s-in", kind=tarfile.SYMTYPE, link="x/y.txt")
        add("s-out", kind=tarfile.SYMTYPE, link="../../../etc/passwd")
        add("s-abs", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("../escape.txt", b"outside\n")
        add("plain.txt", b"plain\n")
    raw = buf.getvalue()
    return gzip.compress(raw) if fmt == ".tgz" else raw


@pytest.mark.parametrize("fmt", [".tar", ".tgz"])
def test_every_listed_member_reads_what_tar_extraction_gives(cluster, make_bucket, mounter,
                                                             fmt):
    """Duplicates read as the last copy, members stored as a/b/../../c.txt or x/./y.txt read
    under the names extraction gives them, hard links as their target, symlinks inside the
    archive as symlinks; links and names leading out of it are left out and counted."""
    b = make_bucket(cluster)
    b.object(f"h{fmt}").get_writer().put_content(hostile_tar(fmt))
    m = mounter(cluster.endpoint, "--bucket", b.name)
    root = m.path / f"h{fmt}"
    assert sorted(os.listdir(root)) == ["c.txt", "dup.txt", "hl", "plain.txt", "s-in", "x"]
    assert (root / "dup.txt").read_bytes() == b"second, longer\n"
    assert (root / "dup.txt").stat().st_size == len(b"second, longer\n")
    assert (root / "c.txt").read_bytes() == b"climbs back in\n"
    assert (root / "x" / "y.txt").read_bytes() == b"dot segment\n"
    assert (root / "hl").read_bytes() == b"second, longer\n"
    assert (root / "plain.txt").read_bytes() == b"plain\n"
    assert os.readlink(root / "s-in") == "x/y.txt"
    assert (root / "s-in").read_bytes() == b"dot segment\n"  # followed, inside the archive
    ns = m.stats()["namespace"]
    assert ns["hidden_links"] == 2 and ns["escaping_members"] == 1, ns
    assert "climb out of it" in m.log_text()


@pytest.mark.parametrize("fmt", [".zip", ".tar"])
def test_an_archive_with_an_empty_member_lists_and_reads(cluster, make_bucket, mounter, fmt):
    """Empty members are common (an empty __init__.py). In a .zip one made the listing fail
    with EIO: a size-0 member sent the listing to the TAR header index, which cannot read a
    zip. A zip keeps the server's listing; a tar is indexed and reads the same."""
    b = make_bucket(cluster)
    b.object(f"e{fmt}").get_writer().put_content(
        make_archive([("pkg/__init__.py", b""), ("pkg/mod.py", b"x = 1\n")], fmt))
    m = mounter(cluster.endpoint, "--bucket", b.name)
    root = m.path / f"e{fmt}"
    assert sorted(os.listdir(root / "pkg")) == ["__init__.py", "mod.py"]
    assert (root / "pkg" / "__init__.py").read_bytes() == b""
    assert (root / "pkg" / "mod.py").read_bytes() == b"x = 1\n"
