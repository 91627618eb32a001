"""What the Prometheus endpoint calls each stats value: a value that can go down (a size, a
queue, a state) is a gauge; only a count that never goes down is a counter, since `rate()`
reads a counter that went down as a restart of the daemon."""

from __future__ import annotations

import trio

from aisbatchfs.metrics import _Collector


def kinds(stats: dict) -> dict[str, str]:
    async def main() -> dict[str, str]:
        collector = _Collector(lambda: (stats, {}), trio.lowlevel.current_trio_token())
        families = await trio.to_thread.run_sync(lambda: list(collector.collect()))
        return {f.name: f.type for f in families if f.name != "aisbatchfs_fuse_op_seconds"}
    return trio.run(main)


def test_sizes_queues_and_states_are_gauges_and_counts_are_counters():
    got = kinds({
        "disk": {"bytes": 5, "entries": 2, "limit": 9, "queued": 1, "pending": 1, "owed": 1,
                 "reserved": 0, "unscanned": 0, "walked": True, "disabled": "",
                 "hits": 3, "writes": 4, "write_deferred": 1, "reader_restarts": 0},
        "pages": {"pushed_unread": 3, "pushed_unread_bytes": 10, "push_budget": 99,
                  "queued": 0, "page_stores": 7},
        "cache": {"used": 1, "reserved_fetch": 7, "reserved_pushed": 2, "hits": 4},
        "batch": {"disk_direct": 2, "queued": 0},
    })
    gauges = {"disk_bytes", "disk_entries", "disk_limit", "disk_queued", "disk_pending",
              "disk_owed", "disk_reserved", "disk_unscanned", "disk_walked", "pages_pushed_unread",
              "pages_pushed_unread_bytes", "pages_push_budget", "pages_queued", "cache_used",
              "cache_reserved_fetch", "cache_reserved_pushed", "batch_queued"}
    counters = {"disk_hits", "disk_writes", "disk_write_deferred", "disk_reader_restarts",
                "pages_page_stores", "cache_hits", "batch_disk_direct"}
    assert got == {**{f"aisbatchfs_{n}": "gauge" for n in gauges},
                   **{f"aisbatchfs_{n}": "counter" for n in counters}}
