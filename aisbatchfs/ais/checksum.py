"""Checking object bytes against AIStore's stored checksum, for the types Python can compute."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import xxhash

from aisbatchfs.ais.errors import ProtocolError

# AIStore's default, xxhash2, is 64-bit xxHash (cespare/xxhash/v2, seed 0) as 16 hex digits.
_HASHERS: dict[str, Callable[[bytes], str]] = {
    "xxhash2": lambda b: xxhash.xxh64_hexdigest(b),
    "md5": lambda b: hashlib.md5(b).hexdigest(),
    "sha256": lambda b: hashlib.sha256(b).hexdigest(),
    "sha512": lambda b: hashlib.sha512(b).hexdigest(),
}


def can_verify(cksum_type: str) -> bool:
    return cksum_type in _HASHERS


def verify(cksum_type: str, expected: str, data: bytes, what: str) -> None:
    """Raise ProtocolError when `data` does not hash to `expected`; unknown types pass."""
    hasher = _HASHERS.get(cksum_type)
    if hasher is None or not expected:
        return
    got = hasher(data)
    if got != expected.lower():
        raise ProtocolError(
            f"{cksum_type} checksum mismatch: expected {expected}, got {got} ({len(data)} bytes)",
            what=what,
        )
