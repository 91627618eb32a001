"""Datasets: buckets whose name encodes their shape (p1-10000x16k, p2-40x250x16k-tar, ...).

A bucket is built once with parallel SDK PUTs and reused while its object names and sizes are
right, so a benchmark run spends its time measuring. Contents are reproducible and
incompressible (.tgz shards do not shrink). `copy_to` makes the tmpfs copy a limit row reads.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .common import MiB, human, log, size_label


def _rng_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Dataset:
    """A bucket of a known shape. Objects and their sizes are fixed by the name."""

    kind: str                  # flat | shards | big
    bucket: str
    count: int                 # objects (flat, big) or shards
    size: int                  # bytes of one object or one member
    per_shard: int = 0
    ext: str = ""
    description: str = ""

    @staticmethod
    def flat(prefix: str, count: int, size: int) -> "Dataset":
        return Dataset("flat", f"{prefix}-{count}x{size_label(size)}", count, size,
                       description=f"{count:,} x {human(size)} objects in one directory")

    @staticmethod
    def shards(prefix: str, nshards: int, per: int, size: int, ext: str) -> "Dataset":
        return Dataset("shards", f"{prefix}-{nshards}x{per}x{size_label(size)}-{ext}", nshards,
                       size, per, ext, f"{nshards * per:,} x {human(size)} files in {nshards} "
                       f".{ext} shards of {per}")

    @staticmethod
    def big(prefix: str, size: int) -> "Dataset":
        return Dataset("big", f"{prefix}-1x{size_label(size)}", 1, size,
                       description=f"one {human(size)} object")

    @property
    def files(self) -> int:
        """Files the reader sees."""
        return self.count * self.per_shard if self.kind == "shards" else self.count

    @property
    def bytes(self) -> int:
        return self.files * self.size

    def object_names(self) -> list[str]:
        if self.kind == "flat":
            return [f"f{i:06d}.bin" for i in range(self.count)]
        if self.kind == "shards":
            return [f"shard-{s:04d}.{self.ext}" for s in range(1, self.count + 1)]
        return ["big.bin"]

    def members(self, shard_index: int) -> list[str]:
        first = (shard_index - 1) * self.per_shard + 1
        return [f"sample{first + k:06d}.jpg" for k in range(self.per_shard)]

    def items(self) -> list[tuple[str, str | None]]:
        """(object, archpath) of every file, in listing order."""
        if self.kind != "shards":
            return [(n, None) for n in self.object_names()]
        return [(obj, m) for s, obj in enumerate(self.object_names(), 1) for m in self.members(s)]

    def paths(self) -> list[str]:
        """Paths of every file relative to the mount root, in listing order."""
        return [f"{o}/{a}" if a else o for o, a in self.items()]

    def seed(self, i: int) -> int:
        return zlib.crc32(self.bucket.encode()) * 1_000_003 + i

    def content(self, index: int) -> bytes:
        if self.kind == "flat":
            return _rng_bytes(self.seed(index), self.size)
        buf = io.BytesIO()
        mode = "w:gz" if self.ext in ("tgz", "tar.gz") else "w"
        kw = {"compresslevel": 1} if mode == "w:gz" else {}
        with tarfile.open(fileobj=buf, mode=mode, format=tarfile.USTAR_FORMAT, **kw) as tar:
            for k, m in enumerate(self.members(index + 1)):
                data = _rng_bytes(self.seed(index * 100_000 + k), self.size)
                ti = tarfile.TarInfo(m)
                ti.size, ti.mtime, ti.mode = len(data), 1_700_000_000, 0o644
                tar.addfile(ti, io.BytesIO(data))
        return buf.getvalue()


def _per_thread_bucket(endpoint: str, bucket: str):
    """bucket(name) of one SDK client per worker thread (a client is not shared across threads)."""
    from aistore.sdk import Client

    local = threading.local()

    def get():
        if getattr(local, "bck", None) is None:
            local.bck = Client(endpoint, timeout=(10, 600)).bucket(bucket)
        return local.bck
    return get


def ensure_dataset(endpoint: str, ds: Dataset, workdir: Path, workers: int = 16) -> str:
    """Make sure the bucket holds exactly the dataset's objects; 'cached' or 'built in Ns'."""
    from aistore.sdk import Client

    bck = Client(endpoint, timeout=(10, 600)).bucket(ds.bucket)
    bck.create(exist_ok=True)
    have = {e.name: e.size for e in bck.list_all_objects(props="name,size")}
    names = ds.object_names()
    if ds.kind == "shards":  # archive sizes are not known in advance: names and non-empty
        missing = [i for i, n in enumerate(names) if not have.get(n)]
    else:
        missing = [i for i, n in enumerate(names) if have.get(n) != ds.size]
    extra = len(set(have) - set(names))
    if not missing and not extra:
        return "cached"
    t0 = time.monotonic()
    log(f"building {ds.bucket}: {len(missing)} of {len(names)} objects to PUT"
        + (f", {extra} stray objects ignored" if extra else ""))
    if ds.kind == "big":
        tmp = workdir / "big.bin"
        with open(tmp, "wb") as f:
            left, k = ds.size, 0
            while left:
                n = min(left, 64 * MiB)
                f.write(_rng_bytes(ds.seed(k), n))
                left -= n
                k += 1
        bck.object(names[0]).get_writer().put_file(tmp)
        tmp.unlink()
    else:
        bucket_of_thread = _per_thread_bucket(endpoint, ds.bucket)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(
                    lambda i: bucket_of_thread().object(names[i]).get_writer().put_content(ds.content(i)),
                    missing), 1):
                if done % 5000 == 0:
                    log(f"  {ds.bucket}: {done}/{len(missing)}")
    have = {e.name: e.size for e in bck.list_all_objects(props="name,size")}
    bad = [n for n in names if not have.get(n) or (ds.kind != "shards" and have[n] != ds.size)]
    if bad:
        raise RuntimeError(f"{ds.bucket}: {len(bad)} objects still missing after the build")
    os.sync()  # so the first cold run's drop_caches really empties the page cache
    took = time.monotonic() - t0
    log(f"built {ds.bucket} in {took:.0f}s")
    return f"built in {took:.0f}s"


def copy_to(endpoint: str, ds: Dataset, dest: Path, workers: int = 16) -> float:
    """GET every object of a flat dataset into `dest` (the same names); seconds taken."""
    if ds.kind != "flat":
        raise ValueError("only flat datasets are copied")
    t0 = time.monotonic()
    dest.mkdir(parents=True)
    bucket_of_thread = _per_thread_bucket(endpoint, ds.bucket)

    def fetch(name: str) -> None:
        data = bucket_of_thread().object(name).get_reader().read_all()
        if len(data) != ds.size:
            raise RuntimeError(f"{ds.bucket}/{name}: {len(data)} bytes, expected {ds.size}")
        (dest / name).write_bytes(data)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, ds.object_names()))
    return time.monotonic() - t0
