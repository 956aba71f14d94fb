"""No secret of the token service leaves Tollgate: a full run of its flows — OAuth clients created
through the store; client_credentials with HTTP Basic, with the body (form and JSON) and over gRPC
(tollgate.v1.Tokens); the access tokens used on Check; a refresh with rotation; reuse of a spent
refresh token (the family revoked, its access token refused by Check); revocation of a refresh
token and of an access token (RFC 7009); introspection (RFC 7662) by a gateway client, by an admin
API key and by a caller without the grant; a wrong secret, an unknown client, a suspended
partner's client, the secret in the URL, a NUL in it, bytes that are no valid HTTP; the audit
trail; and last, wrong secrets until the failure limit answers 429, then the genuine secret while
limited — and then no client secret, refresh token, access token (whole, or its signature) or
Basic header value may appear in:

- the logs: every logger at DEBUG (uvicorn's, SQLAlchemy's and the drivers' included) of the
  server running in this process, formatted by the production JsonFormatter, and the process's stdout/stderr; or, for a
  `tollgate serve` subprocess at TOLLGATE_LOG_LEVEL=DEBUG, its whole output;
- any answer: HTTP bodies and headers (the intended places, access_token and refresh_token of a
  token answer, are left out and everything else of it scanned), gRPC answers and errors, the
  Admin audit trail;
- the Prometheus metrics text;
- the database: every column of every table (SQLAlchemy), every row of every table as PostgreSQL
  prints it (`SELECT t::text`), and on SQLite the raw bytes of the database file and its journals.

The scan and the places are those of test_secrets_never_leak.py (Transcript, formatted_logs,
database_contents), which covers Check, ext_authz, relations and Admin.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from tollgate.v1 import admin_pb2, admin_pb2_grpc, authorization_pb2_grpc, tokens_pb2, tokens_pb2_grpc
from tollgate.v1 import authorization_pb2 as apb

from service.domain import opaque
from service.domain.model import OAuthClientRecord, PartnerRecord, PartnerStatus
from tests.integration.test_secrets_never_leak import (
    Transcript,
    add_world_secrets,
    assert_no_leaks,
    database_contents,
    formatted_logs,
    scrape_metrics,
    seed_admin,
)
from tests.support import hostile
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY, World, start_world, stop_world

TOKEN, REVOKE, INTROSPECT = "/oauth/token", "/oauth/revoke", "/oauth/introspect"
# Failed client authentications allowed before the 429 (per client id and per address); the
# session fails a few times on purpose before it runs into the limit at its end.
FAILURE_BURST = 8
# The test's own HTTP client logs the URLs it calls (the secret-in-the-URL mistake included): those
# records are the client's, not the server's.
CLIENT_LOGGERS = ("httpx", "httpcore")
TOKEN_TABLES = {"oauth_clients", "refresh_families", "refresh_tokens", "revoked_access_tokens", "signing_keys"}


# --- the clients --------------------------------------------------------------------------------

# id -> (partner, refresh tokens). Partner "edge" holds admin: its client may introspect.
CLIENTS = {"cli_leak": ("acme", True), "cli_leak_plain": ("globex", False), "cli_leak_gateway": ("edge", False),
           "cli_leak_shady": ("shady", False)}


@dataclass
class Clients:
    secrets: dict[str, str] = field(default_factory=dict)

    def basic(self, client_id: str) -> tuple[str, str]:
        return client_id, self.secrets[client_id]


def create_clients(world: World, t: Transcript) -> Clients:
    """Through the store, as the Admin API or the CLI would: only the digest is kept."""
    clients, now = Clients(), world.clock.now()
    with world.seed() as repos:
        repos.partners.add(PartnerRecord("edge", "Edge gateway", PartnerStatus.ACTIVE, ("admin",), (), now))
        for client_id, (partner, refresh) in CLIENTS.items():
            secret = opaque.generate(opaque.CLIENT_SECRET_PREFIX)
            repos.oauth_clients.add(OAuthClientRecord(client_id, partner, client_id, opaque.digest(secret), (),
                                                      ("C-1",), refresh, now))
            clients.secrets[client_id] = opaque_secret(t, f"client secret {client_id}", secret)
            t.credential(f"Authorization: Basic <{client_id}>", basic_header(client_id, secret))
    return clients


def basic_header(client_id: str, secret: str) -> str:
    """What HTTP Basic puts on the wire (httpx's auth=(id, secret) sends the same)."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def opaque_secret(t: Transcript, label: str, value: str) -> str:
    """A tg_cs_ / tg_rt_ secret: whole, and its body after the prefix."""
    t.credential(label, value)
    t.secret(f"{label} (body)", value[len("tg_xx_"):])
    return value


def access_token(t: Transcript, label: str, value: str) -> str:
    assert value.count(".") == 2, "an access token is a JWT"
    return t.credential(label, value)  # whole, and its signature


# --- the session --------------------------------------------------------------------------------


class TokenSession:
    """The flows, over HTTP (`http`, the listener's base URL) and gRPC (`channel`), recorded in `t`."""

    def __init__(self, world: World, http: httpx.Client, channel: grpc.Channel, t: Transcript,
                 clients: Clients) -> None:
        self.world, self.http, self.t, self.clients = world, http, t, clients
        self.check_stub = authorization_pb2_grpc.AuthorizationStub(channel)
        self.tokens_stub = tokens_pb2_grpc.TokensStub(channel)
        self.admin = admin_pb2_grpc.AdminStub(channel)

    def post(self, where: str, path: str, **kwargs) -> httpx.Response:
        """Posts and records the answer: headers, and the body without the tokens a 200 issues."""
        response = self.http.post(path, **kwargs)
        body = response.json()
        shown = {k: v for k, v in body.items() if k not in ("access_token", "refresh_token")}
        self.t.saw(f"HTTP {where} body", json.dumps(shown))
        if shown == body:
            self.t.saw(f"HTTP {where} raw body", response.content)
        self.t.saw(f"HTTP {where} headers", "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items()))
        return response

    def issue(self, where: str, client_id: str, via: str = "basic", **params: str) -> dict:
        secret = self.clients.secrets[client_id]
        data = {"grant_type": "client_credentials", **params}
        if via == "basic":
            response = self.post(where, TOKEN, data=data, auth=(client_id, secret))
        elif via == "form":
            response = self.post(where, TOKEN, data={**data, "client_id": client_id, "client_secret": secret})
        else:
            response = self.post(where, TOKEN, json={**data, "client_id": client_id, "client_secret": secret})
        assert response.status_code == 200, (where, response.text)
        body = response.json()
        access_token(self.t, f"access token ({where})", body["access_token"])
        if "refresh_token" in body:
            opaque_secret(self.t, f"refresh token ({where})", body["refresh_token"])
        return body

    def check(self, where: str, token: str) -> apb.CheckResponse:
        return self.t.call(f"Check {where}", self.check_stub.Check, apb.CheckRequest(
            authorization=f"Bearer {token}", operation="getUser", resource=apb.Resource(user_id="u-active")))

    def run(self) -> None:
        t, clients, leak = self.t, self.clients, "cli_leak"
        # client_credentials: Basic, form body, JSON body; Check allows the tokens
        first = self.issue("Basic", leak)
        plain = self.issue("form body", "cli_leak_plain", via="form", scope="read:user")
        as_json = self.issue("JSON body", leak, via="json")
        for where, body in (("Basic", first), ("form body", plain), ("JSON body", as_json)):
            assert self.check(f"token from {where}", body["access_token"]).allowed
        # refresh with rotation, then reuse of the spent one: the family is revoked
        refreshed = self.post("refresh", TOKEN, auth=clients.basic(leak),
                              data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        access_token(t, "access token (refresh)", refreshed.json()["access_token"])
        opaque_secret(t, "refresh token (refresh)", refreshed.json()["refresh_token"])
        reused = self.post("reuse", TOKEN, json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                                 "client_id": leak, "client_secret": clients.secrets[leak]})
        assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
        assert self.check("after reuse", refreshed.json()["access_token"]).reason == "token_revoked"
        # revocation (RFC 7009): a refresh token (its family), an access token (its jti)
        fresh = self.issue("to revoke", leak)
        assert self.post("revoke refresh", REVOKE, data={"token": fresh["refresh_token"]},
                         auth=clients.basic(leak)).status_code == 200
        assert self.post("revoke access", REVOKE, json={"token": as_json["access_token"], "client_id": leak,
                                                        "client_secret": clients.secrets[leak]}).status_code == 200
        assert self.check("revoked access token", as_json["access_token"]).reason == "token_revoked"
        assert self.post("revoke another's", REVOKE, data={"token": plain["access_token"]},
                         auth=clients.basic(leak)).json()["error"] == "invalid_grant"
        self.introspection(plain, fresh)
        self.grpc_tokens(leak)
        self.mistakes(leak)
        self.audit_trail()
        self.rate_limited(leak)

    def introspection(self, plain: dict, revoked: dict) -> None:
        gateway, t = self.clients.basic("cli_leak_gateway"), self.t
        current = self.issue("to introspect", "cli_leak")
        for label, token, active in (("access token", plain["access_token"], True),
                                     ("refresh token", current["refresh_token"], True),
                                     ("API key", self.world.keys["acme"], True),
                                     ("revoked refresh token", revoked["refresh_token"], False)):
            answer = self.post(f"introspect {label}", INTROSPECT, data={"token": token}, auth=gateway)
            assert answer.json()["active"] is active, (label, answer.text)
        by_key = self.post("introspect by an admin key", INTROSPECT, json={"token": current["access_token"]},
                           headers={"Authorization": f"Bearer {self.world.keys['ops-admin']}"})
        assert by_key.json()["active"] is True, by_key.text
        refused = self.post("introspect without the grant", INTROSPECT, data={"token": current["access_token"]},
                            auth=self.clients.basic("cli_leak_plain"))
        assert refused.status_code == 403
        assert self.post("introspect by a forged bearer", INTROSPECT, data={"token": current["access_token"]},
                         headers={"Authorization": f"Bearer {current['access_token']}x"}).status_code == 401
        t.credential("forged bearer", current["access_token"] + "x")

    def grpc_tokens(self, client_id: str) -> None:
        credentials = tokens_pb2.ClientCredentials(client_id=client_id, client_secret=self.clients.secrets[client_id])
        issued = self.tokens_stub.IssueToken(tokens_pb2.IssueTokenRequest(
            grant_type="client_credentials", client=credentials), timeout=10)
        access_token(self.t, "access token (gRPC)", issued.access_token)
        opaque_secret(self.t, "refresh token (gRPC)", issued.refresh_token)
        shown = tokens_pb2.IssueTokenResponse()
        shown.CopyFrom(issued)
        shown.access_token, shown.refresh_token = "", ""  # the intended places
        self.t.answer("IssueToken (tokens cleared)", shown)
        wrong = tokens_pb2.ClientCredentials(client_id=client_id, client_secret=self.mutated(client_id))
        assert self.t.call("IssueToken wrong secret", self.tokens_stub.IssueToken, tokens_pb2.IssueTokenRequest(
            grant_type="client_credentials", client=wrong)) is grpc.StatusCode.UNAUTHENTICATED
        assert self.t.call("RevokeToken gRPC", self.tokens_stub.RevokeToken, tokens_pb2.TokensRevokeTokenRequest(
            client=credentials, token=issued.refresh_token)) == tokens_pb2.TokensRevokeTokenResponse()
        self.t.call("IntrospectToken gRPC", self.tokens_stub.IntrospectToken, tokens_pb2.IntrospectTokenRequest(
            token=issued.access_token), metadata=[("authorization", f"Bearer {self.world.keys['ops-admin']}")])

    def mutated(self, client_id: str) -> str:
        secret = self.clients.secrets[client_id]
        return self.t.credential(f"mutated secret of {client_id}", hostile.mutate_opaque(secret, "tg_cs_", 5, "Q"))

    def mistakes(self, client_id: str) -> None:
        """A wrong secret (Basic and body), an unknown client, a suspended partner's client, the
        secret in the URL or with a NUL, a bearer at the token endpoint, bytes that are no HTTP."""
        secret = self.clients.secrets[client_id]
        grant = {"grant_type": "client_credentials"}
        wrong = (client_id, self.mutated(client_id))
        assert self.post("wrong secret Basic", TOKEN, data=grant, auth=wrong).status_code == 401
        assert self.post("wrong secret body", TOKEN, data={**grant, "client_id": client_id,
                                                           "client_secret": self.mutated(client_id)}).status_code == 401
        assert self.post("unknown client", TOKEN, data=grant, auth=("cli_nobody", secret)).status_code == 401
        assert self.post("suspended partner", TOKEN, data=grant,
                         auth=self.clients.basic("cli_leak_shady")).status_code == 401
        assert self.post("secret in the URL", f"{TOKEN}?client_id={client_id}&client_secret={secret}",
                         data=grant).status_code == 400
        assert self.post("secret with a NUL", TOKEN, data={**grant, "client_id": client_id,
                                                           "client_secret": secret + "\x00"}).status_code == 400
        assert self.post("secret as a bearer", TOKEN, data=grant,
                         headers={"Authorization": f"Bearer {secret}"}).status_code == 401
        assert self.post("two methods", TOKEN, data={**grant, "client_secret": secret},
                         auth=self.clients.basic(client_id)).status_code == 400
        basic = basic_header(client_id, secret).encode()
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as connection:
            connection.sendall(b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nAuthorization: " + basic
                               + b"\x00\r\nContent-Length: 0\r\n\r\n")
            refusal = connection.recv(65536)
        self.t.saw("HTTP no valid HTTP", refusal)
        assert refusal.startswith(b"HTTP/1.1 400")

    @property
    def http_port(self) -> int:
        return self.http.base_url.port

    def audit_trail(self) -> None:
        audit = self.t.call("ListAuditEvents", self.admin.ListAuditEvents, admin_pb2.ListAuditEventsRequest(
            page_size=500), metadata=[("authorization", f"Bearer {self.world.keys['ops-admin']}")])
        assert isinstance(audit, admin_pb2.ListAuditEventsResponse), audit

    def rate_limited(self, client_id: str) -> None:
        """Last: wrong secrets until the limit answers 429; then the genuine secret, refused unread."""
        statuses = []
        for _ in range(4 * FAILURE_BURST):
            answer = self.post("until limited", TOKEN, data={"grant_type": "client_credentials"},
                               auth=(client_id, self.mutated(client_id)))
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) <= {401}, statuses
        limited = self.post("genuine while limited", TOKEN, data={"grant_type": "client_credentials"},
                            auth=self.clients.basic(client_id))
        assert (limited.status_code, limited.json()["error"]) == (429, "temporarily_unavailable")
        assert int(limited.headers["retry-after"]) >= 1


# --- where else to look -------------------------------------------------------------------------


def postgres_rows_as_text(database_url: str) -> tuple[list[tuple[str, bytes]], set[str]]:
    """Every row of every table of the current schema as PostgreSQL prints it (`t::text`), and the
    tables seen: independent of how SQLAlchemy reads the columns."""
    engine = create_engine(database_url)
    seen, tables = [], set()
    try:
        with engine.connect() as connection:
            names = connection.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars().all()
            for name in names:
                tables.add(name)
                quoted = '"' + name.replace('"', '""') + '"'
                for (row,) in connection.exec_driver_sql(f"SELECT t::text FROM {quoted} t"):
                    seen.append((f"postgres row {name}", row.encode("utf-8", "replace")))
    finally:
        engine.dispose()
    return seen, tables


def stored_everywhere(database_url: str) -> list[tuple[str, bytes]]:
    stored, text_columns = database_contents(database_url)
    assert text_columns >= 20 and len(stored) > 50
    tables = {where.split()[1].split(".")[0] for where, _ in stored if where.startswith("database ")}
    if make_url(database_url).get_backend_name() == "postgresql":
        rows, tables = postgres_rows_as_text(database_url)
        stored += rows
    assert TOKEN_TABLES <= tables, f"tables not read: {TOKEN_TABLES - tables}"
    return stored


def token_world_secrets(world: World, t: Transcript) -> Clients:
    add_world_secrets(t, world)
    return create_clients(world, t)


# --- the tests ----------------------------------------------------------------------------------


def test_the_token_flows_in_process_leak_no_secret(database_url, tmp_path, caplog, capfd):
    # Every logger at DEBUG, the lowest level TOLLGATE_LOG_LEVEL reaches. (Below it, at uvicorn's TRACE,
    # uvicorn wraps the app in its ASGI message logger, which prints each request's query string: a
    # secret a client wrongly sends in the URL would be logged. No setting of ours turns that on.)
    caplog.set_level(logging.DEBUG)
    world = start_world(database_url, tmp_path, metrics_port=free_port(), client_auth_failure_burst=FAILURE_BURST)
    seed_admin(world)
    t = Transcript()
    clients = token_world_secrets(world, t)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{world.app.http_port}", timeout=10, trust_env=False) as http:
            TokenSession(world, http, world.channel, t, clients).run()
        metrics = scrape_metrics(world.app.metrics_port)
    finally:
        stop_world(world)
    out, err = capfd.readouterr()

    assert len([label for label in t.secrets if label.startswith(("access token", "refresh token"))]) >= 16
    assert "tollgate_token_requests_total" in metrics and 'status="429"' in metrics
    server_records = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any(r.name.startswith("uvicorn") for r in server_records), "uvicorn's logs were captured"
    assert any(r.name.startswith("tollgate") for r in server_records), "the server's logs were captured"
    assert_no_leaks(t, t.seen)
    assert_no_leaks(t, formatted_logs(server_records))
    assert_no_leaks(t, [("stdout", out.encode()), ("stderr", err.encode())])
    assert_no_leaks(t, [("metrics", metrics.encode())])
    assert_no_leaks(t, stored_everywhere(database_url))


def test_the_token_flows_against_a_server_process_at_debug_level_leak_no_secret(database_url, tmp_path):
    """`tollgate serve` with TOLLGATE_LOG_LEVEL=DEBUG (JSON logs; uvicorn's loggers propagate to
    the same handler): its whole output, its metrics, every answer and the database are free of
    secrets. The store is seeded by an in-process world, stopped before the process starts."""
    world = start_world(database_url, tmp_path)
    seed_admin(world)
    t = Transcript()
    clients = token_world_secrets(world, t)
    stop_world(world)
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOLLGATE_")}
    env.update(TOLLGATE_DATABASE_URL=database_url, TOLLGATE_DATA_DIR=str(tmp_path / "serve-data"),
               TOLLGATE_POLICY_PATH=str(EXAMPLE_POLICY),
               TOLLGATE_KEY_ENCRYPTION_KEY=world.app.settings.key_encryption_key,
               TOLLGATE_METRICS_PORT=str(metrics_port), TOLLGATE_HTTP_PORT=str(http_port), TOLLGATE_LOG_LEVEL="DEBUG",
               TOLLGATE_LOG_FORMAT="json", TOLLGATE_WORKERS="1",
               TOLLGATE_CLIENT_AUTH_FAILURE_BURST=str(FAILURE_BURST))
    process = start_server(port, env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10, trust_env=False) as http:
            TokenSession(world, http, channel, t, clients).run()
        metrics = scrape_metrics(metrics_port)
    finally:
        channel.close()
        code, output = stop_server(process)
    assert code == 0, output[-2000:]
    assert '"logger": "uvicorn.error"' in output, "uvicorn's own log lines are in the output"
    assert_no_leaks(t, t.seen)
    assert_no_leaks(t, [("server output", output.encode("utf-8", "replace")), ("metrics", metrics.encode())])
    assert_no_leaks(t, stored_everywhere(database_url))


@pytest.mark.parametrize("kind", ["client secret", "refresh token", "access token", "basic"])
def test_the_scanner_finds_the_token_services_secrets(kind):
    """The scan finds each kind where it was planted: whole, its body after the prefix, a JWT's
    signature, a Basic header value."""
    t = Transcript()
    secret = {"client secret": opaque.generate(opaque.CLIENT_SECRET_PREFIX),
              "refresh token": opaque.generate(opaque.REFRESH_TOKEN_PREFIX),
              "access token": "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0." + "s1g" * 20,
              "basic": basic_header("cli_x", opaque.generate(opaque.CLIENT_SECRET_PREFIX))}[kind]
    if kind == "access token":
        access_token(t, kind, secret)
        planted = [("log", f'{{"message": "{secret.split(".")[-1]}"}}'.encode()), ("db", secret.encode())]
    elif kind == "basic":
        t.credential(kind, secret)
        planted = [("log", f"authorization={secret.split(' ')[1]}".encode()), ("db", secret.encode())]
    else:
        opaque_secret(t, kind, secret)
        planted = [("log", f"got {secret[6:]}".encode()), ("db", secret.encode())]
    assert {leak.split(" in ")[1] for leak in t.leaks(planted)} == {"log", "db"}
    assert not t.leaks([("clean", json.dumps({"error": "invalid_client"}).encode())])
