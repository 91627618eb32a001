"""`aisbatchfs warm PATH...`: pull a tree (or a list of files) into a mount's cache.

The paths go to the mount's control socket first (as hints), so the daemon fetches them in
batches, in order; then each file is read through the mount, which waits for what is not there yet. A
progress bar (files, bytes, rate, ETA) is drawn when stderr is a terminal; a summary at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from aisbatchfs import control


def mount_root(path: Path) -> Path | None:
    """The aisbatchfs mount holding `path` (where /.aisbatchfs/stats is)."""
    p = path.resolve()
    for candidate in (p, *p.parents):
        if (candidate / ".aisbatchfs" / "stats").is_file():
            return candidate
    return None


def files_under(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            for dirpath, dirs, names in os.walk(p):
                dirs.sort()
                for n in sorted(names):
                    yield Path(dirpath) / n
        else:
            yield p


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


class Progress:
    def __init__(self, total_files: int, total_bytes: int, stream=sys.stderr) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.t0 = time.monotonic()
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def add(self, nbytes: int) -> None:
        self.files += 1
        self.bytes += nbytes
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or self.files == self.total_files):
            self._last = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = self.bytes / elapsed
        frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
        eta = (self.total_bytes - self.bytes) / rate if rate > 0 else 0
        bar = "#" * int(frac * 30)
        return (f"[{bar:<30}] {self.files:,}/{self.total_files:,} files  "
                f"{_size(self.bytes)}/{_size(self.total_bytes)}  {_size(rate)}/s  "
                f"ETA {int(eta) // 60}:{int(eta) % 60:02d} ")


def warm(paths: list[str], from_file: str | None = None) -> int:
    targets = [Path(p) for p in paths]
    if from_file:
        targets += [Path(line.strip()) for line in Path(from_file).read_text().splitlines()
                    if line.strip()]
    if not targets:
        print("aisbatchfs warm: nothing to warm", file=sys.stderr)
        return 2
    root = mount_root(targets[0])
    if root is None:
        print(f"aisbatchfs warm: {targets[0]} is not inside an aisbatchfs mount", file=sys.stderr)
        return 1
    files = list(files_under(targets))
    sizes = [f.stat().st_size for f in files]
    before = json.loads((root / ".aisbatchfs" / "stats").read_text())
    try:
        control.prefetch(str(root), (str(f.resolve().relative_to(root)) for f in files))
    except control.ControlError:
        pass  # --no-batch mounts take no hints: reading still warms the page cache
    progress = Progress(len(files), sum(sizes))
    errors = 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = 0
                while chunk := fh.read(1 << 20):
                    n += len(chunk)
            progress.add(n)
        except OSError as e:
            errors += 1
            print(f"\naisbatchfs warm: {f}: {e.strerror}", file=sys.stderr)
            progress.add(0)
    after = json.loads((root / ".aisbatchfs" / "stats").read_text())
    if progress.tty:
        sys.stderr.write("\n")
    elapsed = time.monotonic() - progress.t0
    requests = after["client"].get("http_requests", 0) - before["client"].get("http_requests", 0)
    print(f"warmed {progress.files - errors:,} files, {_size(progress.bytes)} in {elapsed:.1f}s "
          f"({_size(progress.bytes / max(elapsed, 1e-6))}/s), {requests:,} requests, "
          f"{errors} errors; cache {_size(after.get('cache', {}).get('used', 0))} of "
          f"{_size(after.get('cache', {}).get('budget', 0))}")
    return 1 if errors else 0
