"""The peers' selftest (`scripts/bench_peers.py`): every peer reads exactly the bytes put.

It starts its own cluster (`peers-selftest`), puts a flat bucket, a bucket with nested
directories and one of tar shards with the SDK, and has every peer (and the S3-Reverse-Proxy
variants of the FUSE peers) list and read them back, compared byte for byte. A peer failing is
a result in the table, not a crash.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from .client_peers import SdkBatchPeer
from .cluster import AIS_LOCAL
from .fuse_peers import RclonePeer, S3fsPeer, feature_names, get_cluster_features
from .peers import Peer, all_peers, run, tail

N_OBJECTS, OBJ_SIZE = 100, 16 * 1024
FLAT_BUCKET, NESTED_BUCKET, SHARD_BUCKET = "peers-flat", "peers-nested", "peers-shards"


def _put_dataset(endpoint: str) -> tuple[dict[str, bytes], dict[str, bytes], dict[tuple[str, str], bytes]]:
    from aistore.sdk import Client
    rnd = random.Random(20261125)
    c = Client(endpoint)
    flat = {f"obj-{i:04d}.bin": rnd.randbytes(OBJ_SIZE) for i in range(N_OBJECTS)}
    nested = {f"dir/sub/n-{i}.bin": rnd.randbytes(4096) for i in range(5)}
    members: dict[tuple[str, str], bytes] = {}
    shards: dict[str, bytes] = {}
    for s in range(2):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for m in range(4):
                data = rnd.randbytes(3000 + m)
                info = tarfile.TarInfo(f"sample-{m}.cls")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                members[(f"shard-{s}.tar", info.name)] = data
        shards[f"shard-{s}.tar"] = buf.getvalue()
    for bname, objs in ((FLAT_BUCKET, flat), (NESTED_BUCKET, nested), (SHARD_BUCKET, shards)):
        b = c.bucket(bname).create(exist_ok=True)
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda kv, b=b: b.object(kv[0]).get_writer().put_content(kv[1]), objs.items()))
    return flat, nested, members


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _check_fuse_tree(root: Path, expected: dict[str, bytes]) -> tuple[float, str | None]:
    """List every directory on the way to the expected files, read them all, compare."""
    t0 = time.monotonic()
    dirs: dict[str, set[str]] = {}
    for name in expected:
        parent, _, base = name.rpartition("/")
        dirs.setdefault(parent, set()).add(base)
        while parent:  # every ancestor lists its child dir
            up, _, d = parent.rpartition("/")
            dirs.setdefault(up, set()).add(d)
            parent = up
    for d, want in sorted(dirs.items()):
        got = set(os.listdir(root / d if d else root))
        if got != want:
            return time.monotonic() - t0, (f"listing {d or '/'!r}: missing {sorted(want - got)[:3]}, "
                                           f"extra {sorted(got - want)[:3]} ({len(got)} entries)")
    bad = []
    for name, data in expected.items():
        got = (root / name).read_bytes()
        if got != data:
            bad.append(f"{name}: {len(got)} B sha {_digest(got)} != {len(data)} B sha {_digest(data)}")
    return time.monotonic() - t0, (f"{len(bad)} objects differ, e.g. {bad[0]}" if bad else None)


def _check_stream(pairs: Iterable[tuple[object, bytes]], expected: dict) -> tuple[float, str | None]:
    t0 = time.monotonic()
    seen, bad = set(), []
    for key, data in pairs:
        seen.add(key)
        if data != expected.get(key):
            bad.append(f"{key}: {len(data)} B sha {_digest(data)}")
    dt = time.monotonic() - t0
    if seen != set(expected):
        return dt, f"got {len(seen)} of {len(expected)} items"
    return dt, (f"{len(bad)} items differ, e.g. {bad[0]}" if bad else None)


def _guard(fn: Callable[..., tuple[float, str | None]], *a) -> tuple[float, str | None]:
    try:
        return fn(*a)
    except Exception as e:  # a peer failing is a result, not a crash of the selftest
        return 0.0, f"{type(e).__name__}: {tail(str(e), 300)}"


def _check_peer(peer: Peer, endpoint: str, work: Path, flat: dict, nested: dict,
                members: dict) -> tuple[float, str | None, list[str]]:
    notes = []
    if peer.fuse:
        mnt = work / f"mnt-{peer.label}"
        try:
            dt, err = _guard(_check_fuse_tree, peer.setup(endpoint, FLAT_BUCKET, mnt), flat)
        finally:
            peer.teardown()
        try:
            _, nerr = _guard(_check_fuse_tree, peer.setup(endpoint, NESTED_BUCKET, mnt), nested)
        finally:
            peer.teardown()
        notes.append("nested dirs ok" if nerr is None else f"nested dirs FAIL: {nerr}")
        return dt, err, notes
    names = sorted(flat)
    dt, err = _guard(lambda: _check_stream(peer.iter_read(endpoint, FLAT_BUCKET, names), flat))
    t0 = time.monotonic()
    try:
        n = peer.read_all(endpoint, FLAT_BUCKET, names)
        notes.append(f"read_all {n} B in {time.monotonic() - t0:.2f}s")
        short = n < N_OBJECTS * OBJ_SIZE if "wire_bytes" in peer.last else n != N_OBJECTS * OBJ_SIZE
        if short and err is None:
            err = f"read_all returned {n} B, expected {N_OBJECTS * OBJ_SIZE}"
    except Exception as e:
        err = err or f"read_all: {type(e).__name__}: {tail(str(e), 300)}"
    _, nerr = _guard(lambda: _check_stream(peer.iter_read(endpoint, NESTED_BUCKET, sorted(nested)), nested))
    notes.append("nested names ok" if nerr is None else f"nested names FAIL: {nerr}")
    if isinstance(peer, SdkBatchPeer):
        _, merr = _guard(lambda: _check_stream(
            (((o, m), d) for o, m, d in peer.iter_members(endpoint, SHARD_BUCKET, list(members))), members))
        notes.append(f"{len(members)} archive members ok" if merr is None else f"archive members FAIL: {merr}")
        err = err or merr
    return dt, err, notes


def selftest(keep: bool = False) -> int:
    start = run([sys.executable, str(AIS_LOCAL), "start", "--name", "peers-selftest"], timeout=600)
    if start.returncode != 0:
        print(start.stderr, file=sys.stderr)
        return 2
    endpoint = next(ln.split("=", 1)[1] for ln in start.stdout.splitlines() if ln.startswith("AIS_ENDPOINT="))
    rows: list[tuple[str, str, str, str]] = []
    failed = False
    work = Path(tempfile.mkdtemp(prefix="peers-selftest-"))
    try:
        print(f"cluster peers-selftest at {endpoint}; features "
              f"{feature_names(get_cluster_features(endpoint)) or 'none'}", flush=True)
        flat, nested, members = _put_dataset(endpoint)
        mib = N_OBJECTS * OBJ_SIZE / 2**20
        peers: list[Peer] = all_peers()
        for peer in peers:
            t0 = time.monotonic()
            peer.prepare()
            print(f"prepare {peer.label}: {time.monotonic() - t0:.1f}s "
                  f"{'not run: ' + peer.not_run if peer.not_run else 'ok'}", flush=True)
        for variant in (RclonePeer("reverse-proxy"), S3fsPeer("reverse-proxy")):
            first = next(p for p in peers if type(p) is type(variant))  # reuse its prepare()
            variant.not_run, variant.flags = first.not_run, dict(first.flags)
            if isinstance(variant, RclonePeer):
                variant.binary = first.binary  # type: ignore[attr-defined]
            peers.append(variant)
        for peer in peers:
            if peer.not_run:
                rows.append((peer.label, f"not-run ({peer.not_run})", "-", ""))
                continue
            dt, err, notes = _check_peer(peer, endpoint, work, flat, nested, members)
            failed |= err is not None
            rows.append((peer.label, "ok" if err is None else f"FAIL: {err}", f"{dt:.2f}" if err is None else "-",
                         (f"{mib / dt:.1f} MiB/s; " if err is None and dt else "") + "; ".join(notes)))
        print(f"\n{N_OBJECTS} objects x {OBJ_SIZE // 1024} KiB; seconds = list + read all + compare\n")
        w = [max(len(r[i]) for r in rows + [("peer", "status", "seconds", "")]) for i in range(3)]
        print(f"{'peer':<{w[0]}}  {'status':<{w[1]}}  {'seconds':>{w[2]}}  notes")
        for r in rows:
            print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]}")
        print("\nflags:")
        for peer in peers:
            if not peer.not_run:
                print(f"  {peer.label}: {json.dumps(peer.flags)}")
                for lim in peer.limits:
                    print(f"    limit: {lim}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            run([sys.executable, str(AIS_LOCAL), "stop", "--name", "peers-selftest"], timeout=120)
    return 1 if failed else 0
