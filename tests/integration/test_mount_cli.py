"""Mounting as users do it: the command line, mount(8), fstab, signals, a crashed daemon."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.mounting import force_unmount, is_mounted, mount, run

AISBATCHFS = [sys.executable, "-m", "aisbatchfs"]


@pytest.fixture
def bucket(cluster, make_bucket):
    b = make_bucket(cluster)
    b.object("dir/file.txt").get_writer().put_content(b"through the mount\n")
    return b


@pytest.fixture
def mountpoint(tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    yield mp
    force_unmount(mp)


def test_background_mount_returns_once_the_mount_answers(cluster, bucket, mountpoint):
    r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "--bucket", bucket.name],
            timeout=60)
    assert r.returncode == 0
    assert is_mounted(mountpoint)  # already there when the command returns
    assert (mountpoint / "dir" / "file.txt").read_bytes() == b"through the mount\n"
    assert run([*AISBATCHFS, "umount", str(mountpoint)], timeout=60).returncode == 0
    assert not is_mounted(mountpoint)


def test_mount_fails_clearly_without_a_cluster_or_bucket(cluster, mountpoint):
    r = run([*AISBATCHFS, "mount", "http://127.0.0.1:1", str(mountpoint)], check=False, timeout=60)
    assert r.returncode == 1, r.stderr
    assert b"cannot reach http://127.0.0.1:1: connection refused" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr and b"urllib3" not in r.stderr
    r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "--bucket", "no-such-bkt"],
            check=False, timeout=60)
    assert r.returncode == 1 and b"does not exist" in r.stderr
    r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "-o", "colour=blue"],
            check=False, timeout=60)
    assert r.returncode == 2 and b"colour" in r.stderr and b"unknown option" in r.stderr
    r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "-o", "archives=maybe"],
            check=False, timeout=60)
    assert r.returncode == 2 and b"allowed values are dir, file, both" in r.stderr
    for bad in ("uid=-1", "batches_in_flight=0", "read_timeout=nan"):  # once mounted, broken
        r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "-o", bad],
                check=False, timeout=60)
        assert r.returncode == 2 and bad.split("=")[0].encode() + b"=" in r.stderr, r.stderr
    r = run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "--uid", "-1"],
            check=False, timeout=60)
    assert r.returncode == 2 and b"uid" in r.stderr
    assert not is_mounted(mountpoint)


def test_the_mount8_form_with_ownership_and_modes(cluster, bucket, mountpoint):
    """What mount.fuse3 runs: SOURCE MOUNTPOINT -o rw,dev,suid,... (it adds rw,dev,suid)."""
    opts = "rw,dev,suid,nofail,_netdev,noatime,allow_other,uid=1234,gid=2345,umask=027"
    r = run([*AISBATCHFS, f"ais://{bucket.name}", str(mountpoint), "-o",
             f"{opts},endpoint={cluster.endpoint}"], timeout=60)
    assert r.returncode == 0
    st = (mountpoint / "dir" / "file.txt").stat()
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert stat.S_IMODE(st.st_mode) == 0o440
    assert stat.S_IMODE((mountpoint / "dir").stat().st_mode) == 0o550
    line = next(ln for ln in Path("/proc/self/mounts").read_text().splitlines()
                if ln.split()[1] == str(mountpoint))
    fsname, _, fstype, kopts = line.split()[:4]
    assert fsname == f"ais:{cluster.endpoint}/{bucket.name}" and fstype == "fuse.aisbatchfs"
    assert "allow_other" in kopts
    run([*AISBATCHFS, "umount", str(mountpoint)])


def test_mount_t_and_an_fstab_entry(cluster, bucket, mountpoint, tmp_path):
    assert shutil.which("aisbatchfs"), "aisbatchfs must be on the PATH mount(8) uses"
    run(["mount", "-t", "fuse.aisbatchfs", f"ais://{bucket.name}", str(mountpoint),
         "-o", f"endpoint={cluster.endpoint},allow_other"], timeout=60)
    assert (mountpoint / "dir" / "file.txt").read_bytes() == b"through the mount\n"
    run(["umount", str(mountpoint)], timeout=60)
    assert not is_mounted(mountpoint)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"ais://{bucket.name}/dir {mountpoint} fuse.aisbatchfs "
                     f"endpoint={cluster.endpoint},_netdev,nofail,noauto,metadata_ttl=5 0 0\n")
    run(["mount", "-T", str(fstab), str(mountpoint)], timeout=60)
    assert os.listdir(mountpoint) == ["file.txt"]
    run(["umount", str(mountpoint)], timeout=60)
    assert not is_mounted(mountpoint)


def test_sigterm_unmounts_cleanly(cluster, bucket, mountpoint):
    m = mount(cluster.endpoint, mountpoint, "--bucket", bucket.name)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=20) == 0
    assert not is_mounted(m.path)
    assert "SIGTERM: unmounting" in m.log_text()


def test_a_killed_daemon_leaves_a_dead_mount_that_the_next_mount_clears(cluster, bucket,
                                                                          mountpoint, tmp_path):
    first = mount(cluster.endpoint, mountpoint, "--bucket", bucket.name)
    first.proc.kill()
    first.proc.wait(timeout=10)
    with pytest.raises(OSError) as e:
        os.listdir(first.path)
    assert e.value.errno == 107  # ENOTCONN: transport endpoint is not connected
    second = mount(cluster.endpoint, mountpoint, "--bucket", bucket.name,
                   log=tmp_path / "second.log")
    try:
        assert (second.path / "dir" / "file.txt").read_bytes() == b"through the mount\n"
        assert "dead FUSE mount" in second.log_text()
    finally:
        second.stop()


def test_version_and_help():
    out = run([*AISBATCHFS, "--version"]).stdout.decode()
    assert out.startswith("aisbatchfs ")
    helptext = run([*AISBATCHFS, "mount", "--help"]).stdout.decode()
    for flag in ("--bucket", "--archives", "--metadata-ttl", "--read-timeout", "-o OPTS"):
        assert flag in helptext


def test_logs_go_to_a_file_when_asked(cluster, bucket, mountpoint, tmp_path):
    logfile = tmp_path / "daemon.log"
    run([*AISBATCHFS, "mount", cluster.endpoint, str(mountpoint), "--bucket", bucket.name,
         "--log-file", str(logfile), "--log-level", "debug"], timeout=60)
    try:
        assert not (mountpoint / "missing").exists()
        deadline = time.monotonic() + 5
        while "is ready" not in logfile.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "is ready" in logfile.read_text()
    finally:
        run([*AISBATCHFS, "umount", str(mountpoint)], check=False)


READ_AS = r"""
import os, sys
os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
try:
    with open(sys.argv[3], "rb") as f:
        print(len(f.read()))
except OSError as e:
    print(f"errno {e.errno}")
"""


def read_as(uid: int, gid: int, path: Path) -> str:
    """Read `path` whole in a process running as uid:gid; its length or 'errno N'."""
    r = run([sys.executable, "-c", READ_AS, str(uid), str(gid), str(path)], timeout=30)
    return r.stdout.decode().strip()


@pytest.mark.parametrize("check", [True, False])
def test_the_owner_and_modes_the_mount_shows_are_the_ones_enforced(cluster, bucket, check):
    """allow_other, uid=1234, file_mode=440: the owner reads, root reads, anyone else gets
    EACCES, unless check_permissions=false says anyone who reaches the mount reads."""
    parent = Path(tempfile.mkdtemp(prefix="aisbatchfs-perm-"))
    parent.chmod(0o755)  # other users must reach the mountpoint for the test to mean anything
    mp = parent / "mp"
    mp.mkdir()
    try:
        run([*AISBATCHFS, "mount", cluster.endpoint, str(mp), "--bucket", bucket.name, "-o",
             f"allow_other,uid=1234,gid=1234,file_mode=440,check_permissions={check}"],
            timeout=60)
        f = mp / "dir" / "file.txt"
        st = f.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1234, 0o440)
        assert read_as(1234, 1234, f) == "18"  # the owner
        assert f.read_bytes() == b"through the mount\n"  # root
        assert read_as(4321, 4321, f) == ("errno 13" if check else "18")  # anyone else
    finally:
        force_unmount(mp)
        shutil.rmtree(parent, ignore_errors=True)


def test_a_name_over_255_bytes_is_enametoolong(cluster, bucket, mountpoint):
    m = mount(cluster.endpoint, mountpoint, "--bucket", bucket.name)
    try:
        with pytest.raises(OSError) as e:
            os.stat(m.path / "dir" / ("x" * 300))
        assert e.value.errno == errno.ENAMETOOLONG
        assert (m.path / "dir" / "file.txt").read_bytes() == b"through the mount\n"
    finally:
        m.stop()
