"""Per-purpose keys derived from the SharedSecret with HKDF-SHA256.

New formats never use the secret's bytes directly: each use gets its own labelled key, so that
a key for one purpose can never be replayed as a key for another (as in magic-wormhole's
``derive_key(key, purpose)``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["derive_key"]


def derive_key(secret: bytes, purpose: str, salt: bytes = b"", length: int = 32) -> bytes:
    """HKDF-SHA256(ikm=secret, salt=salt, info=b"distsync " + purpose)."""
    info = b"distsync " + purpose.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(
        secret
    )
