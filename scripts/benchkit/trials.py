"""A row (one system read one way in one case) and one trial of it.

A trial starts cold: drop the page cache, a new mount, the measure (which calls mark() where
its timed part begins), the counters, unmount. Counters come from the daemon's stats before
and after the timed part: HTTP requests, calls by kind and, when the daemon reports them under
"fuse", the FUSE requests by opcode. The timed part ends with a read of the stats file, which is
itself a few FUSE requests: mark() reads the stats twice and takes what one read costs off.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

from .common import NotRun, TrialError, drop_caches, log, proc_status
from .datasets import Dataset

Measure = Callable[[Path, "Trial"], dict]


@dataclass
class Row:
    case: str
    system: Any
    reader: str
    measure: Measure | None = None        # mounts: measure(root, trial) -> result
    items: list | None = None             # read systems: (object, archpath) in the order to read
    status: str = "ok"
    runs: list[dict] = field(default_factory=list)
    stopped: bool = False
    extra: dict = field(default_factory=dict)
    flags: dict | None = None             # the system's flags as of this row's last trial

    @property
    def name(self) -> str:
        return self.system.name


def stat_delta(before: dict | None, after: dict | None, *keys: str) -> int | None:
    def get(d):
        for k in keys:
            if not isinstance(d, dict):
                return None
            d = d.get(k)
        return d if isinstance(d, (int, float)) else None
    b, a = get(before), get(after)
    return None if a is None else a - (b or 0)


def fuse_counts(stats: dict | None) -> dict[str, int] | None:
    """The daemon's FUSE requests by opcode ("fuse" in its stats), None when it has none."""
    f = (stats or {}).get("fuse")
    return {k: v for k, v in f.items() if isinstance(v, int)} if isinstance(f, dict) else None


def op_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}


class Trial:
    """What a measure can use: the system's stats, and mark() to start the timed part."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.base_stats: dict | None = None
        self.base_cpu: float | None = None
        self.stats_read_ops: dict[str, int] | None = None

    def stats(self) -> dict | None:
        f = getattr(self.system, "stats", None)
        return f() if callable(f) else None

    def mark(self) -> None:
        """The timed part starts now: requests, FUSE requests and CPU count from here."""
        first = self.stats()
        self.base_stats = self.stats()
        self.stats_read_ops = op_delta(fuse_counts(first), fuse_counts(self.base_stats))
        self.base_cpu = proc_status(self.system.pid)[1]

    def fuse_ops(self, after: dict | None) -> dict[str, int] | None:
        """FUSE requests by opcode in the timed part, less the final read of the stats."""
        d = op_delta(fuse_counts(self.base_stats), fuse_counts(after))
        if d is None:
            return None
        over = self.stats_read_ops or {}
        return {k: n - over.get(k, 0) for k, n in d.items() if n - over.get(k, 0) > 0}


def check_counts(res: dict, files: int, nbytes: int | None) -> None:
    if res.get("files") != files or (nbytes is not None and res.get("bytes") != nbytes):
        raise TrialError(f"read {res.get('files')} files / {res.get('bytes')} bytes, "
                         f"expected {files} / {nbytes}")


def check_wire(res: dict, ds: Dataset) -> None:
    """GetBatch by curl discards the TAR reply: at least a 512-byte header and the data per
    file must have arrived. The row then counts the files' bytes, as the others do."""
    need = ds.bytes + 512 * ds.files
    if res["wire_bytes"] < need:
        raise TrialError(f"received {res['wire_bytes']} bytes, less than the {need} of a TAR of the files")
    res["bytes"] = ds.bytes


def read_trial(row: Row, endpoint: str, ds: Dataset, timeout: float) -> dict:
    res = row.system.read(endpoint, ds.bucket, row.items, timeout)
    row.flags = json.loads(json.dumps(row.system.flags, default=str))
    if "wire_bytes" in res:
        check_wire(res, ds)
    check_counts(res, ds.files, ds.bytes)
    return res


@contextlib.contextmanager
def torn_down(sysm: Any, mountpoint: Path) -> Iterator[None]:
    """Whatever happens inside, the mounted system is torn down and its mountpoint removed; a
    TrialError carries the daemon's log tail (systems that keep one)."""
    try:
        yield
    except TrialError as e:
        tail = sysm.log_tail() if hasattr(sysm, "log_tail") else ""
        if tail:
            e.args = (f"{e.args[0]}\n  daemon log tail:\n    " + tail.replace("\n", "\n    "),)
        raise
    finally:
        try:
            sysm.teardown()
        except Exception as e:  # noqa: BLE001 - a teardown failure is reported, not fatal
            log(f"{sysm.name}: teardown failed: {e}")
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def mount_trial(row: Row, endpoint: str, ds: Dataset, mountpoint: Path) -> dict:
    sysm = row.system
    tr = Trial(sysm)
    t0 = time.perf_counter()
    with torn_down(sysm, mountpoint):
        root = sysm.setup(endpoint, ds.bucket, str(mountpoint))
        if root is None:
            raise NotRun(sysm.not_run or "setup() returned no mount")
        mount_s = time.perf_counter() - t0
        row.flags = json.loads(json.dumps(sysm.flags, default=str))
        tr.mark()
        res = row.measure(Path(root), tr)
        after = tr.stats()
        hwm, cpu = proc_status(sysm.pid)
    base = tr.base_stats
    ops = tr.fuse_ops(after)
    res.update({
        "mount_seconds": round(mount_s, 3),
        "http_requests": stat_delta(base, after, "client", "http_requests"),
        "calls": ({k: stat_delta(base, after, "client", k) for k in after.get("client", {})
                   if k.startswith("calls_")} or None) if after else None,
        "fuse_requests": sum(ops.values()) if ops is not None else None,
        "fuse_ops": ops,
        "fuse_stats_read_requests": sum(tr.stats_read_ops.values()) if tr.stats_read_ops is not None else None,
        "peak_rss_bytes": hwm,
        "daemon_cpu_seconds": round(cpu - tr.base_cpu, 3) if cpu is not None and tr.base_cpu is not None else None,
    })
    return res


def trial(row: Row, endpoint: str, ds: Dataset, timeout: float, mountpoint: Callable[[], Path]) -> dict:
    """One cold run of the row."""
    if row.system.not_run:
        raise NotRun(row.system.not_run)
    drop_caches(3)
    if row.system.kind == "read":
        return read_trial(row, endpoint, ds, timeout)
    return mount_trial(row, endpoint, ds, mountpoint())
