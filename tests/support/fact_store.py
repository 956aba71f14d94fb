"""An in-memory unit of work and a movable monotonic clock, for unit tests of what wraps the store
(the fact cache and the Check shortcuts stacked on it). End-to-end tests use the real store."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from service.check.caching import fact_cache as fact_cache_module
from service.check.caching.fact_cache import FactCache
from service.domain.model import RelationRecord


class FakeRelations:
    def __init__(self) -> None:
        self.records: dict[tuple, RelationRecord] = {}
        self.reads = 0

    def find_open(self, partner_id, subject_type, subject_id):
        self.reads += 1
        return self.records.get((partner_id, subject_type, subject_id))


class FakeUnitOfWork:
    """A UnitOfWork whose store revision the test sets, and whose relations are in memory."""

    def __init__(self) -> None:
        self.store_revision = 1
        self.revision_error: Exception | None = None
        self.revision_calls = 0
        self.listeners: list = []
        self.opened: list[tuple[bool, bool]] = []
        self.relations = FakeRelations()
        self.repos = SimpleNamespace(relations=self.relations)

    @contextmanager
    def __call__(self, *, read_only: bool = False, changes_facts: bool = True):
        self.opened.append((read_only, changes_facts))
        yield self.repos

    def revision(self) -> int:
        self.revision_calls += 1
        if self.revision_error is not None:
            raise self.revision_error
        return self.store_revision

    def on_write(self, listener) -> None:
        self.listeners.append(listener)

    def ping(self) -> None:
        if self.revision_error is not None:
            raise self.revision_error

    def committed_a_write(self) -> None:
        """What the real store does after a writing unit of work of this process commits."""
        self.store_revision += 1
        for listener in self.listeners:
            listener()


class Monotonic:
    """A monotonic clock the test moves; stands in for the `time` module and for a callable."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch) -> Monotonic:
    """The fact cache's monotonic clock, moved by the test instead of by sleeping."""
    clock = Monotonic()
    monkeypatch.setattr(fact_cache_module, "time", clock)
    return clock


@pytest.fixture
def unit_of_work() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def cache(unit_of_work, monotonic) -> FactCache:
    """A fact cache over the fake unit of work, refreshed once (current for 10 s of `monotonic`)."""
    cache = FactCache(unit_of_work, max_entries=100, max_age_seconds=10)
    cache.refresh()
    return cache
