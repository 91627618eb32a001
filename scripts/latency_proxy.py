#!/usr/bin/env python3
"""A loopback HTTP proxy that adds latency in front of a whole AIStore cluster.

    latency_proxy.py serve ENDPOINT [--delay-ms 1]        print the proxied endpoint, run until ^C
    latency_proxy.py selftest ENDPOINT [--delay-ms 1]     GET and GetBatch through it: bytes and timing

AIStore answers a GET at the proxy with a 301 (GetBatch and HEAD with a 307) to a target's public
URL, so a delay in front of the proxy port alone would add latency to only the first hop. This
proxy listens once per node: one port for the AIStore proxy and one for every target's public
port (from `GET /v1/daemon?what=smap`), and rewrites the `Location` header of every response
whose URL names one of those nodes to the matching listening port, so redirects come back
through it too.

Each listening port is an HTTP/1.1-aware forwarder: a thread per client connection keeps one
upstream connection, reads a request (head, then a Content-Length or chunked body), waits
`delay` seconds, forwards it, reads the response head, waits `delay` seconds, rewrites Location,
forwards the head and then streams the body (Content-Length, chunked, or until close). Every
request/response round trip therefore takes 2 x delay longer: --delay-ms 1 is a 2 ms RTT. Both
sockets have TCP_NODELAY, so the proxy adds no Nagle/delayed-ACK stalls of its own.

Standard library only. Used by scripts/bench for the P1@2ms and P3@2ms cases:

    with LatencyProxy("http://127.0.0.1:8080", delay=0.001) as p:
        p.endpoint      # http://127.0.0.1:PORT, to mount or to give an SDK client
        p.counts        # requests forwarded per upstream port
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit, urlunsplit

CHUNK = 256 * 1024
HOP_TIMEOUT = 600.0  # seconds a forwarder waits on one socket operation


class ProtocolError(Exception):
    pass


def smap_nodes(endpoint: str, timeout: float = 10.0) -> list[tuple[str, str, int]]:
    """[(role, host, public port)] of every node in the cluster map, proxies first."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP_PROXY
    with opener.open(endpoint.rstrip("/") + "/v1/daemon?what=smap", timeout=timeout) as r:
        smap = json.loads(r.read())
    out = []
    for role, key in (("proxy", "pmap"), ("target", "tmap")):
        for node in (smap.get(key) or {}).values():
            net = node.get("public_net") or {}
            port = net.get("daemon_port") or net.get("node_port")
            host = net.get("node_ip_addr") or "127.0.0.1"
            if port:
                out.append((role, host, int(port)))
    return out


def _read_head(rfile) -> list[bytes] | None:
    """Start line and header lines (without CRLF) of one message; None at a clean EOF."""
    lines: list[bytes] = []
    while True:
        line = rfile.readline(65537)
        if not line:
            if lines:
                raise ProtocolError("connection closed inside a message head")
            return None
        if len(line) > 65536:
            raise ProtocolError("header line too long")
        line = line.rstrip(b"\r\n")
        if not line:
            if not lines:
                continue  # stray CRLF between messages
            return lines
        lines.append(line)


def _header(lines: list[bytes], name: bytes) -> bytes | None:
    name = name.lower()
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def _relay_exact(rfile, sock: socket.socket, n: int) -> None:
    while n > 0:
        data = rfile.read(min(n, CHUNK))
        if not data:
            raise ProtocolError("connection closed inside a body")
        sock.sendall(data)
        n -= len(data)


def _relay_chunked(rfile, sock: socket.socket) -> None:
    while True:
        size_line = rfile.readline(1024)
        if not size_line:
            raise ProtocolError("connection closed inside a chunked body")
        sock.sendall(size_line)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                t = rfile.readline(65537)
                if not t:
                    raise ProtocolError("connection closed inside chunked trailers")
                sock.sendall(t)
                if t in (b"\r\n", b"\n"):
                    return
        _relay_exact(rfile, sock, size + 2)  # data and its CRLF


def _relay_until_eof(rfile, sock: socket.socket) -> None:
    while True:
        data = rfile.read1(CHUNK)
        if not data:
            return
        sock.sendall(data)


SLEEP_OVERSHOOT = 0.00007  # time.sleep on Linux wakes up about this late


def _wait_until(deadline: float) -> None:
    rest = deadline - time.perf_counter() - SLEEP_OVERSHOOT
    if rest > 0:
        time.sleep(rest)


def _nodelay(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LatencyProxy:
    """Forwarders on 127.0.0.1 for every node of the cluster at `endpoint`."""

    def __init__(self, endpoint: str, delay: float = 0.001, listen_host: str = "127.0.0.1") -> None:
        self.upstream_endpoint = endpoint.rstrip("/")
        self.delay = delay
        self.listen_host = listen_host
        self.nodes = smap_nodes(self.upstream_endpoint)
        if not self.nodes:
            raise RuntimeError(f"no nodes in the cluster map of {endpoint}")
        self._listeners: list[socket.socket] = []
        self._map: dict[str, str] = {}  # upstream "host:port" -> our "host:port"
        self._upstream_of: dict[int, tuple[str, int]] = {}  # our port -> upstream address
        self.counts: dict[int, int] = {}  # upstream port -> requests forwarded
        self.rewrites = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        up = urlsplit(self.upstream_endpoint)
        for role, host, port in self.nodes:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((self.listen_host, 0))
            ls.listen(256)
            mine = ls.getsockname()[1]
            self._listeners.append(ls)
            self._upstream_of[mine] = (host, port)
            self.counts[port] = 0
            for h in {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}:
                self._map[f"{h}:{port}"] = f"{self.listen_host}:{mine}"
            threading.Thread(target=self._accept_loop, args=(ls, mine), daemon=True,
                             name=f"latency-proxy-accept-{mine}").start()
        front = self._map.get(f"{up.hostname}:{up.port}")
        if front is None:
            self.stop()
            raise RuntimeError(f"{self.upstream_endpoint} is not a node in its own cluster map")
        self.endpoint = f"http://{front}"
        return self.endpoint

    def stop(self) -> None:
        self._closed = True
        for ls in self._listeners:
            with contextlib.suppress(OSError):
                ls.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def __enter__(self) -> "LatencyProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> dict:
        return {"endpoint": self.endpoint, "upstream": self.upstream_endpoint,
                "delay_ms_each_way": self.delay * 1000, "added_rtt_ms": 2 * self.delay * 1000,
                "ports": {up: ours for up, ours in self._map.items()},
                "requests_by_upstream_port": dict(self.counts), "location_rewrites": self.rewrites}

    # -- forwarding ------------------------------------------------------------------------------

    def _accept_loop(self, ls: socket.socket, mine: int) -> None:
        while not self._closed:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            _nodelay(c)
            threading.Thread(target=self._serve, args=(c, mine), daemon=True,
                             name=f"latency-proxy-conn-{mine}").start()

    def _track(self, s: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(s)

    def _rewrite_location(self, value: bytes) -> bytes:
        try:
            u = urlsplit(value.decode("latin-1"))
        except ValueError:
            return value
        ours = self._map.get(f"{u.hostname}:{u.port}") if u.hostname and u.port else None
        if ours is None:
            return value
        self.rewrites += 1
        return urlunsplit((u.scheme, ours, u.path, u.query, u.fragment)).encode("latin-1")

    def _serve(self, client: socket.socket, mine: int) -> None:
        host, port = self._upstream_of[mine]
        upstream: socket.socket | None = None
        urfile = None
        self._track(client, True)
        client.settimeout(HOP_TIMEOUT)
        crfile = client.makefile("rb", buffering=CHUNK)
        try:
            while not self._closed:
                req = _read_head(crfile)
                if req is None:
                    return
                arrived = time.perf_counter()
                method = req[0].split(b" ", 1)[0].upper()
                if upstream is None:
                    upstream = socket.create_connection((host, port), timeout=HOP_TIMEOUT)
                    _nodelay(upstream)
                    self._track(upstream, True)
                    urfile = upstream.makefile("rb", buffering=CHUNK)
                _wait_until(arrived + self.delay)
                upstream.sendall(b"\r\n".join(req) + b"\r\n\r\n")
                with self._lock:
                    self.counts[port] += 1
                te = (_header(req, b"transfer-encoding") or b"").lower()
                if b"chunked" in te:
                    _relay_chunked(crfile, upstream)
                else:
                    n = int(_header(req, b"content-length") or b"0")
                    _relay_exact(crfile, upstream, n)
                close_after = (_header(req, b"connection") or b"").lower() == b"close"
                while True:  # 1xx interim responses come before the real one
                    resp = _read_head(urfile)
                    if resp is None:
                        raise ProtocolError("upstream closed before answering")
                    arrived = time.perf_counter()
                    parts = resp[0].split(b" ", 2)
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                    if 300 <= status < 400:
                        for i, line in enumerate(resp[1:], 1):
                            k, _, v = line.partition(b":")
                            if k.strip().lower() == b"location":
                                resp[i] = k + b": " + self._rewrite_location(v.strip())
                    _wait_until(arrived + self.delay)
                    client.sendall(b"\r\n".join(resp) + b"\r\n\r\n")
                    if 100 <= status < 200 and status != 101:
                        continue
                    break
                if (_header(resp, b"connection") or b"").lower() == b"close":
                    close_after = True
                if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
                    pass
                elif b"chunked" in (_header(resp, b"transfer-encoding") or b"").lower():
                    _relay_chunked(urfile, client)
                elif _header(resp, b"content-length") is not None:
                    _relay_exact(urfile, client, int(_header(resp, b"content-length")))
                else:
                    _relay_until_eof(urfile, client)
                    return
                if close_after:
                    return
        except (OSError, ProtocolError, ValueError):
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    self._track(s, False)
                    with contextlib.suppress(OSError):
                        s.close()


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
        print(f"AIS_ENDPOINT={proxy.endpoint}", flush=True)
        print(json.dumps(proxy.describe()["ports"]), file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
