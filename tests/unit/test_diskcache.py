"""The disk cache on real files in temporary directories (no FUSE, no cluster): what a read
checks, what a crash can leave, the limit at every moment, remounts, the lock, a full disk,
and the eviction order. Real clock: the cache's I/O runs in worker threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from aisbatchfs.ais.models import BucketRef, Item
from aisbatchfs.fs.diskcache import DiskCache, DiskCacheConfig, DiskCacheError, DiskKey, clear

B = BucketRef("b")
U = "uuid-1"
CREATED = 1_700_000_000_000_000_000
KiB, MiB = 1 << 10, 1 << 20
REPO = Path(__file__).resolve().parents[2]


def key(i: int | str, size: int = 10 * KiB, version: str = "1", *, cluster: str = U,
        bucket: BucketRef = B, created: int = CREATED) -> DiskKey:
    return DiskKey.of(Item(bucket, f"o{i}", "", size, version, f"ck{version}"), cluster,
                      created)


def blob(i: int, n: int = 10 * KiB) -> bytes:
    return random.Random(i).randbytes(n)


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="diskcache-") as d:
        yield Path(d) / "cache"


@asynccontextmanager
async def running(dc: DiskCache) -> AsyncIterator[DiskCache]:
    async with trio.open_nursery() as nursery:
        await nursery.start(dc.run)
        yield dc
        nursery.cancel_scope.cancel()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.005)


def disk_bytes(root: Path) -> int:
    """What DIR holds, in bytes on disk (files and directories). tmp/ is walked last: a file
    renamed out of it is seen at most once."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if "tmp" in dirnames:
            dirnames.remove("tmp")
            dirnames.append("tmp")
        for p in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            try:
                total += os.lstat(p).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_round_trip_of_files_and_blocks_in_a_private_layout(root: Path):
    async def main() -> None:
        cfg = DiskCacheConfig(root, block_size=64 * KiB)
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                for i in range(20):
                    dc.put(key(i), blob(i))
                big = key("big", 300_000)
                data = blob(99, 300_000)
                dc.put_range(big, 0, data)  # 4 whole blocks and the last one, shorter
                odd = key("odd", 300_000)
                dc.put_range(odd, 10_000, data[10_000:200_000])  # holds blocks 1 and 2 whole
                await dc.flush()
                for i in range(20):
                    assert await dc.get(key(i), 10 * KiB) == blob(i)
                assert await dc.get(key(20), 10 * KiB) is None
                assert await dc.get_range(big, 100_000, 150_000) == data[100_000:250_000]
                assert await dc.get_range(big, 290_000, 50_000) == data[290_000:]
                assert await dc.get_range(odd, 0, 100_000) is None  # block 0 is not there
                # from 70 000: blocks 1 and 2, then a gap
                assert await dc.get_range(odd, 70_000, 200_000) == data[70_000:3 * 65536]
                s = dc.stats()
                assert s["writes"] == 20 + 5 + 2 and s["entries"] == 27
                assert s["misses"] == 3 and s["bytes"] <= s["limit"]
                assert dc.known(key(0)) is True and dc.known(key(20)) is False
                p = dc.path(key(0))
        assert p.parent.parent == root / "data" / U / f"ais,,b,{CREATED}"
        assert p.is_file() and stat.S_IMODE(p.stat().st_mode) == 0o600
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
        assert sorted(os.listdir(root)) == ["data", "lock", "state", "tmp"]
    trio.run(main)


def test_get_many_reads_several_entries_in_one_call(root: Path):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            async with running(dc):
                for i in range(0, 10, 2):
                    dc.put(key(i), blob(i))
                await dc.flush()
                wanted = [(key(i), 10 * KiB) for i in range(10)]
                got = await dc.get_many(wanted)
                assert got == [blob(i) if i % 2 == 0 else None for i in range(10)]
                assert await dc.get_many(wanted, until_miss=True) == [blob(0)] + [None] * 9
                s = dc.stats()
                assert s["hits"] == 5 + 1 and s["misses"] == 5 + 1
    trio.run(main)


def test_other_clusters_buckets_and_versions_are_other_entries(root: Path):
    """ais:// versions repeat in a recreated bucket: its creation time tells them apart."""
    keys = [key(1), key(1, cluster="uuid-2"), key(1, created=CREATED + 1), key(1, version="2"),
            key(1, bucket=BucketRef("b", "ais", "#ns")), key(1, bucket=BucketRef("b", "aws"))]

    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            async with running(dc):
                for i, k in enumerate(keys):
                    dc.put(k, blob(i))
                await dc.flush()
                for i, k in enumerate(keys):
                    assert await dc.get(k, 10 * KiB) == blob(i)
                assert len({dc.path(k) for k in keys}) == len(keys)
                assert len({dc.path(k).parent.parent for k in keys}) == 5  # versions share
    trio.run(main)


def _flip_data_byte(p: Path, other: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-100] ^= 1
    p.write_bytes(bytes(b))


def _flip_header_byte(p: Path, other: Path) -> None:
    b = bytearray(p.read_bytes())
    b[40] ^= 0x20  # inside the identity
    p.write_bytes(bytes(b))


def _truncate(p: Path, other: Path) -> None:
    os.truncate(p, p.stat().st_size - 1000)


def _put_other_file_here(p: Path, other: Path) -> None:
    os.rename(other, p)


BAD = {  # how an entry is spoilt -> the counter that must count it
    "flipped data byte": (_flip_data_byte, "checksum_failures"),
    "flipped header byte": (_flip_header_byte, "identity_mismatches"),
    "truncated": (_truncate, "torn_files"),
    "another key's file": (_put_other_file_here, "identity_mismatches"),
    "another version's file": (_put_other_file_here, "identity_mismatches"),
}


@pytest.mark.parametrize("remount", [False, True], ids=["same mount", "after remount"])
@pytest.mark.parametrize("how", list(BAD))
def test_a_bad_entry_is_counted_removed_and_missed(root: Path, how: str, remount: bool):
    spoil, counter = BAD[how]
    mine = key(1)
    other = key(1, version="2") if "version" in how else key(2)

    async def main() -> None:
        cfg = DiskCacheConfig(root)
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                dc.put(mine, blob(1))
                dc.put(other, blob(1))  # same length: only the identity tells them apart
                await dc.flush()
                p, q = dc.path(mine), dc.path(other)
                if not remount:
                    spoil(p, q)
                    assert await dc.get(mine, 10 * KiB) is None
                    after = dc.stats()
        if remount:
            spoil(p, q)
            with DiskCache.open(cfg, U) as dc:
                assert await dc.get(mine, 10 * KiB) is None  # before the walk: by its path
                after = dc.stats()
        assert after[counter] == 1 and after["misses"] == 1 and after["hits"] == 0
        assert not p.exists()
        with DiskCache.open(cfg, U) as dc:  # fetched again, it is served again
            async with running(dc):
                dc.put(mine, blob(1))
                await dc.flush()
                assert await dc.get(mine, 10 * KiB) == blob(1)
    trio.run(main)


def test_a_length_other_than_expected_is_never_served(root: Path):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            async with running(dc):
                dc.put(key(1), blob(1, 5000))  # a caller's mistake: not the key's size
                await dc.flush()
                assert await dc.get(key(1), 10 * KiB) is None
                assert dc.stats()["identity_mismatches"] == 1
    trio.run(main)


CHILD = r"""
import os, sys, time, trio
from pathlib import Path
from aisbatchfs.ais.models import BucketRef, Item
from aisbatchfs.fs.diskcache import DiskCache, DiskCacheConfig, DiskKey

root, mode = Path(sys.argv[1]), sys.argv[2]
def key(i): return DiskKey.of(Item(BucketRef("b"), f"o{i}", "", 100_000, "1", "ck1"), "uuid-1", 1)
def blob(i): return bytes([i % 251]) * 100_000

def stall(*args):
    print("stalled", flush=True)
    time.sleep(60)

async def main():
    # the modes that stall a write patch os in this process: writes in threads, not processes
    dc = DiskCache.open(DiskCacheConfig(root, processes=mode == "loop"), "uuid-1")
    async with trio.open_nursery() as n:
        await n.start(dc.run)
        dc.put(key(1), blob(1))
        await dc.flush()
        if mode == "loop":
            print("stalled", flush=True)
            i = 2
            while True:
                dc.put(key(i), blob(i))
                i += 1
                if i % 16 == 0:
                    await dc.flush()
        if mode == "before rename":
            os.rename = stall
        else:
            real = os.writev
            def half(fd, views):
                os.write(fd, bytes(views[0]) + bytes(views[1][:len(views[1]) // 2]))
                stall()
            os.writev = half
        dc.put(key(2), blob(2))
        await dc.flush()
trio.run(main)
"""


def workers_of(pid: int) -> list[int]:
    """The disk cache's worker processes (readers and writers) of process `pid`."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"aisbatchfs.fs.diskworkers" in argv and str(pid).encode() in argv:
            found.append(int(d.name))
    return found


def role_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return argv[argv.index(b"aisbatchfs.fs.diskworkers") + 1].decode()


def await_no_worker_of(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while workers_of(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers_of(pid) == []


@pytest.mark.parametrize("mode", ["before rename", "mid write", "loop"])
def test_kill_9_mid_write_never_serves_half_written_data(root: Path, mode: str):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), mode], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "stalled\n"
        if mode == "loop":
            assert workers_of(child.pid), "the writes go through writer processes"
            time.sleep(random.uniform(0.2, 0.5))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    await_no_worker_of(child.pid)  # its writer processes die with it
    if mode != "loop":
        assert len(os.listdir(root / "tmp")) == 1  # left by the crash

    def want(i: int) -> bytes:
        return bytes([i % 251]) * 100_000

    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            assert os.listdir(root / "tmp") == []  # set aside before anything is read
            k1 = DiskKey.of(Item(B, "o1", "", 100_000, "1", "ck1"), U, 1)
            assert await dc.get(k1, 100_000) == want(1)
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                served = 0
                for i in range(2, 3000):
                    got = await dc.get(dataclasses.replace(k1, obj=f"o{i}"), 100_000)
                    assert got is None or got == want(i)
                    served += got is not None
                if mode != "loop":
                    assert served == 0
                s = dc.stats()
                assert s["checksum_failures"] == s["torn_files"] == 0
        assert not [n for n in os.listdir(root) if n.startswith("trash.")]  # deleted
    trio.run(main)


def test_the_limit_holds_at_every_moment_and_after_remounts(tmpfs_64m: Path):
    """On a filesystem of its own, whose used bytes (statvfs) are a snapshot at every moment,
    unlike a walk of the tree, which can see an evicted file and the one written after it."""
    root = tmpfs_64m / "cache"
    limit = 6 * MiB
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = os.statvfs(tmpfs_64m)
            samples.append((st.f_blocks - st.f_bfree) * st.f_frsize)

    async def put_many(dc: DiskCache, seed: int, n: int) -> None:
        rng = random.Random(seed)

        async def one(t: int) -> None:
            for j in range(n):
                size = rng.randrange(1, 200 * KiB)
                dc.put(key(f"{seed}-{t}-{j}", size), blob(j, size))
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for t in range(20):
                nursery.start_soon(one, t)
        await dc.flush()

    async def main() -> None:
        cfg = DiskCacheConfig(root, size=limit)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with DiskCache.open(cfg, U) as dc:
                async with running(dc):
                    await put_many(dc, 1, 30)
                    first = dc.stats()
            assert first["writes"] > 100 and first["evictions"] > 50
            with DiskCache.open(cfg, U) as dc:  # full, remounted: writes evict only what
                async with running(dc):  # the walk has found
                    await put_many(dc, 2, 15)
                    await until(lambda: dc.stats()["walked"])
                    await put_many(dc, 3, 5)
                    second = dc.stats()
                    assert disk_bytes(root) <= second["bytes"] <= limit  # an upper bound
            assert second["writes"] > 10 and second["evictions"] > 10
        finally:
            stop.set()
            sampler.join(timeout=10)
        assert len(samples) > 1000 and max(samples) <= limit, (len(samples), max(samples))
        smaller = dataclasses.replace(cfg, size=limit // 2)
        with DiskCache.open(smaller, U) as dc:  # a smaller limit: evicted down to it
            async with running(dc):
                dc.put(key("x", 100 * KiB), blob(1, 100 * KiB))
                await until(lambda: dc.stats()["walked"] and dc.stats()["bytes"] <= limit // 2)
                assert dc.stats()["writes"] == 0
                assert disk_bytes(root) <= limit // 2
    trio.run(main)


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_remount_without_its_state_file_bounds_dir_by_the_filesystem(tmpfs_64m: Path,
                                                                      damage: str):
    """No state (deleted, or torn by a power cut): what DIR holds is bounded by the
    filesystem's used bytes until the walk has counted it."""
    root = tmpfs_64m / "cache"
    limit = 4 * MiB

    async def main() -> None:
        cfg = DiskCacheConfig(root, size=limit)
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                for i in range(100):
                    dc.put(key(i, 64 * KiB), blob(i, 64 * KiB))
                await dc.flush()
                n = dc.stats()["entries"]
        if damage == "missing":
            (root / "state").unlink()
        else:
            (root / "state").write_bytes(b"AISBFSST" + b"\xff" * 56)
        st = os.statvfs(tmpfs_64m)
        with DiskCache.open(cfg, U) as dc:
            assert dc.stats()["bytes"] >= (st.f_blocks - st.f_bfree) * st.f_frsize
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                assert dc.stats()["entries"] == n
                for i in range(100, 150):
                    dc.put(key(i, 64 * KiB), blob(i, 64 * KiB))
                await dc.flush()
                s = dc.stats()
                assert s["writes"] == 50 and disk_bytes(root) <= s["bytes"] <= limit
    trio.run(main)


def test_a_remount_serves_entries_without_scanning_first(root: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    n = 300

    async def main() -> None:
        cfg = DiskCacheConfig(root)
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                for i in range(n):
                    dc.put(key(i), blob(i))
                await dc.flush()
                total = dc.stats()["bytes"]
        listed: list[tuple[str, str]] = []

        def counted(fn: Callable) -> Callable:
            def call(p: str | Path = ".") -> object:
                listed.append((fn.__name__, str(p)))
                return fn(p)
            return call

        monkeypatch.setattr(os, "scandir", counted(os.scandir))
        monkeypatch.setattr(os, "listdir", counted(os.listdir))
        t0 = time.monotonic()
        with DiskCache.open(cfg, U) as dc:
            assert dc.stats()["bytes"] == total  # the saved bound: exact after a clean close
            assert dc.known(key(0)) is None  # not indexed yet, and not known missing
            for i in range(n):
                assert await dc.get(key(i), 10 * KiB) == blob(i)
            served = time.monotonic() - t0
            assert listed == [("listdir", str(root))]  # the top level, nothing under it
            s = dc.stats()
            assert not s["walked"] and s["entries"] == n and s["bytes"] == total
            monkeypatch.undo()
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                assert dc.stats()["entries"] == n and dc.stats()["bytes"] == total
                assert dc.known(key(n)) is False
        assert disk_bytes(root) <= total  # directories included
        assert served < 5.0
    trio.run(main)


def test_a_second_mount_on_one_dir_is_refused(root: Path, tmp_path_factory):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            async with running(dc):
                dc.put(key(1), blob(1))
                await dc.flush()
            with pytest.raises(DiskCacheError, match=rf"in use .* \(pid {os.getpid()}\)"):
                DiskCache.open(DiskCacheConfig(root), "uuid-2")
            with pytest.raises(DiskCacheError, match="in use"):
                clear(root)
        clear(root)
        assert os.listdir(root) == ["lock"]
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            assert await dc.get(key(1), 10 * KiB) is None
    trio.run(main)
    foreign = root.parent / "not-a-cache"
    foreign.mkdir()
    (foreign / "precious").write_text("x")
    with pytest.raises(DiskCacheError, match="not an aisbatchfs disk cache"):
        clear(foreign)
    assert (foreign / "precious").exists()


def test_clear_on_mount_starts_empty(root: Path):
    async def main() -> None:
        cfg = DiskCacheConfig(root)
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                for i in range(10):
                    dc.put(key(i), blob(i))
                await dc.flush()
        with DiskCache.open(dataclasses.replace(cfg, clear_on_mount=True), U) as dc:
            assert await dc.get(key(0), 10 * KiB) is None
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                assert dc.stats()["entries"] == 0
        assert sorted(os.listdir(root)) == ["data", "lock", "state", "tmp"]
        assert os.listdir(root / "data") == []
    trio.run(main)


def test_puts_never_wait_and_are_dropped_past_the_queue(root: Path):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root, queue_bytes=256 * KiB), U) as dc:
            for i in range(10):  # no writer runs yet
                dc.put(key(i, 64 * KiB), blob(i, 64 * KiB))
            assert dc.stats()["write_drops_queue_full"] == 6
            async with running(dc):
                await dc.flush()
                assert dc.stats()["writes"] == 4
    trio.run(main)


def test_writer_processes_outlive_the_worker_threads_that_come_and_go(root: Path, monkeypatch):
    """A writer process dies with the thread that started it (PR_SET_PDEATHSIG follows the
    thread). trio's worker threads exit after 10 s idle: in P5-disk a writer started from one
    was killed mid-epoch, and the mount wrote nothing more. Here every worker thread there is
    gets a job once the writers are up, then exits at once."""
    from trio._core import _thread_cache

    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root, writers=2), U) as dc:
            async with running(dc):
                dc.put(key(0), blob(0))
                await dc.flush()  # the writers are up, their death signal set
                assert dc.stats()["writes"] == 1
                idle = [t for t in threading.enumerate() if t.name.startswith("Trio thread")]
                monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0)
                async with trio.open_nursery() as n:
                    for _ in range(threading.active_count() + 4):
                        n.start_soon(trio.to_thread.run_sync, time.sleep, 0.05)
                await until(lambda: not any(t.is_alive() for t in idle))  # all exited
                for i in range(1, 41):
                    dc.put(key(i), blob(i))
                await dc.flush()
                s = dc.stats()
                assert (s["writes"], s["write_drops"]) == (41, 0)
                assert all(await dc.get_many([(key(i), 10 * KiB) for i in range(41)]))
    trio.run(main)


def test_arrivals_that_find_the_queue_full_are_written_later_from_what_memory_holds(root: Path):
    """The disk tier owes a write the full queue refused, and makes it from the memory cache's
    copy once the queue has room; a file memory has let go by then is dropped, never waited
    for with bytes of its own."""
    from types import SimpleNamespace

    from aisbatchfs.fs.cache import ReadCache
    from aisbatchfs.fs.disktier import DiskTier

    items = [Item(B, f"o{i}", "", 10 * KiB, "1", "ck1") for i in range(40)]

    async def main() -> None:
        memory = ReadCache(len(items) * 10 * KiB)  # holds them all, nothing more
        for i, item in enumerate(items):
            memory.fill(item, blob(i), memory.reserve(10 * KiB, demanded=True))
        with DiskCache.open(DiskCacheConfig(root, queue_bytes=64 * KiB), U) as dc:
            tier = DiskTier(dc, SimpleNamespace(bucket_created_ns={B: CREATED}), memory)
            async with trio.open_nursery() as nursery:
                await nursery.start(dc.run)
                await nursery.start(tier.run)
                for i, item in enumerate(items):  # one burst: 400 KiB at a 64 KiB queue
                    tier.put(item, blob(i))
                memory.get(items[-1])  # the last one is read: it goes first for room
                room = memory.reserve(10 * KiB, demanded=True)  # ...before its turn
                assert room is not None and memory.peek(items[-1]) is None
                await tier.flush()
                s = tier.stats()
                assert s["write_deferred"] >= 30 and s["owed"] == 0
                assert (s["writes"], s["write_drops"], s["write_drops_queue_full"]) == (39, 1, 1)
                found = await tier.get_many(items)
                assert found == [blob(i) for i in range(39)] + [None]
                nursery.cancel_scope.cancel()
    trio.run(main)


def test_a_wait_for_room_ends_even_if_more_puts_found_the_queue_full_meanwhile(root: Path):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root, queue_bytes=64 * KiB), U) as dc:
            for i in range(7):  # no writer runs yet: six are queued, the seventh finds it full
                dc.put(key(i), blob(i))
            roomy = trio.Event()

            async def wait_for_room() -> None:
                await dc.room()
                roomy.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_room)
                await trio.testing.wait_all_tasks_blocked()
                dc.put(key(7), blob(7))  # full again, while the other waits
                async with running(dc):
                    with trio.fail_after(10):
                        await roomy.wait()
    trio.run(main)


def test_a_reader_process_killed_costs_one_call_of_misses_then_another_reads(root: Path):
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root), U) as dc:
            async with running(dc):
                for i in range(8):
                    dc.put(key(i), blob(i))
                await dc.flush()
                wanted = [(key(i), 10 * KiB) for i in range(8)]
                assert await dc.get_many(wanted) == [blob(i) for i in range(8)]
                readers = [p for p in workers_of(os.getpid()) if role_of(p) == "read"]
                assert len(readers) == 1
                os.kill(readers[0], signal.SIGKILL)
                assert await dc.get_many(wanted) == [None] * 8  # read errors: fetched again
                s = dc.stats()
                assert (s["reader_restarts"], s["read_errors"], s["reads_disabled"]) == (1, 8, "")
                assert await dc.get_many(wanted) == [blob(i) for i in range(8)]
                assert dc.stats()["entries"] == 8  # nothing was removed for it
    trio.run(main)


def tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of its own, unmounted afterwards (needs root, as the whole suite does)."""
    with tempfile.TemporaryDirectory(prefix="diskcache-fs-") as d:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d],
                           capture_output=True, text=True, timeout=10)
        if r.returncode:
            pytest.fail(f"cannot mount a tmpfs: {r.stderr.strip()}", False)
        try:
            yield Path(d)
        finally:
            subprocess.run(["umount", d], capture_output=True, timeout=10, check=False)


@pytest.fixture
def small_fs() -> Iterator[Path]:
    yield from tmpfs("2m")


@pytest.fixture
def tmpfs_64m() -> Iterator[Path]:
    yield from tmpfs("64m")


def test_a_full_disk_degrades_to_memory_only_with_one_log_line(small_fs: Path,
                                                               caplog: pytest.LogCaptureFixture):
    size = 64 * KiB

    async def main() -> None:
        cfg = DiskCacheConfig(small_fs / "cache", refresh=60.0)  # no new look at free space
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                for i in range(3):
                    dc.put(key(i, size), blob(i, size))
                await dc.flush()
                assert dc.stats()["writes"] == 3
                with open(small_fs / "filler", "wb") as f:  # someone else fills the disk
                    try:
                        while True:
                            f.write(b"\0" * size)
                            f.flush()
                    except OSError:
                        pass
                caplog.clear()
                for i in range(3, 10):
                    dc.put(key(i, size), blob(i, size))
                await dc.flush()
                s = dc.stats()
                assert "ENOSPC" in s["disabled"] and s["writes"] == 3
                assert s["write_drops_off"] >= 5
                for i in range(3):  # what is there is still read
                    assert await dc.get(key(i, size), size) == blob(i, size)
                dc.put(key(11, size), blob(11, size))
                assert dc.stats()["write_drops_off"] == s["write_drops_off"] + 1
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1 and "memory only" in lines[0].getMessage()
        assert os.listdir(small_fs / "cache" / "tmp") == []
    trio.run(main)


def test_eviction_takes_entries_read_first(root: Path):
    """Within a mount: entries read from disk go before those only written."""
    async def main() -> None:
        with DiskCache.open(DiskCacheConfig(root, size=_room_for(6)), U) as dc:
            keys = _keys_in_one_directory(dc, 9)
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                for k in keys[:6]:
                    dc.put(k, blob(0, ENTRY))
                await dc.flush()
                assert dc.stats()["evictions"] == 0
                for k in keys[:2]:
                    assert await dc.get(k, ENTRY) is not None
                for k in keys[6:8]:
                    dc.put(k, blob(0, ENTRY))
                    await dc.flush()
                present = [dc.known(k) for k in keys[:8]]
                assert present == [False, False] + [True] * 6
                dc.put(keys[8], blob(0, ENTRY))  # now a random one of those written
                await dc.flush()
                assert sum(dc.known(k) is True for k in keys[2:9]) == 6
    trio.run(main)


def test_eviction_after_a_remount_read_then_least_recently_used_then_new(root: Path):
    async def main() -> None:
        cfg = DiskCacheConfig(root, size=_room_for(6))
        with DiskCache.open(cfg, U) as dc:
            keys = _keys_in_one_directory(dc, 9)
            old, new = keys[:6], keys[6:]
            async with running(dc):
                for k in old:
                    dc.put(k, blob(0, ENTRY))
                await dc.flush()
            for age, k in enumerate(reversed(old)):  # old[0] used longest ago
                t = time.time() - 1000 * (age + 1)
                os.utime(dc.path(k), (t, t))
        with DiskCache.open(cfg, U) as dc:
            async with running(dc):
                await until(lambda: dc.stats()["walked"])
                assert await dc.get(old[3], ENTRY) is not None  # read in this mount
                gone = []
                for k in new:
                    dc.put(k, blob(0, ENTRY))
                    await dc.flush()
                    gone += [o for o in old if dc.known(o) is False and o not in gone]
                assert gone == [old[3], old[0], old[1]]
                assert dc.stats()["evictions"] == 3
    trio.run(main)


ENTRY = 30_000  # a 32 KiB file with its header


def _room_for(n: int) -> int:
    """A limit that holds exactly n entries of ENTRY bytes in one data/C/B/HH directory, on
    4 KiB blocks: DIR, data, tmp, lock and state, the three directories, the entries."""
    return (5 + 3) * 4096 + n * (32 * KiB + 96)


def _keys_in_one_directory(dc: DiskCache, n: int) -> list[DiskKey]:
    """Keys whose entries share one HH directory, so the limit's arithmetic is exact."""
    found: list[DiskKey] = []
    i = 0
    while len(found) < n:
        k = key(f"e{i}", ENTRY)
        if dc.path(k).parent.name == "00":
            found.append(k)
        i += 1
    return found
