"""No secret leaves Tollgate: a realistic session (API keys and JWTs of every issuer allowed and
denied, invalid and tampered tokens, BatchCheck, ext_authz, the relation life cycle with a
connect token issued and claimed, callers refused, Admin issuing and revoking a key and
registering an HMAC issuer, and on PostgreSQL a store outage) runs against a real server, and
then no API key, JWT, connect token, Authorization header value, HMAC issuer secret (raw, hex,
base64, base64url), private JWK member sent by mistake, or key-encryption key may appear in:

- the logs, captured at DEBUG for the root logger (the server runs in this process), and the
  process's own stdout/stderr; or, for a `tollgate serve` subprocess at TOLLGATE_LOG_LEVEL=DEBUG,
  its whole output;
- any gRPC error: message, details, trailers;
- any answer: CheckResponse, BatchCheckResponse, ext_authz CheckResponse (headers, body, dynamic
  metadata), ManageRelation / GetRelation / ListRelations and Admin responses (the audit trail
  included); the intended places are ConnectToken.token of the IssueConnectToken answer and
  IssueApiKeyResponse.key, which are cleared before the rest of those answers is scanned;
- the Prometheus metrics text;
- the database: every column of every table (found by SQLAlchemy inspection), and on SQLite the
  raw bytes of the database file.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import JSON, MetaData, String, Table, Text, create_engine, inspect, select
from sqlalchemy.engine import make_url
from tollgate.v1 import admin_pb2, admin_pb2_grpc, authorization_pb2_grpc, relations_pb2_grpc
from tollgate.v1 import authorization_pb2 as apb
from tollgate.v1 import relations_pb2 as rpb

from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord, PartnerRecord, PartnerStatus
from service.telemetry import JsonFormatter
from tests.support import hostile
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.keys import SigningKey, access_token_claims, generate_signing_key
from tests.support.outage import DatabaseSwitch
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import AUDIENCE, EXAMPLE_POLICY, World, start_world, stop_world

# --- what must never appear ---------------------------------------------------------------------


def encodings(secret: bytes) -> dict[str, bytes]:
    """The ways a binary secret could be printed."""
    std, url = base64.b64encode(secret), base64.urlsafe_b64encode(secret)
    return {"raw": secret, "hex": binascii.hexlify(secret), "HEX": binascii.hexlify(secret).upper(),
            "base64": std, "base64-unpadded": std.rstrip(b"="), "base64url": url,
            "base64url-unpadded": url.rstrip(b"=")}


@dataclass
class Transcript:
    """Everything a client, an operator or a log reader could see, and the secrets to look for."""

    secrets: dict[str, bytes] = field(default_factory=dict)  # label -> needle
    seen: list[tuple[str, bytes]] = field(default_factory=list)  # (where, what was seen)
    connect_tokens: list[str] = field(default_factory=list)

    def secret(self, label: str, value: str | bytes) -> str | bytes:
        data = value.encode() if isinstance(value, str) else value
        if len(data) >= 16:  # shorter values (e.g. "Bearer x") could match by chance
            self.secrets[label] = data
        return value

    def credential(self, label: str, value: str) -> str:
        """A token (its whole value, its part after a prefix or a scheme, a JWT's signature)."""
        self.secret(label, value)
        scheme, _, rest = value.partition(" ")
        token = rest if scheme.lower() in ("bearer", "basic") and rest else value
        self.secret(f"{label} (token)", token)
        for prefix in ("tg_live_", "tg_ct_"):
            if token.startswith(prefix):
                self.secret(f"{label} (body)", token[len(prefix):])
        if token.count(".") == 2 and len(token.rsplit(".", 1)[1]) >= 16:
            self.secret(f"{label} (signature)", token.rsplit(".", 1)[1])
        return value

    def saw(self, where: str, what: str | bytes) -> None:
        self.seen.append((where, what.encode("utf-8", "surrogatepass") if isinstance(what, str) else what))

    def answer(self, where: str, message) -> None:
        self.saw(where, str(message))
        self.saw(f"{where} (wire)", message.SerializeToString())

    def error(self, where: str, error: grpc.RpcError) -> grpc.StatusCode:
        self.saw(f"{where} details", error.details() or "")
        self.saw(f"{where} debug", error.debug_error_string() or "")
        for key, value in error.trailing_metadata() or ():
            self.saw(f"{where} trailer {key}", value)
        for key, value in error.initial_metadata() or ():
            self.saw(f"{where} header {key}", value)
        return error.code()

    def call(self, where: str, method, request, **kwargs):
        """Calls, records the answer or the error; returns the answer or the status code."""
        kwargs.setdefault("timeout", 10)
        try:
            response = method(request, **kwargs)
        except grpc.RpcError as error:
            return self.error(where, error)
        self.answer(where, response)
        return response

    def leaks(self, places: list[tuple[str, bytes]] | None = None) -> list[str]:
        found = []
        for where, what in self.seen if places is None else places:
            for label, needle in self.secrets.items():
                if needle in what:
                    found.append(f"{label} in {where}")
        return found


def seed_admin(world: World) -> None:
    """An admin partner ("ops", grant admin) and its API key, as world.keys["ops-admin"]."""
    key, now = opaque.generate(opaque.API_KEY_PREFIX), world.clock.now()
    with world.seed() as repos:
        repos.partners.add(PartnerRecord("ops", "Operations", PartnerStatus.ACTIVE, ("admin",), (), now))
        record = ApiKeyRecord(new_id("key"), "ops", opaque.digest(key), "ops", (), (), (), now)
        repos.api_keys.add(record)
    world.keys["ops-admin"], world.key_ids["ops-admin"] = key, record.id


def add_world_secrets(transcript: Transcript, world: World) -> None:
    for name, key in world.keys.items():
        transcript.credential(f"API key {name}", key)
        transcript.credential(f"Authorization: Bearer <API key {name}>", world.bearer(name))
    for label, value in encodings(world.signers["hmac"].secret).items():
        transcript.secret(f"HMAC secret ({label})", value)
    kek = world.app.settings.key_encryption_key
    transcript.secret("key-encryption key", kek)
    for label, value in encodings(base64.urlsafe_b64decode(kek)).items():
        transcript.secret(f"key-encryption key material ({label})", value)


# --- the session --------------------------------------------------------------------------------


def run_session(world: World, channel: grpc.Channel, transcript: Transcript) -> None:
    """Everyday traffic and everyday mistakes, over `channel`, with the world's credentials."""
    check_stub = authorization_pb2_grpc.AuthorizationStub(channel)
    relations = relations_pb2_grpc.RelationsStub(channel)
    envoy = ext_authz_stub(channel)
    t = transcript

    def check(where, operation, *, authorization="", api_key="", permissions=(), **resource):
        request = apb.CheckRequest(authorization=authorization, api_key=api_key, operation=operation,
                                   permissions=list(permissions), resource=apb.Resource(**resource))
        return t.call(f"Check {where}", check_stub.Check, request)

    def manage(where, credential, **action):
        metadata = [("authorization", credential)] if credential else []
        return t.call(f"ManageRelation {where}", relations.ManageRelation, rpb.ManageRelationRequest(**action),
                      metadata=metadata)

    bearer = {name: t.credential(f"Authorization {name}", world.bearer(name)) for name in world.keys}
    jwts = {name: t.credential(f"JWT {name}", world.jwt(name, partner, scope=scope))
            for name, partner, scope in (("rsa", "acme", None), ("ec", "acme", "read:user"),
                                         ("ed", "globex", None), ("hmac", "platform", None))}
    tampered = {
        "flipped bit": hostile.flip_signature_bit(jwts["rsa"], 5),
        "expired": world.jwt("ec", lifetime=-3600),
        "other audience": world.jwt("rsa", aud="https://elsewhere.test"),
        "alg none": hostile.unsigned({"alg": "none", "typ": "at+jwt"}, {"iss": world.issuers["rsa"], "x": "y" * 20}),
        "hs256 confusion": hostile.hs256(world.signers["rsa"].public_pem(), {"alg": "HS256", "typ": "at+jwt"},
                                         {"iss": world.issuers["rsa"], "aud": "https://api.example.test",
                                          "exp": int(time.time()) + 300, "client_id": "acme"}),
        "mutated key": hostile.mutate_opaque(world.keys["acme"], "tg_live_", 7, "Z"),
        "garbage": f"secret-looking-garbage-{uuid.uuid4().hex}",
    }
    for name, value in tampered.items():
        t.credential(f"tampered {name}", value)

    # native Check: allows and every kind of deny
    assert check("allow key", "getUser", authorization=bearer["acme"], user_id="u-active").allowed
    assert check("allow X-API-Key", "getUser", api_key=world.keys["acme-reader"], user_id="u-active").allowed
    assert check("allow explicit permission", "", authorization=bearer["platform"],
                 permissions=["relations:admin"]).allowed
    for name in ("acme-expired", "acme-revoked", "shady"):
        assert not check(f"deny {name}", "getUser", authorization=bearer[name], user_id="u-active").allowed
    assert check("deny scope", "updateUser", authorization=bearer["acme-reader"], user_id="u-active").reason \
        == "insufficient_scope"
    assert check("deny customer", "listCustomerOrders", authorization=bearer["acme"], customer_id="C-9").reason \
        == "customer_access_denied"
    assert check("deny missing", "getUser", user_id="u-active").reason == "missing_token"
    for name, token in jwts.items():
        operation, permissions, resource = (("", ["relations:admin"], {}) if name == "hmac"
                                            else ("getUser", [], {"user_id": "u-active"}))
        answer = check(f"jwt {name}", operation, authorization=f"Bearer {token}", permissions=permissions,
                       **resource)
        assert answer.allowed, (name, answer.message)
    for name, value in tampered.items():
        answer = check(f"tampered {name}", "getUser", authorization=f"Bearer {value}", user_id="u-active")
        assert answer.reason in ("invalid_token", "token_expired"), (name, answer.reason)
    assert check("invalid argument", "getUser", authorization=bearer["acme"], user_id="u\x00") \
        is grpc.StatusCode.INVALID_ARGUMENT

    # BatchCheck
    batch = t.call("BatchCheck", check_stub.BatchCheck, apb.BatchCheckRequest(
        authorization=f"Bearer {jwts['rsa']}", items=[
            apb.BatchCheckItem(operation="getUser", resource=apb.Resource(user_id="u-active")),
            apb.BatchCheckItem(operation="updateUser", resource=apb.Resource(user_id="u-nobody"))]))
    assert [r.allowed for r in batch.results] == [True, False]
    assert t.call("BatchCheck empty", check_stub.BatchCheck, apb.BatchCheckRequest(
        api_key=world.keys["acme"])) is grpc.StatusCode.INVALID_ARGUMENT

    # ext_authz
    allowed = t.call("ext_authz allow", envoy.Check, ext_authz_request(
        "GET", "/v1/users/u-active", {"authorization": bearer["acme"], "x-api-key": world.keys["globex"]}))
    assert allowed.HasField("ok_response")
    assert t.call("ext_authz jwt", envoy.Check, ext_authz_request(
        "GET", "/v1/users/u-active", {"authorization": f"Bearer {jwts['ec']}"})).HasField("ok_response")
    for name in ("flipped bit", "garbage"):
        denied = t.call(f"ext_authz {name}", envoy.Check, ext_authz_request(
            "GET", "/v1/users/u-active", {"authorization": f"Bearer {tampered[name]}"}))
        assert denied.HasField("denied_response")
    secret_query = t.secret("query-string token", f"tg_live_{uuid.uuid4().hex}")
    assert t.call("ext_authz unrouted", envoy.Check, ext_authz_request(
        "GET", f"/v1/unknown?access_token={secret_query}", {"x-api-key": world.keys["acme"]})).HasField(
        "denied_response")

    # the relation life cycle, with a connect token issued and claimed
    requested = manage("request", bearer["acme"], request_user_relation=rpb.RequestUserRelation(user_id="u-leak"))
    relation_id = requested.relation.id
    assert manage("approve (HMAC JWT of the platform)", f"Bearer {jwts['hmac']}",
                  approve_user_relation=rpb.ApproveUserRelation(relation_id=relation_id, ttl=Duration(seconds=3600),
                                                                reason="ok")).relation.status == rpb.RELATION_STATUS_ACTIVE
    assert check("allow after approval", "getUser", authorization=bearer["acme"], user_id="u-leak").allowed
    issued = []
    for index in range(2):
        metadata = [("authorization", bearer["platform"])]
        response = relations.ManageRelation(rpb.ManageRelationRequest(
            issue_connect_token=rpb.IssueConnectToken(organization_id=f"o-leak-{index}", issued_by="admin@o-leak")),
            metadata=metadata, timeout=10)
        token = t.credential(f"connect token {index}", response.connect_token.token)
        assert token.startswith("tg_ct_")
        t.connect_tokens.append(token)
        without_token = rpb.ManageRelationResponse()
        without_token.CopyFrom(response)
        without_token.connect_token.token = ""  # the one intended place; everything else is scanned
        t.answer(f"IssueConnectToken {index} (token field cleared)", without_token)
        issued.append(response)
    claimed = manage("claim", bearer["acme"], claim_organization_relation=rpb.ClaimOrganizationRelation(
        connect_token=t.connect_tokens[0]))
    assert claimed.relation.status == rpb.RELATION_STATUS_ACTIVE
    assert manage("claim again", bearer["globex"], claim_organization_relation=rpb.ClaimOrganizationRelation(
        connect_token=t.connect_tokens[0])) is grpc.StatusCode.FAILED_PRECONDITION
    mutated_token = t.credential("mutated connect token",
                                 hostile.mutate_opaque(t.connect_tokens[1], "tg_ct_", 3, "Z"))
    assert manage("claim mutated", bearer["acme"], claim_organization_relation=rpb.ClaimOrganizationRelation(
        connect_token=mutated_token)) is grpc.StatusCode.NOT_FOUND
    assert manage("issue by a partner", bearer["acme"], issue_connect_token=rpb.IssueConnectToken(
        organization_id="o-x")) is grpc.StatusCode.PERMISSION_DENIED
    for name in ("garbage", "flipped bit", "mutated key"):
        assert manage(f"refused {name}", f"Bearer {tampered[name]}", request_user_relation=rpb.RequestUserRelation(
            user_id="u-leak-2")) is grpc.StatusCode.UNAUTHENTICATED
    assert manage("refused expired key", bearer["acme-expired"], request_user_relation=rpb.RequestUserRelation(
        user_id="u-leak-2")) is grpc.StatusCode.UNAUTHENTICATED
    revoked = manage("revoke", bearer["acme"], revoke_relation=rpb.RevokeRelation(relation_id=relation_id,
                                                                               reason="done"))
    t.call("GetRelation", relations.GetRelation, rpb.GetRelationRequest(relation_id=relation_id),
           metadata=[("authorization", bearer["platform"])])
    t.call("ListRelations", relations.ListRelations, rpb.ListRelationsRequest(),
           metadata=[("authorization", bearer["acme"])])
    assert check("fresh after revoke", "getUser", authorization=bearer["acme"], user_id="u-leak").allowed is False
    fresh = t.call("Check at_least_as_fresh", check_stub.Check, apb.CheckRequest(
        authorization=bearer["acme"], operation="getOrganization", at_least_as_fresh=revoked.revision,
        resource=apb.Resource(organization_id="o-leak-0")))
    assert fresh.allowed

    # Admin: a key issued and revoked, an HMAC issuer registered, a private JWK sent by mistake
    admin = admin_pb2_grpc.AdminStub(channel)
    as_admin = [("authorization", bearer["ops-admin"])]
    issued_key = admin.IssueApiKey(admin_pb2.IssueApiKeyRequest(
        partner_id="acme", name="leak-test", grants=["court-booking:write"]), metadata=as_admin, timeout=10)
    new_key = t.credential("Admin-issued API key", issued_key.key)
    assert opaque.well_formed(new_key, opaque.API_KEY_PREFIX)
    without_key = admin_pb2.IssueApiKeyResponse()
    without_key.CopyFrom(issued_key)
    without_key.key = ""  # the one intended place
    t.answer("IssueApiKey (key field cleared)", without_key)
    assert check("Admin-issued key", "createCourtBooking", api_key=new_key).allowed
    hmac_secret = os.urandom(48)
    for label, value in encodings(hmac_secret).items():
        t.secret(f"registered HMAC secret ({label})", value)
    iss = f"https://leak-{uuid.uuid4().hex[:8]}.issuer.test"
    registered = t.call("RegisterIssuer HMAC", admin.RegisterIssuer, admin_pb2.RegisterIssuerRequest(
        issuer=iss, audience=AUDIENCE, algorithms=["HS256"], hmac_secret=hmac_secret), metadata=as_admin)
    assert registered.issuer.key_source == admin_pb2.ISSUER_KEY_SOURCE_HMAC_SECRET
    new_issuer_token = t.credential("JWT of the registered HMAC issuer", SigningKey(
        "HS256", "leak", private_key=None, secret=hmac_secret).sign(access_token_claims(iss, AUDIENCE, "acme")))
    assert check("registered HMAC issuer", "createCourtBooking", authorization=f"Bearer {new_issuer_token}").allowed
    private = RSAAlgorithm.to_jwk(generate_signing_key("RS256", "leak-private").private_key, as_dict=True)
    for member in ("d", "p", "q", "dp", "dq", "qi"):
        t.secret(f"private JWK member {member}", private[member])
    assert t.call("RegisterIssuer private JWK", admin.RegisterIssuer, admin_pb2.RegisterIssuerRequest(
        issuer=iss + "/private", audience=AUDIENCE, algorithms=["RS256"], jwks=json.dumps({"keys": [private]})),
        metadata=as_admin) is grpc.StatusCode.INVALID_ARGUMENT
    assert t.call("RevokeToken", admin.RevokeToken, admin_pb2.RevokeTokenRequest(
        issuer=world.issuers["rsa"], jti="leak-jti"), metadata=as_admin).jti == "leak-jti"
    assert t.call("RevokeApiKey", admin.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(
        key_id=issued_key.api_key.id), metadata=as_admin).api_key.HasField("revoke_time")
    assert check("revoked Admin-issued key", "createCourtBooking", api_key=new_key).reason == "token_revoked"
    assert t.call("Admin by a partner", admin.ListPartners, admin_pb2.ListPartnersRequest(),
                  metadata=[("authorization", bearer["acme"])]) is grpc.StatusCode.PERMISSION_DENIED
    assert t.call("Admin by a forged key", admin.ListPartners, admin_pb2.ListPartnersRequest(),
                  metadata=[("authorization", f"Bearer {tampered['mutated key']}")]) is grpc.StatusCode.UNAUTHENTICATED
    t.call("ListApiKeys", admin.ListApiKeys, admin_pb2.ListApiKeysRequest(partner_id="acme"), metadata=as_admin)
    t.call("ListIssuers", admin.ListIssuers, admin_pb2.ListIssuersRequest(), metadata=as_admin)
    t.call("ListPartners", admin.ListPartners, admin_pb2.ListPartnersRequest(), metadata=as_admin)
    audit = t.call("ListAuditEvents", admin.ListAuditEvents, admin_pb2.ListAuditEventsRequest(page_size=500),
                   metadata=as_admin)
    assert len(audit.events) >= 6


def store_outage(world: World, channel: grpc.Channel, transcript: Transcript, database_url: str,
                 admin_url: str) -> None:
    """PostgreSQL goes away under the server: calls with credentials fail closed (UNAVAILABLE /
    503) and their errors, and the warnings logged with the driver's exception, name no secret."""
    database = DatabaseSwitch(admin_url, database_url)
    check_stub = authorization_pb2_grpc.AuthorizationStub(channel)
    try:
        database.cut()
        time.sleep(1.1)  # past the cache's staleness bound
        for label, value in (("key", world.bearer("globex")), ("jwt", f"Bearer {world.jwt('ed', 'globex')}")):
            transcript.credential(f"outage {label}", value)
            code = transcript.call(f"outage Check {label}", check_stub.Check, apb.CheckRequest(
                authorization=value, operation="getUser", resource=apb.Resource(user_id="u-active")))
            assert code is grpc.StatusCode.UNAVAILABLE
            envoy = transcript.call(f"outage ext_authz {label}", ext_authz_stub(channel).Check,
                                    ext_authz_request("GET", "/v1/users/u-active", {"authorization": value}))
            assert envoy.HasField("error_response")
        code = transcript.call("outage claim", relations_pb2_grpc.RelationsStub(channel).ManageRelation,
                               rpb.ManageRelationRequest(claim_organization_relation=rpb.ClaimOrganizationRelation(
                                   connect_token=transcript.connect_tokens[1])),
                               metadata=[("authorization", world.bearer("acme"))])
        assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        database.restore()
        database.close()


# --- where to look ------------------------------------------------------------------------------


def scrape_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def database_contents(database_url: str) -> tuple[list[tuple[str, bytes]], int]:
    """(where, value) for every column of every row of every table, and how many text columns
    there are; on SQLite also the raw bytes of the database file and its journals."""
    engine = create_engine(database_url)
    seen, text_columns = [], 0
    try:
        inspector = inspect(engine)
        with engine.connect() as connection:
            for table_name in inspector.get_table_names():
                table = Table(table_name, MetaData(), autoload_with=connection)
                text_columns += sum(isinstance(c.type, (String, Text, JSON)) for c in table.columns)
                for row in connection.execute(select(table)).mappings():
                    for column, value in row.items():
                        if value is not None:
                            seen.append((f"database {table_name}.{column}", str(value).encode("utf-8", "replace")))
    finally:
        engine.dispose()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        for path in Path(url.database).parent.glob(Path(url.database).name + "*"):
            seen.append((f"database file {path.name}", path.read_bytes()))
    return seen, text_columns


def formatted_logs(records: list[logging.LogRecord]) -> list[tuple[str, bytes]]:
    """Each record as production prints it (JsonFormatter, with any traceback) and as text."""
    formatter, plain = JsonFormatter(), logging.Formatter("%(name)s %(levelname)s %(message)s")
    seen = []
    for record in records:
        for rendered in (formatter.format(record), plain.format(record), repr(record.__dict__)):
            seen.append((f"log {record.name}:{record.levelname}", rendered.encode("utf-8", "replace")))
    return seen


def assert_no_leaks(transcript: Transcript, places: list[tuple[str, bytes]]) -> None:
    leaks = transcript.leaks(places)
    assert not leaks, "secrets leaked:\n" + "\n".join(sorted(set(leaks))[:50])


# --- the tests ----------------------------------------------------------------------------------


def test_a_session_in_process_leaks_no_secret(database_url, tmp_path, caplog, capfd, request):
    caplog.set_level(logging.DEBUG)  # the root logger, so every library's debug output too
    world = start_world(database_url, tmp_path, metrics_port=free_port(), cache_refresh_seconds=0.2)
    seed_admin(world)
    transcript = Transcript()
    add_world_secrets(transcript, world)
    try:
        run_session(world, world.channel, transcript)
        if make_url(database_url).get_backend_name() == "postgresql":
            store_outage(world, world.channel, transcript, database_url, request.getfixturevalue("postgres_admin_url"))
        metrics = scrape_metrics(world.app.metrics_port)
    finally:
        stop_world(world)
    out, err = capfd.readouterr()

    assert len(transcript.connect_tokens) == 2 and len(transcript.secrets) > 60
    assert "tollgate_checks_total" in metrics
    assert caplog.records, "the session was logged"
    assert any(r.name == "tollgate.decisions" for r in caplog.records)
    assert_no_leaks(transcript, transcript.seen)
    assert_no_leaks(transcript, [*formatted_logs(caplog.records), ("caplog text", caplog.text.encode())])
    assert_no_leaks(transcript, [("stdout", out.encode()), ("stderr", err.encode())])
    assert_no_leaks(transcript, [("metrics", metrics.encode())])
    stored, text_columns = database_contents(database_url)
    assert text_columns >= 20 and len(stored) > 50
    assert_no_leaks(transcript, stored)


def test_a_server_process_at_debug_level_leaks_no_secret(database_url, tmp_path):
    """`tollgate serve` with TOLLGATE_LOG_LEVEL=DEBUG: its whole stdout/stderr, its metrics and
    every answer are free of secrets. The store is seeded by an in-process world, which is then
    stopped; the process serves the same database with the same key-encryption key."""
    world = start_world(database_url, tmp_path)
    seed_admin(world)
    stop_world(world)
    transcript = Transcript()
    add_world_secrets(transcript, world)
    port, metrics_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOLLGATE_")}
    env.update(TOLLGATE_DATABASE_URL=database_url, TOLLGATE_DATA_DIR=str(tmp_path / "serve-data"),
               TOLLGATE_POLICY_PATH=str(EXAMPLE_POLICY), TOLLGATE_KEY_ENCRYPTION_KEY=world.app.settings.key_encryption_key,
               TOLLGATE_METRICS_PORT=str(metrics_port), TOLLGATE_LOG_LEVEL="DEBUG", TOLLGATE_LOG_FORMAT="json",
               TOLLGATE_WORKERS="1")
    process = start_server(port, env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        run_session(world, channel, transcript)
        metrics = scrape_metrics(metrics_port)
    finally:
        channel.close()
        code, output = stop_server(process)
    assert code == 0, output[-2000:]
    assert '"logger": "tollgate.decisions"' in output, "the denied decisions were logged"
    assert_no_leaks(transcript, transcript.seen)
    assert_no_leaks(transcript, [("server output", output.encode("utf-8", "replace")), ("metrics", metrics.encode())])
    stored, _ = database_contents(database_url)
    assert_no_leaks(transcript, stored)


@pytest.mark.parametrize("needle", ["key", "jwt", "hmac"])
def test_the_scanner_finds_what_it_looks_for(needle):
    """The scan itself works: each kind of secret is found where it was planted."""
    transcript = Transcript()
    secret = {"key": "tg_live_" + "a1B2" * 9, "jwt": "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0." + "s1g" * 20,
              "hmac": os.urandom(32)}[needle]
    if isinstance(secret, bytes):
        for label, value in encodings(secret).items():
            transcript.secret(f"hmac ({label})", value)
        planted = [("log", b"secret=" + base64.b64encode(secret)), ("db", binascii.hexlify(secret))]
    else:
        transcript.credential(needle, f"Bearer {secret}")
        planted = [("log", f'{{"message": "{secret.split(".")[-1]}"}}'.encode()), ("error", secret[8:].encode())]
    assert {leak.split(" in ")[1] for leak in transcript.leaks(planted)} == {"log", "db", "error"} & {
        where for where, _ in planted}
