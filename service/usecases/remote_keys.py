"""Remote issuers' keys: fetched at registration, refreshed before they go stale, refetched when a
token names a key id they lack, and never lost to a failed fetch.

The keys live in the store (the issuer's `jwks`, the last good set), so every worker of every
replica verifies with the same keys, a restart needs no fetch, and a change reaches the others
through the store revision like any other fact. Fetching is kept to one process cluster-wide by
claims taken in the store:
- a scheduled refresh per issuer at a time (a lease), when its refresh time has come: the
  provider's Cache-Control max-age within the configured floor and ceiling, or, after a failure,
  a backoff that doubles up to the floor;
- one refetch for an unknown key id per issuer per cool-down. Within a process concurrent
  requests share it (single flight) and, during the cool-down, ask nobody: a flood of forged kids
  costs one fetch, not thousands.
A failed fetch keeps the last good keys, is logged and counted, and is retried with backoff; keys
the provider removed stop being accepted after the next successful fetch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.errors import InvalidRequest, KeyFetchFailed, NotFound
from ..domain.model import IssuerRecord, RemoteKeys
from ..domain.ports import Clock, FetchedKeySet, KeySetFetcher, UnitOfWork
from ..domain.text import excerpt

log = logging.getLogger("tollgate.issuers")

OUTCOME_OK = "ok"


@dataclass(frozen=True)
class RemoteKeySettings:
    # A provider's Cache-Control max-age is honoured within these bounds; without one, the keys
    # are refreshed after `default_refresh` (within them too).
    min_refresh: timedelta = timedelta(minutes=5)
    max_refresh: timedelta = timedelta(hours=24)
    default_refresh: timedelta = timedelta(hours=1)
    # At most one refetch for an unknown key id per issuer per this, cluster-wide.
    refetch_cooldown: timedelta = timedelta(seconds=30)
    # The first retry after a failed fetch; each further failure doubles it, up to min_refresh.
    first_retry: timedelta = timedelta(seconds=5)
    # How long a fetcher holds its claim: longer than any fetch may take (the fetch timeout).
    fetch_lease: timedelta = timedelta(seconds=30)

    def refresh_after(self, fetched: FetchedKeySet) -> timedelta:
        wanted = self.default_refresh if fetched.max_age_seconds is None else timedelta(seconds=fetched.max_age_seconds)
        return min(max(wanted, self.min_refresh), self.max_refresh)

    def retry_after(self, failures: int) -> timedelta:
        return min(self.first_retry * (2 ** min(max(failures - 1, 0), 30)), self.min_refresh)


# (issuer's iss, outcome) for each fetch: metrics count them.
FetchObserver = Callable[[str, str], None]


class RemoteKeyService:
    """Implements domain.ports.RemoteKeySource for the verifier, and the fetching the Admin
    service and the background refresher ask for."""

    def __init__(self, unit_of_work: UnitOfWork, fetcher: KeySetFetcher, clock: Clock,
                 settings: RemoteKeySettings | None = None, *, observe: FetchObserver | None = None,
                 wait_seconds: float = 10.0) -> None:
        self._unit_of_work = unit_of_work
        self._fetcher = fetcher
        self._clock = clock
        self._settings = settings or RemoteKeySettings()
        self._observe = observe or (lambda issuer, outcome: None)
        # How long a request waits for the refetch another request of this process started.
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._flights: dict[str, Future[dict | None]] = {}
        # issuer id -> until when this process asks nobody (its own refetch's cool-down).
        self._quiet_until: dict[str, datetime] = {}
        # iss -> when its keys were last fetched, as of the last refresh round (for the age gauge).
        self._fetched_at: dict[str, datetime | None] = {}

    # -- registration ----------------------------------------------------------------------------

    def resolve(self, issuer: str, *, discovery_url: str = "", jwks_uri: str = "") -> tuple[RemoteKeys, dict]:
        """Where a new issuer's keys come from and its first key set, fetched now: registration
        fails rather than trust an issuer whose keys cannot be had. Raises InvalidRequest for a
        URL that would never be fetched, KeyFetchFailed when the fetch fails."""
        if bool(discovery_url) == bool(jwks_uri):
            raise InvalidRequest("give exactly one of discovery_url and jwks_uri", field="discovery_url")
        field = "discovery_url" if discovery_url else "jwks_uri"
        try:
            self._fetcher.check_url(discovery_url or jwks_uri)
        except KeyFetchFailed as refused:
            raise InvalidRequest(refused.message, reason="url_refused", field=field) from None
        try:
            if discovery_url:
                jwks_uri = self._fetcher.discover(discovery_url, issuer)
            fetched = self._fetcher.fetch(jwks_uri)
        except KeyFetchFailed as failure:
            self._observe(issuer, failure.outcome)
            raise KeyFetchFailed(failure.message, outcome=failure.outcome, field=field) from None
        self._observe(issuer, OUTCOME_OK)
        now = self._clock.now()
        remote = RemoteKeys(jwks_uri=jwks_uri, discovery_url=discovery_url or None, fetched_at=now,
                            refresh_at=now + self._settings.refresh_after(fetched))
        return remote, fetched.jwks

    # -- scheduled refresh -----------------------------------------------------------------------

    def refresh_due(self) -> None:
        """One round of the background refresher: fetches the keys of every remote issuer whose
        refresh time has come and that no other process is fetching."""
        now = self._clock.now()
        with self._unit_of_work(read_only=True) as repos:
            issuers = repos.issuers.list_remote()
        self._fetched_at = {issuer.issuer: issuer.remote.fetched_at for issuer in issuers if issuer.remote}
        for issuer in issuers:
            remote = issuer.remote
            if remote is None or (remote.refresh_at is not None and remote.refresh_at > now):
                continue
            with self._unit_of_work(changes_facts=False) as repos:
                if not repos.issuers.claim_fetch(issuer.id, now, now + self._settings.fetch_lease):
                    continue
            try:
                self._fetch_and_record(issuer, rediscover=True)
            except KeyFetchFailed:
                pass  # recorded, logged and counted; retried with backoff

    def refresh(self, issuer_id_or_iss: str) -> IssuerRecord:
        """Fetches an issuer's keys now (an operator's request). Raises KeyFetchFailed, after
        recording the failure, when the fetch fails."""
        with self._unit_of_work(read_only=True) as repos:
            issuer = repos.issuers.get(issuer_id_or_iss) or repos.issuers.find_by_issuer(issuer_id_or_iss)
        if issuer is None:
            raise NotFound(f"issuer {excerpt(issuer_id_or_iss)} is not registered", reason="issuer_not_found",
                           field="issuer")
        if issuer.remote is None:
            raise InvalidRequest(f"issuer {excerpt(issuer.issuer)} has no jwks_uri: its keys are registered, "
                                 "not fetched", reason="not_remote", field="issuer")
        self._fetch_and_record(issuer, rediscover=True)
        with self._unit_of_work(read_only=True) as repos:
            return repos.issuers.get(issuer.id) or issuer

    def key_ages(self) -> dict[str, float | None]:
        """iss -> seconds since its keys were last fetched (None: never), as of the last round."""
        now = self._clock.now()
        return {iss: None if at is None else (now - at).total_seconds() for iss, at in self._fetched_at.items()}

    # -- refetch on an unknown key id (domain.ports.RemoteKeySource) ------------------------------

    def fresher_keys(self, issuer: IssuerRecord) -> dict | None:
        if issuer.remote is None:
            return None
        with self._lock:
            flight = self._flights.get(issuer.id)
            leader = flight is None
            if flight is None:
                quiet_until = self._quiet_until.get(issuer.id)
                if quiet_until is not None and self._clock.now() < quiet_until:
                    return None
                flight = self._flights[issuer.id] = Future()
        if not leader:
            try:
                return flight.result(timeout=self._wait_seconds)
            except FutureTimeout:
                return None
        keys: dict | None = None
        try:
            keys = self._refetch(issuer)
        except Exception:  # an outage or fetch failure must leave the answer "no newer keys"
            log.warning("refetching the keys of issuer %s failed", issuer.issuer, exc_info=True)
        finally:
            with self._lock:
                self._quiet_until[issuer.id] = self._clock.now() + self._settings.refetch_cooldown
                del self._flights[issuer.id]
            flight.set_result(keys)
        return keys

    def _refetch(self, issuer: IssuerRecord) -> dict | None:
        now = self._clock.now()
        with self._unit_of_work(changes_facts=False) as repos:
            claimed = repos.issuers.claim_refetch(issuer.id, now, now + self._settings.refetch_cooldown)
            current = repos.issuers.get(issuer.id)
        if current is None or current.remote is None:
            return None
        if not claimed:
            # Another process refetched within the cool-down: its keys, if they are newer.
            return current.jwks if current.jwks != issuer.jwks else None
        try:
            keys = self._fetch_and_record(current, rediscover=False)
        except KeyFetchFailed:
            return None
        return keys if keys != issuer.jwks else None

    # -- one fetch, recorded -----------------------------------------------------------------------

    def _fetch_and_record(self, issuer: IssuerRecord, *, rediscover: bool) -> dict:
        """Fetches (re-reading the discovery document first when asked and there is one), stores
        the outcome, and returns the keys now in force. Raises KeyFetchFailed after recording it."""
        remote = issuer.remote
        assert remote is not None
        jwks_uri = remote.jwks_uri
        try:
            if rediscover and remote.discovery_url:
                jwks_uri = self._fetcher.discover(remote.discovery_url, issuer.issuer)
            fetched = self._fetcher.fetch(jwks_uri)
        except KeyFetchFailed as failure:
            self._record_failure(issuer, failure)
            raise
        self._observe(issuer.issuer, OUTCOME_OK)
        now = self._clock.now()
        changed = fetched.jwks != issuer.jwks or jwks_uri != remote.jwks_uri
        # Only a change of keys is a change of facts: it advances the store revision, so every
        # cache of every replica drops what it verified with the old keys.
        with self._unit_of_work(changes_facts=changed) as repos:
            repos.issuers.record_fetch_success(issuer.id, fetched.jwks, now,
                                               now + self._settings.refresh_after(fetched), jwks_uri)
        if changed:
            log.info("issuer %s: keys %s fetched from %s (were %s)%s", issuer.issuer, key_ids(fetched.jwks), jwks_uri,
                     key_ids(issuer.jwks), f"; left out: {'; '.join(fetched.ignored)}" if fetched.ignored else "")
        return fetched.jwks

    def _record_failure(self, issuer: IssuerRecord, failure: KeyFetchFailed) -> None:
        remote = issuer.remote
        assert remote is not None
        self._observe(issuer.issuer, failure.outcome)
        now = self._clock.now()
        retry_at = now + self._settings.retry_after(remote.failures + 1)
        log.warning("fetching the keys of issuer %s failed (%s): %s; its last good keys %s stay in use, next "
                    "attempt at %s", issuer.issuer, failure.outcome, failure.message, key_ids(issuer.jwks),
                    retry_at.isoformat())
        with self._unit_of_work(changes_facts=False) as repos:
            repos.issuers.record_fetch_failure(issuer.id, failure.message, now, retry_at)


def key_ids(jwks: dict | None) -> list[str]:
    """The kids of a JWK Set, in order ("" for a key without one)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    return [str(key.get("kid", "")) for key in keys if isinstance(key, dict)] if isinstance(keys, list) else []
