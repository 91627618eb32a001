"""The benchmark's AIStore: a local cluster from scripts/ais-local (data kept across runs, so
datasets are built once), or a running one given with --endpoint (never stopped). Also the
facts about the machine and versions that every JSON document carries.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys

from .common import SCRIPTS, log

AIS_LOCAL = SCRIPTS / "ais-local"


def start(args: argparse.Namespace) -> tuple[str, bool]:
    """(endpoint, whether this call started the cluster)."""
    if args.endpoint:
        return args.endpoint.rstrip("/"), False
    cmd = [sys.executable, str(AIS_LOCAL), "start", "--name", args.cluster_name,
           "--dir", str(args.cluster_dir), "--targets", str(args.targets)]
    log(f"starting cluster: {' '.join(cmd[1:])}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"bench: cannot start the cluster:\n{r.stderr}")
    endpoint = next(line.split("=", 1)[1] for line in r.stdout.splitlines()
                    if line.startswith("AIS_ENDPOINT="))
    return endpoint, "already running" not in r.stderr


def stop(args: argparse.Namespace) -> None:
    subprocess.run([sys.executable, str(AIS_LOCAL), "stop", "--name", args.cluster_name],
                   capture_output=True, timeout=300)
    log(f"stopped cluster '{args.cluster_name}' (data kept in {args.cluster_dir})")


def describe(args: argparse.Namespace, endpoint: str, started: bool) -> dict:
    local = not args.endpoint
    return {"endpoint": endpoint, "name": args.cluster_name if local else None,
            "dir": str(args.cluster_dir) if local else None,
            "targets": args.targets if local else None, "started_by_bench": started}


def host(cache_drop: str) -> dict:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    return {"cpus": os.cpu_count(), "mem_total_bytes": mem, "kernel": platform.release(),
            "python": platform.python_version(), "cache_drop": cache_drop}


def versions() -> dict:
    import aisbatchfs
    import aistore

    m = re.search(r'^AIS_TAG = "([^"]+)"', AIS_LOCAL.read_text(), re.M)
    return {"aisbatchfs": getattr(aisbatchfs, "__version__", None),
            "aistore_sdk": getattr(aistore, "__version__", None), "aisnode": m[1] if m else None}
