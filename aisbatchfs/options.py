"""The one option schema: every setting of aisbatchfs, defined once.

Each option has a long flag (`--metadata-ttl`), an `-o key=value` spelling (`metadata_ttl=`),
a TOML key (the same name), an environment variable (`AISBATCHFS_METADATA_TTL`), a type, a
default and a one-line doc. The command line, the mount(8) helper form and the docs all read
this table, so they cannot drift apart.

Besides the daemon's own options, `-o` takes FUSE options that are handed to the kernel (only
those pyfuse3 accepts) and generic mount(8) flags, which are accepted and ignored.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class OptionError(ValueError):
    """A bad option: names the option and what it accepts."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", "y", "t"):
        return True
    if low in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError("expected true or false")


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError("expected an octal mode such as 022") from None
    if not 0 <= value <= 0o7777:
        raise ValueError("expected an octal mode from 0 to 7777")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _seconds(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise ValueError("expected seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise ValueError("expected seconds > 0")
    return value


def _milliseconds(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 1000:
        raise ValueError("expected milliseconds from 0 to 1000")
    return value


def _share(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise ValueError("expected a share above 0 and at most 1")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


MAX_COUNT = 1_000_000


def _count(text: str) -> int:
    """A number of things (items, requests, tasks): at least one."""
    value = _whole(text)
    if not 1 <= value <= MAX_COUNT:
        raise ValueError(f"expected a whole number from 1 to {MAX_COUNT:,}")
    return value


MAX_ID = 0xFFFF_FFFE  # uid_t/gid_t; (uid_t)-1 means "no change" to the kernel, never an owner


def _id(text: str) -> int:
    """A user or group id the kernel can store."""
    value = _whole(text)
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"expected a user or group id from 0 to {MAX_ID}")
    return value


def _addr(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return text


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def _size_text(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def parse_size(text: str) -> int:
    """'512MiB', '4g', '1048576' -> bytes (binary units)."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):]
    if unit not in _SIZE_UNITS or not num:
        raise ValueError("expected a size such as 512MiB or 4GiB")
    try:
        value = float(num) * _SIZE_UNITS[unit]
    except ValueError:
        raise ValueError("expected a size such as 512MiB or 4GiB") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError("expected a size of at least one byte, such as 512MiB")
    return int(value)


MIN_CACHE = 1 << 20


def _cache_size(text: str) -> int:
    value = parse_size(text)
    if value < MIN_CACHE:
        raise ValueError("expected a cache size of at least 1MiB")
    return value


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    metavar: str = ""
    short: str = ""  # a short flag, e.g. -f
    cli_only: bool = False  # not an -o key (e.g. --foreground)
    file_only: bool = False  # only a config-file key (e.g. mountpoint)
    env_aliases: tuple[str, ...] = ()  # other variables that set it, weaker than `env`

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "AISBATCHFS_" + self.name.upper()

    def show_default(self) -> str:
        if self.default is not None and self.parse is _octal:
            return f"{self.default:03o}"
        if self.default is not None and self.parse in (parse_size, _cache_size):
            return _size_text(self.default)
        return _show(self.default)

    def convert(self, raw: Any, where: str) -> Any:
        if not isinstance(raw, str):
            raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if self.choices and raw not in self.choices:
            raise OptionError(f"{where}: {self.name}={raw!r}: allowed values are "
                              + ", ".join(self.choices))
        try:
            return self.parse(raw)
        except ValueError as e:
            raise OptionError(f"{where}: {self.name}={raw!r}: {e}") from None


def _choice(text: str) -> str:
    return text


OPTIONS: tuple[Option, ...] = (
    Option("endpoint", _text, None, "AIStore endpoint, e.g. http://10.0.0.1:8080",
           metavar="URL", env_aliases=("AIS_ENDPOINT",)),
    Option("mountpoint", _text, None, "where to mount (config files; on the command line it is "
           "the MOUNTPOINT argument)", file_only=True),
    Option("bucket", _text, None, "mount one bucket, or a prefix of it, at the root: NAME[/PREFIX]; "
           "ais://, s3://, gs:// ... select the provider (default: every bucket)", metavar="SPEC"),
    Option("archives", _choice, "dir", "how archive objects (.tar .tgz .tar.gz .zip .tar.lz4) appear: "
           "dir = a directory of members under the archive's name; file = plain files; "
           "both = the file, and its members under the name plus archive_suffix",
           choices=("dir", "file", "both")),
    Option("archive_suffix", _text, ".d", "with archives=both: suffix of the directory that holds an "
           "archive's members"),
    Option("token_file", _text, None, "file holding the AuthN token, re-read on 401 and SIGHUP "
           "(else AIS_AUTHN_TOKEN; a token is never taken from the command line)", metavar="PATH"),
    Option("skip_verify", _bool, False, "do not verify the cluster's TLS certificate",
           env_aliases=("AIS_SKIP_VERIFY_CRT", "AIS_SKIP_VERIFY")),
    Option("client_ca", _text, None, "CA bundle to verify the cluster's certificate with",
           metavar="PATH", env_aliases=("AIS_CLIENT_CA",)),
    Option("client_cert", _text, None, "client certificate for mutual TLS (with client_key)",
           metavar="PATH", env_aliases=("AIS_CRT",)),
    Option("client_key", _text, None, "client key for mutual TLS", metavar="PATH",
           env_aliases=("AIS_CRT_KEY",)),
    Option("uid", _id, None, "owner of every file (default: the user who mounts)"),
    Option("gid", _id, None, "group of every file (default: the user's group)"),
    Option("umask", _octal, 0o022, "permission bits removed from file_mode and dir_mode (octal)"),
    Option("file_mode", _octal, 0o444, "permission bits of files before umask (octal)"),
    Option("dir_mode", _octal, 0o555, "permission bits of directories before umask (octal)"),
    Option("metadata_ttl", _seconds, 60.0, "seconds the kernel and the daemon trust a listing, "
           "an entry or attributes before asking AIStore again"),
    Option("negative_ttl", _seconds, 10.0, "seconds a name found missing stays missing without "
           "asking AIStore again"),
    Option("metadata_timeout", _positive_seconds, 10.0, "deadline in seconds of one listing or "
           "HEAD; past it the operation fails with EIO"),
    Option("first_byte_timeout", _positive_seconds, 5.0, "deadline in seconds for the first byte "
           "of a batched read, after which the read path falls back"),
    Option("read_timeout", _positive_seconds, 30.0, "deadline in seconds of one read from "
           "AIStore; past it the read fails with EIO"),
    Option("batch", _bool, True, "read small files through predicted and coalesced GetBatch "
           "requests; --no-batch reads each file with its own GET (for comparison)"),
    Option("cache_size", _cache_size, None, "byte budget of the read cache: cached bytes, bytes "
           "in flight and the windows of large reads together (default: 1/8 of RAM, at most "
           "4GiB)", metavar="SIZE"),
    Option("kernel_open", _bool, True, "files are opened and closed by the kernel alone: no "
           "request per open or close reaches the daemon, and a file stored ahead in the page "
           "cache is read with none at all (needs pyfuse3 built with patches/; without it, or "
           "off, every open and close reaches the daemon)"),
    Option("push_pages", _bool, True, "store small files that arrive in a batch in the "
           "kernel's page cache before they are read (FUSE notify_store), so their reads do "
           "not reach the daemon"),
    Option("prime_dentries", _bool, True, "a directory whose files are looked up one by one "
           "(opened by name, never listed) is read once through the mount, so the kernel "
           "knows all its names: later opens send no lookup, and their pages can be stored "
           "ahead (directories of 32 to 65,536 names)"),
    Option("ioctl_thread", _bool, True, "answer the ioctl that Python's open() sends for "
           "every file (isatty) in a thread of its own, never waiting for the daemon's "
           "interpreter lock (needs pyfuse3 built with patches/; off: the FUSE loop answers it)"),
    Option("check_permissions", _bool, True, "the kernel enforces the owner and mode bits "
           "the mount shows (FUSE default_permissions); off: anyone who can reach the mount "
           "(allow_other) reads every file"),
    Option("disk_cache", _text, None, "keep what arrives from AIStore in this directory too "
           "(created 0700; one mount at a time): a second epoch, or a remount, reads it from "
           "local disk instead of the cluster (off by default)", metavar="DIR"),
    Option("disk_cache_size", parse_size, None, "most bytes the disk cache takes on disk "
           "(default: as much as leaves 5% of its filesystem free; never more than that)",
           metavar="SIZE"),
    Option("disk_cache_clear_on_mount", _bool, False, "empty the disk cache when mounting "
           "(as gcsfuse and mountpoint-s3 do; by default a remount starts warm)"),
    Option("batch_max_object", parse_size, 1 << 20, "objects and members up to this size are "
           "batched; larger ones are read with ranged GETs and read-ahead", metavar="SIZE"),
    Option("batch_max_items", _count, 256, "most items in one GetBatch request"),
    Option("batch_max_bytes", parse_size, 32 << 20, "most bytes in one GetBatch request",
           metavar="SIZE"),
    Option("batches_in_flight", _count, 4, "most GetBatch requests under way at once"),
    # 1 ms: 8 shuffled readers' next misses come within it of their last arrival; at 2 ms each
    # round of their misses waited a millisecond more, at 0.5 ms they split into more batches
    # (docs/read-path.md, "Coalescing")
    Option("coalesce_ms", _milliseconds, 1.0, "milliseconds a miss waits for other misses to join "
           "its GetBatch"),
    Option("spread_share", _share, 0.1, "once shuffled readers have read this share of a "
           "directory's files in one pass, the rest of it is fetched whole in full batches, if "
           "it fits a quarter of cache_size (a mount that reads less of it, as one of more than "
           "1/share nodes of a DistributedSampler does, never widens; 1: never)"),
    Option("metrics_addr", _addr, None, "serve Prometheus metrics at HOST:PORT (off by default)",
           metavar="HOST:PORT"),
    Option("max_tasks", _count, 512, "most FUSE requests handled at once (pyfuse3 worker "
           "tasks, cheap): past it, new requests wait their turn (in the kernel, or in the queue "
           "of the ioctl thread), so it bounds how many requests may wait on a stalled cluster "
           "while stat, cached listings and the stats file still answer"),
    Option("log_level", _choice, "info", "log verbosity",
           choices=("debug", "info", "warning", "error")),
    Option("log_file", _text, None, "write the log here (default: stderr in the foreground, "
           "syslog in the background)", metavar="PATH"),
    Option("foreground", _bool, False, "stay attached to the terminal instead of daemonizing",
           short="-f", cli_only=True),
    Option("config", _text, None, "TOML file with any of these options as keys (and mountpoint)",
           metavar="PATH", cli_only=True),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

# FUSE options handed to the kernel through pyfuse3 (which refuses anything else)
FUSE_FLAGS = frozenset({"allow_other", "default_permissions", "auto_unmount", "debug", "dev",
                        "nodev", "suid", "nosuid", "exec", "noexec", "ro"})
FUSE_VALUED = frozenset({"fsname", "subtype"})
# generic mount(8) / fstab flags: accepted silently
VFS_FLAGS = frozenset({"rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner",
                       "_netdev", "nofail", "atime", "noatime", "relatime", "norelatime",
                       "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime",
                       "nolazytime", "sync", "async", "dirsync", "mand", "nomand", "silent",
                       "loud", "iversion", "noiversion"})


@dataclass
class MountSettings:
    """Resolved settings: the daemon's options, plus what goes to the kernel."""

    values: dict[str, Any]
    fuse_options: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def split_o(specs: Iterable[str]) -> list[tuple[str, str | None]]:
    """'-o a,b=c' values -> [(a, None), (b, 'c')]."""
    out = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            out.append((key.strip(), value if eq else None))
    return out


def resolve(
    cli: Mapping[str, Any],
    o_specs: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> MountSettings:
    """Merge defaults < file < environment < -o < flags, checking every key and value."""
    values = {o.name: o.default for o in OPTIONS}
    for key, raw in (file_values or {}).items():
        opt = BY_NAME.get(key)
        if opt is None or opt.cli_only:
            raise OptionError(f"config file: unknown key {key!r}; known keys: "
                              + ", ".join(o.name for o in OPTIONS if not o.cli_only))
        values[key] = opt.convert(raw, "config file")
    for opt in OPTIONS:
        if opt.cli_only or opt.file_only or not env:
            continue
        name = next((n for n in (opt.env, *opt.env_aliases) if env.get(n, "") != ""), None)
        if name is not None:
            values[opt.name] = opt.convert(env[name], name)
    fuse: set[str] = set()
    for key, raw in split_o(o_specs):
        opt = BY_NAME.get(key)
        if opt is not None and not opt.cli_only and not opt.file_only:
            if raw is None:
                if opt.parse is not _bool:
                    raise OptionError(f"-o {key}: needs a value ({key}=...)")
                raw = "true"
            values[key] = opt.convert(raw, "-o")
        elif key in FUSE_FLAGS and raw is None:
            fuse.add(key)
        elif key in FUSE_VALUED and raw is not None:
            fuse.add(f"{key}={raw}")
        elif key in VFS_FLAGS or key.startswith(("x-", "comment=")) or key == "comment":
            continue
        else:
            raise OptionError(
                f"-o {key}: unknown option; daemon options: "
                + ", ".join(o.name for o in OPTIONS if not o.cli_only)
                + "; FUSE options: " + ", ".join(sorted(FUSE_FLAGS | FUSE_VALUED))
            )
    for name, value in cli.items():
        if value is not None and name in BY_NAME:
            values[name] = value
    return MountSettings(values, fuse)


def load_toml(path: str) -> dict:
    """A config file's keys; errors name the file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise OptionError(f"config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise OptionError(f"config file {path}: {e}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One long flag per option (the value is converted and checked by the schema)."""
    for opt in OPTIONS:
        if opt.file_only:
            continue
        names = [opt.flag] + ([opt.short] if opt.short else [])
        # argparse %-formats help strings: a literal % (as in "5% free") must be doubled.
        help_ = f"{opt.doc} (default: {opt.show_default()})".replace("%", "%%")
        if opt.parse is _bool:
            parser.add_argument(*names, dest=opt.name, action="store_const", const=True,
                                default=None, help=help_)
            if not opt.cli_only:
                parser.add_argument("--no-" + opt.name.replace("_", "-"), dest=opt.name,
                                    action="store_const", const=False, help=argparse.SUPPRESS)
        else:
            parser.add_argument(*names, dest=opt.name, default=None, metavar=opt.metavar or
                                opt.name.upper(), type=_argparse_type(opt), help=help_)


def _argparse_type(opt: Option) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return opt.convert(raw, opt.flag)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = opt.name
    return convert


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    return str(value)


def markdown_table() -> str:
    """The options table of docs/options.md, generated from the schema."""
    rows = ["| option (`-o` key, TOML key) | flag | environment | default | meaning |",
            "|---|---|---|---|---|"]
    for o in OPTIONS:
        key = "—" if o.cli_only else f"`{o.name}`"
        env = "—" if o.cli_only or o.file_only else ", ".join(
            f"`{n}`" for n in (o.env, *o.env_aliases))
        flag = "—" if o.file_only else f"`{o.flag}`" + (f", `{o.short}`" if o.short else "")
        doc = o.doc + (f" ({'/'.join(o.choices)})" if o.choices else "")
        rows.append(f"| {key} | {flag} | {env} | `{o.show_default()}` | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
