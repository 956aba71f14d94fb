"""Races decided by the database, over real gRPC on PostgreSQL (and SQLite)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from tollgate.v1 import relations_pb2 as pb

from tests.support.grpc_errors import call_error

THREADS = 50


def race(world, key_name, request):
    """Runs the same ManageRelation from THREADS threads released together; returns outcomes."""
    barrier = threading.Barrier(THREADS, timeout=30)

    def one(_):
        barrier.wait()
        try:
            return world.manage(key_name, **request)
        except grpc.RpcError as error:
            return call_error(error)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS), timeout=60))


def test_concurrent_claims_of_one_connect_token_have_one_winner(world):
    issued = world.manage("platform", issue_connect_token=pb.IssueConnectToken(organization_id="o-race")).connect_token
    outcomes = race(world, "acme", {"claim_organization_relation": pb.ClaimOrganizationRelation(
        connect_token=issued.token)})
    winners = [o for o in outcomes if isinstance(o, pb.ManageRelationResponse)]
    losers = [o for o in outcomes if not isinstance(o, pb.ManageRelationResponse)]
    assert len(winners) == 1, outcomes
    assert {(o.code, o.reason) for o in losers} == {(grpc.StatusCode.FAILED_PRECONDITION, "connect_token_used")}
    listed = world.relations.ListRelations(pb.ListRelationsRequest(subject_id="o-race"),
                                           metadata=[("authorization", world.bearer("platform"))], timeout=10)
    assert len(listed.relations) == 1 and listed.relations[0].status == pb.RELATION_STATUS_ACTIVE


def test_concurrent_requests_create_one_relation(world):
    outcomes = race(world, "acme", {"request_user_relation": pb.RequestUserRelation(user_id="u-race")})
    assert all(isinstance(o, pb.ManageRelationResponse) for o in outcomes), outcomes
    assert sum(o.created for o in outcomes) == 1
    assert len({o.relation.id for o in outcomes}) == 1


def test_concurrent_approve_and_reject_end_in_one_state(world):
    relation_id = world.manage("acme", request_user_relation=pb.RequestUserRelation(user_id="u-duel")).relation.id
    barrier = threading.Barrier(2, timeout=30)

    def act(action):
        barrier.wait()
        try:
            return world.manage("platform", **action).relation.status
        except grpc.RpcError as error:
            return call_error(error).reason

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(act, [
            {"approve_user_relation": pb.ApproveUserRelation(relation_id=relation_id)},
            {"reject_user_relation": pb.RejectUserRelation(relation_id=relation_id)},
        ], timeout=60))
    final = world.relations.GetRelation(pb.GetRelationRequest(relation_id=relation_id),
                                        metadata=[("authorization", world.bearer("platform"))], timeout=10)
    assert final.relation.status in results, results
    assert {r for r in results if isinstance(r, str)} <= {"illegal_transition", "concurrent_change"}
    assert [e.to_status for e in final.events] == [pb.RELATION_STATUS_PENDING, final.relation.status]


LEGAL_MOVES = {  # the life cycle (service/domain/relations.py) as the wire sees it
    pb.RELATION_STATUS_UNSPECIFIED: {pb.RELATION_STATUS_PENDING},
    pb.RELATION_STATUS_PENDING: {pb.RELATION_STATUS_ACTIVE, pb.RELATION_STATUS_REJECTED, pb.RELATION_STATUS_EXPIRED},
    pb.RELATION_STATUS_ACTIVE: {pb.RELATION_STATUS_REVOKED, pb.RELATION_STATUS_EXPIRED},
}


def test_concurrent_approve_reject_and_revoke_leave_a_history_that_replays(world):
    """Three approvers, three rejecters and three revokers (the owning partner) race on each of five
    pending relations: every relation ends in one state, and its events chain from creation to
    that state through legal moves only (no lost or doubled change)."""
    for round_number in range(5):
        relation_id = world.manage("acme", request_user_relation=pb.RequestUserRelation(
            user_id=f"u-melee-{round_number}")).relation.id
        actions = ([("platform", {"approve_user_relation": pb.ApproveUserRelation(relation_id=relation_id)})] * 3
                   + [("platform", {"reject_user_relation": pb.RejectUserRelation(relation_id=relation_id)})] * 3
                   + [("acme", {"revoke_relation": pb.RevokeRelation(relation_id=relation_id)})] * 3)
        barrier = threading.Barrier(len(actions), timeout=30)

        def act(action, barrier=barrier):
            key_name, request = action
            barrier.wait()
            try:
                return world.manage(key_name, **request).relation.status
            except grpc.RpcError as error:
                return call_error(error).reason

        with ThreadPoolExecutor(len(actions)) as pool:
            results = list(pool.map(act, actions, timeout=60))
        assert {r for r in results if isinstance(r, str)} <= {"illegal_transition", "concurrent_change"}, results
        final = world.relations.GetRelation(pb.GetRelationRequest(relation_id=relation_id),
                                            metadata=[("authorization", world.bearer("platform"))], timeout=10)
        status = pb.RELATION_STATUS_UNSPECIFIED
        for event in final.events:
            assert event.from_status == status and event.to_status in LEGAL_MOVES[status], final.events
            status = event.to_status
        assert status == final.relation.status
        assert final.relation.status in {pb.RELATION_STATUS_ACTIVE, pb.RELATION_STATUS_REJECTED,
                                         pb.RELATION_STATUS_REVOKED}
        # Every success the callers saw is a state the history passed through.
        assert {r for r in results if not isinstance(r, str)} <= {e.to_status for e in final.events}
