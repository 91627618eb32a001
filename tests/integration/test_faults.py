"""Deadlines end calls to a target that stops answering; the client recovers afterwards.

Runs on a cluster of its own: pausing a target disturbs every test sharing it.
"""

from __future__ import annotations

import threading
import time

import pytest
from aistore.sdk import Client

from aisbatchfs.ais import AisClient, BucketRef, DeadlineExceeded, Deadlines

DEADLINE = 3.0
SLACK = 2.0



@pytest.fixture
def paused(fault_cluster):
    """A bucket with one object, and the target paused (SIGSTOP) for the test's duration."""
    b = Client(fault_cluster.endpoint).bucket("faults").create(exist_ok=True)
    b.object("obj").get_writer().put_content(b"x" * 1000)
    r = fault_cluster.run("pause-target")
    assert r.returncode == 0, r.stderr
    try:
        yield fault_cluster
    finally:
        r = fault_cluster.run("resume-target")
        assert r.returncode == 0, r.stderr


def run_in_thread(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        t0 = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - the test inspects whatever was raised
            box["error"] = e
        box["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def wait_until_ready(client: AisClient, deadline: float = 90) -> None:
    t0 = time.monotonic()
    while True:
        try:
            if client.get(BucketRef("faults"), "obj") == b"x" * 1000:
                return
        except Exception:
            if time.monotonic() - t0 > deadline:
                raise
        time.sleep(1)


@pytest.mark.parametrize("call", ["get", "getbatch"])
def test_paused_target_times_out_within_the_deadline_and_the_pool_recovers(paused, call):
    client = AisClient.from_env(
        paused.endpoint, deadlines=Deadlines(metadata=DEADLINE, read=DEADLINE, idle=DEADLINE)
    )
    bucket = BucketRef("faults")
    if call == "get":
        fn = lambda: client.get(bucket, "obj")  # noqa: E731
    else:
        fn = lambda: list(client.batch(bucket=bucket).add("obj").get())  # noqa: E731
    thread, box = run_in_thread(fn)
    thread.join(DEADLINE + SLACK + 5)
    assert not thread.is_alive(), "the call's thread is still blocked after its deadline"
    assert isinstance(box.get("error"), DeadlineExceeded), box
    assert box["elapsed"] < DEADLINE + SLACK, box["elapsed"]
    # after the target is back, the same client (same pools) works again
    paused.run("resume-target")
    wait_until_ready(client)
    assert [d for _, d in client.batch(bucket=bucket).add("obj").get()] == [b"x" * 1000]


def test_a_batch_without_its_first_byte_fails_at_the_first_byte_deadline(paused):
    client = AisClient.from_env(paused.endpoint, deadlines=Deadlines(read=30, idle=30))
    batch = client.batch(bucket=BucketRef("faults"), first_byte_timeout=1.0).add("obj")
    thread, box = run_in_thread(lambda: list(batch.get()))
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), DeadlineExceeded), box
    assert box["elapsed"] < 1.0 + SLACK, box["elapsed"]
