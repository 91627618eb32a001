"""AIStore client: plain HTTP (requests), typed errors, deadlines, GetBatch."""

from aisbatchfs.ais.batch import Batch, BatchItem, BatchOut
from aisbatchfs.ais.client import AisClient, ListPage
from aisbatchfs.ais.config import ClientConfig, Deadlines
from aisbatchfs.ais.errors import (
    AccessDenied,
    AisError,
    BatchFailed,
    BatchTruncated,
    BucketNotFound,
    DeadlineExceeded,
    ObjectChanged,
    ObjectNotFound,
    ProtocolError,
    RangeNotSatisfiable,
    RequestRejected,
    SoftErrorLimit,
    Throttled,
    Unavailable,
)
from aisbatchfs.ais.models import ArchiveMember, BucketProps, BucketRef, ObjectAttrs, ObjectEntry

__all__ = [
    "AccessDenied", "AisClient", "AisError", "ArchiveMember", "Batch", "BucketProps", "BatchFailed",
    "BatchItem", "BatchOut", "BatchTruncated", "BucketNotFound", "BucketRef", "ClientConfig",
    "Deadlines", "DeadlineExceeded", "ListPage", "ObjectAttrs", "ObjectChanged", "ObjectEntry", "ObjectNotFound",
    "ProtocolError", "RangeNotSatisfiable", "RequestRejected", "SoftErrorLimit", "Throttled",
    "Unavailable",
]
