"""Fixtures of the unit tests of what wraps the store: an in-memory unit of work, a fact cache over
it and the cache's movable clock (tests/support/fact_store.py)."""

from tests.support.fact_store import cache, monotonic, unit_of_work  # noqa: F401 - fixtures, found by name
