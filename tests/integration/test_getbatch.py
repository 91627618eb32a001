"""GetBatch through aisbatchfs's own client, on a 1-target and a 2-target cluster.

The reference for every byte is the official SDK (a plain GET per object, and its own batch
API for the tutorial walk-through).
"""

from __future__ import annotations

import os

import pytest
from aistore.sdk import Client

from aisbatchfs.ais import (
    AisClient,
    BatchFailed,
    BatchTruncated,
    BucketNotFound,
    BucketRef,
    ProtocolError,
)
from tests.helpers import make_archive, put_tutorial, tutorial_archives, tutorial_objects


@pytest.fixture
def tutorial(any_cluster, make_bucket):
    objs, archs = make_bucket(any_cluster, "objs"), make_bucket(any_cluster, "archs")
    put_tutorial(objs, archs)
    return AisClient.from_env(any_cluster.endpoint), BucketRef(objs.name), BucketRef(archs.name)


def test_tutorial_batch_of_objects_and_archive_members_in_order(any_cluster, tutorial):
    """The GetBatch tutorial: 5 objects plus one member of each of 3 archives, one request."""
    client, objs, archs = tutorial
    batch = client.batch(bucket=objs)
    for name in tutorial_objects():
        batch.add(name)
    for j in range(1, 4):
        batch.add(f"archive-{j}.tar", bucket=archs, archpath="file_1.txt")
    got = [(out.item.objname, out.item.archpath, data) for out, data in batch.get()]
    want = [(n, None, d) for n, d in tutorial_objects().items()] + [
        (f"archive-{j}.tar", "file_1.txt", tutorial_archives()[f"archive-{j}.tar"]["file_1.txt"])
        for j in range(1, 4)
    ]
    assert got == want
    # the same request through the SDK's batch API gives the same bytes in the same order
    sdk = Client(any_cluster.endpoint)
    sdk_batch = sdk.batch(bucket=sdk.bucket(objs.name))
    for name in tutorial_objects():
        sdk_batch.add(sdk.bucket(objs.name).object(name))
    for j in range(1, 4):
        sdk_batch.add(sdk.bucket(archs.name).object(f"archive-{j}.tar"), archpath="file_1.txt")
    assert [data for _, data in sdk_batch.get()] == [d for _, _, d in got]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "multipart"])
@pytest.mark.parametrize("fmt", [".tar", ".tgz", ".tar.lz4", ".zip"])
def test_output_formats_and_modes(tutorial, streaming, fmt):
    client, objs, _ = tutorial
    batch = client.batch(bucket=objs, output_format=fmt, streaming=streaming)
    for name, data in tutorial_objects().items():
        batch.add(name, size=len(data))
    assert [d for _, d in batch.get()] == list(tutorial_objects().values())


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "multipart"])
def test_continue_on_error_reports_the_missing_item_in_place(tutorial, streaming):
    client, objs, _ = tutorial
    batch = client.batch(bucket=objs, continue_on_error=True, streaming=streaming)
    batch.add("test-obj-1").add("no-such-object").add("test-obj-2")
    outs = list(batch.get())
    assert [(o.index, o.missing, d) for o, d in outs] == [
        (0, False, b"This is test object 1\n"),
        (1, True, b""),
        (2, False, b"This is test object 2\n"),
    ]
    if not streaming:
        assert "does not exist" in outs[1][0].err_msg


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "multipart"])
def test_more_missing_items_than_the_soft_error_limit_fail_the_batch(tutorial, streaming):
    """Default get_batch.max_soft_errs is 8: ten missing items fail the whole batch."""
    client, objs, _ = tutorial
    batch = client.batch(bucket=objs, continue_on_error=True, streaming=streaming)
    for i in range(10):
        batch.add(f"missing-{i}")
    batch.add("test-obj-1")
    with pytest.raises(BatchFailed, match="soft-errors limit|did not arrive"):
        list(batch.get())


def test_strict_batch_with_a_missing_object_fails_clearly(tutorial):
    client, objs, _ = tutorial
    batch = client.batch(bucket=objs).add("test-obj-1").add("no-such-object").add("test-obj-2")
    seen = []
    with pytest.raises(BatchFailed) as e:
        for _, data in batch.get():
            seen.append(data)
    # nothing wrong was handed out: at most the items before the missing one
    assert seen in ([], [b"This is test object 1\n"])
    if isinstance(e.value, BatchTruncated):
        assert e.value.first_missing == len(seen)
        assert "no-such-object" in str(e.value) or e.value.first_missing == 0


def test_byte_ranges_of_objects_and_members(tutorial):
    client, objs, archs = tutorial
    member = tutorial_archives()["archive-2.tar"]["file_3.txt"]
    batch = client.batch(bucket=objs)
    batch.add("test-obj-3", start=8, length=4)
    batch.add("test-obj-3", start=5, length=-1, size=22)
    batch.add("archive-2.tar", bucket=archs, archpath="file_3.txt", start=2, length=5)
    got = [d for _, d in batch.get()]
    assert got == [b"test", b"This is test object 3\n"[5:], member[2:7]]


def test_cross_bucket_batch_without_a_default_bucket(tutorial):
    client, objs, archs = tutorial
    batch = client.batch()
    batch.add("test-obj-5", bucket=objs).add("archive-3.tar", bucket=archs, archpath="file_5.txt")
    assert [d for _, d in batch.get()] == [
        b"This is test object 5\n",
        tutorial_archives()["archive-3.tar"]["file_5.txt"],
    ]


@pytest.mark.parametrize("fmt", [".tar", ".tgz", ".zip", ".tar.lz4"])
def test_members_of_every_archive_format(any_cluster, make_bucket, fmt):
    b = make_bucket(any_cluster)
    members = {f"d{i}/m{i}.txt": f"member {i} of {fmt}\n".encode() * (i + 1) for i in range(6)}
    b.object(f"shard{fmt}").get_writer().put_content(make_archive(members.items(), fmt))
    client = AisClient.from_env(any_cluster.endpoint)
    batch = client.batch(bucket=BucketRef(b.name))
    for name, data in members.items():
        batch.add(f"shard{fmt}", archpath=name, size=len(data))
    assert [d for _, d in batch.get()] == list(members.values())


def test_wrong_expected_size_is_refused_not_served(tutorial):
    client, objs, _ = tutorial
    batch = client.batch(bucket=objs).add("test-obj-1", size=999)
    with pytest.raises(ProtocolError, match="expected 999"):
        list(batch.get())


def test_checksums_are_verified_for_whole_objects(tutorial):
    client, objs, _ = tutorial
    entry = next(e for e in client.list_objects(objs) if e.name == "test-obj-1")
    ok = client.batch(bucket=objs).add("test-obj-1", checksum=("xxhash2", entry.checksum))
    assert [d for _, d in ok.get()] == [b"This is test object 1\n"]
    bad = client.batch(bucket=objs).add("test-obj-1", checksum=("xxhash2", "0" * 16))
    with pytest.raises(ProtocolError, match="checksum mismatch"):
        list(bad.get())


def test_missing_bucket_is_a_typed_error(tutorial):
    client, _, _ = tutorial
    with pytest.raises(BucketNotFound):
        list(client.batch(bucket=BucketRef("no-such-bucket-y")).add("x").get())


def test_aborting_a_finished_batch_leaves_its_pooled_connection_to_the_next_call(cluster,
                                                                                make_bucket):
    """abort() of a batch that already ended must not touch the connection it used: the pool
    has handed it to the next call by then (it once cut that call's reply mid-stream)."""
    b = make_bucket(cluster)
    blobs = {f"o{i:03d}": os.urandom(64 << 10) for i in range(64)}
    for name, data in blobs.items():
        b.object(name).get_writer().put_content(data)
    client = AisClient.from_env(cluster.endpoint, pool_size=1)  # one connection per pool
    first = client.batch(bucket=BucketRef(b.name))
    for name in blobs:
        first.add(name)
    assert [d for _, d in first.get()] == list(blobs.values())
    second = client.batch(bucket=BucketRef(b.name))
    for name in blobs:
        second.add(name)
    got = []
    for _, data in second.get():
        if not got:
            first.abort()  # the finished batch's consumer leaves late
        got.append(data)
    assert got == list(blobs.values())
