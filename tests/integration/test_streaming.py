"""GetBatch replies are consumed as they arrive, never buffered whole."""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor

from aisbatchfs.ais import AisClient, BucketRef

N, SIZE = 100, 8 << 20


def rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_big_batch_streams_first_item_early_and_memory_stays_flat(cluster, make_bucket):
    b = make_bucket(cluster)
    blob = os.urandom(SIZE)

    def put(i: int) -> None:
        b.object(f"big-{i:03d}").get_writer().put_content(blob[i:] + blob[:i])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(N)))
    del put
    client = AisClient.from_env(cluster.endpoint)
    batch = client.batch(bucket=BucketRef(b.name))
    for i in range(N):
        batch.add(f"big-{i:03d}", size=SIZE)
    gc.collect()
    base_rss, base_bytes = rss(), client.counters()["bytes_received"]
    peak = base_rss
    first_at = None
    count = 0
    for out, data in batch.get():
        if first_at is None:
            first_at = client.counters()["bytes_received"] - base_bytes
        i = out.index
        assert data == blob[i:] + blob[:i]
        count += 1
        del data
        peak = max(peak, rss())
    total = client.counters()["bytes_received"] - base_bytes
    assert count == N
    assert total >= N * SIZE
    assert first_at < 0.1 * total, f"first item after {first_at} of {total} bytes"
    assert peak - base_rss < 64 << 20, f"RSS grew by {(peak - base_rss) >> 20} MiB"
