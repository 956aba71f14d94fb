"""The keys of Tollgate's own issuer: generation, sealing at rest, and signing access tokens.

Implements domain.ports.TokenSigner. A key's private half is stored only sealed with the
key-encryption key (Fernet, as HMAC issuer secrets are); its kid is the RFC 7638 thumbprint of its
public JWK, so a kid names exactly one key. Signing unseals a key once and keeps it in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ..domain.model import SigningKeyRecord
from ..domain.oauth import SIGNING_ALGORITHMS
from .sealing import fernet_for, unseal_with

_RSA_BITS = 3072
# RFC 7638 section 3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


class KeySigner:
    """domain.ports.TokenSigner on the server's key-encryption key."""

    def __init__(self, key_encryption_key: str) -> None:
        self._fernet = fernet_for(key_encryption_key)
        self._private_keys: dict[str, Any] = {}  # kid -> unsealed private key
        self._lock = threading.Lock()

    def new_key(self, algorithm: str, now: datetime) -> SigningKeyRecord:
        if algorithm not in SIGNING_ALGORITHMS:
            raise ValueError(f"cannot sign with {algorithm}; use one of {', '.join(SIGNING_ALGORITHMS)}")
        private_key = _generate(algorithm)
        public_jwk = public_jwk_of(private_key, algorithm)
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        sealed = self._fernet.encrypt(pem).decode("ascii")
        return SigningKeyRecord(kid=public_jwk["kid"], algorithm=algorithm, private_key_sealed=sealed,
                                public_jwk=public_jwk, created_at=now)

    def sign(self, claims: dict, key: SigningKeyRecord) -> str:
        return jwt.encode(claims, self._private_key(key), algorithm=key.algorithm,
                          headers={"kid": key.kid, "typ": "at+jwt"})

    def _private_key(self, key: SigningKeyRecord) -> Any:
        found = self._private_keys.get(key.kid)
        if found is None:
            # A wrong KEK raises ValueError here: an operator problem, reported as such by the caller.
            pem = unseal_with(self._fernet, key.private_key_sealed)
            found = serialization.load_pem_private_key(pem, password=None)
            with self._lock:
                self._private_keys[key.kid] = found
        return found


def _generate(algorithm: str) -> Any:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk_of(private_key: Any, algorithm: str) -> dict[str, Any]:
    """The public JWK of a private key, with its thumbprint as kid, its alg and use "sig"."""
    algorithms: dict[str, type[Algorithm]] = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}
    to_jwk = algorithms[algorithm].to_jwk
    jwk: dict[str, Any] = dict(to_jwk(private_key.public_key(), as_dict=True))
    jwk.pop("key_ops", None)
    jwk.update(kid=thumbprint(jwk), alg=algorithm, use="sig")
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: base64url SHA-256 of the required members, sorted, without whitespace."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
