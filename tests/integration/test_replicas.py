"""Caches stay correct across replicas: a change made on one server is seen by another server
process on the same database within the refresh bound, and at once with at_least_as_fresh."""

import os
import time

import grpc
import pytest
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc
from tollgate.v1 import relations_pb2 as pb

from tests.support.oauth import OAuthHttp, add_client
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY

REFRESH_SECONDS = 0.3


@pytest.fixture
def replica(world, database_url, tmp_path):
    """A second `tollgate serve` process on the first server's database."""
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATABASE_URL": database_url,
                                  "TOLLGATE_DATA_DIR": str(tmp_path / "replica"),
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY), "TOLLGATE_METRICS_PORT": "0",
                                  "TOLLGATE_CACHE_REFRESH_SECONDS": str(REFRESH_SECONDS),
                                  # Replicas share the issuer URL: each accepts the tokens of the others.
                                  "TOLLGATE_ISSUER_URL": world.app.settings.token_issuer})
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield authorization_pb2_grpc.AuthorizationStub(channel)
    channel.close()
    code, output = stop_server(process)
    assert code == 0, output


def get_user(stub, world, user_id, fresh=""):
    return stub.Check(authorization_pb2.CheckRequest(
        authorization=world.bearer("acme"), operation="getUser", at_least_as_fresh=fresh,
        resource=authorization_pb2.Resource(user_id=user_id)), timeout=10)


def test_revocation_reaches_the_other_replica_within_the_bound(world, replica):
    assert get_user(replica, world, "u-active").allowed  # now cached on the replica
    listed = world.relations.ListRelations(pb.ListRelationsRequest(subject_id="u-active"),
                                           metadata=[("authorization", world.bearer("acme"))], timeout=10)
    revoked = world.manage("acme", revoke_relation=pb.RevokeRelation(relation_id=listed.relations[0].id))
    assert get_user(world.authorization, world, "u-active").reason == "user_access_denied"  # at once here
    started = time.monotonic()
    while get_user(replica, world, "u-active").allowed:
        assert time.monotonic() - started < 2 * REFRESH_SECONDS + 1.0, "the replica kept a stale allow"
        time.sleep(0.02)
    assert revoked.revision


def test_at_least_as_fresh_reads_through_on_a_stale_replica(world, replica):
    assert get_user(replica, world, "u-new").reason == "user_access_denied"  # the denial is cached
    relation_id = world.manage("acme", request_user_relation=pb.RequestUserRelation(user_id="u-new")).relation.id
    approved = world.manage("platform", approve_user_relation=pb.ApproveUserRelation(relation_id=relation_id))
    assert get_user(replica, world, "u-new", fresh=approved.revision).allowed  # no waiting for the refresh


def test_key_revocation_in_another_process_is_seen(world, replica):
    assert get_user(replica, world, "u-active").allowed
    with world.seed() as repos:  # a write by another process (the CLI does the same)
        repos.api_keys.revoke(world.key_ids["acme"], world.clock.now())
    started = time.monotonic()
    while get_user(replica, world, "u-active").reason != "token_revoked":
        assert time.monotonic() - started < 2 * REFRESH_SECONDS + 1.0
        time.sleep(0.02)


@pytest.mark.parametrize("token", ["abc", "-1", "1" * 30])
def test_malformed_revision_token_is_invalid_argument(shared_world, token):
    with pytest.raises(grpc.RpcError) as raised:
        get_user(shared_world.authorization, shared_world, "u-active", fresh=token)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_token_revoked_on_one_replica_is_refused_by_the_other_within_the_bound(world, replica):
    with OAuthHttp(world) as http:
        client = add_client(world, "cli_replica")
        token = http.issue(client)["access_token"]
        check = authorization_pb2.CheckRequest(authorization=f"Bearer {token}", operation="getUser",
                                               resource=authorization_pb2.Resource(user_id="u-active"))
        assert replica.Check(check, timeout=10).allowed  # the other replica knows Tollgate's own tokens
        assert http.revoke(client, token).status_code == 200
    assert world.authorization.Check(check, timeout=10).reason == "token_revoked"  # at once here
    started = time.monotonic()
    while replica.Check(check, timeout=10).reason != "token_revoked":
        assert time.monotonic() - started < 2 * REFRESH_SECONDS + 1.0, "the replica kept a revoked token"
        time.sleep(0.02)
