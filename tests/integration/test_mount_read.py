"""Ordinary programs read a mounted cluster and get exactly the SDK's bytes."""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import subprocess
import sys
import tarfile

import pytest
from aistore.sdk import Client

from tests.conftest import OPEN_MODES, new_bucket_name
from tests.helpers import put_tutorial, tutorial_archives, tutorial_objects
from tests.mounting import mount, run

pytestmark = pytest.mark.both_open_modes

MiB = 1 << 20


def _files() -> dict[str, bytes]:
    rng = random.Random(11)
    files = {f"small/f{i:02d}.bin": rng.randbytes(rng.randint(1, 40_000)) for i in range(20)}
    files.update({
        "empty": b"",
        "mid.bin": rng.randbytes(3 * MiB + 17),
        "big.bin": rng.randbytes(21 * MiB + 5),  # larger than one read window
        "deep/a/b/c/leaf.txt": b"leaf\n",
        "odd names/with space.txt": b"space",
        "odd names/ünïcødé ✓.txt": b"unicode",
        "odd names/pct%41#hash?q+plus.txt": b"specials",
    })
    return files


@pytest.fixture(scope="module")
def data(cluster):
    sdk = Client(cluster.endpoint)
    bucket = sdk.bucket(new_bucket_name("rd")).create()
    files = _files()
    for name, blob in files.items():
        bucket.object(name).get_writer().put_content(blob)
    objs, archs = sdk.bucket(new_bucket_name("tuto")).create(), sdk.bucket(new_bucket_name("tuta")).create()
    put_tutorial(objs, archs)
    yield bucket, files, objs, archs
    for b in (bucket, objs, archs):
        b.delete(missing_ok=True)


@pytest.fixture(scope="module", params=list(OPEN_MODES))
def mnt(cluster, data, tmp_path_factory, request):
    m = mount(cluster.endpoint, tmp_path_factory.mktemp("rd") / "mnt", *OPEN_MODES[request.param])
    yield m
    m.stop()
    print(m.log_text())


def sdk_bytes(bucket, name: str) -> bytes:
    return bucket.object(name).get_reader().read_all()


def test_ls_find_stat_and_du_show_the_tree(mnt, data):
    bucket, files, _, _ = data
    root = mnt.path / bucket.name
    ls = run(["ls", "-la", str(root)]).stdout.decode()
    for top in ("small", "empty", "mid.bin", "big.bin", "deep", "odd names"):
        assert top in ls
    found = run(["find", str(root), "-type", "f"]).stdout.decode().splitlines()
    assert sorted(os.path.relpath(p, root) for p in found) == sorted(files)
    sizes = run(["stat", "-c", "%s %n", *[str(root / n) for n in files]]).stdout.decode()
    for line, name in zip(sizes.splitlines(), files):
        assert int(line.split()[0]) == len(files[name])
    du = run(["du", "-sb", str(root)]).stdout.decode()
    assert int(du.split()[0]) == sum(map(len, files.values()))


def test_cat_and_sha256sum_match_the_sdk(mnt, data):
    bucket, files, _, _ = data
    root = mnt.path / bucket.name
    for name in files:
        assert run(["cat", str(root / name)]).stdout == sdk_bytes(bucket, name), name
    sums = run(["sha256sum", *[str(root / n) for n in files]]).stdout.decode().splitlines()
    for line, name in zip(sums, files):
        assert line.split()[0] == hashlib.sha256(files[name]).hexdigest()


def test_cp_r_and_tar_copy_every_byte(mnt, data, tmp_path):
    bucket, files, _, _ = data
    run(["cp", "-r", str(mnt.path / bucket.name), str(tmp_path / "copy")])
    for name, blob in files.items():
        assert (tmp_path / "copy" / name).read_bytes() == blob
    run(["tar", "cf", str(tmp_path / "t.tar"), "-C", str(mnt.path), bucket.name])
    with tarfile.open(tmp_path / "t.tar") as tf:
        got = {m.name.split("/", 1)[1]: tf.extractfile(m).read() for m in tf if m.isfile()}
    assert got == files


def test_python_open_seek_read_at_any_offset(mnt, data):
    bucket, files, _, _ = data
    blob = files["big.bin"]
    rng = random.Random(3)
    with open(mnt.path / bucket.name / "big.bin", "rb") as f:
        for _ in range(60):
            off = rng.randrange(0, len(blob) + 100)
            size = rng.choice([1, 7, 4096, 131072, 5 * MiB])
            f.seek(off)
            assert f.read(size) == blob[off : off + size]
        f.seek(len(blob) - 10)
        assert f.read() == blob[-10:]


def test_reads_larger_than_the_first_window_are_answered_whole(mnt, data):
    """FUSE takes a short reply for the end of the file, so a 1 MiB request (the kernel's
    read-ahead here, or O_DIRECT) must get all its bytes even where the first fetch window
    (512 KiB) is smaller. O_DIRECT sends each read to the daemon, past the page cache."""
    bucket, files, _, _ = data
    blob = files["big.bin"]
    path = mnt.path / bucket.name / "big.bin"
    minor = os.minor(os.stat(mnt.path).st_dev)
    with open(f"/sys/class/bdi/0:{minor}/read_ahead_kb") as f:
        assert int(f.read()) == 1024  # raised by the daemon from the kernel's 128
    buf = mmap.mmap(-1, 4 * MiB)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for off in (0, 3 * MiB, 20 * MiB):  # cold, after a seek, and across the end
            n = os.preadv(fd, [buf], off)
            assert n == min(4 * MiB, len(blob) - off)
            assert buf[:n] == blob[off : off + n], off
    finally:
        os.close(fd)
        buf.close()


def test_numpy_memmap_reads_the_object(mnt, data):
    import numpy as np
    bucket, files, _, _ = data
    blob = files["mid.bin"]
    arr = np.memmap(mnt.path / bucket.name / "mid.bin", dtype=np.uint8, mode="r")
    assert arr.shape == (len(blob),)
    assert bytes(arr[:4096]) == blob[:4096]
    assert bytes(arr[-5000:]) == blob[-5000:]
    assert int(arr.astype(np.uint64).sum()) == sum(blob)


READER = """
import hashlib, os, sys
root = sys.argv[1]
for dirpath, dirs, names in sorted(os.walk(root)):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(dirpath, n)
        with open(p, 'rb') as f:
            print(os.path.relpath(p, root), hashlib.sha256(f.read()).hexdigest())
"""


def test_four_reader_processes_at_once(mnt, data):
    bucket, files, _, _ = data
    procs = [
        subprocess.Popen([sys.executable, "-c", READER, str(mnt.path / bucket.name)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    want = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got = dict(line.rsplit(" ", 1) for line in out.decode().splitlines())
        assert got == want


def test_the_tutorial_buckets_read_through_the_mount(mnt, data):
    _, _, objs, archs = data
    for name, blob in tutorial_objects().items():
        assert (mnt.path / objs.name / name).read_bytes() == blob
    for shard, members in tutorial_archives().items():
        assert sorted(os.listdir(mnt.path / archs.name / shard)) == sorted(members)
        for member, blob in members.items():
            assert (mnt.path / archs.name / shard / member).read_bytes() == blob


def test_empty_objects_read_as_empty_files(mnt, data):
    bucket, _, _, _ = data
    p = mnt.path / bucket.name / "empty"
    assert p.stat().st_size == 0 and p.read_bytes() == b""


@pytest.mark.parametrize("fmt", [".tar", ".tgz"])
def test_large_archive_members_read_in_windows(cluster, make_bucket, mounter, fmt):
    """A member larger than one read window is read in ranges (a one-item GetBatch with
    start/length each, since the server refuses Range with archpath)."""
    from tests.helpers import make_archive

    b = make_bucket(cluster)
    big = random.Random(5).randbytes(19 * MiB + 333)
    b.object(f"shard{fmt}").get_writer().put_content(
        make_archive([("small.txt", b"s"), ("data/big.bin", big)], fmt))
    m = mounter(cluster.endpoint, "--bucket", b.name)
    p = m.path / f"shard{fmt}" / "data" / "big.bin"
    assert p.stat().st_size == len(big)
    with open(p, "rb") as f:
        f.seek(len(big) - 100_000)
        assert f.read() == big[-100_000:]
        f.seek(5)
        assert f.read(MiB) == big[5 : 5 + MiB]
    assert hashlib.sha256(p.read_bytes()).hexdigest() == hashlib.sha256(big).hexdigest()
    assert m.stats()["client"].get("calls_moss", 0) >= 3  # windows, not one whole download
