"""Units, logging, child processes and /proc: what every module of benchkit uses.

Every child (reader, curl, peer client) runs in its own session under a deadline, so a timeout
can kill its whole group: a FUSE bug may hang whoever touches a mount, and the bench goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SCRIPTS = Path(__file__).resolve().parent.parent
REPO = SCRIPTS.parent
READERS = Path(__file__).resolve().parent / "readers"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def human(n: float) -> str:
    for unit, m in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= m:
            v = n / m
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def size_label(n: int) -> str:
    for unit, m in (("g", GiB), ("m", MiB), ("k", KiB)):
        if n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def reader_cmd(name: str, *args: str) -> list[str]:
    """argv of a reader program in readers/, run by the venv's interpreter."""
    return [sys.executable, str(READERS / f"{name}.py"), *args]


class TrialError(Exception):
    """One run failed (the row goes on with its next run unless `fatal`)."""

    def __init__(self, msg: str, fatal: bool = False) -> None:
        super().__init__(msg)
        self.fatal = fatal


class NotRun(Exception):
    """The system cannot run this case at all (the row is recorded as not run)."""


def kill_group(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=30)


def reap(procs: list[subprocess.Popen], files: list) -> None:  # noqa: ANN001 - open files
    """Released reader processes: kill what still runs (its whole group), close their pipes
    and the files their stderr went to."""
    for p in procs:
        if p.poll() is None:
            kill_group(p)
        for s in (p.stdin, p.stdout):
            with contextlib.suppress(Exception):
                s.close()
    for f in files:
        f.close()


def run_timed(cmd: list[str], timeout: float) -> tuple[float, bytes]:
    """Run a command to completion within `timeout`: (wall seconds, stdout). TrialError if not."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        raise TrialError(f"timed out after {timeout:.0f}s: {' '.join(cmd)[:200]}", fatal=True) from None
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise TrialError(f"{' '.join(cmd)[:200]} exited {p.returncode}: "
                         f"{err.decode(errors='replace').strip()[-400:]}")
    return took, out or b""


def reader_json(out: bytes) -> dict:
    """The result line a reader prints last."""
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TrialError(f"reader printed no result: {out[-300:]!r}") from None


@dataclass
class CacheDropper:
    """`echo LEVEL > /proc/sys/vm/drop_caches`; `status` says "ok" or why runs are not cold."""

    status: str = "ok"

    def __call__(self, level: int) -> None:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write(f"{level}\n")
        except OSError as e:
            if self.status == "ok":
                log(f"cannot drop the page cache ({e}); runs are not cold")
            self.status = f"unavailable: {e}"


drop_caches = CacheDropper()


def proc_status(pid: int | None) -> tuple[int | None, float | None]:
    """(VmHWM bytes, user+system CPU seconds) of a live process."""
    if not pid:
        return None, None
    hwm = cpu = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm, cpu
