"""Opaque secrets (API keys, connect tokens, OAuth client secrets, refresh tokens): generation,
checksum and digest. Standard library only.

Format: <prefix><30 base62 chars of randomness (178 bits)><6 base62 chars of CRC32 checksum>.
The checksum lets a mistyped or truncated secret be refused without a store query (the scheme
popularised by GitHub's token format); the store keeps only the SHA-256 digest of the whole
string, so a database dump reveals no usable secret.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 30
_CHECKSUM_CHARS = 6

API_KEY_PREFIX = "tg_live_"
CONNECT_TOKEN_PREFIX = "tg_ct_"
# An OAuth client's secret, and the refresh tokens Tollgate issues.
CLIENT_SECRET_PREFIX = "tg_cs_"
REFRESH_TOKEN_PREFIX = "tg_rt_"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_CHARS)


def generate(prefix: str) -> str:
    """A new secret with `prefix`. Shown to its owner once; only digest() of it is stored."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"{prefix}{body}{_checksum(body)}"


def well_formed(secret: str, prefix: str) -> bool:
    """True when `secret` has the prefix, the length, the alphabet and a matching checksum."""
    if not secret.startswith(prefix) or len(secret) != len(prefix) + _RANDOM_CHARS + _CHECKSUM_CHARS:
        return False
    rest = secret[len(prefix):]
    if any(c not in _ALPHABET for c in rest):
        return False
    body, check = rest[:_RANDOM_CHARS], rest[_RANDOM_CHARS:]
    return secrets.compare_digest(_checksum(body), check)


def digest(secret: str) -> str:
    """SHA-256 hex digest: what the store keeps and looks up by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
