"""F8, many mounts on one cluster: 8 daemons on this machine, each read by its own reader, against
one 2-target cluster, without faults and through 429/503 bursts.

AIStore v1.5.0 does not let GetBatch's admission be configured (it throttles only at hundreds of
pending requests or under memory pressure), so throttling is injected: every mount reaches the
cluster through its own scripts/fault_proxy.py process (`serve --control-port 0`), in both runs,
so the two runs differ only in the rules. One proxy per mount makes every count exact per mount
(which mount got which 429), and eight processes let the kernel, not one interpreter's GIL,
share the cores between the mounts' traffic.

The faults are set by request count, not by time: a time-based schedule injects more faults per
request on a slower (busier) machine, and the 1.2x request target would then measure the
machine. Every proxy has the same rules from its start: GetBatch requests (`^/v1/ml/moss`, either
hop: the AIStore proxy's or, after the 307, the target's) FIRST+1 and FIRST+2 of each mount are a
burst, a 429 and then a 503, and so again every PERIOD + 2 GetBatch requests (a rule does not
count the requests an earlier rule took); every GET of an object (`^/v1/objects/`) answers 503
with probability GET_503 (a reader in listing order makes GETs only when a batch falls back or
hedges). Mounts start together and read at about the same pace, so
their bursts land at about the same time: the cluster seems to throttle everyone at once. Bursts
are about 8% of a mount's requests in either dataset size (2,000 files: one burst per mount in
about 26 requests, measured; 10,000: three or four in about 90, from the window's growth). The
extra requests a fault may cost are the failed exchange and, at the target hop, the redirect
before it: at most 2 per fault, 1.16x in all, so the 1.2x target passes without a storm and
fails with one (a throttled batch answered with single GETs costs up to 256 per fault).

The readers: fleet_reader.py, python_reader's walk (listing order) released on cue, one per
mount. Listing order is the read the batcher is built for: the window grows to batch_max_items,
so each mount keeps its full batches_in_flight of the largest GetBatch requests going, which is
the most a mount asks of the cluster; shuffled readers (without hints) make batches of a few
items, which measures coalescing rather than the cluster's load, and would double the reader
processes on two cores.

On a 2-core machine with 8 daemons, 8 readers, 8 proxies and 3 aisnode processes, per-mount
throughput partly measures the kernel's scheduler, not only the daemons' fairness to each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cluster import AIS_LOCAL
from .common import SCRIPTS, KiB, TrialError, drop_caches, human, kill_group, log, proc_status, reap, reader_cmd
from .datasets import Dataset, ensure_dataset
from .trials import Row

if TYPE_CHECKING:
    from .runner import Bench

MOUNTS = 8
TARGETS = 2
READER = f"python x{MOUNTS}"  # fleet_reader.py: python_reader's walk, one per mount
MOSS, OBJECTS = "^/v1/ml/moss", "^/v1/objects/"

# the faults, by GetBatch request count (each hop counts): a burst of 429 then 503 after FIRST
# requests, and again every PERIOD; a 503 on GET_503 of the GETs
FIRST = 12  # past the window's growth (8, 16, ... 256 items): the burst meets a full pipeline
PERIOD = 24
BURSTS = 20  # enough for 10,000 files (about 90 GetBatch hops per mount)
GET_503 = 0.25


_MSG = "(injected by scripts/bench F8)"


def fault_rules(mount: int) -> list[dict]:
    """fault_proxy Rule JSON for one mount's proxy, in order (the first that fires decides)."""
    rules = []
    for j in range(BURSTS):
        at = FIRST + j * PERIOD  # a rule counts the matches it sees: earlier bursts shift it by 2 each
        rules += [{"path": MOSS, "status": 429, "after": at, "times": 1,
                   "message": f"too many GetBatch requests pending {_MSG}"},
                  {"path": MOSS, "status": 503, "after": at, "times": 1, "message": f"service unavailable {_MSG}"}]
    rules.append({"method": "GET", "path": OBJECTS, "status": 503, "probability": GET_503, "seed": mount,
                  "message": f"service unavailable {_MSG}"})
    return rules


def _label(rule: dict) -> str:
    return f"{rule['status']} {'GET' if rule.get('method') == 'GET' else 'GetBatch'}"


BATCH_KEYS = ("batches", "items", "throttled", "fallbacks", "hedges", "splits", "items_retried",
              "batch_failures", "batches_not_started")


def schedule() -> dict:
    return {"getbatch_burst": ["429", "503"], "first_burst_after": FIRST, "period_getbatch_requests": PERIOD,
            "bursts_at_most": BURSTS, "get_503_probability": GET_503,
            "rules_of_mount_1": fault_rules(1)[:2] + fault_rules(1)[-1:]}


# -- the 2-target cluster --------------------------------------------------------------------------


def _smap_targets(endpoint: str) -> int | None:
    from fault_proxy import smap_nodes

    with contextlib.suppress(Exception):
        return sum(1 for role, _, _ in smap_nodes(endpoint) if role == "target")
    return None


@contextlib.contextmanager
def fleet_cluster(b: Bench) -> Iterator[tuple[str, dict]]:
    """(endpoint, its description): --endpoint as given, the bench cluster when it has 2 or more
    targets, else `ais-local --name <cluster-name>2` with 2 targets, data kept beside the bench
    cluster's (~/.cache/aisbatchfs/bench2-cluster), stopped at the end if started here."""
    args = b.args
    if args.endpoint or args.targets >= TARGETS:
        yield b.endpoint, {"endpoint": b.endpoint, "name": None if args.endpoint else args.cluster_name,
                           "targets": _smap_targets(b.endpoint), "started_by_bench": False,
                           "note": "--endpoint" if args.endpoint else "the bench cluster (--targets)"}
        return
    name = f"{args.cluster_name}2"
    cdir = args.cluster_dir.parent / f"{name}-cluster"
    cmd = [sys.executable, str(AIS_LOCAL), "start", "--name", name, "--dir", str(cdir), "--targets", str(TARGETS)]
    log(f"starting the F8 cluster: {' '.join(cmd[1:])}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"cannot start the {TARGETS}-target cluster: {r.stderr.strip()[-600:]}")
    endpoint = next(line.split("=", 1)[1] for line in r.stdout.splitlines() if line.startswith("AIS_ENDPOINT="))
    started = "already running" not in r.stderr
    try:
        yield endpoint, {"endpoint": endpoint, "name": name, "dir": str(cdir), "targets": TARGETS,
                         "started_by_bench": started}
    finally:
        if started and not args.keep_cluster:
            subprocess.run([sys.executable, str(AIS_LOCAL), "stop", "--name", name], capture_output=True,
                           timeout=300)
            log(f"stopped cluster '{name}' (data kept in {cdir})")


# -- one fault proxy per mount ---------------------------------------------------------------------


class ProxyProc:
    """scripts/fault_proxy.py serve ENDPOINT --control-port 0, as a process of its own."""

    def __init__(self, upstream: str, logfile: Path, rules: list[dict], timeout: float = 30.0) -> None:
        self.endpoint = self.control = ""
        argv = [sys.executable, str(SCRIPTS / "fault_proxy.py"), "serve", upstream, "--control-port", "0"]
        for rule in rules:
            argv += ["--rule", json.dumps(rule)]
        with open(logfile, "ab") as err:
            self.proc = subprocess.Popen(argv,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            self._read_banner(timeout, logfile)
        except BaseException:
            self.stop()
            raise

    def _read_banner(self, timeout: float, logfile: Path) -> None:
        fd, buf, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while not (self.endpoint and self.control):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TrialError(f"fault proxy did not start within {timeout:.0f}s: "
                                 f"{logfile.read_text(errors='replace').strip()[-300:]}")
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    key, _, val = line.partition("=")
                    if key == "AIS_ENDPOINT":
                        self.endpoint = val.strip()
                    elif key == "FAULT_PROXY_CONTROL":
                        self.control = val.strip()

    def _call(self, method: str, path: str, doc: dict | None = None) -> Any:
        data = json.dumps(doc).encode() if doc is not None else None
        req = urllib.request.Request(self.control + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with self._opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # KeyboardInterrupt: the proxy stops cleanly
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
        with contextlib.suppress(Exception):
            self.proc.stdout.close()


# -- the system: 8 mounts, 8 readers ---------------------------------------------------------------


class Fleet:
    """Eight daemons with default options, each behind its own fault proxy, read at once."""

    kind = "fleet"
    limit = False
    not_run: str | None = None

    def __init__(self, faults: bool, args: list[str] | None = None) -> None:
        self.faults, self.args = faults, list(args or [])  # args: for experiments; the rows have none
        self.name = f"aisbatchfs x{MOUNTS}" + (" +bursts" if faults else "") + "".join(f" {a}" for a in self.args)
        self.flags = {"mounts": MOUNTS, "args": self.args, "reader": READER,
                      "proxy": "scripts/fault_proxy.py serve, one process per mount",
                      "faults": schedule() if faults else None}


def _stats(mp: Path) -> dict | None:
    try:
        return json.loads((mp / ".aisbatchfs" / "stats").read_text())
    except (OSError, ValueError):
        return None


def _delta(before: dict | None, after: dict | None, section: str, key: str) -> int | None:
    """after - before of a counter; a counter missing from a section that is there is 0 (the
    daemon's counters appear on their first count), a missing section None."""
    sa = (after or {}).get(section)
    if not isinstance(sa, dict):
        return None
    a, b = sa.get(key, 0), ((before or {}).get(section) or {}).get(key, 0)
    return a - (b if isinstance(b, (int, float)) else 0) if isinstance(a, (int, float)) else None


def _status_delta(before: dict, after: dict, code: int) -> int:
    return after["statuses"].get(str(code), 0) - before["statuses"].get(str(code), 0)


def _injected(stats: dict) -> dict[str, int]:
    """Faults a proxy's rules injected, by kind ("429 GetBatch", "503 GetBatch", "503 GET")."""
    out: Counter = Counter()
    for rule in stats.get("rules", []):
        out[_label(rule)] += rule.get("fired", 0)
    return dict(out)


def fleet_trial(b: Bench, system: Fleet, endpoint: str, ds: Dataset) -> dict:
    """One cold run: 8 proxies, 8 mounts, 8 readers released together; counters per mount."""
    from tests.mounting import Mount, force_unmount, start_daemon, wait_mounted

    timeout = b.args.timeout
    drop_caches(3)
    mps = [b.new_mountpoint() for _ in range(MOUNTS)]
    proxies: list[ProxyProc] = []
    mounts: list[Mount] = []
    procs: list[subprocess.Popen] = []
    errfiles = [Path(f"{mp}.reader.err") for mp in mps]
    errs = []
    try:
        for i, mp in enumerate(mps):
            proxies.append(ProxyProc(endpoint, Path(f"{mp}.proxy.log"), fault_rules(i + 1) if system.faults else []))
        t_mount = time.perf_counter()
        started = []
        for mp, p in zip(mps, proxies):
            logf = Path(f"{mp}.log")
            started.append((mp, start_daemon(p.endpoint, mp, "--bucket", ds.bucket, *system.args, log=logf), logf))
        for mp, proc, logf in started:
            try:
                wait_mounted(mp, proc, logf, timeout=120)
            except AssertionError as e:
                for mp2, proc2, _ in started:
                    force_unmount(mp2)
                    with contextlib.suppress(ProcessLookupError):
                        proc2.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc2.wait(timeout=10)
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                raise TrialError(f"mount {mp.name} failed: " + " | ".join(lines[-6:])[:600]) from None
            mounts.append(Mount(mp, proc, logf, ["--bucket", ds.bucket]))
        mount_s = time.perf_counter() - t_mount
        errs = [open(e, "wb") for e in errfiles]
        procs = [subprocess.Popen(reader_cmd("fleet_reader", str(mp)), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=errs[i], start_new_session=True)
                 for i, mp in enumerate(mps)]
        for p in procs:
            if p.stdout.readline().strip() != b"ready":
                raise TrialError("a reader process did not start")
        before = [_stats(mp) for mp in mps]
        pbefore = [p.stats() for p in proxies]
        cpu0 = [proc_status(m.proc.pid)[1] for m in mounts]
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write(b"go\n")
            p.stdin.close()
        deadline = t0 + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TrialError(f"{MOUNTS} readers timed out after {timeout:.0f}s", fatal=True) from None
        wall = time.monotonic() - t0
        after = [_stats(mp) for mp in mps]
        pafter = [p.stats() for p in proxies]
        hwm_cpu = [proc_status(m.proc.pid) for m in mounts]
        per = []
        for i, p in enumerate(procs):
            errs[i].flush()
            res: dict = {}
            with contextlib.suppress(Exception):
                res = json.loads(p.stdout.read().decode().strip().splitlines()[-1])
            error = res.get("error")
            if p.returncode != 0 and not error:
                error = (f"reader exited {p.returncode}: "
                         f"{errfiles[i].read_text(errors='replace').strip()[-300:]}")
            if not error and (res.get("files") != ds.files or res.get("bytes") != ds.bytes):
                error = f"read {res.get('files')} files / {res.get('bytes')} bytes, expected {ds.files} / {ds.bytes}"
            secs = res.get("seconds")
            m: dict = {"mount": i + 1, "seconds": round(secs, 3) if secs is not None else None,
                       "files": res.get("files", 0), "bytes": res.get("bytes", 0),
                       "files_per_s": round(res["files"] / secs, 1) if secs and res.get("files") else None,
                       "end": round(res["end"] - t0, 3) if "end" in res else None,
                       "http_requests": _delta(before[i], after[i], "client", "http_requests"),
                       "getbatch_calls": _delta(before[i], after[i], "client", "calls_moss"),
                       "get_calls": _delta(before[i], after[i], "client", "calls_get"),
                       "proxy_requests": sum(pafter[i]["requests"].values()) - sum(pbefore[i]["requests"].values()),
                       "seen_429": _status_delta(pbefore[i], pafter[i], 429),
                       "seen_503": _status_delta(pbefore[i], pafter[i], 503),
                       "injected": _injected(pafter[i]),
                       "batch": {k: _delta(before[i], after[i], "batch", k) for k in BATCH_KEYS},
                       "in_flight_limit_end": ((after[i] or {}).get("batch") or {}).get("in_flight_limit"),
                       "peak_rss_bytes": hwm_cpu[i][0],
                       "daemon_cpu_seconds": round(hwm_cpu[i][1] - cpu0[i], 3)
                       if hwm_cpu[i][1] is not None and cpu0[i] is not None else None,
                       "error": error}
            bt = m["batch"]
            m["retries"] = sum(bt.get(k) or 0 for k in ("throttled", "fallbacks", "hedges", "splits")) \
                + m["seen_503"]
            per.append(m)
    except TrialError as e:
        tails = [(mp, Path(f"{mp}.log")) for mp in mps if Path(f"{mp}.log").exists()]
        if tails:
            mp, lf = tails[0]
            tail = "\n".join(lf.read_text(errors="replace").splitlines()[-8:])
            e.args = (f"{e.args[0]}\n  {mp.name} daemon log tail:\n    " + tail.replace("\n", "\n    "),)
        raise
    finally:
        reap(procs, errs)
        for m in mounts:
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 - reported, the others still go
                log(f"F8: unmounting {m.path} failed: {e}")
                with contextlib.suppress(Exception):
                    force_unmount(m.path)
        for p in proxies:
            p.stop()
        for mp in mps:
            with contextlib.suppress(OSError):
                mp.rmdir()
    fps = [m["files_per_s"] for m in per if m["files_per_s"] and not m["error"]]
    reader_errors = sum(1 for m in per if m["error"])
    injected: Counter = Counter()
    for m in per:
        injected.update(m["injected"])
    reqs = [m["http_requests"] for m in per]
    out = {
        "seconds": round(wall, 3),
        "files": sum(m["files"] for m in per), "bytes": sum(m["bytes"] for m in per),
        "http_requests": sum(reqs) if None not in reqs else None,
        "mount_seconds": round(mount_s, 3),
        "peak_rss_bytes": max((m["peak_rss_bytes"] or 0 for m in per), default=None) or None,
        "daemon_cpu_seconds": round(sum(m["daemon_cpu_seconds"] or 0 for m in per), 3),
        "slowest_over_fastest": round(min(fps) / max(fps), 3) if len(fps) == MOUNTS else None,
        "reader_errors": reader_errors,
        "seen_429": sum(m["seen_429"] for m in per), "seen_503": sum(m["seen_503"] for m in per),
        "throttled": sum(m["batch"].get("throttled") or 0 for m in per),
        "retries": sum(m["retries"] for m in per),
        "injected": dict(injected), "injected_total": sum(injected.values()),
        "bursts": max((m["injected"].get("429 GetBatch", 0) for m in per), default=0),
        "proxy_statuses": dict(sum((Counter({k: v - pb["statuses"].get(k, 0) for k, v in pa["statuses"].items()})
                                    for pa, pb in zip(pafter, pbefore)), Counter())),
        "mounts": per,
        "error": None,
    }
    if reader_errors:
        first = next(m for m in per if m["error"])
        out["error"] = f"{reader_errors} reader error(s); mount {first['mount']}: {first['error']}"
    return out


# -- the case --------------------------------------------------------------------------------------


def _median(vals: list) -> Any:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _aggregate(rows: list[Row]) -> None:
    """What the targets and the table read, in each row's extra (medians over runs without error)."""
    for row in rows:
        ok = [r for r in row.runs if not r.get("error")]
        row.extra.update({
            "mounts": MOUNTS,
            "slowest_over_fastest": _median([r.get("slowest_over_fastest") for r in ok]),
            "reader_errors": sum(r.get("reader_errors", 0) for r in row.runs),
            "injected_total": _median([r.get("injected_total") for r in ok]),
            "seen_429": _median([r.get("seen_429") for r in ok]),
            "throttled": _median([r.get("throttled") for r in ok]),
            "retries": _median([r.get("retries") for r in ok]),
        })
    clean, faulty = rows
    rc = _median([r.get("http_requests") for r in clean.runs if not r.get("error")])
    rf = _median([r.get("http_requests") for r in faulty.runs if not r.get("error")])
    inj = faulty.extra["injected_total"]
    faulty.extra.update({
        "http_requests_no_faults": rc,
        "requests_vs_no_faults": round(rf / rc, 3) if rc and rf is not None else None,
        "extra_requests_per_fault": round((rf - rc) / inj, 2) if rc and rf is not None and inj else None,
        "reader_errors_both_runs": clean.extra["reader_errors"] + faulty.extra["reader_errors"],
    })


def f8(b: Bench, cid: str) -> None:
    n = 2000 if b.quick else 10000
    ds = Dataset.flat("f8", n, 16 * KiB)
    with fleet_cluster(b) as (endpoint, desc):
        if ds.bucket not in b.built:
            b.built[ds.bucket] = ensure_dataset(endpoint, ds, b.workdir)
        b.case(cid, ds, f"{MOUNTS} mounts on one machine ({MOUNTS} daemons, default options, each read "
               f"whole in listing order by its own reader, all released together) against a "
               f"{desc.get('targets') or '?'}-target cluster, each mount through its own fault proxy; "
               f"without faults and with 429/503 bursts", cluster=desc, faults=schedule(),
               note=f"cluster {desc.get('name') or ''} {endpoint} ({desc.get('targets') or '?'} targets); "
               f"{os.cpu_count()} cores shared by {MOUNTS} daemons, {MOUNTS} readers, {MOUNTS} proxies and "
               "the cluster: per-mount throughput partly measures the scheduler")
        rows = [Row(cid, Fleet(False), READER), Row(cid, Fleet(True), READER)]
        b.rows.extend(rows)
        b.interleave(cid, rows, lambda row, _label: fleet_trial(b, row.system, endpoint, ds),
                     lambda r: f"{r['seconds']:.3f}s, {r['http_requests']} requests, "
                     f"slowest/fastest {r['slowest_over_fastest']}, {r['injected_total']} faults injected, "
                     f"{r['reader_errors']} reader errors",
                     after_round=lambda: _aggregate(rows))


# -- targets and the printed table -----------------------------------------------------------------


def fleet_targets(b: Bench) -> list[dict]:
    from .targets import value

    faulty = ("F8", Fleet(True).name, None)
    clean = next((r for r in b.rows if r.case == "F8" and r.name == Fleet(False).name), None)
    fair = value(b, "F8 slowest>=0.5xfastest", f"F8 with 429/503 bursts: the slowest of {MOUNTS} mounts at least "
                 "0.5x the fastest (files/s; on 2 cores this partly measures the scheduler)", faulty,
                 "slowest_over_fastest", ">=", 0.5, unit="slowest/fastest files/s")
    if fair["note"] and clean is not None and clean.extra.get("slowest_over_fastest") is not None:
        fair["note"] = f"{fair['note']}; {clean.extra['slowest_over_fastest']:.3f} without faults"
    return [
        fair,
        value(b, "F8 requests<=1.2xno-faults", f"F8: HTTP requests of all {MOUNTS} mounts with 429/503 bursts at "
              "most 1.2x the same run without faults (no retry storm)", faulty, "requests_vs_no_faults", "<=", 1.2,
              unit="requests with faults / without"),
        value(b, "F8 reader errors=0", "F8: no reader error in either run", faulty, "reader_errors_both_runs",
              "<=", 0, unit="reader errors"),
    ]


def _f(v: int | None) -> str:
    return "-" if v is None else str(v)


def fleet_lines(r: dict) -> str:
    """Below an F8 row: its per-mount table (the median run) and the fleet's totals."""
    ok = [x for x in r["runs"] if not x.get("error") and "mounts" in x] or [x for x in r["runs"] if "mounts" in x]
    if not ok:
        return ""
    run = sorted(ok, key=lambda x: x["seconds"])[(len(ok) - 1) // 2]
    w = [f"      per mount, the run of {run['seconds']:.3f}s (429/503 seen: statuses its proxy sent; "
         "throttled, fallbacks, hedges, splits, items retried: the daemon's batch counters):\n"
         "        mount  seconds  files/s  HTTP req  GetBatch  429 seen  throttled  503 seen  fallbacks  hedges"
         "  splits  items retried  reader error\n"]
    for m in run["mounts"]:
        bt = m["batch"]
        w.append(f"        {m['mount']:>5} {m['seconds'] or 0:>8.3f} {m['files_per_s'] or 0:>8.1f} "
                 f"{_f(m['http_requests']):>9} {_f(m['getbatch_calls']):>9} {m['seen_429']:>9} "
                 f"{_f(bt.get('throttled')):>10} {m['seen_503']:>9} {_f(bt.get('fallbacks')):>10} "
                 f"{_f(bt.get('hedges')):>7} {_f(bt.get('splits')):>7} {_f(bt.get('items_retried')):>14}  "
                 f"{(m['error'] or '-')[:60]}\n")
    inj = ", ".join(f"{k} {v}" for k, v in run["injected"].items()) or "none"
    sof = run["slowest_over_fastest"]
    w.append(f"      fleet: {run['http_requests']} HTTP requests, slowest/fastest "
             f"{'-' if sof is None else format(sof, '.3f')}, {run['seen_429']} 429 and {run['seen_503']} 503 "
             f"seen, {run['retries']} retries, {run['reader_errors']} reader errors; injected: {inj} "
             f"({run['bursts']} 429+503 burst(s) per mount at most); daemons: "
             f"{run['daemon_cpu_seconds']:.1f} CPU s, VmHWM {human(run['peak_rss_bytes'] or 0)} at most\n")
    if r.get("requests_vs_no_faults") is not None:
        w.append(f"      vs no faults: {r['requests_vs_no_faults']:.3f}x the requests "
                 f"({r.get('http_requests_no_faults')} without faults), "
                 f"{r.get('extra_requests_per_fault')} extra requests per injected fault\n")
    return "".join(w)
