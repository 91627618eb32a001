"""The planner: predicts the next reads from directory listings.

Once a directory is listed, an open of one of its files predicts the next files in listing
order. Each directory has a stream with a window: the number of files fetched ahead. The window
starts small, doubles each time the reader keeps following the listing, and halves when the
reader jumps elsewhere (a shuffled reader drives it to zero, leaving the coalescing of
concurrent misses to do the batching; it grows again only while the reader follows). The next
window is requested once the files requested ahead of the reader are no more than one window,
so up to two batches are on their way: a reader served from pages stored ahead is faster than
one batch arrives, and with half a window ahead (as before) it caught up with every batch and
the batches went out one after another (P1: 2,600 -> 2,800 files/s). The
window is capped in items and bytes; the budget and the batches in flight bound it further.
The same holds for the members of an archive directory. A reader that finishes one directory
in order and starts another (the next shard of a dataset) keeps its window: the new stream
starts where the last one ended instead of ramping up from the start again.

Shuffled readers (a DataLoader's workers without hints) follow no listing, so windows give them
nothing and each miss costs a small coalesced batch. Once the readers of one pass over a
directory have read `spread_share` of its files (10% by default) out of order, and the rest
fits `spread_bytes` (a share of the budget), the planner widens: the rest of the directory is
fetched whole, in listing order, in full batches, and the readers find most files stored ahead.
Nothing in a shuffled order tells a mount that reads the whole directory from one that reads a
random part of it (a DistributedSampler gives each of N nodes 1/N of the files): both touch
files at random, at the same rate; only the end of the pass tells. So the share read before
widening is the measure: a mount that reads less than `spread_share` of a directory in a pass
never widens, one that reads more fetches the whole directory once per pass (for N nodes
with N <= 1/spread_share that is N times the cluster's load for that directory, in exchange
for batch speed; `spread_share=1` turns widening off). A pass ends when a file read in it is
read again (the next epoch).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aisbatchfs.fs.namespace import Entry, Listing, Namespace

START_WINDOW = 8
SPREAD_MIN = 32  # fewer files read than this never widen (a directory of a few files)


@dataclass
class Plan:
    """What one access predicts."""

    fetch: list[Entry] = field(default_factory=list)  # to fetch ahead now, in order
    # one of `fetch` whose read should reach the daemon (keep it out of the kernel's cache):
    # when the reader gets there, the next window is due
    tripwire: Entry | None = None
    passed: list[Entry] = field(default_factory=list)  # files the reader went past since


@dataclass
class _Stream:
    listing: Listing
    order: tuple[Entry, ...]  # the directory's batchable files, in listing order
    index: dict[str, int]
    pos: int = -1  # the last file read
    frontier: int = 0  # the first file not yet asked for
    window: int = START_WINDOW
    in_order: bool = True  # every read so far followed the listing from its first file
    nbytes: int = 0  # of all of `order`
    # read[i] is 1 once order[i] was read in this pass, as far as the daemon saw (once widened,
    # files stored ahead are read unseen); one read again starts the next pass. A byte per file:
    # a mount that reads millions of files keeps these for every directory it reads.
    read: bytearray = field(default_factory=bytearray)
    nread: int = 0  # ones in `read`
    read_bytes: int = 0  # sizes of those files
    widened: bool = False  # the rest of the directory was asked for in this pass


class Planner:
    def __init__(self, ns: Namespace, batchable: Callable[[Entry], bool], *,
                 max_items: int, max_bytes: int, spread_share: float = 0.1,
                 spread_bytes: int = 0, max_streams: int = 4096) -> None:
        assert 0 < spread_share <= 1
        self.ns = ns
        self.batchable = batchable
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.spread_share = spread_share
        self.spread_bytes = spread_bytes  # 0: never widen
        self.max_streams = max_streams
        self.counters: Counter[str] = Counter()
        self._streams: OrderedDict[tuple, _Stream] = OrderedDict()
        self._carry = START_WINDOW  # the window of the last stream read to its end in order

    def accessed(self, entry: Entry) -> Plan:
        """A file is being read: what to fetch ahead of the reader now (maybe nothing)."""
        found = self.ns.parent_listing(entry)
        if found is None:
            return Plan()
        dir_key, listing = found
        st = self._streams.get(dir_key)
        if st is None or st.listing is not listing:
            order = tuple(e for e in listing.entries if self.batchable(e))
            st = _Stream(listing, order, {e.name: i for i, e in enumerate(order)},
                         window=self._carry, nbytes=sum(e.size for e in order),
                         read=bytearray(len(order)))
            self._streams[dir_key] = st
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        self._streams.move_to_end(dir_key)
        i = st.index.get(entry.name)
        if i is None:
            return Plan()
        if st.read[i]:  # read again: the next pass begins
            st.read = bytearray(len(st.order))
            st.nread = st.read_bytes = 0
            st.widened = False
        st.read[i] = 1
        st.nread += 1
        st.read_bytes += st.order[i].size
        plan = Plan()
        following = st.pos == -1 or st.pos < i <= st.frontier  # a first read, or in order
        if following:
            if i == st.pos + 1 and st.window == 0:
                st.window = 2
            plan.passed = list(st.order[st.pos + 1:i])
        else:  # a jump: start over here, with less confidence
            st.window //= 2
            st.frontier = i + 1
        st.in_order = st.in_order and i == st.pos + 1
        st.pos = i
        st.frontier = max(st.frontier, i + 1)
        if st.in_order and i == len(st.order) - 1:
            self._carry = max(st.window, START_WINDOW)  # read whole in order: the next directory
        if st.window == 0 and self._widens(st):
            plan.fetch = [e for k, e in enumerate(st.order) if not st.read[k]]
            st.widened = True
            self.counters["widened"] += 1
            self.counters["widened_files"] += len(plan.fetch)
            return plan
        if st.window == 0 or st.frontier - i - 1 > st.window:
            return plan
        end = min(st.frontier + st.window, len(st.order))
        nbytes = 0
        for e in st.order[st.frontier:end]:
            if plan.fetch and nbytes + e.size > self.max_bytes:
                break
            plan.fetch.append(e)
            nbytes += e.size
        st.frontier += len(plan.fetch)
        if following:  # confidence grows only while the reader follows the listing
            st.window = min(st.window * 2, self.max_items)
        if plan.fetch:
            # the reader at fetch[t] finds no more than the next window ahead of it
            t = max(0, len(plan.fetch) - 1 - st.window)
            plan.tripwire = plan.fetch[t]
        return plan

    def _widens(self, st: _Stream) -> bool:
        """Shuffled readers have read enough of this directory in this pass, and its rest
        fits: fetch the rest whole."""
        if st.widened or st.nread < max(SPREAD_MIN, self.spread_share * len(st.order)):
            return False
        return 0 < st.nbytes - st.read_bytes <= self.spread_bytes

    def stats(self) -> dict:
        return dict(self.counters, streams=len(self._streams))
