"""Prometheus metrics: the stats counters and FUSE operation latencies, on request.

Off by default (`metrics_addr`). Scrapes arrive on prometheus-client's own thread; the
collector takes its snapshot on the trio thread (one round trip per scrape), so no state is
read while it changes. Operation timing is a few fixed buckets per operation, updated only
when metrics are on, cheap enough not to show in the read path.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator

import trio
from prometheus_client import start_http_server
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

log = logging.getLogger(__name__)

BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
# values that go up and down (sizes, queues, limits, states); everything else is a counter,
# which Prometheus's rate() reads as restarted when it goes down
GAUGES = {"cache.budget", "cache.used", "cache.cached", "cache.reserved", "cache.peak",
          "cache.items", "namespace.nodes", "batch.queued", "batch.in_flight_limit",
          "batch.items_per_batch", "batch.first_byte_ms_p50", "batch.first_byte_ms_p90",
          "hints.pending", "pages.queued", "pages.pushed_unread", "pages.pushed_unread_bytes",
          "pages.push_budget", "cluster.most_targets", "disk.bytes", "disk.entries",
          "disk.limit", "disk.queued", "disk.pending", "disk.owed", "disk.reserved",
          "disk.unscanned", "direct.large_files", "direct.streams", "planner.streams"}
GAUGE_PREFIXES = ("cache.reserved_",)  # the budget reserved, by purpose


def _is_gauge(name: str, value: float) -> bool:
    return isinstance(value, bool) or name in GAUGES or name.startswith(GAUGE_PREFIXES)


class OpTimings:
    """Latency of FUSE operations: per operation, counts in fixed buckets and a sum."""

    def __init__(self) -> None:
        self.ops: dict[str, list] = {}  # op -> [bucket counts..., count, sum]

    def observe(self, op: str, seconds: float) -> None:
        row = self.ops.get(op)
        if row is None:
            row = self.ops[op] = [0] * (len(BUCKETS) + 1) + [0.0]
        row[bisect.bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def snapshot(self) -> dict[str, list]:
        return {op: list(row) for op, row in self.ops.items()}


class _Collector:
    def __init__(self, snapshot: Callable[[], tuple[dict, dict]], token: trio.lowlevel.TrioToken):
        self.snapshot = snapshot
        self.token = token

    def describe(self) -> list:
        return []  # names are known only at scrape time; registering must not collect

    def collect(self) -> Iterator:
        try:
            stats, timings = trio.from_thread.run_sync(self.snapshot, trio_token=self.token)
        except trio.RunFinishedError:
            return
        for section, values in stats.items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                if not isinstance(value, (int, float)):
                    continue
                name = f"aisbatchfs_{section}_{key}"
                family = (GaugeMetricFamily if _is_gauge(f"{section}.{key}", value)
                          else CounterMetricFamily)(
                    name, f"aisbatchfs {section} {key}")
                family.add_metric([], value)
                yield family
        hist = HistogramMetricFamily("aisbatchfs_fuse_op_seconds", "FUSE operation latency",
                                     labels=["op"])
        for op, row in timings.items():
            cumulative, buckets = 0, []
            for bound, n in zip(BUCKETS, row):
                cumulative += n
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", cumulative + row[len(BUCKETS)]))
            hist.add_metric([op], buckets, row[-1])
        yield hist


def serve(addr: str, snapshot: Callable[[], tuple[dict, dict]]) -> None:
    """Start the endpoint at HOST:PORT (call from the trio thread)."""
    host, _, port = addr.rpartition(":")
    REGISTRY.register(_Collector(snapshot, trio.lowlevel.current_trio_token()))
    start_http_server(int(port), addr=host or "127.0.0.1")
    log.info("metrics at http://%s:%s/metrics", host or "127.0.0.1", port)
