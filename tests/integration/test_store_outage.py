"""A store outage is UNAVAILABLE on Check and ManageRelation and a 503 error_response on ext_authz:
never an allow, never a crash, and service resumes without a restart."""

import threading
import time

import grpc
from google.rpc import code_pb2
import pytest
from tollgate.v1 import relations_pb2 as pb

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.grpc_errors import expect_error
from tests.support.outage import DatabaseSwitch
from tests.support.world import start_world, stop_world


@pytest.mark.postgres
def test_check_fails_closed_when_the_database_goes_away(postgres_url, postgres_admin_url, tmp_path):
    world = start_world(postgres_url, tmp_path, db_connect_timeout_seconds=2, cache_refresh_seconds=0.2)
    try:
        assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
        threads_before = threading.active_count()
        database = DatabaseSwitch(postgres_admin_url, postgres_url)
        database.cut()  # the store vanishes under the running server
        time.sleep(0.6)  # past the cache's staleness bound (2 x 0.2 s): cached facts are no longer used
        for _ in range(3):
            error = expect_error(world.check, "getUser", authorization=world.bearer("acme"), user_id="u-active")
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "store_unavailable")
            assert "postgres" not in error.message  # no URL, no driver text
        envoy = ext_authz_stub(world.channel).Check(ext_authz_request(
            "GET", "/v1/users/u-active", {"authorization": world.bearer("acme")}), timeout=10)
        assert envoy.HasField("error_response") and not envoy.HasField("ok_response")
        assert envoy.error_response.status.code == 503 and envoy.status.code == code_pb2.UNAVAILABLE
        assert envoy.dynamic_metadata["reason"] == "authorization_unavailable"
        error = expect_error(world.manage, "acme", request_user_relation=pb.RequestUserRelation(user_id="u-x"))
        assert error.code is grpc.StatusCode.UNAVAILABLE
        assert world.check("health").allowed, "public operations need no store"

        database.restore()  # and comes back: service resumes without a restart
        database.close()
        assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
        assert threading.active_count() <= threads_before + 2, "the outage leaked threads"
    finally:
        stop_world(world)
