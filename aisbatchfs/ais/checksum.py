"""Checking object bytes against AIStore's stored checksum, for the types Python can compute."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import xxhash

from aisbatchfs.ais.errors import ProtocolError

# AIStore's default, xxhash2, is 64-bit xxHash (cespare/xxhash/v2, seed 0) as 16 hex digits.
_INCREMENTAL: dict[str, Callable[[], Any]] = {
    "xxhash2": xxhash.xxh64,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def can_verify(cksum_type: str) -> bool:
    return cksum_type in _INCREMENTAL


def incremental(cksum_type: str) -> Any | None:
    """A hasher to feed a stream piece by piece (update, hexdigest); None for a type Python
    cannot compute (the stream is then checked by size only)."""
    make = _INCREMENTAL.get(cksum_type)
    return make() if make else None


def check_digest(cksum_type: str, expected: str, got: str, nbytes: int, what: str) -> None:
    if got != expected.lower():
        raise ProtocolError(
            f"{cksum_type} checksum mismatch: expected {expected}, got {got} ({nbytes} bytes)",
            what=what,
        )


def verify(cksum_type: str, expected: str, data: bytes, what: str) -> None:
    """Raise ProtocolError when `data` does not hash to `expected`; unknown types pass."""
    make = _INCREMENTAL.get(cksum_type)
    if make is None or not expected:
        return
    check_digest(cksum_type, expected, make(data).hexdigest(), len(data), what)
