"""Health says whether Check can decide: a store that takes connections but cannot answer Check's
reads (here a table Check reads is renamed away) is NOT_SERVING, on SQLite and on PostgreSQL, and
SERVING again once the table is back."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine

from tests.support.grpc_errors import expect_error
from tests.support.world import start_world, stop_world

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_CHECK_SECONDS = 0.2
# A few health rounds: the probe runs every HEALTH_CHECK_SECONDS.
WITHIN_SECONDS = 5.0


def status(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for_status(channel: grpc.Channel, wanted: int) -> float | None:
    """Seconds until every service reports `wanted`, or None past WITHIN_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < WITHIN_SECONDS:
        if all(status(channel, service) == wanted for service in ("", "tollgate.v1.Authorization")):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def rename_table(database_url: str, old: str, new: str) -> None:
    """DDL from another connection, as an operator's mistake or a broken migration would do it."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
    finally:
        engine.dispose()


@pytest.fixture
def world(database_url, tmp_path):
    started = start_world(database_url, tmp_path, health_check_seconds=HEALTH_CHECK_SECONDS)
    yield started
    stop_world(started)


def test_health_is_not_serving_while_check_cannot_read_its_tables(world, database_url):
    assert wait_for_status(world.channel, SERVING) is not None
    assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed

    rename_table(database_url, "api_keys", "api_keys_away")
    try:
        # The database still takes connections, but Check cannot look up a key it has not cached ...
        error = expect_error(world.check, "getUser", authorization=world.bearer("globex"), user_id="u-active")
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "store_unavailable")
        # ... and health says so within a few rounds.
        assert wait_for_status(world.channel, NOT_SERVING) is not None, "health still SERVING"
    finally:
        rename_table(database_url, "api_keys_away", "api_keys")

    assert wait_for_status(world.channel, SERVING) is not None, "health did not recover"
    reply = world.check("getUser", authorization=world.bearer("globex"), user_id="u-active")
    assert reply.http_status in (200, 403), reply  # decided again: allow or deny, no error
