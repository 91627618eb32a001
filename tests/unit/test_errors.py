"""Server errors become the client's typed errors, and those become errnos programs understand.

AIStore answers any error it does not classify with 400 and names the Go error type in the
JSON body's `tcode`. Transient cluster states (no storage targets while one restarts, a busy
node, throttling) must be retried and, if they persist, end in EIO: never EINVAL, which sends
users looking at their own code.
"""

from __future__ import annotations

import errno
import json

import pytest

from aisbatchfs.ais.errors import (
    AccessDenied,
    BucketNotFound,
    ObjectNotFound,
    RequestRejected,
    Throttled,
    Unavailable,
    error_from_response,
)
from aisbatchfs.fs.errors import errno_for


def body(tcode: str, message: str, status: int) -> bytes:
    return json.dumps({"message": message, "tcode": tcode, "status": status}).encode()


@pytest.mark.parametrize("status, tcode, message, kind", [
    (400, "ErrNoNodes", "no storage targets in the cluster", Unavailable),
    (409, "ErrBusy", "node busy", Throttled),
    (429, "", "too many requests", Throttled),
    (503, "", "service unavailable", Unavailable),
    (400, "", "Get \"http://t1/v1/ml/moss\": context deadline exceeded", Unavailable),
    (404, "ErrBckNotFound", "bucket does not exist", BucketNotFound),
    (404, "ErrObjNotFound", "object does not exist", ObjectNotFound),
    (403, "ErrAccessDenied", "no permission", AccessDenied),
    (400, "ErrInvalidArgument", "bad flags", RequestRejected),
    (400, "", "Post \"http://t1/v1/ml/moss\": EOF", Unavailable),  # a relayed failure
    (400, "", "unexpected EOF", RequestRejected),  # a truncated archive: retrying cannot help
    (400, "", "Signal 15", Unavailable),  # a target shutting down for a restart
    (400, "", "reason: starting x-rebalance[g616]", Unavailable),  # a target rejoined
])
def test_replies_are_classified_by_status_and_tcode(status, tcode, message, kind):
    err = error_from_response(status, body(tcode, message, status), {}, "GET ais://b/o")
    assert type(err) is kind
    assert err.tcode == tcode and message in str(err) and "ais://b/o" in str(err)


def test_transient_states_are_retryable():
    for status, tcode in ((400, "ErrNoNodes"), (409, "ErrBusy"), (429, ""), (503, "")):
        assert error_from_response(status, body(tcode, "x", status), {}, "").transient


@pytest.mark.parametrize("status, tcode", [
    (400, "ErrNoNodes"), (409, "ErrBusy"), (400, "ErrInvalidArgument"), (400, ""), (500, ""),
])
def test_server_errors_never_become_einval(status, tcode):
    err = error_from_response(status, body(tcode, "x", status), {}, "")
    assert errno_for(err) == errno.EIO
