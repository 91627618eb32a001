"""Logging setup, and a rate limit for per-object errors so a broken bucket cannot flood logs."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str = "info", path: str | None = None, syslog: bool = False) -> None:
    """Log to `path`, else to syslog if asked and there is one (background daemons), else to
    stderr."""
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(FORMAT))
    elif syslog and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("aisbatchfs[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class RateLimited:
    """At most `burst` lines per `period` seconds per kind; then one line saying how many were
    suppressed when the period ends."""

    def __init__(self, logger: logging.Logger, period: float = 10.0, burst: int = 10) -> None:
        self.logger = logger
        self.period = period
        self.burst = burst
        self._window: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        start, count = self._window.get(kind, (now, 0))
        if now - start >= self.period:
            if count > self.burst:
                self.logger.log(level, "%d more %s messages suppressed in %.0fs",
                                count - self.burst, kind, now - start)
            start, count = now, 0
        count += 1
        self._window[kind] = (start, count)
        if count <= self.burst:
            self.logger.log(level, msg, *args)
