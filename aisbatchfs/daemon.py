"""Mounting: check the cluster, mount, serve until unmounted or signalled, unmount cleanly.

Background mounts fork first, before pyfuse3, trio or any thread exists (a forked process
keeps only the forking thread). The child mounts and reports over a pipe; the parent exits
only once the mount answers, with a status that says whether it worked.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass

import pyfuse3
import trio

from aisbatchfs import logs, service
from aisbatchfs.ais import (
    AccessDenied,
    AisClient,
    AisError,
    BucketNotFound,
    BucketRef,
    ClientConfig,
    DeadlineExceeded,
    Deadlines,
)
from aisbatchfs.ais.aio import ThreadedAis
from aisbatchfs.ais.transport import TLSFailure
from aisbatchfs.fs.batcher import Batcher, BatcherConfig
from aisbatchfs.fs.cache import ReadCache
from aisbatchfs.fs.clustermap import ClusterWatch
from aisbatchfs.fs.dentries import DentryPrimer
from aisbatchfs.fs.hints import Hints
from aisbatchfs.fs.namespace import CONTROL_DIR, Entry, Kind, Namespace
from aisbatchfs.fs.operations import AisOperations, Presentation, stats_snapshot
from aisbatchfs.fs.control import ControlServer, socket_path_for
from aisbatchfs.fs.diskcache import DiskCache, DiskCacheConfig, DiskCacheError
from aisbatchfs.fs.disktier import DiskTier
from aisbatchfs.fs.pagecache import KernelCache
from aisbatchfs.fs.planner import Planner
from aisbatchfs.fs.reader import Reader, ReaderConfig
from aisbatchfs.options import MountSettings

log = logging.getLogger("aisbatchfs")

# the project's pyfuse3 patch (patches/): READ carries the inode, opendir takes a FileInfo
PATCHED_PYFUSE3 = (getattr(pyfuse3.Operations, "read_with_inode", None) is False
                   and hasattr(pyfuse3.FileInfo(), "cache_readdir"))

# pyfuse3 patch 5: FUSE_IOCTL answered by a thread of its own, never waiting for the GIL
IOCTL_THREAD = hasattr(pyfuse3, "ioctls_answered_apart")
IDLE_FUSE_TASKS = 64  # pyfuse3 worker tasks kept waiting for requests (a parked coroutine each)
# pyfuse3 patch 6: after answering an ioctl, the request thread polls on for up to this many
# microseconds while that finds requests. A Python program reading cached files sends its next
# open's ioctl ~15 us after the last answer; a thread woken from sleep instead answered in
# 58-71 us (p50) on this 2-CPU virtual machine (a wake-up across CPUs), most of a second
# pass over 10,000 cached files (docs/read-path.md, "Opens and closes never reach the daemon")
IOCTL_SPIN_US = 50 if hasattr(pyfuse3, "ioctl_spins") else 0

_SCHEMES = {"ais": "ais", "s3": "aws", "aws": "aws", "gs": "gcp", "gcp": "gcp", "az": "azure",
            "azure": "azure", "oc": "oci", "oci": "oci", "ht": "ht"}


class MountError(Exception):
    """The mount cannot be made; the message says why, for the person who asked."""


@dataclass(frozen=True)
class Target:
    """What to mount: the endpoint and, unless the whole cluster, a bucket and prefix."""

    endpoint: str
    bucket: BucketRef | None
    prefix: str = ""

    @property
    def fsname(self) -> str:
        where = f"/{self.bucket.name}" if self.bucket else ""
        if self.bucket and self.prefix:
            where += f"/{self.prefix}"
        return f"ais:{self.endpoint}{where}"


def parse_bucket(spec: str) -> tuple[BucketRef, str]:
    """'NAME[/PREFIX]', 'ais://NAME/PREFIX', 's3://NAME', 'ais://@uuid#ns/NAME' or 'ais://#ns/NAME'."""
    provider, namespace, rest = "ais", "", spec
    if "://" in spec:
        scheme, rest = spec.split("://", 1)
        if scheme not in _SCHEMES:
            raise MountError(f"unknown bucket provider {scheme!r} in {spec!r}; use one of "
                             + ", ".join(sorted(_SCHEMES)))
        provider = _SCHEMES[scheme]
    if rest.startswith(("@", "#")):
        namespace, _, rest = rest.partition("/")
    name, _, prefix = rest.partition("/")
    if not name:
        raise MountError(f"no bucket name in {spec!r}")
    return BucketRef(name, provider, namespace), prefix.strip("/")


def resolve_target(source: str | None, settings: MountSettings) -> Target:
    """SOURCE is an endpoint URL (optionally with /BUCKET[/PREFIX]), a bucket URL such as
    ais://BUCKET/PREFIX, or a placeholder ('aisbatchfs', 'none'); options fill in the rest."""
    endpoint = settings.endpoint  # flag, -o, environment (AIS_ENDPOINT too) or config file
    bucket_spec = settings.bucket
    if source and source not in ("aisbatchfs", "none", "ais"):
        if source.startswith(("http://", "https://")):
            scheme, rest = source.split("://", 1)
            host, _, path = rest.partition("/")
            endpoint = f"{scheme}://{host}"  # named right here: it wins
            if path.strip("/") and not bucket_spec:
                bucket_spec = path.strip("/")
        else:
            bucket_spec = bucket_spec or source
    if not endpoint:
        raise MountError("no AIStore endpoint: give one (ENDPOINT, --endpoint, -o endpoint=) "
                         "or set AIS_ENDPOINT")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    bucket, prefix = parse_bucket(bucket_spec) if bucket_spec else (None, "")
    return Target(endpoint.rstrip("/"), bucket, prefix)


def clear_stale_mount(mountpoint: str) -> None:
    """A daemon that died leaves 'Transport endpoint is not connected': unmount it lazily.

    statfs, not stat: the kernel may answer stat of the root from its attribute cache even
    after the daemon is gone, while statfs always asks the daemon."""
    try:
        os.statvfs(mountpoint)
        return
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    log.warning("%s is a dead FUSE mount (transport endpoint not connected); unmounting it",
                mountpoint)
    for cmd in (["fusermount3", "-uz", mountpoint], ["umount", "-l", mountpoint]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
            return
    raise MountError(f"{mountpoint} is a dead FUSE mount and could not be unmounted")


def check_mountpoint(mountpoint: str) -> str:
    mountpoint = os.path.abspath(mountpoint)
    clear_stale_mount(mountpoint)
    if not os.path.isdir(mountpoint):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point")
    return mountpoint


def fuse_options(settings: MountSettings, target: Target) -> set[str]:
    """What the kernel mount gets: read-only (write-type calls fail with EROFS in the kernel,
    O_TRUNC opens included), and the owner and modes shown enforced unless opted out."""
    opts = set(settings.fuse_options) | {"ro"}
    if settings.check_permissions:
        opts.add("default_permissions")
    if not any(o.startswith("fsname=") for o in opts):
        opts.add(f"fsname={target.fsname}")
    if not any(o.startswith("subtype=") for o in opts):
        opts.add("subtype=aisbatchfs")
    return opts


async def serve(settings: MountSettings, target: Target, mountpoint: str,
                ready: Callable[[str | None], None]) -> None:
    """Mount and serve until unmounted or signalled. `ready(None)` once the mount answers,
    `ready(message)` if it could not be made."""
    client = AisClient(client_config(settings, target))
    if settings.token_file:
        client.transport.token_source = lambda: read_token(settings.token_file)
    ais = ThreadedAis(client)
    # fail before mounting when the cluster or bucket is not there, and soon: a wrong endpoint
    # should not make `mount` wait out the whole metadata deadline
    check = min(settings.metadata_timeout, MOUNT_CHECK_TIMEOUT)
    try:
        if target.bucket is not None:
            await trio.to_thread.run_sync(functools.partial(
                client.bucket_props, target.bucket, timeout=check))
        else:
            await trio.to_thread.run_sync(functools.partial(
                client.list_buckets, None, timeout=check))
    except BucketNotFound as e:
        raise MountError(f"bucket {target.bucket} does not exist ({e.message})") from None
    except AccessDenied as e:
        raise MountError(f"{target.endpoint} refused access: {e.message}"
                         f"{_access_hint(e)}") from None
    except TLSFailure as e:
        raise MountError(f"cannot reach {target.endpoint}: {_cause(e)}{_tls_hint(e)}") from None
    except AisError as e:
        raise MountError(f"cannot reach {target.endpoint}: {_cause(e)}") from None
    cluster = ClusterWatch(ais)
    await cluster.degraded()  # learn how many storage targets make the cluster whole
    ns = Namespace(ais, bucket=target.bucket, prefix=target.prefix, archives=settings.archives,
                   archive_suffix=settings.archive_suffix, ttl=settings.metadata_ttl,
                   negative_ttl=settings.negative_ttl, metadata_timeout=settings.metadata_timeout,
                   cluster=cluster)
    # one byte budget for cached items, batches in flight and the windows of large reads
    budget = settings.cache_size or default_cache_size()
    cache = ReadCache(budget)
    reader_cfg = ReaderConfig(max_object=settings.batch_max_object, batch=settings.batch,
                              read_timeout=settings.read_timeout)

    def batchable(e: Entry) -> bool:
        return (e.kind in (Kind.FILE, Kind.MEMBER) and 0 < e.size <= reader_cfg.max_object
                and cache.cacheable(e.size) and not ais.needs_own_read(ns.item(e)))

    if settings.ioctl_thread and not IOCTL_THREAD:
        log.warning("pyfuse3 %s is not built with this project's patch 5 (patches/): the "
                    "ioctl that Python's open() sends for every file waits for the GIL",
                    pyfuse3.__version__)
    kernel_open = settings.kernel_open and PATCHED_PYFUSE3
    if settings.kernel_open and not PATCHED_PYFUSE3:
        log.warning("pyfuse3 %s is not built with this project's patch (patches/, applied by "
                    "scripts/bootstrap): every open and close will reach the daemon",
                    pyfuse3.__version__)
    kernel = KernelCache(ns, cache, kernel_open=kernel_open, push=settings.push_pages)
    sections: dict = {"cache": cache.stats, "pages": kernel.stats, "cluster": cluster.stats}
    disk_cache = await _open_disk_cache(settings, cluster)
    disk = DiskTier(disk_cache, ns, cache) if disk_cache is not None else None
    if disk is not None:
        sections["disk"] = disk.stats
    batcher = hints = planner = None
    if settings.batch:
        batcher = Batcher(
            ais, cache,
            BatcherConfig(max_items=settings.batch_max_items, max_bytes=settings.batch_max_bytes,
                          in_flight=settings.batches_in_flight,
                          coalesce=settings.coalesce_ms / 1000,
                          first_byte_timeout=settings.first_byte_timeout,
                          read_timeout=settings.read_timeout),
            on_arrival=kernel.offer, cluster=cluster, disk=disk)
        planner = Planner(ns, batchable, max_items=settings.batch_max_items,
                          max_bytes=settings.batch_max_bytes,
                          spread_share=settings.spread_share, spread_bytes=budget // 4)
        hints = Hints(ns, batcher, batchable)
        sections.update(batch=batcher.stats, hints=hints.stats, planner=planner.stats)
        log.info("read cache: %d MiB (batched reads of objects up to %d KiB)",
                 budget >> 20, settings.batch_max_object >> 10)
    else:
        log.info("batching off: one GET per file; %d MiB for the windows of reads",
                 budget >> 20)
    reader = Reader(ns, ais, cache, batcher, planner, reader_cfg, kernel, disk)
    sections["direct"] = reader.stats
    control = ControlServer(socket_path_for(mountpoint, os.getuid()),
                            hints.add if hints else None, lambda: ops.stats())
    try:
        control_sock = await control.bind()
    except OSError as e:
        raise MountError(f"cannot make the control socket {control.path}: {e}") from None
    sections["control"] = lambda: dict(control.counters)
    umask = settings.umask
    look = Presentation(
        uid=os.getuid() if settings.uid is None else settings.uid,
        gid=os.getgid() if settings.gid is None else settings.gid,
        file_mode=settings.file_mode & ~umask,
        dir_mode=settings.dir_mode & ~umask,
        ttl=settings.metadata_ttl,
        negative_ttl=settings.negative_ttl,
    )
    dentries = DentryPrimer(os.path.abspath(mountpoint)) if settings.prime_dentries else None
    if dentries is not None:
        sections["dentries"] = dentries.stats
    ops: AisOperations = AisOperations(
        ns, reader, look, lambda: stats_snapshot(ops, ais.counters, **sections), kernel,
        kernel_open=kernel_open, control_path=control.path,
        cache_readdir=PATCHED_PYFUSE3, dentries=dentries)
    if settings.metrics_addr:
        from aisbatchfs import metrics

        timings = ops.timings = metrics.OpTimings()
        try:
            metrics.serve(settings.metrics_addr, lambda: (ops.stats(), timings.snapshot()))
        except (OSError, ValueError) as e:
            raise MountError(f"cannot serve metrics at {settings.metrics_addr}: {e}") from None
    options = fuse_options(settings, target)
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as e:
        raise MountError(f"cannot mount {mountpoint}: {e}") from None
    log.info("mounted %s at %s (options %s)", target.fsname, mountpoint, ",".join(sorted(options)))
    closed = False

    def unmount() -> None:
        nonlocal closed
        if not closed:
            closed = True
            service.notify("STOPPING=1", "STATUS=unmounting")
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)

    try:
        # the disk cache outlives the mount by a little: what it was given is written after
        # the kernel lets go of the mountpoint, so that a remount finds it
        async with trio.open_nursery() as outer:
            if disk is not None:
                await outer.start(disk.cache.run)
                await outer.start(disk.run)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(reader.run)
                    await nursery.start(kernel.run)
                    if dentries is not None:
                        await nursery.start(dentries.run)
                    await nursery.start(control.serve, control_sock)
                    if batcher is not None and hints is not None:
                        await nursery.start(batcher.run)
                        await nursery.start(hints.run)
                    nursery.start_soon(_fuse_main, settings.max_tasks,
                                       settings.ioctl_thread and IOCTL_THREAD,
                                       nursery.cancel_scope)
                    nursery.start_soon(_on_signals, nursery.cancel_scope, settings, client)
                    nursery.start_soon(_announce_ready, mountpoint, ready, nursery.cancel_scope)
                    nursery.start_soon(_report_status, ops)
            finally:
                unmount()
            if disk is not None:
                await _drain_disk_cache(disk)
            outer.cancel_scope.cancel()
    finally:
        unmount()
        if disk_cache is not None:
            disk_cache.close()
        log.info("unmounted %s", mountpoint)


DISK_DRAIN_TIMEOUT = 10.0  # at unmount, the longest wait for queued disk cache writes


async def _drain_disk_cache(disk: DiskTier) -> None:
    """Write what is queued for the disk (at most `queue_bytes`, 64 MiB by default) and owed
    to it before exiting; a disk too slow for that loses the rest, which is only a cache."""
    s = disk.stats()
    pending = s["pending"] + s["owed"]
    with trio.move_on_after(DISK_DRAIN_TIMEOUT) as waited:
        await disk.flush()
    if waited.cancelled_caught:
        s = disk.stats()
        log.warning("disk cache: unmounting without %d queued writes (the disk took more "
                    "than %.0f s)", s["pending"] + s["owed"], DISK_DRAIN_TIMEOUT)
    elif pending:
        log.info("disk cache: %d queued writes finished before exiting", pending)


async def _open_disk_cache(settings: MountSettings, cluster: ClusterWatch) -> DiskCache | None:
    """The disk cache, if asked for: opened (and locked) before mounting, so that a DIR in
    use by another mount, or one that cannot be made, fails the mount with its reason."""
    if not settings.disk_cache:
        return None
    if not cluster.uuid:
        await cluster.degraded(fresh=True)
    if not cluster.uuid:
        raise MountError("the disk cache needs the cluster's UUID, and its map could not be "
                         "read")
    cfg = DiskCacheConfig(Path(settings.disk_cache), size=settings.disk_cache_size,
                          clear_on_mount=settings.disk_cache_clear_on_mount)
    try:
        dc = await trio.to_thread.run_sync(DiskCache.open, cfg, cluster.uuid)
    except DiskCacheError as e:
        raise MountError(f"disk cache {settings.disk_cache}: {e}") from None
    log.info("disk cache at %s: up to %d MiB", settings.disk_cache, dc.limit >> 20)
    return dc


async def _fuse_main(max_tasks: int, ioctl_thread: bool, scope: trio.CancelScope) -> None:
    thread: dict = {"ioctl_thread": True} if ioctl_thread else {}  # stock pyfuse3 lacks these
    if ioctl_thread and IOCTL_SPIN_US:
        thread["ioctl_spin_us"] = IOCTL_SPIN_US
    # pyfuse3 ends a worker task as soon as more than min_tasks wait for requests, and starts
    # one whenever none waits: with min_tasks=1, readers whose requests come and go started and
    # ended a task for most requests (18,000 for 20,000 requests with 8 readers)
    await pyfuse3.main(min_tasks=min(IDLE_FUSE_TASKS, max_tasks), max_tasks=max_tasks, **thread)
    scope.cancel()  # unmounted from outside (fusermount3 -u): stop the rest too


async def _on_signals(scope: trio.CancelScope, settings: MountSettings,
                      client: AisClient) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if settings.token_file:
                    # an empty or unreadable file keeps the token in use
                    changed = client.transport.reload_token("SIGHUP")
                    log.info("SIGHUP: token re-read from the token file%s",
                             "" if changed else " (unchanged)")
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            scope.cancel()
            return


async def _report_status(ops: AisOperations) -> None:
    """A one-line health summary for `systemctl status`, every 10 seconds."""
    while True:
        await trio.sleep(10)
        s = ops.stats()
        cache = s.get("cache", {})
        looked = cache.get("hits", 0) + cache.get("misses", 0)
        hit = f", cache hit rate {cache.get('hits', 0) / looked:.0%}" if looked else ""
        stored = s.get("pages", {}).get("page_stores", 0)
        service.notify(f"STATUS=serving: {s['fs'].get('reads', 0)} reads, {stored} files "
                       f"stored ahead, {s['client'].get('http_requests', 0)} requests{hit}")


MOUNT_CHECK_TIMEOUT = 3.0


def _cause(e: AisError) -> str:
    """What went wrong, in a few words: the last attempt's cause for a call that retried
    until its deadline, without the client's own prefixes."""
    last = e.__cause__ if isinstance(e, DeadlineExceeded) and isinstance(e.__cause__, AisError) else e
    message = last.message
    if message.startswith("cannot reach "):
        message = message.split(": ", 1)[-1]
    if last is not e:
        message += f" (for {MOUNT_CHECK_TIMEOUT:g}s)"
    return message


def _access_hint(e: AccessDenied) -> str:
    if e.status == 401 and e.message.startswith("authentication required"):
        return " (give a token with -o token_file=PATH or AIS_AUTHN_TOKEN)"
    if e.status == 401:
        return " (the token is invalid, expired or revoked)"
    return ""  # 403: the server's message names the missing permission


def _tls_hint(e: TLSFailure) -> str:
    if "certificate verify failed" in e.message:
        return " (trust the cluster's CA with -o client_ca=PATH, or -o skip_verify)"
    if "alert" in e.message:  # the cluster refused our certificate, or its absence
        return (" (the cluster wants a client certificate it trusts: "
                "-o client_cert=PATH -o client_key=PATH)")
    return ""


def read_token(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError as e:
        log.warning("cannot read the token file %s: %s", path, e.strerror)
        return None


def client_config(settings: MountSettings, target: Target) -> ClientConfig:
    """The client's settings: TLS from the options (whose environment aliases are the SDK's
    variables), the token from token_file or AIS_AUTHN_TOKEN, never from the command line."""
    token = (read_token(settings.token_file) if settings.token_file
             else os.environ.get("AIS_AUTHN_TOKEN") or None)
    verify: bool | str = False if settings.skip_verify else (settings.client_ca or True)
    if bool(settings.client_cert) != bool(settings.client_key):
        raise MountError("client_cert and client_key go together: give both or neither")
    cert = ((settings.client_cert, settings.client_key)
            if settings.client_cert and settings.client_key else None)
    return ClientConfig(
        endpoint=target.endpoint, token=token, verify=verify, cert=cert,
        deadlines=Deadlines(metadata=settings.metadata_timeout, read=settings.read_timeout),
    )


async def _announce_ready(mountpoint: str, ready: Callable[[str | None], None],
                          scope: trio.CancelScope) -> None:
    """Stat the mount from a worker thread (never from the loop that serves it). A mount that
    does not answer is taken down again: the caller gets an error, not a dead mount."""
    with trio.move_on_after(30) as waited:
        while not await trio.to_thread.run_sync(os.path.ismount, mountpoint):
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(os.stat, mountpoint)
        # the control directory's entry, kept by the kernel from now on (see operations.py)
        await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, CONTROL_DIR))
    if waited.cancelled_caught:
        log.error("%s did not answer within 30s of mounting; unmounting", mountpoint)
        ready(f"{mountpoint} did not answer within 30s of mounting")
        scope.cancel()
        return
    log.info("%s is ready", mountpoint)
    await trio.to_thread.run_sync(_raise_fuse_limits, mountpoint)
    ready(None)
    service.notify("READY=1", f"STATUS=serving {mountpoint}")


MAX_BACKGROUND = 64  # the kernel's default is 12 background requests per FUSE connection
CONGESTION_THRESHOLD = 48
# The kernel reads a FUSE file in pieces of its read-ahead size, 128 KiB by default: a
# sequential reader of a large object costs one request per 128 KiB. 1 MiB (what a FUSE
# request can carry) cuts that eightfold; the kernel still starts small on random reads.
READ_AHEAD_KB = 1024


def _raise_fuse_limits(mountpoint: str) -> None:
    """Let the kernel keep more read-ahead requests in flight than its default of 12, through
    /sys/fs/fuse/connections/N (N is the mount's device minor; fusectl mounted if needed), and
    read ahead in larger pieces, through the mount's /sys/class/bdi/0:N."""
    conns = "/sys/fs/fuse/connections"
    minor = os.minor(os.stat(mountpoint).st_dev)
    try:
        if not os.listdir(conns):
            subprocess.run(["mount", "-t", "fusectl", "none", conns], capture_output=True,
                           timeout=10)
        d = os.path.join(conns, str(minor))
        for name, value in (("max_background", MAX_BACKGROUND),
                            ("congestion_threshold", CONGESTION_THRESHOLD)):
            with open(os.path.join(d, name), "w") as f:
                f.write(str(value))
        log.info("FUSE connection %s: max_background=%d congestion_threshold=%d",
                 os.path.basename(d), MAX_BACKGROUND, CONGESTION_THRESHOLD)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("could not raise the FUSE connection's background limit: %s", e)
    try:
        with open(f"/sys/class/bdi/0:{minor}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
        log.info("read-ahead of %s: %d KiB", mountpoint, READ_AHEAD_KB)
    except OSError as e:
        log.warning("could not raise the mount's read-ahead: %s", e)


def default_cache_size() -> int:
    """An eighth of the machine's memory, between 64 MiB and 4 GiB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(64 << 20, min(total // 8, 4 << 30))


def run(settings: MountSettings, source: str | None, mountpoint: str) -> int:
    """Mount in the foreground or the background; the exit status says whether it worked."""
    try:
        target = resolve_target(source, settings)
        mountpoint = check_mountpoint(mountpoint)
    except MountError as e:
        print(f"aisbatchfs: {e}", file=sys.stderr)
        return 1
    if settings.foreground:
        logs.setup(settings.log_level, settings.log_file)
        return _serve_here(settings, target, mountpoint, lambda msg: None)
    return _daemonize(settings, target, mountpoint)


def _serve_here(settings: MountSettings, target: Target, mountpoint: str,
                ready: Callable[[str | None], None]) -> int:
    # FUSE requests are served by the event loop while GetBatch streams are parsed in worker
    # threads: a short GIL switch interval keeps a request from waiting out a 5 ms slice
    sys.setswitchinterval(0.0005)
    _one_malloc_arena()
    try:
        trio.run(serve, settings, target, mountpoint, ready)
        return 0
    except MountError as e:
        log.error("%s", e)
        ready(str(e))
        return 1


M_ARENA_MAX = -8  # glibc's mallopt parameter


def _one_malloc_arena() -> None:
    """Keep glibc's malloc to one arena. The bytes of every arrival (GetBatch parse and disk
    reads run in worker threads) are allocated in the worker's own arena, up to 8 per core, and
    freed on the loop's thread; memory freed inside an arena's heap stays with the process.
    Measured (one reader, 1 GiB of 64 KiB files twice through a 256 MiB cache and a disk
    cache): VmHWM 566 MiB with glibc's default, 324 MiB with one arena, at the same speed.
    Before any thread of ours starts; the MALLOC_ARENA_MAX environment variable overrides it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(M_ARENA_MAX, 1):
            log.debug("mallopt(M_ARENA_MAX, 1) refused")
    except (OSError, AttributeError) as e:  # not glibc
        log.debug("malloc arenas left as they are: %s", e)


def _daemonize(settings: MountSettings, target: Target, mountpoint: str) -> int:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:  # parent: wait for the child's word
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace")
        if msg == "OK":
            return 0
        print(f"aisbatchfs: {msg or 'the daemon exited before the mount was ready'}",
              file=sys.stderr)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return 1
    os.close(rfd)
    os.setsid()
    # let go of the caller's terminal and pipes: whoever captures our output must see EOF
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    logs.setup(settings.log_level, settings.log_file, syslog=not settings.log_file)
    w = os.fdopen(wfd, "wb", buffering=0)

    def ready(msg: str | None) -> None:
        if not w.closed:
            w.write(b"OK" if msg is None else msg.encode())
            w.close()

    code = _serve_here(settings, target, mountpoint, ready)
    ready("the daemon stopped before the mount was ready")
    os._exit(code)
