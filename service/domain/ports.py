"""Ports: what the use cases need from the outside world, as typing.Protocol.

The store implements the repositories; service/tokens implements CredentialVerifier. Repositories
are bound to one unit of work (one transaction) and never commit: the use case that opened the
unit of work decides. Each repository extends its reader: the reads that credential verification,
Check and the token grants make, which the fact cache (service/check/caching) also answers. Code
that only reads takes `Facts`, so either source will do.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, Protocol

from .credentials import PresentedCredential
from .model import (
    AdminAuditRecord,
    ApiKeyRecord,
    AuthenticatedCredential,
    ConnectTokenRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    RelationEventRecord,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    SigningKeyRecord,
    SubjectType,
)
from .oauth import OwnAccessToken


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class PartnerReader(Protocol):
    def get(self, partner_id: str) -> PartnerRecord | None: ...


class ApiKeyReader(Protocol):
    def find_by_digest(self, digest: str) -> ApiKeyRecord | None: ...


class IssuerReader(Protocol):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        """Looks up by the exact `iss` string."""
        ...


class RevokedTokenReader(Protocol):
    def is_revoked(self, issuer_id: str, jti: str) -> bool: ...


class RelationReader(Protocol):
    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        """The pending or active relation of this triple, if any (at most one exists)."""
        ...

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        """True when an active relation exists whose expires_at is unset or after `now`."""
        ...


class OAuthClientReader(Protocol):
    def get(self, client_id: str) -> OAuthClientRecord | None: ...


class RefreshFamilyReader(Protocol):
    def get_family(self, family_id: str) -> RefreshFamilyRecord | None: ...


class RevokedAccessTokenReader(Protocol):
    """The jti of access tokens Tollgate issued and revoked before their expiry (RFC 7009)."""

    def is_revoked(self, jti: str) -> bool: ...


class SigningKeyReader(Protocol):
    def active(self) -> SigningKeyRecord | None:
        """The key that signs now (at most one exists)."""
        ...

    def published(self, now: datetime) -> list[SigningKeyRecord]:
        """The active key and the retired keys still published at `now`, newest first."""
        ...

    def list(self) -> builtins.list[SigningKeyRecord]:
        """Every key, newest first (what the fact cache keeps, to judge against the clock)."""
        ...


class PartnerRepository(PartnerReader, Protocol):
    def add(self, partner: PartnerRecord) -> None:
        """Raises Conflict(reason="partner_exists") when the id is taken."""
        ...

    def set_status(self, partner_id: str, status: PartnerStatus) -> bool:
        """False when no such partner."""
        ...

    def set_grants(self, partner_id: str, grants: tuple[str, ...], roles: tuple[str, ...]) -> bool: ...

    def list(self) -> list[PartnerRecord]: ...


class ApiKeyRepository(ApiKeyReader, Protocol):
    def get(self, key_id: str) -> ApiKeyRecord | None: ...

    def add(self, key: ApiKeyRecord) -> None: ...

    def revoke(self, key_id: str, at: datetime) -> bool:
        """Sets revoked_at if not yet revoked; False when no such key or already revoked."""
        ...

    def list_for_partner(self, partner_id: str) -> list[ApiKeyRecord]: ...


class IssuerRepository(IssuerReader, Protocol):
    def get(self, issuer_id: str) -> IssuerRecord | None: ...

    def add(self, issuer: IssuerRecord) -> None:
        """Raises Conflict(reason="issuer_exists") when the iss is already registered."""
        ...

    def replace_keys(self, issuer_id: str, jwks: dict) -> bool:
        """Key rotation: swaps the JWKS (old and new kids may both be present)."""
        ...

    def list(self) -> list[IssuerRecord]: ...

    def list_remote(self) -> builtins.list[IssuerRecord]:
        """The issuers whose keys are fetched from a jwks_uri, with their fetch status."""
        ...

    def claim_fetch(self, issuer_id: str, now: datetime, until: datetime) -> bool:
        """Takes the right to fetch this issuer's keys until `until`, when their refresh is due and
        no other process (of any replica) holds it: one scheduled fetch per issuer, cluster-wide."""
        ...

    def claim_refetch(self, issuer_id: str, now: datetime, not_before: datetime) -> bool:
        """Takes the one refetch for an unknown key id allowed until `not_before` (the cool-down),
        unless it is already taken: at most one such refetch per issuer per cool-down, cluster-wide."""
        ...

    def record_fetch_success(self, issuer_id: str, jwks: dict, fetched_at: datetime, refresh_at: datetime,
                             jwks_uri: str) -> None:
        """Stores the fetched keys, where they came from (a discovery document may move them) and
        the next refresh time; ends the failure streak and the claim."""
        ...

    def record_fetch_failure(self, issuer_id: str, error: str, at: datetime, retry_at: datetime) -> None:
        """Keeps the last good keys; records the failure, the next attempt, and ends the claim."""
        ...


class RevokedTokenRepository(RevokedTokenReader, Protocol):
    def revoke(self, issuer_id: str, jti: str, at: datetime, expires_at: datetime | None) -> None:
        """Idempotent."""
        ...


class RelationRepository(RelationReader, Protocol):
    def get(self, relation_id: str) -> RelationRecord | None: ...

    def insert_open(self, relation: RelationRecord) -> bool:
        """Inserts a pending or active relation. False (nothing written) when another open
        relation of the same triple exists, e.g. one inserted concurrently: the database's
        unique index decides, inside a savepoint so the transaction stays usable."""
        ...

    def transition(
        self,
        relation_id: str,
        from_status: RelationStatus,
        to_status: RelationStatus,
        at: datetime,
        expires_at: datetime | None,
    ) -> bool:
        """Compare-and-set: moves the relation only if it is still in `from_status`, setting
        status, updated_at and expires_at. False when a concurrent change got there first."""
        ...

    def append_event(self, event: RelationEventRecord) -> RelationEventRecord:
        """Stores the event and returns it with its id."""
        ...

    def events(self, relation_id: str) -> list[RelationEventRecord]:
        """Oldest first."""
        ...

    def list(
        self, relation_filter: RelationFilter, page_size: int, page_token: str
    ) -> tuple[list[RelationRecord], str]:
        """A page in creation order and the token of the next page ("" on the last page).
        Raises InvalidRequest(field="page_token") for a token it did not produce."""
        ...

    def due_for_expiry(self, now: datetime, limit: int) -> builtins.list[RelationRecord]:
        """Pending or active relations whose expires_at is at or before `now`."""
        ...


class ConnectTokenRepository(Protocol):
    def add(self, token: ConnectTokenRecord) -> None: ...

    def find_by_digest(self, digest: str) -> ConnectTokenRecord | None: ...

    def mark_used(self, token_id: str, partner_id: str, at: datetime) -> bool:
        """Single-use claim: UPDATE ... WHERE used_at IS NULL AND expires_at > at. True for
        exactly one caller, however many race."""
        ...


class AdminAuditRepository(Protocol):
    def append(self, record: AdminAuditRecord) -> AdminAuditRecord:
        """Stores the record and returns it with its id (ids grow in insertion order)."""
        ...

    def list(
        self,
        *,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        until: datetime | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[AdminAuditRecord], str]:
        """A page, oldest first, of the records matching every filter given (`since` inclusive,
        `until` exclusive), and the token of the next page ("" on the last page).
        Raises InvalidRequest(field="page_token") for a token it did not produce."""
        ...


class OAuthClientRepository(OAuthClientReader, Protocol):
    def add(self, client: OAuthClientRecord) -> None: ...

    def list_for_partner(self, partner_id: str | None) -> list[OAuthClientRecord]:
        """A partner's clients (every client when None), oldest first."""
        ...

    def set_secret(self, client_id: str, secret_digest: str, at: datetime) -> bool:
        """Replaces the secret of a client that is not revoked; False when there is none such."""
        ...

    def revoke(self, client_id: str, at: datetime) -> bool:
        """Sets revoked_at if not yet revoked; False when no such client or already revoked."""
        ...


class RefreshTokenRepository(RefreshFamilyReader, Protocol):
    def add_family(self, family: RefreshFamilyRecord) -> None: ...

    def add(self, token: RefreshTokenRecord) -> None: ...

    def find_by_digest(self, digest: str) -> RefreshTokenRecord | None: ...

    def mark_used(self, token_id: str, at: datetime) -> bool:
        """Rotation's claim: UPDATE ... WHERE used_at IS NULL. True for exactly one caller,
        however many race."""
        ...

    def revoke_family(self, family_id: str, at: datetime) -> bool:
        """Sets the family's revoked_at if not yet set; False when there is nothing to revoke."""
        ...


class RevokedAccessTokenRepository(RevokedAccessTokenReader, Protocol):
    def revoke(self, jti: str, client_id: str, at: datetime, expires_at: datetime) -> None:
        """Idempotent."""
        ...


class SigningKeyRepository(SigningKeyReader, Protocol):
    def add_active(self, key: SigningKeyRecord) -> bool:
        """Inserts `key` as the active key; False (nothing written) when another key is active,
        e.g. one inserted concurrently by another worker: the database's unique index decides."""
        ...

    def retire(self, kid: str, at: datetime, publish_until: datetime) -> bool:
        """Compare-and-set: retires the key only if it is still active."""
        ...


class _NotWired:
    """A repository that a unit of work built for a fake does not have."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(f"this unit of work has no repository for {name}")


class _AuditNotWired:
    """Repositories built without an audit repository (fakes of code that never audits)."""

    def append(self, record: AdminAuditRecord) -> AdminAuditRecord:
        raise RuntimeError("this unit of work has no audit repository")

    def list(self, **_filters: object) -> tuple[list[AdminAuditRecord], str]:
        raise RuntimeError("this unit of work has no audit repository")


# Stateless sentinels: one instance each serves as the default of every Repositories.
_NOT_WIRED = _NotWired()
_AUDIT_NOT_WIRED = _AuditNotWired()


@dataclass(frozen=True)
class Repositories:
    """The repositories of one unit of work (one transaction)."""

    partners: PartnerRepository
    api_keys: ApiKeyRepository
    issuers: IssuerRepository
    revoked_tokens: RevokedTokenRepository
    relations: RelationRepository
    connect_tokens: ConnectTokenRepository
    audit: AdminAuditRepository = _AUDIT_NOT_WIRED
    oauth_clients: OAuthClientRepository = _NOT_WIRED
    refresh_tokens: RefreshTokenRepository = _NOT_WIRED
    revoked_access_tokens: RevokedAccessTokenRepository = _NOT_WIRED
    signing_keys: SigningKeyRepository = _NOT_WIRED


class Facts(Protocol):
    """The reads credential verification, Check and the token grants make: the repositories of a
    read-only unit of work (Repositories), or the fact cache's readers. Read-only properties, so
    that a Repositories, whose fields are the wider repositories, is one."""

    @property
    def partners(self) -> PartnerReader: ...

    @property
    def api_keys(self) -> ApiKeyReader: ...

    @property
    def issuers(self) -> IssuerReader: ...

    @property
    def revoked_tokens(self) -> RevokedTokenReader: ...

    @property
    def relations(self) -> RelationReader: ...

    @property
    def oauth_clients(self) -> OAuthClientReader: ...

    @property
    def refresh_tokens(self) -> RefreshFamilyReader: ...

    @property
    def revoked_access_tokens(self) -> RevokedAccessTokenReader: ...

    @property
    def signing_keys(self) -> SigningKeyReader: ...


class FactSnapshot(Facts, Protocol):
    """The facts as one reading of the store sees them, with what a memo of them needs: the
    revision they are at, and the revoked-token sets whole (kept in memory, a revocation check of
    a new token costs no read)."""

    def revision(self) -> int:
        """The store revision this reading sees (it grows with every committed change of facts)."""
        ...

    def revoked_token_ids(self) -> frozenset[tuple[str, str]]:
        """Every revoked (issuer id, jti) of external issuers' tokens."""
        ...

    def revoked_access_token_ids(self) -> frozenset[str]:
        """Every revoked jti of access tokens Tollgate issued."""
        ...


class FactReads(Protocol):
    def __call__(self, optimistic: bool = False) -> AbstractContextManager[FactSnapshot]:
        """One consistent reading of the facts (one read-only transaction): `with reads() as
        facts: ...`. Raises StoreUnavailable when the store cannot be reached. `optimistic`: the
        reading may instead answer from what is kept in memory for the store revision it last saw
        and read the store without a transaction (at_revision), raising ReadAgain when that cannot
        stand; readings that keep nothing in memory are consistent whatever it says."""
        ...


class RevisionReads(FactReads, Protocol):
    def at_revision(self, revision: int) -> AbstractContextManager[FactSnapshot]:
        """An optimistic reading: the facts as of store revision `revision`, each read checked to
        see the store at that revision, and the revision read at the end when nothing was (so a
        reading answered from memory alone still confirms it). Raises ReadAgain when a read saw
        another revision or the connection died, StoreUnavailable when the store cannot be reached."""
        ...


class ReadAgain(Exception):
    """An optimistic reading (FactReads.at_revision) cannot stand: a statement saw the store at
    another revision than the one it answers from (`revision`, the one seen; -1 when unknown), or
    its connection died. Nothing it answered may be used: the check starts again on a new reading."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"the store is at revision {revision}")
        self.revision = revision


class NotInMemory(Exception):
    """A memory-only reader (CachedFactSource.memory_facts) was asked for a fact it does not hold:
    reading it would block."""


class CachedFactSource(Protocol):
    """The fact cache as the token grants see it (service/check/caching/fact_cache.py implements it)."""

    def is_current(self) -> bool:
        """Whether the cached facts were confirmed against the store within their bound; when not,
        read the store instead."""
        ...

    @property
    def facts(self) -> Facts:
        """Cached reads; a miss reads through, in a read-only unit of work of its own."""
        ...

    @property
    def memory_facts(self) -> Facts:
        """Cached reads that never block: a miss raises NotInMemory (for code on an event loop)."""
        ...


class UnitOfWork(Protocol):
    def __call__(self, *, read_only: bool = False, changes_facts: bool = True) -> AbstractContextManager[Repositories]:
        """Opens a transaction; commits when the block ends normally, rolls back on an exception.
        A writing unit of work takes the write lock up front where the database needs it
        (SQLite's BEGIN IMMEDIATE), so concurrent writers queue instead of failing. A write that
        changes no fact Check reads (an audit record of a refusal) passes changes_facts=False and
        leaves the store revision, and so every replica's cache, alone.
        Raises StoreUnavailable when the store cannot be reached."""
        ...

    def ping(self) -> None:
        """Raises StoreUnavailable when the store cannot answer the reads Check makes (the health
        probe: reaching the database is not enough)."""
        ...

    def revision(self) -> int:
        """The store revision: it grows with every committed writing unit of work, on any replica."""
        ...

    def on_write(self, listener: Callable[[], None]) -> None:
        """Calls `listener` after each writing unit of work this process commits."""
        ...


class TokenSigner(Protocol):
    """Makes and uses the keys of Tollgate's own issuer (service/tokens implements it)."""

    def new_key(self, algorithm: str, now: datetime) -> SigningKeyRecord:
        """A fresh key pair, its private key sealed; not yet stored."""
        ...

    def sign(self, claims: dict, key: SigningKeyRecord) -> str:
        """A compact JWS of `claims` with typ "at+jwt" and the key's kid (RFC 9068)."""
        ...


class CredentialVerifier(Protocol):
    def verify(self, presented: PresentedCredential, facts: Facts, now: datetime) -> AuthenticatedCredential:
        """Proves a credential. Raises CredentialRejected with reason invalid_token,
        token_expired or token_revoked; never returns a partial result."""
        ...

    def own_access_token(self, token: str, facts: Facts, now: datetime) -> OwnAccessToken | None:
        """A token Tollgate issued, signature, iss, aud, typ and exp checked and nothing else: what
        revoking it needs. None for any other token."""
        ...


@dataclass(frozen=True)
class FetchedKeySet:
    """A remote JWK Set that passed validation: only its usable public signing keys, the
    freshness its server declared (Cache-Control max-age, if any) and what was left out."""

    jwks: dict
    max_age_seconds: float | None
    ignored: tuple[str, ...] = ()


class KeySetFetcher(Protocol):
    """Fetches issuers' keys over the network (service/tokens implements it). Raises
    domain.errors.KeyFetchFailed with an outcome and a message fit for operators."""

    def discover(self, discovery_url: str, issuer: str) -> str:
        """The jwks_uri of the discovery document at `discovery_url`, whose `issuer` must be `issuer`."""
        ...

    def fetch(self, jwks_uri: str) -> FetchedKeySet: ...

    def check_url(self, url: str) -> None:
        """Raises KeyFetchFailed(outcome="url_refused") for a URL that would never be fetched."""
        ...


class RemoteKeySource(Protocol):
    """The newer keys of a remote issuer, asked for when a token names a key id its stored keys
    lack (service/usecases/remote_keys.py implements it)."""

    def fresher_keys(self, issuer: IssuerRecord) -> dict | None:
        """A JWK Set newer than `issuer.jwks`, or None (none found, or refetching is cooling down)."""
        ...
