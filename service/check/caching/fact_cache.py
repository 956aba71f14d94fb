"""Read-through caches of the facts Check reads, valid for one store revision.

Every writing unit of work advances the store revision. This process's own writes clear the
caches as they commit (so the replica that made a change sees it at once); other replicas' writes
are noticed by refresh(), which the server runs every `cache_refresh_seconds` (the bound on how
stale a replica can be), and which Check runs at once for a request that asks to be at least as
fresh as a given revision. Worker processes of one server (`serve --workers N`) also share a
counter that each advances after its writes: a worker that sees it move refreshes before its next
check, so a client whose next call lands on another worker still reads its own write.
Time-dependent facts (key and relation expiry, token exp) are cached as the records themselves and
re-judged against the clock on every check; the only yes/no answers kept are the decision memo's
(remembering.py), which end at the first of those expiries and with every change of generation.

The cache answers the reads of the repositories that verification, Check and the token grants make
(domain.ports.Facts), one typed reader per repository; CachedFacts (facts.py) puts it in front of
Check's facts, and the token grants read it as a CachedFactSource.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from ...domain.bounded import BoundedMap
from ...domain.credentials import PresentedCredential
from ...domain.model import (
    ApiKeyRecord,
    AuthenticatedCredential,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    RefreshFamilyRecord,
    RelationRecord,
    RelationStatus,
    SigningKeyRecord,
    SubjectType,
    active_signing_key,
    published_signing_keys,
)
from ...domain.ports import CredentialVerifier, Facts, NotInMemory, ReadAgain, RevisionReads, UnitOfWork

Value = TypeVar("Value")
_MISSING = object()


class FactCache:
    def __init__(self, unit_of_work: UnitOfWork, max_entries: int = 100_000, max_age_seconds: float = 1.0,
                 sibling_writes: Callable[[], int] | None = None, *,
                 fact_reads: RevisionReads | None = None) -> None:
        """`fact_reads`: how a miss reads the store (the store's Core reads: first optimistically,
        at the revision the cache is at, see read_through); by default a read-only unit of work."""
        self._unit_of_work = unit_of_work
        self._fact_reads: Callable[[], AbstractContextManager[Facts]] = (
            fact_reads or functools.partial(unit_of_work, read_only=True))
        self._at_revision = fact_reads.at_revision if fact_reads is not None else None
        self._max_age = max_age_seconds
        # When the revision was last confirmed against the store (monotonic); None: never, or the
        # last attempt failed. Past max_age the cache is not used: Check reads through, and so
        # fails closed while the store is down instead of answering from old facts.
        self._confirmed_at: float | None = None
        self._entries: BoundedMap[tuple, object] = BoundedMap(max_entries, lru=True)
        self._lock = threading.Lock()
        # Bumped on every clear; a load that started under an older generation is not stored.
        self._generation = 0
        self._revision = 0
        # The sibling workers' write counter (None: no siblings), and its value at the last refresh.
        self._sibling_writes = sibling_writes
        self._sibling_writes_seen = sibling_writes() if sibling_writes else 0
        self._reader = CachedReader(self)
        self._memory_reader = CachedReader(self, memory_only=True)
        unit_of_work.on_write(self.clear)

    @property
    def facts(self) -> CachedReader:
        """Cached reads; a miss reads through, in a read-only unit of work of its own."""
        return self._reader

    @property
    def memory_facts(self) -> CachedReader:
        """Cached reads that never block: a miss raises NotInMemory (for code on an event loop)."""
        return self._memory_reader

    @property
    def revision(self) -> int:
        """The store revision the cached facts are at least as fresh as (0 before the first refresh)."""
        return self._revision

    @property
    def generation(self) -> int:
        """Moves on whenever the cached facts are dropped (a write, a newer revision)."""
        return self._generation

    def refresh(self) -> int:
        """Reads the store revision; a newer one clears the caches. Returns the revision."""
        # Read before the store: a sibling's write committed meanwhile moves it again.
        sibling_writes = self._sibling_writes() if self._sibling_writes else 0
        try:
            revision = self._unit_of_work.revision()
        except Exception:
            self._confirmed_at = None
            raise
        with self._lock:
            if revision != self._revision:
                self._clear_locked()
                self._revision = revision
            self._sibling_writes_seen = sibling_writes
            self._confirmed_at = time.monotonic()
        return revision

    def is_current(self) -> bool:
        confirmed = self._confirmed_at
        return (confirmed is not None and time.monotonic() - confirmed <= self._max_age
                and (self._sibling_writes is None or self._sibling_writes() == self._sibling_writes_seen))

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self._entries.clear()
        self._generation += 1

    def get(self, key: tuple, load: Callable[[], Value]) -> Value:
        with self._lock:
            found = self._entries.get(key, _MISSING)
            if found is not _MISSING:
                # What load() returned for this key; not cast(), which would cost a call on every hit.
                return found  # type: ignore[return-value]
            generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation:  # nothing changed while loading
                self._entries.put(key, value)
        return value

    def read_through(self, key: tuple, read: Callable[[Facts], Value]) -> Value:
        """The cached value of `key`, else `read` in a reading of the store of its own: an
        optimistic one at the cache's revision (one statement, where a transaction takes four),
        and while the store has moved past that revision (the refresh has yet to see it) a
        transaction's, as fresh as the store."""
        def load() -> Value:
            if self._at_revision is not None:
                try:
                    with self._at_revision(self._revision) as facts:
                        return read(facts)
                except ReadAgain:
                    pass
            with self._fact_reads() as facts:
                return read(facts)
        return self.get(key, load)

    def read_from_memory(self, key: tuple, read: Callable[[Facts], Value]) -> Value:
        """The cached value of `key`; NotInMemory when there is none (reading it would block)."""
        def load() -> Value:
            raise NotInMemory()
        return self.get(key, load)

    def credential(self, verifier: CredentialVerifier, facts: Facts, presented: PresentedCredential,
                   now: datetime) -> AuthenticatedCredential:
        """A credential `verifier` proved from `facts`, kept by how it was presented and the digest
        of its token (one string is a JWT in Authorization and a malformed API key in X-API-Key);
        verified again once it may have expired (verification then answers token_expired, with
        the leeway). Rejections are not kept."""
        key = ("credential", presented.kind,
               hashlib.sha256(presented.value.encode("utf-8", "surrogatepass")).digest())
        credential = self.get(key, lambda: verifier.verify(presented, facts, now))
        if credential.expires_at is not None and now >= credential.expires_at:
            return verifier.verify(presented, facts, now)
        return credential


class CachedReader:
    """The read side of the repositories that credential verification and Check use, cached, one
    reader per repository. Each miss reads in its own read-only unit of work; a memory-only reader
    (for code on an event loop, which must not block) raises NotInMemory instead."""

    def __init__(self, cache: FactCache, *, memory_only: bool = False) -> None:
        read = cache.read_from_memory if memory_only else cache.read_through
        self.api_keys = _CachedApiKeys(read)
        self.partners = _CachedPartners(read)
        self.issuers = _CachedIssuers(read)
        self.revoked_tokens = _CachedRevokedTokens(read)
        self.relations = _CachedRelations(read)
        self.oauth_clients = _CachedOAuthClients(read)
        self.refresh_tokens = _CachedRefreshFamilies(read)
        self.revoked_access_tokens = _CachedRevokedAccessTokens(read)
        self.signing_keys = _CachedSigningKeys(read)


class _Cached:
    def __init__(self, read: Callable[[tuple, Callable[[Facts], Any]], Any]) -> None:
        # _read(key, read): the cache's bound method, so a cached read costs no extra frame.
        self._read = read


class _CachedApiKeys(_Cached):
    def find_by_digest(self, digest: str) -> ApiKeyRecord | None:
        return self._read(("api_key", digest), lambda r: r.api_keys.find_by_digest(digest))


class _CachedPartners(_Cached):
    def get(self, partner_id: str) -> PartnerRecord | None:
        return self._read(("partner", partner_id), lambda r: r.partners.get(partner_id))


class _CachedIssuers(_Cached):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        return self._read(("issuer", issuer), lambda r: r.issuers.find_by_issuer(issuer))


class _CachedRevokedTokens(_Cached):
    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        return self._read(("jti", issuer_id, jti), lambda r: r.revoked_tokens.is_revoked(issuer_id, jti))


class _CachedRelations(_Cached):
    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        relation = self._open_relation(partner_id, subject_type, subject_id)
        return (relation is not None and relation.status is RelationStatus.ACTIVE
                and (relation.expires_at is None or relation.expires_at > now))

    def relation_expiry(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> datetime | None:
        """When the open relation of the triple expires (None: it does not, or there is none)."""
        relation = self._open_relation(partner_id, subject_type, subject_id)
        return relation.expires_at if relation is not None else None

    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        """The pending or active relation of the triple, as is_active() judges it (for explained checks)."""
        return self._open_relation(partner_id, subject_type, subject_id)

    def _open_relation(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        return self._read(("relation", partner_id, subject_type, subject_id),
                          lambda r: r.relations.find_open(partner_id, subject_type, subject_id))


class _CachedOAuthClients(_Cached):
    def get(self, client_id: str) -> OAuthClientRecord | None:
        return self._read(("oauth_client", client_id), lambda r: r.oauth_clients.get(client_id))


class _CachedRefreshFamilies(_Cached):
    def get_family(self, family_id: str) -> RefreshFamilyRecord | None:
        return self._read(("refresh_family", family_id), lambda r: r.refresh_tokens.get_family(family_id))


class _CachedRevokedAccessTokens(_Cached):
    def is_revoked(self, jti: str) -> bool:
        return self._read(("access_jti", jti), lambda r: r.revoked_access_tokens.is_revoked(jti))


class _CachedSigningKeys(_Cached):
    def active(self) -> SigningKeyRecord | None:
        return active_signing_key(self._all())

    def published(self, now: datetime) -> builtins.list[SigningKeyRecord]:
        return published_signing_keys(self._all(), now)  # cached whole, judged against the clock

    def list(self) -> builtins.list[SigningKeyRecord]:
        return builtins.list(self._all())

    def _all(self) -> builtins.list[SigningKeyRecord]:
        return self._read(("signing_keys",), lambda r: r.signing_keys.list())
