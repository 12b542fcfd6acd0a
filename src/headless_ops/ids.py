"""Prefixed, opaque identifiers (``op_…``, ``dev_…``, ``tok_…``).

Operation ids are time-ordered (48-bit millisecond clock, then 80 random bits, Crockford
base32) so that "newest first" is an index scan on the primary key alone.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "new_sortable_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_sortable_id(prefix: str) -> str:
    """A ULID-like id: ``prefix_`` + 26 characters that sort by creation time."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32((millis << 80) | rand, 26)}"


def new_id(prefix: str, nbytes: int = 12) -> str:
    """A random id: ``prefix_`` + base32 of ``nbytes`` random bytes."""
    value = int.from_bytes(os.urandom(nbytes), "big")
    return f"{prefix}_{_b32(value, (nbytes * 8 + 4) // 5)}"
