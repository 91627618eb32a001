"""Typed errors of the AIStore client, each carrying the server's own message.

Callers branch on the type (the filesystem maps them to errno in one place); the fields keep
what the server said so a log line can name the object and the cause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping


class AisError(Exception):
    """Base of every error the client raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        tcode: str = "",
        what: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.tcode = tcode
        self.what = what  # the call and object, e.g. "GET ais://b/x"

    @property
    def transient(self) -> bool:
        """A state of the cluster that passes (a node restarting, throttling): retry within
        the call's deadline, and if it persists the read fails with EIO."""
        return False

    def __str__(self) -> str:
        return f"{self.what}: {self.answer}" if self.what else self.answer

    @property
    def answer(self) -> str:
        """What went wrong, without the call it happened to (for messages that name it once)."""
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.tcode:
            parts.append(self.tcode)
        parts.append(self.message)
        return ": ".join(parts)


class BucketNotFound(AisError):
    """The bucket does not exist (the proxy answered 404 ErrBckNotFound)."""


class ObjectNotFound(AisError):
    """The object, or the member inside an archive, does not exist."""


class AccessDenied(AisError):
    """401/403: no token, a bad token, or no permission."""


class Throttled(AisError):
    """429 (rate limit, GetBatch admission) or 409 ErrBusy: the cluster asks for a pause."""

    @property
    def transient(self) -> bool:
        return True


class Unavailable(AisError):
    """The cluster could not be reached, answered 5xx, or reported a transient state
    (ErrNoNodes: no storage targets, while one restarts)."""

    @property
    def transient(self) -> bool:
        return True


class DeadlineExceeded(AisError):
    """The call's total deadline passed; its connection was closed and dropped from the pool."""


class RangeNotSatisfiable(AisError):
    """416: a byte range outside the object."""


class RequestRejected(AisError):
    """Any other 4xx: the request itself is wrong (bad name, unsupported combination...)."""


class ProtocolError(AisError):
    """The reply does not match what was asked: wrong member name, size or checksum, bad TAR."""


class ObjectChanged(AisError):
    """The object's version is not the one the caller listed: its bytes would not match."""


class BatchFailed(AisError):
    """A GetBatch failed as a whole; the caller may split it and retry the parts."""


class BatchTruncated(BatchFailed):
    """A streamed GetBatch ended before every item arrived (errors after the 200 cut the TAR).

    `first_missing` is the index (in request order) of the first item that did not arrive.
    """

    def __init__(self, message: str, *, first_missing: int, **kw) -> None:
        super().__init__(message, **kw)
        self.first_missing = first_missing


class SoftErrorLimit(BatchFailed):
    """More items were missing than the cluster's get_batch.max_soft_errs allows."""


# Go error types (the JSON body's `tcode`) that name a passing state of the cluster, whatever
# the status (AIStore answers errors it does not classify with 400).
TRANSIENT_TCODES = {"ErrNoNodes": Unavailable, "ErrBusy": Throttled}

# A proxy relays its own failed intra-cluster call (e.g. GetBatch's phase 1 to a target that
# does not answer) with the server's default status, 400. Those are cluster faults, not bad
# requests: they are retried like a 5xx. ("unexpected EOF" is a broken archive, not one.)
_RELAYED_TRANSPORT_FAILURE = re.compile(
    r"context deadline exceeded|Client\.Timeout|i/o timeout|connection refused|"
    r"connection reset|broken pipe|(?<!unexpected )EOF$|"
    r"^Signal \d+$|"  # a node answering while it shuts down (SIGTERM: a restart)
    # a target that rejoins starts a rebalance, which aborts the GetBatch work under way with
    # this reason, as a 400 (seen by scripts/soak after a target restart)
    r"reason: starting x-(rebalance|resilver)"
)


def _server_message(body: bytes | str | None) -> tuple[str, str]:
    """(tcode, message) from AIStore's JSON error body; raw text when it is not JSON."""
    if not body:
        return "", ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        return "", text.strip()[:500]
    if isinstance(doc, dict):
        return str(doc.get("tcode", "")), str(doc.get("message", text)).strip()
    return "", text.strip()[:500]


def error_from_response(
    status: int, body: bytes | None, headers: Mapping[str, str], what: str
) -> AisError:
    """Map an HTTP error reply to the typed error. HEAD replies carry the JSON in `Hdr-Error`."""
    tcode, message = _server_message(body or headers.get("Hdr-Error"))
    message = message or f"HTTP {status}"
    kw = dict(status=status, tcode=tcode, what=what)
    if tcode in TRANSIENT_TCODES:
        return TRANSIENT_TCODES[tcode](message, **kw)
    if status == 404:
        if tcode in ("ErrBckNotFound", "ErrRemoteBckNotFound"):
            return BucketNotFound(message, **kw)
        return ObjectNotFound(message, **kw)
    if status in (401, 403):
        return AccessDenied(message, **kw)
    if status in (429, 409) and tcode in ("", "ErrBusy"):
        return Throttled(message, **kw)
    if status == 416:
        return RangeNotSatisfiable(message, **kw)
    if status == 400 and "soft-errors limit" in message:
        return SoftErrorLimit(message, **kw)
    if status >= 500 or _RELAYED_TRANSPORT_FAILURE.search(message):
        return Unavailable(message, **kw)
    return RequestRejected(message, **kw)
