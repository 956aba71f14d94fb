"""Tokens that act for a user, through a real server on SQLite and PostgreSQL: an operation's
`token_user: self` / `related` against registered issuers' JWTs (real keys), Tollgate's own
client-credentials tokens and API keys, with relations changing and lapsing under the decision memo."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from tollgate.v1 import authorization_pb2
from tollgate.v1 import relations_pb2 as pb

from service.domain.ids import new_id
from service.domain.model import RelationRecord, RelationStatus, SubjectType
from tests.support.oauth import OAuthHttp, add_client
from tests.support.world import EXAMPLE_POLICY, World, start_world, stop_world

# The example policy, with tokens acting for the user in their `sub` and two operations that need one.
ACTING_OPERATIONS = {
    "getMyProfile": {"permissions": ["user:read"], "relation": "user", "token_user": "self"},
    "bookForUser": {"permissions": ["court-booking:write"], "token_user": "related"},
}


def acting_policy(directory: Path) -> Path:
    document = yaml.safe_load(EXAMPLE_POLICY.read_text())
    document["token_user_claim"] = "sub"
    document["operations"].update(ACTING_OPERATIONS)
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def acting(module_database_url, tmp_path_factory):
    """One server per module and store, for the tests that only read."""
    world = start_world(module_database_url, tmp_path_factory.mktemp("data"),
                        policy_path=acting_policy(tmp_path_factory.mktemp("policy")))
    yield world
    stop_world(world)


@pytest.fixture
def acting_live(database_url, tmp_path):
    """A fresh server per test, for the tests that change relations or move the clock."""
    world = start_world(database_url, tmp_path / "data", policy_path=acting_policy(tmp_path))
    yield world
    stop_world(world)


@dataclass(frozen=True)
class Case:
    name: str
    credential: Callable[[World], dict[str, str]]
    operation: str
    user_id: str
    allowed: bool


def token(issuer: str = "ec", **claims) -> Callable[[World], dict[str, str]]:
    return lambda world: {"authorization": f"Bearer {world.jwt(issuer, **claims)}"}


def key(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: {"api_key": world.keys[name]}


CASES = [
    *(Case(f"self: the token acts for the resource's user ({issuer})", token(issuer, sub="u-active"),
           "getMyProfile", "u-active", True) for issuer in ("ec", "rsa", "ed", "hmac")),
    Case("self: the token acts for another user", token(sub="u-someone"), "getMyProfile", "u-active", False),
    Case("self: client credentials (sub is the client_id)", token(sub="acme"), "getMyProfile", "u-active", False),
    Case("self: a token without sub", token(), "getMyProfile", "u-active", False),
    Case("self: an API key", key("acme"), "getMyProfile", "u-active", False),
    Case("related: the token's user has an active relation", token(sub="u-active"), "bookForUser", "", True),
    Case("related: through another issuer", token("rsa", sub="u-active"), "bookForUser", "", True),
    Case("related: the token's user has a pending relation", token(sub="u-pending"), "bookForUser", "", False),
    Case("related: the token's user has a lapsed relation", token(sub="u-lapsed"), "bookForUser", "", False),
    Case("related: the token's user has no relation", token(sub="u-none"), "bookForUser", "", False),
    Case("related: client credentials (sub is the client_id)", token(sub="acme"), "bookForUser", "", False),
    Case("related: a token without sub", token(), "bookForUser", "", False),
    Case("related: an API key", key("acme"), "bookForUser", "", False),
    Case("no token_user: client credentials still allowed", token(sub="acme"), "getUser", "u-active", True),
    Case("no token_user: an API key still allowed", key("acme"), "createCourtBooking", "", True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_token_user_table(acting, case):
    credential = case.credential(acting)
    response = acting.check(case.operation, user_id=case.user_id, **credential)
    assert response.allowed is case.allowed, response.message
    if case.allowed:
        assert response.http_status == 200 and response.principal.partner_id == "acme"
        return
    assert (response.reason, response.http_status, response.field) == ("user_access_denied", 403, "userId")
    assert json.loads(response.body) == {"code": 403, "errors": [
        {"reason": "user_access_denied", "message": response.message, "field": "userId"}]}
    secret = next(iter(credential.values())).removeprefix("Bearer ")
    assert secret not in response.message and secret not in response.body
    assert "u-someone" not in response.message and "u-none" not in response.message


def test_denials_say_which_demand_failed(acting):
    no_user = acting.check("bookForUser", api_key=acting.keys["acme"])
    assert "needs a token acting for a signed-in user" in no_user.message
    other = acting.check("getMyProfile", authorization=f"Bearer {acting.jwt('ec', sub='u-x')}", user_id="u-active")
    assert other.message == "the token acts for another user than this one"
    unrelated = acting.check("bookForUser", authorization=f"Bearer {acting.jwt('ec', sub='u-pending')}")
    assert unrelated.message == "the user the token acts for has no active relation with the partner"


def test_tollgate_client_credentials_tokens_act_for_no_user(acting):
    client = add_client(acting, f"cli_{new_id('t')}")
    with OAuthHttp(acting) as http:
        access_token = http.issue(client)["access_token"]
    bearer = {"authorization": f"Bearer {access_token}"}
    assert acting.check("getUser", user_id="u-active", **bearer).allowed
    for operation, user_id in (("getMyProfile", "u-active"), ("bookForUser", "")):
        response = acting.check(operation, user_id=user_id, **bearer)
        assert (response.reason, response.field) == ("user_access_denied", "userId")
        assert "acts for no user" in response.message


def test_a_batch_decides_each_item_for_the_token_user(acting):
    items = [authorization_pb2.BatchCheckItem(operation="bookForUser"),
             authorization_pb2.BatchCheckItem(operation="getMyProfile",
                                              resource=authorization_pb2.Resource(user_id="u-active")),
             authorization_pb2.BatchCheckItem(operation="getMyProfile",
                                              resource=authorization_pb2.Resource(user_id="u-someone"))]
    request = authorization_pb2.BatchCheckRequest(authorization=f"Bearer {acting.jwt('ec', sub='u-active')}",
                                                  items=items)
    answers = acting.authorization.BatchCheck(request, timeout=10).results
    assert [(a.allowed, a.reason) for a in answers] == [(True, ""), (True, ""), (False, "user_access_denied")]


def test_related_follows_the_relation_life_cycle(acting_live):
    world = acting_live
    bearer = f"Bearer {world.jwt('ec', sub='u-1', lifetime=3600)}"

    def book():
        return world.check("bookForUser", authorization=bearer)

    assert book().reason == "user_access_denied"
    requested = world.manage("acme", request_user_relation=pb.RequestUserRelation(user_id="u-1"))
    assert book().reason == "user_access_denied"  # pending
    world.manage("platform", approve_user_relation=pb.ApproveUserRelation(relation_id=requested.relation.id))
    assert book().allowed and book().allowed  # the second from the decision memo
    world.manage("acme", revoke_relation=pb.RevokeRelation(relation_id=requested.relation.id, reason="done"))
    assert book().reason == "user_access_denied"  # the very next check


def test_a_kept_decision_ends_when_the_token_users_relation_lapses(acting_live):
    world = acting_live
    now = world.clock.now()
    with world.seed() as repos:
        repos.relations.insert_open(RelationRecord(new_id("rel"), "acme", SubjectType.USER, "u-soon",
                                                   RelationStatus.ACTIVE, now, now, now + timedelta(seconds=60)))
    bearer = f"Bearer {world.jwt('ec', sub='u-soon', lifetime=3600)}"
    assert world.check("bookForUser", authorization=bearer).allowed
    assert world.check("bookForUser", authorization=bearer).allowed  # remembered, until the relation lapses
    world.clock.advance(61)
    denied = world.check("bookForUser", authorization=bearer)
    assert (denied.reason, denied.field) == ("user_access_denied", "userId")
