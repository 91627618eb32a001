"""A mount whose target stops answering: reads fail in time, the rest keeps answering, and
reads work again once the target is back. Runs on a cluster of its own."""

from __future__ import annotations

import errno
import os
import threading
import time

from aistore.sdk import Client


READ_TIMEOUT = 4.0



def timed_read(path) -> tuple[float, BaseException | bytes]:
    t0 = time.monotonic()
    try:
        with open(path, "rb") as f:
            result: BaseException | bytes = f.read()
    except OSError as e:
        result = e
    return time.monotonic() - t0, result


def test_paused_target_gives_eio_in_time_and_the_mount_recovers(fault_cluster, mounter):
    b = Client(fault_cluster.endpoint).bucket("mf").create(exist_ok=True)
    for i in range(3):
        b.object(f"f{i}").get_writer().put_content(f"file {i}\n".encode())
    m = mounter(fault_cluster.endpoint, "--bucket", "mf", "-o",
                f"read_timeout={READ_TIMEOUT},metadata_timeout=3")
    assert sorted(os.listdir(m.path)) == ["f0", "f1", "f2"]  # listed before the fault
    assert fault_cluster.run("pause-target").returncode == 0
    try:
        box: dict = {}
        reader = threading.Thread(target=lambda: box.update(r=timed_read(m.path / "f0")))
        reader.start()
        time.sleep(0.5)
        # while that read waits on the paused target, the mount still answers
        t0 = time.monotonic()
        os.stat(m.path)
        os.statvfs(m.path)
        (m.path / ".aisbatchfs" / "stats").read_text()
        assert time.monotonic() - t0 < 1.0
        reader.join(READ_TIMEOUT + 15)
        assert not reader.is_alive()
        took, result = box["r"]
        assert isinstance(result, OSError) and result.errno == errno.EIO, result
        assert took < READ_TIMEOUT + 3, took
    finally:
        assert fault_cluster.run("resume-target").returncode == 0
    deadline = time.monotonic() + 90
    while True:  # the cluster may take a moment to take the target back
        took, result = timed_read(m.path / "f1")
        if result == b"file 1\n":
            break
        assert time.monotonic() < deadline, f"reads did not recover: {result}"
        time.sleep(1)
    assert (m.path / "f0").read_bytes() == b"file 0\n"
    assert "f0" in m.log_text() and "EIO" in m.log_text()  # the log names the object
