"""ManageRelation, GetRelation and ListRelations through a real server: the whole life cycle."""

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import text
from tollgate.v1 import relations_pb2 as pb

from tests.support.grpc_errors import expect_error

PENDING, ACTIVE, REJECTED, REVOKED, EXPIRED = (
    pb.RELATION_STATUS_PENDING, pb.RELATION_STATUS_ACTIVE, pb.RELATION_STATUS_REJECTED,
    pb.RELATION_STATUS_REVOKED, pb.RELATION_STATUS_EXPIRED)


def request_user(world, user_id, key="acme", **extra):
    return world.manage(key, request_user_relation=pb.RequestUserRelation(user_id=user_id, **extra))


def approve(world, relation_id, key="platform", **extra):
    return world.manage(key, approve_user_relation=pb.ApproveUserRelation(relation_id=relation_id, **extra))


def revoke(world, relation_id, key="acme"):
    return world.manage(key, revoke_relation=pb.RevokeRelation(relation_id=relation_id, reason="done"))


def get(world, relation_id, key="platform"):
    return world.relations.GetRelation(pb.GetRelationRequest(relation_id=relation_id),
                                       metadata=[("authorization", world.bearer(key))], timeout=10)


def can_get_user(world, user_id):
    return world.check("getUser", authorization=world.bearer("acme"), user_id=user_id)


def test_request_approve_check_revoke(world):
    requested = request_user(world, "u-1")
    assert requested.created and requested.relation.status == PENDING
    assert requested.relation.partner_id == "acme" and requested.relation.subject_type == pb.SUBJECT_TYPE_USER
    assert can_get_user(world, "u-1").reason == "user_access_denied"

    again = request_user(world, "u-1")
    assert not again.created and again.relation.id == requested.relation.id

    approved = approve(world, requested.relation.id)
    assert approved.relation.status == ACTIVE and not approved.relation.HasField("expire_time")
    assert can_get_user(world, "u-1").allowed  # visible to the very next Check

    assert revoke(world, requested.relation.id).relation.status == REVOKED
    assert can_get_user(world, "u-1").reason == "user_access_denied"

    history = get(world, requested.relation.id)
    assert [(e.from_status, e.to_status) for e in history.events] == [
        (pb.RELATION_STATUS_UNSPECIFIED, PENDING), (PENDING, ACTIVE), (ACTIVE, REVOKED)]
    assert [e.actor for e in history.events] == ["partner:acme", "platform:platform", "partner:acme"]
    assert history.events[2].reason == "done" and history.relation.status == REVOKED


def test_reject_and_illegal_transitions(world):
    relation_id = request_user(world, "u-2").relation.id
    rejected = world.manage("platform", reject_user_relation=pb.RejectUserRelation(relation_id=relation_id))
    assert rejected.relation.status == REJECTED
    for call in (lambda: approve(world, relation_id), lambda: revoke(world, relation_id)):
        error = expect_error(call)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "illegal_transition")
    assert request_user(world, "u-2").created, "a rejected request does not block a new one"


def test_pending_cannot_be_revoked_and_active_cannot_be_approved_twice(world):
    relation_id = request_user(world, "u-3").relation.id
    assert expect_error(revoke, world, relation_id).reason == "illegal_transition"
    approve(world, relation_id)
    error = expect_error(approve, world, relation_id)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "illegal_transition")


def test_only_the_platform_approves_rejects_and_issues(world):
    relation_id = request_user(world, "u-4").relation.id
    for call in (
        lambda: approve(world, relation_id, key="acme"),
        lambda: world.manage("acme", reject_user_relation=pb.RejectUserRelation(relation_id=relation_id)),
        lambda: world.manage("acme", issue_connect_token=pb.IssueConnectToken(organization_id="o-1")),
        lambda: request_user(world, "u-4", partner_id="globex"),
    ):
        error = expect_error(call)
        assert error.code is grpc.StatusCode.PERMISSION_DENIED and error.reason in {"platform_only", "not_own_partner"}


def test_partners_see_and_revoke_only_their_own(world):
    relation_id = request_user(world, "u-5").relation.id
    approve(world, relation_id)
    for call in (lambda: revoke(world, relation_id, key="globex"), lambda: get(world, relation_id, key="globex")):
        error = expect_error(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "relation_not_found")
    assert revoke(world, relation_id, key="platform").relation.status == REVOKED


def test_platform_requests_for_a_partner(world):
    response = request_user(world, "u-6", key="platform", partner_id="globex")
    assert response.relation.partner_id == "globex" and response.created
    error = expect_error(request_user, world, "u-6", key="platform", partner_id="nobody")
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "partner_not_found")


def test_pending_request_expires_after_its_ttl(world):
    relation_id = request_user(world, "u-7").relation.id
    world.clock.advance(8 * 24 * 3600)  # past the 7-day default TTL
    assert get(world, relation_id).relation.status == EXPIRED
    error = expect_error(approve, world, relation_id)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "relation_expired")
    history = get(world, relation_id)
    assert [(e.to_status, e.actor) for e in history.events] == [(PENDING, "partner:acme"), (EXPIRED, "system")]
    assert request_user(world, "u-7").created, "an expired request frees the pair for a new one"


def test_active_relation_with_ttl_expires(world):
    relation_id = request_user(world, "u-8").relation.id
    approved = approve(world, relation_id, ttl=Duration(seconds=3600))
    assert approved.relation.HasField("expire_time")
    assert can_get_user(world, "u-8").allowed
    world.clock.advance(3601)
    assert can_get_user(world, "u-8").reason == "user_access_denied"
    assert world.app.relations.expire_due() == 1 + 1  # this one and the seeded lapsed relation
    assert [e.to_status for e in get(world, relation_id).events][-1] == EXPIRED


def test_connect_token_claim(world):
    issued = world.manage("platform", issue_connect_token=pb.IssueConnectToken(
        organization_id="o-9", issued_by="admin-7")).connect_token
    assert issued.token.startswith("tg_ct_") and issued.organization_id == "o-9" and issued.id
    def check():
        return world.check("getOrganization", authorization=world.bearer("acme"), organization_id="o-9")

    assert check().reason == "organization_access_denied"

    claimed = world.manage("acme", claim_organization_relation=pb.ClaimOrganizationRelation(
        connect_token=issued.token)).relation
    assert claimed.status == ACTIVE and claimed.subject_type == pb.SUBJECT_TYPE_ORGANIZATION
    assert claimed.subject_id == "o-9" and claimed.partner_id == "acme"
    assert check().allowed

    error = expect_error(world.manage, "globex",
                         claim_organization_relation=pb.ClaimOrganizationRelation(connect_token=issued.token))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "connect_token_used")
    assert "claimed connect token" in get(world, claimed.id).events[0].reason


def test_connect_token_unknown_and_expired(world):
    for token in ("tg_ct_" + "A" * 36, "nonsense", ""):
        error = expect_error(world.manage, "acme",
                             claim_organization_relation=pb.ClaimOrganizationRelation(connect_token=token))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "connect_token_unknown")
    issued = world.manage("platform", issue_connect_token=pb.IssueConnectToken(
        organization_id="o-10", ttl=Duration(seconds=60))).connect_token
    world.clock.advance(61)
    error = expect_error(world.manage, "acme",
                         claim_organization_relation=pb.ClaimOrganizationRelation(connect_token=issued.token))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "connect_token_expired")


def test_connect_token_is_stored_only_hashed(world):
    issued = world.manage("platform", issue_connect_token=pb.IssueConnectToken(organization_id="o-11")).connect_token
    with world.app.store.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM connect_tokens")).fetchall()
    assert rows and not any(issued.token in str(value) for row in rows for value in row)


def test_list_relations_is_scoped_and_paged(world):
    for index in range(5):
        request_user(world, f"list-{index}")
    metadata = [("authorization", world.bearer("acme"))]
    seen, token = [], ""
    while True:
        page = world.relations.ListRelations(pb.ListRelationsRequest(page_size=2, page_token=token, status=PENDING),
                                             metadata=metadata, timeout=10)
        seen += [r.subject_id for r in page.relations]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted([f"list-{i}" for i in range(5)] + ["u-pending"])
    error = expect_error(world.relations.ListRelations, pb.ListRelationsRequest(partner_id="globex"),
                         metadata=metadata, timeout=10)
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    platform = world.relations.ListRelations(pb.ListRelationsRequest(partner_id="globex"),
                                             metadata=[("authorization", world.bearer("platform"))], timeout=10)
    assert [r.partner_id for r in platform.relations] == ["globex"]
    error = expect_error(world.relations.ListRelations, pb.ListRelationsRequest(page_token="garbage"),
                         metadata=metadata, timeout=10)
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")


@pytest.mark.parametrize("metadata, reason", [
    ([], "missing_token"),
    ([("authorization", "Bearer tg_live_nope")], "invalid_token"),
    ([("authorization", "Basic YTpi")], "missing_token"),  # RFC 6750 section 3.1: no bearer credentials
    ([("authorization", "Bearer a b")], "invalid_token"),
])
def test_callers_must_authenticate(world, metadata, reason):
    error = expect_error(world.relations.ManageRelation, pb.ManageRelationRequest(
        request_user_relation=pb.RequestUserRelation(user_id="u")), metadata=metadata, timeout=10)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


def test_revoked_and_suspended_callers_are_refused(world):
    for key in ("acme-revoked", "shady"):
        error = expect_error(request_user, world, "u", key=key)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "token_revoked")


@pytest.mark.parametrize("action, field", [
    ({}, "action"),
    ({"request_user_relation": pb.RequestUserRelation()}, "request_user_relation.user_id"),
    ({"approve_user_relation": pb.ApproveUserRelation()}, "relation_id"),
    ({"approve_user_relation": pb.ApproveUserRelation(relation_id="r", ttl=Duration(seconds=-5))},
     "approve_user_relation.ttl"),
    ({"issue_connect_token": pb.IssueConnectToken()}, "issue_connect_token.organization_id"),
])
def test_malformed_actions_are_invalid_argument(world, action, field):
    error = expect_error(world.manage, "platform", **action)
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)


def test_jwt_callers_can_manage_relations(world):
    token = world.jwt("ec")
    response = world.relations.ManageRelation(
        pb.ManageRelationRequest(request_user_relation=pb.RequestUserRelation(user_id="u-jwt")),
        metadata=[("authorization", f"Bearer {token}")], timeout=10)
    assert response.relation.partner_id == "acme" and response.created
