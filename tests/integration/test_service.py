"""Running as a systemd service: the unit, sd_notify, config files, credentials.

This machine has no systemd as PID 1, so the unit is checked with systemd-analyze and its
ExecStart line is run here with a test NOTIFY_SOCKET, as systemd would run it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from tests.conftest import REPO
from tests.mounting import force_unmount, is_mounted, run

UNIT = REPO / "systemd" / "aisbatchfs@.service"
NAMESPACE_DIRECTIVES = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
    "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
    "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
    "ProcSubset", "ProtectHostname", "ProtectClock", "PrivateNetwork", "PrivateUsers",
    "PrivateIPC", "RootDirectory", "RootImage", "MountFlags", "NetworkNamespacePath",
}


def unit_lines() -> list[tuple[str, str]]:
    out = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def test_the_unit_verifies_and_keeps_the_mount_visible(tmp_path):
    (tmp_path / UNIT.name).write_text(UNIT.read_text())
    instance = str(tmp_path / "aisbatchfs@check.service")
    r = subprocess.run(["systemd-analyze", "verify", instance], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", instance],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Overall exposure level" in r.stdout, r.stderr
    keys = dict(unit_lines())
    assert not NAMESPACE_DIRECTIVES & set(keys), NAMESPACE_DIRECTIVES & set(keys)
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert "network-online.target" in keys["After"]
    assert "--foreground" in keys["ExecStart"] and "allow_other,default_permissions" in keys["ExecStart"]
    assert "--if-stale" in keys["ExecStartPre"]


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float, on_message=None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(msg)
            if on_message:
                on_message(msg)
            if field in msg.split("\n"):
                return True
        return False


def test_execstart_says_ready_only_once_the_mount_answers(cluster, make_bucket, tmp_path):
    b = make_bucket(cluster)
    b.object("hello.txt").get_writer().put_content(b"hello from systemd\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    conf = tmp_path / "svc.toml"
    conf.write_text(f'endpoint = "{cluster.endpoint}"\nmountpoint = "{mp}"\n'
                    f'bucket = "{b.name}"\nmetadata_ttl = 30\n')
    keys = dict(unit_lines())
    pre = shlex.split(keys["ExecStartPre"].replace("/etc/aisbatchfs/%i.toml", str(conf)))
    start = shlex.split(keys["ExecStart"].replace("/etc/aisbatchfs/%i.toml", str(conf)))
    assert run(pre, timeout=60).returncode == 0  # nothing stale: a no-op
    notify = NotifySocket(tmp_path / "notify.sock")
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(start, env=dict(os.environ, NOTIFY_SOCKET=str(notify.path)),
                            stdout=log, stderr=log, start_new_session=True)
    seen_mounted_at_ready = []

    def check(msg: str) -> None:
        if "READY=1" in msg.split("\n"):
            seen_mounted_at_ready.append(is_mounted(mp) and
                                         (mp / "hello.txt").read_bytes() == b"hello from systemd\n")

    try:
        assert notify.wait_for("READY=1", 60, check), (tmp_path / "daemon.log").read_text()
        assert seen_mounted_at_ready == [True]
        assert not any("READY=1" in m for m in notify.messages[:-1])
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in notify.messages)
        proc.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING=1", 20)
        assert proc.wait(timeout=30) == 0
        assert not is_mounted(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
        force_unmount(mp)
        print((tmp_path / "daemon.log").read_text())


def test_the_token_never_shows_in_logs_or_the_command_line(cluster, make_bucket, tmp_path, mounter):
    b = make_bucket(cluster)
    b.object("x").get_writer().put_content(b"x")
    secret = "tok-SECRET-7f3a9"
    env = dict(os.environ, AIS_AUTHN_TOKEN=secret)
    m = mounter(cluster.endpoint, "--bucket", b.name, "--log-level", "debug", env=env)
    assert (m.path / "x").read_bytes() == b"x"
    assert not (m.path / "nope").exists()
    pid = m.stats()["pid"]
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert secret not in m.log_text()
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")
    m2 = mounter(cluster.endpoint, "--bucket", b.name, "--log-level", "debug",
                 "-o", f"token_file={token_file}", name="mnt-tf")
    assert (m2.path / "x").read_bytes() == b"x"
    m2.proc.send_signal(signal.SIGHUP)  # re-reads the token file, keeps serving
    time.sleep(0.3)
    assert (m2.path / "x").read_bytes() == b"x"
    pid2 = m2.stats()["pid"]
    assert secret.encode() not in Path(f"/proc/{pid2}/cmdline").read_bytes()
    assert secret not in m2.log_text()
    assert "token re-read" in m2.log_text()


def test_config_file_precedence_and_rejections(cluster, make_bucket, tmp_path):
    b = make_bucket(cluster)
    mp = tmp_path / "mnt"
    mp.mkdir()
    bad = tmp_path / "bad.toml"
    cases = {
        'colour = "blue"\n': "unknown key 'colour'",
        'archives = "sometimes"\n': "allowed values are dir, file, both",
        'metadata_ttl = "soon"\n': "metadata_ttl='soon'",
        'umask = [1]\n': "umask",
        'endpoint = \n': "config file",
    }
    for text, message in cases.items():
        bad.write_text(text)
        r = subprocess.run([sys.executable, "-m", "aisbatchfs", "mount", "--config", str(bad),
                            str(mp)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)
        assert not is_mounted(mp)
    good = tmp_path / "good.toml"
    good.write_text(f'endpoint = "http://127.0.0.1:1"\nmountpoint = "{mp}"\nbucket = "{b.name}"\n'
                    'archives = "file"\n')
    # the environment beats the file; a flag beats the environment
    env = dict(os.environ, AIS_ENDPOINT=cluster.endpoint, AISBATCHFS_ARCHIVES="both")
    r = subprocess.run([sys.executable, "-m", "aisbatchfs", "mount", "--config", str(good),
                        "--archives", "dir"], capture_output=True, text=True, timeout=60, env=env)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mp)
        line = next(ln for ln in Path("/proc/self/mounts").read_text().splitlines()
                    if ln.split()[1] == str(mp))
        assert cluster.endpoint in line.split()[0]
    finally:
        run([sys.executable, "-m", "aisbatchfs", "umount", "--config", str(good)], check=False)
    assert not is_mounted(mp)
