"""The `aisbatchfs` command.

    aisbatchfs mount [SOURCE] MOUNTPOINT [--option ...] [-o key=value,...]
    aisbatchfs umount MOUNTPOINT
    aisbatchfs SOURCE MOUNTPOINT -o rw,dev,suid,...     (what mount -t fuse.aisbatchfs runs)

SOURCE: an endpoint (http://host:8080, optionally /BUCKET[/PREFIX] after it), a bucket URL
(ais://BUCKET[/PREFIX], s3://..., ais://#namespace/BUCKET), or 'aisbatchfs'/'none' when the
options say everything. Without a bucket the whole cluster is mounted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

from aisbatchfs import __version__, options

COMMANDS = ("mount", "umount", "stats", "status", "warm", "prefetch", "cache")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aisbatchfs",
        description="Read AIStore through a plain filesystem, at GetBatch speed.",
        epilog="Run 'aisbatchfs mount --help' for the mount options.",
    )
    p.add_argument("--version", action="version", version=f"aisbatchfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    m = sub.add_parser("mount", help="mount a cluster, a bucket or a prefix",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("source", nargs="?", metavar="SOURCE",
                   help="endpoint URL or bucket URL (default: AIS_ENDPOINT, the whole cluster)")
    m.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT",
                   help="where to mount (may come from --config instead)")
    m.add_argument("-o", dest="o", action="append", default=[], metavar="OPTS",
                   help="comma-separated key=value daemon options and FUSE options")
    options.add_arguments(m)
    u = sub.add_parser("umount", help="unmount")
    u.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    u.add_argument("--config", metavar="PATH", help="take the mountpoint from this config file")
    u.add_argument("--if-stale", action="store_true",
                   help="only unmount a dead mount (left by a crashed daemon); never fail")
    st = sub.add_parser("stats", help="print a mount's counters (requests, batches, cache)")
    st.add_argument("mountpoint", metavar="MOUNTPOINT")
    st.add_argument("--json", action="store_true", help="the raw JSON")
    ss = sub.add_parser("status", help="every aisbatchfs mount at a glance")
    ss.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    pf = sub.add_parser("prefetch", help="tell a mount the order files will be read in")
    pf.add_argument("mountpoint", metavar="MOUNTPOINT")
    pf.add_argument("--from", dest="from_file", metavar="FILE", default="-",
                    help="paths, one per line, relative to the mount root or absolute inside "
                         "it (default: standard input)")
    c = sub.add_parser("cache", help="manage a disk cache directory (-o disk_cache=DIR)")
    c.add_argument("action", choices=["clear"], help="clear: empty it (not while mounted)")
    c.add_argument("directory", metavar="DIR")
    w = sub.add_parser("warm", help="fetch a tree or a list of files into a mount's cache")
    w.add_argument("paths", nargs="*", metavar="PATH")
    w.add_argument("--from", dest="from_file", metavar="FILE", help="a file listing paths")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv.insert(0, "mount")  # mount(8) form: aisbatchfs SOURCE MOUNTPOINT -o ...
    args = build_parser().parse_args(argv)
    if args.command in ("stats", "status"):
        # like any tool whose output is piped (`aisbatchfs stats MNT | head`): end quietly
        # when the reader goes away, not with a BrokenPipeError traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.command == "mount":
        return _mount(args)
    if args.command == "umount":
        return _umount_command(args)
    if args.command == "stats":
        return _stats(args.mountpoint, args.json)
    if args.command == "status":
        return _status(args.mountpoint)
    if args.command == "cache":
        return _cache_clear(args.directory)
    if args.command == "prefetch":
        return _prefetch(args.mountpoint, args.from_file)
    if args.command == "warm":
        from aisbatchfs.warm import warm

        return warm(args.paths, args.from_file)
    build_parser().print_help()
    return 0


def _mount(args: argparse.Namespace) -> int:
    from aisbatchfs import daemon  # pyfuse3 is imported only when mounting

    if args.mountpoint is None and args.source is not None and "://" not in args.source:
        args.source, args.mountpoint = None, args.source  # one argument: the mountpoint
    try:
        cli = {o.name: getattr(args, o.name, None) for o in options.OPTIONS}
        file_values = options.load_toml(args.config) if args.config else None
        settings = options.resolve(cli, args.o, env=os.environ, file_values=file_values)
    except options.OptionError as e:
        print(f"aisbatchfs: {e}", file=sys.stderr)
        return 2
    mountpoint = args.mountpoint or settings.mountpoint
    if not mountpoint:
        print("aisbatchfs: no MOUNTPOINT (give one, or mountpoint= in --config)", file=sys.stderr)
        return 2
    return daemon.run(settings, args.source, mountpoint)


def _umount_command(args: argparse.Namespace) -> int:
    mountpoint = args.mountpoint
    if mountpoint is None and args.config:
        try:
            mountpoint = options.load_toml(args.config).get("mountpoint")
        except options.OptionError as e:
            print(f"aisbatchfs: {e}", file=sys.stderr)
            return 0 if args.if_stale else 2
    if not mountpoint:
        print("aisbatchfs: umount needs MOUNTPOINT or --config", file=sys.stderr)
        return 0 if args.if_stale else 2
    if args.if_stale:
        from aisbatchfs import daemon

        try:
            daemon.clear_stale_mount(mountpoint)
        except daemon.MountError as e:
            print(f"aisbatchfs: {e}", file=sys.stderr)
        return 0
    return _umount(mountpoint)


def _read_stats(mountpoint: str) -> dict:
    """A mount's counters: through its control socket (which needs no lookup in the mount,
    so it answers while lookups wait on a stalled cluster), else its stats file."""
    from aisbatchfs import control

    try:
        return control.stats(mountpoint)
    except (control.ControlError, ValueError):
        with open(os.path.join(mountpoint, ".aisbatchfs", "stats")) as f:
            return json.load(f)


def _stats(mountpoint: str, as_json: bool) -> int:
    try:
        doc = _read_stats(mountpoint)
    except (OSError, ValueError) as e:
        print(f"aisbatchfs: {mountpoint} is not an aisbatchfs mount ({e})", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(f"aisbatchfs {doc.get('version')} (pid {doc.get('pid')}) at {mountpoint}")
    for section in ("client", "batch", "cache", "disk", "pages", "direct", "hints", "namespace",
                    "fs", "fuse", "control", "cluster"):
        values = doc.get(section)
        if not values:
            continue
        print(f"\n{section}")
        for key in sorted(values):
            value = values[key]
            if isinstance(value, int) and key in ("budget", "used", "cached", "reserved", "peak",
                                                  "bytes", "bytes_received", "bytes_read"):
                value = f"{value:,} ({value / (1 << 20):.1f} MiB)"
            elif isinstance(value, int):
                value = f"{value:,}"
            print(f"  {key:28} {value}")
    return 0


def _status(only: str | None) -> int:
    """Mounts, endpoints, cache use, hit rate (of the daemon's cache), files stored in the
    kernel's page cache ahead of their reads, requests, errors: one line each."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[:3] for line in f if line.split()[2] == "fuse.aisbatchfs"]
    if only:
        mounts = [m for m in mounts if m[1] == os.path.abspath(only)]
    if not mounts:
        print("no aisbatchfs mounts" + (f" at {only}" if only else ""))
        return 1 if only else 0
    print(f"{'MOUNTPOINT':30} {'SOURCE':40} {'PID':>7} {'CACHE':>17} {'HITS':>5} "
          f"{'DISK':>17} {'DHITS':>6} {'PAGES':>9} {'REQUESTS':>9} {'ERRORS':>6}")
    for source, mountpoint, _ in mounts:
        try:
            doc = _read_stats(mountpoint)
        except (OSError, ValueError) as e:
            print(f"{mountpoint:30} {source:40} not answering: {e}")
            continue
        cache = doc.get("cache", {})
        looked = cache.get("hits", 0) + cache.get("misses", 0)
        hits = f"{cache.get('hits', 0) / looked:.0%}" if looked else "-"
        use = (f"{cache.get('used', 0) >> 20}/{cache.get('budget', 0) >> 20} MiB"
               if cache else "off")
        batch = doc.get("batch", {})
        errors = batch.get("missing", 0) + batch.get("batch_failures", 0)
        pages = doc.get("pages", {}).get("page_stores", 0)
        disk = doc.get("disk")
        if disk:
            dlooked = disk.get("hits", 0) + disk.get("misses", 0)
            duse = f"{disk.get('bytes', 0) >> 20}/{disk.get('limit', 0) >> 20} MiB"
            dhits = f"{disk.get('hits', 0) / dlooked:.0%}" if dlooked else "-"
        else:
            duse, dhits = "off", "-"
        print(f"{mountpoint:30} {source:40} {doc.get('pid', '?'):>7} {use:>17} {hits:>5} "
              f"{duse:>17} {dhits:>6} {pages:>9,} {doc['client'].get('http_requests', 0):>9,} "
              f"{errors:>6}")
    return 0


def _cache_clear(directory: str) -> int:
    from pathlib import Path

    from aisbatchfs.fs.diskcache import DiskCacheError, clear

    try:
        clear(Path(directory))
    except DiskCacheError as e:
        print(f"aisbatchfs cache clear: {e}", file=sys.stderr)
        return 1
    print(f"cleared {directory}")
    return 0


def _prefetch(mountpoint: str, source: str) -> int:
    from aisbatchfs import control

    try:
        with (sys.stdin if source == "-" else open(source)) as f:
            n = control.prefetch(mountpoint, (line.rstrip("\n") for line in f if line.strip()))
    except OSError as e:
        print(f"aisbatchfs prefetch: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{n} paths queued")
    return 0


def _umount(mountpoint: str) -> int:
    for cmd in (["fusermount3", "-u", mountpoint], ["umount", mountpoint]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if r.returncode == 0:
                return 0
            err = r.stderr.strip()
    print(f"aisbatchfs: cannot unmount {mountpoint}: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
