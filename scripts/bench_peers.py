#!/usr/bin/env python3
"""Comparator systems ("peers") for the aisbatchfs benchmark: the selftest's entry point.

  python scripts/bench_peers.py            # selftest: start the `peers-selftest` cluster, check every
                                           # peer reads exactly the bytes put with the SDK, stop it
  python scripts/bench_peers.py --keep     # same, but leave the cluster running

The peers live in scripts/benchkit: the interface and the catalogue in peers.py (`Peer`,
`all_peers()`), rclone and s3fs in fuse_peers.py, sdk-batch(1000), sdk-batch(256), sdk-get16,
curl and wire (GetBatch by curl) in client_peers.py, the selftest in selftest.py. This module
re-exports them, so `import bench_peers` keeps working.

Known limits against AIStore v1.5.0 (verified by the selftest, see `Peer.limits`):
  * s3fs 1.90 cannot reach objects below a virtual directory: a HEAD of `dir/` answers 400
    ErrLmetaNotFound instead of 404 (so `dir` shows as a mode-0 file), and a listing of prefix `dir/`
    comes back empty (AIStore's ListObjects reply leaves <Prefix> empty, which s3fs appears to use to
    make keys relative), also when mounting `bucket:/dir`. Flat buckets (objects at the root) work.
  * AIStore's S3 ListObjects ignores max-keys and `marker` and returns every page in one reply, so
    client-side pagination never comes into play.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit.client_peers import CurlPeer, SdkBatchPeer, SdkGet16Peer, WirePeer  # noqa: E402
from benchkit.fuse_peers import (  # noqa: E402
    RclonePeer, S3fsPeer, feature_names, get_cluster_features, set_cluster_features)
from benchkit.peers import Peer, all_peers  # noqa: E402
from benchkit.selftest import selftest  # noqa: E402

__all__ = ["CurlPeer", "Peer", "RclonePeer", "S3fsPeer", "SdkBatchPeer", "SdkGet16Peer", "WirePeer",
           "all_peers", "feature_names", "get_cluster_features", "selftest", "set_cluster_features"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the peers-selftest cluster running")
    return selftest(keep=ap.parse_args().keep)


if __name__ == "__main__":
    sys.exit(main())
