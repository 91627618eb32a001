"""patches/pyfuse3-3.5.0-read-inode-opendir-fileinfo.patch works on a real mount.

No AIStore here: a tiny pyfuse3 file system (tests/pyfuse3_patch_fs.py) runs as a subprocess
and writes how many requests of each kind reached it to a report file. With the patch:

- a file system whose `open` raises ENOSYS sets `read_with_inode = True` and gets
  read(fh, off, size, inode): the kernel opens and closes regular files itself, sends one OPEN
  per connection and no RELEASE, and every READ comes with fh 0, so only the inode tells files
  apart (stock pyfuse3 drops it);
- `opendir` may return FileInfo(fh, keep_cache=..., cache_readdir=...): with both set, a second
  listing of the directory is served by the kernel and never reaches `readdir`.

Everything that touches the mount runs in a child process with a timeout, and teardown always
unmounts (fusermount3 -u, then -uz) and kills the daemon, so a broken pyfuse3 fails, not hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mounting import force_unmount, is_mounted

DAEMON = Path(__file__).resolve().parent.parent / "pyfuse3_patch_fs.py"
PATCH = "patches/pyfuse3-3.5.0-read-inode-opendir-fileinfo.patch"
NAMES = ["a.txt", "b.txt"]
CLIENT_TIMEOUT = 30


def require_patched_pyfuse3() -> None:
    """Fail at once, saying why, when the installed pyfuse3 lacks the patch."""
    import pyfuse3

    missing = []
    if getattr(pyfuse3.Operations, "read_with_inode", None) is not False:
        missing.append("Operations.read_with_inode")
    if not hasattr(pyfuse3.FileInfo(), "cache_readdir"):
        missing.append("FileInfo.cache_readdir")
    if missing:
        pytest.fail(
            f"pyfuse3 {pyfuse3.__version__} ({pyfuse3.__file__}) is not patched: it lacks "
            f"{' and '.join(missing)}. Build it with {PATCH} applied: run scripts/bootstrap.",
            pytrace=False,
        )


@dataclass
class PatchFs:
    path: Path
    proc: subprocess.Popen
    report_file: Path
    log: Path

    def report(self) -> dict:
        return json.loads(self.report_file.read_text())

    def settled_report(self, quiet: float = 0.3, limit: float = 5.0) -> dict:
        """The report once no request arrived for `quiet` seconds: RELEASE is sent
        asynchronously after close(2), so it may come after the client has exited."""
        t0 = time.monotonic()
        last, since = self.report(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
            time.sleep(0.05)
            now = self.report()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def client(self, code: str, *args: str) -> object:
        """Run python `code` against the mount in a child process; it prints JSON."""
        try:
            r = subprocess.run([sys.executable, "-c", code, str(self.path), *args],
                               capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a client of the mount hung for {CLIENT_TIMEOUT}s\n{self.log_text()}",
                        pytrace=False)
        if r.returncode != 0:
            pytest.fail(f"client failed: {r.stderr}\n{self.log_text()}", pytrace=False)
        return json.loads(r.stdout)

    def read_files(self, *names: str) -> dict[str, bytes]:
        code = ("import json, os, sys\n"
                "print(json.dumps({n: open(os.path.join(sys.argv[1], n), 'rb').read()"
                ".decode('latin-1') for n in sys.argv[2:]}))")
        return {n: s.encode("latin-1") for n, s in self.client(code, *names).items()}

    def listdir(self) -> list[str]:
        return self.client("import json, os, sys\n"
                           "print(json.dumps(sorted(os.listdir(sys.argv[1]))))")

    def log_text(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(none)"
        return "daemon log:\n" + text


@pytest.fixture
def start_fs(tmp_path) -> Iterator[Callable[..., PatchFs]]:
    """start_fs(open_mode, opendir_mode) mounts tests/pyfuse3_patch_fs.py at a fresh directory."""
    started: list[PatchFs] = []

    def start(open_mode: str = "enosys", opendir_mode: str = "int") -> PatchFs:
        n = len(started)
        mnt, report, log = (tmp_path / f"mnt{n}", tmp_path / f"report{n}.json",
                            tmp_path / f"fs{n}.log")
        mnt.mkdir()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(DAEMON), str(mnt), "--report", str(report),
                 "--open", open_mode, "--opendir", opendir_mode],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        fs = PatchFs(mnt, proc, report, log)
        started.append(fs)
        deadline = time.monotonic() + 30
        while not (is_mounted(mnt) and report.exists()):
            if proc.poll() is not None:
                pytest.fail(f"the test file system exited with {proc.returncode}\n{fs.log_text()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"the test file system did not mount in 30s\n{fs.log_text()}",
                            pytrace=False)
            time.sleep(0.05)
        return fs

    yield start
    for fs in started:
        try:
            force_unmount(fs.path)  # fusermount3 -u, then -uz (then abort the connection)
        except subprocess.TimeoutExpired:
            pass  # a stuck daemon: kill it, then unmount again
        try:
            fs.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fs.proc.kill()
            fs.proc.wait(timeout=10)
        force_unmount(fs.path)


def test_installed_pyfuse3_is_patched():
    require_patched_pyfuse3()
    import pyfuse3

    assert pyfuse3.Operations.read_with_inode is False
    fi = pyfuse3.FileInfo(fh=7, keep_cache=False, cache_readdir=True)
    assert (fi.fh, fi.keep_cache, fi.cache_readdir) == (7, False, True)
    assert pyfuse3.FileInfo().cache_readdir is False


def test_without_open_each_file_reads_its_own_bytes(start_fs):
    from tests.pyfuse3_patch_fs import FILES

    require_patched_pyfuse3()
    fs = start_fs(open_mode="enosys")
    want = {name.decode(): data for name, (_, data) in FILES.items()}
    assert want["a.txt"] != want["b.txt"]
    for _ in range(2):  # the second round opens both files again
        got = fs.read_files(*NAMES)
        for name in NAMES:
            assert got[name] == want[name], (
                f"{name} read back {got[name][:16]!r}... instead of its own bytes "
                f"{want[name][:16]!r}...: reads went to the wrong file")
    rep = fs.settled_report()
    print("requests, open -> ENOSYS:", dict(rep["counts"]))
    counts = rep["counts"]
    assert counts.get("open", 0) == 1, (
        f"the kernel sent OPEN {counts.get('open', 0)} times; after the first one answered ENOSYS "
        f"it must open files itself (FUSE_NO_OPEN_SUPPORT)")
    assert counts.get("release", 0) == 0, f"the kernel sent RELEASE {counts['release']} times"
    reads = rep["reads"]
    assert reads and {fh for fh, _, _, _ in reads} == {0}, f"READ with fh other than 0: {reads}"
    assert {ino for _, ino, _, _ in reads} == {ino for _, (ino, _) in FILES.items()}, reads


def test_with_open_the_kernel_sends_open_and_release_per_file(start_fs):
    """The control for the test above: the report does see OPEN and RELEASE when they come."""
    require_patched_pyfuse3()
    fs = start_fs(open_mode="fh")
    fs.read_files(*NAMES)
    rep = fs.settled_report()
    print("requests, open -> FileInfo:", dict(rep["counts"]))
    assert rep["counts"].get("open", 0) == len(NAMES)
    assert rep["counts"].get("release", 0) == len(NAMES)
    assert {fh for fh, _, _, _ in rep["reads"]} != {0}


@pytest.mark.parametrize("opendir_mode, cached", [
    ("keep", True),     # FileInfo(fh, keep_cache=True, cache_readdir=True)
    ("nokeep", False),  # FileInfo(fh, keep_cache=False, cache_readdir=True): dropped at each open
    ("int", False),     # an int, as stock pyfuse3: nothing is cached
])
def test_second_listdir_reaches_readdir_only_without_the_cache(start_fs, opendir_mode, cached):
    require_patched_pyfuse3()
    fs = start_fs(opendir_mode=opendir_mode)
    assert fs.listdir() == NAMES
    first = fs.settled_report()["counts"]
    assert first.get("readdir", 0) >= 1, first
    assert fs.listdir() == NAMES
    second = fs.settled_report()["counts"]
    again = second.get("readdir", 0) - first["readdir"]
    print(f"opendir={opendir_mode}: first listdir {first['readdir']} readdir, second {again};",
          dict(second))
    assert second.get("opendir", 0) == 2, second  # the kernel still opens the directory
    if cached:
        assert again == 0, (
            f"the second listdir reached readdir {again} times although opendir returned "
            f"keep_cache=True, cache_readdir=True")
    else:
        assert again >= 1, f"the second listdir was served from a cache (opendir={opendir_mode})"
