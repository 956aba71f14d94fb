"""Sealing of HMAC issuer secrets at rest with a key-encryption key (KEK).

The store only ever holds `seal_secret(secret, kek)`: a Fernet token (AES-128-CBC + HMAC-SHA256,
authenticated, with a timestamp we ignore). A database dump without the KEK reveals no secret.

KEK rotation: `kek` may list several Fernet keys separated by commas ("new,old"). The first one
seals; every one of them is tried to unseal (cryptography's MultiFernet), so secrets sealed with
the old key keep working until they are re-sealed.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def new_key_encryption_key() -> str:
    """A fresh random Fernet key (32 bytes, url-safe base64) as text."""
    return Fernet.generate_key().decode("ascii")


def fernet_for(kek: str) -> MultiFernet:
    """The Fernet(s) of a KEK string. Raises ValueError for a malformed KEK (never echoing it)."""
    if not isinstance(kek, str) or not kek.strip():
        raise ValueError("the key-encryption key is empty")
    try:
        return MultiFernet([Fernet(part.strip().encode("ascii")) for part in kek.split(",")])
    except (ValueError, TypeError, UnicodeError):
        # cryptography's own message does not contain the key, but we say it ourselves anyway.
        raise ValueError("the key-encryption key is not a valid Fernet key (32 url-safe base64 bytes)") from None


def seal_secret(secret: bytes, kek: str) -> str:
    """Encrypts `secret` with the (first) KEK; the result is what the store keeps."""
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ValueError("the secret to seal must be non-empty bytes")
    return fernet_for(kek).encrypt(bytes(secret)).decode("ascii")


def unseal_secret(sealed: str, kek: str) -> bytes:
    """Decrypts a sealed secret. Raises ValueError for a wrong KEK or a damaged sealed value."""
    return unseal_with(fernet_for(kek), sealed)


def unseal_with(fernet: MultiFernet, sealed: str) -> bytes:
    """unseal_secret with an already built Fernet (the verifier keeps one)."""
    if not isinstance(sealed, str) or not sealed:
        raise ValueError("the sealed secret is empty")
    try:
        return fernet.decrypt(sealed.encode("ascii"))
    except (InvalidToken, UnicodeError, TypeError):
        # InvalidToken covers both a wrong KEK and tampering; neither message names the data.
        raise ValueError("the sealed secret cannot be opened with this key-encryption key") from None
