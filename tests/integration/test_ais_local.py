"""scripts/ais-local: starts exactly one cluster, stops exactly what it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aistore.sdk import Client

from tests.conftest import AIS_LOCAL


def ais_local(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AIS_LOCAL), *args], capture_output=True,
                          text=True, timeout=timeout)


def aisnode_pids() -> set[int]:
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"aisnode" in (d / "cmdline").read_bytes().split(b"\0")[0]:
                    pids.add(int(d.name))
            except OSError:
                pass
    return pids


def test_start_twice_then_stop_leaves_nothing_behind():
    name = f"pytest-{os.getpid()}-lifecycle"
    before = aisnode_pids()
    first = ais_local("start", "--name", name)
    assert first.returncode == 0, first.stderr
    endpoint = first.stdout.strip().removeprefix("AIS_ENDPOINT=")
    assert endpoint.startswith("http://127.0.0.1:")
    status = json.loads(ais_local("status", "--name", name).stdout)
    root = Path(status["root"])
    ours = {n["pid"] for n in status["nodes"]}
    assert status["ready"] and len(ours) == 2 and root.is_dir()
    assert aisnode_pids() - before == ours

    second = ais_local("start", "--name", name)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert "already running" in second.stderr
    assert aisnode_pids() - before == ours  # no second cluster

    stopped = ais_local("stop", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    assert not (aisnode_pids() & ours)
    assert aisnode_pids() >= before  # other clusters (the test session's) untouched
    assert not root.exists()
    assert ais_local("status", "--name", name).returncode != 0


def test_dir_keeps_data_across_restarts(tmp_path):
    name = f"pytest-{os.getpid()}-persist"
    start = ais_local("start", "--name", name, "--dir", str(tmp_path / "c"))
    assert start.returncode == 0, start.stderr
    try:
        endpoint = start.stdout.strip().removeprefix("AIS_ENDPOINT=")
        Client(endpoint).bucket("keep").create().object("o").get_writer().put_content(b"kept")
        assert ais_local("stop", "--name", name).returncode == 0
        assert (tmp_path / "c").is_dir()
        again = ais_local("start", "--name", name, "--dir", str(tmp_path / "c"))
        assert again.returncode == 0, again.stderr
        assert again.stdout == start.stdout  # same ports, same endpoint
        assert Client(endpoint).bucket("keep").object("o").get_reader().read_all() == b"kept"
    finally:
        ais_local("stop", "--name", name)
