"""tollgate.v1.Admin through a real server: every RPC, who may call it, and the audit trail."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tollgate.v1 import admin_pb2 as pb
from tollgate.v1 import admin_pb2_grpc

from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord, PartnerRecord, PartnerStatus
from service.store.repositories import SqlAdminAuditRepository
from tests.support.grpc_errors import expect_error
from tests.support.keys import access_token_claims, generate_signing_key, jwks
from tests.support.world import AUDIENCE

ADMIN_ACTOR = "admin:ops"


def seed_admin(world, partner_id="ops", grants=("admin",), key_grants=()) -> str:
    """An admin partner and one API key of it, straight into the store; returns the key."""
    key = opaque.generate(opaque.API_KEY_PREFIX)
    now = world.clock.now()
    with world.seed() as repos:
        if repos.partners.get(partner_id) is None:
            repos.partners.add(PartnerRecord(partner_id, "Operations", PartnerStatus.ACTIVE, grants, (), now))
        repos.api_keys.add(ApiKeyRecord(new_id("key"), partner_id, opaque.digest(key), "admin", key_grants, (), (),
                                        now))
    return key


class Admin:
    """The Admin stub with one credential attached to every call."""

    def __init__(self, world, key: str | None, header: str = "authorization") -> None:
        self._stub = admin_pb2_grpc.AdminStub(world.channel)
        if key is None:
            self._metadata = []
        else:
            self._metadata = [(header, f"Bearer {key}" if header == "authorization" else key)]

    def __getattr__(self, rpc):
        method = getattr(self._stub, rpc)
        return lambda request: method(request, metadata=self._metadata, timeout=10)


@pytest.fixture
def admin(world):
    return Admin(world, seed_admin(world))


def audit(admin, **filters) -> list[pb.AuditEvent]:
    events, token = [], ""
    while True:
        page = admin.ListAuditEvents(pb.ListAuditEventsRequest(page_size=3, page_token=token, **filters))
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def stamp(when) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def can_book(world, **credential):
    return world.check("createCourtBooking", **credential)


# -- partners ------------------------------------------------------------------------------------


def test_partner_life_cycle(world, admin):
    created = admin.CreatePartner(pb.CreatePartnerRequest(
        partner_id="initech", name="Initech", grants=["court-booking:write"], roles=["reader"])).partner
    assert (created.id, created.name, created.status) == ("initech", "Initech", pb.PARTNER_STATUS_ACTIVE)
    assert list(created.grants) == ["court-booking:write"] and list(created.roles) == ["reader"]
    assert created.HasField("create_time")

    assert admin.GetPartner(pb.GetPartnerRequest(partner_id="initech")).partner == created
    listed = admin.ListPartners(pb.ListPartnersRequest()).partners
    assert [p.id for p in listed] == sorted(["acme", "globex", "initech", "ops", "platform", "shady"])

    changed = admin.SetPartnerGrants(pb.SetPartnerGrantsRequest(partner_id="initech", grants=["order:read"])).partner
    assert list(changed.grants) == ["order:read"] and list(changed.roles) == []

    error = expect_error(admin.CreatePartner, pb.CreatePartnerRequest(partner_id="initech", name="Again"))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "partner_exists")
    error = expect_error(admin.GetPartner, pb.GetPartnerRequest(partner_id="nobody"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "partner_not_found")
    error = expect_error(admin.SetPartnerGrants, pb.SetPartnerGrantsRequest(partner_id="initech", grants=["bogus"]))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "grants")


def test_suspending_a_partner_refuses_its_credentials_at_once(world, admin):
    assert can_book(world, authorization=world.bearer("acme")).allowed
    suspended = admin.SetPartnerStatus(pb.SetPartnerStatusRequest(
        partner_id="acme", status=pb.PARTNER_STATUS_SUSPENDED)).partner
    assert suspended.status == pb.PARTNER_STATUS_SUSPENDED
    assert can_book(world, authorization=world.bearer("acme")).reason == "token_revoked"

    active = admin.SetPartnerStatus(pb.SetPartnerStatusRequest(partner_id="acme", status=pb.PARTNER_STATUS_ACTIVE))
    assert active.partner.status == pb.PARTNER_STATUS_ACTIVE
    assert can_book(world, authorization=world.bearer("acme")).allowed

    error = expect_error(admin.SetPartnerStatus, pb.SetPartnerStatusRequest(partner_id="acme"))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "status")
    actions = [(e.action, e.target, e.outcome) for e in audit(admin, actor=ADMIN_ACTOR)]
    assert actions == [("partner.suspend", "acme", "ok"), ("partner.activate", "acme", "ok"),
                       ("partner.set_status", "acme", "invalid_argument")]


# -- API keys ------------------------------------------------------------------------------------


def test_an_issued_key_works_at_once_and_a_revoked_one_stops_at_once(world, admin):
    expires = world.clock.now() + timedelta(days=30)
    issued = admin.IssueApiKey(pb.IssueApiKeyRequest(
        partner_id="acme", name="booking robot", grants=["court-booking:write"], customer_numbers=["C-9"],
        expire_time=stamp(expires)))
    key = issued.key
    assert key.startswith(opaque.API_KEY_PREFIX) and opaque.well_formed(key, opaque.API_KEY_PREFIX)
    record = issued.api_key
    assert (record.partner_id, record.name, list(record.grants)) == ("acme", "booking robot", ["court-booking:write"])
    assert list(record.customer_numbers) == ["C-9"] and record.expire_time.ToDatetime() == expires.replace(tzinfo=None)
    assert not record.HasField("revoke_time")

    allowed = can_book(world, authorization=f"Bearer {key}")
    assert allowed.allowed and allowed.principal.credential_id == record.id
    assert can_book(world, api_key=key).allowed

    listed = admin.ListApiKeys(pb.ListApiKeysRequest(partner_id="acme")).api_keys
    assert record.id in [k.id for k in listed]
    assert key not in str(listed) and opaque.digest(key) not in str(listed)

    revoked = admin.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=record.id)).api_key
    assert revoked.id == record.id and revoked.HasField("revoke_time")
    assert can_book(world, authorization=f"Bearer {key}").reason == "token_revoked"

    error = expect_error(admin.RevokeApiKey, pb.RevokeApiKeyRequest(key_id=record.id))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "already_revoked")
    error = expect_error(admin.IssueApiKey, pb.IssueApiKeyRequest(partner_id="acme", grants=["relations:write"]))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "grants")  # never wider than the partner
    error = expect_error(admin.ListApiKeys, pb.ListApiKeysRequest(partner_id="nobody"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "partner_not_found")


# -- issuers and tokens --------------------------------------------------------------------------


def test_register_rotate_list_issuers_and_revoke_a_token(world, admin):
    first, second = generate_signing_key("ES256", "k-1"), generate_signing_key("ES256", "k-2")
    iss = "https://idp.admin.test"
    registered = admin.RegisterIssuer(pb.RegisterIssuerRequest(
        issuer=iss, audience=AUDIENCE, algorithms=["ES256"], jwks=json.dumps(jwks(first)))).issuer
    assert registered.issuer == iss and registered.key_source == pb.ISSUER_KEY_SOURCE_JWKS
    assert registered.require_at_jwt_typ and registered.customer_claim == "customer_numbers"
    assert [k["kid"] for k in json.loads(registered.jwks)["keys"]] == ["k-1"]

    def token(signer, **claims):
        return signer.sign(access_token_claims(iss, AUDIENCE, "acme", now=world.clock.now(), **claims))

    assert can_book(world, authorization=f"Bearer {token(first)}").allowed
    assert can_book(world, authorization=f"Bearer {token(second)}").reason == "invalid_token"

    rotated = admin.RotateIssuerKeys(pb.RotateIssuerKeysRequest(issuer=iss, jwks=json.dumps(jwks(first, second))))
    assert [k["kid"] for k in json.loads(rotated.issuer.jwks)["keys"]] == ["k-1", "k-2"]
    assert can_book(world, authorization=f"Bearer {token(second)}").allowed

    jti = "jti-to-revoke"
    revoked = admin.RevokeToken(pb.RevokeTokenRequest(issuer=iss, jti=jti))
    assert (revoked.issuer_id, revoked.jti) == (registered.id, jti)
    assert can_book(world, authorization=f"Bearer {token(second, jti=jti)}").reason == "token_revoked"
    assert can_book(world, authorization=f"Bearer {token(second)}").allowed

    listed = admin.ListIssuers(pb.ListIssuersRequest()).issuers
    assert iss in [i.issuer for i in listed] and "https://hmac.issuer.test" in [i.issuer for i in listed]
    error = expect_error(admin.RegisterIssuer, pb.RegisterIssuerRequest(
        issuer=iss, audience=AUDIENCE, algorithms=["ES256"], jwks=json.dumps(jwks(first))))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "issuer_exists")
    error = expect_error(admin.RotateIssuerKeys, pb.RotateIssuerKeysRequest(
        issuer="https://hmac.issuer.test", jwks=json.dumps(jwks(first))))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "hmac_issuer")
    error = expect_error(admin.RevokeToken, pb.RevokeTokenRequest(issuer="https://nowhere.test", jti="x"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "issuer_not_found")


def test_an_hmac_issuer_secret_is_sealed_and_never_shown(world, admin):
    signer = generate_signing_key("HS256", "h-1")
    iss = "https://hs.admin.test"
    registered = admin.RegisterIssuer(pb.RegisterIssuerRequest(
        issuer=iss, audience=AUDIENCE, algorithms=["HS256"], hmac_secret=signer.secret)).issuer
    assert registered.key_source == pb.ISSUER_KEY_SOURCE_HMAC_SECRET and registered.jwks == ""
    token = signer.sign(access_token_claims(iss, AUDIENCE, "acme", now=world.clock.now()))
    assert can_book(world, authorization=f"Bearer {token}").allowed

    with world.seed() as repos:
        sealed = repos.issuers.get(registered.id).hmac_secret_sealed
    assert sealed and signer.secret.hex() not in sealed and signer.secret not in sealed.encode()
    shown = str(admin.ListIssuers(pb.ListIssuersRequest())) + str(audit(admin))
    assert sealed not in shown and signer.secret.hex() not in shown

    error = expect_error(admin.RegisterIssuer, pb.RegisterIssuerRequest(
        issuer="https://short.test", audience=AUDIENCE, algorithms=["HS256"], hmac_secret=b"too short"))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "hmac_secret")


def test_register_issuer_refuses_private_and_missing_keys(world, admin):
    signer = generate_signing_key("RS256", "priv-1")
    private_jwk = signer.public_jwk() | {"d": "PRIVATE-d", "p": "PRIVATE-p", "q": "PRIVATE-q"}
    for request in (
        pb.RegisterIssuerRequest(issuer="https://p.test", audience=AUDIENCE, algorithms=["RS256"],
                                 jwks=json.dumps({"keys": [private_jwk]})),
        pb.RegisterIssuerRequest(issuer="https://p.test", audience=AUDIENCE, algorithms=["RS256"], jwks="{nope"),
        pb.RegisterIssuerRequest(issuer="https://p.test", audience=AUDIENCE, algorithms=["RS256"]),
    ):
        error = expect_error(admin.RegisterIssuer, request)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "jwks")
    refused = audit(admin, action="issuer.register")
    assert [(e.target, e.outcome) for e in refused] == [("https://p.test", "invalid_argument")] * 3
    assert "PRIVATE-" not in str(refused)  # no key material is echoed into the trail
    with world.seed() as repos:
        assert repos.issuers.find_by_issuer("https://p.test") is None


# -- who may call --------------------------------------------------------------------------------


ALL_CALLS = [
    ("CreatePartner", pb.CreatePartnerRequest(partner_id="evil", name="Evil")),
    ("GetPartner", pb.GetPartnerRequest(partner_id="acme")),
    ("ListPartners", pb.ListPartnersRequest()),
    ("SetPartnerStatus", pb.SetPartnerStatusRequest(partner_id="acme", status=pb.PARTNER_STATUS_SUSPENDED)),
    ("SetPartnerGrants", pb.SetPartnerGrantsRequest(partner_id="acme", grants=["admin"])),
    ("IssueApiKey", pb.IssueApiKeyRequest(partner_id="acme")),
    ("RevokeApiKey", pb.RevokeApiKeyRequest(key_id="key_x")),
    ("ListApiKeys", pb.ListApiKeysRequest(partner_id="acme")),
    ("RegisterIssuer", pb.RegisterIssuerRequest(issuer="https://evil.test", audience="a", algorithms=["HS256"],
                                                hmac_secret=b"x" * 32)),
    ("RotateIssuerKeys", pb.RotateIssuerKeysRequest(issuer="https://rsa.issuer.test", jwks="{}")),
    ("ListIssuers", pb.ListIssuersRequest()),
    ("ListRoles", pb.ListRolesRequest()),
    ("RevokeToken", pb.RevokeTokenRequest(issuer="https://rsa.issuer.test", jti="j")),
    ("ListAuditEvents", pb.ListAuditEventsRequest()),
]


def test_non_admins_are_refused_and_the_refusals_are_audited(world, admin):
    narrowed = seed_admin(world, key_grants=("user:read",))  # an admin partner's key narrowed below admin
    callers = {"partner:acme": Admin(world, world.keys["acme"]),
               "platform:platform": Admin(world, world.keys["platform"], header="x-api-key"),
               "partner:ops": Admin(world, narrowed)}
    revision = world.app.store.unit_of_work.revision()
    for actor, caller in callers.items():
        for rpc, request in ALL_CALLS:
            error = expect_error(getattr(caller, rpc), request)
            assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "admin_only"), (actor, rpc)
    # Recording a refusal changes no fact: it must not flush every replica's cache.
    assert world.app.store.unit_of_work.revision() == revision

    with world.seed() as repos:
        assert repos.partners.get("evil") is None and repos.partners.get("acme").status is PartnerStatus.ACTIVE
    for actor in callers:
        refused = audit(admin, actor=actor)
        assert len(refused) == len(ALL_CALLS) and {e.outcome for e in refused} == {"admin_only"}
    actions = [e.action for e in audit(admin, actor="partner:acme")]
    assert actions == ["partner.create", "partner.get", "partner.list", "partner.suspend", "partner.set_grants",
                       "api_key.issue", "api_key.revoke", "api_key.list", "issuer.register", "issuer.rotate_keys",
                       "issuer.list", "role.list", "token.revoke", "audit.list"]


def test_callers_without_a_valid_credential_are_unauthenticated(world):
    for key, reason in ((None, "missing_token"), ("tg_live_nonsense", "invalid_token"),
                        (world.keys["acme-revoked"], "token_revoked"),
                        (world.keys["shady"], "token_revoked")):  # a suspended partner, even with the admin grant
        caller = Admin(world, key)
        for rpc, request in ALL_CALLS:
            error = expect_error(getattr(caller, rpc), request)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason), (key, rpc)


# -- the audit trail -----------------------------------------------------------------------------


def test_every_action_is_audited_without_secrets(world, admin):
    start = world.clock.now()
    admin.CreatePartner(pb.CreatePartnerRequest(partner_id="hooli", name="Hooli", grants=["user:read"]))
    issued = admin.IssueApiKey(pb.IssueApiKeyRequest(partner_id="hooli", name="k"))
    world.clock.advance(60)
    middle = world.clock.now()
    admin.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=issued.api_key.id))
    expect_error(admin.GetPartner, pb.GetPartnerRequest(partner_id="nobody"))  # a refused read: not audited
    expect_error(admin.RevokeApiKey, pb.RevokeApiKeyRequest(key_id=issued.key))  # the key pasted as an id
    admin.GetPartner(pb.GetPartnerRequest(partner_id="hooli"))  # a successful read: not audited

    events = audit(admin)
    assert [(e.actor, e.action, e.target, e.outcome) for e in events] == [
        (ADMIN_ACTOR, "partner.create", "hooli", "ok"),
        (ADMIN_ACTOR, "api_key.issue", issued.api_key.id, "ok"),
        (ADMIN_ACTOR, "api_key.revoke", issued.api_key.id, "ok"),
        (ADMIN_ACTOR, "api_key.revoke", "[redacted]", "key_not_found"),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.HasField("time") for e in events)
    details = json.loads(events[1].details)
    assert details["partner_id"] == "hooli" and details["name"] == "k" and details["credential_id"].startswith("key_")
    assert json.loads(events[0].details)["grants"] == ["user:read"]

    everything = str(admin.ListAuditEvents(pb.ListAuditEventsRequest(page_size=500)))
    assert issued.key not in everything and opaque.digest(issued.key) not in everything
    assert issued.key[len(opaque.API_KEY_PREFIX):] not in everything

    assert [e.action for e in audit(admin, action="api_key.revoke")] == ["api_key.revoke"] * 2
    assert [e.action for e in audit(admin, end_time=stamp(middle))] == ["partner.create", "api_key.issue"]
    assert [e.action for e in audit(admin, start_time=stamp(middle))] == ["api_key.revoke"] * 2
    assert audit(admin, start_time=stamp(start), actor="operator") == []

    error = expect_error(admin.ListAuditEvents, pb.ListAuditEventsRequest(page_token="bm9wZQ"))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    error = expect_error(admin.ListAuditEvents, pb.ListAuditEventsRequest(page_size=501))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_size")
    error = expect_error(admin.ListAuditEvents, pb.ListAuditEventsRequest(start_time=stamp(middle),
                                                                         end_time=stamp(start)))
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "end_time")


def test_the_change_and_its_audit_record_commit_together(world, admin, monkeypatch):
    """When the audit record cannot be written, the change is not kept either."""
    def broken_append(self, record):
        raise RuntimeError("the audit table is broken")

    monkeypatch.setattr(SqlAdminAuditRepository, "append", broken_append)
    error = expect_error(admin.CreatePartner, pb.CreatePartnerRequest(partner_id="unaudited", name="Unaudited"))
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, "internal")
    error = expect_error(admin.IssueApiKey, pb.IssueApiKeyRequest(partner_id="acme", name="unaudited"))
    assert error.code is grpc.StatusCode.INTERNAL
    monkeypatch.undo()

    with world.seed() as repos:
        assert repos.partners.get("unaudited") is None
        assert "unaudited" not in [k.name for k in repos.api_keys.list_for_partner("acme")]
    assert audit(admin) == []

    # A change refused inside its transaction keeps nothing of itself and is audited on its own.
    error = expect_error(admin.CreatePartner, pb.CreatePartnerRequest(partner_id="acme", name="Taken"))
    assert error.reason == "partner_exists"
    assert [(e.action, e.target, e.outcome) for e in audit(admin)] == [("partner.create", "acme", "partner_exists")]
    with world.seed() as repos:
        assert repos.partners.get("acme").name == "Acme"


def test_the_command_line_service_is_audited_as_the_operator(world, admin):
    from service.usecases.admin import AdminService

    service = AdminService(world.app.policy.current, world.app.store.unit_of_work, world.clock)
    service.create_partner("cli-made", "Made by the CLI", ["user:read"], [])
    record, plaintext = service.issue_api_key("cli-made", "cli", [], [], [], None)
    service.revoke_api_key(record.id)
    events = audit(admin, actor="operator")
    assert [(e.action, e.target, e.outcome) for e in events] == [
        ("partner.create", "cli-made", "ok"), ("api_key.issue", record.id, "ok"), ("api_key.revoke", record.id, "ok")]
    assert plaintext not in str(events) and "credential_id" not in events[0].details


def test_paging_is_stable_while_events_are_added(world, admin):
    for index in range(5):
        admin.CreatePartner(pb.CreatePartnerRequest(partner_id=f"p-{index}", name=f"P {index}"))
    first = admin.ListAuditEvents(pb.ListAuditEventsRequest(page_size=2))
    admin.CreatePartner(pb.CreatePartnerRequest(partner_id="p-late", name="Late"))
    rest = audit(admin)
    assert [e.target for e in first.events] == ["p-0", "p-1"] and first.next_page_token
    assert [e.target for e in rest] == ["p-0", "p-1", "p-2", "p-3", "p-4", "p-late"]


def test_concurrent_key_issue_and_revoke_lose_no_write(world, admin):
    """12 threads issue keys while 6 revoke the keys issued before them: every write lands, every
    revoked key is refused by Check and every other one is allowed."""
    before = [admin.IssueApiKey(pb.IssueApiKeyRequest(partner_id="acme", name=f"old-{i}")) for i in range(6)]
    barrier = threading.Barrier(18, timeout=30)

    def issue(index):
        barrier.wait()
        return admin.IssueApiKey(pb.IssueApiKeyRequest(partner_id="acme", name=f"new-{index}"))

    def revoke(issued):
        barrier.wait()
        return admin.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=issued.api_key.id))

    with ThreadPoolExecutor(18) as pool:
        issued = [pool.submit(issue, i) for i in range(12)]
        revoked = [pool.submit(revoke, b) for b in before]
        new_keys = [f.result(timeout=60) for f in issued]
        for future in revoked:
            future.result(timeout=60)
    listed = {k.id: k for k in admin.ListApiKeys(pb.ListApiKeysRequest(partner_id="acme")).api_keys}
    assert {k.api_key.id for k in before + new_keys} <= set(listed)
    for old in before:
        assert world.check("createCourtBooking", authorization=f"Bearer {old.key}").reason == "token_revoked"
    for new in new_keys:
        assert world.check("createCourtBooking", authorization=f"Bearer {new.key}").allowed


def test_list_roles_shows_the_policy_roles_and_their_grants(world, admin):
    roles = {role.name: list(role.grants) for role in admin.ListRoles(pb.ListRolesRequest()).roles}
    policy = world.app.policy.current()
    assert set(roles) == set(policy.roles) and roles, roles
    assert list(roles) == sorted(roles)
    assert "court-booking:write" in roles["booking-agent"]
    for grants in roles.values():
        assert grants == sorted(grants) and all(":" in grant for grant in grants)
