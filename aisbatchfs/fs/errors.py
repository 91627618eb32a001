"""The one place where the project's exceptions become errno values for the kernel.

Each failure a program sees is also one log line that names the path and the cause
(rate-limited per kind), never a traceback, except for a bug in the daemon itself. Errors
from concurrent tasks arrive as exception groups (trio nurseries); the most telling member
decides the errno.
"""

from __future__ import annotations

import errno
import logging

import pyfuse3

from aisbatchfs.ais import (
    AccessDenied,
    AisError,
    BucketNotFound,
    DeadlineExceeded,
    ObjectNotFound,
)
from aisbatchfs.logs import RateLimited

log = logging.getLogger("aisbatchfs.fs")
limited = RateLimited(log)


def leaf(exc: BaseException) -> BaseException:
    """The member of a (nested) exception group that explains it best: a client error over
    anything else, and among those the first."""
    while isinstance(exc, BaseExceptionGroup):
        members = [leaf(e) for e in exc.exceptions]
        exc = next((e for e in members if isinstance(e, (AisError, pyfuse3.FUSEError))),
                   members[0])
    return exc


def errno_for(exc: BaseException) -> int:
    exc = leaf(exc)
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, (ObjectNotFound, BucketNotFound)):
        return errno.ENOENT
    if isinstance(exc, AccessDenied):
        return errno.EACCES
    return errno.EIO  # the server's 400s included: never EINVAL for what the program did right


def to_fuse_error(exc: BaseException, op: str, what: str) -> pyfuse3.FUSEError:
    """Map `exc`, logging what happened (rate-limited) unless it is an ordinary ENOENT."""
    exc = leaf(exc)
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    code = errno_for(exc)
    name = errno.errorcode.get(code, str(code))
    if code == errno.ENOENT:
        log.debug("%s %s: %s", op, what, exc)
    elif isinstance(exc, AisError):
        kind = "timeout" if isinstance(exc, DeadlineExceeded) else type(exc).__name__
        limited.log(logging.WARNING, kind, "%s %s failed with %s: %s: %s", op, what, name,
                    type(exc).__name__, exc.message)
    else:
        log.error("%s %s failed with %s: a bug in aisbatchfs", op, what, name, exc_info=exc)
    return pyfuse3.FUSEError(code)
