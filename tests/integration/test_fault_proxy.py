"""scripts/fault_proxy.py between aisbatchfs's own client and a real 2-target cluster.

Without rules the proxy must be invisible (same bytes, redirects through its target ports);
with rules, each fault must reach the client the way a real one would, and the rules must
fire exactly as often as they say.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
import requests

from aisbatchfs.ais import (
    AisClient,
    AisError,
    BatchTruncated,
    BucketRef,
    DeadlineExceeded,
    Unavailable,
)
from tests.proxies import FaultProxy, LatencyProxy, Rule, proxied

SIZE = 30_000  # bytes of each batch object
ENTRY = 512 + (SIZE + 511) // 512 * 512  # its TAR entry: header, data padded to 512
BIG = 1 << 20  # an object large enough to be cut mid-body
MOSS = "^/v1/ml/moss"
OBJECTS = "^/v1/objects/"
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "fault_proxy.py")


@pytest.fixture
def data(cluster2, make_bucket):
    """A fresh bucket: six SIZE-byte objects (spread over both targets) and one of BIG bytes."""
    b = make_bucket(cluster2, "fp")
    rng = random.Random(11)
    blobs = {f"o{i}": rng.randbytes(SIZE) for i in range(6)}
    blobs["big"] = rng.randbytes(BIG)
    for name, blob in blobs.items():
        b.object(name).get_writer().put_content(blob)
    return BucketRef(b.name), blobs


@pytest.fixture
def proxy(cluster2):
    with proxied(cluster2.endpoint) as p:
        yield p


@pytest.fixture
def client(proxy):
    return AisClient.from_env(proxy.endpoint)


def batch_of(client: AisClient, bucket: BucketRef, names, **kw):
    b = client.batch(bucket=bucket, **kw)
    for n in names:
        b.add(n)
    return b


def read_batch(batch) -> tuple[list[tuple[str, bytes]], Exception | None]:
    """(items handed out, in order; the error that ended the batch, or None)."""
    got = []
    try:
        for out, blob in batch.get():
            got.append((out.item.objname, blob))
    except AisError as e:
        return got, e
    return got, None


def test_without_rules_every_call_matches_direct(cluster2, data, proxy, client):
    bucket, blobs = data
    direct = AisClient.from_env(cluster2.endpoint)
    for name in ("o0", "big"):
        assert client.get(bucket, name) == direct.get(bucket, name) == blobs[name]
    assert client.head(bucket, "o1").size == SIZE
    assert client.head(bucket, "o1").checksum == direct.head(bucket, "o1").checksum
    assert list(client.list_objects(bucket)) == list(direct.list_objects(bucket))
    names = [f"o{i}" for i in range(6)] + ["big"]
    got, err = read_batch(batch_of(client, bucket, names))
    assert err is None and got == [(n, blobs[n]) for n in names]

    assert proxy.requests[("proxy", "GET", "moss")] == 1
    assert proxy.requests[("target", "GET", "moss")] == 1  # the redirect came back through us
    assert proxy.requests[("target", "GET", "objects")] == 2
    assert proxy.requests[("target", "HEAD", "objects")] == 2
    target_ports = [port for role, _, port in proxy.nodes if role == "target"]
    assert sum(proxy.counts[p] for p in target_ports) == 5 and proxy.rewrites == 5
    assert set(proxy.statuses) <= {200, 301, 307} and proxy.statuses[200] >= 6


def test_429_burst_on_gets_is_retried(data, proxy, client):
    bucket, blobs = data
    rule = proxy.add(Rule(method="GET", path=OBJECTS, node="target", status=429, times=2))
    assert client.get(bucket, "o2") == blobs["o2"]
    assert (rule.fired, rule.matched, rule.spent) == (2, 3, True)
    assert proxy.statuses[429] == 2 and client.counters()["calls_get"] == 1


def test_503_burst_on_listings_is_retried(data, proxy, client):
    bucket, blobs = data
    rule = proxy.add(Rule(method="GET", path="^/v1/buckets/", status=503, times=2))
    assert sorted(e.name for e in client.list_objects(bucket)) == sorted(blobs)
    assert (rule.fired, rule.spent) == (2, True) and proxy.statuses[503] == 2


@pytest.mark.parametrize("end_chunked", [True, False], ids=["well-formed", "no-last-chunk"])
def test_getbatch_cut_after_200_hands_out_only_whole_items(data, proxy, client, end_chunked):
    """aisnode ends a failed GetBatch stream with a well-formed short reply: BatchTruncated.
    A connection cut inside the chunked body may also surface as Unavailable."""
    bucket, blobs = data
    rule = proxy.add(Rule(path=MOSS, node="target", cut_after=2 * ENTRY + 700,
                          end_chunked=end_chunked, times=1))
    names = [f"o{i}" for i in range(6)]
    got, err = read_batch(batch_of(client, bucket, names))
    assert got == [(n, blobs[n]) for n in names[:2]]  # whole items only, in order
    if end_chunked:
        assert isinstance(err, BatchTruncated) and err.first_missing == 2
    else:
        assert isinstance(err, (BatchTruncated, Unavailable)), err
        assert getattr(err, "first_missing", 2) == 2
    assert (rule.fired, rule.matched) == (1, 1)  # the proxy hop is not a target: not matched
    got, err = read_batch(batch_of(client, bucket, names))  # spent: the next batch is whole
    assert err is None and len(got) == 6


def test_reset_mid_body(data, proxy, client):
    bucket, blobs = data
    rule = proxy.add(Rule(method="GET", path=OBJECTS, node="target", reset_after=100_000,
                          times=1))
    try:
        assert client.get(bucket, "big") == blobs["big"]  # a client that retries a GET
        assert proxy.requests[("target", "GET", "objects")] == 2
    except Unavailable:
        pass
    assert rule.fired == 1
    proxy.add(Rule(path=MOSS, node="target", reset_after=ENTRY + 10, times=1))
    got, err = read_batch(batch_of(client, bucket, ["o0", "o1", "o2"]))
    assert isinstance(err, (Unavailable, BatchTruncated)), err
    assert got == [("o0", blobs["o0"])][: len(got)]
    assert client.get(bucket, "big") == blobs["big"]  # the dead connection left the pool


def test_stalls_end_at_the_clients_deadline(data, proxy, client):
    bucket, _ = data
    for rule, call in [
        (Rule(path=MOSS, node="target", stall=10),
         lambda: list(batch_of(client, bucket, ["o0", "o1"], timeout=2.0).get())),
        (Rule(method="HEAD", path=OBJECTS, node="proxy", stall=10),
         lambda: client.head(bucket, "o0", timeout=2.0)),
        (Rule(method="GET", path=OBJECTS, node="target", stall_after=(50_000, 10)),
         lambda: client.get(bucket, "big", timeout=2.0)),
    ]:
        proxy.add(rule)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            call()
        assert time.monotonic() - t0 < 2.0 + 2.0, rule
        assert rule.fired == 1
        proxy.clear()


def test_status_400_no_targets_is_relayed_exactly(data, proxy, client):
    bucket, _ = data
    message = "no storage targets in the cluster"
    rule = proxy.add(Rule(path=MOSS, node="proxy", status=400, tcode="ErrNoNodes",
                          message=message))
    got, err = read_batch(batch_of(client, bucket, ["o0"], timeout=2.0))
    if isinstance(err, DeadlineExceeded):  # retried as a transient state until the deadline
        err = err.__cause__
    assert not got and isinstance(err, AisError), err
    assert (err.status, err.tcode, err.message) == (400, "ErrNoNodes", message)
    assert rule.fired >= 1 and proxy.requests[("target", "GET", "moss")] == 0

    s = requests.Session()
    s.trust_env = False
    url = f"{proxy.endpoint}/v1/objects/{bucket.name}/o0"
    proxy.add(Rule(method="GET", path=OBJECTS, status=503, retry_after=3, times=1))
    r = s.get(url)
    assert (r.status_code, r.headers["Retry-After"]) == (503, "3")
    assert r.headers["Content-Type"] == "application/json"
    assert set(r.json()) == {"message", "status"} and r.json()["status"] == 503
    proxy.add(Rule(method="HEAD", path=OBJECTS, status=429, tcode="ErrThrottled", times=1))
    r = s.head(url)
    assert r.status_code == 429 and json.loads(r.headers["Hdr-Error"])["tcode"] == "ErrThrottled"
    assert s.get(url).content == data[1]["o0"]  # the same keep-alive connection still works


def test_a_deadline_that_cuts_a_retry_short_names_the_answer_that_caused_the_retry(
        data, proxy, client):
    """The first answer (slow) says no targets; the retry is still waiting when the deadline
    comes. The error must say why there was a retry at all, not only that time ran out."""
    bucket, _ = data
    rule = proxy.add(Rule(path=MOSS, node="proxy", status=400, tcode="ErrNoNodes",
                          message="no storage targets in the cluster", stall=1.2))
    got, err = read_batch(batch_of(client, bucket, ["o0"], timeout=2.0))
    assert not got and isinstance(err, DeadlineExceeded), err
    assert rule.fired == 2, "the retry was not under way when the deadline came"
    cause = err.__cause__
    assert isinstance(cause, AisError) and (cause.status, cause.tcode) == (400, "ErrNoNodes")
    assert "no storage targets in the cluster" in str(err)


def test_rules_count_skip_spend_and_go(data, proxy):
    bucket, _ = data
    s = requests.Session()
    s.trust_env = False
    url = f"{proxy.endpoint}/v1/objects/{bucket.name}/o0?provider=ais"

    def statuses(n: int) -> list[int]:
        return [s.head(url, allow_redirects=False).status_code for _ in range(n)]

    rule = proxy.add(Rule(method="HEAD", path=OBJECTS, query="provider=ais", after=1, times=2,
                          status=503))
    other = proxy.add(Rule(method="HEAD", path="^/v1/objects/.*/o0$", status=500))
    assert statuses(5) == [500, 503, 503, 500, 500]  # the first rule that fires wins
    assert (rule.matched, rule.fired, rule.spent) == (5, 2, True)
    assert (other.matched, other.fired) == (3, 3)
    assert proxy.remove(other) and not proxy.remove(other) and proxy.rules == [rule]
    assert statuses(1) == [307]
    assert proxy.clear() == 1 and proxy.rules == []
    assert proxy.requests[("proxy", "HEAD", "objects")] == 6
    assert (proxy.statuses[503], proxy.statuses[500], proxy.statuses[307]) == (2, 3, 1)

    def pattern(seed: int) -> list[bool]:
        r = proxy.add(Rule(method="HEAD", path=OBJECTS, probability=0.5, seed=seed, status=503))
        out = [code == 503 for code in statuses(16)]
        assert r.fired == sum(out) and r.matched == 16
        proxy.clear()
        return out

    first = pattern(7)
    assert pattern(7) == first
    rng = random.Random(7)
    assert first == [rng.random() < 0.5 for _ in range(16)] and 0 < sum(first) < 16

    with pytest.raises(ValueError):
        Rule(path=MOSS)  # no action
    with pytest.raises(ValueError):
        Rule(status=503, drop=True)  # two actions


def test_drop_is_retried_and_stall_blocks_no_one(data, proxy, client):
    bucket, blobs = data
    drop = proxy.add(Rule(method="GET", path=OBJECTS, node="target", drop=True, times=1))
    assert client.get(bucket, "o3") == blobs["o3"] and drop.fired == 1
    stall = proxy.add(Rule(method="GET", path="/o4$", node="target", stall=30))
    box: dict = {}

    def stalled_get() -> None:
        try:
            box["result"] = client.get(bucket, "o4", timeout=3.0)
        except AisError as e:
            box["error"] = e

    stalled = threading.Thread(target=stalled_get, daemon=True)
    stalled.start()
    deadline = time.monotonic() + 5
    while stall.fired == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stall.fired == 1
    t0 = time.monotonic()
    assert client.get(bucket, "o5") == blobs["o5"]  # another connection is not held up
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    proxy.stop()  # ends the stalled exchange, and every thread, at once
    assert time.monotonic() - t0 < 1.0
    stalled.join(5)  # its connection was closed; retries end at the call's deadline
    assert not stalled.is_alive() and isinstance(box.get("error"), AisError), box
    ours = {v.rsplit(":", 1)[1] for v in proxy.describe()["ports"].values()}
    assert not [t.name for t in threading.enumerate()
                if t.name.startswith("fault-proxy") and t.name.rsplit("-", 1)[1] in ours]


def test_control_api_of_the_cli(cluster2, data):
    bucket, blobs = data
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, "serve", cluster2.endpoint, "--control-port", "0",
         "--rule", json.dumps({"method": "GET", "path": "/o1$", "status": 503, "times": 1})],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(
            proc.stdout.readline().strip() for _ in range(2)), daemon=True)
        reader.start()
        reader.join(30)
        assert len(lines) == 2, "the proxy did not print its endpoints"
        endpoint = lines[0].removeprefix("AIS_ENDPOINT=")
        control = lines[1].removeprefix("FAULT_PROXY_CONTROL=")
        s = requests.Session()
        s.trust_env = False
        r = s.post(f"{control}/rules", json={"method": "GET", "path": "/o2$", "node": "target",
                                             "status": 429, "tcode": "ErrTooMany", "times": 1},
                   timeout=10)
        assert r.status_code == 201 and r.json()["id"] == 2
        assert s.post(f"{control}/rules", json={"stal": 1}, timeout=10).status_code == 400
        url = f"{endpoint}/v1/objects/{bucket.name}"
        assert s.get(f"{url}/o1", timeout=10).status_code == 503
        r = s.get(f"{url}/o2", timeout=10)
        assert (r.status_code, r.json()["tcode"]) == (429, "ErrTooMany")
        assert s.get(f"{url}/o2", timeout=10).content == blobs["o2"]
        stats = s.get(f"{control}/stats", timeout=10).json()
        assert [(r["id"], r["fired"]) for r in stats["rules"]] == [(1, 1), (2, 1)]
        assert stats["statuses"]["503"] == 1 and stats["requests"]["target GET objects"] == 2
        assert s.delete(f"{control}/rules/1", timeout=10).json() == {"removed": 1}
        assert s.delete(f"{control}/rules", timeout=10).json() == {"removed": 1}
        assert s.get(f"{control}/rules", timeout=10).json() == []
    finally:
        proc.terminate()
        proc.wait(10)


def test_latency_proxy_is_the_fault_proxy_with_a_delay(cluster2, data):
    bucket, blobs = data
    with LatencyProxy(cluster2.endpoint, delay=0.05) as p:
        assert isinstance(p, FaultProxy) and p.rules == []
        t0 = time.monotonic()
        assert AisClient.from_env(p.endpoint).get(bucket, "o0") == blobs["o0"]
        assert time.monotonic() - t0 >= 4 * 0.05  # two round trips: the redirect and the GET
        assert p.describe()["added_rtt_ms"] == 100 and sum(p.counts.values()) == 2
