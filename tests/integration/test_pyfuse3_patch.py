"""patches/pyfuse3-3.5.0-*.patch and patches/libfuse-3.14.0-*.patch work on a real mount.

No AIStore here: a tiny pyfuse3 file system (tests/pyfuse3_patch_fs.py) runs as a subprocess
and writes how many requests of each kind reached it to a report file. With the patch:

- a file system whose `open` raises ENOSYS sets `read_with_inode = True` and gets
  read(fh, off, size, inode): the kernel opens and closes regular files itself, sends one OPEN
  per connection and no RELEASE, and every READ comes with fh 0, so only the inode tells files
  apart (stock pyfuse3 drops it);
- `opendir` may return FileInfo(fh, keep_cache=..., cache_readdir=...): with both set, a second
  listing of the directory is served by the kernel and never reaches `readdir`.

With the libfuse patch (FUSE_PARALLEL_DIROPS passed on to the kernel) and pyfuse3's
`Operations.enable_parallel_dirops` (pyfuse3 patch 2; the test file system sets it):

- the INIT reply that libfuse sends (seen with -o debug) carries FUSE_PARALLEL_DIROPS;
- a lookup in a directory answers at once while a lookup of another name in the same directory
  is still under way; without the flag the kernel holds it until the first one is answered.
  `enable_parallel_dirops = False` is the control: there the second lookup does wait.

Patch 3: `notify_store_many` stores many files in the kernel's page cache at once (one errno
each; an inode the kernel does not know fails alone), and reads of them never reach the file
system. Patch 4: `request_counts` counts every request read from the kernel by opcode,
including those libfuse answers itself, such as the FUSE_IOCTL that Python's open() sends
for every file (isatty). Patch 5: with `main(ioctl_thread=True)` that ioctl is answered by a
thread of its own, even while the event loop is blocked; without it, it waits for the loop.

Everything that touches the mount runs in a child process with a timeout, and teardown always
unmounts (fusermount3 -u, then -uz) and kills the daemon, so a broken pyfuse3 fails, not hangs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mounting import force_unmount, is_mounted

DAEMON = Path(__file__).resolve().parent.parent / "pyfuse3_patch_fs.py"
PATCH = "patches/pyfuse3-3.5.0-1-read-inode-opendir-fileinfo.patch"
DIROPS_PATCHES = ("patches/libfuse-3.14.0-1-pass-parallel-dirops.patch (libfuse) and "
                  "patches/pyfuse3-3.5.0-2-enable-parallel-dirops.patch (pyfuse3)")
NAMES = ["a.txt", "b.txt"]
CLIENT_TIMEOUT = 30
FUSE_PARALLEL_DIROPS = 1 << 18  # an INIT reply flag, include/fuse_kernel.h
SLOW = 5.0  # seconds the lookup of slow.txt takes
STAT_TIMED = ("import json, os, sys, time\n"
              "t = time.monotonic()\n"
              "os.stat(os.path.join(sys.argv[1], sys.argv[2]))\n"
              "print(json.dumps(time.monotonic() - t))")


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


def require_enable_parallel_dirops() -> None:
    import pyfuse3

    if not hasattr(pyfuse3.Operations, "enable_parallel_dirops"):
        pytest.fail(f"pyfuse3 {pyfuse3.__version__} lacks Operations.enable_parallel_dirops: build "
                    f"it with {DIROPS_PATCHES} applied: run scripts/bootstrap.", pytrace=False)


def pyfuse3_libfuse() -> str:
    """ldd of the pyfuse3 extension module: which libfuse3.so it loads."""
    so = importlib.util.find_spec("pyfuse3").origin
    r = subprocess.run(["ldd", so], capture_output=True, text=True, timeout=30)
    lines = [ln.strip() for ln in r.stdout.splitlines() if "libfuse" in ln]
    return f"{so} loads: {'; '.join(lines) or r.stdout + r.stderr}"


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
        return "daemon log:\n" + text[-6000:]

    def wait_report(self, what: str, ok: Callable[[dict], bool], limit: float = 10.0) -> dict:
        deadline = time.monotonic() + limit
        while not ok(rep := self.report()):
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen in {limit}s: {rep}\n{self.log_text()}",
                            pytrace=False)
            time.sleep(0.05)
        return rep

    def init_reply_flags(self, limit: float = 10.0) -> int:
        """The flags of libfuse's INIT reply, from its -o debug trace: the kernel's INIT comes
        first ("INIT: 7.x" and "flags=0x..."), then the reply, indented by three spaces."""
        deadline = time.monotonic() + limit
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            m = re.search(r"^   INIT: \d+\.\d+\n   flags=0x([0-9a-fA-F]+)$", text, re.M)
            if m:
                return int(m[1], 16)
            if time.monotonic() > deadline:
                pytest.fail(f"no INIT reply in the -o debug trace after {limit}s\n"
                            f"{self.log_text()}", pytrace=False)
            time.sleep(0.05)


@pytest.fixture
def start_fs(tmp_path) -> Iterator[Callable[..., PatchFs]]:
    """start_fs(open_mode, opendir_mode, ...) mounts tests/pyfuse3_patch_fs.py at a fresh
    directory; slow_lookup, serial_dirops, debug, block, ioctl_thread and ioctl_spin_us are its
    --slow-lookup, --serial-dirops, --debug, --block, --ioctl-thread and --ioctl-spin-us."""
    started: list[PatchFs] = []

    def start(open_mode: str = "enosys", opendir_mode: str = "int", *, slow_lookup: float = 0,
              serial_dirops: bool = False, debug: bool = False, block: Path | None = None,
              ioctl_thread: bool = False, ioctl_spin_us: int = 0) -> PatchFs:
        n = len(started)
        mnt, report, log = (tmp_path / f"mnt{n}", tmp_path / f"report{n}.json",
                            tmp_path / f"fs{n}.log")
        mnt.mkdir()
        extra = (["--slow-lookup", str(slow_lookup)] if slow_lookup else []) + \
            (["--serial-dirops"] if serial_dirops else []) + (["--debug"] if debug else []) + \
            (["--block", str(block)] if block else []) + \
            (["--ioctl-thread"] if ioctl_thread else []) + \
            (["--ioctl-spin-us", str(ioctl_spin_us)] if ioctl_spin_us else [])
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(DAEMON), str(mnt), "--report", str(report),
                 "--open", open_mode, "--opendir", opendir_mode, *extra],
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


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial-control"])
def test_init_reply_carries_parallel_dirops(start_fs, serial):
    if serial:
        require_enable_parallel_dirops()
    fs = start_fs(debug=True, serial_dirops=serial)
    flags = fs.init_reply_flags()
    print(f"INIT reply flags 0x{flags:08x} (enable_parallel_dirops={not serial});",
          pyfuse3_libfuse())
    if serial:
        assert not flags & FUSE_PARALLEL_DIROPS, (
            f"INIT reply flags 0x{flags:08x} carry FUSE_PARALLEL_DIROPS although the file system "
            f"set enable_parallel_dirops = False")
    else:
        assert flags & FUSE_PARALLEL_DIROPS, (
            f"the INIT reply flags 0x{flags:08x} lack FUSE_PARALLEL_DIROPS "
            f"(0x{FUSE_PARALLEL_DIROPS:x}): the kernel serializes lookup and readdir per "
            f"directory. pyfuse3 needs a libfuse that passes the flag on, and to ask for it: "
            f"{DIROPS_PATCHES}, via scripts/bootstrap. {pyfuse3_libfuse()}")


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial-control"])
def test_a_slow_lookup_holds_up_no_other_lookup_in_its_directory(start_fs, serial):
    """stat(slow.txt) waits SLOW seconds in the daemon; stat(a.txt) in the same directory,
    started while it waits, answers at once, unless the kernel serializes the directory's
    lookups (the control, enable_parallel_dirops = False)."""
    if serial:
        require_enable_parallel_dirops()
    fs = start_fs(slow_lookup=SLOW, serial_dirops=serial)
    slow = subprocess.Popen([sys.executable, "-c", STAT_TIMED, str(fs.path), "slow.txt"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fs.wait_report("the lookup of slow.txt", lambda r: "slow.txt" in r["pending"])
        fast = fs.client(STAT_TIMED, "a.txt")
        try:
            out, err = slow.communicate(timeout=SLOW + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"stat(slow.txt) did not return in {SLOW + 30}s\n{fs.log_text()}",
                        pytrace=False)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait(timeout=10)
    assert slow.returncode == 0, err
    rep = fs.report()
    print(f"enable_parallel_dirops={not serial}: stat(a.txt) took {fast:.3f}s while the lookup "
          f"of slow.txt took {json.loads(out):.3f}s; most lookups under way at once: "
          f"{rep['max_pending']}; {pyfuse3_libfuse()}")
    if serial:
        assert fast > SLOW / 2 and rep["max_pending"] == 1, (
            f"the control failed: with enable_parallel_dirops = False, stat(a.txt) took {fast:.3f}s"
            f" and {rep['max_pending']} lookups were under way at once; the test cannot tell "
            f"serialized lookups apart")
    else:
        assert fast < 1.0 and rep["max_pending"] >= 2, (
            f"stat(a.txt) took {fast:.3f}s while a lookup of slow.txt ({SLOW}s) was under way "
            f"in the same directory, with {rep['max_pending']} lookup(s) at once: the kernel "
            f"serializes the directory's lookups (no FUSE_PARALLEL_DIROPS). pyfuse3 needs "
            f"{DIROPS_PATCHES}, via scripts/bootstrap. {pyfuse3_libfuse()}")


FUSE_READ, FUSE_IOCTL = 15, 39  # opcodes, include/fuse_kernel.h


def test_notify_store_many_stores_every_known_file_in_one_call(start_fs):
    """Patch 3. The kernel must know the inodes first (a lookup); then one call stores both
    files, the unknown inode between them fails alone with ENOENT, and reading the files
    brings the stored bytes without a READ."""
    from tests.pyfuse3_patch_fs import FILES

    fs = start_fs(open_mode="enosys")
    got = fs.client("import json, os, sys\n"
                    "for n in sys.argv[2:]:\n"
                    "    os.stat(os.path.join(sys.argv[1], n))\n"
                    "print(os.getxattr(sys.argv[1], 'user.store_many').decode())", *NAMES)
    assert got == [0, 2, 0]  # ENOENT for the inode the kernel does not know
    want = {name.decode(): data for name, (_, data) in FILES.items()}
    assert fs.read_files(*NAMES) == {n: want[n] for n in NAMES}
    assert fs.settled_report()["counts"].get("read", 0) == 0, "a stored file was READ"


def test_request_counts_see_what_libfuse_answers_itself(start_fs):
    """Patch 4. Python's open() of a file asks whether it is a terminal: a FUSE_IOCTL that
    libfuse answers (ENOSYS, the test file system has no ioctl) without calling a handler;
    request_counts counts it, and counts READ as often as the read handler ran."""
    fs = start_fs(open_mode="enosys")
    fs.read_files(*NAMES)
    rep = fs.settled_report()
    counts = {int(k): v for k, v in rep["request_counts"].items()}
    assert counts.get(FUSE_IOCTL, 0) >= len(NAMES), counts
    assert counts.get(FUSE_READ, 0) == rep["counts"]["read"] > 0, (counts, rep["counts"])


OPEN_THEN_ISATTY = (
    "import json, os, sys\n"
    "root = sys.argv[1]\n"
    "os.stat(os.path.join(root, 'a.txt'))  # the lookup, while the loop still answers\n"
    "open(os.path.join(root, 'b.txt'), 'rb').read()  # the connection's one OPEN (ENOSYS)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "fd = os.open(os.path.join(root, 'a.txt'), os.O_RDONLY)  # opened by the kernel alone\n"
    "print(json.dumps(os.isatty(fd)), flush=True)  # FUSE_IOCTL\n")


@pytest.mark.parametrize("ioctl_thread", [True, False], ids=["ioctl-thread", "loop"])
def test_the_ioctl_of_an_open_is_answered_while_the_event_loop_is_blocked(start_fs, tmp_path,
                                                                          ioctl_thread):
    """Patch 5. block.txt's READ blocks the file system's event loop. Another process then
    opens a file (no request: the kernel opens it) and asks isatty(), as Python's open() does:
    with the request thread the answer (not a terminal) comes while the loop is still blocked;
    without it, only once the loop is released."""
    import pyfuse3

    if ioctl_thread and not hasattr(pyfuse3, "ioctls_answered_apart"):
        pytest.fail("pyfuse3 lacks main(ioctl_thread=True): build it with "
                    "patches/pyfuse3-3.5.0-5-ioctl-thread.patch (scripts/bootstrap)", pytrace=False)
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    fs = start_fs(open_mode="enosys", block=fifo, ioctl_thread=ioctl_thread)
    blocker = asker = None
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            with open(fifo, "wb") as f:  # waits for the blocked READ to open its end
                f.write(b"x")

    try:
        asker = subprocess.Popen([sys.executable, "-c", OPEN_THEN_ISATTY, str(fs.path)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert asker.stdout.readline().strip() == "ready"
        blocker = subprocess.Popen([sys.executable, "-c",
                                    "import sys; open(sys.argv[1], 'rb').read()",
                                    str(fs.path / "block.txt")])
        fs.wait_report("the blocking READ", lambda r: r["blocked"])
        asker.stdin.write("go\n")
        asker.stdin.flush()
        answered_while_blocked = select.select([asker.stdout], [], [], 5.0)[0] != []
        assert answered_while_blocked == ioctl_thread, (
            "the ioctl was answered while the loop was blocked" if answered_while_blocked
            else "the ioctl waited for the blocked loop")
        release()
        assert asker.stdout.readline().strip() == "false"  # not a terminal (ENOTTY)
        assert asker.wait(CLIENT_TIMEOUT) == 0 and blocker.wait(CLIENT_TIMEOUT) == 0
    finally:
        if fs.proc.poll() is None:
            release()
        for p in (asker, blocker):
            if p is not None and p.poll() is None:
                p.kill()
    fs.listdir()  # a request that reaches a handler: the report is written again
    rep = fs.settled_report()
    ioctls = {int(k): v for k, v in rep["request_counts"].items()}.get(FUSE_IOCTL, 0)
    assert ioctls >= 3, rep  # both clients' opens; the thread counts what it answers too
    assert rep["ioctls_answered_apart"] == (ioctls if ioctl_thread else 0), rep


OPENS = (
    "import json, os, sys, time\n"
    "path, n, pause = os.path.join(sys.argv[1], 'a.txt'), int(sys.argv[2]), float(sys.argv[3])\n"
    "os.close(os.open(path, os.O_RDONLY))  # the connection's one OPEN and FLUSH (ENOSYS)\n"
    "time.sleep(0.1)\n"
    "answers = []\n"
    "for _ in range(n):\n"
    "    fd = os.open(path, os.O_RDONLY)  # opened by the kernel alone\n"
    "    answers.append(os.isatty(fd))  # FUSE_IOCTL\n"
    "    os.close(fd)\n"
    "    time.sleep(pause)\n"
    "print(json.dumps(answers))\n")


def _spins(fs: PatchFs, opens: int, pause: float) -> tuple[int, int]:
    assert fs.client(OPENS, str(opens), str(pause)) == [False] * opens  # ENOTTY, every time
    fs.listdir()  # a request that reaches a handler: the report is written again
    spins, hits = fs.settled_report()["ioctl_spins"]
    return spins, hits


def test_the_request_thread_spins_for_the_next_ioctl_of_opens_in_a_row(start_fs):
    """Patch 6. With ioctl_spin_us, the request thread polls on after it answers an ioctl, so
    the next open's ioctl, sent microseconds later, finds it awake (a 2 ms spin: far longer
    than one open, close and open of a cached file take); without it, it never spins."""
    import pyfuse3

    if not hasattr(pyfuse3, "ioctl_spins"):
        pytest.fail("pyfuse3 lacks main(ioctl_spin_us=N): build it with "
                    "patches/pyfuse3-3.5.0-6-ioctl-spin.patch (scripts/bootstrap)", pytrace=False)
    spins, hits = _spins(start_fs(ioctl_thread=True, ioctl_spin_us=2000), 200, 0)
    assert hits >= 50 and spins >= hits, (spins, hits)  # most: a client may be descheduled
    assert _spins(start_fs(ioctl_thread=True), 200, 0) == (0, 0)


def test_spins_back_off_when_opens_are_far_apart(start_fs):
    """Patch 6. A program that works between its opens (50 ms here) never has its next ioctl
    caught by a 2 ms spin: after n spins in a row that found nothing, the next 2**n - 1 ioctls
    get none, so 40 opens cost 5 spins (the 1st, 3rd, 7th, 15th and 31st), not 40."""
    fs = start_fs(ioctl_thread=True, ioctl_spin_us=2000)
    spins, hits = _spins(fs, 40, 0.05)
    assert hits == 0 and 4 <= spins <= 6, (spins, hits)
