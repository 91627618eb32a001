"""Listings a mount can trust: what the namespace does with listings that may be a false
picture (a target out of the cluster map), on an in-memory cluster under a mock clock."""

from __future__ import annotations

import trio
import trio.testing

from aisbatchfs.ais.models import BucketRef
from aisbatchfs.fs.namespace import Entry, Kind, Namespace
from tests.fakeais import FakeAis

B = BucketRef("b")


def run(test) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def bucket_with(n: int) -> FakeAis:
    fake = FakeAis()
    for i in range(n):
        fake.put(B, f"d/f{i:04d}", b"x")
    return fake


def directory() -> Entry:
    return Entry("d", Kind.DIR, B, "d")


async def names(ns: Namespace) -> list[str]:
    return [e.name for e in (await ns.listing(directory())).entries]


def test_an_empty_listing_after_a_full_one_is_asked_again_until_the_target_is_back():
    async def main() -> None:
        fake = bucket_with(20)
        ns = Namespace(fake, bucket=B, ttl=60, negative_ttl=10, metadata_timeout=10)
        assert len(await names(ns)) == 20
        await trio.sleep(61)  # the listing expires
        fake.hidden = {f"d/f{i:04d}" for i in range(20)}  # the only target left the map
        fake.active = 0

        async def target_returns() -> None:
            await trio.sleep(3)
            fake.hidden, fake.active = set(), 1

        async with trio.open_nursery() as n:
            n.start_soon(target_returns)
            t0 = trio.current_time()
            assert len(await names(ns)) == 20  # never the empty picture
            assert 3 <= trio.current_time() - t0 < 10
        assert ns.counters["doubtful_listings"] == 1
    run(main)


def test_a_listing_still_doubtful_at_the_deadline_keeps_the_previous_one_briefly():
    async def main() -> None:
        fake = bucket_with(20)
        ns = Namespace(fake, bucket=B, ttl=60, negative_ttl=10, metadata_timeout=10)
        assert len(await names(ns)) == 20
        await trio.sleep(61)
        fake.hidden = {f"d/f{i:04d}" for i in range(12)}  # a partial picture
        fake.active = 0
        t0 = trio.current_time()
        assert len(await names(ns)) == 20  # the previous listing, kept
        assert trio.current_time() - t0 <= 10.5  # within metadata_timeout
        assert ns.counters["doubtful_listings_served"] == 1
        fake.hidden, fake.active = set(), 1
        await trio.sleep(10.5)  # kept for negative_ttl only: then asked again
        assert len(await names(ns)) == 20
    run(main)


def test_objects_really_deleted_are_believed_once_a_second_listing_agrees():
    async def main() -> None:
        fake = bucket_with(20)
        ns = Namespace(fake, bucket=B, ttl=60, negative_ttl=10, metadata_timeout=10)
        assert len(await names(ns)) == 20
        await trio.sleep(61)
        for i in range(15):
            del fake.store[(B, f"d/f{i:04d}")]  # the map is whole: a real deletion
        t0 = trio.current_time()
        assert len(await names(ns)) == 5
        assert trio.current_time() - t0 < 1  # one more listing, not the whole deadline
    run(main)


def test_a_first_listing_while_the_map_lacks_targets_waits_for_them():
    async def main() -> None:
        fake = bucket_with(20)
        ns = Namespace(fake, bucket=B, ttl=60, negative_ttl=10, metadata_timeout=10)
        ns.cluster.most = 2  # the mount has seen two targets; one is out of the map now
        fake.hidden = {f"d/f{i:04d}" for i in range(0, 20, 2)}
        fake.active = 1

        async def target_returns() -> None:
            await trio.sleep(4)
            fake.hidden, fake.active = set(), 2

        async with trio.open_nursery() as n:
            n.start_soon(target_returns)
            assert len(await names(ns)) == 20
    run(main)
