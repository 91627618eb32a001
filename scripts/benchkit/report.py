"""Row summaries (medians over the runs without error), the printed tables, the JSON document.

A table lists a case's systems, then its limits below a rule; `rel` is throughput relative to
the case's first row, FUSE/file the daemon's FUSE requests in the timed part per file read.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
from typing import TYPE_CHECKING, Any

from . import cluster
from .common import MiB, drop_caches, human
from .trials import Row

if TYPE_CHECKING:
    from .runner import Bench

SCHEMA = "aisbatchfs-bench/2"


def _median(vals: list) -> Any:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summary(row: Row) -> dict:
    ok = [r for r in row.runs if not r.get("error")]
    errs = [r["error"] for r in row.runs if r.get("error")]
    out: dict[str, Any] = {
        "system": row.name, "reader": row.reader, "limit": row.system.limit,
        "flags": row.flags if row.flags is not None else row.system.flags,
        "status": row.status, "runs": row.runs, "median_seconds": None, "files_per_s": None,
        "mb_per_s": None, "peak_rss_mib": None, "http_requests": None, "fuse_requests": None,
        "fuse_requests_per_file": None, "daemon_cpu_seconds": None, **row.extra,
    }
    if row.status == "ok" and not ok:
        out["status"] = f"failed: {errs[-1].splitlines()[0]}" if errs else "not run: no runs"
    if not ok:
        return out
    med = statistics.median(r["seconds"] for r in ok)
    files = max(r["files"] for r in ok)
    nbytes = max(r["bytes"] for r in ok)
    out.update(median_seconds=round(med, 4), files_per_s=round(files / med, 1) if med else None,
               mb_per_s=round(nbytes / 1e6 / med, 2) if med else None)
    rss = [r["peak_rss_bytes"] for r in ok if r.get("peak_rss_bytes")]
    out["peak_rss_mib"] = round(max(rss) / MiB, 1) if rss else None
    for k in ("http_requests", "fuse_requests", "daemon_cpu_seconds"):
        out[k] = _median([r.get(k) for r in ok])
    if out["fuse_requests"] is not None and files:
        out["fuse_requests_per_file"] = round(out["fuse_requests"] / files, 4)
    if any("epoch_seconds" in r for r in ok):
        out["epoch_median_seconds"] = [round(statistics.median(r["epoch_seconds"][i] for r in ok), 4)
                                       for i in (0, 1)]
        reqs = [r.get("epoch_http_requests") or [None, None] for r in ok]
        out["epoch_http_requests"] = [_median([x[i] for x in reqs]) for i in (0, 1)]
        rate = _median([r.get("second_epoch_hit_rate") for r in ok])
        out["second_epoch_hit_rate"] = round(rate, 4) if rate is not None else None
    if errs:
        out["errors"] = errs
    return out


def document(b: Bench) -> dict:
    cases = {}
    for cid, c in b.cases.items():
        c = dict(c)
        c["dataset"] = dict(c["dataset"], build=b.built.get(c["dataset"]["bucket"]))
        c["results"] = [summary(r) for r in b.rows if r.case == cid]
        cases[cid] = c
    return {
        "schema": SCHEMA, "started": b.started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": b.quick, "runs": b.args.runs, "selected_cases": b.selected, "timeout_s": b.args.timeout,
        "case_budget_s": b.args.case_budget,
        "host": cluster.host(drop_caches.status),
        "cluster": cluster.describe(b.args, b.endpoint, b.cluster_started),
        "versions": cluster.versions(),
        "peers": b.peers_status,
        "cases": cases,
        "targets": b.targets,
    }


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _row_line(r: dict, ref: dict | None) -> str:
    nruns = len([x for x in r["runs"] if not x.get("error")])
    head = f"  {r['system']:<26} {r['reader']:<16} {nruns:>2}/{len(r['runs']):<2}"
    if not r["median_seconds"]:
        return f"{head}  {r['status']}\n"
    rel = ref["median_seconds"] / r["median_seconds"] if ref else None
    line = (f"{head} {r['median_seconds']:>9.3f} {_f(r['files_per_s'], '9.1f'):>9} {_f(r['mb_per_s'], '8.1f'):>8} "
            f"{_f(r['peak_rss_mib'], '8.1f'):>8} {_f(r['http_requests'], '8.0f'):>8} "
            f"{_f(r['fuse_requests_per_file'], '9.3f'):>9} {_f(rel, '6.2f'):>6}\n")
    if "epoch_median_seconds" in r:
        e1, e2 = r["epoch_median_seconds"]
        q1, q2 = r.get("epoch_http_requests") or [None, None]
        line += (f"      epochs {e1:.3f}s, {e2:.3f}s; HTTP requests {_f(q1, '.0f')}, {_f(q2, '.0f')}; "
                 f"second-epoch hit rate {_f(r.get('second_epoch_hit_rate'), '.3f')}; "
                 f"cache_size {human(r['cache_size_bytes'])}\n")
    for e in r.get("errors", []):
        line += f"      error: {e.splitlines()[0][:150]}\n"
    if r.get("mounts"):  # F8: the per-mount table below the row
        from .fleet import fleet_lines

        line += fleet_lines(r)
    if r.get("disk_epochs"):  # P5-disk: the epochs below the row
        from .disk import disk_lines

        line += disk_lines(r)
    return line


def print_table(b: Bench, doc: dict) -> None:
    w = sys.stdout.write
    hdr = (f"  {'system':<26} {'reader':<16} {'runs':>5} {'median s':>9} {'files/s':>9} "
           f"{'MB/s':>8} {'RSS MiB':>8} {'HTTP req':>8} {'FUSE/file':>9} {'rel':>6}\n")
    w(f"\naisbatchfs benchmark ({'quick' if b.quick else 'full'}, {b.args.runs} runs, medians; "
      f"cluster {b.endpoint}; page-cache drop: {drop_caches.status})\n")
    for cid, c in doc["cases"].items():
        d = c["dataset"]
        w(f"\n{cid}: {c['description']}\n    bucket {d['bucket']}, {d['files']:,} files, {human(d['bytes'])}"
          + (f" ({d['build']})" if d.get("build") else "") + "\n")
        if "proxy" in c:
            cal = c["proxy"]["calibration"]
            w(f"    proxy {c['proxy']['endpoint']}: GET {cal['get_direct_ms']:.2f} ms direct, "
              f"{cal['get_proxied_ms']:.2f} ms proxied ({cal['added_ms_per_round_trip']:.2f} ms "
              f"added per round trip)\n")
        if "tmpfs" in c:
            w(f"    tmpfs {c['tmpfs']['dir']} ({c['tmpfs']['copy']}; {c['tmpfs']['page_cache']})\n")
        if c.get("note"):
            w(f"    {c['note']}\n")
        if c.get("error"):
            w(f"    case failed: {c['error']}\n")
        w(hdr)
        ref = next((r for r in c["results"] if r["median_seconds"]), None)
        ruled = False
        for r in c["results"]:
            if r["limit"] and not ruled:
                w("  -- limits\n")
                ruled = True
            w(_row_line(r, ref))
    w("\n  rel = throughput relative to the first row of the case; MB = 10^6 bytes; RSS = VmHWM of the "
      "daemon (or FUSE peer);\n  HTTP req = daemon requests in the timed part; FUSE/file = the daemon's "
      "FUSE requests in the timed part per file\n  (- where its stats have no per-opcode counts)\n")
    w(f"\nTargets\n  {'target':<34} {'measured':>10} {'needed':>12}  result\n")
    for t in doc["targets"]:
        res = ("info" if t["informational"] else
               "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL")
        need = "-" if t["threshold"] is None else f"{t['op']} {t['threshold']}"
        w(f"  {t['id']:<34} {_f(t['measured'], '10.3f'):>10} {need:>12}  {res}"
          + (f"  ({t['note']})" if t["note"] else "") + "\n")
    w(f"\n  peers: {b.peers_status}\n")
    sys.stdout.flush()
