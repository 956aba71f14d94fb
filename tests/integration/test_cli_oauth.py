"""`tollgate oauth-client` and `tollgate signing-key`, run for real in subprocesses against SQLite
and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from service.domain import opaque
from tests.integration.test_cli import Cli, clean_env, database_dump, expect_failure, run_cli, stored_bytes


@pytest.fixture
def cli(database_url, tmp_path) -> Cli:
    tool = Cli(database_url, tmp_path / "data")
    tool.ok("migrate")
    tool.ok("partner", "create", "acme", "--name", "Acme", "--grant", "user:write", "--grant", "order:read")
    return tool


def parsed(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


# -- OAuth clients -------------------------------------------------------------------------------

def test_the_client_secret_is_shown_once_and_only_its_digest_is_stored(cli, database_url):
    created = cli.ok("oauth-client", "create", "acme", "--name", "robot", "--scope", "user:read",
                     "--scope", "read:orders", "--customer", "C-1", "--refresh-tokens")
    client = created.json
    secret = client["client_secret"]
    assert secret.startswith("tg_cs_") and opaque.well_formed(secret, opaque.CLIENT_SECRET_PREFIX)
    assert client["client_id"].startswith("cli_") and client["id"] == client["client_id"]
    assert (client["partner_id"], client["name"], client["scopes"]) == ("acme", "robot", ["user:read", "read:orders"])
    assert client["customer_numbers"] == ["C-1"] and client["refresh_tokens"] is True
    assert client["created_at"].endswith("Z") and client["revoked_at"] is None
    assert "digest" not in str(client) and opaque.digest(secret) not in created.stdout
    assert "shown again" in created.stderr and secret not in created.stderr

    human = cli.ok("oauth-client", "create", "acme", json_output=False)
    lines = human.stdout.splitlines()
    assert lines[0].split()[0] == "client_id" and lines[0].split()[1].startswith("cli_")
    assert lines[1].split()[0] == "client_secret" and lines[1].split()[1].startswith("tg_cs_")
    assert len([line for line in lines if "tg_cs_" in line]) == 1
    assert "shown again" in human.stderr

    for listing in (cli.ok("oauth-client", "list"), cli.ok("oauth-client", "list", "acme", json_output=False)):
        assert "tg_cs_" not in listing.stdout and opaque.digest(secret) not in listing.stdout

    stored = stored_bytes(database_url)
    assert secret.encode() not in stored and secret[len("tg_cs_"):].encode() not in stored
    dump = database_dump(database_url)
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert "oauth_client.create" in dump  # audited, as the operator


def test_list_rotate_secret_and_revoke(cli, database_url):
    cli.ok("partner", "create", "globex", "--name", "Globex", "--role", "reader")
    first = cli.ok("oauth-client", "create", "acme", "--name", "one").json
    second = cli.ok("oauth-client", "create", "globex", "--name", "two").json

    assert {c["id"] for c in cli.ok("oauth-client", "list").json["clients"]} == {first["id"], second["id"]}
    listed = cli.ok("oauth-client", "list", "acme").json["clients"]
    assert [c["id"] for c in listed] == [first["id"]]
    assert all("client_secret" not in c and "secret_digest" not in c for c in listed)
    human = cli.ok("oauth-client", "list", json_output=False).stdout.splitlines()
    assert human[0].split()[:3] == ["ID", "PARTNER", "NAME"]

    rotated = cli.ok("oauth-client", "rotate-secret", first["id"])
    new_secret = rotated.json["client_secret"]
    assert rotated.json["client_id"] == first["id"] and new_secret != first["client_secret"]
    assert opaque.well_formed(new_secret, opaque.CLIENT_SECRET_PREFIX) and rotated.json["secret_rotated_at"]
    assert "shown again" in rotated.stderr
    stored = stored_bytes(database_url)
    assert new_secret.encode() not in stored and first["client_secret"].encode() not in stored

    revoked = cli.ok("oauth-client", "revoke", first["id"]).json
    assert revoked["id"] == first["id"] and revoked["revoked_at"].endswith("Z") and "client_secret" not in revoked
    assert cli.ok("oauth-client", "list", "acme").json["clients"][0]["revoked_at"] is not None
    assert expect_failure(cli("oauth-client", "revoke", first["id"]), "already revoked")["reason"] == "already_revoked"
    assert expect_failure(cli("oauth-client", "rotate-secret", first["id"]))["reason"] == "already_revoked"


def test_oauth_client_errors_exit_2(cli):
    assert expect_failure(cli("oauth-client", "create", "nobody"), "nobody")["reason"] == "partner_not_found"
    assert expect_failure(cli("oauth-client", "list", "nobody"), "nobody")["reason"] == "partner_not_found"
    error = expect_failure(cli("oauth-client", "revoke", "cli_nope"), "cli_nope")
    assert (error["reason"], error["field"]) == ("client_not_found", "client_id")
    assert expect_failure(cli("oauth-client", "rotate-secret", "cli_nope"))["reason"] == "client_not_found"
    error = expect_failure(cli("oauth-client", "create", "acme", "--scope", "relations:write"), "relations:write")
    assert error["field"] == "scopes"  # never wider than the partner
    assert expect_failure(cli("oauth-client", "create", "acme", "--scope", "bogus"), "bogus")["field"] == "scopes"
    expect_failure(cli("oauth-client", "create", "acme", "--customer", "C 1"), "customer")
    expect_failure(cli("oauth-client", "rotate-secret"), "CLIENT_ID")
    assert cli.ok("oauth-client", "list").json["clients"] == []


# -- signing keys --------------------------------------------------------------------------------

def test_signing_key_rotate_and_list(cli):
    assert cli.ok("signing-key", "list").json == {"keys": []}
    first = cli.ok("signing-key", "rotate").json
    assert first["active"] is True and first["algorithm"] == "ES256" and first["previous_kid"] is None
    assert first["retired_at"] is None and first["publish_until"] is None

    second = cli.ok("signing-key", "rotate").json
    assert second["kid"] != first["kid"] and second["previous_kid"] == first["kid"]
    published_until = parsed(second["previous_publish_until"])
    assert published_until > datetime.now(UTC) + timedelta(minutes=55)

    keys = cli.ok("signing-key", "list").json["keys"]
    assert [k["kid"] for k in keys] == [second["kid"], first["kid"]]  # newest first
    assert [k["active"] for k in keys] == [True, False]
    retired = keys[1]
    assert parsed(retired["publish_until"]) - parsed(retired["retired_at"]) == timedelta(seconds=3600 + 30)
    for key in keys:
        assert key["public_jwk"]["kid"] == key["kid"] and "d" not in key["public_jwk"]
    human = cli.ok("signing-key", "list", json_output=False).stdout.splitlines()
    assert human[0].split() == ["KID", "ALGORITHM", "ACTIVE", "CREATED", "RETIRED", "PUBLISH", "UNTIL"]
    assert human[1].split()[:3] == [second["kid"], "ES256", "yes"]
    assert human[2].split()[:3] == [first["kid"], "ES256", "no"]


def test_signing_keys_follow_the_settings_and_only_key_making_needs_the_kek(cli):
    assert not (cli.data_dir / "secret.key").exists()  # managing clients seals nothing
    cli.ok("oauth-client", "create", "acme")
    assert not (cli.data_dir / "secret.key").exists()

    env = clean_env(TOLLGATE_TOKEN_SIGNING_ALGORITHM="EdDSA", TOLLGATE_ACCESS_TOKEN_LIFETIME_SECONDS="600")
    first = cli.ok("signing-key", "rotate", env=env).json
    assert first["algorithm"] == "EdDSA" and first["public_jwk"]["crv"] == "Ed25519"
    assert (cli.data_dir / "secret.key").exists()  # the private key is sealed with it
    cli.ok("signing-key", "rotate", env=env)
    retired = cli.ok("signing-key", "list").json["keys"][1]
    assert retired["kid"] == first["kid"]
    assert parsed(retired["publish_until"]) - parsed(retired["retired_at"]) == timedelta(seconds=600 + 30)


def test_help_lists_the_token_service_groups():
    listed = run_cli("--help").stdout
    assert "oauth-client" in listed and "signing-key" in listed
    usage = run_cli("oauth-client", "create", "--help").stdout
    for option in ("PARTNER", "--name", "--scope", "--refresh-tokens", "--customer"):
        assert option in usage
    assert {"create", "list", "rotate-secret", "revoke"} <= set(run_cli("oauth-client", "--help").stdout.split())
    assert {"rotate", "list"} <= set(run_cli("signing-key", "--help").stdout.split())
