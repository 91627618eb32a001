"""Talking to a running mount from a program: announce the read order, read the counters.

The mount itself is read-only in the kernel (every write-type call fails with EROFS before it
reaches the daemon), so the control channel is a unix socket beside it, whose path the mount
root names in the extended attribute `user.aisbatchfs.control`. The daemon takes hints only
from the user who mounted and from root (it checks the peer's credentials), and each
connection is one stream of paths: concurrent writers never mix, and a last line without a
newline still counts. Standard library only: a training script imports this without pyfuse3
or trio.

    from aisbatchfs.control import prefetch
    prefetch("/mnt/train", (f"images/{name}" for name in epoch_order))
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable

XATTR = "user.aisbatchfs.control"
CHUNK = 1 << 16


class ControlError(OSError):
    """The mount cannot be reached or refused the request; the message says why."""


def socket_path(mountpoint: str) -> str:
    """Where the mount at `mountpoint` (or any path inside it) listens."""
    root = mount_root(mountpoint)
    try:
        return os.getxattr(root, XATTR).decode()
    except OSError as e:
        raise ControlError(e.errno, f"{root} is not an aisbatchfs mount ({e.strerror})") from None


def mount_root(path: str) -> str:
    """The root of the aisbatchfs mount holding `path`."""
    p = os.path.realpath(path)
    while True:
        try:
            os.getxattr(p, XATTR)
            return p
        except OSError:
            parent = os.path.dirname(p)
            if parent == p:
                raise ControlError(2, f"{path} is not inside an aisbatchfs mount") from None
            p = parent


def _request(mountpoint: str, verb: str, lines: Iterable[str] = (), timeout: float = 60) -> str:
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            try:
                s.sendall(f"{verb}\n".encode())
                buf = bytearray()
                for line in lines:
                    buf += line.encode("utf-8", "surrogateescape") + b"\n"
                    if len(buf) >= CHUNK:
                        s.sendall(buf)
                        buf.clear()
                s.sendall(buf)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the mount answered early (an error): read why
            reply = bytearray()
            while chunk := s.recv(CHUNK):
                reply += chunk
        except OSError as e:
            raise ControlError(e.errno or 5, f"control socket {path}: {e.strerror or e}") from None
    text = reply.decode("utf-8", "replace")
    if text.startswith("error:"):
        raise ControlError(13 if "permission" in text else 5, text[len("error:"):].strip())
    return text


def prefetch(mountpoint: str, paths: Iterable[str]) -> int:
    """Tell the mount the order files will be read in (paths relative to the mount root, or
    absolute paths inside it); returns how many it took. The daemon fetches them in that
    order, in batches, as its budget allows."""
    root = mount_root(mountpoint)

    def relative(p: str) -> str:
        return os.path.relpath(p, root) if os.path.isabs(p) else p

    reply = _request(root, "prefetch", (relative(p) for p in paths))
    return int(reply.split()[1]) if reply.startswith("ok") else 0


def stats(mountpoint: str, timeout: float = 60) -> dict:
    """The mount's counters (the same document as MOUNTPOINT/.aisbatchfs/stats)."""
    return json.loads(_request(mountpoint, "stats", timeout=timeout))


class AnnouncedSampler:
    """Wraps any sampler (anything with `__iter__` and `__len__`: a torch Sampler too, without
    importing torch) so that each epoch's order is announced to the mount when iteration
    starts: the daemon then fetches the files in that order, in batches, ahead of the
    workers. `paths[i]` is the file the dataset reads for index i (absolute, inside the mount).

        sampler = AnnouncedSampler(RandomSampler(ds), ds.paths)
        DataLoader(ds, sampler=sampler, num_workers=8)
    """

    def __init__(self, sampler: Iterable[int], paths: list[str]) -> None:
        self.sampler = sampler
        self.paths = paths
        self.announced = 0  # files announced in the last epoch

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self):  # noqa: ANN204 - an iterator of indices, as the sampler's
        order = list(self.sampler)
        try:
            self.announced = prefetch(self.paths[0], (self.paths[i] for i in order))
        except (ControlError, IndexError):
            self.announced = 0  # not on an aisbatchfs mount, or nothing to read: still works
        return iter(order)
