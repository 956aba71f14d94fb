"""Rate limiting through a real server: 429 rate_limit_exceeded with a retry-after, per partner."""

import json
from dataclasses import replace

import pytest
from google.rpc import code_pb2
from tollgate.v1 import authorization_pb2 as apb

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.keys import generate_signing_key
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


# --- failed credentials, per client address --------------------------------------------------------


@pytest.fixture
def guarded_world(tmp_path):
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path,
                        failed_credential_rate_per_second=0.5, failed_credential_burst=3)
    yield world
    stop_world(world)


def check_from(world, address: str, authorization: str, operation: str = "createCourtBooking"):
    return world.authorization.Check(apb.CheckRequest(authorization=authorization, operation=operation,
                                                      client_address=address), timeout=10)


def test_an_address_that_keeps_failing_is_refused_before_verification(guarded_world):
    world = guarded_world
    attacker = replace(generate_signing_key("RS256", "attacker"), kid=world.signers["rsa"].kid)
    forged = "Bearer " + world.jwt("rsa", signer=attacker)  # the issuer's kid, another key: a signature check
    failures = [check_from(world, "198.51.100.7", token) for token in ("Bearer tg_live_x", forged, "Bearer junk")]
    assert [f.reason for f in failures] == ["invalid_token"] * 3
    # Its next check is refused unverified, even with a good key: the address has spent its failures.
    refused = check_from(world, "198.51.100.7", world.bearer("acme"))
    assert (refused.allowed, refused.reason, refused.http_status, refused.retry_after_seconds) == (
        False, "rate_limit_exceeded", 429, 2)
    assert "failed credentials" in refused.message
    assert json.loads(refused.body)["errors"][0]["reason"] == "rate_limit_exceeded"
    batch = world.authorization.BatchCheck(apb.BatchCheckRequest(
        authorization=world.bearer("acme"), client_address="198.51.100.7",
        items=[apb.BatchCheckItem(operation="createCourtBooking")] * 2), timeout=10)
    assert [r.reason for r in batch.results] == ["rate_limit_exceeded"] * 2
    # Other addresses, and public operations, are untouched.
    assert check_from(world, "198.51.100.8", world.bearer("acme")).allowed
    assert check_from(world, "198.51.100.7", "", operation="health").allowed
    # Good credentials cost nothing: a partner's own address is never throttled by its successes.
    assert all(check_from(world, "198.51.100.9", world.bearer("acme")).allowed for _ in range(10))


def test_without_client_address_the_peer_is_the_key(guarded_world):
    world = guarded_world
    for _ in range(3):
        assert world.check("createCourtBooking", authorization="Bearer tg_live_x").reason == "invalid_token"
    assert world.check("createCourtBooking", authorization=world.bearer("acme")).reason == "rate_limit_exceeded"
    assert check_from(world, "203.0.113.1", world.bearer("acme")).allowed  # a forwarded address is its own key


def test_ext_authz_keys_on_the_downstream_address_envoy_reports(guarded_world):
    world = guarded_world
    envoy = ext_authz_stub(world.channel)

    def from_address(address: str, authorization: str):
        request = ext_authz_request("POST", "/v1/court-bookings", {"authorization": authorization})
        request.attributes.source.address.socket_address.address = address
        return envoy.Check(request, timeout=10)

    for _ in range(3):
        assert from_address("192.0.2.10", "Bearer tg_live_x").denied_response.status.code == 401
    refused = from_address("192.0.2.10", world.bearer("acme"))
    headers = {o.header.key: o.header.value for o in refused.denied_response.headers}
    assert refused.denied_response.status.code == 429 and headers["retry-after"] == "2"
    assert refused.status.code == code_pb2.RESOURCE_EXHAUSTED
    assert from_address("192.0.2.11", world.bearer("acme")).status.code == code_pb2.OK
