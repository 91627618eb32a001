"""HTTP transport: two connection pools, deadlines that really end, retries, request counters.

Why a watchdog: `requests` timeouts bound each socket operation, not the call, so a server that
drips one byte every few seconds (or a paused target whose kernel still accepts connections)
can hold a call forever, and a thread blocked in `recv` cannot be cancelled from trio. Every call
therefore registers the connection it is using; when the call's deadline passes, one watchdog
thread shuts that socket down. The blocked thread wakes with an error, the call raises
DeadlineExceeded, and urllib3 discards the dead connection instead of returning it to the pool.

Metadata calls (list, HEAD) and data calls (GET, GetBatch streams) use separate pools, so a
listing never queues behind long streams.
"""

from __future__ import annotations

import errno
import heapq
import http.client
import json
import itertools
import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from aisbatchfs import __version__
from aisbatchfs.ais.config import ClientConfig
from aisbatchfs.ais.errors import (
    AisError,
    DeadlineExceeded,
    RequestRejected,
    Unavailable,
    error_from_response,
)

_current = threading.local()  # the _Call running on this thread, seen by the connections


class _Call:
    """One client call's deadline and the connection it is using right now."""

    __slots__ = ("deadline", "first_byte_deadline", "limits", "got_first_byte", "expired", "why", "done",
                 "_conn", "_lock")

    def __init__(self, deadline: float, first_byte_deadline: float | None = None,
                 limits: tuple[float, float | None] = (0.0, None)) -> None:
        self.deadline = deadline
        self.first_byte_deadline = first_byte_deadline
        self.limits = limits  # (total, first byte) in seconds, for the messages
        self.got_first_byte = False
        self.expired = False
        self.why = ""
        self.done = False  # finished in time: the watchdog drops it when its deadline comes
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.expired:
                _shutdown(conn)

    def expire(self, why: str) -> None:
        with self._lock:
            if self.done:
                return  # its connection may serve another call by now: never touch it
            self.expired = True
            self.why = why
            if self._conn is not None:
                _shutdown(self._conn)

    def finish(self) -> None:
        """The call is over: from now on its deadline, an abort or the watchdog must leave
        the connection alone (the pool hands it to the next call)."""
        with self._lock:
            self.done = True
            self._conn = None


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread; close() may not
    except OSError:
        pass


class _Watchdog:
    """One daemon thread that expires calls whose deadline has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Call, bool]] = []  # (when, seq, call, first-byte?)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, call: _Call) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call, False))
            if call.first_byte_deadline is not None:
                heapq.heappush(self._heap, (call.first_byte_deadline, next(self._seq), call, True))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ais-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, call, first_byte = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
            if call.done or (first_byte and call.got_first_byte):
                continue
            total, first = call.limits
            call.expire(f"no first byte within {first:g}s" if first_byte
                        else f"no complete answer within the {total:g}s deadline")


_WATCHDOG = _Watchdog()


class Abort:
    """Lets another thread end a call at once (the consumer of a stream went away): the
    call's socket is shut down as if its deadline had passed, so the thread reading it
    returns promptly with DeadlineExceeded("aborted")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._call: _Call | None = None
        self.aborted = False

    def attach(self, call: _Call) -> None:
        with self._lock:
            self._call = call
            if self.aborted:
                call.expire("aborted")

    def __call__(self) -> None:
        with self._lock:
            self.aborted = True
            if self._call is not None:
                self._call.expire("aborted")


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """No adapter-level retries: a GetBatch redirect names a one-shot work item on the target."""

    def __init__(self, pool_size: int) -> None:
        super().__init__(pool_connections=8, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


def _session(cfg: ClientConfig) -> requests.Session:
    s = requests.Session()
    adapter = _WatchedAdapter(cfg.pool_size)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.verify = cfg.verify
    if cfg.cert:
        s.cert = cfg.cert
    s.headers["User-Agent"] = f"{cfg.user_agent}/{__version__}"
    if cfg.token:
        s.headers["Authorization"] = f"Bearer {cfg.token}"
    return s


class Stream:
    """A reply being read: its body in chunks, under the deadline of the call that opened it."""

    def __init__(self, transport: Transport, resp: requests.Response, call: _Call, what: str):
        self.response = resp
        self.headers = resp.headers
        self._transport = transport
        self._call = call
        self._what = what
        self.bytes_read = 0

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body as it arrives: each chunk is what the socket had, up to `size` bytes."""
        raw = self.response.raw
        _current.call = self._call
        try:
            while True:
                try:
                    chunk = raw.read1(size)
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                    raise self._transport._map_exception(e, self._call, self._what) from e
                if not chunk:
                    if self._call.expired:
                        raise DeadlineExceeded(f"{self._call.why} while reading", what=self._what)
                    self._call.finish()  # before urllib3 may hand the connection on
                    return
                self._call.got_first_byte = True
                self.bytes_read += len(chunk)
                self._transport._received(len(chunk))
                yield chunk
        finally:
            _current.call = None

    def read_all(self) -> bytes | bytearray:
        """The whole body. With a Content-Length it is read straight into one buffer: no
        chunk objects to allocate and join (a 32 MiB range read in 1 MiB chunks costs as much
        CPU again in copies and page faults as the network reads themselves)."""
        hr = getattr(self.response.raw, "_fp", None)  # the http.client response under urllib3's
        declared = self.headers.get("Content-Length")
        if (not isinstance(hr, http.client.HTTPResponse) or declared is None or hr.chunked
                or self.headers.get("Content-Encoding") or hr.length != int(declared)):
            return b"".join(self.chunks())
        buf = bytearray(int(declared))
        view = memoryview(buf)
        pos = 0
        _current.call = self._call
        try:
            while pos < len(buf):
                try:
                    n = hr.readinto(view[pos:])
                except (http.client.HTTPException, OSError) as e:
                    raise self._transport._map_exception(e, self._call, self._what) from e
                if not n:
                    if self._call.expired:
                        raise DeadlineExceeded(f"{self._call.why} while reading", what=self._what)
                    raise Unavailable(f"connection closed after {pos} of {len(buf)} bytes",
                                      what=self._what)
                self._call.got_first_byte = True
                pos += n
                self.bytes_read += n
                self._transport._received(n)
        finally:
            _current.call = None
        if hr.isclosed():  # http.client read it all: the connection can serve another request
            self._call.finish()
            self.response.raw.release_conn()
        return buf

    def close(self) -> None:
        self._call.finish()
        self.response.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ERRNO_WORDS = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset",
                errno.ETIMEDOUT: "connection timed out", errno.EHOSTUNREACH: "host unreachable",
                errno.ENETUNREACH: "network unreachable", errno.EPIPE: "connection closed"}


def describe_failure(e: BaseException) -> str:
    """One short cause for a failed exchange ("cannot reach 10.0.0.1:8080: connection
    refused"), not the nested reprs of requests and urllib3."""
    seen: set[int] = set()
    where = ""
    cur: BaseException | None = e
    root: BaseException = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        root = cur
        peer = (cur.pool if isinstance(cur, urllib3.exceptions.MaxRetryError)
                else getattr(cur, "conn", None))
        if not where and getattr(peer, "host", None):
            where = f"{peer.host}:{peer.port}" if getattr(peer, "port", None) else peer.host
        nxt = getattr(cur, "reason", None) if isinstance(cur, urllib3.exceptions.MaxRetryError) else None
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        cur = nxt or cur.__cause__ or cur.__context__
    if isinstance(root, socket.gaierror):
        why = f"unknown host ({root.strerror})"
    elif isinstance(root, ssl.SSLError):
        why = f"TLS: {getattr(root, 'verify_message', '') or root.reason or root}"
    elif isinstance(root, OSError) and root.errno in _ERRNO_WORDS:
        why = _ERRNO_WORDS[root.errno]
    elif isinstance(root, OSError) and root.strerror:
        why = root.strerror.lower()
    elif isinstance(root, (http.client.IncompleteRead, urllib3.exceptions.ProtocolError)):
        why = "connection closed mid-reply"
    else:
        why = f"{type(root).__name__}: {root}"
    return f"cannot reach {where}: {why}" if where else why


class Transport:
    """Owns the sessions and the counters; every HTTP request of the client goes through here."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.base = cfg.endpoint.rstrip("/") + "/v1/"
        self._pools = {"meta": _session(cfg), "data": _session(cfg)}
        # where a fresh token comes from when the cluster answers 401 (e.g. a token file)
        self.token_source: Callable[[], str | None] | None = None
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # logical calls by kind (list, head, get, moss...)
        self.http_requests = 0  # every HTTP exchange, redirect hops included
        self.bytes_received = 0  # reply bodies read by callers

    def set_token(self, token: str | None) -> None:
        for session in self._pools.values():
            if token:
                session.headers["Authorization"] = f"Bearer {token}"
            else:
                session.headers.pop("Authorization", None)

    def _refreshed_token(self) -> bool:
        """On 401: take the token source's current token if it changed; True if it did."""
        if self.token_source is None:
            return False
        token = self.token_source()
        current = self._pools["meta"].headers.get("Authorization", "")
        if not token or current == f"Bearer {token}":
            return False
        self.set_token(token)
        return True

    def url(self, *parts: str) -> str:
        """URL of an API path. Refuses `.`/`..` components: HTTP libraries resolve them on the
        client side (`a/../b` would silently become `b`), and AIStore forbids them anyway."""
        for part in parts:
            if any(c in (".", "..") for c in part.split("/")):
                raise RequestRejected(f"name {part!r} has a '.' or '..' component", what=part)
        return self.base + "/".join(quote(p, safe="/") for p in parts)

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = {f"calls_{k}": v for k, v in self.calls.items()}
            out["http_requests"] = self.http_requests
            out["bytes_received"] = self.bytes_received
            return out

    def _received(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n

    def _count(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.http_requests += 1

    def _map_exception(self, e: BaseException, call: _Call, what: str) -> AisError:
        if call.expired or isinstance(e, requests.Timeout):
            why = call.why or "no complete answer in time"
            return DeadlineExceeded(f"{why} ({type(e).__name__})", what=what)
        return Unavailable(describe_failure(e), what=what)

    def request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        pool: str = "meta",
        timeout: float | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        first_byte_timeout: float | None = None,
        what: str = "",
        abort: Abort | None = None,
    ) -> Stream:
        """Send one request (following redirects) and return its reply as a Stream.

        `timeout` is the call's total deadline in seconds (default: the metadata or read deadline
        for the pool). Retries happen only for `retry=True` calls, on 429, 5xx and connection
        errors and transient states (AisError.transient), with jittered exponential backoff,
        for as long as the deadline allows. With
        `first_byte_timeout`, the call also fails unless the first byte of the body arrives
        that soon (GetBatch sends its 200 at once, then waits to assemble). The caller must
        close the Stream (it is a context manager).
        """
        d = self.cfg.deadlines
        total = timeout if timeout is not None else (d.metadata if pool == "meta" else d.read)
        deadline = time.monotonic() + total
        session = self._pools[pool]
        hdrs = dict(headers or {})
        data = body
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        with self._lock:
            self.calls[kind] += 1
        attempt = 0
        while True:
            first = time.monotonic() + first_byte_timeout if first_byte_timeout else None
            call = _Call(deadline, first if first is not None and first < deadline else None,
                         (total, first_byte_timeout))
            if abort is not None:
                abort.attach(call)
            _WATCHDOG.arm(call)
            _current.call = call
            try:
                remaining = max(call.remaining(), 0.001)
                resp = session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=hdrs,
                    stream=True,
                    allow_redirects=True,
                    timeout=(min(d.connect, remaining), min(d.idle, remaining)),
                    hooks={"response": self._count},
                )
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                call.finish()
                err = self._map_exception(e, call, what)
            else:
                if resp.status_code in ok:
                    return Stream(self, resp, call, what)
                try:
                    err_body = resp.content if method != "HEAD" else None
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                    err_body = f"(error body unreadable: {e})".encode()
                finally:
                    call.finish()
                    resp.close()
                err = error_from_response(resp.status_code, err_body, resp.headers, what)
            finally:
                _current.call = None
            if err.status == 401 and attempt == 0 and self._refreshed_token():
                attempt += 1
                continue
            if not (retry and err.transient) or (abort is not None and abort.aborted):
                raise err
            cfg = self.cfg
            backoff = random.uniform(0.5, 1.0) * min(cfg.max_backoff, cfg.backoff * 2**attempt)
            if time.monotonic() + backoff >= deadline:
                raise DeadlineExceeded(
                    f"deadline of {total:g}s passed after {attempt + 1} attempts; last: {err}",
                    what=what,
                ) from err
            attempt += 1
            time.sleep(backoff)
