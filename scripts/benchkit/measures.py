"""How a mount is read: one factory per reader, each giving measure(root, trial) -> result.

The reader programs are files in readers/ run by path with the venv's interpreter; find|xargs
and ls are the system's own. A measure checks that every file and byte arrived, and calls
trial.mark() where its timed part starts when that is not the mount's first moment.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from aisbatchfs import control

from .common import MiB, NotRun, TrialError, drop_caches, reader_cmd, reader_json, reap, run_timed
from .datasets import Dataset
from .trials import Measure, Trial, check_counts, stat_delta

SHUFFLE_SEED = 20240611
P3_PROCS = 8


def shuffled(ds: Dataset, seed: int = SHUFFLE_SEED) -> list[tuple[str, str | None]]:
    """P3's order: the dataset's items in one fixed shuffle (another `seed`, another shuffle)."""
    items = ds.items()
    random.Random(seed).shuffle(items)
    return items


class Measures:
    def __init__(self, workdir: Path, timeout: float) -> None:
        self.workdir, self.timeout = workdir, timeout
        self.nlists = 0

    def walk(self, ds: Dataset) -> Measure:
        def measure(root: Path, tr: Trial) -> dict:
            _, out = run_timed(reader_cmd("python_reader", "walk", str(root)), self.timeout)
            res = reader_json(out)
            check_counts(res, ds.files, ds.bytes)
            return res
        return measure

    def xargs(self, ds: Dataset) -> Measure:
        def measure(root: Path, tr: Trial) -> dict:
            took, _ = run_timed(["bash", "-c", 'set -o pipefail; find "$1" -type f -print0 | '
                                 'xargs -0 cat > /dev/null', "bench", str(root)], self.timeout)
            return {"seconds": took, "files": ds.files, "bytes": ds.bytes, "bytes_counted": False}
        return measure

    def cached(self, ds: Dataset) -> Measure:
        """P0: a pass fills the daemon's cache, the kernel's page cache goes, the second is timed."""
        walk = self.walk(ds)

        def measure(root: Path, tr: Trial) -> dict:
            walk(root, tr)
            drop_caches(1)
            tr.mark()
            return walk(root, tr)
        return measure

    def second_pass(self, ds: Dataset) -> Measure:
        """The same mount read again right after a cold pass, page cache kept; only it is timed."""
        walk = self.walk(ds)

        def measure(root: Path, tr: Trial) -> dict:
            first = walk(root, tr)
            tr.mark()
            return dict(walk(root, tr), first_pass_seconds=first["seconds"])
        return measure

    def procs(self, ds: Dataset, hints: bool, order: list[tuple[str, str | None]] | None = None) -> Measure:
        """P3: P3_PROCS processes start, then are released together over the shuffled list
        (`order`: another list of the dataset's items, as P5-disk's epochs reshuffle)."""
        rel = [f"{o}/{a}" if a else o for o, a in (order if order is not None else shuffled(ds))]

        def measure(root: Path, tr: Trial) -> dict:
            self.nlists += 1
            listfile = self.workdir / f"p3-list-{self.nlists}.txt"
            listfile.write_text("".join(f"{root}/{p}\n" for p in rel))
            errfiles = [self.workdir / f"p3-{self.nlists}-{i}.err" for i in range(P3_PROCS)]
            errs = [open(e, "wb") for e in errfiles]
            procs = [subprocess.Popen(reader_cmd("python_reader", "list", str(listfile), str(i), str(P3_PROCS)),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[i],
                                      start_new_session=True) for i in range(P3_PROCS)]
            try:
                for p in procs:
                    if p.stdout.readline().strip() != b"ready":
                        raise TrialError("a reader process did not start")
                t0 = time.perf_counter()
                if hints:
                    try:
                        control.prefetch(str(root), rel)
                    except control.ControlError as e:
                        raise NotRun(f"cannot send hints to the mount: {e}") from None
                for p in procs:
                    p.stdin.write(b"go\n")
                    p.stdin.close()
                deadline = t0 + self.timeout
                for p in procs:
                    try:
                        p.wait(timeout=max(0.1, deadline - time.perf_counter()))
                    except subprocess.TimeoutExpired:
                        raise TrialError(f"{P3_PROCS} readers timed out after {self.timeout:.0f}s",
                                         fatal=True) from None
                took = time.perf_counter() - t0
                files = nbytes = 0
                for i, p in enumerate(procs):
                    if p.returncode != 0:
                        errs[i].flush()
                        raise TrialError(f"reader {i} exited {p.returncode}: "
                                         f"{errfiles[i].read_text(errors='replace').strip()[-400:]}")
                    r = reader_json(p.stdout.read())
                    files += r["files"]
                    nbytes += r["bytes"]
            finally:
                reap(procs, errs)
            res = {"seconds": took, "files": files, "bytes": nbytes, "processes": P3_PROCS}
            check_counts(res, ds.files, ds.bytes)
            return res
        return measure

    def seq(self, ds: Dataset) -> Measure:
        def measure(root: Path, tr: Trial) -> dict:
            _, out = run_timed(reader_cmd("python_reader", "seq", str(root / ds.object_names()[0]), str(MiB)),
                               self.timeout)
            res = reader_json(out)
            check_counts(res, 1, ds.size)
            return res
        return measure

    def epochs(self, ds: Dataset) -> Measure:
        """P5: two passes, the kernel's page cache dropped between them (epoch 2 is the daemon's)."""
        walk = self.walk(ds)

        def measure(root: Path, tr: Trial) -> dict:
            e1 = walk(root, tr)
            s1 = tr.stats()
            drop_caches(1)
            e2 = walk(root, tr)
            s2 = tr.stats()
            # reuse: epoch-2 reads served by files kept from epoch 1 (prefetched files count as
            # hits too, so plain hits would say nothing about what the cache retained)
            hits = stat_delta(s1, s2, "cache", "reread_hits")
            return {"seconds": e1["seconds"] + e2["seconds"], "files": e1["files"] + e2["files"],
                    "bytes": e1["bytes"] + e2["bytes"], "epoch_seconds": [e1["seconds"], e2["seconds"]],
                    "epoch_http_requests": [stat_delta(tr.base_stats, s1, "client", "http_requests"),
                                            stat_delta(s1, s2, "client", "http_requests")],
                    "second_epoch_hits": hits,
                    "second_epoch_misses": e2["files"] - hits if hits is not None else None,
                    "second_epoch_hit_rate": hits / e2["files"] if hits is not None and e2["files"] else None}
        return measure

    def ls(self, ds: Dataset) -> Measure:
        def measure(root: Path, tr: Trial) -> dict:
            took, out = run_timed(["ls", str(root)], self.timeout)
            res = {"seconds": took, "files": sum(1 for n in out.split(b"\n") if n), "bytes": 0}
            check_counts(res, ds.files, None)
            return res
        return measure
