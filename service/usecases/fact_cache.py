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
(decision_memo.py), which end at the first of those expiries and with every change of generation.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from ..domain.model import (
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
)
from ..domain.ports import Repositories, UnitOfWork

Value = TypeVar("Value")
_MISSING = object()


class FactCache:
    def __init__(self, unit_of_work: UnitOfWork, max_entries: int = 100_000, max_age_seconds: float = 1.0,
                 sibling_writes: Callable[[], int] | None = None) -> None:
        self._unit_of_work = unit_of_work
        self._max_entries = max_entries
        self._max_age = max_age_seconds
        # When the revision was last confirmed against the store (monotonic); None: never, or the
        # last attempt failed. Past max_age the cache is not used: Check reads through, and so
        # fails closed while the store is down instead of answering from old facts.
        self._confirmed_at: float | None = None
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped on every clear; a load that started under an older generation is not stored.
        self._generation = 0
        self._revision = 0
        # The sibling workers' write counter (None: no siblings), and its value at the last refresh.
        self._sibling_writes = sibling_writes
        self._sibling_writes_seen = sibling_writes() if sibling_writes else 0
        self.reader = CachedReader(self)
        self.memory_reader = CachedReader(self, memory_only=True)
        # The readers stand in for the repositories of a read-only unit of work: they answer every
        # read that credential verification, Check and the token grants make (a write would fail).
        # Read-side ports per repository would make this structural; until then, this one cast.
        self.facts = cast(Repositories, self.reader)
        self.memory_facts = cast(Repositories, self.memory_reader)
        unit_of_work.on_write(self.clear)

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
                self._entries.move_to_end(key)
                return found  # type: ignore[return-value]  # what load() returned for this key
            generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation:  # nothing changed while loading
                self._entries[key] = value
                if len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return value

    def credential(self, token: str, now: datetime,
                   verify: Callable[[], AuthenticatedCredential]) -> AuthenticatedCredential:
        """A verified credential by the digest of its token; re-verified once it may have expired
        (verification then answers token_expired, with the leeway). Rejections are not cached."""
        key = ("credential", hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())
        credential = self.get(key, verify)
        if credential.expires_at is not None and now >= credential.expires_at:
            return verify()
        return credential


class NotInMemory(Exception):
    """A fact a memory-only reader was asked for is not in the cache (reading it would block)."""


class CachedReader:
    """The read side of the repositories that credential verification and Check use, cached, one
    reader per repository. Each miss reads in its own read-only unit of work; a memory-only reader
    (for code on an event loop, which must not block) raises NotInMemory instead."""

    def __init__(self, cache: FactCache, *, memory_only: bool = False) -> None:
        read = _read_from_memory if memory_only else _read_through
        self.api_keys = _CachedApiKeys(cache, read)
        self.partners = _CachedPartners(cache, read)
        self.issuers = _CachedIssuers(cache, read)
        self.revoked_tokens = _CachedRevokedTokens(cache, read)
        self.relations = _CachedRelations(cache, read)
        self.oauth_clients = _CachedOAuthClients(cache, read)
        self.refresh_tokens = _CachedRefreshFamilies(cache, read)
        self.revoked_access_tokens = _CachedRevokedAccessTokens(cache, read)
        self.signing_keys = _CachedSigningKeys(cache, read)

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        return self.relations.is_active(partner_id, subject_type, subject_id, now)

    def relation_expiry(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> datetime | None:
        return self.relations.relation_expiry(partner_id, subject_type, subject_id)


def _read_through(cache: FactCache, key: tuple, read: Callable[[Repositories], Value]) -> Value:
    def load() -> Value:
        with cache._unit_of_work(read_only=True) as repos:
            return read(repos)
    return cache.get(key, load)


def _read_from_memory(cache: FactCache, key: tuple, read: Callable[[Repositories], Value]) -> Value:
    def load() -> Value:
        raise NotInMemory()
    return cache.get(key, load)


class _Cached:
    def __init__(self, cache: FactCache, read: Callable[[FactCache, tuple, Callable[[Repositories], Any]], Any]
                 ) -> None:
        # _read(key, read): bound once, so a cached read on Check's hot path costs no extra frame.
        self._read = functools.partial(read, cache)


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
        return next((key for key in self._all() if key.retired_at is None), None)

    def published(self, now: datetime) -> list[SigningKeyRecord]:
        # Cached whole and judged against the clock here: a key's publication ends on its own.
        return [key for key in self._all() if key.published_at(now)]

    def _all(self) -> list[SigningKeyRecord]:
        return self._read(("signing_keys",), lambda r: r.signing_keys.list())
