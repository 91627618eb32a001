"""A client peer's own read, in a process of its own so the bench's deadline can end it.

  peer_read.py LABEL ENDPOINT BUCKET ITEMS     ITEMS: one "object<TAB>archpath" a line (archpath
                                               empty for whole objects), read in that order

prepare() runs before the clock starts; the peer's read_all() (or read_members() when the items
are archive members) is timed. Prints one JSON line: {"seconds", "files", "bytes"} plus the
peer's own figures (`Peer.last`), or {"not_run": why}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/, for benchkit

from benchkit.peers import all_peers  # noqa: E402


def main() -> None:
    label, endpoint, bucket, itemsfile = sys.argv[1:5]
    peer = next(p for p in all_peers() if p.label == label)
    peer.prepare()
    if peer.not_run:
        print(json.dumps({"not_run": peer.not_run}), flush=True)
        return
    items = [tuple(line.split("\t")) for line in Path(itemsfile).read_text().splitlines()]
    t0 = time.perf_counter()
    if any(a for _, a in items):
        nbytes = peer.read_members(endpoint, bucket, [(o, a) for o, a in items])
    else:
        nbytes = peer.read_all(endpoint, bucket, [o for o, _ in items])
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "files": len(items), "bytes": nbytes, **peer.last}), flush=True)


if __name__ == "__main__":
    main()
