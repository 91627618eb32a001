"""The disk cache through real mounts of a real cluster: a remount reads from disk, damage on
disk is caught and fetched again, a crash mid-write serves nothing half-written, the size limit
holds while writes are under way, and a full disk is no error to readers."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mounting import force_unmount, run

KiB = 1 << 10


def blob(i: int, size: int = 16 * KiB) -> bytes:
    return random.Random(i).randbytes(size)


@pytest.fixture
def files(cluster, make_bucket):
    b = make_bucket(cluster, "dc")
    data = {f"d/f{i:03d}": blob(i, 8 * KiB + i) for i in range(200)}
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda kv: b.object(kv[0]).get_writer().put_content(kv[1]), data.items()))
    return b, data


def read_all(root: Path, data: dict[str, bytes]) -> None:
    for name, want in sorted(data.items()):
        assert (root / name).read_bytes() == want, name


def drop_page_cache() -> None:
    subprocess.run(["sync"], timeout=60)
    Path("/proc/sys/vm/drop_caches").write_text("3")


@pytest.fixture
def tmpfs(tmp_path):
    """make(size) -> a directory on a tmpfs of that size (unmounted at teardown)."""
    made = []

    def make(size: str) -> Path:
        d = tmp_path / f"tmpfs{len(made)}"
        d.mkdir()
        run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)])
        made.append(d)
        return d / "cache"

    yield make
    for d in made:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def data_requests(m) -> int:
    c = m.stats()["client"]
    return c.get("calls_moss", 0) + c.get("calls_get", 0) + c.get("calls_get_range", 0)


def test_a_remount_reads_every_file_from_disk_and_none_from_the_cluster(cluster, files,
                                                                        mounter, tmp_path):
    b, data = files
    cache = tmp_path / "cache"
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    read_all(m.path, data)
    assert stat_mode(cache) == 0o700
    m.stop()
    m2 = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    drop_page_cache()
    read_all(m2.path, data)
    s = m2.stats()
    assert data_requests(m2) == 0, s["client"]
    assert s["disk"]["hits"] >= len(data) and s["batch"]["disk_hits"] >= len(data)


def disk_writes_done(m, timeout: float = 30) -> None:
    """Wait until what the mount queued for its disk cache is written or dropped."""
    deadline = time.monotonic() + timeout
    while m.stats()["disk"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.stats()["disk"]["pending"] == 0


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def entry_files(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "data").rglob("*") if p.is_file())


def test_damaged_entries_are_caught_removed_and_fetched_again(cluster, files, mounter, tmp_path):
    """A flipped byte, a truncated file, a file moved over another's name, and entries of an
    object overwritten since: each read gives the right bytes."""
    b, data = files
    cache = tmp_path / "cache"
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    read_all(m.path, data)
    m.stop()
    entries = entry_files(cache)
    assert len(entries) == len(data)
    overwritten = {"d/f007": blob(10_007), "d/f150": blob(10_150, 3000)}  # a new version
    # the entries damaged below are of other objects: a damaged entry of an overwritten one
    # would never be read (the new version's entry has another name), and so never caught
    others = [e for e in entries
              if not any(n.encode() in e.read_bytes()[:512] for n in overwritten)]
    assert len(others) == len(entries) - len(overwritten)
    flipped, truncated, moved_from, moved_to = others[:4]
    raw = bytearray(flipped.read_bytes())
    raw[-100] ^= 0x01
    flipped.write_bytes(bytes(raw))
    truncated.write_bytes(truncated.read_bytes()[:-500])
    shutil.copyfile(moved_from, moved_to)
    for name, new in overwritten.items():
        b.object(name).get_writer().put_content(new)
    data = {**data, **overwritten}
    m2 = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    drop_page_cache()
    read_all(m2.path, data)
    disk = m2.stats()["disk"]
    assert disk["checksum_failures"] >= 1 and disk["torn_files"] >= 1, disk
    assert disk["identity_mismatches"] >= 1, disk
    assert "disk cache" in m2.log_text()


def test_kill_9_while_writing_then_a_remount_serves_only_right_bytes(cluster, files, mounter,
                                                                     tmp_path):
    b, data = files
    cache = tmp_path / "cache"
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    reader = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\nfor n in sorted(os.listdir(sys.argv[1])):\n"
        "    open(os.path.join(sys.argv[1], n), 'rb').read()\n"), str(m.path / "d")],
        stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # batches arriving, entries being written
    os.kill(m.proc.pid, signal.SIGKILL)
    reader.wait(timeout=60)
    m.proc.wait(timeout=30)
    force_unmount(m.path)
    m2 = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    drop_page_cache()
    read_all(m2.path, data)


def test_the_size_limit_holds_while_writes_are_under_way(cluster, files, mounter, tmpfs):
    """The cache has a filesystem of its own here, so the filesystem's use is the cache's."""
    b, data = files
    cache = tmpfs("64m")
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o",
                f"disk_cache={cache},disk_cache_size=600KiB")
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = os.statvfs(cache.parent)
            peak[0] = max(peak[0], (st.f_blocks - st.f_bfree) * st.f_frsize)

    t = threading.Thread(target=sample)
    t.start()
    try:
        read_all(m.path, data)  # 1.7 MiB of files through a 600 KiB cache
        disk_writes_done(m)
    finally:
        stop.set()
        t.join()
    assert 0 < peak[0] <= 600 * KiB, peak[0]
    assert m.stats()["disk"]["evictions"] > 0


def test_a_full_disk_is_memory_only_with_one_log_line(cluster, files, mounter, tmpfs):
    """Something else fills the cache's filesystem while reads go on: writes fail (ENOSPC),
    the cache stops writing with one log line, and no reader sees an error."""
    b, data = files
    cache = tmpfs("4m")
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    filler = cache.parent / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill it up to the last block
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
    read_all(m.path, data)  # no reader error
    drop_page_cache()
    read_all(m.path, data)
    disk_writes_done(m)
    lines = [ln for ln in m.log_text().splitlines() if "disk cache" in ln and "WARNING" in ln]
    assert len(lines) == 1, lines


def test_one_directory_one_mount_and_clear(cluster, files, mounter, tmp_path):
    b, data = files
    cache = tmp_path / "cache"
    m = mounter(cluster.endpoint, "--bucket", b.name, "-o", f"disk_cache={cache}")
    read_all(m.path, data)
    second = tmp_path / "second"
    second.mkdir()
    r = run([sys.executable, "-m", "aisbatchfs", "mount", cluster.endpoint, str(second),
             "--bucket", b.name, "-o", f"disk_cache={cache}"], check=False, timeout=60)
    assert r.returncode == 1 and b"disk cache" in r.stderr and b"in use" in r.stderr, r.stderr
    r = run([sys.executable, "-m", "aisbatchfs", "cache", "clear", str(cache)], check=False)
    assert r.returncode == 1  # not while mounted
    m.stop()
    run([sys.executable, "-m", "aisbatchfs", "cache", "clear", str(cache)])
    assert entry_files(cache) == []
