"""Archives that are broken or built to mislead, read through a real mount of a real cluster:
the right bytes or a clear error, quickly, and never a member that lists but cannot be read.
"""

from __future__ import annotations

import os
import time
import zlib

from tests.helpers import make_archive

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
