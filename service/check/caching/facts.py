"""CachedFacts: Check's facts from the fact cache while it is fresh enough, else from the facts it
wraps (the store)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial
from types import TracebackType

from ...domain.credentials import PresentedCredential
from ...domain.model import AuthenticatedCredential, RelationRecord, SubjectType
from ...domain.ports import CredentialVerifier
from ..ports import CheckFacts, FactReading
from .fact_cache import FactCache


class CachedFacts:
    """A CheckFacts decorator. The cache is used only while it was confirmed against the store
    within its bound, and only for checks that do not ask for a newer revision than it holds;
    otherwise it is refreshed first (which fails with StoreUnavailable while the store is down), and
    a check that wants a revision the store has not reached yet reads the wrapped facts."""

    def __init__(self, inner: CheckFacts, cache: FactCache, verifier: CredentialVerifier) -> None:
        self._inner = inner
        self._cache = cache
        self._reading = _CachedReading(cache, verifier)

    def reading(self, at_least_as_fresh: int, optimistic: bool = False) -> AbstractContextManager[FactReading]:
        cache = self._cache
        if (cache.is_current() and at_least_as_fresh <= cache.revision) or at_least_as_fresh <= cache.refresh():
            return self._reading
        return self._inner.reading(at_least_as_fresh, optimistic)


class _CachedReading:
    """The cache's facts; its own context manager (nothing to open or close), so that a cached
    check makes no object for it. Verified credentials are kept by the digest of their token and
    verified again once they may have expired (FactCache.credential); rejections are not kept.
    Its readers are the cache's own, bound once: a check calls them with no frame in between."""

    def __init__(self, cache: FactCache, verifier: CredentialVerifier) -> None:
        relations = cache.facts.relations
        self.credential: Callable[[PresentedCredential, datetime], AuthenticatedCredential] = partial(
            cache.credential, verifier, cache.facts)
        self.is_active: Callable[[str, SubjectType, str, datetime], bool] = relations.is_active
        self.find_open: Callable[[str, SubjectType, str], RelationRecord | None] = relations.find_open

    def __enter__(self) -> _CachedReading:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None
