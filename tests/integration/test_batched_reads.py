"""The GetBatch read path on a real mount: prediction, coalescing, the budget, hints, failure."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aistore.sdk import Client

from aisbatchfs import control
from tests.conftest import new_bucket_name

pytestmark = pytest.mark.both_open_modes

KiB = 1 << 10
N = 1000


def blob(i: int, size: int = 16 * KiB) -> bytes:
    return random.Random(i).randbytes(size)


@pytest.fixture(scope="module")
def small_files(cluster):
    """1,000 files of 16 KiB in one directory, put once for the module."""
    b = Client(cluster.endpoint).bucket(new_bucket_name("bt")).create()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: b.object(f"d/f{i:04d}").get_writer().put_content(blob(i)),
                      range(N)))
    yield b
    b.delete(missing_ok=True)


def read_in_order(root: Path, names: list[str]) -> None:
    for name in names:
        i = int(name[1:])
        assert (root / name).read_bytes() == blob(i), name


@pytest.fixture
def mount_small(cluster, small_files, mounter):
    def make(*args: str):
        return mounter(cluster.endpoint, "--bucket", small_files.name, *args)

    return make


def test_reading_a_listed_directory_in_order_uses_few_big_batches(mount_small):
    m = mount_small()
    root = m.path / "d"
    names = sorted(os.listdir(root))
    assert len(names) == N
    before = m.stats()
    read_in_order(root, names)
    after = m.stats()
    batch = after["batch"]
    requests = after["client"]["http_requests"] - before["client"]["http_requests"]
    assert batch["items"] / batch["batches"] >= 16, batch
    assert requests / N <= 0.1, requests
    assert after["client"].get("calls_get", 0) == 0  # no single GETs
    assert batch["items"] == N  # nothing fetched twice
    assert after["cache"]["peak"] <= after["cache"]["budget"]
    table = subprocess.run([sys.executable, "-m", "aisbatchfs", "stats", str(m.path)],
                           capture_output=True, text=True, timeout=30).stdout
    assert "items_per_batch" in table and "page_stores" in table


def read_shuffled_by_eight(root: Path, seed: int, each: int | None = 60) -> list[str]:
    """8 reader processes at once over one shuffled list of the directory: process k reads
    every 8th name from k (`each` of them; None: all), checking every byte. Returns the
    shuffled names."""
    names = sorted(os.listdir(root))
    random.Random(seed).shuffle(names)
    script = ("import random, sys\n"
              "for p in sys.argv[1:]:\n"
              "    i = int(p.rsplit('/f', 1)[1])\n"
              f"    assert open(p, 'rb').read() == random.Random(i).randbytes({16 * KiB}), p\n")
    procs = [subprocess.Popen([sys.executable, "-c", script,
                               *[str(root / n) for n in names[k::8][:each]]]) for k in range(8)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    return names


def test_concurrent_misses_from_eight_processes_coalesce(mount_small):
    m = mount_small("-o", "coalesce_ms=20")
    names = read_shuffled_by_eight(m.path / "d", seed=3)
    batch = m.stats()["batch"]
    assert batch["items"] / batch["batches"] >= 3, batch  # 8 readers' misses share requests
    for n in names[:40]:
        assert (m.path / "d" / n).read_bytes() == blob(int(n[1:]))


def test_concurrent_shuffled_readers_share_one_batch_per_round(mount_small):
    """With the default window: a miss is held while the other readers' files are on their
    way, so 8 readers do not split into groups that each send their own small batch."""
    m = mount_small()
    read_shuffled_by_eight(m.path / "d", seed=4)
    batch = m.stats()["batch"]
    assert batch["items"] / batch["batches"] >= 5, batch  # ~7.6 measured; 8 is one per reader


def test_shuffled_readers_of_a_whole_directory_get_its_rest_in_full_batches(mount_small):
    """No hints: once the readers have read a tenth of the directory out of order, the rest
    is fetched whole, in listing order, in batches of batch_max_items."""
    m = mount_small()
    read_shuffled_by_eight(m.path / "d", seed=5, each=None)
    s = m.stats()
    assert s["planner"]["widened"] == 1, s["planner"]
    assert 800 <= s["planner"]["widened_files"] <= 900, s["planner"]  # after ~a tenth read
    batch = s["batch"]
    assert batch["items"] <= N + 16, batch  # hardly anything fetched twice
    assert batch["batches"] <= 60, batch  # the tenth in small batches, the rest in full ones


def test_shuffled_readers_of_a_directory_never_widen_with_spread_share_1(mount_small):
    m = mount_small("-o", "spread_share=1")
    read_shuffled_by_eight(m.path / "d", seed=6, each=None)
    s = m.stats()
    assert s["planner"].get("widened", 0) == 0, s["planner"]
    assert s["batch"]["batches"] >= 100, s["batch"]  # every round of misses its own batch


def test_a_lone_miss_waits_no_longer_than_the_window(mount_small):
    window_ms = 30
    m = mount_small("-o", f"coalesce_ms={window_ms}")
    path = m.path / "d" / "f0500"
    with open(path, "rb") as f:  # lookup and open first: time only the read
        t0 = time.monotonic()
        data = f.read()
        took = time.monotonic() - t0
    assert data == blob(500)
    assert took < (window_ms + 50) / 1000, took


def test_missing_items_fail_only_themselves(cluster, mounter):
    b = Client(cluster.endpoint).bucket(new_bucket_name("bm")).create()
    try:
        for i in range(40):
            b.object(f"f{i:02d}").get_writer().put_content(blob(i, 1000))
        m = mounter(cluster.endpoint, "--bucket", b.name)
        names = sorted(os.listdir(m.path))  # listed while all 40 exist
        for gone in ("f05", "f06", "f30"):
            b.object(gone).delete()
        for name in names:
            if name in ("f05", "f06", "f30"):
                with pytest.raises(FileNotFoundError):
                    (m.path / name).read_bytes()
            else:
                assert (m.path / name).read_bytes() == blob(int(name[1:]), 1000)
        assert m.stats()["batch"]["missing"] == 3
    finally:
        b.delete(missing_ok=True)


def test_the_budget_holds_with_readers_far_beyond_it(cluster, small_files, mounter):
    """1 MiB budget: smaller than one batch, 16 MiB of small files read by 4 processes, and an
    object larger than the budget."""
    big = blob(7, 3 << 20)
    small_files.object("big.bin").get_writer().put_content(big)
    m = mounter(cluster.endpoint, "--bucket", small_files.name, "-o", "cache_size=1MiB")
    root = m.path / "d"
    names = sorted(os.listdir(root))
    script = ("import sys\nfor p in sys.argv[1:]:\n    open(p, 'rb').read()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, *[str(root / n) for n in names]])
             for _ in range(4)]
    assert (m.path / "big.bin").read_bytes() == big
    for p in procs:
        assert p.wait(timeout=300) == 0
    read_in_order(root, names[:100])
    stats = m.stats()
    cache = stats["cache"]
    assert cache["budget"] == 1 << 20
    assert cache["peak"] <= cache["budget"], cache
    assert stats["direct"]["over_budget_reads"] > 0  # big.bin came in read-sized pieces
    assert "over budget" not in m.log_text()


def test_windows_of_large_reads_count_against_the_budget(cluster, small_files, mounter):
    """Three readers of a 40 MiB object under a 16 MiB budget: their windows and read-ahead
    are reserved in the budget, never past it, and given back when the files close."""
    big = blob(9, 40 << 20)
    small_files.object("large.bin").get_writer().put_content(big)
    m = mounter(cluster.endpoint, "--bucket", small_files.name, "-o", "cache_size=16MiB")
    path = m.path / "large.bin"
    script = ("import hashlib, sys\nh = hashlib.sha256()\nwith open(sys.argv[1], 'rb') as f:\n"
              "    while b := f.read(1 << 20):\n        h.update(b)\nprint(h.hexdigest())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
             for _ in range(3)]
    want = hashlib.sha256(big).hexdigest()
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0 and out.decode().strip() == want
    stats = m.stats()
    cache, direct = stats["cache"], stats["direct"]
    assert 0 < cache["peak"] <= cache["budget"] == 16 << 20, cache
    assert direct["read_ahead"] > 0, direct
    deadline = time.monotonic() + 10  # the kernel sends RELEASE after close, in the background
    while m.stats()["cache"]["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.stats()["cache"]["reserved"] == 0  # every window given back


def test_hints_are_fetched_ahead_in_the_order_given(mount_small):
    m = mount_small("-o", "coalesce_ms=1")
    root = m.path / "d"
    names = sorted(os.listdir(root))
    order = names[:]
    random.Random(9).shuffle(order)
    order = order[:300]
    assert control.prefetch(str(m.path), (f"d/{n}" for n in order)) == len(order)
    deadline = time.monotonic() + 30
    while m.stats()["hints"].get("queued", 0) < len(order) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.stats()["hints"]["queued"] == len(order)
    before = m.stats()["cache"]
    for n in order:
        assert (root / n).read_bytes() == blob(int(n[1:]))
    after = m.stats()["cache"]
    misses = after.get("misses", 0) - before.get("misses", 0)
    assert misses <= len(order) // 10, after  # read in hinted order: nearly all hits
    assert ".aisbatchfs" not in os.listdir(m.path)


def test_hint_writers_do_not_interleave_and_a_last_line_counts(mount_small):
    """Two programs sending hints at once, in pieces: each connection is its own stream, so
    partial lines never mix; a last line without a newline still counts."""
    m = mount_small()
    path = os.getxattr(m.path, control.XATTR).decode()
    paths = [f"d/f{i:04d}" for i in range(200)]
    a, b = (socket.socket(socket.AF_UNIX) for _ in range(2))
    with a, b:
        a.connect(path)
        b.connect(path)
        a.sendall(b"prefetch\n")
        b.sendall(b"prefetch\n")
        for p, q in zip(paths[:100], paths[100:]):
            a.sendall(p[:3].encode())
            b.sendall(q[:3].encode())
            a.sendall(p[3:].encode() + (b"" if p == paths[99] else b"\n"))
            b.sendall(q[3:].encode() + b"\n")
        for s in (a, b):
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b"ok 100\n"
    hints = m.stats()["hints"]
    assert hints["received"] == 200 and hints.get("ignored", 0) == 0, hints


def test_hints_come_only_from_the_user_who_mounted_and_root(mount_small):
    """The socket lives in a directory only its owner enters; even where another user can
    reach it, the daemon checks who is calling (SO_PEERCRED) and refuses."""
    m = mount_small()
    path = os.getxattr(m.path, control.XATTR).decode()
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    os.chmod(os.path.dirname(path), 0o711)  # as if an admin opened it up
    os.chmod(path, 0o666)
    try:
        script = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
                  "s.sendall(b'prefetch\\nd/f0001\\n'); s.shutdown(socket.SHUT_WR)\n"
                  "print(s.recv(1000).decode())\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", script, path],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(os.path.dirname(path), 0o700)
    assert r.stdout.startswith("error: permission denied"), (r.stdout, r.stderr)
    stats = m.stats()
    assert stats["hints"].get("received", 0) == 0 and stats["control"]["refused"] == 1
    assert control.prefetch(str(m.path), ["d/f0001"]) == 1  # the owner (root) is taken


def test_no_batch_reads_every_file_with_its_own_get(mount_small):
    m = mount_small("--no-batch")
    root = m.path / "d"
    names = sorted(os.listdir(root))[:50]
    read_in_order(root, names)
    stats = m.stats()
    assert stats["client"]["calls_get"] == 50 and "batch" not in stats
    with pytest.raises(control.ControlError, match="takes no hints"):
        control.prefetch(str(m.path), ["d/f0001"])


@pytest.mark.parametrize("fmt", [".tgz", ".tar.lz4", ".tar"])
def test_walking_a_shard_reads_it_once(cluster, make_bucket, mounter, fmt):
    """Compressed shards are streamed once and extracted here (a GetBatch of their members
    would make the server decompress from the start per member); plain tars use GetBatch."""
    from tests.helpers import make_archive

    b = make_bucket(cluster)
    members = {f"s/{i:03d}.jpg": blob(i, 5000) for i in range(150)}
    b.object(f"shard{fmt}").get_writer().put_content(make_archive(members.items(), fmt))
    m = mounter(cluster.endpoint, "--bucket", b.name)
    root = m.path / f"shard{fmt}" / "s"
    names = sorted(os.listdir(root))
    assert len(names) == 150
    for n in names:
        assert (root / n).read_bytes() == members[f"s/{n}"]
    stats = m.stats()
    if fmt == ".tar":
        assert stats["batch"].get("shard_streams", 0) == 0
        assert stats["batch"]["items"] / stats["batch"]["batches"] >= 16
    else:
        assert stats["batch"]["shard_streams"] == 1
        assert stats["client"].get("calls_moss", 0) == 0
        assert stats["client"]["calls_get"] == 1


def test_files_arrived_in_a_batch_are_read_from_pages_stored_ahead(mount_small):
    """push_pages: files that arrive in a batch go into the kernel's page cache before they are
    opened, so most reads never reach the daemon; the bytes are still exactly the SDK's."""
    m = mount_small()
    root = m.path / "d"
    names = sorted(os.listdir(root))
    read_in_order(root, names)
    stats = m.stats()
    assert stats["pages"]["page_stores"] >= N // 2, stats["pages"]
    assert stats["fs"]["reads"] < N // 2, stats["fs"]  # the rest came from the stored pages
    assert stats["batch"]["items"] == N


@pytest.mark.parametrize("push", ["true", "false"])
def test_a_changed_object_reads_as_its_new_version(cluster, mounter, push):
    """Overwritten objects (same size, and a new size): once metadata_ttl has passed, readers
    get the new bytes, never pages or cache entries of the old version."""
    b = Client(cluster.endpoint).bucket(new_bucket_name("chg")).create()
    try:
        for i in range(40):
            b.object(f"d/f{i:04d}").get_writer().put_content(blob(i))
        m = mounter(cluster.endpoint, "--bucket", b.name, "-o",
                    f"metadata_ttl=1,push_pages={push}")
        root = m.path / "d"
        names = sorted(os.listdir(root))
        read_in_order(root, names)  # every file fetched, cached, and (push) in the page cache
        read_in_order(root, names)  # again: from the kernel's pages or the daemon's cache
        same_size, new_size = blob(1000), blob(1001, 5000)
        b.object("d/f0003").get_writer().put_content(same_size)
        b.object("d/f0007").get_writer().put_content(new_size)
        time.sleep(1.5)
        os.listdir(root)  # a new listing, with the new versions
        assert (root / "f0003").read_bytes() == same_size
        assert (root / "f0007").read_bytes() == new_size
        assert (root / "f0007").stat().st_size == len(new_size)
        read_in_order(root, [n for n in names if n not in ("f0003", "f0007")])
    finally:
        b.delete(missing_ok=True)


def read_by_name(m, ids: list[int], primed: int | None) -> tuple[int, int]:
    """Read d/f<id> for ids[:5], wait until the daemon has read the directory for the kernel
    `primed` times (None: no wait), read the rest, checking every byte: the LOOKUPs the first
    five cost, and those the rest cost."""
    root = m.path / "d"

    def lookups() -> int:
        return m.stats()["fuse"].get("lookup", 0)

    before = lookups()
    for i in ids[:5]:
        assert (root / f"f{i:04d}").read_bytes() == blob(i)
    deadline = time.monotonic() + 30
    while primed is not None and m.stats().get("dentries", {}).get("primed", 0) < primed:
        assert time.monotonic() < deadline, m.stats().get("dentries")
        time.sleep(0.05)
    middle = lookups()
    for i in ids[5:]:
        assert (root / f"f{i:04d}").read_bytes() == blob(i)
    return middle - before, lookups() - middle


@pytest.mark.parametrize("prime", [True, False], ids=["primed", "prime_dentries=false"])
def test_a_directory_opened_by_name_is_read_once_so_the_kernel_knows_its_names(mount_small,
                                                                               prime):
    """Readers that open files by name and never list their directory (a shuffled list of
    paths): after a few lookups the daemon reads the directory through the mount, the kernel
    learns every name from READDIRPLUS, and later opens send no LOOKUP. Off, every name is
    looked up."""
    m = mount_small() if prime else mount_small("-o", "prime_dentries=false")
    picked = random.Random(7).sample(range(N), 300)
    looked_up = sum(read_by_name(m, picked, 1 if prime else None))
    after = m.stats()
    if prime:
        assert after["dentries"]["primed"] == 1 and after["dentries"]["names"] == N
        assert looked_up <= 20, looked_up  # the first few, then none of the other 295
    else:
        assert "dentries" not in after and looked_up >= 300, looked_up


def test_the_directory_is_read_again_for_the_kernel_once_its_names_expire(mount_small):
    """After metadata_ttl the kernel looks the names up again, the namespace lists the
    directory again, and the daemon reads it for the kernel again: not from the kernel's own
    readdir cache (the listing is unchanged), which would bring no names."""
    m = mount_small("-o", "metadata_ttl=2")
    picked = random.Random(11).sample(range(N), 220)
    assert read_by_name(m, picked[:110], 1)[1] <= 10
    time.sleep(2.5)  # the names' entries expire
    assert read_by_name(m, picked[110:], 2)[1] <= 10
