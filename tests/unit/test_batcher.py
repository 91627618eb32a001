"""The batcher, specified on an in-memory cluster under a mock clock: which requests a set of
reads costs, when each reader wakes, and that failures release every waiter and every byte.

Time here is trio's MockClock with autojump: it jumps whenever all tasks wait, so "within
2 ms" means exactly that, and no test sleeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from aisbatchfs.ais.errors import (
    BatchTruncated,
    DeadlineExceeded,
    ObjectNotFound,
    ProtocolError,
    Throttled,
    Unavailable,
)
from aisbatchfs.ais.models import BucketRef, Item
from aisbatchfs.fs.batcher import Batcher, BatcherConfig
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.clustermap import SETTLE, ClusterWatch
from tests.fakeais import FakeAis

B = BucketRef("b")
KiB = 1 << 10


def run(test: Callable[..., Awaitable[None]], *args: object) -> None:
    trio.run(test, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def files(fake: FakeAis, n: int, size: int = 16 * KiB) -> list[Item]:
    return [fake.put(B, f"d/f{i:04d}", bytes([i % 251]) * size) for i in range(n)]


class Rig:
    """A batcher on a fake cluster, running in a nursery for the test's duration."""

    def __init__(self, nursery: trio.Nursery, *, budget: int = 64 << 20,
                 fake: FakeAis | None = None, **cfg: object) -> None:
        self.fake = fake or FakeAis()
        self.cache = ReadCache(budget)
        self.cluster = ClusterWatch(self.fake)
        self.batcher = Batcher(self.fake, self.cache, BatcherConfig(**cfg), cluster=self.cluster)
        self.nursery = nursery

    async def start(self) -> Rig:
        await self.nursery.start(self.batcher.run)
        return self

    async def read_all(self, items: list[Item]) -> dict[Item, bytes]:
        """Read every item at once, as concurrent readers would."""
        got: dict[Item, bytes] = {}

        async def one(item: Item) -> None:
            got[item] = bytes(await self.batcher.get(item))

        async with trio.open_nursery() as n:
            for item in items:
                n.start_soon(one, item)
        return got

    def batch_sizes(self) -> list[int]:
        return [len(c[1]) for c in self.fake.calls if c[0] == "batch"]


def expected(fake: FakeAis, item: Item) -> bytes:
    return fake.store[(item.bucket, item.obj)].data


def test_concurrent_misses_within_the_window_share_one_batch():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, coalesce=0.002).start()
            items = files(rig.fake, 8)
            t0 = trio.current_time()
            got = await rig.read_all(items)
            assert all(got[i] == expected(rig.fake, i) for i in items)
            assert rig.batch_sizes() == [8]
            # the coalescing window, the first byte, and one item after another
            assert trio.current_time() - t0 == pytest.approx(0.002 + 0.002 + 7 * 0.0001)
            n.cancel_scope.cancel()
    run(main)


def test_a_lone_miss_waits_no_longer_than_the_window():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, coalesce=0.030).start()
            item = files(rig.fake, 1)[0]
            t0 = trio.current_time()
            await rig.batcher.get(item)
            assert trio.current_time() - t0 == pytest.approx(0.030 + rig.fake.first_byte)
            n.cancel_scope.cancel()
    run(main)


def test_predicted_items_are_never_fetched_twice():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n).start()
            items = files(rig.fake, 20)
            assert rig.batcher.prefetch(items) == 20
            assert rig.batcher.prefetch(items) == 0  # queued already
            got = await rig.read_all(items)  # demanded while on their way, or cached
            assert len(got) == 20
            assert sum(rig.batch_sizes()) == 20 and rig.fake.count("get") == 0
            assert rig.batcher.prefetch(items) == 0  # cached now
            n.cancel_scope.cancel()
    run(main)


def test_a_missing_item_is_confirmed_by_a_get_and_fails_alone():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n).start()
            items = files(rig.fake, 4)
            del rig.fake.store[(B, items[2].obj)]
            results: dict[Item, object] = {}

            async def one(item: Item) -> None:
                try:
                    results[item] = await rig.batcher.get(item)
                except ObjectNotFound as e:
                    results[item] = e

            async with trio.open_nursery() as readers:
                for item in items:
                    readers.start_soon(one, item)
            assert isinstance(results[items[2]], ObjectNotFound)
            assert all(results[i] == expected(rig.fake, i) for i in items if i != items[2])
            assert rig.batch_sizes() == [4] and rig.fake.count("get") == 1
            assert rig.batcher.counters["missing"] == 1
            n.cancel_scope.cancel()
    run(main)


def test_a_failed_batch_is_split_and_retried_down_to_the_items_not_yet_arrived():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n).start()
            items = files(rig.fake, 8)
            rig.fake.fail_next("batch", BatchTruncated("cut", first_missing=3), after=3)
            got = await rig.read_all(items)
            assert all(got[i] == expected(rig.fake, i) for i in items)
            assert sorted(rig.batch_sizes()) == [2, 3, 8]  # three arrived; the other five, split
            assert rig.batcher.counters["splits"] == 1 and rig.fake.count("get") == 0
            assert rig.cache.reserved == 0
            n.cancel_scope.cancel()
    run(main)


def test_throttling_halves_the_batches_in_flight_and_never_becomes_single_gets():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, in_flight=4, max_items=4).start()
            items = files(rig.fake, 16)
            rig.fake.fail_next("batch", Throttled("slow down", status=429), times=2)
            got = await rig.read_all(items)
            assert len(got) == 16 and rig.fake.count("get") == 0
            assert rig.batcher.counters["throttled"] == 2
            assert rig.batcher.in_flight_limit < 4 or rig.fake.count("batch") > 4
            assert rig.cache.reserved == 0
            n.cancel_scope.cancel()
    run(main)


def test_a_stalled_batch_is_hedged_by_a_single_get_after_half_the_first_byte_deadline():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, first_byte_timeout=4.0).start()
            items = files(rig.fake, 30)
            rig.batcher.counters["items"] = 1000  # enough history for a hedge to be allowed
            rig.fake.fail_next("batch", stall=3.0)
            t0 = trio.current_time()
            data = await rig.batcher.get(items[0])
            assert data == expected(rig.fake, items[0])
            assert trio.current_time() - t0 == pytest.approx(2.0 + rig.fake.get_latency, abs=0.01)
            assert rig.batcher.counters["hedges"] == 1
            n.cancel_scope.cancel()
    run(main)


def test_no_first_byte_in_time_drops_the_batch_and_its_readers_fetch_alone():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, first_byte_timeout=1.0).start()
            items = files(rig.fake, 2)
            rig.fake.fail_next("batch", stall=10.0)
            got = await rig.read_all(items)
            assert len(got) == 2 and rig.cache.reserved == 0
            assert rig.fake.count("get") + rig.fake.count("batch") >= 2
            n.cancel_scope.cancel()
    run(main)


def test_a_read_that_gets_nothing_within_the_read_deadline_fails_with_deadline_exceeded():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, read_timeout=5.0, first_byte_timeout=20.0).start()
            rig.batcher.counters["hedges"] = 10**6  # no hedge allowed
            item = files(rig.fake, 1)[0]
            rig.fake.fail_next("batch", stall=100.0)
            t0 = trio.current_time()
            with pytest.raises(DeadlineExceeded):
                await rig.batcher.get(item)
            assert trio.current_time() - t0 == pytest.approx(5.0)
            n.cancel_scope.cancel()
    run(main)


def test_the_budget_holds_with_readers_far_beyond_it_and_is_all_given_back():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, budget=256 * KiB, max_items=64).start()
            items = files(rig.fake, 100)
            rig.batcher.prefetch(items[50:])
            got = await rig.read_all(items[:50])
            assert len(got) == 50
            assert rig.cache.peak <= rig.cache.budget  # also asserted on every change
            await trio.sleep(1)
            assert rig.cache.reserved == 0
            n.cancel_scope.cancel()
    run(main)


def test_a_corrupt_compressed_shard_releases_its_members_at_once():
    """A .tgz whose stream fails to inflate: the members' reservations and waiters are released,
    each read falls back to a GET of its member, and a later miss is not held."""
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n).start()
            members = rig.fake.put_archive(B, "s.tgz", {f"m{i}": b"m" * 100 for i in range(5)})
            archive = rig.fake.archive(B, "s.tgz")
            rig.fake.fail_next("shard", ProtocolError("bad archive: Error -3 while decompressing"))
            await rig.batcher.stream_shard(archive, members, members[0])
            assert rig.cache.reserved == 0 and not any(map(rig.batcher.pending, members))
            assert rig.batcher.counters["shard_failures"] == 1
            t0 = trio.current_time()
            assert await rig.batcher.get(members[1]) == b"m" * 100
            assert trio.current_time() - t0 < 0.01  # not waiting on anything left behind
            n.cancel_scope.cancel()
    run(main)


def test_a_batch_failure_wakes_every_waiter_before_its_deadline():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, read_timeout=30.0).start()
            items = files(rig.fake, 3)
            rig.fake.fail_next("batch", Unavailable("connection reset"))
            rig.fake.fail_next("batch", Unavailable("connection reset"), times=4)
            t0 = trio.current_time()
            got = await rig.read_all(items)
            assert len(got) == 3 and trio.current_time() - t0 < 1.0
            assert rig.cache.reserved == 0
            n.cancel_scope.cancel()
    run(main)


def test_readers_whose_items_are_on_their_way_are_waited_for():
    """Eight readers, each reading its next file as soon as the last arrives: after the first
    round, the misses of a round are held for each other and share one batch."""
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, coalesce=0.002).start()
            items = files(rig.fake, 80)

            async def reader(k: int) -> None:
                for item in items[k::8]:
                    await rig.batcher.get(item)

            async with trio.open_nursery() as readers:
                for k in range(8):
                    readers.start_soon(reader, k)
            sizes = rig.batch_sizes()
            assert sum(sizes) == 80
            assert sum(sizes) / len(sizes) >= 7, sizes
            n.cancel_scope.cancel()
    run(main)


class FakeDisk:
    """A disk tier in memory: what get_many finds, and what was put."""

    def __init__(self, held: dict[Item, bytes]) -> None:
        self.held = dict(held)
        self.puts: list[Item] = []

    async def get_many(self, items: list[Item]) -> list[bytes | None]:
        await trio.sleep(0.0005)
        return [self.held.get(item) for item in items]

    def holds(self, item: Item) -> bool:
        return item in self.held

    def put(self, item: Item, data: bytes) -> None:
        self.puts.append(item)
        self.held[item] = bytes(data)


def test_files_on_disk_arrive_from_there_and_only_the_rest_from_the_cluster():
    async def main() -> None:
        async with trio.open_nursery() as n:
            fake = FakeAis()
            items = files(fake, 10)
            disk = FakeDisk({i: expected(fake, i) for i in items[:6]})
            cache = ReadCache(64 << 20)
            batcher = Batcher(fake, cache, BatcherConfig(), disk=disk)
            await n.start(batcher.run)
            got = {}

            async def one(item: Item) -> None:
                got[item] = bytes(await batcher.get(item))

            async with trio.open_nursery() as readers:
                for item in items:
                    readers.start_soon(one, item)
            assert all(got[i] == expected(fake, i) for i in items)
            assert [len(c[1]) for c in fake.calls if c[0] == "batch"] == [4]  # the rest only
            assert sorted(disk.puts, key=str) == sorted(items[6:], key=str)  # kept on disk
            assert batcher.counters["disk_hits"] == 6
            n.cancel_scope.cancel()
    run(main)


def test_a_miss_the_disk_holds_is_read_at_once_not_held_for_other_readers():
    """Eight shuffled readers: a miss is held (up to MAX_HOLD) for the others' next misses to
    share a round trip to the cluster, but one the disk cache holds needs no round trip."""
    async def main() -> None:
        async with trio.open_nursery() as n:
            fake = FakeAis(first_byte=0.050)  # the others' items are on their way a while
            items = files(fake, 8)
            disk = FakeDisk({items[7]: expected(fake, items[7])})
            batcher = Batcher(fake, ReadCache(64 << 20), BatcherConfig(), disk=disk)
            await n.start(batcher.run)
            async with trio.open_nursery() as readers:
                for item in items[:7]:
                    readers.start_soon(batcher.get, item)
                await trio.sleep(0.010)
                t0 = trio.current_time()
                assert bytes(await batcher.get(items[7])) == expected(fake, items[7])
                assert trio.current_time() - t0 == pytest.approx(0.0005)  # the disk's time
            assert all(items[7] not in c[1] for c in fake.calls if c[0] == "batch")
            assert batcher.counters["disk_direct"] == 1
            n.cancel_scope.cancel()
    run(main)


def test_a_404_while_a_target_is_away_is_retried_until_it_is_back():
    """A target restarts: its objects say 404 while it is out of the map, and for a moment
    after it rejoins. Their readers wait for it (within the read deadline), never ENOENT."""
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, read_timeout=30.0).start()
            items = files(rig.fake, 4)
            rig.fake.active = 2
            assert await rig.cluster.degraded() is None  # the whole map, 2 targets, is known
            rig.fake.active, rig.fake.map_version = 1, 3  # target 2 leaves with items 1, 2
            rig.fake.hidden = {items[1].obj, items[2].obj}
            await trio.sleep(1)  # past the last reading of the map

            async def back() -> None:
                await trio.sleep(2)
                rig.fake.active, rig.fake.map_version = 2, 4  # back in the map...
                await trio.sleep(1.5)
                rig.fake.hidden = set()  # ...and answering for its objects

            n.start_soon(back)
            t0 = trio.current_time()
            got = await rig.read_all(items)
            assert got == {i: expected(rig.fake, i) for i in items}
            assert 3.5 <= trio.current_time() - t0 < 6  # bytes once its target answers
            assert (await rig.cluster.degraded(fresh=True)).startswith("changed")
            await trio.sleep(SETTLE)
            assert await rig.cluster.degraded(fresh=True) is None  # settled
            assert rig.batcher.counters["missing"] == 0
            assert rig.cluster.counters["unsure_404"] > 0
            n.cancel_scope.cancel()

    run(main)


def test_a_404_while_a_target_stays_away_is_eio_at_the_read_deadline():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n, read_timeout=6.0).start()
            items = files(rig.fake, 2)
            rig.fake.active = 2
            await rig.cluster.degraded()
            rig.fake.active, rig.fake.map_version = 1, 2
            rig.fake.hidden = {items[0].obj}
            await trio.sleep(1)  # past the last reading of the map
            t0 = trio.current_time()
            with pytest.raises(Unavailable, match="1 of 2 storage targets"):
                await rig.batcher.get(items[0])
            assert 5 < trio.current_time() - t0 <= 6.0
            assert bytes(await rig.batcher.get(items[1])) == expected(rig.fake, items[1])
            n.cancel_scope.cancel()

    run(main)


def test_a_404_on_a_whole_settled_map_is_enoent_at_once():
    async def main() -> None:
        async with trio.open_nursery() as n:
            rig = await Rig(n).start()
            item = files(rig.fake, 1)[0]
            del rig.fake.store[(item.bucket, item.obj)]
            t0 = trio.current_time()
            with pytest.raises(ObjectNotFound):
                await rig.batcher.get(item)
            assert trio.current_time() - t0 < 0.1
            assert rig.cluster.counters["unsure_404"] == 0
            n.cancel_scope.cancel()

    run(main)
