"""JWK Sets: validation at registration (`load_jwks`) and a parsed-key cache for verification.

Security choices:
- Only public asymmetric keys are accepted (RSA >= 2048 bits, EC P-256/384/521, OKP Ed25519/448).
  Private members and symmetric ("oct") keys are refused: a JWKS is published material, and a
  private key stored by mistake must never become usable (RFC 7517 section 4, RFC 8725 3.5).
- A key is only ever bound to algorithms that fit its type and curve, and to its own "alg" when it
  declares one, so an RSA key can never verify ES256 nor an EC key RS256 (RFC 8725 section 3.1).
- Keys come only from the issuer record; nothing here ever fetches a URL (fetch.py does, for
  remote issuers, and validates what it got with load_remote_jwks).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import jwt

from ..domain.bounded import BoundedMap
from ..domain.model import IssuerRecord
from ..domain.text import excerpt

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})

# Asymmetric algorithm -> (JWK kty, curves allowed or None for RSA).
ASYMMETRIC_ALGORITHMS: Mapping[str, tuple[str, frozenset[str] | None]] = {
    **{f"{family}{bits}": ("RSA", None) for family in ("RS", "PS") for bits in (256, 384, 512)},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

MIN_RSA_BITS = 2048
MAX_KEYS = 32
MAX_JWKS_CHARS = 256 * 1024

# JWS algorithms (RFC 7518 section 3.1) that are not ASYMMETRIC_ALGORITHMS: a key declaring one
# contradicts itself in a set of public signature keys, unlike a key for some other purpose.
_SIGNATURE_ALGORITHMS = frozenset({*HMAC_ALGORITHMS, "none"})

# Members that carry private or symmetric key material (RFC 7518 section 6).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_KEY_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_CURVES = {"EC": frozenset({"P-256", "P-384", "P-521"}), "OKP": frozenset({"Ed25519", "Ed448"})}
# The algorithm used to parse a key at registration, when the key declares none.
_PARSE_ALGORITHM = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA", "Ed448": "EdDSA"}


def load_jwks(jwks: dict[str, Any] | str) -> dict[str, Any]:
    """Validates a JWK Set (or one JWK, which is wrapped) for registration and returns the
    normalized set {"keys": [...]} holding only public members. Raises ValueError, whose message
    names the key by position and never contains key material."""
    document = _as_document(jwks)
    keys = document.get("keys") if "keys" in document else [document]
    if not isinstance(keys, list) or not keys:
        raise ValueError("the JWK Set has no keys")
    if len(keys) > MAX_KEYS:
        raise ValueError(f"the JWK Set has more than {MAX_KEYS} keys")
    normalized = [_normalized_public_jwk(key, index) for index, key in enumerate(keys)]
    kids = [key.get("kid") for key in normalized]
    if len(normalized) > 1 and None in kids:
        # Without a kid, a key of a multi-key set could never be selected unambiguously.
        raise ValueError("every key of a JWK Set with several keys needs a kid")
    if len(set(kids)) != len(kids):
        raise ValueError("the JWK Set has duplicate kids")
    return {"keys": normalized}


def load_remote_jwks(document: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Validates a JWK Set fetched from an issuer's jwks_uri. Returns the normalized set of its
    public signature keys and a note for each key left out. Raises ValueError, naming the key by
    position and never quoting key material, when the set as a whole cannot be trusted.

    Providers publish keys for other purposes beside their signing keys (Keycloak an RSA-OAEP
    encryption key, others keys of types or curves we do not support): those are left out. A key
    that contradicts itself (an alg its type cannot have), holds private or symmetric material, is
    malformed or weak, or a kid used twice, says the server is broken or hostile: the whole set is
    refused, so the last good keys stay in use.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the document is not a JWK Set (an object with a \"keys\" list)")
    keys = document["keys"]
    if len(keys) > MAX_KEYS:
        raise ValueError(f"the JWK Set has more than {MAX_KEYS} keys")
    kept: list[dict[str, Any]] = []
    ignored: list[str] = []
    for index, jwk in enumerate(keys):
        reason = _not_for_signatures(jwk, index)
        if reason:
            ignored.append(reason)
        else:
            kept.append(_normalized_public_jwk(jwk, index))
    if not kept:
        raise ValueError("the JWK Set has no usable signature key" + (f" ({'; '.join(ignored)})" if ignored else ""))
    kids = [key.get("kid") for key in kept]
    if len(kept) > 1 and None in kids:
        raise ValueError("every key of a JWK Set with several keys needs a kid")
    if len(set(kids)) != len(kids):
        raise ValueError("the JWK Set has duplicate kids")
    return {"keys": kept}, tuple(ignored)


def _not_for_signatures(jwk: Any, index: int) -> str:
    """Why a key of a fetched set is left out, or "" when it is a signature key to validate."""
    where = f"key {index}"
    if not isinstance(jwk, dict):
        raise ValueError(f"{where} is not a JSON object")
    if jwk.get("kty") == "oct" or any(member in jwk for member in _PRIVATE_MEMBERS):
        raise ValueError(f"{where} holds private or symmetric key material; only public keys are accepted")
    if "use" in jwk and jwk["use"] != "sig":
        return f"{where} is not for signatures (use {excerpt(str(jwk['use']))})"
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return f"{where} is not for verification (key_ops)"
    alg = jwk.get("alg")
    if isinstance(alg, str) and alg not in ASYMMETRIC_ALGORITHMS and alg not in _SIGNATURE_ALGORITHMS:
        return f"{where} is for the algorithm {excerpt(alg)}, which is not a supported signature algorithm"
    if jwk.get("kty") not in _KEY_MEMBERS:
        return f"{where} has a key type we do not support"
    if jwk["kty"] in _CURVES and jwk.get("crv") not in _CURVES[jwk["kty"]]:
        return f"{where} has a curve we do not support"
    return ""


def _as_document(jwks: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(jwks, str):
        if len(jwks) > MAX_JWKS_CHARS:
            raise ValueError("the JWK Set is too large")
        try:
            jwks = json.loads(jwks)
        except (ValueError, RecursionError):
            raise ValueError("the JWK Set is not valid JSON") from None
    if not isinstance(jwks, dict):
        raise ValueError("the JWK Set must be a JSON object")
    return jwks


def _normalized_public_jwk(jwk: Any, index: int) -> dict[str, Any]:
    """The key's public members only, after checking it parses and is strong enough."""
    where = f"key {index}"
    if not isinstance(jwk, dict):
        raise ValueError(f"{where} is not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct" or any(member in jwk for member in _PRIVATE_MEMBERS):
        raise ValueError(f"{where} holds private or symmetric key material; only public keys are accepted")
    if kty not in _KEY_MEMBERS:
        raise ValueError(f"{where} has an unsupported kty (RSA, EC or OKP)")
    normalized: dict[str, Any] = {"kty": kty}
    for member in _KEY_MEMBERS[kty]:
        if not isinstance(jwk.get(member), str) or not jwk[member]:
            raise ValueError(f"{where} lacks the member {member!r}")
        normalized[member] = jwk[member]
    if kty in _CURVES and normalized["crv"] not in _CURVES[kty]:
        raise ValueError(f"{where} has an unsupported crv")
    normalized.update(_metadata(jwk, where))
    if "alg" in normalized and not fits(normalized, normalized["alg"]):
        raise ValueError(f"{where} declares an alg that does not fit its key type")
    _check_key_material(normalized, where)
    return normalized


def _metadata(jwk: dict[str, Any], where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if "kid" in jwk:
        if not isinstance(jwk["kid"], str) or not jwk["kid"]:
            raise ValueError(f"{where} has a kid that is not a non-empty string")
        meta["kid"] = jwk["kid"]
    if "use" in jwk:
        if jwk["use"] != "sig":
            raise ValueError(f"{where} has a use other than 'sig'")
        meta["use"] = "sig"
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops or not all(isinstance(op, str) for op in ops):
            raise ValueError(f"{where} has key_ops without 'verify'")
        meta["key_ops"] = ["verify"]
    if "alg" in jwk:
        if jwk["alg"] not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"{where} declares an unsupported alg")
        meta["alg"] = jwk["alg"]
    return meta


def _check_key_material(jwk: dict[str, Any], where: str) -> None:
    algorithm = jwk.get("alg") or ("RS256" if jwk["kty"] == "RSA" else _PARSE_ALGORITHM[jwk["crv"]])
    try:
        key = jwt.PyJWK(jwk, algorithm=algorithm).key
    except Exception:  # noqa: BLE001 - any parse failure of submitted material is a refusal
        # PyJWT's messages may quote the JWK, so they are not passed on.
        raise ValueError(f"{where} is not a valid public key") from None
    if jwk["kty"] == "RSA" and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"{where} is an RSA key shorter than {MIN_RSA_BITS} bits")


def fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """True when `alg` may be used with this (public) JWK: type, curve and declared alg agree."""
    if alg not in ASYMMETRIC_ALGORITHMS:
        return False
    kty, curves = ASYMMETRIC_ALGORITHMS[alg]
    if jwk.get("kty") != kty or (curves is not None and jwk.get("crv") not in curves):
        return False
    return jwk.get("alg") in (None, alg)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A thread-safe map of at most `capacity` entries, the least recently used evicted first."""

    def __init__(self, capacity: int = 256) -> None:
        self._entries: BoundedMap[K, V] = BoundedMap(capacity, lru=True)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries.put(key, value)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class IssuerKeys:
    """An issuer's usable keys, parsed once: kid -> alg -> PyJWK (each PyJWK is bound to one alg)."""

    by_kid: Mapping[str, Mapping[str, jwt.PyJWK]] = field(default_factory=dict)
    # The keys of a set holding exactly one key, usable by a token that names no kid.
    only_key: Mapping[str, jwt.PyJWK] | None = None

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        candidates = self.only_key if kid is None else self.by_kid.get(kid)
        return None if candidates is None else candidates.get(alg)


class JwksCache:
    """{issuer id: (record, content hash, IssuerKeys)}: a record's keys are parsed once per content,
    so a rotation (new hash) is picked up on the next token while verification never re-parses
    keys. The record the keys were last found for is kept too: the fact cache and the revision
    memo hand out the same record object until it may have changed, and for that object the
    content is not hashed again (hashing a key set costs more than checking a signature)."""

    def __init__(self, capacity: int = 256) -> None:
        self._entries: BoundedCache[str, tuple[IssuerRecord, str, IssuerKeys]] = BoundedCache(capacity)

    def keys_for(self, issuer: IssuerRecord) -> IssuerKeys:
        entry = self._entries.get(issuer.id)
        if entry is not None and entry[0] is issuer:
            return entry[2]
        fingerprint = _fingerprint(issuer)
        if entry is not None and entry[1] == fingerprint:
            keys = entry[2]
        else:
            keys = _parse_issuer_keys(issuer)  # outside the lock: concurrent misses just parse twice
        self._entries.put(issuer.id, (issuer, fingerprint, keys))
        return keys


def _fingerprint(issuer: IssuerRecord) -> str:
    content = json.dumps([issuer.jwks, list(issuer.algorithms)], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def _parse_issuer_keys(issuer: IssuerRecord) -> IssuerKeys:
    raw = issuer.jwks.get("keys") if isinstance(issuer.jwks, dict) else None
    if not isinstance(raw, list):
        return IssuerKeys()
    parsed: list[tuple[str | None, dict[str, jwt.PyJWK]]] = []
    for index, jwk in enumerate(raw):
        try:
            public = _normalized_public_jwk(jwk, index)
        except ValueError:
            continue  # unusable or private key in the record: never used (fail closed)
        bound = {alg: jwt.PyJWK(public, algorithm=alg) for alg in issuer.algorithms if fits(public, alg)}
        parsed.append((public.get("kid"), bound))
    kids = [kid for kid, _ in parsed if kid is not None]
    # A kid present twice is ambiguous: neither key is used.
    by_kid = {kid: bound for kid, bound in parsed if kid is not None and kids.count(kid) == 1}
    only_key = parsed[0][1] if len(raw) == 1 and len(parsed) == 1 else None
    return IssuerKeys(by_kid=by_kid, only_key=only_key)
