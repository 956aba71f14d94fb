"""tollgate.v1.Admin for the token service through a real server: OAuth clients and signing keys,
who may administer them, and their audit trail."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta

import grpc
import pytest
from tollgate.v1 import admin_pb2 as pb

from service.domain import opaque
from tests.integration.test_admin import ADMIN_ACTOR, Admin, audit, seed_admin
from tests.support.grpc_errors import call_error, expect_error

# The default access-token lifetime plus the default JWT leeway: how long a retired key stays published.
RETIRED_KEY_PUBLISHED_FOR = timedelta(seconds=3600 + 30)


@pytest.fixture
def admin(world):
    return Admin(world, seed_admin(world))


def stored_client(world, client_id):
    with world.seed() as repos:
        return repos.oauth_clients.get(client_id)


# -- OAuth clients -------------------------------------------------------------------------------


def test_oauth_client_life_cycle(world, admin):
    created = admin.CreateOAuthClient(pb.CreateOAuthClientRequest(
        partner_id="acme", name="booking robot", scopes=["court-booking:write", "read:bookings"],
        customer_numbers=["C-1"], refresh_tokens=True))
    secret, client = created.client_secret, created.client
    assert secret.startswith(opaque.CLIENT_SECRET_PREFIX) and opaque.well_formed(secret, opaque.CLIENT_SECRET_PREFIX)
    assert client.id.startswith("cli_") and (client.partner_id, client.name) == ("acme", "booking robot")
    assert list(client.scopes) == ["court-booking:write", "read:bookings"]  # as given, not rewritten
    assert list(client.customer_numbers) == ["C-1"] and client.refresh_tokens
    assert client.HasField("create_time")
    assert not client.HasField("secret_rotate_time") and not client.HasField("revoke_time")
    assert stored_client(world, client.id).secret_digest == opaque.digest(secret)

    world.clock.advance(1)
    other = admin.CreateOAuthClient(pb.CreateOAuthClientRequest(partner_id="globex")).client
    assert list(other.scopes) == [] and not other.refresh_tokens and other.name == ""
    assert [c.id for c in admin.ListOAuthClients(pb.ListOAuthClientsRequest(partner_id="acme")).clients] == [client.id]
    everyone = admin.ListOAuthClients(pb.ListOAuthClientsRequest()).clients
    assert [c.id for c in everyone] == [client.id, other.id]  # oldest first
    assert everyone[0] == client and secret not in str(everyone) and opaque.digest(secret) not in str(everyone)

    world.clock.advance(60)
    rotated = admin.RotateOAuthClientSecret(pb.RotateOAuthClientSecretRequest(client_id=client.id))
    assert rotated.client_secret != secret and opaque.well_formed(rotated.client_secret, opaque.CLIENT_SECRET_PREFIX)
    assert rotated.client.HasField("secret_rotate_time") and rotated.client.id == client.id
    assert stored_client(world, client.id).secret_digest == opaque.digest(rotated.client_secret)

    revoked = admin.RevokeOAuthClient(pb.RevokeOAuthClientRequest(client_id=client.id)).client
    assert revoked.HasField("revoke_time") and stored_client(world, client.id).revoked_at is not None
    for rpc, request in (("RevokeOAuthClient", pb.RevokeOAuthClientRequest(client_id=client.id)),
                         ("RotateOAuthClientSecret", pb.RotateOAuthClientSecretRequest(client_id=client.id))):
        error = expect_error(getattr(admin, rpc), request)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "already_revoked"), rpc
    assert stored_client(world, client.id).secret_digest == opaque.digest(rotated.client_secret)


def test_unknown_partners_and_clients_are_not_found(world, admin):
    for rpc, request, reason, field in (
            ("CreateOAuthClient", pb.CreateOAuthClientRequest(partner_id="nobody"), "partner_not_found", "partner_id"),
            ("ListOAuthClients", pb.ListOAuthClientsRequest(partner_id="nobody"), "partner_not_found", "partner_id"),
            ("RotateOAuthClientSecret", pb.RotateOAuthClientSecretRequest(client_id="cli_nope"), "client_not_found",
             "client_id"),
            ("RevokeOAuthClient", pb.RevokeOAuthClientRequest(client_id="cli_nope"), "client_not_found", "client_id"),
            ("RevokeOAuthClient", pb.RevokeOAuthClientRequest(), "client_not_found", "client_id")):
        error = expect_error(getattr(admin, rpc), request)
        assert (error.code, error.reason, error.field) == (grpc.StatusCode.NOT_FOUND, reason, field), rpc


@pytest.mark.parametrize("request_fields, field", [
    ({"scopes": ["relations:write"]}, "scopes"),  # acme does not hold it: never wider than the partner
    ({"scopes": ["admin"]}, "scopes"),
    ({"scopes": ["user:fly"]}, "scopes"),
    ({"scopes": ["openid"]}, "scopes"),  # not a grant of the policy
    ({"scopes": ['user:read"']}, "scopes"),
    ({"customer_numbers": ["C 1"]}, "customer_numbers"),
    ({"name": "bell\a"}, "name"),
])
def test_client_scopes_and_fields_are_checked(world, admin, request_fields, field):
    error = expect_error(admin.CreateOAuthClient, pb.CreateOAuthClientRequest(partner_id="acme", **request_fields))
    assert (error.code, error.reason, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", field)
    assert admin.ListOAuthClients(pb.ListOAuthClientsRequest()).clients == []


def test_a_role_partner_may_narrow_its_roles_grants(world, admin):
    client = admin.CreateOAuthClient(pb.CreateOAuthClientRequest(partner_id="globex", scopes=["user:read"])).client
    assert list(client.scopes) == ["user:read"]
    error = expect_error(admin.CreateOAuthClient, pb.CreateOAuthClientRequest(partner_id="globex",
                                                                              scopes=["user:write"]))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "scopes")


def test_client_changes_are_audited_without_secrets(world, admin):
    created = admin.CreateOAuthClient(pb.CreateOAuthClientRequest(
        partner_id="acme", name="robot", scopes=["user:read"], customer_numbers=["C-2"], refresh_tokens=True))
    client_id = created.client.id
    rotated = admin.RotateOAuthClientSecret(pb.RotateOAuthClientSecretRequest(client_id=client_id))
    admin.RevokeOAuthClient(pb.RevokeOAuthClientRequest(client_id=client_id))
    expect_error(admin.RevokeOAuthClient, pb.RevokeOAuthClientRequest(client_id=client_id))
    # A secret pasted where the client id belongs is redacted, not recorded.
    expect_error(admin.RotateOAuthClientSecret, pb.RotateOAuthClientSecretRequest(client_id=rotated.client_secret))
    admin.ListOAuthClients(pb.ListOAuthClientsRequest())  # a successful read: not audited

    events = audit(admin)
    assert [(e.actor, e.action, e.target, e.outcome) for e in events] == [
        (ADMIN_ACTOR, "oauth_client.create", client_id, "ok"),
        (ADMIN_ACTOR, "oauth_client.rotate_secret", client_id, "ok"),
        (ADMIN_ACTOR, "oauth_client.revoke", client_id, "ok"),
        (ADMIN_ACTOR, "oauth_client.revoke", client_id, "already_revoked"),
        (ADMIN_ACTOR, "oauth_client.rotate_secret", "[redacted]", "client_not_found"),
    ]
    details = json.loads(events[0].details)
    assert details.pop("credential_id").startswith("key_")
    assert details == {"partner_id": "acme", "name": "robot", "scopes": ["user:read"], "customer_numbers": ["C-2"],
                       "refresh_tokens": True}
    assert json.loads(events[1].details)["partner_id"] == "acme"

    everything = str(admin.ListAuditEvents(pb.ListAuditEventsRequest(page_size=500)))
    for secret in (created.client_secret, rotated.client_secret):
        assert secret not in everything and opaque.digest(secret) not in everything
        assert secret[len(opaque.CLIENT_SECRET_PREFIX):] not in everything


# -- who may call --------------------------------------------------------------------------------


OAUTH_CALLS = [
    ("CreateOAuthClient", pb.CreateOAuthClientRequest(partner_id="acme")),
    ("ListOAuthClients", pb.ListOAuthClientsRequest()),
    ("RotateOAuthClientSecret", pb.RotateOAuthClientSecretRequest(client_id="cli_x")),
    ("RevokeOAuthClient", pb.RevokeOAuthClientRequest(client_id="cli_x")),
    ("RotateSigningKey", pb.RotateSigningKeyRequest()),
    ("ListSigningKeys", pb.ListSigningKeysRequest()),
]


def test_non_admins_are_refused_and_the_refusals_are_audited(world, admin):
    narrowed = seed_admin(world, key_grants=("user:read",))  # an admin partner's key narrowed below admin
    callers = {"partner:acme": Admin(world, world.keys["acme"]),
               "platform:platform": Admin(world, world.keys["platform"], header="x-api-key"),
               "partner:ops": Admin(world, narrowed)}
    with world.seed() as repos:
        keys_before = [k.kid for k in repos.signing_keys.list()]
    for actor, caller in callers.items():
        for rpc, request in OAUTH_CALLS:
            error = expect_error(getattr(caller, rpc), request)
            assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "admin_only"), (actor, rpc)

    with world.seed() as repos:
        assert repos.oauth_clients.list_for_partner(None) == []
        assert [k.kid for k in repos.signing_keys.list()] == keys_before
    for actor in callers:
        refused = audit(admin, actor=actor)
        assert [e.action for e in refused] == ["oauth_client.create", "oauth_client.list",
                                               "oauth_client.rotate_secret", "oauth_client.revoke",
                                               "signing_key.rotate", "signing_key.list"]
        assert {e.outcome for e in refused} == {"admin_only"}


def test_callers_without_a_credential_are_unauthenticated(world):
    caller = Admin(world, None)
    for rpc, request in OAUTH_CALLS:
        error = expect_error(getattr(caller, rpc), request)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "missing_token"), rpc


# -- signing keys --------------------------------------------------------------------------------


def test_a_rotated_signing_key_stays_listed_as_retired_and_published(world, admin):
    # The server may already have made its first key; after two rotations the second's previous
    # key is certainly the first rotation's.
    world.clock.advance(60)
    first = admin.RotateSigningKey(pb.RotateSigningKeyRequest()).key
    assert first.active and not first.HasField("retire_time") and not first.HasField("publish_until_time")
    world.clock.advance(120)
    rotated = admin.RotateSigningKey(pb.RotateSigningKeyRequest())
    new, previous = rotated.key, rotated.previous
    assert new.kid != first.kid and new.active and new.algorithm == "ES256"
    assert previous.kid == first.kid and not previous.active
    retired_at = previous.retire_time.ToDatetime()
    publish_until = previous.publish_until_time.ToDatetime()
    assert retired_at == world.clock.now().astimezone(UTC).replace(tzinfo=None)
    assert publish_until - retired_at == RETIRED_KEY_PUBLISHED_FOR
    assert publish_until > world.clock.now().astimezone(UTC).replace(tzinfo=None)

    listed = admin.ListSigningKeys(pb.ListSigningKeysRequest()).keys
    assert [k.kid for k in listed][:2] == [new.kid, first.kid]  # newest first
    assert [k.kid for k in listed if k.active] == [new.kid]
    assert listed[1] == previous
    for key in listed:
        jwk = json.loads(key.public_jwk)
        assert jwk["kid"] == key.kid and jwk["alg"] == key.algorithm and "d" not in jwk  # the public half only
    with world.seed() as repos:
        published = [k.kid for k in repos.signing_keys.published(world.clock.now())]
        sealed = [k.private_key_sealed for k in repos.signing_keys.list()]
    assert published[:2] == [new.kid, first.kid]

    events = audit(admin, action="signing_key.rotate")
    assert [(e.target, e.outcome) for e in events] == [(first.kid, "ok"), (new.kid, "ok")]
    details = json.loads(events[1].details)
    assert (details["kid"], details["previous_kid"], details["algorithm"]) == (new.kid, first.kid, "ES256")
    everything = str(admin.ListAuditEvents(pb.ListAuditEventsRequest(page_size=500)))
    assert not any(s in everything for s in sealed)


def test_concurrent_rotations_leave_exactly_one_active_key(world, admin):
    admin.RotateSigningKey(pb.RotateSigningKeyRequest())

    def rotate(_):
        try:
            return admin.RotateSigningKey(pb.RotateSigningKeyRequest()).key.kid
        except grpc.RpcError as error:
            failure = call_error(error)
            assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "concurrent_rotation"), failure
            return None

    with ThreadPoolExecutor(4) as pool:
        made = [kid for kid in pool.map(rotate, range(4)) if kid]
    assert made
    listed = admin.ListSigningKeys(pb.ListSigningKeysRequest()).keys
    active = [k.kid for k in listed if k.active]
    assert len(active) == 1 and active[0] in made
    assert set(made) <= {k.kid for k in listed}
