"""F8's reader: python_reader.py's walk (os.scandir sorted by name, depth first, every file read
whole), released on cue so that the readers of every mount start together.

  fleet_reader.py ROOT     prints "ready", waits for a line on stdin, then walks ROOT

Prints one JSON line: {"seconds", "files", "bytes", "start", "end"} (start and end on
time.monotonic(), the same clock in every process), with "error" when a read failed (files
and bytes then count what was read before it; the exit status is 1). Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    root = sys.argv[1]
    files = nbytes = 0
    error = None
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()

    def rec(d: str, top: bool) -> None:
        nonlocal files, nbytes
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if top and e.name == ".aisbatchfs":
                continue
            if e.is_dir(follow_symlinks=False):
                rec(e.path, False)
            elif e.is_file(follow_symlinks=False):
                with open(e.path, "rb") as f:
                    nbytes += len(f.read())
                files += 1

    try:
        rec(root, True)
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    end = time.monotonic()
    out = {"seconds": end - start, "files": files, "bytes": nbytes, "start": start, "end": end}
    if error:
        out["error"] = error
    print(json.dumps(out), flush=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
