"""The AIStore client against a real aisnode, cross-checked with the official SDK."""

from __future__ import annotations

import http.server
import random
import socket
import threading

import pytest
from aistore.sdk import Client
from aistore.sdk.list_object_flag import ListObjectFlag

from aisbatchfs.ais import (
    AisClient,
    AisError,
    BucketNotFound,
    BucketRef,
    ObjectNotFound,
    ProtocolError,
    RangeNotSatisfiable,
    RequestRejected,
)
from aisbatchfs.ais.config import ClientConfig, Deadlines
from aisbatchfs.ais.transport import MAX_REDIRECTS
from tests.helpers import make_archive

NAMES = [
    "top.txt",
    "empty",
    "dir/a.bin",
    "dir/b.bin",
    "dir/sub/c.bin",
    "dir/sub/deeper/d.bin",
    "odd names/with space.txt",
    "odd names/pct%#?+.txt",
    "odd names/ünïcødé.txt",
]


@pytest.fixture
def seeded(cluster, make_bucket):
    """A bucket with a small tree of objects (random bytes), put with the SDK."""
    b = make_bucket(cluster)
    rng = random.Random(7)
    data = {}
    for n in NAMES:
        data[n] = b"" if n == "empty" else rng.randbytes(rng.randint(1, 50_000))
        b.object(n).get_writer().put_content(data[n])
    return b, data, AisClient.from_env(cluster.endpoint)


def test_list_buckets_matches_sdk(cluster, seeded):
    sdk_bucket, _, client = seeded
    ours = {(b.name, b.provider) for b in client.list_buckets()}
    theirs = {(b.name, b.provider) for b in Client(cluster.endpoint).cluster().list_buckets()}
    assert ours == theirs and (sdk_bucket.name, "ais") in ours


def test_flat_listing_matches_sdk(seeded):
    sdk_bucket, data, client = seeded
    ours = {
        e.name: (e.size, e.checksum, e.version)
        for e in client.list_objects(BucketRef(sdk_bucket.name))
    }
    theirs = {
        e.name: (e.size, e.checksum, e.version)
        for e in sdk_bucket.list_all_objects(props="name,size,checksum,version")
    }
    assert ours == theirs
    assert set(ours) == set(NAMES)
    assert all(ours[n][0] == len(data[n]) for n in NAMES)  # sizes exact, empty included


def test_paging_with_small_pages_returns_everything_once(seeded):
    sdk_bucket, _, client = seeded
    bucket = BucketRef(sdk_bucket.name)
    first = client.list_page(bucket, page_size=2)
    assert len(first.entries) == 2 and first.token and first.uuid
    names = [e.name for e in client.list_objects(bucket, page_size=2)]
    assert sorted(names) == sorted(NAMES) and len(names) == len(set(names))


def test_non_recursive_listing_gives_virtual_directories(seeded):
    sdk_bucket, _, client = seeded
    bucket = BucketRef(sdk_bucket.name)
    top = {(e.name, e.is_dir) for e in client.list_objects(bucket, recursive=False)}
    assert top == {("top.txt", False), ("empty", False), ("dir", True), ("odd names", True)}
    inner = {(e.name, e.is_dir) for e in client.list_objects(bucket, "dir/", recursive=False)}
    assert inner == {("dir/a.bin", False), ("dir/b.bin", False), ("dir/sub", True)}
    sdk = {
        e.name.rstrip("/")
        for e in sdk_bucket.list_all_objects(prefix="dir/", flags=[ListObjectFlag.NO_RECURSION])
    }
    assert {n for n, _ in inner} == sdk


def test_head_matches_sdk(seeded):
    sdk_bucket, data, client = seeded
    for name in ["top.txt", "empty", "odd names/pct%#?+.txt", "odd names/ünïcødé.txt"]:
        ours = client.head(BucketRef(sdk_bucket.name), name)
        theirs = sdk_bucket.object(name).head(props="checksum,version")
        assert ours.size == len(data[name]) == theirs.size
        assert ours.checksum == theirs.checksum_value
        assert ours.checksum_type == theirs.checksum_type == "xxhash2"
        assert ours.version == theirs.obj_version
        assert ours.mtime  # Last-Modified, for a stable mtime


def test_get_whole_and_ranges_match_sdk(seeded):
    sdk_bucket, data, client = seeded
    bucket = BucketRef(sdk_bucket.name)
    for name in NAMES:
        assert client.get(bucket, name) == data[name] == sdk_bucket.object(name).get_reader().read_all()
    blob = data["dir/a.bin"]
    for start, length in [(0, 1), (5, 100), (len(blob) - 3, 3), (10, None)]:
        want = blob[start:] if length is None else blob[start : start + length]
        assert client.get(bucket, "dir/a.bin", start=start, length=length) == want
    assert client.get(bucket, "dir/a.bin", start=len(blob) - 2, length=50) == blob[-2:]  # clamped
    assert client.get(bucket, "empty", length=0) == b""
    with pytest.raises(RangeNotSatisfiable):
        client.get(bucket, "dir/a.bin", start=len(blob) + 10, length=5)


def test_missing_things_are_typed_errors_with_the_server_message(seeded):
    sdk_bucket, _, client = seeded
    with pytest.raises(ObjectNotFound, match="does not exist"):
        client.get(BucketRef(sdk_bucket.name), "no/such/object")
    with pytest.raises(ObjectNotFound):
        client.head(BucketRef(sdk_bucket.name), "no/such/object")
    with pytest.raises(BucketNotFound, match="does not exist") as e:
        client.head(BucketRef("no-such-bucket-x"), "x")
    assert e.value.tcode == "ErrBckNotFound" and e.value.status == 404
    with pytest.raises(BucketNotFound):
        list(client.list_objects(BucketRef("no-such-bucket-x")))
    with pytest.raises(RequestRejected):
        client.get(BucketRef(sdk_bucket.name), "bad/../name")


@pytest.mark.parametrize("fmt", [".tar", ".tgz", ".tar.gz", ".zip", ".tar.lz4"])
def test_archive_members_list_and_read(cluster, make_bucket, fmt):
    b = make_bucket(cluster)
    members = {"a.txt": b"alpha", "nested/dir/b.bin": bytes(range(256)) * 40, "empty": b""}
    b.object(f"shard{fmt}").get_writer().put_content(make_archive(members.items(), fmt))
    b.object(f"shard{fmt}.bak").get_writer().put_content(b"not an archive member")
    client = AisClient.from_env(cluster.endpoint)
    bucket = BucketRef(b.name)
    listed = {m.name: m.size for m in client.list_archive(bucket, f"shard{fmt}").members}
    assert listed == {k: len(v) for k, v in members.items()}
    sdk_listed = {
        e.name for e in b.list_archive(f"shard{fmt}") if e.name.startswith(f"shard{fmt}/")
    }
    assert {f"shard{fmt}/{k}" for k in listed} == sdk_listed
    for name, data in members.items():
        assert client.get_member(bucket, f"shard{fmt}", name, expected_size=len(data)) == data
    with pytest.raises(ObjectNotFound):
        client.get_member(bucket, f"shard{fmt}", "no-such-member")


def test_members_stored_as_dot_slash_are_readable(cluster, make_bucket, tmp_path):
    """`tar -C d -cf x.tar .` stores `./a`; the listing says `a`, and archpath `a` is a 404."""
    import subprocess

    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"dot slash a")
    (d / "sub" / "b.txt").write_bytes(b"dot slash b")
    subprocess.run(["tar", "-C", str(d), "-cf", str(tmp_path / "x.tar"), "."], check=True, timeout=30)
    b = make_bucket(cluster)
    b.object("x.tar").get_writer().put_content((tmp_path / "x.tar").read_bytes())
    client = AisClient.from_env(cluster.endpoint)
    bucket = BucketRef(b.name)
    assert {m.name for m in client.list_archive(bucket, "x.tar").members} == {"a.txt", "sub/b.txt"}
    assert client.get_member(bucket, "x.tar", "a.txt") == b"dot slash a"
    assert client.get_member(bucket, "x.tar", "sub/b.txt") == b"dot slash b"


def test_counters_count_requests_by_kind(seeded):
    sdk_bucket, _, client = seeded
    before = client.counters()
    client.get(BucketRef(sdk_bucket.name), "top.txt")
    client.head(BucketRef(sdk_bucket.name), "top.txt")
    after = client.counters()
    assert after["calls_get"] == before.get("calls_get", 0) + 1
    assert after["calls_head"] == before.get("calls_head", 0) + 1
    assert after["http_requests"] == before["http_requests"] + 4  # each redirected once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_environments_http_proxy_is_used_unless_no_proxy_names_the_cluster(
        seeded, cluster, monkeypatch):
    """HTTP_PROXY and NO_PROXY mean to the client what they mean to requests and curl."""
    sdk_bucket, data, _ = seeded
    port = free_port()  # nothing listens there
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "")
    quick = Deadlines(metadata=1.0, read=1.0)
    proxied = AisClient(ClientConfig.from_env(cluster.endpoint, deadlines=quick))
    with pytest.raises(AisError) as e:
        proxied.get(BucketRef(sdk_bucket.name), "top.txt")
    assert f"127.0.0.1:{port}" in str(e.value)  # it went to the proxy, not to the cluster

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    direct = AisClient(ClientConfig.from_env(cluster.endpoint, deadlines=quick))
    assert direct.get(BucketRef(sdk_bucket.name), "top.txt") == data["top.txt"]


class _RedirectLoop(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        self.send_response(301)
        self.send_header("Location", self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_loop_fails_at_once_without_retries():
    """A node or balancer that redirects in a circle is misconfigured: the call fails with a
    ProtocolError after MAX_REDIRECTS hops, and is not retried until its deadline."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectLoop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AisClient(ClientConfig(endpoint=f"http://127.0.0.1:{server.server_port}"))
        with pytest.raises(ProtocolError, match=f"more than {MAX_REDIRECTS} redirects"):
            client.get(BucketRef("b"), "o")
        assert client.counters()["http_requests"] == MAX_REDIRECTS + 1
    finally:
        server.shutdown()
        server.server_close()
