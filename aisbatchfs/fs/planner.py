"""The planner: predicts the next reads from directory listings.

Once a directory is listed, a read of one of its files predicts the next files in listing
order. Each directory has a stream with a window: the number of files fetched ahead. The window
starts small, doubles each time the reader keeps following the listing, and halves when the
reader jumps elsewhere (a shuffled reader drives it to zero, leaving the coalescing of
concurrent misses to do the batching). The next window is requested when the reader is
halfway through the current one, so a batch is on its way before the reader reaches it. The
window is capped in items and bytes; the budget and the batches in flight bound it further.
The same holds for the members of an archive directory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aisbatchfs.fs.namespace import Entry, Listing, Namespace

START_WINDOW = 8


@dataclass
class _Stream:
    listing: Listing
    order: tuple[Entry, ...]  # the directory's batchable files, in listing order
    index: dict[str, int]
    pos: int = -1  # the last file read
    frontier: int = 0  # the first file not yet asked for
    window: int = START_WINDOW


class Planner:
    def __init__(self, ns: Namespace, batchable: Callable[[Entry], bool], *,
                 max_items: int, max_bytes: int, max_streams: int = 4096) -> None:
        self.ns = ns
        self.batchable = batchable
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_streams = max_streams
        self._streams: OrderedDict[tuple, _Stream] = OrderedDict()

    def accessed(self, entry: Entry) -> list[Entry]:
        """A file is being read: what to fetch ahead of the reader now (maybe nothing)."""
        found = self.ns.parent_listing(entry)
        if found is None:
            return []
        dir_key, listing = found
        st = self._streams.get(dir_key)
        if st is None or st.listing is not listing:
            order = tuple(e for e in listing.entries if self.batchable(e))
            st = _Stream(listing, order, {e.name: i for i, e in enumerate(order)})
            self._streams[dir_key] = st
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        self._streams.move_to_end(dir_key)
        i = st.index.get(entry.name)
        if i is None:
            return []
        if st.pos == -1 or st.pos < i <= st.frontier:  # a first read, or following the listing
            if i == st.pos + 1 and st.window == 0:
                st.window = 2
        else:  # a jump: start over here, with less confidence
            st.window //= 2
            st.frontier = i + 1
        st.pos = i
        st.frontier = max(st.frontier, i + 1)
        if st.window == 0 or st.frontier - i - 1 > st.window // 2:
            return []
        end = min(st.frontier + st.window, len(st.order))
        out = []
        nbytes = 0
        for e in st.order[st.frontier:end]:
            if out and nbytes + e.size > self.max_bytes:
                break
            out.append(e)
            nbytes += e.size
        st.frontier += len(out)
        st.window = min(st.window * 2, self.max_items)
        return out
