"""The namespace rules, as documented in docs/tree.md, on a real mount."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aistore.sdk import Client
from aistore.sdk.types import Namespace as SdkNamespace

from tests.helpers import make_archive
from tests.mounting import run

pytestmark = pytest.mark.both_open_modes


def put_all(bucket, files: dict[str, bytes], threads: int = 10) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: bucket.object(kv[0]).get_writer().put_content(kv[1]),
                      files.items()))


def test_names_the_kernel_can_and_cannot_take(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    ok255 = "n" * 251 + ".txt"  # a 255-byte component
    files = {
        ok255: b"255",
        "d/" + "é" * 127 + "x": b"255 bytes of utf-8",
        "toolong/" + "x" * 256: b"skipped",
        "emp//ty": b"AIStore stores this as emp/ty",
        "fine/ok": b"ok",
    }
    put_all(b, files)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    assert (m.path / ok255).read_bytes() == b"255"
    assert (m.path / "d" / ("é" * 127 + "x")).read_bytes() == b"255 bytes of utf-8"
    assert (m.path / "emp" / "ty").read_bytes() == b"AIStore stores this as emp/ty"
    assert (m.path / "fine" / "ok").read_bytes() == b"ok"
    names = os.listdir(m.path)
    assert "toolong" not in names  # its only object cannot be named through the kernel
    assert m.stats()["namespace"]["skipped_long_names"] >= 1
    assert len(names) == len(set(names))


def test_object_beside_prefix_of_the_same_name_shows_the_directory(cluster2, make_bucket, mounter):
    """`x` and `x/...` can only coexist when they live on different targets."""
    b = make_bucket(cluster2)
    pair = None
    for i in range(40):
        try:
            b.object(f"dup{i}/inner").get_writer().put_content(b"inner")
            b.object(f"dup{i}").get_writer().put_content(b"shadowed")
            pair = f"dup{i}"
            break
        except Exception:  # same target: the second PUT is refused (ErrMv)
            continue
    assert pair, "no name pair landed on different targets"
    m = mounter(cluster2.endpoint, "--bucket", b.name)
    assert (m.path / pair).is_dir()
    assert (m.path / pair / "inner").read_bytes() == b"inner"
    assert os.listdir(m.path).count(pair) == 1
    assert m.stats()["namespace"]["shadowed_names"] >= 1
    assert "is hidden by the directory" in m.log_text()


def test_namespaced_and_plain_buckets_cannot_collide(cluster, mounter):
    sdk = Client(cluster.endpoint)
    plain = sdk.bucket("samename").create(exist_ok=True)
    spaced = sdk.bucket("samename", namespace=SdkNamespace(name="ns7")).create(exist_ok=True)
    try:
        plain.object("o").get_writer().put_content(b"plain")
        spaced.object("o").get_writer().put_content(b"namespaced")
        m = mounter(cluster.endpoint)
        assert (m.path / "samename" / "o").read_bytes() == b"plain"
        assert "@ais#ns7" in os.listdir(m.path)
        assert (m.path / "@ais#ns7" / "samename" / "o").read_bytes() == b"namespaced"
        assert ".aisbatchfs" not in os.listdir(m.path)  # hidden, reachable by path
        assert (m.path / ".aisbatchfs" / "stats").is_file()
    finally:
        plain.delete(missing_ok=True)
        spaced.delete(missing_ok=True)


def test_inode_numbers_survive_forget_and_lookup_counts_return_to_zero(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    put_all(b, {f"d/f{i}": b"x" * i for i in range(50)})
    m = mounter(cluster.endpoint, "--bucket", b.name)
    base = m.stats()["namespace"]["nodes"]
    before = {p.name: p.stat().st_ino for p in (m.path / "d").iterdir()}
    assert len(set(before.values())) == 50
    assert m.stats()["namespace"]["nodes"] >= base + 50
    subprocess.run(["sync"], timeout=60)
    Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets dentries and inodes
    deadline = time.monotonic() + 10
    while m.stats()["namespace"]["nodes"] > base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.stats()["namespace"]["nodes"] <= base  # every FORGET honoured
    after = {p.name: p.stat().st_ino for p in (m.path / "d").iterdir()}
    assert after == before


def test_a_big_directory_lists_completely_in_order_with_one_listing(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    n = 10_000
    put_all(b, {f"many/o{i:05d}": b"" for i in range(n)}, threads=10)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    assert (m.path / "many").is_dir()  # the lookup itself: a one-entry listing and a HEAD
    before = m.stats()["client"]
    t0 = time.monotonic()
    out = run(["ls", "-l", str(m.path / "many")]).stdout.decode().splitlines()
    took = time.monotonic() - t0
    after = m.stats()["client"]
    names = [line.split()[-1] for line in out[1:]]
    assert names == [f"o{i:05d}" for i in range(n)]
    listed = after.get("calls_list", 0) - before.get("calls_list", 0)
    # one full page of 10,000, then the empty page AIStore answers after a full one;
    # no per-entry requests
    assert listed <= 2
    assert after["http_requests"] - before["http_requests"] == listed
    first = os.listdir(m.path / "many")
    assert first == os.listdir(m.path / "many") and len(first) == n
    print(f"ls -l of {n} objects: {took:.2f}s, {after['http_requests'] - before['http_requests']} requests")


@pytest.mark.parametrize("fmt", [".tar", ".tgz", ".zip", ".tar.lz4"])
@pytest.mark.parametrize("mode", ["dir", "file", "both"])
def test_archives_in_every_mode(cluster, make_bucket, mounter, fmt, mode):
    b = make_bucket(cluster)
    members = {"a.txt": b"alpha", "sub/b.txt": b"beta", "sub/deeper/c.bin": bytes(range(200))}
    shard = make_archive(members.items(), fmt)
    b.object(f"shard{fmt}").get_writer().put_content(shard)
    dotted = make_archive([("./" + k, v) for k, v in members.items()], fmt)
    b.object(f"dotted{fmt}").get_writer().put_content(dotted)
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"archives={mode}")
    names = set(os.listdir(m.path))
    for base, blob in ((f"shard{fmt}", shard), (f"dotted{fmt}", dotted)):
        if mode == "file":
            assert names >= {base} and (m.path / base).read_bytes() == blob
            continue
        tree = m.path / (base if mode == "dir" else base + ".d")
        if mode == "both":
            assert (m.path / base).read_bytes() == blob
        assert sorted(os.listdir(tree)) == ["a.txt", "sub"]
        assert sorted(os.listdir(tree / "sub")) == ["b.txt", "deeper"]
        for name, data in members.items():
            p = tree / name
            assert p.stat().st_size == len(data)
            assert p.read_bytes() == data, (base, name)
    expected = {"dir": {f"shard{fmt}", f"dotted{fmt}"}, "file": {f"shard{fmt}", f"dotted{fmt}"},
                "both": {f"shard{fmt}", f"dotted{fmt}", f"shard{fmt}.d", f"dotted{fmt}.d"}}
    assert names == expected[mode]


def test_xattrs_describe_the_object(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    b.object("x/obj").get_writer().put_content(b"hello")
    b.object("s.tar").get_writer().put_content(make_archive([("m.txt", b"m")], ".tar"))
    props = b.object("x/obj").head(props="checksum,version")
    m = mounter(cluster.endpoint, "--bucket", b.name)
    p = m.path / "x" / "obj"
    assert os.getxattr(p, "user.ais.checksum") == props.checksum_value.encode()
    assert os.getxattr(p, "user.ais.checksum_type") == b"xxhash2"
    assert os.getxattr(p, "user.ais.version") == props.obj_version.encode()
    assert os.getxattr(p, "user.ais.size") == b"5"
    assert os.getxattr(p, "user.ais.bucket") == b.name.encode()
    assert os.getxattr(p, "user.ais.provider") == b"ais"
    assert set(os.listxattr(p)) >= {"user.ais.checksum", "user.ais.version", "user.ais.name"}
    assert os.getxattr(m.path / "s.tar" / "m.txt", "user.ais.archpath") == b"m.txt"
    with pytest.raises(OSError) as e:
        os.getxattr(p, "security.selinux")
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.nothing")
    assert e.value.errno == errno.ENODATA


def test_writes_are_refused_with_erofs_and_missing_paths_with_enoent(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    b.object("f").get_writer().put_content(b"data")
    m = mounter(cluster.endpoint, "--bucket", b.name)
    attempts = [
        lambda: open(m.path / "f", "wb"),
        lambda: open(m.path / "f", "ab"),
        lambda: open(m.path / "new", "wb"),
        lambda: os.mkdir(m.path / "d"),
        lambda: os.unlink(m.path / "f"),
        lambda: os.rename(m.path / "f", m.path / "g"),
        lambda: os.chmod(m.path / "f", 0o777),
        lambda: os.utime(m.path / "f"),
        lambda: os.symlink("f", m.path / "l"),
        lambda: os.setxattr(m.path / "f", "user.x", b"1"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, attempt
    for missing in ("nope", "nope/deeper", "f/under-a-file"):
        with pytest.raises(OSError) as e:
            os.stat(m.path / missing)
        assert e.value.errno in (errno.ENOENT, errno.ENOTDIR)
    assert (m.path / "f").read_bytes() == b"data"


def test_missing_names_are_cached_negatively(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    b.object("present").get_writer().put_content(b"p")
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", "negative_ttl=30")
    for _ in range(5):
        assert not (m.path / "absent").exists()
    assert m.stats()["namespace"].get("lookup_probes", 0) <= 1


def test_a_prefix_mounts_at_the_root(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    put_all(b, {"keep/a": b"a", "keep/sub/b": b"b", "other/c": b"c"})
    m = mounter(cluster.endpoint, "--bucket", f"{b.name}/keep")
    assert sorted(os.listdir(m.path)) == ["a", "sub"]
    assert (m.path / "sub" / "b").read_bytes() == b"b"


def test_statfs_answers(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    st = os.statvfs(m.path)
    assert st.f_namemax == 255 and st.f_bsize > 0 and st.f_blocks > 0
    assert "aisbatchfs" in run(["df", "-T", str(m.path)]).stdout.decode()
