"""Tollgate's own token service: client credentials and refresh grants (RFC 6749), revocation
(RFC 7009) and introspection (RFC 7662), behind both the HTTP endpoints and tollgate.v1.Tokens.

Access tokens are RFC 9068 JWTs signed with the active signing key; Check verifies them as tokens
of the built-in issuer (service/tokens/verifier.py). Refresh tokens are opaque and stored only as
digests; each use rotates it, and a spent one presented again revokes its whole family (RFC 9700
section 4.14.2), together with every access token issued from that family.

Every refusal is an OAuthError whose code is an RFC 6749 section 5.2 error. Failed client
authentication is charged to the client id and to the client address, and either one out of
tokens is refused before any lookup (temporarily_unavailable, 429): guessing secrets costs the
attacker time and us one digest comparison each.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..domain import opaque
from ..domain.bounded import BoundedMap
from ..domain.credentials import PresentedCredential, PresentedKind
from ..domain.decide import effective_grants
from ..domain.errors import CredentialRejected
from ..domain.ids import new_id
from ..domain.model import (
    AuthenticatedCredential,
    CredentialKind,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    Principal,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
)
from ..domain.oauth import (
    FAMILY_CLAIM,
    INACTIVE,
    ClientCredentials,
    GrantType,
    Introspection,
    IssuedToken,
    OAuthError,
    OAuthErrorCode,
    TokenRequest,
    ceiling_scopes,
    granted_scopes,
    narrowed_scopes,
    requested_scopes,
)
from ..domain.policy import Policy
from ..domain.ports import (
    CachedFactSource,
    Clock,
    CredentialVerifier,
    Facts,
    NotInMemory,
    Repositories,
    TokenSigner,
    UnitOfWork,
)
from ..domain.rate_limit import RateLimiter
from ..domain.scopes import GrantSet
from .callers import ADMIN_PERMISSION, INTROSPECT_PERMISSION

# Clients whose ceilings are kept (see TokenService._ceiling).
MAX_CEILINGS = 4096
# Compared against when the client id is unknown, so that an unknown id costs what a known one does.
_NO_SECRET_DIGEST = opaque.digest("")


@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    audience: str
    access_token_lifetime: timedelta
    refresh_token_lifetime: timedelta
    customer_claim: str
    signing_algorithm: str


@dataclass(frozen=True)
class IntrospectionCaller:
    """Who asks to introspect: an OAuth client (by its credentials) or a bearer credential."""

    client: ClientCredentials | None = None
    bearer: PresentedCredential | None = None


class ClientAuthentication:
    """Authenticates OAuth clients, limiting failures per client id and per address."""

    def __init__(self, failures_per_client: RateLimiter, failures_per_address: RateLimiter,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._per_client = failures_per_client
        self._per_address = failures_per_address
        self._monotonic = monotonic

    def authenticate(self, facts: Facts, credentials: ClientCredentials | None,
                     client_address: str) -> tuple[OAuthClientRecord, PartnerRecord]:
        if credentials is None or not credentials.client_id:
            raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "client authentication is required")
        now = self._monotonic()
        wait = max(self._per_client.blocked_for(credentials.client_id, now),
                   self._per_address.blocked_for(client_address, now))
        if wait:
            raise OAuthError(OAuthErrorCode.TEMPORARILY_UNAVAILABLE,
                             f"too many failed client authentications; retry in {wait} s", retry_after=wait)
        client = facts.oauth_clients.get(credentials.client_id)
        presented = opaque.digest(credentials.client_secret)
        if not secrets.compare_digest(presented, client.secret_digest if client else _NO_SECRET_DIGEST) \
                or client is None or client.revoked_at is not None:
            self._per_client.retry_after(credentials.client_id, 1, now)
            self._per_address.retry_after(client_address, 1, now)
            raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "client authentication failed")
        partner = facts.partners.get(client.partner_id)
        if partner is None or partner.status is not PartnerStatus.ACTIVE:
            raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the client's partner is suspended")
        return client, partner


class TokenService:
    def __init__(self, policy: Callable[[], Policy], unit_of_work: UnitOfWork, clock: Clock, signer: TokenSigner,
                 verifier: CredentialVerifier, settings: TokenSettings, clients: ClientAuthentication,
                 cache: CachedFactSource | None = None) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._signer = signer
        self._verifier = verifier
        self._settings = settings
        self._clients = clients
        self._cache = cache
        # Clients' ceilings under the policy in force (see _ceiling); swapped whole with the policy.
        self._ceilings: tuple[Policy | None, BoundedMap[tuple, tuple[GrantSet, tuple[str, ...]]]] = (
            None, BoundedMap(MAX_CEILINGS))

    @property
    def settings(self) -> TokenSettings:
        return self._settings

    # -- the token endpoint (RFC 6749 sections 4.4 and 6) ----------------------------------------

    def issue(self, request: TokenRequest, client_address: str = "") -> IssuedToken:
        """Raises OAuthError; StoreUnavailable when the store is down."""
        if request.grant_type == GrantType.CLIENT_CREDENTIALS:
            return self._client_credentials(request, client_address)
        if request.grant_type == GrantType.REFRESH_TOKEN:
            return self._refresh(request, client_address)
        if not request.grant_type:
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "grant_type is required")
        raise OAuthError(OAuthErrorCode.UNSUPPORTED_GRANT_TYPE,
                         "the grants are client_credentials and refresh_token (the password grant is not offered)")

    def issue_from_memory(self, request: TokenRequest, client_address: str = "") -> IssuedToken | None:
        """issue(), for a client-credentials grant whose every fact is in the fact cache and which
        writes nothing (no refresh token): it never blocks, so an event loop may call it itself
        instead of handing the request to a thread. None: call issue() on a thread."""
        cache = self._cache
        if request.grant_type != GrantType.CLIENT_CREDENTIALS or cache is None or not cache.is_current():
            return None
        try:
            client, scope, key = self._client_credentials_grant(request, client_address, cache.memory_facts,
                                                                may_block=False)
        except NotInMemory:
            return None
        if client.refresh_tokens:
            return None
        return self._issued(client, scope, key, self._clock.now(), None, "")

    def _client_credentials(self, request: TokenRequest, client_address: str) -> IssuedToken:
        with self._facts() as facts:
            client, scope, key = self._client_credentials_grant(request, client_address, facts, may_block=True)
        now = self._clock.now()
        refresh = ""
        family_id = None
        if client.refresh_tokens:
            family_id = new_id("rtf")
            with self._unit_of_work() as repos:
                repos.refresh_tokens.add_family(RefreshFamilyRecord(family_id, client.id, scope, now))
                refresh = self._new_refresh_token(repos, family_id, client.id, now)
        return self._issued(client, scope, key, now, family_id, refresh)

    def _client_credentials_grant(self, request: TokenRequest, client_address: str, facts: Facts, *,
                                  may_block: bool) -> tuple[OAuthClientRecord, tuple[str, ...], SigningKeyRecord]:
        """The authenticated client, the scopes its token gets, and the key that signs it."""
        requested = requested_scopes(request.scope)
        policy = self._policy()
        client, partner = self._clients.authenticate(facts, request.client, client_address)
        scope = (self._default_scopes(policy, client, partner) if requested is None
                 else granted_scopes(policy, requested, self._client_ceiling(policy, client, partner)))
        key = facts.signing_keys.active()
        if key is None and not may_block:
            raise NotInMemory()  # making the first key writes to the store
        return client, scope, key or self.ensure_signing_key()

    def _refresh(self, request: TokenRequest, client_address: str) -> IssuedToken:
        if not request.refresh_token:
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "refresh_token is required")
        requested = requested_scopes(request.scope)
        policy = self._policy()
        with self._facts() as facts:
            client, partner = self._clients.authenticate(facts, request.client, client_address)
            ceiling = self._client_ceiling(policy, client, partner)
            key = facts.signing_keys.active() or self.ensure_signing_key()
        if not client.refresh_tokens:
            raise OAuthError(OAuthErrorCode.UNAUTHORIZED_CLIENT, "this client does not get refresh tokens")
        if not opaque.well_formed(request.refresh_token, opaque.REFRESH_TOKEN_PREFIX):
            raise OAuthError(OAuthErrorCode.INVALID_GRANT, "the refresh token is not valid")
        now = self._clock.now()
        reused = False
        with self._unit_of_work() as repos:
            token = repos.refresh_tokens.find_by_digest(opaque.digest(request.refresh_token))
            family = repos.refresh_tokens.get_family(token.family_id) if token is not None else None
            if token is None or family is None or token.client_id != client.id:
                raise OAuthError(OAuthErrorCode.INVALID_GRANT, "the refresh token is not valid")
            if family.revoked_at is not None:
                raise OAuthError(OAuthErrorCode.INVALID_GRANT, "the refresh token has been revoked")
            if token.used_at is not None or not repos.refresh_tokens.mark_used(token.id, now):
                # Reuse of a spent token: someone else holds a copy. The whole family goes, in
                # this transaction, and the error follows once it is committed.
                repos.refresh_tokens.revoke_family(family.id, now)
                reused = True
            elif token.expires_at <= now:
                raise OAuthError(OAuthErrorCode.INVALID_GRANT, "the refresh token has expired")
            else:
                scope = narrowed_scopes(policy, requested, family.scope)
                granted_scopes(policy, scope, ceiling)  # the client may have lost grants since
                refresh = self._new_refresh_token(repos, family.id, client.id, now)
        if reused:
            raise OAuthError(OAuthErrorCode.INVALID_GRANT,
                             "the refresh token was already used; its family of tokens is revoked")
        return self._issued(client, scope, key, now, family.id, refresh)

    def _issued(self, client: OAuthClientRecord, scope: tuple[str, ...], key: SigningKeyRecord, now: datetime,
                family_id: str | None, refresh: str) -> IssuedToken:
        settings = self._settings
        lifetime = int(settings.access_token_lifetime.total_seconds())
        issued_at = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": settings.issuer, "sub": client.id, "client_id": client.id, "aud": settings.audience,
            "scope": " ".join(scope), "jti": new_id("at"), "iat": issued_at, "exp": issued_at + lifetime,
            "partner_id": client.partner_id,
        }
        if client.customer_numbers:
            claims[settings.customer_claim] = list(client.customer_numbers)
        if family_id is not None:
            claims[FAMILY_CLAIM] = family_id
        return IssuedToken(access_token=self._signer.sign(claims, key), expires_in=lifetime, scope=" ".join(scope),
                           refresh_token=refresh)

    def _new_refresh_token(self, repos: Repositories, family_id: str, client_id: str, now: datetime) -> str:
        plaintext = opaque.generate(opaque.REFRESH_TOKEN_PREFIX)
        repos.refresh_tokens.add(RefreshTokenRecord(
            id=new_id("rt"), family_id=family_id, client_id=client_id, digest=opaque.digest(plaintext),
            created_at=now, expires_at=now + self._settings.refresh_token_lifetime))
        return plaintext

    def _client_ceiling(self, policy: Policy, client: OAuthClientRecord, partner: PartnerRecord) -> GrantSet:
        """What the client's tokens may carry: its own scopes (else its partner's grants, or the
        roles the policy gives OAuth clients), never beyond its partner's grants."""
        return self._ceiling(policy, client, partner)[0]

    def _default_scopes(self, policy: Policy, client: OAuthClientRecord, partner: PartnerRecord) -> tuple[str, ...]:
        """The scopes of a token requested without any: the whole ceiling, spelled canonically."""
        return self._ceiling(policy, client, partner)[1]

    def _ceiling(self, policy: Policy, client: OAuthClientRecord,
                 partner: PartnerRecord) -> tuple[GrantSet, tuple[str, ...]]:
        # Pure in the policy and the grant inputs of the client and its partner, and every grant of
        # a client asks it again: computed once per policy and inputs (value keys, so an entry can
        # only ever answer for equal inputs).
        policy_of, kept = self._ceilings
        if policy_of is not policy:
            kept = BoundedMap(MAX_CEILINGS)
            self._ceilings = (policy, kept)
        key = (client.scopes, partner.grants, partner.roles)
        found = kept.get(key)
        if found is None:
            credential = AuthenticatedCredential(
                principal=Principal(partner.id, client.id, CredentialKind.OAUTH_CLIENT), partner=partner,
                own_grants=client.scopes)
            ceiling = effective_grants(policy, credential)
            found = (ceiling, ceiling_scopes(policy, ceiling))
            kept.put(key, found)
        return found

    # -- revocation (RFC 7009) -------------------------------------------------------------------

    def revoke(self, client: ClientCredentials | None, token: str, client_address: str = "") -> None:
        """Revokes a refresh token (its whole family) or an access token (its jti) of the calling
        client. A token that is unknown, expired or already revoked is no error (RFC 7009 2.2)."""
        if not token:
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "token is required")
        with self._facts() as facts:
            caller, _ = self._clients.authenticate(facts, client, client_address)
        if token.startswith(opaque.API_KEY_PREFIX):
            raise OAuthError(OAuthErrorCode.UNSUPPORTED_TOKEN_TYPE, "API keys are revoked by an administrator")
        now = self._clock.now()
        if token.startswith(opaque.REFRESH_TOKEN_PREFIX):
            with self._unit_of_work() as repos:
                found = repos.refresh_tokens.find_by_digest(opaque.digest(token))
                if found is None:
                    return
                _owned_by(found.client_id, caller)
                repos.refresh_tokens.revoke_family(found.family_id, now)
            return
        with self._facts() as facts:
            access_token = self._verifier.own_access_token(token, facts, now)
        if access_token is None:
            return  # not a live access token of ours: nothing is left to revoke
        _owned_by(access_token.client_id, caller)
        with self._unit_of_work() as repos:
            repos.revoked_access_tokens.revoke(access_token.jti, access_token.client_id, now, access_token.expires_at)

    # -- introspection (RFC 7662) ----------------------------------------------------------------

    def introspect(self, caller: IntrospectionCaller, token: str, client_address: str = "") -> Introspection:
        """Raises OAuthError invalid_client (no or bad caller credential) or insufficient_scope
        (a caller without the introspect grant)."""
        self._authorize_introspection(caller, client_address)
        if not token:
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "token is required")
        now = self._clock.now()
        if token.startswith(opaque.REFRESH_TOKEN_PREFIX):
            return self._introspect_refresh_token(token, now)
        if token.startswith(opaque.API_KEY_PREFIX):
            return self._introspect_credential(PresentedCredential(PresentedKind.API_KEY, token), now)
        return self._introspect_credential(PresentedCredential(PresentedKind.JWT, token), now)

    def _authorize_introspection(self, caller: IntrospectionCaller, client_address: str) -> None:
        policy = self._policy()
        if caller.client is not None:
            with self._facts() as facts:
                client, partner = self._clients.authenticate(facts, caller.client, client_address)
            grants = self._client_ceiling(policy, client, partner)
        elif caller.bearer is not None:
            try:
                with self._facts() as facts:
                    credential = self._verifier.verify(caller.bearer, facts, self._clock.now())
            except CredentialRejected:
                raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the caller's credential is not valid") from None
            grants = effective_grants(policy, credential)
        else:
            raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "introspection needs an authenticated caller")
        if not (grants.allows(INTROSPECT_PERMISSION) or grants.allows(ADMIN_PERMISSION)):
            raise OAuthError(OAuthErrorCode.INSUFFICIENT_SCOPE, "the caller holds no introspect grant")

    def _introspect_credential(self, presented: PresentedCredential, now: datetime) -> Introspection:
        try:
            with self._facts() as facts:
                credential = self._verifier.verify(presented, facts, now)
        except CredentialRejected:
            return INACTIVE
        kind = credential.principal.kind
        if kind is CredentialKind.JWT:
            return INACTIVE  # another issuer's token: not ours to vouch for
        policy = self._policy()
        scope = " ".join(ceiling_scopes(policy, effective_grants(policy, credential)))
        expires = int(credential.expires_at.timestamp()) if credential.expires_at else 0
        if kind is CredentialKind.API_KEY:
            return Introspection(active=True, scope=scope, client_id=credential.principal.credential_id,
                                 sub=credential.principal.partner_id, exp=expires, token_type="api_key")
        client_id, _, jti = credential.principal.credential_id.partition(":")
        return Introspection(active=True, scope=scope, client_id=client_id, sub=client_id, exp=expires,
                             token_type="Bearer", iss=self._settings.issuer, aud=self._settings.audience, jti=jti)

    def _introspect_refresh_token(self, token: str, now: datetime) -> Introspection:
        if not opaque.well_formed(token, opaque.REFRESH_TOKEN_PREFIX):
            return INACTIVE
        with self._unit_of_work(read_only=True) as repos:
            found = repos.refresh_tokens.find_by_digest(opaque.digest(token))
            family = repos.refresh_tokens.get_family(found.family_id) if found is not None else None
            client = repos.oauth_clients.get(found.client_id) if found is not None else None
            partner = repos.partners.get(client.partner_id) if client is not None else None
        if (found is None or family is None or client is None or partner is None or found.used_at is not None
                or found.expires_at <= now or family.revoked_at is not None or client.revoked_at is not None
                or partner.status is not PartnerStatus.ACTIVE):
            return INACTIVE
        return Introspection(active=True, scope=" ".join(family.scope), client_id=client.id, sub=client.id,
                             exp=int(found.expires_at.timestamp()), iat=int(found.created_at.timestamp()),
                             token_type="refresh_token", iss=self._settings.issuer)

    # -- keys ------------------------------------------------------------------------------------

    def published_keys(self) -> list[dict[str, Any]]:
        """The public JWKs of the keys whose tokens may still be valid (RFC 7517 key set)."""
        now = self._clock.now()
        with self._facts() as facts:
            return [key.public_jwk for key in facts.signing_keys.published(now)]

    def ensure_signing_key(self) -> SigningKeyRecord:
        """The active signing key, made (and stored) when there is none: at the first start.
        Workers starting together race to insert; the database keeps one, and all use it."""
        with self._unit_of_work(read_only=True) as repos:
            active = repos.signing_keys.active()
        if active is not None:
            return active
        key = self._signer.new_key(self._settings.signing_algorithm, self._clock.now())
        with self._unit_of_work() as repos:
            if repos.signing_keys.add_active(key):
                return key
        with self._unit_of_work(read_only=True) as repos:
            active = repos.signing_keys.active()
        assert active is not None, "another worker's key was inserted and then retired at once"
        return active

    def _facts(self) -> AbstractContextManager[Facts]:
        """What the requests read (clients, partners, keys): the fact cache while it is current,
        else a read-only unit of work."""
        cache = self._cache
        if cache is not None and cache.is_current():
            return nullcontext(cache.facts)
        return self._unit_of_work(read_only=True)


def _owned_by(client_id: str, caller: OAuthClientRecord) -> None:
    if client_id != caller.id:
        # RFC 7009 section 2.1: the token must have been issued to the client asking.
        raise OAuthError(OAuthErrorCode.INVALID_GRANT, "the token was not issued to this client")
