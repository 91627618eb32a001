#!/usr/bin/env python3
"""A loopback HTTP proxy in front of a whole AIStore cluster that delays and breaks replies on cue.

    fault_proxy.py serve ENDPOINT [--delay-ms 0] [--control-port P] [--rule JSON]...
        print the proxied endpoint (and the control URL), run until ^C

Why one port per node: AIStore answers a GET at the proxy with a 301 (GetBatch and HEAD with a
307) to a target's public URL, so a proxy in front of the AIStore proxy alone would see only
the first hop. This one listens once per node of the cluster map (`GET /v1/daemon?what=smap`)
and rewrites every redirect's `Location` that names a node to the matching listening port, so
the hops to targets come back through it too, and faults can be aimed at either hop.

Forwarding is HTTP/1.1-aware: a thread per client connection keeps one upstream connection,
reads a request head, picks the fault rule that fires on it (if any), forwards the request
(Content-Length or chunked body), reads the response head, rewrites Location, forwards the head
and streams the body (Content-Length, chunked, or until close). `delay` seconds are waited
before each request and each response head goes out, so every round trip is 2 x delay longer
(scripts/latency_proxy.py is this proxy with a delay and no rules). Both sockets have
TCP_NODELAY, so the proxy adds no Nagle/delayed-ACK stalls of its own.

Faults are Rules (matcher, how often, one action), added and removed while traffic flows; the
first rule in order that fires on a request decides its fate. `status` and `drop` never reach
the cluster; `stall` holds the cluster's answer before its head; the body faults count body
bytes (chunked bodies are re-framed as they pass, so a cut lands exactly at byte N, after a
whole chunk of its own). Stalls wait on an Event, so stop() ends them at once. An optional
control port serves a small JSON API (POST/GET/DELETE /rules, GET /stats) for when the proxy
runs as a process of its own.

Standard library only.

    with FaultProxy("http://127.0.0.1:8080") as p:
        rule = p.add(Rule(method="GET", path="^/v1/objects/", status=429, times=2))
        ...                     # give p.endpoint to a client
        rule.fired, p.requests, p.statuses
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

CHUNK = 256 * 1024
HOP_TIMEOUT = 600.0  # seconds a forwarder waits on one socket operation
SLEEP_OVERSHOOT = 0.00007  # time.sleep on Linux wakes up about this late
STOP_JOIN = 5.0  # seconds stop() waits for all forwarding threads together
NODE_ROLES = ("proxy", "target")


class ProtocolError(Exception):
    """A peer broke HTTP/1.1 framing: its connection is dropped."""


class _Cut(Exception):
    """A fault (or stop()) ends the exchange here: close the client connection cleanly."""


class _Reset(Exception):
    """A fault ends the exchange here: reset the client connection (RST)."""


# -- rules -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Rule:
    """One fault: which requests it matches, how often it fires, and what it does.

    Matcher: `method` (None: any), `path` and `query` regexes searched in the request's path
    and query string as sent, `node` "proxy" or "target" (None: any); GET, HEAD and GetBatch
    reach a target through a redirect from the proxy. How often: of the matches after the
    first `after`, each fires with `probability` (from random.Random(seed): the same seed fires
    on the same matches), at most `times` times (None: no limit), then the rule is spent.
    Action: one of `status` (answered here with AIStore's JSON error body: `message`, `tcode`,
    optional Retry-After), `reset_after` (RST after N body bytes), `cut_after` (clean close
    after N body bytes; a chunked body goes without its last chunk, or with it if `end_chunked`:
    a short but well-formed reply, which is what aisnode sends when a GetBatch fails after its
    200), `stall_after` ((N, seconds): pause after N body bytes, then go on), `drop` (close
    without answering); `stall` seconds before the response head may come with any of them, or
    alone.
    """

    method: str | None = None
    path: str | None = None
    node: str | None = None
    query: str | None = None
    times: int | None = None
    probability: float | None = None
    seed: int = 0
    after: int = 0
    status: int | None = None
    message: str = ""
    tcode: str = ""
    retry_after: int | None = None
    stall: float = 0.0
    reset_after: int | None = None
    cut_after: int | None = None
    end_chunked: bool = False
    stall_after: tuple[int, float] | None = None
    drop: bool = False
    id: int = field(default=0, init=False)  # given by FaultProxy.add
    matched: int = field(default=0, init=False)  # matching requests seen (spent or not)
    fired: int = field(default=0, init=False)  # requests the action was applied to

    def __post_init__(self) -> None:
        self.method = self.method.upper() if self.method else None
        if self.node not in (None, *NODE_ROLES):
            raise ValueError(f"node must be one of {NODE_ROLES} or None, not {self.node!r}")
        if self.stall_after is not None:
            n, s = self.stall_after
            self.stall_after = (int(n), float(s))
        actions = [a for a in ("status", "reset_after", "cut_after", "stall_after")
                   if getattr(self, a) is not None] + (["drop"] if self.drop else [])
        if len(actions) > 1 or not (actions or self.stall):
            raise ValueError(f"a rule needs one action (status, reset_after, cut_after, "
                             f"stall_after, drop) and/or stall; got {actions or 'none'}")
        if self.end_chunked and self.cut_after is None:
            raise ValueError("end_chunked goes with cut_after")
        if self.probability is not None and not 0 <= self.probability <= 1:
            raise ValueError(f"probability {self.probability} is not in [0, 1]")
        self._path = re.compile(self.path) if self.path else None
        self._query = re.compile(self.query) if self.query else None
        self._rng = random.Random(self.seed)

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def body_fault(self) -> tuple[int, str, float] | None:
        """(byte position, "reset"/"cut"/"end"/"stall", stall seconds) of the body action."""
        if self.reset_after is not None:
            return self.reset_after, "reset", 0.0
        if self.cut_after is not None:
            return self.cut_after, "end" if self.end_chunked else "cut", 0.0
        if self.stall_after is not None:
            return self.stall_after[0], "stall", self.stall_after[1]
        return None

    def _fires(self, role: str, method: str, path: str, query: str) -> bool:
        """Whether the rule takes this request; counts it. Called under the proxy's lock."""
        if ((self.method and self.method != method) or (self.node and self.node != role)
                or (self._path and not self._path.search(path))
                or (self._query and not self._query.search(query))):
            return False
        self.matched += 1
        if self.spent or self.matched <= self.after:
            return False
        if self.probability is not None and self._rng.random() >= self.probability:
            return False
        self.fired += 1
        return True

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, doc: dict) -> Rule:
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown rule fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**doc)


# -- HTTP/1.1 framing ------------------------------------------------------------------------------


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


def _path_kind(path: str) -> str:
    """The API a path belongs to: objects, buckets, moss (GetBatch), daemon, cluster..."""
    parts = path.split("/", 4)
    if len(parts) < 3 or parts[1] != "v1":
        return "other"
    return parts[3] if parts[2] == "ml" and len(parts) > 3 else parts[2]


class _BodyOut:
    """One message body on its way out: payload bytes counted (chunked bodies re-framed), and a
    body fault applied once `at` bytes have gone out."""

    def __init__(self, send: Callable[[bytes], None], chunked: bool,
                 fault: tuple[int, str, float] | None = None,
                 pause: Callable[[float], bool] = lambda s: True) -> None:
        self.send = send
        self.chunked = chunked
        self.at, self.fault, self.stall = fault if fault else (None, "", 0.0)
        self.pause = pause
        self.sent = 0
        self._check()  # a fault at byte 0 fires right after the head

    def write(self, data: bytes) -> None:
        while data:
            n = len(data) if self.at is None else min(len(data), self.at - self.sent)
            piece, data = data[:n], data[n:]
            self.send(b"%x\r\n%b\r\n" % (n, piece) if self.chunked else piece)
            self.sent += n
            self._check()

    def end(self, trailers: bytes = b"\r\n") -> None:
        """The last chunk of a chunked body, with the trailers and the empty line."""
        self.send(b"0\r\n" + trailers)

    def _check(self) -> None:
        if self.at is None or self.sent < self.at:
            return
        self.at = None  # fires once
        if self.fault == "reset":
            raise _Reset
        if self.fault == "end" and self.chunked:
            self.end()
        if self.fault in ("cut", "end") or not self.pause(self.stall):
            raise _Cut


def _relay_exact(rfile, write: Callable[[bytes], None], n: int) -> None:
    while n > 0:
        data = rfile.read(min(n, CHUNK))
        if not data:
            raise ProtocolError("connection closed inside a body")
        write(data)
        n -= len(data)


def _relay_chunked(rfile, out: _BodyOut) -> None:
    while True:
        size_line = rfile.readline(1024)
        if not size_line:
            raise ProtocolError("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            trailers = []
            while True:  # trailers, then the empty line
                t = rfile.readline(65537)
                if not t:
                    raise ProtocolError("connection closed inside chunked trailers")
                trailers.append(t)
                if t in (b"\r\n", b"\n"):
                    out.end(b"".join(trailers))
                    return
        _relay_exact(rfile, out.write, size)
        if rfile.readline(3).strip():
            raise ProtocolError("chunk data not followed by CRLF")


def _relay_until_eof(rfile, write: Callable[[bytes], None]) -> None:
    while True:
        data = rfile.read1(CHUNK)
        if not data:
            return
        write(data)


def _relay_body(rfile, head: list[bytes], out: _BodyOut) -> None:
    """A request body, or a response body framed by its length or chunking."""
    if out.chunked:
        _relay_chunked(rfile, out)
    else:
        _relay_exact(rfile, out.write, int(_header(head, b"content-length") or b"0"))


def _is_chunked(head: list[bytes]) -> bool:
    return b"chunked" in (_header(head, b"transfer-encoding") or b"").lower()


def _wait_until(deadline: float) -> None:
    rest = deadline - time.perf_counter() - SLEEP_OVERSHOOT
    if rest > 0:
        time.sleep(rest)


def _nodelay(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _error_reply(method: str, rule: Rule, close: bool) -> bytes:
    """An AIStore-style error reply: JSON body (in Hdr-Error for HEAD, which has no body)."""
    status = rule.status or 500
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    doc: dict = {"message": rule.message or f"{phrase} (injected by fault_proxy)"}
    if rule.tcode:
        doc["tcode"] = rule.tcode
    doc["status"] = status
    body = json.dumps(doc).encode()
    head = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}"]
    if rule.retry_after is not None:
        head.append(f"Retry-After: {rule.retry_after}")
    if close:
        head.append("Connection: close")
    if method == "HEAD":
        head.append("Hdr-Error: " + body.decode())
        body = b""
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


# -- the proxy -------------------------------------------------------------------------------------


class FaultProxy:
    """Forwarders on `listen_host` for every node of the cluster at `endpoint`, with fault rules."""

    def __init__(self, endpoint: str, delay: float = 0.0, listen_host: str = "127.0.0.1",
                 control_port: int | None = None) -> None:
        self.upstream_endpoint = endpoint.rstrip("/")
        self.delay = delay
        self.listen_host = listen_host
        self.control_port = control_port  # None: no control API; 0: any free port
        self.nodes = smap_nodes(self.upstream_endpoint)
        if not self.nodes:
            raise RuntimeError(f"no nodes in the cluster map of {endpoint}")
        self.endpoint = ""
        self.control_url = ""
        self.counts: dict[int, int] = {}  # upstream port -> requests received for that node
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (node role, method, kind)
        self.statuses: Counter[int] = Counter()  # final statuses sent, relayed or injected
        self.rewrites = 0
        self._rules: list[Rule] = []
        self._ids = itertools.count(1)
        self._listeners: list[socket.socket] = []
        self._map: dict[str, str] = {}  # upstream "host:port" -> our "host:port"
        self._node_of: dict[int, tuple[str, str, int]] = {}  # our port -> (role, host, port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._control: ThreadingHTTPServer | None = None

    # -- rules -----------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        """Append a rule (it applies to requests whose head arrives from now on)."""
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule | int) -> bool:
        """Remove a rule, or the rule with that id; False if it was not there."""
        with self._lock:
            for r in self._rules:
                if r is rule or r.id == rule:
                    self._rules.remove(r)
                    return True
        return False

    def clear(self) -> int:
        """Remove every rule; returns how many there were."""
        with self._lock:
            n = len(self._rules)
            self._rules.clear()
        return n

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def _take(self, role: str, port: int, method: str, path: str, query: str) -> Rule | None:
        """Count a request and return the first rule that fires on it."""
        with self._lock:
            self.counts[port] += 1
            self.requests[(role, method, _path_kind(path))] += 1
            for rule in self._rules:
                if rule._fires(role, method, path, query):
                    return rule
        return None

    def _sent(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds`; False if the proxy is stopping meanwhile."""
        return not self._stopping.wait(seconds)

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
            self._node_of[mine] = (role, host, port)
            self.counts[port] = 0
            for h in {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}:
                self._map[f"{h}:{port}"] = f"{self.listen_host}:{mine}"
            self._spawn(self._accept_loop, ls, mine, name=f"fault-proxy-accept-{mine}")
        front = self._map.get(f"{up.hostname}:{up.port}")
        if front is None:
            self.stop()
            raise RuntimeError(f"{self.upstream_endpoint} is not a node in its own cluster map")
        self.endpoint = f"http://{front}"
        if self.control_port is not None:
            self._control = ThreadingHTTPServer((self.listen_host, self.control_port),
                                                _control_handler(self))
            self._control.daemon_threads = True
            self.control_url = f"http://{self.listen_host}:{self._control.server_address[1]}"
            self._spawn(self._control.serve_forever, 0.1, name="fault-proxy-control")
        return self.endpoint

    def stop(self) -> None:
        """Close every port and connection; stalled exchanges end at once. Waits for the threads."""
        self._stopping.set()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        for ls in self._listeners:
            with contextlib.suppress(OSError):
                ls.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            with contextlib.suppress(OSError):
                ls.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + STOP_JOIN
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(end - time.monotonic(), 0))

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict:
        return {"endpoint": self.endpoint, "upstream": self.upstream_endpoint,
                "delay_ms_each_way": self.delay * 1000, "added_rtt_ms": 2 * self.delay * 1000,
                "ports": dict(self._map),
                "requests_by_upstream_port": dict(self.counts), "location_rewrites": self.rewrites}

    def stats(self) -> dict:
        """describe(), the request and status counters, and every rule with its counts."""
        with self._lock:
            requests = {" ".join(k): v for k, v in sorted(self.requests.items())}
            statuses = {str(k): v for k, v in sorted(self.statuses.items())}
            rules = [r.to_json() for r in self._rules]
        return dict(self.describe(), requests=requests, statuses=statuses, rules=rules)

    # -- forwarding ------------------------------------------------------------------------------

    def _spawn(self, fn: Callable, *args: object, name: str) -> None:
        def run() -> None:
            try:
                fn(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        t = threading.Thread(target=run, daemon=True, name=name)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _accept_loop(self, ls: socket.socket, mine: int) -> None:
        while not self._stopping.is_set():
            try:
                c, _ = ls.accept()
            except OSError:
                return
            _nodelay(c)
            self._spawn(self._serve, c, mine, name=f"fault-proxy-conn-{mine}")

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.add(s)
        if self._stopping.is_set():  # stop() may have taken its list already
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _rewrite_location(self, value: bytes) -> bytes:
        try:
            u = urlsplit(value.decode("latin-1"))
        except ValueError:
            return value
        ours = self._map.get(f"{u.hostname}:{u.port}") if u.hostname and u.port else None
        if ours is None:
            return value
        with self._lock:
            self.rewrites += 1
        return urlunsplit((u.scheme, ours, u.path, u.query, u.fragment)).encode("latin-1")

    def _serve(self, client: socket.socket, mine: int) -> None:
        role, host, port = self._node_of[mine]
        upstream: socket.socket | None = None
        urfile = None
        self._track(client)
        client.settimeout(HOP_TIMEOUT)
        crfile = client.makefile("rb", buffering=CHUNK)
        try:
            while not self._stopping.is_set():
                req = _read_head(crfile)
                if req is None:
                    return
                arrived = time.perf_counter()
                method_b, target = (req[0].split(b" ") + [b""])[:2]
                method = method_b.decode("latin-1").upper()
                path, _, query = target.decode("latin-1").partition("?")
                close_after = (_header(req, b"connection") or b"").lower() == b"close"
                rule = self._take(role, port, method, path, query)
                if rule is not None and (rule.drop or rule.status is not None):
                    expects = (_header(req, b"expect") or b"").lower() == b"100-continue"
                    if not expects:  # read and drop the body: the connection stays usable
                        _relay_body(crfile, req, _BodyOut(lambda b: None, _is_chunked(req)))
                    if rule.stall and not self._pause(rule.stall):
                        return
                    if rule.drop:
                        return
                    self._sent(rule.status)
                    client.sendall(_error_reply(method, rule, close_after or expects))
                    if close_after or expects:
                        return
                    continue
                if upstream is None:
                    upstream = socket.create_connection((host, port), timeout=HOP_TIMEOUT)
                    _nodelay(upstream)
                    self._track(upstream)
                    urfile = upstream.makefile("rb", buffering=CHUNK)
                _wait_until(arrived + self.delay)
                upstream.sendall(b"\r\n".join(req) + b"\r\n\r\n")
                _relay_body(crfile, req, _BodyOut(upstream.sendall, _is_chunked(req)))
                while True:  # 1xx interim responses come before the real one
                    resp = _read_head(urfile)
                    if resp is None:
                        raise ProtocolError("upstream closed before answering")
                    arrived = time.perf_counter()
                    parts = resp[0].split(b" ", 2)
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                    interim = 100 <= status < 200 and status != 101
                    if 300 <= status < 400:
                        for i, line in enumerate(resp[1:], 1):
                            k, _, v = line.partition(b":")
                            if k.strip().lower() == b"location":
                                resp[i] = k + b": " + self._rewrite_location(v.strip())
                    _wait_until(arrived + self.delay)
                    if not interim and rule is not None and rule.stall and not self._pause(rule.stall):
                        return
                    if not interim:
                        self._sent(status)  # before the client can see it: counts are exact
                    client.sendall(b"\r\n".join(resp) + b"\r\n\r\n")
                    if not interim:
                        break
                if (_header(resp, b"connection") or b"").lower() == b"close":
                    close_after = True
                out = _BodyOut(client.sendall, _is_chunked(resp),
                               rule.body_fault() if rule is not None else None, self._pause)
                if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                    pass
                elif out.chunked or _header(resp, b"content-length") is not None:
                    _relay_body(urfile, resp, out)
                else:
                    _relay_until_eof(urfile, out.write)
                    return
                if close_after:
                    return
        except _Reset:
            with contextlib.suppress(OSError):  # close() then sends RST, not FIN
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ProtocolError, ValueError, _Cut):
            return
        finally:
            for f in (crfile, urfile):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()  # a socket's fd closes only once its file objects are closed
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._conns.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()


# -- control API -----------------------------------------------------------------------------------


def _control_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    """POST /rules (a rule as JSON), GET /rules, DELETE /rules[/ID], GET /stats."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, code: int, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._reply(200, proxy.stats())
            elif self.path == "/rules":
                self._reply(200, [r.to_json() for r in proxy.rules])
            else:
                self._reply(404, {"message": f"no {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/rules":
                self._reply(404, {"message": f"no {self.path}"})
                return
            try:
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                rule = proxy.add(Rule.from_json(doc))
            except (ValueError, TypeError, re.error) as e:
                self._reply(400, {"message": f"bad rule: {e}"})
                return
            self._reply(201, rule.to_json())

        def do_DELETE(self) -> None:
            if self.path == "/rules":
                self._reply(200, {"removed": proxy.clear()})
            elif self.path.startswith("/rules/") and self.path[7:].isdigit():
                found = proxy.remove(int(self.path[7:]))
                self._reply(200 if found else 404, {"removed": int(found)})
            else:
                self._reply(404, {"message": f"no {self.path}"})

    return Handler


def serve_until_interrupted(proxy: FaultProxy) -> None:
    """Print the proxied endpoint (and control URL) on stdout, the port map on stderr; wait for ^C."""
    print(f"AIS_ENDPOINT={proxy.endpoint}", flush=True)
    if proxy.control_url:
        print(f"FAULT_PROXY_CONTROL={proxy.control_url}", flush=True)
    print(json.dumps(proxy.describe()["ports"]), file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=["serve"])
    p.add_argument("endpoint", help="AIStore endpoint, e.g. http://127.0.0.1:8080")
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="delay of each request and of each response (default 0)")
    p.add_argument("--control-port", type=int, default=None,
                   help="serve the JSON control API on this port (0: any free port)")
    p.add_argument("--rule", action="append", default=[], metavar="JSON",
                   help='a rule to start with, e.g. \'{"path": "^/v1/ml/moss", "status": 429}\'')
    a = p.parse_args()
    rules = [Rule.from_json(json.loads(r)) for r in a.rule]
    with FaultProxy(a.endpoint, a.delay_ms / 1000, control_port=a.control_port) as proxy:
        for rule in rules:
            proxy.add(rule)
        serve_until_interrupted(proxy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
