"""The control socket: hints and counters for programs, beside a read-only mount.

A mount whose kernel side is read-only cannot take hints through a file, and a kernel that
opens files by itself would not say who wrote one. So the daemon listens on a unix socket
(path in the mount root's `user.aisbatchfs.control` xattr; client side: aisbatchfs/control.py),
and takes requests only from the user who mounted and from root: the kernel tells the
peer's uid (SO_PEERCRED), which no one can forge. Each connection is one request:

    prefetch\\n PATH\\n PATH\\n ...  (EOF)   ->  ok N\\n        paths queued in order
    stats\\n                               ->  {...}\\n       the counters as JSON

Where the socket lives: /run/aisbatchfs for root, else $XDG_RUNTIME_DIR/aisbatchfs or
/tmp/aisbatchfs-UID, in a directory only its owner can enter; the name is a hash of the
mountpoint, so a remount finds the same path and a stale socket is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

MAX_REQUEST = 64 << 20  # bytes of paths one connection may send
TIMEOUT = 60.0  # seconds a connection may take to send its request


def socket_dir(uid: int) -> str:
    if uid == 0:
        return "/run/aisbatchfs"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "aisbatchfs") if runtime else f"/tmp/aisbatchfs-{uid}"


def socket_path_for(mountpoint: str, uid: int) -> str:
    digest = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
    return os.path.join(socket_dir(uid), f"mnt-{digest}.sock")


class ControlServer:
    def __init__(self, path: str, hint: Callable[[str], None] | None,
                 stats: Callable[[], dict]) -> None:
        self.path = path
        self.hint = hint  # None: this mount takes no hints (--no-batch)
        self.stats = stats
        self.owner = os.getuid()
        self.counters = {"connections": 0, "refused": 0}

    async def bind(self) -> trio.socket.SocketType:
        """Create the socket (before mounting, so a failure is a mount error)."""
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.stat(d)
        if st.st_uid != self.owner or st.st_mode & 0o077:
            raise OSError(f"{d} must belong to uid {self.owner} and be private (0700)")
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket of an earlier mount on this mountpoint
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            await sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(64)
        return sock

    async def serve(self, sock: trio.socket.SocketType,
                    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(sock)
        try:
            await trio.serve_listeners(self._handle, [listener], task_status=task_status)
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _peer_uid(self, stream: trio.SocketStream) -> int:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                         struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.counters["connections"] += 1
        async with stream:
            uid = self._peer_uid(stream)
            with trio.move_on_after(TIMEOUT):
                if uid not in (0, self.owner):
                    self.counters["refused"] += 1
                    log.warning("control socket: refused a request from uid %d (only uid %d "
                                "and root may send hints)", uid, self.owner)
                    await self._refuse(stream, b"permission denied: only the user who "
                                       b"mounted and root may use this mount's control socket")
                    return
                await self._serve_request(stream)

    async def _refuse(self, stream: trio.SocketStream, why: bytes) -> None:
        """Answer with an error, and take in what the client still sends (up to a limit), so
        that it reads the answer rather than a broken pipe."""
        await stream.send_all(b"error: " + why + b"\n")
        await stream.send_eof()
        received = 0
        while received < MAX_REQUEST and (chunk := await stream.receive_some(1 << 16)):
            received += len(chunk)

    async def _serve_request(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        verb: str | None = None
        taken = 0
        received = 0
        while True:
            chunk = await stream.receive_some(1 << 16)
            received += len(chunk)
            if received > MAX_REQUEST:
                await stream.send_all(b"error: request too large\n")  # and no more reading
                return
            buf += chunk
            *lines, rest = bytes(buf).split(b"\n")
            buf[:] = rest
            if not chunk and rest:  # the last line, without a newline
                lines.append(rest)
                buf.clear()
            for raw in lines:
                line = raw.decode("utf-8", "surrogateescape")
                if verb is None:
                    verb = line.strip()
                    if verb == "stats":
                        doc = json.dumps(self.stats(), sort_keys=True).encode()
                        await stream.send_all(doc + b"\n")
                        return
                    if verb != "prefetch":
                        await self._refuse(stream, f"unknown request {verb!r}".encode())
                        return
                    if self.hint is None:
                        await self._refuse(stream, b"this mount reads each file with its own "
                                           b"GET (--no-batch): it takes no hints")
                        return
                elif line.strip():
                    self.hint(line)
                    taken += 1
            if not chunk:
                await stream.send_all(f"ok {taken}\n".encode())
                return
