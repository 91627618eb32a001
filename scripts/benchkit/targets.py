"""The targets, computed from the rows' medians. "A >= k x B" compares throughput: B's median
seconds over A's. A target not measured has pass null and a note saying why; informational
targets (the new ones until they have been measured for a while) never pass or fail, their
note says whether the measurement meets them.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from .common import MiB, human
from .disk import disk_targets
from .fleet import fleet_targets
from .report import summary

if TYPE_CHECKING:
    from .runner import Bench

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt}
WHY_NONE = {"fuse_requests_per_file": "the daemon's stats have no FUSE counts (\"fuse\")",
            "peak_rss_mib": "no VmHWM", "second_epoch_hit_rate": "the daemon's stats have no cache.reread_hits",
            "e2_disk_hit_rate": "no disk lookups in epoch 2 (or no \"disk\" in the stats)",
            "e3_disk_hit_rate": "no disk lookups in epoch 3 (or no \"disk\" in the stats)",
            "e2_data_requests_over_e1": "no data requests in epoch 1 (or no \"client\" in the stats)"}


def _find(b: Bench, case: str, system: str, reader: str | None) -> dict | None:
    for row in b.rows:
        if row.case == case and row.name == system and (reader is None or row.reader == reader):
            return summary(row)
    return None


def _missing(b: Bench, case: str, system: str, reader: str | None, s: dict | None, key: str) -> str | None:
    if case not in b.selected:
        return f"case {case} not selected"
    if s is None:
        err = b.cases.get(case, {}).get("error")
        return f"{case} {system} not run" + (f" ({err})" if err else "")
    if s.get(key) is None:
        what = f"{case} {system}" + (f" [{reader}]" if reader else "")
        return f"{what}: {s['status']}" if not s["median_seconds"] else f"{what}: {WHY_NONE.get(key, 'no ' + key)}"
    return None


def _target(tid: str, desc: str, threshold: float | None, op: str, informational: bool) -> dict:
    return {"id": tid, "description": desc, "measured": None, "threshold": threshold, "op": op,
            "pass": None, "informational": informational, "note": None}


def _judge(t: dict, note: str) -> dict:
    met = OPS[t["op"]](t["measured"], t["threshold"])
    if t["informational"]:
        note += "; meets it" if met else "; below it"
    else:
        t["pass"] = met
    t["note"] = note
    return t


def ratio(b: Bench, tid: str, desc: str, a: tuple[str, str, str | None], base: tuple[str, str, str | None],
          k: float, informational: bool = False) -> dict:
    """Throughput of row a (case, system, reader) >= k x that of row base."""
    t = _target(tid, desc, k, ">=", informational)
    sa, sb = _find(b, *a), _find(b, *base)
    why = list(dict.fromkeys(filter(None, (_missing(b, *a, sa, "median_seconds"),
                                           _missing(b, *base, sb, "median_seconds")))))
    if why:
        t["note"] = "not measured: " + "; ".join(why)
        return t
    t["measured"] = round(sb["median_seconds"] / sa["median_seconds"], 3)
    return _judge(t, f"{sb['median_seconds']:.3f}s / {sa['median_seconds']:.3f}s")


def value(b: Bench, tid: str, desc: str, row: tuple[str, str, str | None], key: str, op: str,
          threshold: float, informational: bool = False, unit: str = "") -> dict:
    """A figure of one row against a threshold."""
    t = _target(tid, desc, threshold, op, informational)
    s = _find(b, *row)
    why = _missing(b, *row, s, key)
    if why:
        t["note"] = "not measured: " + why
        return t
    t["measured"] = s[key]
    return _judge(t, unit)


def gap_widens(b: Bench, base: str) -> dict:
    """At 2 ms RTT the speedup of ours over --no-batch is larger than without added latency."""
    reader = "python" if base == "P1" else None
    ours = "aisbatchfs" if base == "P1" else "aisbatchfs +hints"
    at0 = ratio(b, "", "", (base, ours, reader), (base, "aisbatchfs --no-batch", reader), 0)
    at2 = ratio(b, "", "", (f"{base}@2ms", ours, reader), (f"{base}@2ms", "aisbatchfs --no-batch", reader), 0)
    t = _target(f"{base}@2ms gap widens", f"at 2 ms RTT the {base} speedup of {ours} over --no-batch "
                "is larger than without added latency", at0["measured"], ">", base == "P3")
    t["measured"] = at2["measured"]
    if at0["measured"] is None or at2["measured"] is None:
        t["note"] = "not measured: " + "; ".join(
            x["note"].removeprefix("not measured: ") for x in (at0, at2) if x["measured"] is None)
        return t
    return _judge(t, f"speedup {at2['measured']:.2f}x at 2 ms vs {at0['measured']:.2f}x at 0 ms")


def evaluate(b: Bench) -> list[dict]:
    ours1, second = ("P1", "aisbatchfs", "python"), ("P1", "aisbatchfs second pass", "python")
    p3h, p3 = ("P3", "aisbatchfs +hints", None), ("P3", "aisbatchfs", None)
    p3nob = ("P3", "aisbatchfs --no-batch", None)
    T = [ratio(b, "P1>=0.6xP0", "P1 aisbatchfs at least 0.6x the cached floor P0 (python reader)",
               ours1, ("P0", "aisbatchfs (cached)", "python"), 0.6)]
    for reader in ("python", "find-xargs"):
        T.append(ratio(b, f"P1>=10x--no-batch[{reader}]",
                       f"P1 aisbatchfs at least 10x aisbatchfs --no-batch ({reader} reader)",
                       ("P1", "aisbatchfs", reader), ("P1", "aisbatchfs --no-batch", reader), 10,
                       informational=reader != "python"))
    for v in ("tar", "tgz"):
        T.append(ratio(b, f"P2-{v}>=0.7xSDK", f"P2 ({v}) aisbatchfs at least 0.7x the SDK GetBatch with "
                       "archpath (no regression)", (f"P2-{v}", "aisbatchfs", "python"),
                       (f"P2-{v}", "sdk-batch-archpath", "sdk"), 0.7))
    T.append(ratio(b, "P3>=3x--no-batch", "P3 aisbatchfs with hints at least 3x --no-batch", p3h, p3nob, 3))
    T.append(ratio(b, "P3(no hints)/--no-batch", "P3 aisbatchfs without hints over --no-batch (reported, "
                   "no target)", p3, p3nob, 3, informational=True))
    T.append(ratio(b, "P4>=0.8xcurl", "P4 aisbatchfs at least 0.8x curl (no regression)",
                   ("P4", "aisbatchfs", None), ("P4", "curl", None), 0.8))
    p5 = ("P5", "aisbatchfs", None)
    T.append(value(b, "P5 RSS<=cache+150MiB", "P5 daemon peak RSS (VmHWM) at most the cache size + 150 MiB "
                   "(no regression)", p5, "peak_rss_mib", "<=", round(b.p5_cache / MiB + 150, 1),
                   unit=f"MiB; cache_size {human(b.p5_cache)}"))
    T.append(value(b, "P5 hit rate>0", "P5 second-epoch cache hit rate above 0", p5, "second_epoch_hit_rate",
                   ">", 0))
    T += [gap_widens(b, "P1"), gap_widens(b, "P3")]
    # new targets, informational until measured
    T += [
        ratio(b, "P1>=0.5xSDK(1000)", "P1 aisbatchfs (cold) at least 0.5x the SDK's GetBatch of 1,000 items",
              ours1, ("P1", "sdk-batch(1000)", None), 0.5, informational=True),
        value(b, "P1 2nd pass FUSE req/file<=0.01", "P1 second pass on the same mount: at most 0.01 FUSE "
              "requests per file", second, "fuse_requests_per_file", "<=", 0.01, informational=True,
              unit="FUSE requests per file"),
        ratio(b, "P1 2nd pass>=0.15xtmpfs", "P1 second pass at least 0.15x the same reader on tmpfs",
              second, ("P1", "tmpfs", "python"), 0.15, informational=True),
        ratio(b, "P3(no hints)>=1.5xrclone", "P3 aisbatchfs, 8 shuffled readers without hints, at least "
              "1.5x rclone", p3, ("P3", "rclone", None), 1.5, informational=True),
        ratio(b, "P3+hints>=3xrclone", "P3 aisbatchfs with hints at least 3x rclone", p3h, ("P3", "rclone", None),
              3, informational=True),
        ratio(b, "P1@2ms>=10xrclone", "P1 at +2 ms RTT: aisbatchfs at least 10x rclone",
              ("P1@2ms", "aisbatchfs", "python"), ("P1@2ms", "rclone", "python"), 10, informational=True),
        ratio(b, "P1@2ms>=0.8xSDK(1000)", "P1 at +2 ms RTT: aisbatchfs at least 0.8x the SDK's GetBatch of "
              "1,000 items through the proxy", ("P1@2ms", "aisbatchfs", "python"),
              ("P1@2ms", "sdk-batch(1000)", None), 0.8, informational=True),
        ratio(b, "P3@2ms(no hints)>=3xrclone", "P3 at +2 ms RTT: aisbatchfs without hints at least 3x rclone",
              ("P3@2ms", "aisbatchfs", None), ("P3@2ms", "rclone", None), 3, informational=True),
    ]
    T += disk_targets(b)  # P5-disk, P5-disk@2ms (scripts/benchkit/disk.py)
    T += fleet_targets(b)  # F8 (scripts/benchkit/fleet.py)
    return T
