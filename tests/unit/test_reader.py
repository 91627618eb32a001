"""The read path for whole files, on an in-memory cluster under a mock clock: windows of large
files, several readers of one file, the budget, idle readers, and compressed shards.

Files are read by what they are (no open handle): exactly what a mount without OPEN sees.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from aisbatchfs.ais.models import BucketRef
from aisbatchfs.fs.batcher import Batcher, BatcherConfig
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.namespace import Entry, Kind, Namespace
from aisbatchfs.fs.planner import Planner
from aisbatchfs.fs.reader import Reader, ReaderConfig
from tests.fakeais import FakeAis

B = BucketRef("b")
MiB = 1 << 20


def run(test, *args) -> None:
    trio.run(test, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


class Rig:
    def __init__(self, nursery: trio.Nursery, fake: FakeAis, *, budget: int = 256 * MiB,
                 **cfg: object) -> None:
        self.fake = fake
        self.ns = Namespace(fake, bucket=B)
        self.cache = ReadCache(budget)
        self.batcher = Batcher(fake, self.cache, BatcherConfig())
        cfg.setdefault("idle", 10.0)
        self.reader = Reader(self.ns, fake, self.cache, self.batcher,
                             Planner(self.ns, lambda e: e.kind is Kind.FILE and e.size <= MiB,
                                     max_items=256, max_bytes=32 * MiB),
                             ReaderConfig(**cfg))
        self.nursery = nursery

    async def start(self) -> Rig:
        await self.nursery.start(self.batcher.run)
        await self.nursery.start(self.reader.run)
        return self

    async def entry(self, path: str) -> Entry:
        e = await self.ns.resolve(path)
        assert e is not None, path
        return e

    async def read_sequentially(self, e: Entry, start: int = 0, step: int = MiB,
                                end: int | None = None) -> bytes:
        out = bytearray()
        end = e.size if end is None else end
        for off in range(start, end, step):
            out += await self.reader.read(e, off, min(step, end - off))
        return bytes(out)

    def gets(self) -> list[tuple[int, int]]:
        return [(c[2], c[3]) for c in self.fake.calls if c[0] == "get"]


def test_a_sequential_reader_gets_growing_windows_and_read_ahead():
    async def main() -> None:
        fake = FakeAis()
        data = blob(64 * MiB)
        fake.put(B, "big.bin", data)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake).start()
            e = await rig.entry("big.bin")
            assert await rig.read_sequentially(e) == data
            gets = rig.gets()
            sizes = [length for _, length in gets]
            assert sizes[:3] == [512 << 10, 1 << 20, 2 << 20]  # doubling from 512 KiB
            assert max(sizes) == 16 * MiB  # and capped
            assert sum(sizes) == 64 * MiB  # every byte fetched once
            assert len(gets) <= 10 and rig.reader.counters["read_ahead"] > 0
            n.cancel_scope.cancel()
    run(main)


def test_eight_readers_at_different_offsets_of_one_file_each_keep_their_window():
    async def main() -> None:
        fake = FakeAis()
        data = blob(64 * MiB)
        fake.put(B, "big.bin", data)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake).start()
            e = await rig.entry("big.bin")
            parts: dict[int, bytes] = {}

            async def worker(k: int) -> None:
                lo, hi = k * 8 * MiB, (k + 1) * 8 * MiB
                parts[k] = await rig.read_sequentially(e, lo, 256 << 10, hi)

            async with trio.open_nursery() as workers:
                for k in range(8):
                    workers.start_soon(worker, k)
            assert b"".join(parts[k] for k in range(8)) == data
            gets = rig.gets()
            # one window shared by all would be refetched on nearly every read (256 GETs);
            # each stream grows its own: a few GETs per worker, and read-ahead past the end
            # of each worker's part is all that is fetched twice
            assert len(gets) <= 8 * 6, len(gets)
            assert sum(length for _, length in gets) <= 2 * len(data)
            n.cancel_scope.cancel()
    run(main)


def test_windows_count_against_the_budget_and_idle_readers_give_them_back():
    async def main() -> None:
        fake = FakeAis()
        data = blob(40 * MiB)
        fake.put(B, "big.bin", data)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake, budget=16 * MiB, idle=5.0).start()
            e = await rig.entry("big.bin")
            assert await rig.read_sequentially(e, 0, MiB, 20 * MiB) == data[:20 * MiB]
            assert rig.cache.reserved > 0  # the reader may come back: its window stays
            assert rig.cache.peak <= rig.cache.budget
            await trio.sleep(7.5)  # nothing says the reader left: idle, then the next sweep
            assert rig.cache.reserved == 0
            assert rig.reader.counters["idle_streams_dropped"] == 1
            n.cancel_scope.cancel()
    run(main)


def test_with_no_room_in_the_budget_a_read_fetches_just_its_own_bytes():
    async def main() -> None:
        fake = FakeAis()
        data = blob(8 * MiB)
        fake.put(B, "big.bin", data)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake, budget=MiB + 1, whole_max=0).start()
            e = await rig.entry("big.bin")
            hog = rig.cache.reserve(MiB, demanded=True)  # someone else holds nearly all of it
            assert await rig.read_sequentially(e, 0, 128 << 10, MiB) == data[:MiB]
            assert rig.reader.counters["over_budget_reads"] >= 1
            assert all(length == 128 << 10 for _, length in rig.gets())
            hog.release()
            n.cancel_scope.cancel()
    run(main)


def test_a_large_member_beside_a_small_one_is_never_inflated_to_read_the_small_one():
    """A 200 KB .tgz holding a 200 MiB member: reading its 6-byte sibling reads the sibling
    alone, never the whole shard."""
    async def main() -> None:
        fake = FakeAis()
        fake.put_archive(B, "s.tgz", {"big.raw": bytes(200 * MiB), "small.txt": b"hello\n"})
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake, budget=1024 * MiB).start()
            e = await rig.entry("s.tgz/small.txt")
            rig.reader.accessed(e)
            assert bytes(await rig.reader.read(e, 0, 4096)) == b"hello\n"
            assert not rig.reader.archive_streamable(e)  # 200 MiB > a sixteenth of the budget
            assert fake.count("shard") == 0 and fake.count("batch") == 1
            assert rig.cache.peak < MiB
            n.cancel_scope.cancel()
    run(main)


def test_a_small_compressed_shard_is_read_whole_once_for_all_its_members():
    async def main() -> None:
        fake = FakeAis()
        members = {f"m{i:02d}.jpg": blob(5000, i) for i in range(20)}
        fake.put_archive(B, "s.tgz", members)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake).start()
            for name, data in members.items():
                e = await rig.entry(f"s.tgz/{name}")
                rig.reader.accessed(e)
                assert bytes(await rig.reader.read(e, 0, 1 << 17)) == data
            assert fake.count("shard") == 1
            assert fake.count("batch") == 0 and fake.count("get") == 0
            n.cancel_scope.cancel()
    run(main)


def test_a_failure_is_repeated_to_the_kernels_immediate_retry_but_not_after_recovery():
    from aisbatchfs.ais.errors import Unavailable

    async def main() -> None:
        fake = FakeAis()
        data = blob(8 * MiB)
        fake.put(B, "big.bin", data)
        fake.put(B, "other.bin", data)
        async with trio.open_nursery() as n:
            rig = await Rig(n, fake).start()
            e = await rig.entry("big.bin")
            fake.fail_next("get", Unavailable("target down"))
            with pytest.raises(Unavailable):
                await rig.reader.read(e, 0, MiB)
            with pytest.raises(Unavailable):  # the retry that comes at once: no new request
                await rig.reader.read(e, 0, MiB)
            assert fake.count("get") == 1
            other = await rig.entry("other.bin")
            assert await rig.reader.read(other, 0, 4096) == data[:4096]  # the cluster is back
            assert await rig.reader.read(e, 0, MiB) == data[:MiB]
            n.cancel_scope.cancel()
    run(main)
