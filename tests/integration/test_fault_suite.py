"""Faults between a real mount and a real 2-target cluster, with real readers: the right bytes
or a clear error in time, never a false picture, and everything back without a remount.

Faults come from the fault proxy (tests/proxies.py: resets mid-stream, GetBatch replies cut
after the 200, 429/503/ErrNoNodes bursts, stalls past each deadline) and from pausing and
restarting a target while 8 reader processes run. Every read is checked against what was put:
- bytes equal the originals, always (a wrong byte fails the test at once);
- an error is EIO or ETIMEDOUT (never EINVAL, never ENOENT for an object that exists), and
  comes within the read deadline (plus slack for a loaded machine);
- a listing of a non-empty directory is never empty or short: it is whole, or an error;
- once the fault is gone, every file reads right again on the same mount, and the daemon is
  alive.
Runs on a cluster of its own: pausing a target disturbs everyone sharing it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aistore.sdk import Client

from tests.conftest import start_cluster, stop_cluster
from tests.proxies import Rule, proxied

READ_TIMEOUT = 6.0
META_TIMEOUT = 4.0
SLACK = 4.0  # a loaded 2-core machine, and the kernel's own retry of a failed page
OPTS = (f"read_timeout={READ_TIMEOUT:g},metadata_timeout={META_TIMEOUT:g},"
        "first_byte_timeout=2,metadata_ttl=2,negative_ttl=1")
MOSS = "^/v1/ml/moss"
OBJECTS = "^/v1/objects/"

READER = r"""
import hashlib, json, os, sys, time
for path in sys.stdin.read().split("\n"):
    if not path:
        continue
    t0 = time.monotonic()
    try:
        with open(path, "rb") as f:
            out = {"sha": hashlib.sha256(f.read()).hexdigest()}
    except OSError as e:
        out = {"err": e.errno}
    out.update(p=path, t=time.monotonic() - t0)
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def cluster2f():
    c = start_cluster("faultsuite", 2)
    yield c
    stop_cluster(c)


@pytest.fixture(scope="module")
def data(cluster2f):
    """300 small objects of assorted sizes, two large ones, a tar shard: name -> sha256."""
    b = Client(cluster2f.endpoint).bucket("suite").create(exist_ok=True)
    rng = random.Random(5)
    blobs = {f"d/f{i:03d}": rng.randbytes(rng.choice([1, 700, 4096, 20_000, 150_000]))
             for i in range(300)}
    blobs["big/a.bin"] = rng.randbytes(3 << 20)
    blobs["big/b.bin"] = rng.randbytes(12 << 20)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda kv: b.object(kv[0]).get_writer().put_content(kv[1]), blobs.items()))
    return b, {name: hashlib.sha256(v).hexdigest() for name, v in blobs.items()}


@pytest.fixture
def proxy(cluster2f):
    with proxied(cluster2f.endpoint) as p:
        yield p


@pytest.fixture
def mnt(proxy, data, mounter):
    b, _ = data
    m = mounter(proxy.endpoint, "--bucket", b.name, "-o", OPTS)
    assert len(os.listdir(m.path / "d")) == 300  # listed before any fault
    return m


def read_with_readers(m, names: list[str], procs: int = 8) -> list[dict]:
    """`procs` reader processes over a shuffled list (process i takes every procs-th name)."""
    order = names[:]
    random.Random(len(names)).shuffle(order)
    running = []
    for i in range(procs):
        p = subprocess.Popen([sys.executable, "-c", READER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        p.stdin.write("\n".join(str(m.path / n) for n in order[i::procs]))
        p.stdin.close()
        running.append(p)
    results = []
    for p in running:
        out = p.stdout.read()
        p.wait(timeout=300)
        results += [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(names)
    return results


def check(m, results: list[dict], shas: dict[str, str], *, errors_allowed: bool) -> int:
    """Every invariant, for every read; returns how many failed (with an allowed errno)."""
    failed = 0
    for r in results:
        name = os.path.relpath(r["p"], m.path)
        if "sha" in r:
            assert r["sha"] == shas[name], f"WRONG BYTES from {name}"
        else:
            assert errors_allowed, f"{name}: errno {r['err']}"
            assert r["err"] in (errno.EIO, errno.ETIMEDOUT), f"{name}: errno {r['err']}"
            failed += 1
        # an open's lookup (metadata_timeout) and then its read (read_timeout) each have a
        # deadline: a file whose listing and bytes both wait out a restart takes both
        assert r["t"] < META_TIMEOUT + READ_TIMEOUT + SLACK, f"{name}: {r['t']:.1f}s"
    return failed


def healthy_again(m, shas: dict[str, str], deadline: float = 90) -> None:
    """Same mount, no remount: every file reads right once the fault is gone."""
    t0 = time.monotonic()
    names = sorted(shas)
    while True:
        results = read_with_readers(m, names)
        bad = [r for r in results if r.get("sha") != shas[os.path.relpath(r["p"], m.path)]]
        assert all("err" in r for r in bad), "WRONG BYTES after recovery"
        if not bad:
            break
        assert time.monotonic() - t0 < deadline, f"{len(bad)} reads still failing"
        time.sleep(2)
    assert m.proc.poll() is None, "the daemon died"
    assert m.stats()["fs"]["reads"] >= 0


def test_connections_reset_mid_stream(mnt, proxy, data):
    _, shas = data
    proxy.add(Rule(path=MOSS, node="target", reset_after=30_000, probability=0.4, seed=1))
    proxy.add(Rule(path=OBJECTS, node="target", reset_after=100_000, probability=0.3, seed=2))
    check(mnt, read_with_readers(mnt, sorted(shas)), shas, errors_allowed=True)
    proxy.clear()
    healthy_again(mnt, shas)


def test_getbatch_replies_cut_after_the_200(mnt, proxy, data):
    _, shas = data
    proxy.add(Rule(path=MOSS, node="target", cut_after=50_000, end_chunked=True,
                   probability=0.5, seed=3))
    results = read_with_readers(mnt, sorted(shas))
    assert check(mnt, results, shas, errors_allowed=True) == 0  # cut batches are retried
    assert mnt.stats()["batch"].get("batch_failures", 0) > 0
    proxy.clear()
    healthy_again(mnt, shas)


def test_bursts_of_429_503_and_no_targets_are_waited_out_without_a_storm(mnt, proxy, data):
    _, shas = data
    before = mnt.stats()["client"]["http_requests"]
    proxy.add(Rule(path=MOSS, status=429, times=6))
    proxy.add(Rule(path=OBJECTS, status=503, times=6))
    proxy.add(Rule(path=MOSS, status=400, tcode="ErrNoNodes",
                   message="no storage targets in the cluster", times=4))
    results = read_with_readers(mnt, sorted(shas))
    assert check(mnt, results, shas, errors_allowed=False) == 0
    spent = mnt.stats()["client"]["http_requests"] - before
    assert spent < 3 * len(shas), spent  # retried in batches, never one GET per file
    assert mnt.stats()["batch"].get("throttled", 0) > 0


def test_stalls_past_each_deadline_end_in_eio_in_time(mnt, proxy, data):
    _, shas = data
    # GetBatch never starts: readers fall back to single GETs within the first-byte deadline
    proxy.add(Rule(path=MOSS, stall=60))
    results = read_with_readers(mnt, sorted(n for n in shas if n.startswith("d/"))[:80])
    assert check(mnt, results, shas, errors_allowed=False) == 0
    # and GETs stall too: EIO within the read deadline
    proxy.add(Rule(path=OBJECTS, stall=60))
    results = read_with_readers(mnt, sorted(n for n in shas if n.startswith("d/"))[80:120])
    assert check(mnt, results, shas, errors_allowed=True) == len(results)
    # a listing that stalls: an error within the metadata deadline, never an empty directory
    proxy.add(Rule(path="^/v1/buckets/", stall=60))
    time.sleep(2.5)  # past metadata_ttl: the next listing asks the cluster
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.listdir(mnt.path / "big")
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 2 * META_TIMEOUT + SLACK
    proxy.clear()
    healthy_again(mnt, shas)


def listing_watch(m, expected: set[str], stop: threading.Event, seen: list) -> None:
    """List d/ over and over while a fault is on: whole, or an error; never short."""
    while not stop.is_set():
        try:
            got = set(os.listdir(m.path / "d"))
            seen.append(len(got))
            assert got == expected, f"a listing of d/ with {len(got)} of {len(expected)} names"
        except OSError as e:
            assert e.errno in (errno.EIO, errno.ETIMEDOUT), e
            seen.append(-1)
        time.sleep(0.3)


@pytest.mark.parametrize("fault", ["pause", "restart"])
def test_a_target_paused_or_restarted_under_eight_readers(cluster2f, mnt, data, fault):
    _, shas = data
    expected = {n.split("/")[1] for n in shas if n.startswith("d/")}
    stop, seen, problems = threading.Event(), [], []

    def watch() -> None:
        try:
            listing_watch(mnt, expected, stop, seen)
        except AssertionError as e:
            problems.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def fault_on() -> None:
        time.sleep(1)
        if fault == "pause":
            assert cluster2f.run("pause-target", "--index", "1").returncode == 0
            time.sleep(8)
            assert cluster2f.run("resume-target", "--index", "1").returncode == 0
        else:
            assert cluster2f.run("restart-target", "--index", "1", timeout=240).returncode == 0

    faulter = threading.Thread(target=fault_on)
    faulter.start()
    try:
        results = read_with_readers(mnt, sorted(shas))
        check(mnt, results, shas, errors_allowed=True)
    finally:
        faulter.join(300)
        stop.set()
        watcher.join(30)
    assert not problems, problems[0]
    assert seen, "the listing was never checked"
    healthy_again(mnt, shas)


def test_lookups_stuck_on_the_cluster_hold_up_nothing_else(proxy, data, mounter):
    """64 lookups of names the mount has not seen, each stalled on the cluster: the stats file,
    stat of listed names and of the root answer at once meanwhile (lookups of one directory
    run in parallel: the patched libfuse tells the kernel so), and the daemon keeps reading
    new requests (max_tasks is sized for it)."""
    b, _ = data
    m = mounter(proxy.endpoint, "--bucket", b.name, "-o", "metadata_timeout=20,metadata_ttl=300")
    listed = sorted(os.listdir(m.path / "d"))
    proxy.add(Rule(method="HEAD", path="/nope", stall=30))
    proxy.add(Rule(path="^/v1/buckets/", query="", stall=30))
    stuck = [threading.Thread(target=os.path.exists, args=(m.path / f"nope{i}",), daemon=True)
             for i in range(64)]
    for t in stuck:
        t.start()
    time.sleep(2)  # all 64 are waiting on the cluster now
    for what, call in (("the stats file", lambda: (m.path / ".aisbatchfs" / "stats").read_text()),
                       ("a listed name", lambda: os.stat(m.path / "d" / listed[7])),
                       ("the root", lambda: os.stat(m.path)),
                       ("stats over the socket", lambda: m.stats())):
        t0 = time.monotonic()
        call()
        took = time.monotonic() - t0
        assert took < 0.5, f"{what}: {took:.2f}s with 64 lookups stuck"
    assert sum(t.is_alive() for t in stuck) > 32  # they were really stuck meanwhile
    proxy.clear()


def test_a_lookup_past_its_deadline_is_eio_and_one_log_line_naming_path_and_cause(
        proxy, data, mounter):
    b, _ = data
    m = mounter(proxy.endpoint, "--bucket", b.name, "-o", "metadata_timeout=2")
    assert os.path.isdir(m.path / "d")  # known, not listed: a lookup in it asks the cluster
    proxy.add(Rule(method="HEAD", path="/never", stall=30))
    proxy.add(Rule(path="^/v1/buckets/", query="", stall=30))
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.stat(m.path / "d" / "never")
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 2 + SLACK
    proxy.clear()
    lines = [ln for ln in m.log_text().splitlines() if "never" in ln]
    assert len(lines) == 1, lines
    assert f"ais://{b.name}/d/never" in lines[0] and "DeadlineExceeded" in lines[0], lines[0]
    assert "Traceback" not in m.log_text() and "ExceptionGroup" not in m.log_text()
