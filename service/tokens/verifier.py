"""TokenVerifier: proves an API key or a JWT access token (RFC 8725 best practices, RFC 9068).

Every refusal is a CredentialRejected whose reason is invalid_token, token_expired or
token_revoked, with a short fixed message: never the token, a key or a secret, and never a
PyJWT message (those may quote key material). Time checks use the injected `now`, not the
wall clock, so decisions are reproducible.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeGuard

import jwt
from jwt import PyJWK

from ..domain import opaque
from ..domain.bounded import BoundedMap
from ..domain.credentials import MAX_CREDENTIAL_LENGTH, PresentedCredential, PresentedKind
from ..domain.errors import CredentialRejected
from ..domain.model import (
    ApiKeyRecord,
    AuthenticatedCredential,
    CredentialKind,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    Principal,
    SigningKeyRecord,
)
from ..domain.oauth import FAMILY_CLAIM, OwnAccessToken
from ..domain.ports import Facts, RemoteKeySource
from .jwks import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, BoundedCache, JwksCache
from .sealing import fernet_for, unseal_with

log = logging.getLogger("tollgate.tokens")

INVALID = "invalid_token"
EXPIRED = "token_expired"
REVOKED = "token_revoked"

# A compact JWS segment: base64url, optionally padded (some issuers pad). The signature may be empty
# here; PyJWT refuses it later.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*={0,2}")

# RFC 9068 section 2.1: access tokens carry typ "at+jwt" (the full media type is accepted too).
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

# Signature, iss and aud are checked by PyJWT; the times by us against `now` (see _check_times).
# enforce_minimum_key_length: an HMAC secret shorter than the hash (RFC 7518 section 3.2) or an
# RSA key under 2048 bits is refused instead of merely warned about.


# The id under which Tollgate's own issuer appears where an issuer id is needed (key caches).
OWN_ISSUER_ID = "tollgate"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OwnIssuer:
    """Tollgate's own issuer, built in: its tokens need no registration. Its keys are the
    published signing keys in the store."""

    issuer: str
    audience: str
    customer_claim: str


def _reject(message: str, reason: str = INVALID) -> CredentialRejected:
    return CredentialRejected(message, reason=reason)


class TokenVerifier:
    """Implements domain.ports.CredentialVerifier. Thread-safe; keeps parsed keys and unsealed
    HMAC secrets in bounded caches keyed by issuer id and content, so a key rotation or a new
    secret in the store takes effect on the next token."""

    def __init__(self, *, key_encryption_key: str | None, leeway: timedelta = timedelta(seconds=30),
                 own_issuer: OwnIssuer | None = None, remote_keys: RemoteKeySource | None = None) -> None:
        # A malformed KEK fails here, at start-up, rather than on the first HMAC token.
        self._fernet = fernet_for(key_encryption_key) if key_encryption_key else None
        self._leeway = leeway.total_seconds()
        self._keys = JwksCache()
        self._secrets: BoundedCache[str, tuple[str, bytes]] = BoundedCache(256)
        self._own = own_issuer
        # Asked for newer keys when a remote issuer's token names a kid its stored keys lack.
        self._remote_keys = remote_keys
        # The own issuer as an IssuerRecord, for the kids it was built from (rebuilt on rotation).
        self._own_record: tuple[tuple[str, ...], IssuerRecord] | None = None

    def verify(self, presented: PresentedCredential, facts: Facts, now: datetime) -> AuthenticatedCredential:
        value = presented.value
        if not isinstance(value, str) or not value or len(value) > MAX_CREDENTIAL_LENGTH:
            raise _reject("the credential is malformed")
        if presented.kind == PresentedKind.API_KEY:
            return self._verify_api_key(value, facts, now)
        if presented.kind == PresentedKind.JWT:
            return self._verify_jwt(value, facts, now)
        raise _reject("unsupported credential kind")

    # --- API keys -------------------------------------------------------------------------

    def _verify_api_key(self, value: str, facts: Facts, now: datetime) -> AuthenticatedCredential:
        # The checksum refuses typos and garbage without a store query.
        if not opaque.well_formed(value, opaque.API_KEY_PREFIX):
            raise _reject("the API key is malformed")
        key = facts.api_keys.find_by_digest(opaque.digest(value))
        if key is None:
            raise _reject("unknown API key")
        if key.expires_at is not None and key.expires_at <= now:
            raise _reject("the API key has expired", EXPIRED)
        if key.revoked_at is not None:
            raise _reject("the API key has been revoked", REVOKED)
        partner = _active_partner(facts, key.partner_id)
        return _api_key_credential(key, partner)

    # --- JWT access tokens ----------------------------------------------------------------

    def _verify_jwt(self, token: str, facts: Facts, now: datetime) -> AuthenticatedCredential:
        jws = _read_unverified(token)
        unverified = jws.payload
        alg, kid, typ = _checked_header(jws.header)
        if self._own is not None and unverified.get("iss") == self._own.issuer:
            return self._verify_own_token(jws, alg, kid, typ, facts, now)
        issuer = _known_issuer(unverified, facts)
        _check_algorithm(issuer, alg)
        _check_typ(issuer, typ)
        key = self._verification_key(issuer, alg, kid)
        claims = _verified_claims(jws, key, alg, issuer)
        expires_at = self._check_times(claims, now)
        partner = _active_partner(facts, _partner_id(claims))
        credential_id = _credential_id(claims, issuer, facts)
        return AuthenticatedCredential(
            principal=Principal(partner.id, credential_id, CredentialKind.JWT),
            partner=partner,
            token_scopes=_scopes(claims),
            customer_numbers=_customer_numbers(claims, issuer.customer_claim),
            expires_at=expires_at,
            token_claims=_string_claims(claims),
        )

    def _verify_own_token(self, jws: _Jws, alg: str, kid: str | None, typ: str | None, facts: Facts,
                          now: datetime) -> AuthenticatedCredential:
        """A token Tollgate issued: the same checks as any issuer's (alg, typ at+jwt, signature, iss,
        aud, exp), then its client, partner, jti and refresh family must all still stand."""
        own = self._own
        assert own is not None  # only tokens naming the own issuer come here
        claims, expires_at = self._own_claims(jws, alg, kid, typ, facts, now)
        client = _active_client(facts, claims.get("client_id"))
        partner = _active_partner(facts, client.partner_id)
        jti = _own_jti(claims)
        if facts.revoked_access_tokens.is_revoked(jti):
            raise _reject("the token has been revoked", REVOKED)
        family_id = claims.get(FAMILY_CLAIM)
        if family_id is not None:
            family = facts.refresh_tokens.get_family(family_id) if isinstance(family_id, str) else None
            if family is None or family.revoked_at is not None:
                raise _reject("the token's refresh token family has been revoked", REVOKED)
        return AuthenticatedCredential(
            principal=Principal(partner.id, f"{client.id}:{jti}", CredentialKind.OAUTH_CLIENT),
            partner=partner,
            token_scopes=_scopes(claims),
            customer_numbers=_customer_numbers(claims, own.customer_claim),
            expires_at=expires_at,
            token_claims=_string_claims(claims),
        )

    def own_access_token(self, token: str, facts: Facts, now: datetime) -> OwnAccessToken | None:
        """What revocation needs of a token Tollgate issued: its signature, iss, aud, typ and exp
        checked, and nothing else (a token of a suspended partner or a revoked client can still be
        revoked for good). None for any other token."""
        if self._own is None or not isinstance(token, str) or len(token) > MAX_CREDENTIAL_LENGTH:
            return None
        try:
            jws = _read_unverified(token)
            alg, kid, typ = _checked_header(jws.header)
            if jws.payload.get("iss") != self._own.issuer:
                return None
            claims, expires_at = self._own_claims(jws, alg, kid, typ, facts, now)
            client_id = claims.get("client_id")
            if not isinstance(client_id, str) or not client_id:
                return None
            return OwnAccessToken(client_id=client_id, jti=_own_jti(claims), expires_at=expires_at)
        except CredentialRejected:
            return None

    def _own_claims(self, jws: _Jws, alg: str, kid: str | None, typ: str | None, facts: Facts,
                    now: datetime) -> tuple[dict[str, Any], datetime]:
        issuer = self._own_issuer_record(facts.signing_keys.published(now))
        _check_algorithm(issuer, alg)
        _check_typ(issuer, typ)
        claims = _verified_claims(jws, self._verification_key(issuer, alg, kid), alg, issuer)
        return claims, self._check_times(claims, now)

    def _own_issuer_record(self, keys: list[SigningKeyRecord]) -> IssuerRecord:
        """The own issuer as an issuer record over its published keys, so that its tokens go
        through exactly the checks every issuer's do."""
        assert self._own is not None
        kids = tuple(key.kid for key in keys)
        cached = self._own_record
        if cached is not None and cached[0] == kids:
            return cached[1]
        record = IssuerRecord(
            id=OWN_ISSUER_ID, issuer=self._own.issuer, audience=self._own.audience,
            algorithms=tuple(sorted({key.algorithm for key in keys})), jwks={"keys": [key.public_jwk for key in keys]},
            hmac_secret_sealed=None, require_at_jwt_typ=True, customer_claim=self._own.customer_claim,
            created_at=_EPOCH)
        self._own_record = (kids, record)
        return record

    def _verification_key(self, issuer: IssuerRecord, alg: str, kid: str | None) -> Any:
        """Keys only ever come from the issuer record, or for a remote issuer from its registered
        jwks_uri: jku, x5u, jwk and x5c headers are ignored."""
        if alg in HMAC_ALGORITHMS:
            return self._hmac_secret(issuer)
        key = self._keys.keys_for(issuer).find(kid, alg)
        if key is None and issuer.remote is not None and self._remote_keys is not None:
            # The provider may have rotated: at most one refetch per cool-down, shared
            # by concurrent requests (usecases/remote_keys.py).
            fresher = self._remote_keys.fresher_keys(issuer)
            if fresher is not None:
                key = self._keys.keys_for(replace(issuer, jwks=fresher)).find(kid, alg)
        if key is None:
            # Also covers a kid whose key type does not fit alg (e.g. an RSA key for ES256).
            raise _reject("unknown key id")
        return key

    def _hmac_secret(self, issuer: IssuerRecord) -> bytes:
        sealed = issuer.hmac_secret_sealed
        if self._fernet is None or not sealed:
            raise _reject("the issuer's secret is unavailable")
        cached = self._secrets.get(issuer.id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        try:
            secret = unseal_with(self._fernet, sealed)
        except ValueError:
            # An operator problem (wrong KEK), not the caller's: say so in the log, once per token.
            log.warning("cannot unseal the HMAC secret of issuer %s with the configured key", issuer.id)
            raise _reject("the issuer's secret is unavailable") from None
        self._secrets.put(issuer.id, (sealed, secret))
        return secret

    def _check_times(self, claims: dict[str, Any], now: datetime) -> datetime:
        exp = claims.get("exp")
        if not _is_number(exp):
            raise _reject("the token's exp is not a number")
        try:
            expires_at = datetime.fromtimestamp(exp, tz=UTC)
        except (OverflowError, ValueError, OSError):
            raise _reject("the token's exp is out of range") from None
        moment = now.timestamp()
        if moment > exp + self._leeway:
            raise _reject("the token has expired", EXPIRED)
        if "nbf" in claims:
            nbf = claims["nbf"]
            if not _is_number(nbf):
                raise _reject("the token's nbf is not a number")
            if moment + self._leeway < nbf:
                raise _reject("the token is not yet valid", EXPIRED)
        if "iat" in claims:
            # RFC 7519 section 4.1.6: when the token was issued. A token from further in the future
            # than the clock skew allows was not issued by an issuer whose clock we can trust.
            iat = claims["iat"]
            if not _is_number(iat):
                raise _reject("the token's iat is not a number")
            if moment + self._leeway < iat:
                raise _reject("the token was issued in the future")
        return expires_at


# --- helpers (module level: they keep no state) -------------------------------------------


class _Jws(NamedTuple):
    """A compact JWS taken apart: header and payload parsed, not yet trusted."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _read_unverified(token: str) -> _Jws:
    """The token's parts, parsed with the standard library, each segment canonical base64url (RFC
    7515 section 2: no other spelling of the same bytes is accepted, so one token has one string).

    Until _verified_claims has checked the signature the values are untrusted: they only select
    the issuer, the key and the algorithm. (PyJWT's own parse checks the alphabet character by
    character in Python, which costs more than an RSA signature check: the framing is checked
    here, with a regular expression, and PyJWT's algorithms check the signature.)
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise _reject("the token is malformed")
    header = _HEADERS.get(parts[0])
    try:
        if header is None:
            header = json.loads(_segment_bytes(parts[0]))
            if isinstance(header, dict):
                _HEADERS.put(parts[0], header)
        payload = json.loads(_segment_bytes(parts[1]))
        signature = _segment_bytes(parts[2])
    except Exception:  # noqa: BLE001 - any failure to parse untrusted input is invalid_token
        raise _reject("the token is malformed") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise _reject("the token is malformed")
    return _Jws(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


# Parsed JOSE headers by their segment: an issuer's tokens share a handful (alg, kid, typ), so a
# token's header is parsed once however many tokens carry it. Never changed once parsed (readers
# only read them); a flood of distinct headers empties the map (domain/bounded.py).
_HEADERS: BoundedMap[str, dict[str, Any]] = BoundedMap(1024)


def _segment_bytes(segment: str) -> bytes:
    """Raises ValueError unless `segment` is canonical base64url: the alphabet, padding only where
    it completes a quantum (some issuers send it), and no bits set beyond the encoded bytes."""
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    stripped = segment.rstrip("=")
    if (stripped != segment and len(segment) % 4) or len(stripped) % 4 == 1:
        raise ValueError("bad padding")
    decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != stripped:
        raise ValueError("not canonical")
    return decoded


def _checked_header(header: dict[str, Any]) -> tuple[str, str | None, str | None]:
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or not alg or alg.lower() == "none":
        # RFC 8725 section 3.1 / 2.1: unsigned tokens are never accepted.
        raise _reject("the token's alg is not allowed")
    if "crit" in header:
        # We implement no critical extension, so a token demanding one must be refused (RFC 7515 4.1.11).
        raise _reject("the token has critical header parameters")
    if (kid is not None and not isinstance(kid, str)) or (typ is not None and not isinstance(typ, str)):
        raise _reject("the token's header is malformed")
    return alg, kid, typ


def _known_issuer(unverified: dict[str, Any], facts: Facts) -> IssuerRecord:
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise _reject("the token names no issuer")
    issuer = facts.issuers.find_by_issuer(iss)
    if issuer is None:
        raise _reject("unknown issuer")
    return issuer


def _check_algorithm(issuer: IssuerRecord, alg: str) -> None:
    algorithms = set(issuer.algorithms)
    # Algorithm confusion defence (RFC 8725 section 3.1): an issuer is all-HMAC or all-asymmetric.
    # A record that mixes them, or names an algorithm we do not know, refuses every token.
    if not algorithms or not (algorithms <= HMAC_ALGORITHMS or algorithms <= ASYMMETRIC_ALGORITHMS.keys()):
        raise _reject("the issuer's algorithms are misconfigured")
    if alg not in algorithms:
        raise _reject("the token's alg is not allowed for this issuer")


def _check_typ(issuer: IssuerRecord, typ: str | None) -> None:
    if issuer.require_at_jwt_typ and (typ is None or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise _reject("the token is not an access token (typ at+jwt)")


def _verified_claims(jws: _Jws, key: Any, alg: str, issuer: IssuerRecord) -> dict[str, Any]:
    """The payload, once the signature is verified with `key` by `alg` (from the issuer's allowlist,
    already checked; never "none") and the claims that name the token's use are those of the
    issuer: iss, and aud (a string, or a list of strings) naming its audience; exp, iss and aud are
    required, sub and jti when present are strings (exp, nbf and iat are judged by _check_times).
    The signature is checked by PyJWT's algorithm for `alg`, with its key preparation and minimum
    key length, exactly as jwt.decode would."""
    try:
        if isinstance(key, PyJWK):
            if key.algorithm_name != alg:  # a key is bound to its algorithm
                raise _reject("the token's alg does not match its key")
            algorithm, prepared = key.Algorithm, key.Algorithm.prepare_key(key.key)
        else:  # an HMAC secret
            algorithm = jwt.get_algorithm_by_name(alg)
            prepared = algorithm.prepare_key(key)
        if algorithm.check_key_length(prepared) is not None:
            raise _reject("the issuer's key is too short")
        verified = algorithm.verify(jws.signing_input, prepared, jws.signature)
    except CredentialRejected:
        raise
    except Exception:  # noqa: BLE001 - a key or signature the algorithm cannot use is no signature
        verified = False
    if not verified:
        raise _reject("the token's signature or claims are invalid")
    claims = jws.payload
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if (claims.get("exp") is None or claims.get("iss") != issuer.issuer or not isinstance(audiences, list)
            or not all(isinstance(name, str) for name in audiences) or issuer.audience not in audiences
            or not isinstance(claims.get("sub", ""), str) or not isinstance(claims.get("jti", ""), str)):
        raise _reject("the token's signature or claims are invalid")
    return claims


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _partner_id(claims: dict[str, Any]) -> str:
    # RFC 9068 section 2.2: client_id names the client; sub is the fallback for tokens without it.
    partner_id = claims["client_id"] if "client_id" in claims else claims.get("sub")
    if not isinstance(partner_id, str) or not partner_id:
        raise _reject("the token names no client")
    return partner_id


def _active_partner(facts: Facts, partner_id: str) -> PartnerRecord:
    partner = facts.partners.get(partner_id)
    if partner is None:
        raise _reject("unknown partner")
    if partner.status == PartnerStatus.SUSPENDED:
        raise _reject("the partner is suspended", REVOKED)
    if partner.status != PartnerStatus.ACTIVE:
        raise _reject("the partner is not active", REVOKED)
    return partner


def _own_jti(claims: dict[str, Any]) -> str:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _reject("the token's jti is malformed")
    return jti


def _active_client(facts: Facts, client_id: Any) -> OAuthClientRecord:
    if not isinstance(client_id, str) or not client_id:
        raise _reject("the token names no client")
    client = facts.oauth_clients.get(client_id)
    if client is None:
        raise _reject("unknown client")
    if client.revoked_at is not None:
        raise _reject("the client has been revoked", REVOKED)
    return client


def _credential_id(claims: dict[str, Any], issuer: IssuerRecord, facts: Facts) -> str:
    jti = claims.get("jti")
    if jti is None:
        return f"{issuer.id}:"
    if not isinstance(jti, str) or not jti:
        raise _reject("the token's jti is malformed")
    if facts.revoked_tokens.is_revoked(issuer.id, jti):
        raise _reject("the token has been revoked", REVOKED)
    return f"{issuer.id}:{jti}"


def _scopes(claims: dict[str, Any]) -> tuple[str, ...] | None:
    # RFC 8693/9068 "scope" is a space-separated string; "scp" (common in practice) a list or string.
    if "scope" in claims:
        return _string_list(claims["scope"], "scope", allow_list=False)
    if "scp" in claims:
        return _string_list(claims["scp"], "scp", allow_list=True)
    return None


def _customer_numbers(claims: dict[str, Any], claim: str) -> frozenset[str]:
    if not claim or claim not in claims:
        return frozenset()
    return frozenset(_string_list(claims[claim], "customer", allow_list=True))


def _string_claims(claims: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The verified claims with string values, for the policy to read the acting user from (its
    token_user_claim): the verifier does not know which claim that is, nor whether it is wanted."""
    return tuple((name, value) for name, value in claims.items() if isinstance(value, str))


def _string_list(value: Any, name: str, *, allow_list: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if allow_list and isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise _reject(f"the token's {name} claim is malformed")


def _api_key_credential(key: ApiKeyRecord, partner: PartnerRecord) -> AuthenticatedCredential:
    return AuthenticatedCredential(
        principal=Principal(partner.id, key.id, CredentialKind.API_KEY),
        partner=partner,
        own_grants=key.grants,
        own_roles=key.roles,
        token_scopes=None,
        customer_numbers=frozenset(key.customer_numbers),
        expires_at=key.expires_at,
    )
