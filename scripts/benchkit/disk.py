"""P5-disk, the daemon's disk cache (-o disk_cache=DIR): three epochs over a dataset 4x the memory
budget and well within the disk cache, beside rclone's own disk cache (--vfs-cache-mode full).

One run of a row: a new, empty cache directory (ours: DIR, which the daemon creates; rclone:
--cache-dir), a mount, epoch 1 (everything from the cluster, written to the disk as it arrives),
epoch 2 on the same mount, then unmount, a mount again on the same directory, epoch 3. Before
each epoch: the daemon's disk write queue is let drain (its stats' disk.queued and
disk.reserved at 0, at most 60 s, not timed: settle_seconds), then `sync` and `echo 3 >
/proc/sys/vm/drop_caches`, so the kernel keeps no page, dentry or inode of the mount nor of the
cache directory (written entries are on the disk, not dirty pages). The directory is removed
after the run (its size is recorded first). It is made under the bench's work dir unless that
is on tmpfs or ramfs (drop_caches cannot empty those: the "disk" would be memory); then under
~/.cache/aisbatchfs/bench-disk-cache.

The readers, each epoch read whole:
  python    python_reader's walk: listing order (scandir sorted, depth first). Chosen over a
            shuffled single reader: it is how P1 and P5 read, the daemon's windows batch it at
            full size, and memory (a quarter of the set) holds nothing epoch 2 reads first (a
            cycle through 4x an LRU-like budget), so epoch 2 stands on the disk cache alone; a
            single shuffled reader without hints makes one-item batches (coalescing, not the
            disk), and shuffled reads are the next row's
  8-procs   P3's 8 processes released together, each reading every 8th path of a shuffled
            list, a new shuffle each epoch (seed SHUFFLE_SEED + epoch), no hints

Per epoch, from our daemon's counters (its control socket: reading them is no FUSE request),
after minus before:
  READs          fuse.read (fs.reads without "fuse"): reads that reached the daemon
  served by      page cache: files - READs (the kernel answered: pages the daemon stored ahead,
                 push_pages); memory: cache.hits (READs answered from the daemon's memory);
                 fetched: cache.misses (READs that waited for the disk or the cluster)
  data from      where the epoch's files came from: memory kept from the epoch before
                 (cache.reread_hits), the disk (batch.disk_hits), the cluster (batch.items -
                 batch.items_retried: items asked of GetBatch). Pages stored ahead are filled
                 from either, so "served by page cache" says nothing of the source
  disk hit rate  disk.hits / (disk.hits + disk.misses): of the items looked up on disk (all
                 that missed memory), the share found there
  data requests  client calls_moss + calls_get + calls_get_member + calls_get_range (GetBatch
                 and GET calls; redirects and retries inside a call not counted again; HTTP
                 requests, every hop, beside them)
From /proc: VmHWM and VmRSS of the daemon (the stats' pid) or of rclone after the epoch;
MemAvailable before and after it. rclone has no counters: time, memory and its cache's size.

The limit, below our rows: after a run's third epoch and before its directory is removed, the
cache directory's entry files are read back whole by READBACK_THREADS threads of this process,
page cache dropped first (not timed with the run): what the disk gives a plain reader, the
floor under any epoch served from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import MiB, NotRun, drop_caches, human, log, proc_status
from .datasets import Dataset
from .fuse_peers import RcloneCachePeer
from .measures import P3_PROCS, SHUFFLE_SEED, shuffled
from .systems import Ours, PeerSystem
from .trials import Measure, Row, torn_down

if TYPE_CHECKING:
    from .runner import Bench

EPOCHS = 3
MOUNTED = ("new mount", "same mount", "remount")
READERS = ("python", f"{P3_PROCS}-procs")
OURS = "aisbatchfs"
RCLONE = RcloneCachePeer.name
DATA_CALLS = ("calls_moss", "calls_get", "calls_get_member", "calls_get_range")
SECTIONS = ("client", "batch", "cache", "disk", "fs", "fuse", "pages", "direct")
SETTLE_S = 60.0
READBACK_THREADS = 4
NOT_DISK = ("tmpfs", "ramfs")
FALLBACK_BASE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aisbatchfs" / "bench-disk-cache"


# -- the systems: a fresh cache directory per run, kept across the remount ------------------------


class DiskOurs(Ours):
    """The daemon with -o cache_size=N,disk_cache=DIR; fresh() names the run's new DIR."""

    def __init__(self, cache_size: int) -> None:
        super().__init__(OURS, [])
        self.cache_size = cache_size
        self.flags = {"batch": True, "args": ["-o", f"cache_size={cache_size},disk_cache=DIR"],
                      "disk_cache": "DIR: a new empty directory per run, the same for the remount"}

    def fresh(self, d: Path) -> None:
        self.args = ["-o", f"cache_size={self.cache_size},disk_cache={d}"]
        self.flags["args"] = list(self.args)

    def stats(self) -> dict | None:
        """Over the control socket (no FUSE request, unlike MOUNT/.aisbatchfs/stats)."""
        if self.m is None:
            return None
        try:
            return self.m.stats()
        except (OSError, ValueError):
            return None


class DiskPeer(PeerSystem):
    """rclone with --vfs-cache-mode full; fresh() names the run's new --cache-dir."""

    def fresh(self, d: Path) -> None:
        self.peer.cache_dir = d

    def stats(self) -> dict | None:
        return None


# -- /proc and the cache directory ------------------------------------------------------------------


def fstype(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, typ = "", "?"
    p = str(path.resolve()) + "/"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, t = line.split()[:3]
            if p.startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, typ = mnt, t
    return typ


def cache_base(b: Bench) -> tuple[Path, str]:
    """Where the runs' cache directories go, and its filesystem type: not tmpfs or ramfs."""
    typ = fstype(b.workdir)
    if typ not in NOT_DISK:
        return b.workdir, typ
    base = FALLBACK_BASE / b.workdir.name
    base.mkdir(parents=True, exist_ok=True)
    return base, fstype(base)


def mem_available() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def vm(pid: int | None) -> tuple[int | None, int | None]:
    """(VmHWM, VmRSS) bytes of a live process."""
    hwm = rss = None
    if pid:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    return hwm, rss


def du(d: Path) -> int | None:
    """Bytes on disk under `d` (allocated blocks: rclone's cache files are sparse)."""
    if not d.exists():
        return None
    total = 0
    for dirpath, _, names in os.walk(d):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def settle(sysm: Any) -> float:
    """Wait (untimed) until the daemon's disk cache has written or dropped what it queued."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < SETTLE_S:
        d = (sysm.stats() or {}).get("disk")
        if not isinstance(d, dict) or (not d.get("queued") and not d.get("reserved")):
            break
        time.sleep(0.1)
    return round(time.monotonic() - t0, 3)


def cold() -> None:
    """sync, then drop the page cache, dentries and inodes."""
    os.sync()
    drop_caches(3)


def readback(d: Path) -> dict | None:
    """The limit: every file under d/data read whole by READBACK_THREADS threads, cold."""
    paths = [os.path.join(dp, n) for dp, _, names in os.walk(d / "data") for n in names]
    if not paths:
        return None

    def size(p: str) -> int:
        with open(p, "rb", buffering=0) as f:
            return len(f.read())
    cold()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(READBACK_THREADS) as ex:
        nbytes = sum(ex.map(size, paths, chunksize=64))
    return {"seconds": round(time.perf_counter() - t0, 4), "files": len(paths), "bytes": nbytes}


# -- one epoch's figures ------------------------------------------------------------------------------


def _d(before: dict | None, after: dict | None, section: str, key: str) -> int | None:
    """after - before of a counter; a counter missing from a section that is there is 0 (the
    daemon's counters appear on their first count), a missing section None."""
    sa = (after or {}).get(section)
    if not isinstance(sa, dict):
        return None
    a, b = sa.get(key, 0), ((before or {}).get(section) or {}).get(key, 0)
    return a - (b if isinstance(b, (int, float)) else 0) if isinstance(a, (int, float)) else None


def _share(n: int | None, files: int) -> float | None:
    return round(n / files, 4) if n is not None and files else None


def counters(before: dict | None, after: dict | None) -> dict:
    """Every counter that moved in the epoch, by section (for looking into a miss later)."""
    out = {}
    for sec in SECTIONS:
        sa, sb = (after or {}).get(sec), (before or {}).get(sec) or {}
        if isinstance(sa, dict):
            moved = {k: v - (sb.get(k) or 0) for k, v in sa.items()
                     if isinstance(v, int) and not isinstance(v, bool) and v != (sb.get(k) or 0)}
            if moved:
                out[sec] = moved
    return out


def epoch_figures(before: dict | None, after: dict | None, files: int) -> dict:
    """What the daemon's counters say of one epoch (all None for a system without them)."""
    reads = _d(before, after, "fuse", "read")
    if reads is None:
        reads = _d(before, after, "fs", "reads")
    hits, misses = _d(before, after, "cache", "hits"), _d(before, after, "cache", "misses")
    kept = _d(before, after, "cache", "reread_hits")
    from_disk = _d(before, after, "batch", "disk_hits")
    items, retried = _d(before, after, "batch", "items"), _d(before, after, "batch", "items_retried")
    net = items - (retried or 0) if items is not None else None
    dh, dm = _d(before, after, "disk", "hits"), _d(before, after, "disk", "misses")
    calls = [_d(before, after, "client", k) for k in DATA_CALLS]
    fuse = (after or {}).get("fuse")
    fuse_req = (sum(v for v in fuse.values() if isinstance(v, int))
                - sum(v for v in ((before or {}).get("fuse") or {}).values() if isinstance(v, int))
                if isinstance(fuse, dict) else None)
    page = max(0, files - reads) if reads is not None else None
    disk_end = (after or {}).get("disk") if isinstance((after or {}).get("disk"), dict) else {}
    return {
        "daemon_reads": reads,
        "served": {"page_cache": page, "memory": hits, "fetched": misses},
        "served_share": {"page_cache": _share(page, files), "memory": _share(hits, files),
                         "fetched": _share(misses, files)},
        "data_from": {"memory": kept, "disk": from_disk, "network": net},
        "from_share": {"memory": _share(kept, files), "disk": _share(from_disk, files),
                       "network": _share(net, files)},
        "disk_hit_rate": round(dh / (dh + dm), 4) if dh is not None and dm is not None and dh + dm else None,
        "disk_lookups": dh + dm if dh is not None and dm is not None else None,
        "data_requests": sum(c or 0 for c in calls) if any(c is not None for c in calls) else None,
        "http_requests": _d(before, after, "client", "http_requests"),
        "bytes_received": _d(before, after, "client", "bytes_received"),
        "fuse_requests": fuse_req,
        "disk": {"writes": _d(before, after, "disk", "writes"),
                 "write_drops": _d(before, after, "disk", "write_drops"),
                 "evictions": _d(before, after, "disk", "evictions"),
                 "bytes": disk_end.get("bytes"), "entries": disk_end.get("entries"),
                 "walked": disk_end.get("walked"), "disabled": disk_end.get("disabled")} if disk_end else None,
        "counters": counters(before, after) if after else None,
    }


# -- one run: three epochs, a remount before the third ------------------------------------------


def reader(b: Bench, ds: Dataset, name: str, epoch: int) -> Measure:
    if name == "python":
        return b.measures.walk(ds)
    return b.measures.procs(ds, False, shuffled(ds, SHUFFLE_SEED + epoch))


def epoch_trial(b: Bench, row: Row, endpoint: str, ds: Dataset, base: Path, label: str) -> dict:
    sysm = row.system
    if sysm.not_run:
        raise NotRun(sysm.not_run)
    mp = b.new_mountpoint()
    cdir = base / f"{mp.name}.cache"
    sysm.fresh(cdir)
    drop_caches(3)
    epochs: list[dict] = []
    mount_s: list[float] = []
    root: str | None = None
    try:
        with torn_down(sysm, mp):
            for e in range(1, EPOCHS + 1):
                waited = settle(sysm) if e > 1 else 0.0
                if e != 2:
                    if e == 3:
                        sysm.teardown()
                    t0 = time.perf_counter()
                    root = sysm.setup(endpoint, ds.bucket, str(mp))
                    if root is None:
                        raise NotRun(sysm.not_run or "setup() returned no mount")
                    mount_s.append(round(time.perf_counter() - t0, 3))
                    row.flags = json.loads(json.dumps(sysm.flags, default=str))
                cold()
                before = sysm.stats()
                pid = (before or {}).get("pid") or sysm.pid
                mem0, cpu0 = mem_available(), proc_status(pid)[1]
                res = reader(b, ds, row.reader, e)(Path(root), None)
                after = sysm.stats()
                mem1, cpu1 = mem_available(), proc_status(pid)[1]
                hwm, rss = vm(pid)
                rec = {"epoch": e, "mounted": MOUNTED[e - 1], "seconds": round(res["seconds"], 4),
                       "files": res["files"], "bytes": res["bytes"],
                       "files_per_s": round(res["files"] / res["seconds"], 1) if res["seconds"] else None,
                       "settle_seconds": waited, "pid": pid, "vm_hwm_bytes": hwm, "vm_rss_bytes": rss,
                       "mem_available_before": mem0, "mem_available_after": mem1,
                       "cpu_seconds": round(cpu1 - cpu0, 3) if cpu0 is not None and cpu1 is not None else None,
                       "cache_dir_bytes": du(cdir), **epoch_figures(before, after, res["files"])}
                epochs.append(rec)
                log(f"{label} epoch {e} ({rec['mounted']}): {rec['seconds']:.3f}s, {rec['files_per_s']} files/s"
                    + (f", disk hit rate {rec['disk_hit_rate']}" if rec["disk_hit_rate"] is not None else "")
                    + (f", {rec['data_requests']} data requests" if rec["data_requests"] is not None else "")
                    + (f", VmHWM {human(hwm)}" if hwm else ""))
        limit = readback(cdir) if isinstance(sysm, DiskOurs) else None
        if limit:
            log(f"{label} limit: {limit['files']} entry files read back by {READBACK_THREADS} threads, "
                f"cold: {limit['seconds']:.3f}s")
    finally:
        shutil.rmtree(cdir, ignore_errors=True)

    def total(key: str) -> Any:
        vals = [x[key] for x in epochs]
        return None if None in vals else round(sum(vals), 4)
    hwms = [x["vm_hwm_bytes"] for x in epochs if x["vm_hwm_bytes"]]
    return {"seconds": total("seconds"), "files": total("files"), "bytes": total("bytes"),
            "epochs": epochs, "mount_seconds": mount_s, "http_requests": total("http_requests"),
            "fuse_requests": total("fuse_requests"), "peak_rss_bytes": max(hwms) if hwms else None,
            "daemon_cpu_seconds": total("cpu_seconds"), "cache_dir": str(cdir), "readback": limit,
            "error": None}


# -- the case -------------------------------------------------------------------------------------------


def _median(vals: list) -> Any:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


EPOCH_KEYS = ("seconds", "files_per_s", "daemon_reads", "disk_hit_rate", "data_requests", "http_requests",
              "vm_hwm_bytes", "vm_rss_bytes", "mem_available_before", "mem_available_after", "cache_dir_bytes",
              "settle_seconds")


def aggregate(rows: list[Row], cache_size: int) -> None:
    """What the targets and the table read, in each row's extra (medians over runs without error)."""
    for row in rows:
        ok = [r for r in row.runs if not r.get("error") and len(r.get("epochs") or []) == EPOCHS]
        row.extra["cache_size_bytes"] = cache_size
        if not ok:
            continue
        eps = []
        for i in range(EPOCHS):
            col = [r["epochs"][i] for r in ok]
            m: dict = {"epoch": i + 1, "mounted": MOUNTED[i]}
            m.update({k: _median([x.get(k) for x in col]) for k in EPOCH_KEYS})
            for part, keys in (("served_share", ("page_cache", "memory", "fetched")),
                               ("from_share", ("memory", "disk", "network"))):
                m[part] = {k: _median([(x.get(part) or {}).get(k) for x in col]) for k in keys}
            eps.append(m)
        sec = [x["seconds"] for x in eps]
        req = [x["data_requests"] for x in eps]
        row.extra.update({
            "disk_epochs": eps,
            "epoch_seconds_median": sec,
            "e2_over_e1": round(sec[1] / sec[0], 4) if sec[0] else None,
            "e3_over_e1": round(sec[2] / sec[0], 4) if sec[0] else None,
            "e2_data_requests_over_e1": round(req[1] / req[0], 4) if req[0] and req[1] is not None else None,
            "e2_disk_hit_rate": eps[1]["disk_hit_rate"],
            "e3_disk_hit_rate": eps[2]["disk_hit_rate"],
            "readback_seconds": _median([(r.get("readback") or {}).get("seconds") for r in ok]),
            "readback_files": _median([(r.get("readback") or {}).get("files") for r in ok]),
        })


def p5_disk(b: Bench, cid: str, endpoint: str | None = None) -> None:
    ds = b.dataset("p5disk")
    cache = b.p5_cache
    base, typ = cache_base(b)
    b.case(cid, ds, f"three epochs over {ds.description} ({human(ds.bytes)}, {ds.bytes // cache}x the memory "
           f"budget) with -o cache_size={human(cache).replace(' ', '')},disk_cache=DIR (a new DIR per run): "
           "epochs 1 and 2 on one mount, epoch 3 after a remount on the same DIR; sync and page cache, "
           "dentries and inodes dropped (echo 3) before each epoch; beside rclone --vfs-cache-mode full",
           cache_size_bytes=cache, disk_cache={"dir": f"{base}/mntN.cache", "filesystem": typ},
           note=f"cache directories on {typ} ({base}), removed after each run; readers: python in listing "
           f"order, {READERS[1]} over a new shuffle each epoch (no hints)\n    epochs below each row (medians): "
           "served = who answered the reads (page: the page cache, no READ reached the daemon; memory: "
           "cache.hits; fetched: cache.misses);\n    from = where the files came from (memory kept from the "
           "epoch before, disk, network); disk hit = disk hits / disk lookups; data req = GetBatch + GET calls;\n"
           "    MiB: VmHWM and VmRSS after the epoch, MemAvailable before and after it, the cache directory")
    peer = RcloneCachePeer()
    try:
        peer.prepare()
    except Exception as e:  # noqa: BLE001 - a peer's broken install is a row's "not run"
        peer.not_run = f"prepare() failed: {type(e).__name__}: {e}"
    rows = [Row(cid, DiskOurs(cache), r) for r in READERS] + [Row(cid, DiskPeer(peer, b.workdir), r) for r in READERS]
    b.rows.extend(rows)
    endpoint = endpoint or b.endpoint
    try:
        b.interleave(cid, rows, lambda row, label: epoch_trial(b, row, endpoint, ds, base, label),
                     lambda r: f"{r['seconds']:.3f}s in {EPOCHS} epochs ("
                     + ", ".join(f"{x['seconds']:.3f}" for x in r["epochs"]) + ")",
                     after_round=lambda: aggregate(rows, cache))
    finally:
        if base != b.workdir:
            shutil.rmtree(base, ignore_errors=True)


# -- targets and the printed table -----------------------------------------------------------------


def _vs_rclone(b: Bench, case: str, rdr: str) -> dict:
    from .targets import _find, _judge, _missing, _target

    t = _target(f"{case} e2>=rclone[{rdr}]", f"{case} ({rdr}): aisbatchfs's epoch 2 at least as fast as "
                f"rclone --vfs-cache-mode full's", 1.0, ">=", False)
    ours, theirs = (case, OURS, rdr), (case, RCLONE, rdr)
    so, sr = _find(b, *ours), _find(b, *theirs)
    why = list(dict.fromkeys(filter(None, (_missing(b, *ours, so, "epoch_seconds_median"),
                                           _missing(b, *theirs, sr, "epoch_seconds_median")))))
    if why:
        t["note"] = "not measured: " + "; ".join(why)
        return t
    eo, er = so["epoch_seconds_median"][1], sr["epoch_seconds_median"][1]
    t["measured"] = round(er / eo, 3)
    return _judge(t, f"rclone {er:.3f}s / aisbatchfs {eo:.3f}s in epoch 2")


def _epochs_note(b: Bench, t: dict, case: str, rdr: str) -> dict:
    """The epochs' seconds, hit rates and data requests beside a measured target."""
    from .targets import _find

    s = _find(b, case, OURS, rdr)
    if t["measured"] is None or not s or not s.get("disk_epochs"):
        return t
    eps = s["disk_epochs"]
    t["note"] = (f"epochs {', '.join(_f(x['seconds'], '.3f') + 's' for x in eps)}; disk hit rates "
                 f"{', '.join(_f(x['disk_hit_rate'], '.3f') for x in eps)}; data requests "
                 f"{', '.join(_f(x['data_requests'], '.0f') for x in eps)}")
    return t


def disk_targets(b: Bench) -> list[dict]:
    from .targets import value

    T = []
    rss_max = round(b.p5_cache / MiB + 150, 1)
    for rdr in READERS:
        row = ("P5-disk", OURS, rdr)
        T += [
            _epochs_note(b, value(b, f"P5-disk e2 hit>=0.95[{rdr}]", f"P5-disk ({rdr}): in epoch 2 the disk cache "
                                  "finds at least 95% of what it is asked for (disk.hits / lookups)", row,
                                  "e2_disk_hit_rate", ">=", 0.95), "P5-disk", rdr),
            _epochs_note(b, value(b, f"P5-disk e2 req<=0.01xe1[{rdr}]", f"P5-disk ({rdr}): data requests to "
                                  "AIStore in epoch 2 at most 1% of epoch 1's", row, "e2_data_requests_over_e1",
                                  "<=", 0.01), "P5-disk", rdr),
            _epochs_note(b, value(b, f"P5-disk e2<=0.5xe1[{rdr}]", f"P5-disk ({rdr}): epoch 2 takes at most 0.5x "
                                  "epoch 1's time (loopback)", row, "e2_over_e1", "<=", 0.5), "P5-disk", rdr),
            _epochs_note(b, value(b, f"P5-disk e3 hit>=0.95[{rdr}]", f"P5-disk ({rdr}): after the remount, epoch "
                                  "3's disk hit rate at least 0.95 (about epoch 2's)", row, "e3_disk_hit_rate",
                                  ">=", 0.95), "P5-disk", rdr),
            value(b, f"P5-disk RSS<=cache+150MiB[{rdr}]", f"P5-disk ({rdr}): daemon peak RSS (VmHWM, both "
                  "mounts) at most the cache size + 150 MiB", row, "peak_rss_mib", "<=", rss_max,
                  unit=f"MiB; cache_size {human(b.p5_cache)}"),
            _vs_rclone(b, "P5-disk", rdr),
        ]
    for rdr in READERS:
        T += [_epochs_note(b, value(b, f"P5-disk@2ms e2<=0.2xe1[{rdr}]", f"P5-disk at +2 ms RTT ({rdr}): epoch 2 "
                                    "takes at most 0.2x epoch 1's time", ("P5-disk@2ms", OURS, rdr), "e2_over_e1",
                                    "<=", 0.2), "P5-disk@2ms", rdr),
              _vs_rclone(b, "P5-disk@2ms", rdr)]
    return T


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MiB:.0f}"


def disk_lines(r: dict) -> str:
    """Below a P5-disk row: its epochs (medians over the runs)."""
    eps = r.get("disk_epochs") or []
    if not eps:
        return ""
    w = ["        epoch  mount       seconds   files/s |  served: page   memory  fetched |  from: memory    disk"
         "  network | disk hit  data req  HTTP req |  VmHWM  VmRSS  MemAvail before>after  cache dir\n"]
    for x in eps:
        sv, fr = x.get("served_share") or {}, x.get("from_share") or {}
        w.append(f"        {x['epoch']:>5}  {x['mounted']:<10} {_f(x['seconds'], '8.3f'):>8} "
                 f"{_f(x['files_per_s'], '9.1f'):>9} | {_pct(sv.get('page_cache')):>13} {_pct(sv.get('memory')):>8} "
                 f"{_pct(sv.get('fetched')):>8} | {_pct(fr.get('memory')):>13} {_pct(fr.get('disk')):>7} "
                 f"{_pct(fr.get('network')):>8} | {_f(x['disk_hit_rate'], '8.3f'):>8} "
                 f"{_f(x['data_requests'], '9.0f'):>9} {_f(x['http_requests'], '9.0f'):>9} | "
                 f"{_mib(x['vm_hwm_bytes']):>6} {_mib(x['vm_rss_bytes']):>6} "
                 f"{_mib(x['mem_available_before']) + '>' + _mib(x['mem_available_after']):>22} "
                 f"{_mib(x['cache_dir_bytes']):>10}\n")
    sec, files = r.get("readback_seconds"), r.get("readback_files")
    if sec:
        w.append(f"        **limit** the cache directory's {files:,.0f} entry files read back by "
                 f"{READBACK_THREADS} plain threads, cold: {sec:.3f} s ({files / sec:,.0f} files/s)\n")
    return "".join(w)
