"""HTTP transport: two connection pools, deadlines that really end, retries, request counters.

Why a watchdog: `requests` timeouts bound each socket operation, not the call, so a server that
drips one byte every few seconds (or a paused target whose kernel still accepts connections)
can hold a call forever, and a thread blocked in `recv` cannot be cancelled from trio. Every call
therefore registers the connection it is using; when the call's deadline passes, one watchdog
thread shuts that socket down. The blocked thread wakes with an error, the call raises
DeadlineExceeded, and urllib3 discards the dead connection instead of returning it to the pool.

Metadata calls (list, HEAD) and data calls (GET, GetBatch streams) use separate pools, so a
listing never queues behind long streams.

Tokens: the token goes on each request (it changes while in use). With a token source
(the daemon's token_file), a token is re-read shortly before the `exp` its JWT payload names
(read without verifying: only the cluster can), and again when the cluster answers 401; one
request is retried with a new token. A token never appears in an error message: AIStore's 401
replies can quote it, and those messages end up in logs.
"""

from __future__ import annotations

import base64
import errno
import heapq
import http.client
import json
import itertools
import logging
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri, resolve_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection

from aisbatchfs import __version__
from aisbatchfs.ais.chunked import ChunkedError, Dechunker
from aisbatchfs.ais.config import ClientConfig
from aisbatchfs.ais.errors import (
    AccessDenied,
    AisError,
    DeadlineExceeded,
    ProtocolError,
    RequestRejected,
    Throttled,
    Unavailable,
    error_from_response,
)

log = logging.getLogger("aisbatchfs.ais")

_current = threading.local()  # the _Call running on this thread, seen by the connections


class TLSFailure(Unavailable):
    """A TLS failure that retrying cannot fix: the cluster's certificate does not verify, the
    cluster refused our certificate (or asked for one we do not have), or a certificate file
    is missing."""

    @property
    def transient(self) -> bool:
        return False


# A token is re-read from its source this long before it expires: a tenth of its lifetime,
# between 1 and 60 seconds; while due, at most once per TOKEN_RELOAD_INTERVAL seconds.
TOKEN_MARGIN = (1.0, 60.0)
TOKEN_RELOAD_INTERVAL = 1.0
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def token_times(token: str | None) -> tuple[float | None, float | None]:
    """(iat, exp) from a JWT's payload, unverified; None for what it does not say (or for a
    token that is not a JWT)."""
    try:
        payload = token.split(".")[1]  # type: ignore[union-attr]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (AttributeError, IndexError, ValueError, TypeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None

    def number(key: str) -> float | None:
        v = claims.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return number("iat"), number("exp")


def scrub_tokens(text: str, *tokens: str | None) -> str:
    """`text` without the given tokens or anything shaped like a JWT."""
    for t in tokens:
        if t:
            text = text.replace(t, "<token>")
    return _JWT.sub("<token>", text)


_unverified_warned = False


def _unverified_tls(endpoint: str) -> None:
    """skip_verify: one log line per process instead of urllib3's warning on every request."""
    global _unverified_warned
    warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    if not _unverified_warned:
        _unverified_warned = True
        log.warning("TLS certificate verification is off (skip_verify): nothing proves that "
                    "%s is the cluster, and whoever is in between can read and change the data",
                    endpoint)


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


# A redirect to a target is one hop; more than this many in one call is a loop.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


def _env_verify(verify: bool | str) -> bool | str:
    """What `requests.Session.request` would verify with: a CA bundle named by
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replaces the default trust store (`True`) only; an
    explicit bundle or `False` stands."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


def _strip_auth(old: str, new: str) -> bool:
    """Does a redirect from `old` to `new` leave the origin (scheme, host or port)? Then the
    token stays behind, as `requests` does (stricter: an http-to-https upgrade drops it too).
    A target never needs it: it trusts the proxy's redirect markers (docs/ais-wire.md 1.4)."""
    a, b = urlsplit(old), urlsplit(new)
    return (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port)


def _redirected(prep: requests.PreparedRequest, resp: requests.Response) -> requests.PreparedRequest:
    """The request to send where `resp` (a redirect) points, by the rules `requests` follows:
    303, and 302 or 301 after POST, become a GET without body; 307 and 308 keep method and
    body; the token does not leave the origin."""
    location = resp.headers["Location"].encode("latin1").decode("utf8", "surrogateescape")
    url = urljoin(prep.url or "", requote_uri(location))
    nxt = requests.PreparedRequest()
    nxt.method, nxt.url, nxt.body = prep.method, url, prep.body
    nxt.headers = CaseInsensitiveDict(prep.headers)
    status = resp.status_code
    if prep.method != "HEAD" and (status in (302, 303) or (status == 301 and prep.method == "POST")):
        nxt.method = "GET"
    if status not in (307, 308):
        nxt.body = None
        for h in ("Content-Length", "Content-Type", "Transfer-Encoding"):
            nxt.headers.pop(h, None)
    if "Authorization" in nxt.headers and _strip_auth(prep.url or "", url):
        del nxt.headers["Authorization"]
    return nxt


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
        hr = getattr(self.response.raw, "_fp", None)  # the http.client response under urllib3's
        if (isinstance(hr, http.client.HTTPResponse) and hr.chunked and hr.fp is not None
                and hr.chunk_left is None and not self.headers.get("Content-Encoding")):
            yield from self._dechunked(hr, size)
            return
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

    def _dechunked(self, hr: http.client.HTTPResponse, size: int) -> Iterator[bytes]:
        """A chunked body, read `size` bytes at a time from the socket and decoded here (see
        chunked.py: far fewer reads than http.client's one per chunk)."""
        dechunker = Dechunker()
        _current.call = self._call
        try:
            while not dechunker.done:
                try:
                    data = hr.fp.read1(size)
                    if not data:
                        raise http.client.IncompleteRead(b"")
                    payload = dechunker.feed(data)
                except (http.client.HTTPException, OSError, ChunkedError) as e:
                    if isinstance(e, ChunkedError):
                        e = http.client.IncompleteRead(b"", str(e))  # type: ignore[assignment]
                    raise self._transport._map_exception(e, self._call, self._what) from e
                if payload:
                    self._call.got_first_byte = True
                    self.bytes_read += len(payload)
                    self._transport._received(len(payload))
                    yield payload
        finally:
            _current.call = None
        self._call.finish()  # before urllib3 may hand the connection on
        hr.close()  # as http.client does at the end of a chunked body: the connection is free
        self.response.raw.release_conn()

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


def _ssl_text(e: ssl.SSLError) -> str:
    """'tlsv13 alert certificate required' from '[SSL: ...] tlsv13 alert certificate required
    (_ssl.c:2580)'."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message or e.reason}"
    text = str(e.args[1] if len(e.args) > 1 else e)
    text = re.sub(r"^\[[^]]*\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or str(e.reason or e)


# what a server or our own files say that no retry changes (other SSL errors, e.g. an EOF
# while a node restarts, are retried like any broken connection)
_PERMANENT_SSL = re.compile(r"CERTIFICATE|UNKNOWN_CA|WRONG_VERSION_NUMBER|NO_SHARED_CIPHER|"
                            r"UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION|HANDSHAKE_FAILURE")


def _chain(e: BaseException) -> Iterator[BaseException]:
    """`e` and its causes, outermost first, through requests' and urllib3's wrappers."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        nxt = getattr(cur, "reason", None) if isinstance(cur, urllib3.exceptions.MaxRetryError) else None
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        if nxt is None and len(cur.args) > 1 and isinstance(cur.args[1], BaseException):
            nxt = cur.args[1]  # urllib3's ProtocolError("Connection aborted.", SSLError(...))
        cur = nxt or cur.__cause__ or cur.__context__


def tls_problem(e: BaseException) -> bool:
    """Does `e` come from TLS in a way that retrying cannot fix?"""
    for cur in _chain(e):
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        if isinstance(cur, ssl.SSLError) and _PERMANENT_SSL.search(str(cur.reason or cur)):
            return True
        if type(cur) is OSError and str(cur).startswith("Could not find"):
            return True  # requests: a CA bundle, client certificate or key file is missing
    return False


def tls_verdict(url: str, cert: tuple[str, str] | None, timeout: float) -> ssl.SSLError | None:
    """What the TLS server at `url` says of our client certificate (or of its absence) once
    the handshake is done: the alert it sends when it refuses one. A client busy sending its
    request often never reads that alert (the server's close resets the connection first, and
    the client sees an EOF), so a failed request asks again, sending nothing. None when the
    server says nothing within `timeout`."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's own certificate is checked by the request
    try:
        if cert:
            ctx.load_cert_chain(*cert)
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=parts.hostname) as conn:
                conn.recv(1)
    except ssl.SSLError as e:
        return e if "ALERT" in str(e.reason or "") else None
    except OSError:
        pass
    return None


def describe_failure(e: BaseException) -> str:
    """One short cause for a failed exchange ("cannot reach 10.0.0.1:8080: connection
    refused"), not the nested reprs of requests and urllib3."""
    where = ""
    root: BaseException = e
    for cur in _chain(e):
        root = cur
        peer = (cur.pool if isinstance(cur, urllib3.exceptions.MaxRetryError)
                else getattr(cur, "conn", None))
        if not where and getattr(peer, "host", None):
            where = f"{peer.host}:{peer.port}" if getattr(peer, "port", None) else peer.host
    if isinstance(root, socket.gaierror):
        why = f"unknown host ({root.strerror})"
    elif isinstance(root, ssl.SSLError):
        why = f"TLS: {_ssl_text(root)}"
    elif type(root) is OSError and str(root).startswith("Could not find"):
        why = f"TLS: {root}"  # requests names the missing certificate, key or CA file
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
    """Owns the connection pools and the counters; every HTTP request of the client goes
    through here."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.base = cfg.endpoint.rstrip("/") + "/v1/"
        self._pools = {"meta": _WatchedAdapter(cfg.pool_size),
                       "data": _WatchedAdapter(cfg.pool_size)}
        self._verify = _env_verify(cfg.verify)
        self._headers = {"User-Agent": f"{cfg.user_agent}/{__version__}", "Accept": "*/*"}
        self._proxies: dict[str, dict[str, str]] = {}  # by scheme://host:port, from the environment
        # where a fresh token comes from, shortly before the one in use expires and when the
        # cluster answers 401 (e.g. a token file)
        self.token_source: Callable[[], str | None] | None = None
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # logical calls by kind (list, head, get, moss...)
        self.http_requests = 0  # every HTTP exchange, redirect hops included
        self.bytes_received = 0  # reply bodies read by callers
        self.token_reloads = 0  # new tokens taken from the source (before expiry or on 401)
        self.unauthorized = 0  # 401 replies
        self._token: str | None = None
        self._token_lock = threading.Lock()  # one reload at a time
        self._token_due = math.inf  # time.time() from which the token is re-read
        self._token_next_read = 0.0
        self.set_token(cfg.token)
        if cfg.verify is False and cfg.endpoint.startswith("https://"):
            _unverified_tls(cfg.endpoint)

    def set_token(self, token: str | None) -> None:
        iat, exp = token_times(token)
        due = math.inf
        if exp is not None:
            lifetime = exp - (iat if iat is not None else time.time())
            due = exp - min(TOKEN_MARGIN[1], max(TOKEN_MARGIN[0], lifetime / 10))
        self._token_due, self._token_next_read = due, 0.0
        self._token = token or None

    def reload_token(self, why: str = "") -> bool:
        """Take the token source's current token if it differs from the one in use; True if
        it did. (An empty or unreadable source keeps the current token.)"""
        if self.token_source is None:
            return False
        with self._token_lock:
            token = self.token_source()
            if not token or token == self._token:
                return False
            self.set_token(token)
        with self._lock:
            self.token_reloads += 1
        log.info("took a new token from the token source%s", f" ({why})" if why else "")
        return True

    def _renew_token_if_due(self) -> None:
        """Before a request: re-read the token source when the token expires soon."""
        if self.token_source is None:
            return
        now = time.time()
        if now < self._token_due or now < self._token_next_read:
            return
        self._token_next_read = now + TOKEN_RELOAD_INTERVAL
        _, exp = token_times(self._token)
        left = (exp or now) - now
        self.reload_token(f"the one in use expires in {left:.0f}s" if left > 0
                          else "the one in use has expired")

    def _unauthorized(self, err: AisError, sent: str | None) -> AccessDenied:
        """A 401 the client could not fix, said plainly."""
        if not sent:
            message = ("authentication required: the cluster wants a token, and none was "
                       f"given ({err.message})")
        else:
            message = f"token rejected: {err.message}"
        return AccessDenied(message, status=401, tcode=err.tcode, what=err.what)

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
            out["token_reloads"] = self.token_reloads
            out["unauthorized"] = self.unauthorized
            return out

    def _received(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n

    def _count(self, resp: requests.Response) -> None:
        """Every HTTP exchange, redirect hops included."""
        with self._lock:
            self.http_requests += 1

    def _exchange(self, adapter: HTTPAdapter, method: str, url: str, headers: dict[str, str],
                  body: bytes | None, call: _Call, what: str) -> requests.Response:
        """One request and the redirects it gets, each hop under `call`'s deadline.

        Why not `Session.request`: per GET (two exchanges) it read the environment twice
        (proxies, CA bundle, ~/.netrc) and ran cookie jars and runtime protocol checks, a third
        of the GET's CPU (16 KiB objects, one thread: 1.9 ms a GET with it, 1.25 ms here). Here
        the environment is read once per node (proxies) or once per client (the CA bundle), and
        ~/.netrc not at all: AIStore takes a bearer token.
        """
        prep = requests.PreparedRequest()
        prep.method, prep.url, prep.body = method, url, body
        prep.headers = CaseInsensitiveDict(headers)
        if body is not None:
            prep.headers["Content-Length"] = str(len(body))
        elif method not in ("GET", "HEAD"):
            prep.headers["Content-Length"] = "0"
        d = self.cfg.deadlines
        hops = 0
        while True:
            remaining = max(call.remaining(), 0.001)
            resp = adapter.send(prep, stream=True, verify=self._verify, cert=self.cfg.cert,
                                proxies=self._proxies_for(prep),
                                timeout=(min(d.connect, remaining), min(d.idle, remaining)))
            self._count(resp)
            if resp.status_code not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            try:
                resp.content  # noqa: B018 -- a short body: read it so the connection is reused
            finally:
                resp.close()
            hops += 1
            if hops > MAX_REDIRECTS:  # a misconfigured node or balancer: no retry fixes it
                call.finish()
                raise ProtocolError(f"more than {MAX_REDIRECTS} redirects, the last from "
                                    f"{urlsplit(prep.url or '').netloc}", what=what)
            prep = _redirected(prep, resp)

    def _proxies_for(self, prep: requests.PreparedRequest) -> dict[str, str]:
        """The proxy the environment names for this node (HTTP_PROXY, NO_PROXY...), looked up
        once: a cluster has a bounded set of nodes, and the daemon's environment is fixed."""
        parts = urlsplit(prep.url or "")
        key = f"{parts.scheme}://{parts.netloc}"
        proxies = self._proxies.get(key)
        if proxies is None:
            proxies = self._proxies[key] = resolve_proxies(prep, {}, True)
        return proxies

    def _map_exception(self, e: BaseException, call: _Call, what: str,
                       sending: bool = False) -> AisError:
        if call.expired or isinstance(e, requests.Timeout):
            why = call.why or "no complete answer in time"
            return DeadlineExceeded(f"{why} ({type(e).__name__})", what=what)
        if tls_problem(e):
            return TLSFailure(describe_failure(e), what=what)
        url = getattr(getattr(e, "request", None), "url", None) or ""
        if (sending and url.startswith("https://") and call.remaining() > 0.1
                and any(isinstance(c, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError))
                        for c in _chain(e))):
            # closed during or right after the handshake: did the server refuse our certificate?
            verdict = tls_verdict(url, self.cfg.cert, min(1.0, call.remaining()))
            if verdict is not None:
                host = urlsplit(url).netloc
                return TLSFailure(f"cannot reach {host}: TLS: {_ssl_text(verdict)}", what=what)
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
        retry_throttled: bool = True,
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
        adapter = self._pools[pool]
        full_url = f"{url}?{urlencode(params)}" if params else url
        hdrs = {**self._headers, **(headers or {})}
        data = body
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        with self._lock:
            self.calls[kind] += 1
        self._renew_token_if_due()
        attempt = 0
        last: AisError | None = None  # what the previous attempt got: the reason for this one
        reauthenticated = False  # one retry with a new token after a 401
        while True:
            token = self._token
            if token:
                hdrs["Authorization"] = f"Bearer {token}"
            else:
                hdrs.pop("Authorization", None)
            first = time.monotonic() + first_byte_timeout if first_byte_timeout else None
            call = _Call(deadline, first if first is not None and first < deadline else None,
                         (total, first_byte_timeout))
            if abort is not None:
                abort.attach(call)
            _WATCHDOG.arm(call)
            _current.call = call
            try:
                resp = self._exchange(adapter, method, full_url, hdrs, data, call, what)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                call.finish()
                err = self._map_exception(e, call, what, sending=True)
                if isinstance(err, DeadlineExceeded) and last is not None:
                    # a retry cut short: "deadline" alone would hide why there was a retry
                    raise DeadlineExceeded(
                        f"{err.message} during attempt {attempt + 1}; "
                        f"the one before got: {last.answer}",
                        what=what,
                    ) from last
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
                err.message = scrub_tokens(err.message, token)
                err.args = (err.message,)
            finally:
                _current.call = None
            if err.status == 401:
                with self._lock:
                    self.unauthorized += 1
                # another request may have taken a new token since this one was sent
                if not reauthenticated and (self._token != token
                                            or self.reload_token("the cluster answered 401")):
                    reauthenticated = True
                    continue
                err = self._unauthorized(err, token)
            if (not (retry and err.transient) or (abort is not None and abort.aborted)
                    or (not retry_throttled and isinstance(err, Throttled))):
                raise err
            cfg = self.cfg
            backoff = random.uniform(0.5, 1.0) * min(cfg.max_backoff, cfg.backoff * 2**attempt)
            if time.monotonic() + backoff >= deadline:
                raise DeadlineExceeded(
                    f"deadline of {total:g}s passed after {attempt + 1} attempts; "
                    f"last: {err.answer}",
                    what=what,
                ) from err
            attempt += 1
            last = err
            time.sleep(backoff)
