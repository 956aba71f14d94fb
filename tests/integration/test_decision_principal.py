"""Decisions say who was refused: through a real server on SQLite and PostgreSQL, a deny decided
after the credential was proven names its principal as an allow does (CheckResponse.principal,
the decision log line, ext_authz's dynamic metadata), two partners' denials never share one (the
decision memo and the response templates answer repeated requests), and a credential that was not
recognised names nobody."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest
from tollgate.v1 import authorization_pb2, common_pb2

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.world import start_world, stop_world

# (operation, resource, reason, acme's key) decided alike for acme and globex (role reader), each
# after its credential was proven.
SAME_DENIAL = [
    ("updateUser", {"user_id": "u-active"}, "insufficient_scope", "acme-reader"),
    ("getUser", {"user_id": "u-nobody"}, "user_access_denied", "acme-reader"),
    ("getOrganization", {"organization_id": "o-nobody"}, "organization_access_denied", "acme"),
]
KEYS = {"acme": "acme-reader", "globex": "globex"}


def decision_log(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if r.name == "tollgate.decisions"]


def recalled(world) -> float:
    """How many native checks the decision memo has answered so far."""
    for line in generate_latest(world.app.telemetry.registry).decode().splitlines():
        if line.startswith('tollgate_checks_recalled_total{adapter="native"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("operation, resource, reason, acme_key", SAME_DENIAL)
def test_two_partners_denials_each_name_their_own_principal(shared_world, caplog, operation, resource, reason,
                                                            acme_key):
    """Asked in turns, again and again (the memo and the templates answer the repeats): each
    answer and log line names the partner whose credential it was, never the other."""
    world = shared_world
    keys = {"acme": acme_key, "globex": "globex"}
    before = recalled(world)
    with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
        for _ in range(3):
            for partner, key in keys.items():
                response = world.check(operation, authorization=world.bearer(key), **resource)
                assert (response.reason, response.allowed) == (reason, False)
                assert response.principal.partner_id == partner
                assert response.principal.credential_id == world.key_ids[key]
                assert response.principal.credential_kind == common_pb2.CREDENTIAL_KIND_API_KEY
                assert not response.grants  # the grants are an allow's
    assert recalled(world) - before == 4, "the repeats were answered from the decision memo"
    records = decision_log(caplog)
    assert [r["partner_id"] for r in records] == ["acme", "globex"] * 3
    assert [r["credential_id"] for r in records] == [world.key_ids[acme_key], world.key_ids["globex"]] * 3
    assert {r["credential_kind"] for r in records} == {"api_key"}
    for record in records:  # never the credential itself
        assert world.keys[acme_key] not in str(record) and world.keys["globex"] not in str(record)


@pytest.mark.parametrize("operation, resource, reason, acme_key", SAME_DENIAL)
def test_batch_denials_name_their_principal(shared_world, operation, resource, reason, acme_key):
    world = shared_world
    for partner, key in {"acme": acme_key, "globex": "globex"}.items():
        request = authorization_pb2.BatchCheckRequest(authorization=world.bearer(key), items=[
            authorization_pb2.BatchCheckItem(operation=operation, resource=authorization_pb2.Resource(**resource)),
            authorization_pb2.BatchCheckItem(operation="nope")])
        denied, unknown = world.authorization.BatchCheck(request, timeout=10).results
        assert (denied.reason, denied.principal.partner_id) == (reason, partner)
        assert unknown.reason == "unknown_operation" and not unknown.HasField("principal")


def test_ext_authz_denials_carry_the_principal_in_the_metadata(shared_world, caplog):
    """What Envoy's access log prints (partner=%DYNAMIC_METADATA(...:partner_id)%)."""
    world = shared_world
    stub = ext_authz_stub(world.channel)
    with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
        for _ in range(2):
            for partner, key in KEYS.items():
                response = stub.Check(ext_authz_request("PATCH", "/v1/users/u-active",
                                                        {"authorization": world.bearer(key)}), timeout=10)
                metadata = response.dynamic_metadata
                assert response.denied_response.status.code == 403
                assert (metadata["reason"], metadata["partner_id"]) == ("insufficient_scope", partner)
                assert (metadata["credential_id"], metadata["credential_kind"]) == (world.key_ids[key], "api_key")
    assert [r["partner_id"] for r in decision_log(caplog)] == ["acme", "globex"] * 2


def test_a_denied_jwt_names_its_credential(shared_world):
    token = shared_world.jwt("ec", "acme", jti="jti-deny", scope="read:user")
    response = shared_world.check("updateUser", authorization=f"Bearer {token}", user_id="u-active")
    assert response.reason == "insufficient_scope"
    assert (response.principal.partner_id, response.principal.credential_id) == ("acme", "iss_ec:jti-deny")
    assert response.principal.credential_kind == common_pb2.CREDENTIAL_KIND_JWT


UNRECOGNISED = {
    "missing": {},
    "invalid": {"api_key": "tg_live_nope"},
    "another scheme": {"authorization": "Basic YTpi"},
    "expired": {"key": "acme-expired"},
    "revoked": {"key": "acme-revoked"},
    "suspended": {"key": "shady"},
}


@pytest.mark.parametrize("name", UNRECOGNISED)
def test_a_credential_not_recognised_names_nobody(shared_world, caplog, name):
    world = shared_world
    credential = dict(UNRECOGNISED[name])
    if "key" in credential:
        credential = {"authorization": world.bearer(credential.pop("key"))}
    with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
        response = world.check("getUser", user_id="u-active", **credential)
        envoy = ext_authz_stub(world.channel).Check(ext_authz_request("GET", "/v1/users/u-active", {
            ("x-api-key" if k == "api_key" else k): v for k, v in credential.items()}), timeout=10)
    assert response.http_status == 401 and not response.HasField("principal")
    assert envoy.dynamic_metadata["partner_id"] == envoy.dynamic_metadata["credential_id"] == ""
    assert [(r["partner_id"], r["credential_id"]) for r in decision_log(caplog)] == [("", "")] * 2


def test_the_partners_rate_limit_names_the_principal(database_url, tmp_path, caplog):
    world = start_world(database_url, tmp_path, rate_limit_per_second=0.001, rate_limit_burst=1)
    try:
        key = world.bearer("acme")
        assert world.check("getUser", authorization=key, user_id="u-active").allowed
        with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
            limited = world.check("getUser", authorization=key, user_id="u-active")
            envoy = ext_authz_stub(world.channel).Check(ext_authz_request("GET", "/v1/users/u-active", {
                "authorization": key}), timeout=10)
        assert (limited.reason, limited.principal.partner_id) == ("rate_limit_exceeded", "acme")
        assert limited.principal.credential_id == world.key_ids["acme"]
        assert (envoy.dynamic_metadata["reason"], envoy.dynamic_metadata["partner_id"]) == ("rate_limit_exceeded",
                                                                                            "acme")
        assert [r["partner_id"] for r in decision_log(caplog)] == ["acme", "acme"]
    finally:
        stop_world(world)
