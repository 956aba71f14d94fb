"""Credential verification: the only package that imports PyJWT or cryptography.

- TokenVerifier: domain.ports.CredentialVerifier for API keys and JWT access tokens.
- seal_secret / unseal_secret / new_key_encryption_key: HMAC issuer secrets at rest (Fernet).
- load_jwks: validates a public JWK Set for issuer registration (raises ValueError).
"""

from .jwks import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, load_jwks
from .sealing import new_key_encryption_key, seal_secret, unseal_secret
from .verifier import TokenVerifier

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "TokenVerifier",
    "load_jwks",
    "new_key_encryption_key",
    "seal_secret",
    "unseal_secret",
]
