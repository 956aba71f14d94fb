"""The `tollgate` command line, run for real in subprocesses against SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import create_engine, inspect, text

from service.domain import opaque

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLICY = PROJECT_ROOT / "examples" / "policy.yaml"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any TOLLGATE_* setting of the machine running it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    done = subprocess.run([sys.executable, "-m", "service", *args], cwd=PROJECT_ROOT, env=env or clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass
class Cli:
    database_url: str
    data_dir: Path

    def __call__(self, *args: str, json_output: bool = True, env: dict[str, str] | None = None) -> Result:
        options = ["--database-url", self.database_url, "--data-dir", str(self.data_dir), "--policy", str(POLICY)]
        return run_cli(*args, *options, *(["--json"] if json_output else []), env=env)

    def ok(self, *args: str, **kwargs) -> Result:
        result = self(*args, **kwargs)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result


@pytest.fixture
def cli(database_url, tmp_path) -> Cli:
    tool = Cli(database_url, tmp_path / "data")
    assert tool.ok("migrate").json == {"migrated": True, "database": database_url.split(":")[0].split("+")[0]}
    return tool


def database_dump(database_url: str) -> str:
    """Every row of every table, as text: what a database dump would reveal."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = []
            for table in inspect(connection).get_table_names():
                rows += [repr(tuple(row)) for row in connection.execute(text(f'SELECT * FROM "{table}"'))]
            return "\n".join(rows)
    finally:
        engine.dispose()


def stored_bytes(database_url: str) -> bytes:
    """The SQLite file itself (and its WAL), or the PostgreSQL dump as bytes."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return database_dump(database_url).encode()


def expect_failure(result: Result, *fragments: str, exit_code: int = 2) -> dict:
    assert result.returncode == exit_code, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr
    return json.loads(result.stdout)["error"] if result.stdout.strip() else {}


def rsa_jwk(kid: str, *, private: bool = False) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key if private else key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


# -- partners ------------------------------------------------------------------------------------

def test_partner_create_list_show_suspend(cli):
    created = cli.ok("partner", "create", "acme", "--name", "Acme Bookings", "--role", "booking-agent",
                     "--grant", "read:orders").json
    assert created["id"] == "acme" and created["name"] == "Acme Bookings" and created["status"] == "active"
    assert created["roles"] == ["booking-agent"] and created["grants"] == ["read:orders"]
    assert created["created_at"].endswith("Z")
    cli.ok("partner", "create", "platform", "--name", "Platform", "--role", "platform")

    listed = cli.ok("partner", "list").json["partners"]
    assert {p["id"] for p in listed} == {"acme", "platform"}
    assert cli.ok("partner", "show", "acme").json == created

    assert cli.ok("partner", "suspend", "acme").json["status"] == "suspended"
    assert cli.ok("partner", "show", "acme").json["status"] == "suspended"
    assert cli.ok("partner", "activate", "acme").json["status"] == "active"
    regranted = cli.ok("partner", "set-grants", "acme", "--grant", "user:read").json
    assert regranted["grants"] == ["user:read"] and regranted["roles"] == []

    human = cli.ok("partner", "list", json_output=False).stdout.splitlines()
    assert human[0].split()[:3] == ["ID", "NAME", "STATUS"] and any(line.startswith("acme ") for line in human)


def test_partner_errors_exit_2(cli):
    cli.ok("partner", "create", "acme", "--name", "Acme")
    assert expect_failure(cli("partner", "create", "acme", "--name", "Again"))["reason"] == "partner_exists"
    error = expect_failure(cli("partner", "create", "bad id!", "--name", "X"), "partner_id")
    assert error["field"] == "partner_id"
    expect_failure(cli("partner", "show", "nobody"), "nobody")
    expect_failure(cli("partner", "suspend", "nobody"), "nobody")


def test_bad_grant_is_refused_naming_it(cli):
    error = expect_failure(cli("partner", "create", "acme", "--name", "Acme", "--grant", "user:fly"), "user:fly")
    assert error["field"] == "grants"
    expect_failure(cli("partner", "create", "acme", "--name", "Acme", "--role", "wizard"), "wizard")
    assert expect_failure(cli("partner", "show", "acme"))["reason"] == "partner_not_found"


# -- API keys ------------------------------------------------------------------------------------

def test_key_is_shown_once_and_only_its_digest_is_stored(cli, database_url):
    cli.ok("partner", "create", "acme", "--name", "Acme", "--role", "booking-agent")
    issued = cli.ok("key", "issue", "acme", "--name", "ci", "--grant", "user:read", "--customer", "C-1",
                    "--expires-in", "30d")
    key = issued.json["key"]
    assert key.startswith("tg_live_") and opaque.well_formed(key, opaque.API_KEY_PREFIX)
    assert issued.json["id"].startswith("key_") and issued.json["customer_numbers"] == ["C-1"]
    assert issued.json["expires_at"].endswith("Z") and issued.json["revoked_at"] is None
    assert "shown again" in issued.stderr

    human = cli.ok("key", "issue", "acme", json_output=False)
    assert len([line for line in human.stdout.splitlines() if "tg_live_" in line]) == 1
    assert "shown again" in human.stderr

    for listing in (cli.ok("key", "list", "acme"), cli.ok("key", "list", "acme", json_output=False)):
        assert "tg_live_" not in listing.stdout and opaque.digest(key) not in listing.stdout
    keys = cli.ok("key", "list", "acme").json["keys"]
    assert {k["id"] for k in keys} >= {issued.json["id"]} and all("key" not in k and "digest" not in k for k in keys)

    stored = stored_bytes(database_url)
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in database_dump(database_url)


def test_key_revoke(cli):
    cli.ok("partner", "create", "acme", "--name", "Acme")
    key_id = cli.ok("key", "issue", "acme").json["id"]
    revoked = cli.ok("key", "revoke", key_id).json
    assert revoked["id"] == key_id and revoked["revoked_at"].endswith("Z")
    assert cli.ok("key", "list", "acme").json["keys"][0]["revoked_at"] is not None
    assert expect_failure(cli("key", "revoke", key_id), "already revoked")["reason"] == "already_revoked"
    assert expect_failure(cli("key", "revoke", "key_nope"), "key_nope")["reason"] == "key_not_found"


def test_key_errors(cli):
    expect_failure(cli("key", "issue", "nobody"), "nobody")
    expect_failure(cli("key", "list", "nobody"), "nobody")
    cli.ok("partner", "create", "acme", "--name", "Acme", "--role", "reader")
    error = expect_failure(cli("key", "issue", "acme", "--grant", "order:read"), "order:read")
    assert error["field"] == "grants"
    expect_failure(cli("key", "issue", "acme", "--grant", "bogus"), "bogus")
    expect_failure(cli("key", "issue", "acme", "--expires-in", "soon"), "soon")
    assert cli.ok("key", "list", "acme").json["keys"] == []


# -- issuers and tokens --------------------------------------------------------------------------

def test_issuer_add_with_a_jwks_file_rotate_and_list(cli, tmp_path):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [rsa_jwk("kid-1")]}))
    added = cli.ok("issuer", "add", "https://idp.example.test", "--audience", "https://api.example.test",
                   "--alg", "RS256", "--jwks-file", str(jwks_file)).json
    assert added["issuer"] == "https://idp.example.test" and added["algorithms"] == ["RS256"]
    assert added["key_source"] == "jwks" and added["key_ids"] == ["kid-1"]
    assert added["require_at_jwt_typ"] is True and added["customer_claim"] == "customer_numbers"

    rotated = cli.ok("issuer", "rotate", "https://idp.example.test",
                     "--jwks", json.dumps({"keys": [rsa_jwk("kid-1"), rsa_jwk("kid-2")]})).json
    assert rotated["id"] == added["id"] and rotated["key_ids"] == ["kid-1", "kid-2"]
    assert [i["key_ids"] for i in cli.ok("issuer", "list").json["issuers"]] == [["kid-1", "kid-2"]]

    expect_failure(cli("issuer", "add", "https://idp.example.test", "--audience", "a", "--alg", "RS256",
                       "--jwks-file", str(jwks_file)), "https://idp.example.test")
    assert cli.ok("token", "revoke", "--issuer", "https://idp.example.test", "--jti", "j-1").json["revoked"] is True
    expect_failure(cli("token", "revoke", "--issuer", "https://unknown.test", "--jti", "j-1"), "unknown.test")


def test_issuer_add_with_an_hmac_secret_never_stores_or_prints_it(cli, tmp_path, database_url):
    secret = secrets.token_urlsafe(48)
    secret_file = tmp_path / "hmac.secret"
    secret_file.write_text(secret + "\n")
    added = cli.ok("issuer", "add", "https://hmac.example.test", "--audience", "api", "--alg", "HS256",
                   "--hmac-secret-file", str(secret_file), "--customer-claim", "cust")
    assert added.json["key_source"] == "hmac_secret" and added.json["customer_claim"] == "cust"
    from_env = cli.ok("issuer", "add", "https://env.example.test", "--audience", "api", "--alg", "HS256",
                      "--hmac-secret-env", "MY_SECRET", env=clean_env(MY_SECRET=secret + "x"))
    assert from_env.json["key_source"] == "hmac_secret"
    for shown in (added, from_env, cli.ok("issuer", "list"), cli.ok("issuer", "list", json_output=False)):
        assert secret not in shown.stdout + shown.stderr
    assert secret.encode() not in stored_bytes(database_url)
    assert secret not in database_dump(database_url)


def test_issuer_input_is_validated(cli, tmp_path):
    private = json.dumps({"keys": [rsa_jwk("kid-1", private=True)]})
    expect_failure(cli("issuer", "add", "https://idp.test", "--audience", "a", "--alg", "RS256", "--jwks", private),
                   "JWKS")
    expect_failure(cli("issuer", "add", "https://idp.test", "--audience", "a", "--alg", "none", "--jwks",
                       json.dumps({"keys": [rsa_jwk("k")]})), "none")
    short = tmp_path / "short.secret"
    short.write_text("too-short")
    expect_failure(cli("issuer", "add", "https://idp.test", "--audience", "a", "--alg", "HS256",
                       "--hmac-secret-file", str(short)), "32")
    expect_failure(cli("issuer", "add", "https://idp.test", "--audience", "a", "--alg", "RS256",
                       "--jwks-file", str(tmp_path / "missing.json")), "missing.json")
    expect_failure(cli("issuer", "add", "https://idp.test", "--audience", "a", "--alg", "RS256", "--jwks", "{"))
    assert cli.ok("issuer", "list").json["issuers"] == []


def test_allow_any_typ_warns_loudly(cli):
    added = cli.ok("issuer", "add", "https://legacy.test", "--audience", "a", "--alg", "RS256", "--allow-any-typ",
                   "--jwks", json.dumps({"keys": [rsa_jwk("k")]}))
    assert added.json["require_at_jwt_typ"] is False
    assert "warning:" in added.stderr and "at+jwt" in added.stderr


# -- relations -----------------------------------------------------------------------------------

def test_relation_list_and_expire(cli, database_url):
    from datetime import datetime, timedelta

    from service.domain.model import RelationRecord, RelationStatus, SubjectType
    from service.store import create_store

    assert cli.ok("relation", "list").json == {"relations": [], "next_page_token": ""}
    cli.ok("partner", "create", "acme", "--name", "Acme")
    now = datetime.now(UTC)
    store = create_store(database_url)
    try:
        with store.unit_of_work() as repos:
            for age, user, expires in ((2, "u-1", None), (1, "u-2", now - timedelta(minutes=1))):
                created = now - timedelta(minutes=age)
                repos.relations.insert_open(RelationRecord(f"rel_{user}", "acme", SubjectType.USER, user,
                                                           RelationStatus.ACTIVE, created, created, expires))
    finally:
        store.dispose()

    listed = cli.ok("relation", "list", "--partner", "acme").json
    assert [(r["subject_id"], r["status"]) for r in listed["relations"]] == [("u-1", "active"), ("u-2", "expired")]
    assert listed["relations"][0]["partner_id"] == "acme" and listed["relations"][0]["subject_type"] == "user"
    page = cli.ok("relation", "list", "--page-size", "1").json
    assert len(page["relations"]) == 1 and page["next_page_token"]
    assert cli.ok("relation", "list", "--page-token", page["next_page_token"]).json["relations"][0]["id"] == "rel_u-2"
    assert cli.ok("relation", "expire").json == {"expired": 1}
    assert cli.ok("relation", "expire").json == {"expired": 0}
    only = cli.ok("relation", "list", "--status", "active", "--subject-type", "user").json["relations"]
    assert [r["subject_id"] for r in only] == ["u-1"]
    expect_failure(cli("relation", "list", "--page-size", "9999"), "page_size")


# -- failures without a usable store -------------------------------------------------------------

def test_unreachable_store_is_an_error_not_a_stack_trace(tmp_path):
    result = run_cli("partner", "list", "--json", "--data-dir", str(tmp_path), "--policy", str(POLICY),
                     "--database-url", "postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing",
                     env=clean_env(TOLLGATE_DB_CONNECT_TIMEOUT_SECONDS="2"))
    error = expect_failure(result, "store")
    assert "message" in error


def test_usage_errors_exit_2(tmp_path):
    expect_failure(run_cli("partner", "create", "--json"), "--name")
    expect_failure(run_cli("nonsense"))
    expect_failure(run_cli("partner", "list", "--database-url", "mysql://x", "--data-dir", str(tmp_path)),
                   "database_url")
    expect_failure(run_cli("partner", "list", "--database-url", f"sqlite:///{tmp_path}/t.db",
                           "--policy", str(tmp_path / "nope.yaml")), "nope.yaml")


def test_a_bad_option_prints_the_subcommands_usage():
    for args, usage in ((["key", "issue", "--bogus"], "usage: tollgate key issue "),
                        (["key", "issue", "acme", "--bogus"], "usage: tollgate key issue "),
                        (["client", "check", "--operation", "getUser", "--database-url", "sqlite://"],
                         "usage: tollgate client check ")):
        result = run_cli(*args)
        expect_failure(result)
        assert result.stderr.startswith(usage), result.stderr
    assert "unrecognized arguments: --bogus" in run_cli("key", "issue", "acme", "--bogus").stderr
