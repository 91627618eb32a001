"""The planner's predictions, against a fake namespace holding a few directory listings."""

from __future__ import annotations

import random

from aisbatchfs.ais import BucketRef
from aisbatchfs.fs.namespace import Entry, Kind, Listing
from aisbatchfs.fs.planner import START_WINDOW, Planner

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


def planner(ns: FakeNamespace, max_items: int = 256, max_bytes: int = 1 << 30) -> Planner:
    return Planner(ns, lambda e: e.kind is Kind.FILE, max_items=max_items,  # type: ignore[arg-type]
                   max_bytes=max_bytes)


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
    order = d[2][:]
    random.Random(1).shuffle(order)
    predicted, _ = read_all(p, order)
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
