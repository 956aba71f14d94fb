"""Rate limiting through a real server: 429 rate_limit_exceeded with a retry-after, per partner."""

import json

import pytest
from google.rpc import code_pb2

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.world import start_world, stop_world


@pytest.fixture
def limited_world(tmp_path):
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path, rate_limit_per_second=0.5, rate_limit_burst=3)
    yield world
    stop_world(world)


def test_partner_over_its_rate_gets_429(limited_world):
    world = limited_world
    bearer = world.bearer("acme")
    answers = [world.check("createCourtBooking", authorization=bearer) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    limited = answers[-1]
    assert (limited.reason, limited.http_status, limited.retry_after_seconds) == ("rate_limit_exceeded", 429, 2)
    assert json.loads(limited.body)["errors"][0]["reason"] == "rate_limit_exceeded"
    assert world.check("createCourtBooking", authorization=world.bearer("platform")).reason == "insufficient_scope"
    assert world.check("health").allowed, "public operations are not limited"
    envoy = ext_authz_stub(world.channel).Check(ext_authz_request("POST", "/v1/court-bookings",
                                                                  {"authorization": bearer}), timeout=10)
    headers = {o.header.key: o.header.value for o in envoy.denied_response.headers}
    assert envoy.denied_response.status.code == 429 and headers["retry-after"] == "2"
    assert envoy.status.code == code_pb2.RESOURCE_EXHAUSTED


def test_invalid_credentials_are_not_charged_to_the_partner(limited_world):
    for _ in range(5):
        assert limited_world.check("createCourtBooking", authorization="Bearer tg_live_x").reason == "invalid_token"
    assert limited_world.check("createCourtBooking", authorization=limited_world.bearer("acme")).allowed
