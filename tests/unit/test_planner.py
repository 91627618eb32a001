"""The planner's predictions, against a fake namespace holding a few directory listings."""

from __future__ import annotations

import random

from aisbatchfs.ais import BucketRef
from aisbatchfs.fs.namespace import Entry, Kind, Listing
from aisbatchfs.fs.planner import SPREAD_MIN, START_WINDOW, Planner

B = BucketRef("b")


def listing(prefix: str, n: int, size: int = 1000) -> tuple[tuple, Listing, list[Entry]]:
    entries = [Entry(f"f{i:04d}", Kind.FILE, B, f"{prefix}/f{i:04d}", size=size)
               for i in range(n)]
    key = (int(Kind.DIR), (B.provider, B.namespace, B.name), prefix, "")
    return key, Listing(tuple(entries), {e.name: e for e in entries}, expires=1e9), entries


class FakeNamespace:
    def __init__(self, *dirs: tuple[tuple, Listing, list[Entry]]) -> None:
        self.listings = {key: lst for key, lst, _ in dirs}

    def parent_listing(self, entry: Entry):
        key = (int(Kind.DIR), (B.provider, B.namespace, B.name),
               entry.path.rpartition("/")[0], "")
        lst = self.listings.get(key)
        return (key, lst) if lst else None


def planner(ns: FakeNamespace, max_items: int = 256, max_bytes: int = 1 << 30,
            spread_bytes: int = 0) -> Planner:
    return Planner(ns, lambda e: e.kind is Kind.FILE, max_items=max_items,  # type: ignore[arg-type]
                   max_bytes=max_bytes, spread_share=0.1, spread_bytes=spread_bytes)


def shuffled(entries: list[Entry], seed: int = 1) -> list[Entry]:
    order = entries[:]
    random.Random(seed).shuffle(order)
    return order


def read_all(p: Planner, entries: list[Entry]) -> tuple[list[Entry], list[int]]:
    """Open every entry in order; return what was predicted (in order) and the batch sizes."""
    predicted, sizes = [], []
    for e in entries:
        ahead = p.accessed(e).fetch
        if ahead:
            predicted += ahead
            sizes.append(len(ahead))
    return predicted, sizes


def test_a_reader_following_the_listing_gets_every_next_file_once_in_growing_windows():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d), max_items=256)
    predicted, sizes = read_all(p, d[2])
    assert predicted == d[2][1:]  # every file after the first, once, in order
    assert sizes[:6] == [8, 16, 32, 64, 128, 256]
    assert max(sizes) == 256


def test_a_sequential_reader_always_has_files_requested_ahead_of_it():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d))
    asked = 0  # files 1..asked have been requested
    for i, e in enumerate(d[2]):
        asked += len(p.accessed(e).fetch)
        assert asked - i >= min(START_WINDOW, len(d[2]) - 1 - i), i


def test_a_shuffled_reader_drives_the_window_to_nothing():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d))
    predicted, _ = read_all(p, shuffled(d[2]))
    assert len(predicted) < 60  # a few guesses early on, then none


def test_windows_are_capped_in_bytes():
    d = listing("d", 500, size=1 << 20)
    p = planner(FakeNamespace(d), max_bytes=16 << 20)
    _, sizes = read_all(p, d[2])
    assert max(sizes) == 16


def test_a_directory_read_whole_in_order_hands_its_window_to_the_next():
    shards = [listing(f"s{k}", 250) for k in range(3)]
    p = planner(FakeNamespace(*shards))
    read_all(p, shards[0][2])
    first = p.accessed(shards[1][2][0]).fetch
    assert len(first) == 256 - 7  # the window reached in s0 (256 items), not 8 again
    assert first[0] is shards[1][2][1]


def test_a_directory_not_read_in_order_hands_nothing_on():
    shards = [listing(f"s{k}", 250) for k in range(2)]
    p = planner(FakeNamespace(*shards))
    read_all(p, shards[0][2][:100] + shards[0][2][150:])  # skips 50 files
    assert len(p.accessed(shards[1][2][0]).fetch) == START_WINDOW


def test_files_of_unlisted_directories_predict_nothing():
    d = listing("d", 10)
    p = planner(FakeNamespace())
    assert p.accessed(d[2][0]).fetch == []


def test_a_reader_seen_only_at_tripwires_is_always_ahead_of_itself():
    """Without OPEN, files stored ahead in the kernel's cache are read without a word to the
    daemon: the planner hears only of the first read and of each window's tripwire (a file
    left out of the kernel's cache). That is enough for every file to be requested before the
    reader gets to it, at one daemon read per window."""
    d = listing("d", 5000)
    p = planner(FakeNamespace(d), max_items=256)
    requested: set[str] = set()
    tripwires: set[str] = set()
    heard = 0
    for i, e in enumerate(d[2]):
        if i == 0 or e.name in tripwires or e.name not in requested:
            heard += 1
            plan = p.accessed(e)
            requested.update(f.name for f in plan.fetch)
            if plan.tripwire is not None:
                tripwires.add(plan.tripwire.name)
        if i + 1 < len(d[2]):
            assert d[2][i + 1].name in requested, i  # the next file is on its way already
    assert heard <= 5000 // 256 + 8, heard


def test_the_planner_says_which_files_the_reader_went_past():
    d = listing("d", 100)
    p = planner(FakeNamespace(d))
    p.accessed(d[2][0])
    assert [e.name for e in p.accessed(d[2][5]).passed] == [f"f{i:04d}" for i in range(1, 5)]


def test_shuffled_readers_that_read_a_tenth_of_a_directory_get_the_rest_whole_in_listing_order():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d), spread_bytes=1 << 30)
    order = shuffled(d[2])
    widened_at, fetched = None, []
    for k, e in enumerate(order):
        plan = p.accessed(e)
        if len(plan.fetch) > 100:
            assert widened_at is None, "widened twice in one pass"
            widened_at, fetched = k, plan.fetch
    assert widened_at == 100 - 1  # the 100th file read (a tenth) widens
    read_before = {e.name for e in order[:100]}
    assert fetched == [e for e in d[2] if e.name not in read_before]  # each once, listing order
    assert p.stats()["widened"] == 1 and p.stats()["widened_files"] == 900


def test_a_mount_that_reads_less_than_the_share_of_a_directory_never_fetches_it_whole():
    """One of 16 nodes of a DistributedSampler: 1/16 of the files, shuffled, epoch after epoch
    (a new subset each epoch, as set_epoch gives)."""
    d = listing("d", 4000)
    p = planner(FakeNamespace(d), spread_bytes=1 << 30)
    for epoch in range(3):
        mine = shuffled(d[2], seed=epoch)[: len(d[2]) // 16]
        assert max(len(p.accessed(e).fetch) for e in mine) < 10, epoch
    assert p.stats().get("widened", 0) == 0


def test_a_directory_is_fetched_whole_only_once_its_unread_rest_fits_its_share_of_the_budget():
    d = listing("d", 1000, size=1000)
    p = planner(FakeNamespace(d), spread_bytes=600 * 1000)
    order = shuffled(d[2])
    widened = [k for k, e in enumerate(order) if len(p.accessed(e).fetch) > 100]
    assert widened == [400 - 1]  # not at a tenth: 900 KB unread; at 400 read, 600 KB


def test_each_pass_over_a_directory_widens_once_when_its_share_is_read():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d), spread_bytes=1 << 30)
    for epoch in range(3):
        # widened: the readers read most files from pages stored ahead, unseen by the daemon;
        # it hears of those that were not there yet
        seen = shuffled(d[2], seed=epoch)[:300]
        widened = [k for k, e in enumerate(seen) if len(p.accessed(e).fetch) > 100]
        assert len(widened) == 1, (epoch, widened)
    assert p.stats()["widened"] == 3


def test_a_small_directory_read_shuffled_is_left_to_coalescing():
    d = listing("d", SPREAD_MIN * 2)
    p = planner(FakeNamespace(d), spread_bytes=1 << 30)
    order = shuffled(d[2])
    for e in order[:SPREAD_MIN - 1]:  # a tenth of 64 files, but fewer than SPREAD_MIN
        p.accessed(e)
    assert p.stats().get("widened", 0) == 0


def test_a_reader_following_the_listing_never_widens():
    d = listing("d", 1000)
    p = planner(FakeNamespace(d), spread_bytes=1 << 30)
    read_all(p, d[2])
    assert p.stats().get("widened", 0) == 0
