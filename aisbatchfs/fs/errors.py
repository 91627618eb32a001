"""The one place where the project's exceptions become errno values for the kernel."""

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
    RequestRejected,
)
from aisbatchfs.logs import RateLimited

log = logging.getLogger("aisbatchfs.fs")
limited = RateLimited(log)


def errno_for(exc: BaseException) -> int:
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, (ObjectNotFound, BucketNotFound)):
        return errno.ENOENT
    if isinstance(exc, AccessDenied):
        return errno.EACCES
    if isinstance(exc, RequestRejected) and exc.status == 400:
        return errno.EINVAL
    return errno.EIO


def to_fuse_error(exc: BaseException, op: str, what: str) -> pyfuse3.FUSEError:
    """Map `exc`, logging what happened (rate-limited) unless it is an ordinary ENOENT."""
    code = errno_for(exc)
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if code == errno.ENOENT:
        log.debug("%s %s: %s", op, what, exc)
    elif isinstance(exc, AisError):
        kind = "timeout" if isinstance(exc, DeadlineExceeded) else type(exc).__name__
        limited.log(logging.WARNING, kind, "%s %s failed (%s): %s", op, what,
                    errno.errorcode.get(code, code), exc)
    else:
        log.exception("%s %s: unexpected error, answering EIO", op, what)
    return pyfuse3.FUSEError(code)
