"""Push invalidation on PostgreSQL: a change committed through one replica reaches another
replica's Check in milliseconds (NOTIFY on commit, LISTEN in every server process), with the poll
(TOLLGATE_CACHE_REFRESH_SECONDS) as the fallback when the push is off or its connection is down.

Two servers share one database, each with its own caches, as two replicas would. Their poll runs
every 30 s, so only the push can explain a change seen sooner."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord
from service.store.notifications import LISTENER_APPLICATION_NAME
from tests.support.world import World, start_replica, start_world, stop_world

SLOW_POLL = 30.0
TRIALS = 50
P99_BOUND = 0.100
# How often the test asks replica B's Check, and how long it waits at most for a trial.
ASK_EVERY = 0.002
TRIAL_BOUND = 5.0


@pytest.fixture
def replicas(postgres_url, tmp_path) -> Iterator[tuple[World, World]]:
    a = start_world(postgres_url, tmp_path / "a", cache_refresh_seconds=SLOW_POLL)
    try:
        b = start_replica(a, tmp_path / "b", cache_refresh_seconds=SLOW_POLL)
    except BaseException:
        stop_world(a)
        raise
    yield a, b
    stop_world(b)
    stop_world(a)


def add_key(writer: World) -> tuple[str, str]:
    """A new API key of partner acme, written through `writer`'s store: (plaintext, key id)."""
    key = opaque.generate(opaque.API_KEY_PREFIX)
    record = ApiKeyRecord(new_id("key"), "acme", opaque.digest(key), "push", (), (), (), writer.clock.now())
    with writer.seed() as repos:
        repos.api_keys.add(record)
    return key, record.id


def revoke_key(writer: World, key_id: str) -> None:
    with writer.seed() as repos:
        assert repos.api_keys.revoke(key_id, writer.clock.now())


def allowed(replica: World, key: str) -> bool:
    return replica.check("getUser", authorization=f"Bearer {key}", user_id="u-active").allowed


def seconds_until(predicate: Callable[[], bool], bound: float = TRIAL_BOUND, every: float = ASK_EVERY) -> float | None:
    """Seconds until `predicate` holds, asking every `every` s; None if it did not within `bound`."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > bound:
            return None
        time.sleep(every)
    return time.perf_counter() - started


def propagation(a: World, b: World) -> float | None:
    """One trial: a key B has seen allowed (and cached) is revoked through A; seconds from A's
    commit until B's Check denies it."""
    key, key_id = add_key(a)
    assert allowed(b, key) and allowed(b, key)  # the second is answered from B's caches
    revoke_key(a, key_id)
    return seconds_until(lambda: not allowed(b, key))


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest rank: the smallest sample at or above `fraction` of them."""
    return sorted(samples)[math.ceil(fraction * len(samples)) - 1]


def listener_backends(admin, database_url: str) -> list[int]:
    with admin.connect() as connection:
        return list(connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = :database AND application_name = :name"),
            {"database": make_url(database_url).database, "name": LISTENER_APPLICATION_NAME}).scalars())


@pytest.mark.postgres
def test_a_revocation_reaches_the_other_replica_in_milliseconds(replicas):
    a, b = replicas
    assert b.app.revision_listener is not None
    assert seconds_until(lambda: b.app.revision_listener.up) is not None
    delays = [propagation(a, b) for _ in range(TRIALS)]
    assert None not in delays, f"{delays.count(None)} of {TRIALS} changes did not reach replica B by the push"
    seen = [delay for delay in delays if delay is not None]
    p50, p99 = percentile(seen, 0.50), percentile(seen, 0.99)
    print(f"\nrevision push, {TRIALS} trials (commit on A -> Check denies on B): "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(seen) * 1000:.1f} ms")
    assert p99 <= P99_BOUND, f"p99 {p99 * 1000:.1f} ms"
    registry = b.app.telemetry.registry
    # Each trial writes twice (the key, its revocation); B hears both.
    assert registry.get_sample_value("tollgate_revision_notifications_total") >= 2 * TRIALS
    assert registry.get_sample_value("tollgate_revision_listener_up") == 1


@pytest.mark.postgres
def test_with_the_push_off_the_poll_still_brings_the_change(postgres_url, tmp_path):
    refresh = 0.5
    a = start_world(postgres_url, tmp_path / "a", cache_refresh_seconds=SLOW_POLL)
    b = start_replica(a, tmp_path / "b", cache_refresh_seconds=refresh, revision_push=False)
    try:
        assert b.app.revision_listener is None
        assert b.app.telemetry.registry.get_sample_value("tollgate_revision_listener_up") is None
        delay = propagation(a, b)
        assert delay is not None and delay <= refresh + 0.5, f"seen after {delay} s"
    finally:
        stop_world(b)
        stop_world(a)


@pytest.mark.postgres
def test_a_dropped_listener_reconnects_and_catches_up(postgres_url, postgres_admin_engine, tmp_path):
    # Only B listens, so the one listener backend on the database is B's.
    a = start_world(postgres_url, tmp_path / "a", cache_refresh_seconds=SLOW_POLL, revision_push=False)
    b = start_replica(a, tmp_path / "b", cache_refresh_seconds=SLOW_POLL)
    listener = b.app.revision_listener
    assert listener is not None
    try:
        assert seconds_until(lambda: len(listener_backends(postgres_admin_engine, postgres_url)) == 1,
                             every=0.05) is not None
        (backend,) = listener_backends(postgres_admin_engine, postgres_url)
        assert (propagation(a, b) or TRIAL_BOUND) <= 2 * P99_BOUND

        key, key_id = add_key(a)
        assert allowed(b, key)
        with postgres_admin_engine.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar()
        assert seconds_until(lambda: not listener.up) is not None, "the listener did not notice"
        assert b.app.telemetry.registry.get_sample_value("tollgate_revision_listener_up") == 0
        revoke_key(a, key_id)  # while nobody listens: this notification is lost
        # Seen when the listener reconnects (it refreshes once then), long before B's poll would.
        missed = seconds_until(lambda: not allowed(b, key))
        assert missed is not None and missed < 3.0, f"the change made while down took {missed} s"

        assert seconds_until(lambda: listener_backends(postgres_admin_engine, postgres_url) not in ([], [backend]),
                             every=0.05) is not None, "no new listener backend"
        assert seconds_until(lambda: listener.up) is not None
        delays = [propagation(a, b) for _ in range(10)]
        assert None not in delays and max(d for d in delays if d is not None) <= 2 * P99_BOUND, delays
    finally:
        stop_world(b)
        stop_world(a)


def test_only_postgresql_with_the_fact_cache_listens(database_url, tmp_path):
    world = start_world(database_url, tmp_path / "a")
    without_cache = start_replica(world, tmp_path / "b", cache_max_entries=0)
    try:
        assert (world.app.revision_listener is not None) == database_url.startswith("postgresql")
        assert without_cache.app.revision_listener is None
    finally:
        stop_world(without_cache)
        stop_world(world)
