"""Running under systemd: sd_notify over NOTIFY_SOCKET, natively (no compiled dependency).

Type=notify services tell systemd READY=1 once they serve, STATUS=... for `systemctl status`,
and STOPPING=1 when they begin to stop. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send 'KEY=value' fields to systemd; False when not under systemd or it failed."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path  # '@' names an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())
        return True
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", path, e)
        return False
