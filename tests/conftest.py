"""Fixtures: real AIStore clusters started once per test run by scripts/ais-local.

Nothing here skips: a machine without Go, aisnode or FUSE fails the run with the reason, in CI
and locally alike. Clusters are named after the pytest process so parallel runs do not meet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AIS_LOCAL = REPO / "scripts" / "ais-local"
START_TIMEOUT = 1800  # the first start may build aisnode


@dataclass
class Cluster:
    name: str
    endpoint: str
    targets: int

    def run(self, *verb: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(AIS_LOCAL), *verb, "--name", self.name],
            capture_output=True, text=True, timeout=timeout,
        )


def start_cluster(label: str, targets: int) -> Cluster:
    name = f"pytest-{os.getpid()}-{label}"
    r = subprocess.run(
        [sys.executable, str(AIS_LOCAL), "start", "--name", name, "--targets", str(targets)],
        capture_output=True, text=True, timeout=START_TIMEOUT,
    )
    if r.returncode != 0:
        pytest.fail(f"could not start a local AIStore ({targets} targets):\n{r.stderr}", False)
    endpoint = next(
        line.split("=", 1)[1] for line in r.stdout.splitlines() if line.startswith("AIS_ENDPOINT=")
    )
    return Cluster(name, endpoint, targets)


def stop_cluster(cluster: Cluster) -> None:
    r = cluster.run("stop", timeout=120)
    if r.returncode != 0:
        print(f"stopping {cluster.name} failed:\n{r.stderr}", file=sys.stderr)


def pytest_sessionstart(session) -> None:
    """Stop clusters left behind by earlier test runs that died (their pytest PID is gone)."""
    state_dir = Path(os.environ.get("AIS_LOCAL_STATE_DIR", Path.home() / ".cache/aisbatchfs/ais-local"))
    for state in state_dir.glob("pytest-*-*.json"):
        pid = int(state.name.split("-")[1])
        if not Path(f"/proc/{pid}").exists():
            Cluster(state.stem, "", 0).run("stop", timeout=120)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The shared 1-proxy, 1-target cluster."""
    c = start_cluster("1t", 1)
    yield c
    stop_cluster(c)


@pytest.fixture(scope="session")
def cluster2() -> Iterator[Cluster]:
    """A 1-proxy, 2-target cluster: items of one batch live on different targets."""
    c = start_cluster("2t", 2)
    yield c
    stop_cluster(c)


@pytest.fixture(scope="module")
def fault_cluster(request) -> Iterator[Cluster]:
    """A 1-target cluster of the test module's own: fault tests pause and restart its target,
    which would disturb every other test sharing a cluster."""
    c = start_cluster(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"), 1)
    yield c
    stop_cluster(c)


@pytest.fixture(scope="session", params=["1t", "2t"])
def any_cluster(request) -> Cluster:
    """Runs a test on the 1-target and on the 2-target cluster."""
    return request.getfixturevalue("cluster" if request.param == "1t" else "cluster2")


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def new_bucket_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_bucket() -> Iterator[Callable]:
    """make_bucket(cluster) -> SDK bucket, created fresh and destroyed after the test."""
    from aistore.sdk import Client

    made = []

    def make(c: Cluster, prefix: str = "t"):
        b = Client(c.endpoint).bucket(new_bucket_name(prefix)).create()
        made.append(b)
        return b

    yield make
    for b in made:
        try:
            b.delete(missing_ok=True)
        except Exception as e:  # a failed cleanup must not hide the test's own result
            print(f"could not delete bucket {b.name}: {e}", file=sys.stderr)


OPEN_MODES = {"kernel-open": (), "daemon-open": ("-o", "kernel_open=false")}


def pytest_generate_tests(metafunc) -> None:
    """Tests of modules marked `both_open_modes` run once with files opened by the kernel alone
    (the default) and once with every open reaching the daemon (kernel_open=false)."""
    if "mounter" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
            "both_open_modes"):
        metafunc.parametrize("open_mode", list(OPEN_MODES), indirect=True)


@pytest.fixture
def open_mode(request) -> str:
    return getattr(request, "param", "kernel-open")


@pytest.fixture
def mounter(tmp_path, open_mode) -> Iterator[Callable]:
    """mounter(source, *args) -> Mount: a real mount, always taken down after the test.

    The daemon's log is printed at teardown; pytest shows it when the test failed.
    """
    from tests.mounting import mount

    made = []

    def make(source: str, *args: str, name: str | None = None, env: dict | None = None):
        args = (*OPEN_MODES[open_mode], *args)
        m = mount(source, tmp_path / (name or f"mnt{len(made)}"), *args, env=env)
        made.append(m)
        return m

    yield make
    for m in made:
        try:
            m.stop()
        finally:
            print(f"--- daemon log for {m.path} ---\n{m.log_text()}")
