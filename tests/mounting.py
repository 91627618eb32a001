"""Real mounts for tests: the daemon runs as a subprocess, and teardown always gets it off.

A FUSE bug can hang whoever touches the mount, so: every command run against a mount has a
timeout; teardown unmounts with `fusermount3 -u`, then lazily with `-uz`, and if the daemon
is stuck, aborts the connection through /sys/fs/fuse/connections/N/abort (mounting fusectl
if needed) and kills the daemon. The daemon's log is printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FUSECTL = Path("/sys/fs/fuse/connections")


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a program against a mount: bounded in time, output captured."""
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def abort_connection(path: Path) -> None:
    """Abort the FUSE connection behind `path`: every pending request fails at once."""
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        dev = None
    if not FUSECTL.joinpath("").exists() or not any(FUSECTL.iterdir()):
        subprocess.run(["mount", "-t", "fusectl", "none", str(FUSECTL)], capture_output=True,
                       timeout=10)
    if dev is not None:
        with contextlib.suppress(OSError):
            (FUSECTL / str(os.minor(dev)) / "abort").write_text("1")


def force_unmount(path: Path) -> None:
    for cmd in (["fusermount3", "-u", str(path)], ["fusermount3", "-uz", str(path)]):
        if not is_mounted(path):
            return
        subprocess.run(cmd, capture_output=True, timeout=20)
    if is_mounted(path):
        abort_connection(path)
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)

    def stats(self) -> dict:
        """The daemon's counters, over its control socket: no lookup in the mount (which would
        make and forget a stats snapshot's inode each time), and answered while lookups wait
        on a stalled cluster."""
        from aisbatchfs import control

        return control.stats(str(self.path))

    def requests(self) -> int:
        return self.stats()["client"]["http_requests"]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def stop(self, timeout: float = 20) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True, timeout=20)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            force_unmount(self.path)
            self.proc.kill()
            self.proc.wait(timeout=10)
        force_unmount(self.path)


def start_daemon(source: str, mountpoint: Path, *args: str, log: Path,
                 env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aisbatchfs", "mount", source, str(mountpoint), "-f", *args]
    out = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=env)
    finally:
        out.close()


def wait_mounted(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
        if is_mounted(path) and "is ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    raise AssertionError(f"not mounted after {timeout}s:\n{log.read_text()}")


def mount(source: str, mountpoint: Path, *args: str, log: Path | None = None,
          env: dict | None = None) -> Mount:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = log or mountpoint.parent / f"{mountpoint.name}.log"
    proc = start_daemon(source, mountpoint, *args, log=log, env=env)
    try:
        wait_mounted(mountpoint, proc, log)
    except BaseException:
        force_unmount(mountpoint)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return Mount(mountpoint, proc, log, list(args))
