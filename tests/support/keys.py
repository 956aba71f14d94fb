"""Signing keys for tests: RS256 (RSA 2048), ES256 (P-256), EdDSA (Ed25519) and HS256.

    key = generate_signing_key("RS256", "kid-1")
    issuer_jwks = jwks(key)                      # {"keys": [public JWK]}
    token = key.sign(access_token_claims("https://idp", "tollgate", "partner-1", scope="user:read"))

Keys are cached per (alg, kid) for the whole test session, because RSA generation is slow;
the same (alg, kid) therefore always yields the same key.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SUPPORTED_ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")


@dataclass(frozen=True)
class SigningKey:
    alg: str
    kid: str
    # The private key object (asymmetric) or None (HS256).
    private_key: Any = field(repr=False)
    # The shared secret (HS256 only; 32 random bytes, the minimum RFC 7518 allows for HS256).
    secret: bytes | None = field(default=None, repr=False)

    def public_jwk(self) -> dict[str, Any] | None:
        """The public JWK with kid, alg and use "sig"; None for HS256 (there is no public half)."""
        if self.private_key is None:
            return None
        algorithms: dict[str, type[Algorithm]] = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
        algorithm = algorithms[self.alg]
        jwk = dict(algorithm.to_jwk(self.private_key.public_key(), as_dict=True))
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo); for algorithm-confusion tests."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None, typ: str | None = "at+jwt") -> str:
        """A compact JWS of `claims` with header {alg, kid, typ}. `headers` are merged last; a
        header set to None is left out (headers={"kid": None} signs without a kid; typ=None
        without a typ)."""
        merged = {"kid": self.kid, "typ": typ, **(headers or {})}
        header = {name: value for name, value in merged.items() if value is not None}
        header.setdefault("typ", "")  # PyJWT adds typ "JWT" unless told to drop it with ""
        key = self.secret if self.alg == "HS256" else self.private_key
        assert key is not None, "an HS256 key has a secret, any other a private key"
        return jwt.encode(claims, key, algorithm=self.alg, headers=header)


_CACHE: dict[tuple[str, str], SigningKey] = {}


def generate_signing_key(alg: str, kid: str) -> SigningKey:
    """The (cached) key of `alg` ("RS256", "ES256", "EdDSA" or "HS256") with this kid."""
    if alg not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"unsupported test algorithm {alg!r}; use one of {SUPPORTED_ALGORITHMS}")
    cached = _CACHE.get((alg, kid))
    if cached is None:
        cached = _CACHE[(alg, kid)] = _new_key(alg, kid)
    return cached


def _new_key(alg: str, kid: str) -> SigningKey:
    if alg == "HS256":
        return SigningKey(alg, kid, private_key=None, secret=secrets.token_bytes(32))
    if alg == "RS256":
        private_key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        private_key = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(alg, kid, private_key=private_key)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """{"keys": [public JWK, ...]} of the asymmetric keys given."""
    return {"keys": [key.public_jwk() for key in keys if key.public_jwk() is not None]}


def access_token_claims(
    issuer: str,
    audience: str,
    partner_id: str,
    *,
    scope: str | None = None,
    lifetime: int = 300,
    now: datetime | float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """RFC 9068 claims: iss, aud, iat, exp (= iat + lifetime), jti (random) and client_id.
    `now` is a datetime or epoch seconds (default: the wall clock). `extra` claims are added
    last and override; an extra set to None removes that claim (e.g. exp=None)."""
    if now is None:
        issued = int(time.time())
    elif isinstance(now, datetime):
        issued = int(now.timestamp())
    else:
        issued = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "client_id": partner_id,
    }
    if scope is not None:
        claims["scope"] = scope
    claims.update(extra)
    return {name: value for name, value in claims.items() if value is not None}
