"""Operating a mount: Prometheus metrics, warm, status, and the DataLoader example."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import REPO
from tests.mounting import run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put_files(bucket, n: int, size: int = 4096, prefix: str = "d/") -> dict[str, bytes]:
    files = {f"{prefix}f{i:04d}": os.urandom(size) for i in range(n)}
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda kv: bucket.object(kv[0]).get_writer().put_content(kv[1]),
                      files.items()))
    return files


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_metrics_move_while_reading(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    files = put_files(b, 300)
    port = free_port()
    m = mounter(cluster.endpoint, "--bucket", b.name, "--metrics-addr", f"127.0.0.1:{port}")
    first = scrape(port)
    names = sorted(os.listdir(m.path / "d"))
    seen = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append(scrape(port))
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    try:
        for n in names:
            assert (m.path / "d" / n).read_bytes() == files[f"d/{n}"]
    finally:
        stop.set()
        t.join(10)
    last = scrape(port)
    assert last["aisbatchfs_batch_items_total"] >= 300
    assert last["aisbatchfs_client_http_requests_total"] > first["aisbatchfs_client_http_requests_total"]
    # the kernel opens files by itself, and most reads never reach the daemon (served from
    # pages stored ahead): a few requests per batch, timed and counted by opcode
    assert last['aisbatchfs_fuse_op_seconds_count{op="readdir"}'] >= 1
    assert 1 <= last["aisbatchfs_fuse_read_total"] < 300
    assert last["aisbatchfs_pages_page_stores_total"] > 0
    assert last["aisbatchfs_cache_budget"] > 0
    counts = [s.get("aisbatchfs_batch_items_total", 0) for s in seen]
    assert counts == sorted(counts) and len(set(counts)) > 1  # moving during the reads


def test_warm_shows_progress_in_a_terminal_and_later_reads_hit_the_cache(cluster, make_bucket,
                                                                         mounter):
    b = make_bucket(cluster)
    files = put_files(b, 200, 8192)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "aisbatchfs", "warm", str(m.path / "d")],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, screen
    text = screen.decode(errors="replace")
    assert "\r[" in text and "200/200 files" in text and "ETA" in text, text
    assert "warmed 200 files" in out.decode()
    Path("/proc/sys/vm/drop_caches").write_text("1")  # not the kernel's pages: the daemon's cache
    before = m.stats()
    for name, data in files.items():
        assert (m.path / name).read_bytes() == data
    after = m.stats()
    # every read was a hit (warm's own reads were served from pages stored ahead: no hits yet)
    assert after["cache"]["misses"] == before["cache"]["misses"]
    assert after["cache"]["hits"] >= before["cache"].get("hits", 0) + 200
    assert after["client"]["http_requests"] == before["client"]["http_requests"]


def test_status_shows_a_mounted_instance(cluster, make_bucket, mounter):
    b = make_bucket(cluster)
    put_files(b, 5)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    (m.path / "d" / "f0001").read_bytes()
    out = run([sys.executable, "-m", "aisbatchfs", "status"]).stdout.decode()
    line = next(ln for ln in out.splitlines() if ln.startswith(str(m.path)))
    assert f"ais:{cluster.endpoint}/{b.name}" in line and str(m.stats()["pid"]) in line
    assert "MiB" in line


def test_stats_and_status_end_quietly_when_the_reader_stops(cluster, make_bucket, mounter):
    """`aisbatchfs stats MNT | head` and the like: no BrokenPipe traceback."""
    b = make_bucket(cluster)
    m = mounter(cluster.endpoint, "--bucket", b.name)
    for args in (["stats", str(m.path)], ["stats", "--json", str(m.path)], ["status"]):
        r, w = os.pipe()
        os.close(r)  # the reader is gone before the first line is written
        p = subprocess.run([sys.executable, "-m", "aisbatchfs", *args], stdout=w,
                           stderr=subprocess.PIPE, timeout=60)
        os.close(w)
        assert p.stderr == b"", p.stderr.decode()


def test_the_readme_dataloader_example_reads_what_the_sdk_put(cluster, make_bucket, mounter):
    sys.path.insert(0, str(REPO / "scripts"))
    from dataloader_example import FileDataset, load_all

    b = make_bucket(cluster)
    put_files(b, 120, 3000, prefix="train/")
    m = mounter(cluster.endpoint, "--bucket", b.name)
    which, items, announced = load_all(str(m.path / "train"), workers=4)
    print(f"loader that ran: {which}")
    assert which in ("torch", "fork-pool")
    assert len(items) == 120 and announced == 120
    for rel, data in items:
        assert data == b.object(f"train/{rel}").get_reader().read_all()
    assert m.stats()["hints"]["received"] == 120  # the epoch's order, announced as it began
    readme = (REPO / "README.md").read_text()
    import inspect

    assert inspect.getsource(FileDataset) in readme  # the README shows the tested class
