"""The cases: which rows each has, on which dataset, against which endpoint.

Every table puts the systems first and then its limits: what the wire delivers (GetBatch by
curl), the same reader on tmpfs, and behind the latency proxy the proxy's own ceiling. Our
daemon runs with default options in P1 and P3; P0 and P5 set the cache size they are about, P5-disk
the cache size and a disk cache (disk.py, its own run loop: three epochs, a remount).
"""

from __future__ import annotations

import re
import statistics
import time
from typing import TYPE_CHECKING

from .common import MiB, human, log
from .datasets import Dataset
from .disk import p5_disk
from .fleet import f8
from .measures import P3_PROCS, shuffled
from .systems import PeerSystem
from .trials import Row

if TYPE_CHECKING:
    from .runner import Bench

ALL_CASES = ("P0", "P1", "P2-tar", "P2-tgz", "P3", "P4", "P5", "P5-ls", "P5-disk", "P1@2ms", "P3@2ms",
             "P5-disk@2ms", "F8")
GROUPS = {"P2": ("P2-tar", "P2-tgz"), "P5": ("P5", "P5-ls")}
OWN_CLUSTER = {"F8"}  # cases that bring their own cluster (F8: 2 targets, fleet.py)
PROXIED = {"wire": "proxy ceiling"}  # behind the proxy the wire row is the proxy's ceiling


def parse_cases(text: str | None) -> list[str]:
    if not text:
        return list(ALL_CASES)
    want: list[str] = []
    for tok in filter(None, (t.strip() for t in text.split(","))):
        if tok.upper() in OWN_CLUSTER:
            want.append(tok.upper())
            continue
        m = re.fullmatch(r"[pP](\d)(?:[-_]?(tar|tgz|ls|disk))?(?:[@-](2ms))?", tok)
        if not m:
            raise SystemExit(f"bench: unknown case {tok!r}; cases: {', '.join(ALL_CASES)} (and P2, P5)")
        cid = f"P{m[1]}" + (f"-{m[2]}" if m[2] else "") + (f"@{m[3]}" if m[3] else "")
        for i in GROUPS.get(cid, (cid,)):
            if i not in ALL_CASES:
                raise SystemExit(f"bench: unknown case {tok!r}; cases: {', '.join(ALL_CASES)}")
            want.append(i)
    return [c for c in ALL_CASES if c in want]


def p0(b: Bench, cid: str) -> None:
    ds = b.dataset("p1")
    cache = max(256 * MiB, -(-2 * ds.bytes // MiB) * MiB)
    b.case(cid, ds, f"floor: {ds.description} read a second time from the daemon's cache "
           f"(-o cache_size={human(cache).replace(' ', '')}, kernel page cache dropped)",
           cache_size_bytes=cache)
    sysm = b.ours(extra=["-o", f"cache_size={cache}"], label="(cached)")
    b.run_rows(cid, [Row(cid, sysm, "python", measure=b.measures.cached(ds))], ds)


def p1(b: Bench, cid: str, endpoint: str | None = None) -> None:
    ds = b.dataset("p1")
    proxied = endpoint is not None
    b.case(cid, ds, f"{ds.description}, read in listing order")
    m = b.measures
    readers = {"python": m.walk(ds)} if proxied else {"python": m.walk(ds), "find-xargs": m.xargs(ds)}
    rows = [Row(cid, b.ours(), r, measure=f) for r, f in readers.items()]
    if not proxied:
        rows.append(Row(cid, b.ours(label="second pass"), "python", measure=m.second_pass(ds)))
    rows += [Row(cid, b.ours(batch=False), r, measure=f) for r, f in readers.items()]
    rows += b.peer_rows(cid, readers, ds.items(), rename=PROXIED if proxied else None)
    if not proxied:
        b.with_tmpfs(cid, ds)
        rows += [Row(cid, b.tmpfs, r, measure=f) for r, f in readers.items()]
    b.run_rows(cid, _limits_last(rows), ds, endpoint)


def _p2(b: Bench, cid: str, key: str) -> None:
    ds = b.dataset(key)
    b.case(cid, ds, f"{ds.description}, read through the mount in listing order "
           f"(shard-0001.{ds.ext}/sample000001.jpg ...)")
    walk = b.measures.walk(ds)
    rows = [Row(cid, b.ours(), "python", measure=walk),
            Row(cid, b.ours(batch=False), "python", measure=walk),
            Row(cid, PeerSystem(b.peer("sdk-batch(256)").peer, b.workdir, "sdk-batch-archpath"), "sdk",
                items=ds.items())]
    b.run_rows(cid, rows, ds)


def p3(b: Bench, cid: str, endpoint: str | None = None) -> None:
    ds = b.dataset("p1")
    proxied = endpoint is not None
    b.case(cid, ds, f"{P3_PROCS} reader processes over a shuffled list of P1's files "
           f"({ds.description}); process i reads every {P3_PROCS}th file from i")
    m, reader = b.measures, f"{P3_PROCS}-procs"
    rows = [Row(cid, b.ours(label="+hints"), reader, measure=m.procs(ds, True)),
            Row(cid, b.ours(), reader, measure=m.procs(ds, False)),
            Row(cid, b.ours(batch=False), reader, measure=m.procs(ds, False))]
    rows += b.peer_rows(cid, {reader: m.procs(ds, False)}, shuffled(ds), rename=PROXIED if proxied else None)
    if not proxied:
        b.with_tmpfs(cid, ds)
        rows.append(Row(cid, b.tmpfs, reader, measure=m.procs(ds, False)))
    b.run_rows(cid, _limits_last(rows), ds, endpoint)


def p4(b: Bench, cid: str) -> None:
    ds = b.dataset("p4")
    b.case(cid, ds, f"{ds.description}, read sequentially in 1 MiB reads")
    seq = b.measures.seq(ds)
    rows = [Row(cid, b.ours(), "seq-1MiB", measure=seq), Row(cid, b.ours(batch=False), "seq-1MiB", measure=seq)]
    b.run_rows(cid, rows + b.peer_rows(cid, {"seq-1MiB": seq}, ds.items()), ds)


def p5(b: Bench, cid: str) -> None:
    ds = b.dataset("p5")
    b.case(cid, ds, f"two epochs over {ds.description} ({human(ds.bytes)}) with "
           f"-o cache_size={human(b.p5_cache).replace(' ', '')} (kernel page cache "
           "dropped between epochs)", cache_size_bytes=b.p5_cache)
    row = Row(cid, b.ours(extra=["-o", f"cache_size={b.p5_cache}"]), "python x2 epochs",
              measure=b.measures.epochs(ds))
    row.extra["cache_size_bytes"] = b.p5_cache
    b.run_rows(cid, [row], ds)


def p5_ls(b: Bench, cid: str) -> None:
    ds = b.dataset("ls")
    b.case(cid, ds, f"`ls` of a directory of {ds.files:,} objects (cold mount)")
    b.run_rows(cid, [Row(cid, b.ours(), "ls", measure=b.measures.ls(ds))], ds)


def with_proxy(b: Bench, cid: str) -> None:
    """P1, P3 or P5-disk with every system behind scripts/latency_proxy.py (+2 ms per round trip)."""
    from latency_proxy import LatencyProxy

    case = cid.split("@")[0]
    ds = b.dataset("p5disk" if case == "P5-disk" else "p1")
    with LatencyProxy(b.endpoint, delay=0.001) as proxy:
        calib = calibrate(b.endpoint, proxy.endpoint, ds)
        {"P1": p1, "P3": p3, "P5-disk": p5_disk}[case](b, cid, endpoint=proxy.endpoint)
        b.cases[cid]["description"] += " -- through scripts/latency_proxy.py, +2 ms per round trip"
        b.cases[cid]["proxy"] = dict(proxy.describe(), calibration=calib)


def calibrate(direct: str, proxied: str, ds: Dataset) -> dict:
    """Median time of one GET (with its redirect) directly and through the proxy."""
    import requests

    s = requests.Session()
    s.trust_env = False
    url = f"/v1/objects/{ds.bucket}/{ds.object_names()[0]}?provider=ais"

    def med(base: str) -> float:
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            s.get(base + url, timeout=30).raise_for_status()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    d, p = med(direct), med(proxied)
    hops = 1 + len(s.get(proxied + url).history)
    out = {"get_direct_ms": round(d * 1000, 3), "get_proxied_ms": round(p * 1000, 3),
           "round_trips_per_get": hops, "added_ms_per_round_trip": round((p - d) * 1000 / hops, 3)}
    log(f"latency proxy: GET {out['get_direct_ms']:.2f} ms direct, {out['get_proxied_ms']:.2f} ms "
        f"proxied, {out['added_ms_per_round_trip']:.2f} ms added per round trip")
    return out


def _limits_last(rows: list[Row]) -> list[Row]:
    return [r for r in rows if not r.system.limit] + [r for r in rows if r.system.limit]


CASES = {"P0": p0, "P1": p1, "P2-tar": lambda b, c: _p2(b, c, "tar"), "P2-tgz": lambda b, c: _p2(b, c, "tgz"),
         "P3": p3, "P4": p4, "P5": p5, "P5-ls": p5_ls, "P5-disk": p5_disk, "P1@2ms": with_proxy,
         "P3@2ms": with_proxy, "P5-disk@2ms": with_proxy, "F8": f8}


def run_case(b: Bench, cid: str) -> None:
    CASES[cid](b, cid)
