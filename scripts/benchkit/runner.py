"""Bench: the run of the selected cases, from the cluster's start to the last line of output.

Runs are interleaved across a case's rows (run 1 of every row, then run 2, ...), so a slow
minute of the shared machine does not land on one system; a case stops taking new runs once
--case-budget is spent. The JSON is rewritten after every case, complete at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import cluster
from .cases import OWN_CLUSTER, run_case
from .common import GiB, KiB, MiB, NotRun, TrialError, log
from .datasets import Dataset, ensure_dataset
from .measures import Measures
from .report import document, print_table
from .systems import Ours, PeerSystem, Tmpfs, load_peers
from .targets import evaluate
from .trials import Measure, Row, trial

TMPFS = Path("/dev/shm")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.workdir = Path(tempfile.mkdtemp(prefix="aisbatchfs-bench-"))
        self.measures = Measures(self.workdir, args.timeout)
        self.tmpfs = Tmpfs(TMPFS / self.workdir.name)
        self.nmount = 0
        self.endpoint = ""
        self.cluster_started = False
        self.built: dict[str, str] = {}
        self.cases: dict[str, dict] = {}
        self.rows: list[Row] = []
        self.targets: list[dict] = []
        self.peers: list[PeerSystem] = []
        self.peers_status = ""
        self.started = dt.datetime.now().astimezone()
        self.selected: list[str] = []
        q = self.quick
        self.ds = {
            "p1": Dataset.flat("p1", 2000 if q else 10000, 16 * KiB),
            "tar": Dataset.shards("p2", 8 if q else 40, 250, 16 * KiB, "tar"),
            # quick: fewer .tgz shards -- each member read from a gzip stream costs the server
            # a decompression from the shard's start, so tgz is far slower than tar
            "tgz": Dataset.shards("p2", 4 if q else 40, 250, 16 * KiB, "tgz"),
            "p4": Dataset.big("p4", 256 * MiB if q else GiB),
            "p5": Dataset.flat("p5", (128 * MiB if q else 512 * MiB) // (64 * KiB), 64 * KiB),
            # P5-disk: 4x the same cache size (p5_cache), read three times through a disk cache
            "p5disk": Dataset.flat("p5", (256 * MiB if q else GiB) // (64 * KiB), 64 * KiB),
            "ls": Dataset.flat("ls", 20000 if q else 100000, 16),
        }
        self.p5_cache = 64 * MiB if q else 256 * MiB

    # -- what cases use ------------------------------------------------------------------------

    def dataset(self, key: str) -> Dataset:
        ds = self.ds[key]
        if ds.bucket not in self.built:
            self.built[ds.bucket] = ensure_dataset(self.endpoint, ds, self.workdir)
        return ds

    def case(self, cid: str, ds: Dataset, description: str, **extra) -> dict:
        c = {"description": description,
             "dataset": {"bucket": ds.bucket, "files": ds.files, "bytes": ds.bytes,
                         "file_size": ds.size, "build": self.built.get(ds.bucket)}, **extra}
        self.cases[cid] = c
        return c

    def ours(self, batch: bool = True, extra: list[str] | None = None, label: str = "") -> Ours:
        args = ([] if batch else ["--no-batch"]) + (extra or [])
        return Ours("aisbatchfs" + ("" if batch else " --no-batch") + (f" {label}" if label else ""), args)

    def peer(self, label: str) -> PeerSystem:
        return next(p for p in self.peers if p.name == label)

    def peer_rows(self, cid: str, readers: dict[str, Measure], items: list,
                  rename: dict[str, str] | None = None) -> list[Row]:
        """The peers that take part in `cid`: mounts once per reader, clients with `items`."""
        rows = []
        for p in self.peers:
            if cid not in p.peer.cases:
                continue
            if p.kind == "read":
                name = (rename or {}).get(p.name)
                rows.append(Row(cid, PeerSystem(p.peer, self.workdir, name) if name else p, "own client",
                                items=items))
            else:
                rows += [Row(cid, p, reader, measure=m) for reader, m in readers.items()]
        return rows

    def with_tmpfs(self, cid: str, ds: Dataset) -> None:
        """Copy `ds` to tmpfs once; the case's JSON says how and how warm it is."""
        try:
            how = self.tmpfs.prepare(self.endpoint, ds)
        except (OSError, RuntimeError) as e:
            self.tmpfs.not_run = f"cannot copy {ds.bucket} to {self.tmpfs.base}: {e}"
            how = self.tmpfs.not_run
        self.cases[cid]["tmpfs"] = {"dir": str(self.tmpfs.base / ds.bucket), "copy": how,
                                    "page_cache": self.tmpfs.flags["page_cache"]}

    def run_rows(self, case: str, rows: list[Row], ds: Dataset, endpoint: str | None = None) -> None:
        endpoint = endpoint or self.endpoint
        self.rows.extend(rows)

        def summary(r: dict) -> str:
            return (f"{r['seconds']:.3f}s"
                    + (f", {r['http_requests']} requests" if r.get("http_requests") is not None else "")
                    + (f", {r['fuse_requests']} FUSE requests" if r.get("fuse_requests") is not None else ""))

        self.interleave(case, rows,
                        lambda row, _label: dict(trial(row, endpoint, ds, self.args.timeout, self.new_mountpoint),
                                         error=None), summary)

    def interleave(self, case: str, rows: list[Row], measure: Callable[[Row, str], dict],
                   summary: Callable[[dict], str], after_round: Callable[[], None] | None = None) -> None:
        """--runs rounds of one run per row (interleaved, so the machine's drift hits every system
        alike) within --case-budget; `measure` gets the row and the run's label for its log lines. A run's failure is recorded on its row and stops the row if
        it would fail again (a timeout, a fatal error, a bug); the JSON is saved after each round."""
        t_case = time.monotonic()
        for i in range(self.args.runs):
            for row in rows:
                if row.stopped:
                    continue
                if time.monotonic() - t_case > self.args.case_budget:
                    row.extra.setdefault("note", f"runs cut short: case budget {self.args.case_budget:.0f}s spent")
                    row.stopped = True
                    continue
                label = f"{case} {row.name} [{row.reader}] run {i + 1}/{self.args.runs}"
                try:
                    r = measure(row, label)
                    row.runs.append(r)
                    log(f"{label}: {summary(r)}")
                except NotRun as e:
                    row.status = f"not run: {e}"
                    row.stopped = True
                    log(f"{label}: not run: {e}")
                except (TrialError, TimeoutError, OSError, RuntimeError) as e:
                    row.runs.append({"error": str(e)})
                    log(f"{label}: FAILED: {e}")
                    if getattr(e, "fatal", False) or isinstance(e, TimeoutError):
                        row.stopped = True
                except Exception as e:  # noqa: BLE001 - a peer's bug must not end the run
                    row.runs.append({"error": f"{type(e).__name__}: {e}"})
                    log(f"{label}: FAILED: {type(e).__name__}: {e}")
                    row.stopped = True
            if after_round is not None:
                after_round()
            self.save()

    def new_mountpoint(self) -> Path:
        self.nmount += 1
        mp = self.workdir / f"mnt{self.nmount}"
        mp.mkdir()
        return mp

    # -- the run ---------------------------------------------------------------------------------

    def save(self) -> None:
        if not self.args.json:
            return
        self.targets = evaluate(self)
        tmp = Path(str(self.args.json) + ".tmp")
        tmp.write_text(json.dumps(document(self), indent=1, default=str) + "\n")
        tmp.replace(self.args.json)

    def run(self, cases: list[str]) -> int:
        self.selected = list(cases)
        try:
            if self.args.endpoint or self.args.targets > 1 or any(c not in OWN_CLUSTER for c in cases):
                self.endpoint, self.cluster_started = cluster.start(self.args)
                log(f"cluster at {self.endpoint}; work dir {self.workdir}")
                self.peers, self.peers_status = load_peers(self.workdir)
                log(f"peers: {self.peers_status}")
            else:  # only cases with a cluster of their own: the bench cluster and peers stay off
                self.peers_status = "none (only cases with a cluster of their own)"
                log(f"{', '.join(cases)} only: the bench cluster is not started; work dir {self.workdir}")
            for cid in cases:
                log(f"=== {cid}")
                try:
                    run_case(self, cid)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - one broken case must not lose the others
                    log(f"{cid}: case failed: {type(e).__name__}: {e}")
                    self.cases.setdefault(cid, {"description": cid, "dataset": {"bucket": None, "files": 0,
                                                                               "bytes": 0, "file_size": 0}})
                    self.cases[cid]["error"] = f"{type(e).__name__}: {e}"
                    self.save()
            self.targets = evaluate(self)
            print_table(self, document(self))
            self.save()
            if self.args.json:
                log(f"wrote {self.args.json}")
            return 0
        finally:
            if self.cluster_started and not self.args.keep_cluster:
                cluster.stop(self.args)
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the tmpfs copy and the work dir, but never walk into a mount left under it."""
        from tests.mounting import force_unmount

        self.tmpfs.remove()

        def mounts_below() -> list[str]:
            with open("/proc/self/mounts") as f:
                return [line.split()[1] for line in f
                        if line.split()[1].startswith(str(self.workdir) + "/")]
        for mp in mounts_below():
            log(f"{mp} is still mounted; unmounting it")
            with contextlib.suppress(Exception):
                force_unmount(Path(mp))
        if mounts_below():
            log(f"leaving {self.workdir} in place: {', '.join(mounts_below())} still mounted")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
