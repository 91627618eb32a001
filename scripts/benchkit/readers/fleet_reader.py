"""F8's reader: python_reader.py's walk (os.scandir sorted by name, depth first, every file read
whole), released on cue so that the readers of every mount start together.

  fleet_reader.py ROOT     prints "ready", waits for a line on stdin, then walks ROOT

Standard library and python_reader.py only.

Prints one JSON line: {"seconds", "files", "bytes", "start", "end"} (start and end on
time.monotonic(), the same clock in every process), with "error" when a read failed (files
and bytes then count what was read before it; the exit status is 1).
"""

from __future__ import annotations

import json
import sys
import time

from python_reader import walk_sizes  # beside this file: the script's directory is on sys.path


def main() -> int:
    root = sys.argv[1]
    files = nbytes = 0
    error = None
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()

    try:
        for n in walk_sizes(root):
            files += 1
            nbytes += n
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
