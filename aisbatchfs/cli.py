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
import subprocess
import sys

from aisbatchfs import __version__, options

COMMANDS = ("mount", "umount", "stats")


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
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv.insert(0, "mount")  # mount(8) form: aisbatchfs SOURCE MOUNTPOINT -o ...
    args = build_parser().parse_args(argv)
    if args.command == "mount":
        return _mount(args)
    if args.command == "umount":
        return _umount_command(args)
    if args.command == "stats":
        return _stats(args.mountpoint, args.json)
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


def _stats(mountpoint: str, as_json: bool) -> int:
    path = os.path.join(mountpoint, ".aisbatchfs", "stats")
    try:
        with open(path) as f:
            text = f.read()
        doc = json.loads(text)
    except (OSError, ValueError) as e:
        print(f"aisbatchfs: {mountpoint} is not an aisbatchfs mount ({e})", file=sys.stderr)
        return 1
    if as_json:
        print(text, end="")
        return 0
    print(f"aisbatchfs {doc.get('version')} (pid {doc.get('pid')}) at {mountpoint}")
    for section in ("client", "batch", "cache", "hints", "namespace", "fs"):
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
