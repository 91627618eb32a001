"""Client peers: programs that read a bucket without a filesystem.

  sdk-batch(N)  GetBatch (MOSS) through the official SDK, N items a request (1,000 and 256);
                read_members() reads archive members (archpath), the P2 comparator
  sdk-get16     plain object GETs through the SDK, 16 in flight
  curl          one `curl` process per object, sequential: a fresh HTTP client's per-object floor
  wire          GetBatch by curl, 1,000 items a request, sequential, output discarded: what the
                cluster (or the latency proxy in front of it) delivers with no client work at all
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from .peers import Peer, run, tail

SDK_CASES = frozenset({"P1", "P3", "P1@2ms", "P3@2ms"})


def _client(endpoint: str, pool: int = 16):
    from aistore.sdk import Client
    return Client(endpoint, max_pool_size=pool)


def _sdk_version() -> str | None:
    """The SDK's version, or None when it cannot be imported (then the peer is not run)."""
    try:
        import aistore
        from aistore.sdk import Client  # noqa: F401
    except ImportError:
        return None
    return getattr(aistore, "__version__", "?")


class SdkBatchPeer(Peer):
    """GetBatch through the SDK: one request per `batch_size` items, streamed .tar output."""

    name = "sdk-batch"

    def __init__(self, batch_size: int = 256) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.cases = SDK_CASES | ({"P4"} if batch_size == 256 else set())

    @property
    def label(self) -> str:
        return f"{self.name}({self.batch_size})"

    def prepare(self) -> None:
        sdk = _sdk_version()
        if sdk is None:
            self.not_run = "aistore SDK not importable"
            return
        self.flags = {"sdk": sdk, "batch_size": self.batch_size, "output_format": ".tar",
                      "streaming_get": True, "cont_on_err": False,
                      "api": "client.batch(bucket=...).add(obj, archpath=...).get()"}

    def _run_batches(self, endpoint: str, bucket: str,
                     items: list[tuple[str, str | None]]) -> Iterator[tuple[str, str | None, bytes]]:
        c = _client(endpoint, pool=4)
        bck = c.bucket(bucket)
        for i in range(0, len(items), self.batch_size):
            chunk = items[i:i + self.batch_size]
            batch = c.batch(bucket=bck, cont_on_err=False)
            for name, member in chunk:
                batch.add(name, archpath=member)
            got = 0
            for (name, member), (_, data) in zip(chunk, batch.get()):
                got += 1
                yield name, member, data
            if got != len(chunk):
                raise RuntimeError(f"GetBatch returned {got} of {len(chunk)} items")

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        for name, _, data in self._run_batches(endpoint, bucket, [(n, None) for n in names]):
            yield name, data

    def iter_members(self, endpoint: str, bucket: str,
                     pairs: list[tuple[str, str]]) -> Iterator[tuple[str, str, bytes]]:
        yield from self._run_batches(endpoint, bucket, list(pairs))

    def read_members(self, endpoint: str, bucket: str, pairs: list[tuple[str, str]]) -> int:
        return sum(len(d) for _, _, d in self.iter_members(endpoint, bucket, pairs))


class SdkGet16Peer(Peer):
    """Plain object GETs through the SDK, 16 in flight (ThreadPoolExecutor(16))."""

    name = "sdk-get16"
    cases = frozenset({"P1", "P4"})

    def __init__(self, workers: int = 16) -> None:
        super().__init__()
        self.workers = workers

    def prepare(self) -> None:
        sdk = _sdk_version()
        if sdk is None:
            self.not_run = "aistore SDK not importable"
            return
        self.flags = {"sdk": sdk, "workers": self.workers, "max_pool_size": self.workers,
                      "call": "object.get_reader().read_all()"}

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        bck = _client(endpoint, pool=self.workers).bucket(bucket)
        with ThreadPoolExecutor(self.workers) as ex:
            yield from zip(names, ex.map(lambda n: bck.object(n).get_reader().read_all(), names))


CURL = ["curl", "-s", "-S", "-f", "-L", "--noproxy", "*", "--max-time", "600"]


def _curl_version() -> str | None:
    if not shutil.which("curl"):
        return None
    return run(["curl", "--version"], timeout=30).stdout.split("\n")[0].strip()


class CurlPeer(Peer):
    """One `curl` process per object, sequential (following the proxy's redirect)."""

    name = "curl"
    cases = frozenset({"P1", "P4"})

    def prepare(self) -> None:
        version = _curl_version()
        if version is None:
            self.not_run = "curl is not installed"
            return
        self.flags = {"version": version, "api": "native",
                      "argv": [*CURL, "-o", "/dev/null", "-w", "%{size_download}",
                               "ENDPOINT/v1/objects/BUCKET/OBJ?provider=ais"]}

    @staticmethod
    def url(endpoint: str, bucket: str, name: str) -> str:
        return f"{endpoint}/v1/objects/{bucket}/{urllib.parse.quote(name, safe='/')}?provider=ais"

    def read_all(self, endpoint: str, bucket: str, names: list[str]) -> int:
        total = 0
        for n in names:
            r = run([*CURL, "-o", "/dev/null", "-w", "%{size_download}", self.url(endpoint, bucket, n)],
                    timeout=660)
            if r.returncode != 0:
                raise RuntimeError(f"curl {n}: exit {r.returncode}: {tail(r.stderr)}")
            total += int(float(r.stdout.strip()))
        return total

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        for n in names:
            r = subprocess.run([*CURL, "-o", "-", self.url(endpoint, bucket, n)],
                               capture_output=True, timeout=660)
            if r.returncode != 0:
                raise RuntimeError(f"curl {n}: exit {r.returncode}: {tail(r.stderr.decode(errors='replace'))}")
            yield n, r.stdout


class WirePeer(Peer):
    """GetBatch by curl: `GET /v1/ml/moss/BUCKET` with the JSON body aisbatchfs sends, 1,000 items
    a request, one request after another, the TAR reply discarded.

    The proxy answers GetBatch with a 307 to a target; curl follows it (-L) and re-sends the
    body (a 307 keeps method and body; --post301/302/303 keep the body on the other codes too,
    while -X GET keeps the method). The bytes received (%{size_download}: the TAR stream,
    headers included) show the data came; `last` has them, with requests and redirects.
    """

    name = "wire"
    limit = True
    cases = SDK_CASES

    def __init__(self, items: int = 1000) -> None:
        super().__init__()
        self.items = items
        self.request = [*CURL, "--post301", "--post302", "--post303", "-X", "GET",
                        "-H", "Content-Type: application/json"]

    def prepare(self) -> None:
        version = _curl_version()
        if version is None:
            self.not_run = "curl is not installed"
            return
        self.flags = {"version": version, "items_per_request": self.items, "output": "discarded",
                      "argv": [*self.request, "--data-binary", "@BODY.json", "-o", "/dev/null", "-w",
                               "%{size_download} %{num_redirects} %{http_code}",
                               "ENDPOINT/v1/ml/moss/BUCKET?provider=ais"],
                      "body": {"in": [{"objname": "OBJ", "bucket": "BUCKET", "provider": "ais"}],
                               "mime": ".tar", "coer": False, "onob": False, "strm": True}}

    def _bodies(self, bucket: str, names: list[str], where: Path) -> list[Path]:
        out = []
        for k in range(0, len(names), self.items):
            f = where / f"body-{k // self.items}.json"
            f.write_text(json.dumps({"in": [{"objname": n, "bucket": bucket, "provider": "ais"}
                                            for n in names[k:k + self.items]],
                                     "mime": ".tar", "coer": False, "onob": False, "strm": True}))
            out.append(f)
        return out

    def read_all(self, endpoint: str, bucket: str, names: list[str]) -> int:
        url = f"{endpoint}/v1/ml/moss/{bucket}?provider=ais"
        total = redirects = 0
        with tempfile.TemporaryDirectory(prefix="bench-wire-") as d:
            bodies = self._bodies(bucket, names, Path(d))
            for body in bodies:
                r = run([*self.request, "--data-binary", f"@{body}", "-o", "/dev/null", "-w",
                         "%{size_download} %{num_redirects} %{http_code}", url], timeout=660)
                if r.returncode != 0:
                    raise RuntimeError(f"GetBatch by curl: exit {r.returncode}: {tail(r.stderr)}")
                size, hops, code = r.stdout.split()
                if code != "200":
                    raise RuntimeError(f"GetBatch by curl answered {code}")
                total += int(float(size))
                redirects += int(hops)
        self.last = {"wire_bytes": total, "requests": len(bodies), "redirects": redirects}
        return total

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        url = f"{endpoint}/v1/ml/moss/{bucket}?provider=ais"
        with tempfile.TemporaryDirectory(prefix="bench-wire-") as d:
            for k, body in enumerate(self._bodies(bucket, names, Path(d))):
                r = subprocess.run([*self.request, "--data-binary", f"@{body}", "-o", "-", url],
                                   capture_output=True, timeout=660)
                if r.returncode != 0:
                    raise RuntimeError(f"GetBatch by curl: exit {r.returncode}: "
                                       f"{tail(r.stderr.decode(errors='replace'))}")
                with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r|") as tar:
                    datas = [tar.extractfile(m).read() for m in tar if m.isfile()]
                chunk = names[k * self.items:(k + 1) * self.items]
                if len(datas) != len(chunk):
                    raise RuntimeError(f"GetBatch by curl returned {len(datas)} of {len(chunk)} items")
                yield from zip(chunk, datas)
