"""Reusable test material (signing keys, JWKS, access-token claims). Import as `tests.support`."""

from .keys import SigningKey, access_token_claims, generate_signing_key, jwks

__all__ = ["SigningKey", "access_token_claims", "generate_signing_key", "jwks"]
