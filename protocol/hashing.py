"""SHA-256 content ids: every id in Assay is the hash of canonical bytes."""

from __future__ import annotations

import hashlib

DIGEST_BYTES = 32


def sha256(data: bytes) -> bytes:
    """Return the 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def short_hex(digest: bytes, n: int = 8) -> str:
    """A short, human-readable prefix of an id for logs and tables."""
    return digest.hex()[:n]
