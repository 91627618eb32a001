#!/usr/bin/env python3
"""A loopback HTTP proxy that adds latency in front of a whole AIStore cluster.

    latency_proxy.py serve ENDPOINT [--delay-ms 1]        print the proxied endpoint, run until ^C
    latency_proxy.py selftest ENDPOINT [--delay-ms 1]     GET and GetBatch through it: bytes and timing

The forwarder is scripts/fault_proxy.py's FaultProxy with a delay and no fault rules: one
listening port per node of the cluster map, `Location` of redirects rewritten so the hops to
targets come back through it too, and `delay` seconds waited before each request and each
response head goes out. Every request/response round trip therefore takes 2 x delay longer:
--delay-ms 1 is a 2 ms RTT.

Standard library only. Used by scripts/bench for the P1@2ms and P3@2ms cases:

    with LatencyProxy("http://127.0.0.1:8080", delay=0.001) as p:
        p.endpoint      # http://127.0.0.1:PORT, to mount or to give an SDK client
        p.counts        # requests per upstream port
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from fault_proxy import FaultProxy, serve_until_interrupted


class LatencyProxy(FaultProxy):
    """The fault proxy with a fixed delay each way and no rules."""

    def __init__(self, endpoint: str, delay: float = 0.001, listen_host: str = "127.0.0.1") -> None:
        super().__init__(endpoint, delay=delay, listen_host=listen_host)


# -- self-test -------------------------------------------------------------------------------------


def selftest(endpoint: str, delay: float, rounds: int = 40) -> int:
    """PUT objects directly; GET and GetBatch them directly and through the proxy; compare.

    Returns 0 when the bytes match, redirects went through the proxy, and the added time per
    request is within [1.5, 4] x the nominal 2 x delay x hops.
    """
    import os
    import statistics

    import requests
    from aistore.sdk import Client

    bucket_name = f"bench-proxytest-{os.getpid()}"
    direct = Client(endpoint)
    bck = direct.bucket(bucket_name).create(exist_ok=True)
    ok = True
    try:
        blobs = {f"o{i}": os.urandom(20_000 + i) for i in range(4)}
        for name, data in blobs.items():
            bck.object(name).get_writer().put_content(data)
        with LatencyProxy(endpoint, delay) as p:
            s = requests.Session()
            s.trust_env = False

            def get(base: str) -> float:
                t0 = time.perf_counter()
                r = s.get(f"{base}/v1/objects/{bucket_name}/o1?provider=ais")
                took = time.perf_counter() - t0
                if r.content != blobs["o1"]:
                    raise AssertionError(f"GET through {base}: wrong bytes ({len(r.content)})")
                return took

            hops = 1 + len(s.get(f"{p.endpoint}/v1/objects/{bucket_name}/o1?provider=ais").history)
            d_get = statistics.median(get(endpoint) for _ in range(rounds))
            p_get = statistics.median(get(p.endpoint) for _ in range(rounds))

            def batch(base: str) -> float:
                c = Client(base)
                b = c.batch(bucket=c.bucket(bucket_name))
                for name in blobs:
                    b.add(name)
                t0 = time.perf_counter()
                got = {m.obj_name: data for m, data in b.get()}
                took = time.perf_counter() - t0
                if got != blobs:
                    raise AssertionError(f"GetBatch through {base}: wrong bytes")
                return took

            d_batch = statistics.median(batch(endpoint) for _ in range(rounds // 2))
            p_batch = statistics.median(batch(p.endpoint) for _ in range(rounds // 2))
            desc = p.describe()
        nominal = 2 * delay * hops
        added_get, added_batch = p_get - d_get, p_batch - d_batch
        targets_hit = [n for n, (role, _, port) in enumerate(p.nodes)
                       if role == "target" and desc["requests_by_upstream_port"][port] > 0]
        print(json.dumps({"hops_per_request": hops, "nominal_added_ms": nominal * 1000,
                          "get_ms": {"direct": d_get * 1000, "proxied": p_get * 1000,
                                     "added": added_get * 1000},
                          "getbatch_ms": {"direct": d_batch * 1000, "proxied": p_batch * 1000,
                                          "added": added_batch * 1000},
                          "proxy": desc}, indent=1))
        if hops < 2 or not targets_hit or desc["location_rewrites"] == 0:
            print("FAIL: redirects did not go through the proxy", file=sys.stderr)
            ok = False
        for what, added in (("GET", added_get), ("GetBatch", added_batch)):
            if not 0.75 * nominal <= added <= 4 * nominal + 0.002:
                print(f"FAIL: {what} added {added * 1000:.2f} ms, expected about {nominal * 1000:.1f}",
                      file=sys.stderr)
                ok = False
    finally:
        with contextlib.suppress(Exception):
            bck.delete(missing_ok=True)
    print("selftest " + ("passed" if ok else "FAILED"), file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=["serve", "selftest"])
    p.add_argument("endpoint", help="AIStore endpoint, e.g. http://127.0.0.1:8080")
    p.add_argument("--delay-ms", type=float, default=1.0,
                   help="delay of each request and of each response (default 1: a 2 ms round trip)")
    a = p.parse_args()
    if a.verb == "selftest":
        return selftest(a.endpoint, a.delay_ms / 1000)
    with LatencyProxy(a.endpoint, a.delay_ms / 1000) as proxy:
        serve_until_interrupted(proxy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
