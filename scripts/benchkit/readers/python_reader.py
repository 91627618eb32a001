"""The python reader: one process, plain open()/read(), timed inside after the interpreter starts.

  python_reader.py walk ROOT              os.scandir sorted by name, depth first, every file read
                                          whole (ROOT/.aisbatchfs skipped)
  python_reader.py list FILE I N          the paths on lines I, I+N, I+2N ... of FILE; prints
                                          "ready", waits for a line on stdin, then reads (P3)
  python_reader.py seq PATH BLOCK         one file in BLOCK-byte reads until EOF (P4)

Prints one JSON line: {"seconds", "files", "bytes"}. Standard library only: the interpreter's
start and imports stay out of the timed part, and nothing of the bench is loaded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
import time


def walk_sizes(d: str, top: bool = True) -> Iterator[int]:
    """The size read of each file under d: os.scandir sorted by name, depth first, every file
    read whole (d/.aisbatchfs skipped at the top). fleet_reader.py walks with it too."""
    with os.scandir(d) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if top and e.name == ".aisbatchfs":
            continue
        if e.is_dir(follow_symlinks=False):
            yield from walk_sizes(e.path, False)
        elif e.is_file(follow_symlinks=False):
            with open(e.path, "rb") as f:
                yield len(f.read())


def walk(root: str) -> tuple[int, int]:
    sizes = list(walk_sizes(root))
    return len(sizes), sum(sizes)


def read_list(paths: list[str]) -> tuple[int, int]:
    nbytes = 0
    for p in paths:
        with open(p, "rb") as f:
            nbytes += len(f.read())
    return len(paths), nbytes


def read_seq(path: str, block: int) -> tuple[int, int]:
    nbytes = 0
    with open(path, "rb") as f:
        while b := f.read(block):
            nbytes += len(b)
    return 1, nbytes


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "walk":
        t0 = time.perf_counter()
        files, nbytes = walk(args[0])
    elif mode == "list":
        with open(args[0]) as f:
            paths = f.read().splitlines()[int(args[1])::int(args[2])]
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        files, nbytes = read_list(paths)
    elif mode == "seq":
        t0 = time.perf_counter()
        files, nbytes = read_seq(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"seconds": time.perf_counter() - t0, "files": files, "bytes": nbytes}), flush=True)


if __name__ == "__main__":
    main()
