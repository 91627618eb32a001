"""What a row measures: our daemon, a tmpfs copy of the dataset, or a peer.

Every system answers the same few calls, so a trial need not know which it has:
  name, flags, not_run, limit   for the JSON (limit: the row shows a ceiling, not a system)
  kind "mount"                  setup(endpoint, bucket, mountpoint) -> root | None, teardown(),
                                pid (whose VmHWM is the peak RSS), stats() (the daemon's counters)
  kind "read"                   read(endpoint, bucket, items, timeout) -> {seconds, files, bytes, ...}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .common import NotRun, TrialError, log, reader_cmd, reader_json, run_timed
from .datasets import Dataset, copy_to
from .peers import Peer


class Ours:
    """The aisbatchfs daemon: a new daemon process (a new mount) per setup()."""

    kind = "mount"
    limit = False
    not_run: str | None = None

    def __init__(self, name: str, args: list[str]) -> None:
        self.name, self.args = name, args
        self.flags = {"batch": "--no-batch" not in args, "args": args}
        self.m = None
        self.mountpoint: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.m.proc.pid if self.m else None

    def setup(self, endpoint: str, bucket: str, mountpoint: str) -> str | None:
        from tests.mounting import mount

        self.mountpoint = Path(mountpoint)
        log, n = Path(f"{mountpoint}.log"), 1
        while log.exists():  # a remount on the same mountpoint (P5-disk): a log of its own
            n += 1
            log = Path(f"{mountpoint}.{n}.log")
        try:
            self.m = mount(endpoint, self.mountpoint, "--bucket", bucket, *self.args, log=log)
        except AssertionError as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if not ln[0].isspace()), lines[-1] if lines else "")
            raise TrialError(f"mount failed: {last.strip()[:300]}\n  " + "\n  ".join(lines[-12:])) from None
        return mountpoint

    def stats(self) -> dict | None:
        """MOUNT/.aisbatchfs/stats (what `aisbatchfs stats --json MOUNT` prints)."""
        if not self.mountpoint:
            return None
        try:
            return json.loads((self.mountpoint / ".aisbatchfs" / "stats").read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.m.log_text().splitlines()[-lines:]) if self.m else ""

    def teardown(self) -> None:
        if self.m is not None:
            try:
                self.m.stop()
            finally:
                self.m = None


class Tmpfs:
    """A flat dataset copied once to a tmpfs directory, read by the same readers as the mounts.

    tmpfs keeps its files in memory (they are the page cache), so the trial's drop_caches
    cannot make them cold: this row is the warm ceiling of the reader itself.
    """

    kind = "mount"
    limit = True
    not_run: str | None = None
    name = "tmpfs"
    pid = None

    def __init__(self, base: Path) -> None:
        self.base = base
        self.copied: dict[str, str] = {}
        self.flags = {"dir": str(base), "page_cache": "warm: tmpfs pages are memory, no drop empties them"}

    def prepare(self, endpoint: str, ds: Dataset) -> str:
        """Copy the dataset once (GETs from the cluster); how, for the case's JSON."""
        if ds.bucket not in self.copied:
            took = copy_to(endpoint, ds, self.base / ds.bucket)
            self.copied[ds.bucket] = f"copied in {took:.1f}s"
            log(f"tmpfs: {ds.bucket} {self.copied[ds.bucket]} to {self.base / ds.bucket}")
        return self.copied[ds.bucket]

    def setup(self, endpoint: str, bucket: str, mountpoint: str) -> str | None:
        if bucket not in self.copied:
            raise NotRun(f"{bucket} was not copied to tmpfs")
        return str(self.base / bucket)

    def teardown(self) -> None:
        pass

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class PeerSystem:
    """A peer seen as a system: FUSE peers mount; client peers read in peer_read.py."""

    def __init__(self, peer: Peer, workdir: Path, name: str | None = None) -> None:
        self.peer, self.workdir = peer, workdir
        self.name = name or peer.label
        self.kind = "mount" if peer.fuse else "read"
        self.limit = peer.limit

    @property
    def not_run(self) -> str | None:
        return self.peer.not_run

    @property
    def flags(self) -> dict:
        f = dict(self.peer.flags)
        if self.peer.limits:
            f["limits"] = list(self.peer.limits)
        return f

    @property
    def pid(self) -> int | None:
        return self.peer.pid

    def setup(self, endpoint: str, bucket: str, mountpoint: str) -> str | None:
        r = self.peer.setup(endpoint, bucket, Path(mountpoint))
        return None if r is None else str(r)

    def teardown(self) -> None:
        self.peer.teardown()

    def read(self, endpoint: str, bucket: str, items: list, timeout: float) -> dict:
        f = self.workdir / "peer-items.txt"
        f.write_text("".join(f"{o}\t{a or ''}\n" for o, a in items))
        _, out = run_timed(reader_cmd("peer_read", self.peer.label, endpoint, bucket, str(f)), timeout)
        res = reader_json(out)
        if "not_run" in res:
            raise NotRun(res["not_run"])
        return res


def load_peers(workdir: Path) -> tuple[list[PeerSystem], str]:
    """Every peer, prepared once (installing what it needs); a line for the JSON's `peers`."""
    from .peers import all_peers

    out = []
    for p in all_peers():
        try:
            p.prepare()
        except Exception as e:  # noqa: BLE001 - a peer's broken install is a row's "not run"
            p.not_run = f"prepare() failed: {type(e).__name__}: {e}"
        out.append(PeerSystem(p, workdir))
    return out, "scripts/benchkit: " + ", ".join(
        f"{s.name} (not run: {s.not_run})" if s.not_run else s.name for s in out)
