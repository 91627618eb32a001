"""The comparator interface ("peers") and the catalogue the bench and the selftest share.

A peer is another way to read an AIStore bucket. A FUSE client (`fuse = True`) mounts in
setup() and unmounts in teardown(); the bench reads the mount with its own readers. A client
program reads in read_all()/read_members(), which the bench times in a separate process
(readers/peer_read.py) so a trial's deadline can end it. prepare() installs or checks the tool
once and sets `not_run` to say why the peer cannot run here; `cases` says where the bench runs
it; `limit` marks a row that shows a ceiling (the wire) rather than a tool a user would pick.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

CACHE = Path.home() / ".cache" / "aisbatchfs" / "peers"  # tools installed for the peers


def run(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def tail(text: str, n: int = 400) -> str:
    return " ".join(text.split())[-n:]


class Peer:
    name: str = ""
    fuse: bool = False
    limit: bool = False
    cases: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.flags: dict = {}
        self.not_run: str | None = None
        self.limits: list[str] = []  # known limitations against AIStore, for the JSON report
        self.last: dict = {}         # figures of the last read beyond seconds/files/bytes

    @property
    def label(self) -> str:
        return self.name

    @property
    def pid(self) -> int | None:
        """The process whose VmHWM the bench reports as peak RSS (FUSE peers)."""
        return None

    def prepare(self) -> None:
        pass

    def setup(self, endpoint: str, bucket: str, mountpoint: Path) -> Path | None:
        return None

    def teardown(self) -> None:
        pass

    # client peers
    def iter_read(self, endpoint: str, bucket: str, names: list[str]) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def read_all(self, endpoint: str, bucket: str, names: list[str]) -> int:
        """Read every object in order; the bytes read."""
        return sum(len(data) for _, data in self.iter_read(endpoint, bucket, names))

    def read_members(self, endpoint: str, bucket: str, pairs: list[tuple[str, str]]) -> int:
        raise NotImplementedError(f"{self.label} does not read archive members")


def all_peers() -> list[Peer]:
    """Every peer, in the order of the bench's rows."""
    from .client_peers import CurlPeer, SdkBatchPeer, SdkGet16Peer, WirePeer
    from .fuse_peers import RclonePeer, S3fsPeer

    return [RclonePeer(), S3fsPeer(), SdkBatchPeer(1000), SdkBatchPeer(256), SdkGet16Peer(),
            CurlPeer(), WirePeer()]
