"""Directories read for the kernel's dentry cache (fs/dentries.py), with a fake reader of the
mount and trio's MockClock: which directories are read, how often, and what is left alone."""

from __future__ import annotations

import gc
import subprocess
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from aisbatchfs.ais.models import BucketRef
from aisbatchfs.fs import dentries
from aisbatchfs.fs.dentries import DentryPrimer
from aisbatchfs.fs.namespace import Entry, Kind, Listing, Namespace
from tests.fakeais import FakeAis

B = BucketRef("b")


def run(test) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def listing(n: int) -> Listing:
    entries = tuple(Entry(f"f{i:04d}", Kind.FILE, B, f"d/f{i:04d}", size=1) for i in range(n))
    return Listing(entries, {e.name: e for e in entries}, float("inf"))


class Scans:
    """The fake reader of the mount: records each directory read; fails on request; while
    it reads, its "child" has pid 4242 + the number of reads before."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.paths: list[str] = []
        self.fail = fail or set()
        self.owned_while_reading: list[bool] = []
        self.primer: DentryPrimer | None = None

    async def __call__(self, path: str, started) -> None:
        pid = 4242 + len(self.paths)
        started(pid)
        await trio.sleep(0.01)  # a child process takes a moment
        assert self.primer is not None
        self.owned_while_reading.append(self.primer.owns(pid))
        self.paths.append(path)
        if path in self.fail:
            raise subprocess.CalledProcessError(1, ["python"])


def primer_with(scans: Scans) -> DentryPrimer:
    primer = DentryPrimer("/mnt", scans)
    scans.primer = primer
    return primer


@asynccontextmanager
async def running(primer: DentryPrimer) -> AsyncIterator[None]:
    """The primer's reader runs for the block, as for a mount's lifetime."""
    async with trio.open_nursery() as nursery:
        await nursery.start(primer.run)
        yield
        nursery.cancel_scope.cancel()


def test_a_directory_is_read_once_per_listing():
    async def main() -> None:
        scans = Scans()
        primer = primer_with(scans)
        async with running(primer):
            first, second = listing(40), listing(40)
            for _ in range(5):  # lookup after lookup in the same directory
                primer.offer(("d",), first, "d")
            await trio.sleep(1)
            assert scans.paths == ["/mnt/d"]
            primer.offer(("d",), second, "d")  # after metadata_ttl: a new listing
            await trio.sleep(1)
            assert scans.paths == ["/mnt/d", "/mnt/d"]
            assert primer.stats() == {"primed": 2, "names": 80, "queued": 0}
            assert scans.owned_while_reading == [True, True] and not primer.owns(4242)

    run(main)


def test_directories_too_large_or_too_small_are_left_to_lookups():
    async def main() -> None:
        scans = Scans()
        primer = primer_with(scans)
        async with running(primer):
            huge = listing(dentries.MAX_ENTRIES + 1)
            primer.offer(("big",), huge, "big")
            primer.offer(("big",), huge, "big")
            await trio.sleep(1)
            few = listing(dentries.MIN_ENTRIES - 1)
            primer.offer(("few",), few, "few")
            primer.offer(("few",), few, "few")
            await trio.sleep(1)
            assert scans.paths == []
            assert primer.stats()["too_large"] == 1 and primer.stats()["too_small"] == 1

    run(main)


def test_a_failed_read_is_counted_and_the_next_directory_is_read():
    async def main() -> None:
        scans = Scans(fail={"/mnt/bad"})
        primer = primer_with(scans)
        async with running(primer):
            primer.offer(("bad",), listing(40), "bad")
            primer.offer(("good",), listing(40), "good")
            await trio.sleep(1)
            assert scans.paths == ["/mnt/bad", "/mnt/good"]
            assert primer.stats()["failed"] == 1 and primer.stats()["primed"] == 1

    run(main)


def test_a_full_queue_drops_directories_and_reads_them_at_their_next_lookup():
    async def main() -> None:
        scans = Scans()
        primer = primer_with(scans)
        lists = [listing(40) for _ in range(dentries.QUEUE + 1)]
        for i, li in enumerate(lists):  # the reader is not running yet: nothing is taken
            primer.offer((i,), li, f"d{i}")
        assert primer.stats()["dropped"] == 1
        async with running(primer):
            await trio.sleep(1)
            last = dentries.QUEUE
            assert f"/mnt/d{last}" not in scans.paths and len(scans.paths) == dentries.QUEUE
            primer.offer((last,), lists[last], f"d{last}")  # its next lookup
            await trio.sleep(1)
            assert scans.paths[-1] == f"/mnt/d{last}"

    run(main)


def test_mount_paths_of_directories():
    fake = FakeAis()
    prefixed = Namespace(fake, bucket=B, prefix="data/train")
    assert prefixed.mount_path(Entry("", Kind.DIR, B, "data/train")) == ""
    assert prefixed.mount_path(Entry("x", Kind.DIR, B, "data/train/x")) == "x"
    assert prefixed.mount_path(Entry("y", Kind.DIR, B, "data/train/x/y")) == "x/y"
    assert prefixed.mount_path(Entry("t", Kind.DIR, B, "data/trainee")) is None  # not under it
    whole = Namespace(fake)
    assert whole.mount_path(Entry("b", Kind.DIR, B, "")) == "b"
    assert whole.mount_path(Entry("d", Kind.DIR, B, "d/e")) == "b/d/e"
    s3 = BucketRef("c", provider="aws")
    assert whole.mount_path(Entry("d", Kind.DIR, s3, "d")) == "@aws/c/d"
    assert whole.mount_path(Entry("f", Kind.FILE, B, "d/f")) is None


def test_a_listing_let_go_by_the_namespace_is_not_kept_alive_here():
    primer = DentryPrimer("/mnt", Scans())
    gone = listing(dentries.MAX_ENTRIES + 1)
    primer.offer(("big",), gone, "big")
    ref = weakref.ref(gone)
    del gone
    gc.collect()
    assert ref() is None
