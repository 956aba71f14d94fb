"""examples/node/token.js (openid-client) against a real server on both stores, and its token used
with examples/node/check.js: the Node partner's whole path from discovery to an allowed Check.

It needs Node.js and the root node_modules, which `make test` installs (npm ci) before pytest runs.
Without `node` on PATH the tests are skipped; with node but without openid-client installed they
fail, saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import httpx
import pytest

from tests.support.oauth import Client, add_client
from tests.support.world import PROJECT_ROOT, World, start_world, stop_world

TOKEN_JS = PROJECT_ROOT / "examples" / "node" / "token.js"
CHECK_JS = PROJECT_ROOT / "examples" / "node" / "check.js"
CLIENT_ID = "cli_node_partner"


@pytest.fixture(autouse=True)
def node_tooling() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: install Node.js 20+ to run the Node OAuth example tests")
    for package in ("openid-client", "@grpc/grpc-js"):
        if not (PROJECT_ROOT / "node_modules" / package).is_dir():
            pytest.fail(f"node_modules/{package} is missing: run `make test`, which installs it with npm ci",
                        pytrace=False)


def issuer_of(world: World) -> str:
    return f"http://127.0.0.1:{world.app.http_port}"


def node(script, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Runs a Node example with exactly the TOLLGATE_* variables given (none from the caller's shell)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return subprocess.run(["node", str(script), *args], cwd=PROJECT_ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def get_token(issuer: str, client: Client, *args: str) -> subprocess.CompletedProcess:
    env = {"TOLLGATE_ISSUER": issuer, "TOLLGATE_CLIENT_ID": client.id, "TOLLGATE_CLIENT_SECRET": client.secret}
    return node(TOKEN_JS, env, *args)


def check(world: World, credential: str, *args: str) -> dict:
    done = node(CHECK_JS, {"TOLLGATE_TARGET": f"127.0.0.1:{world.app.port}", "TOLLGATE_CREDENTIAL": credential},
                *args)
    return json.loads(one_line(done))


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_token_from_discovered_metadata_is_allowed_by_check_js(world, auth):
    client = add_client(world, CLIENT_ID)
    issuer = issuer_of(world)
    metadata = httpx.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10, trust_env=False).json()

    got = json.loads(one_line(get_token(issuer, client, "--scope", "user:read", "--auth", auth)))
    # What openid-client read from the RFC 8414 document, and the token response it validated.
    assert got["issuer"] == issuer
    assert got["token_endpoint"] == metadata["token_endpoint"] == f"{issuer}/oauth/token"
    assert got["token_type"].lower() == "bearer" and got["scope"] == "user:read" and got["expires_in"] > 0
    assert "refresh_token" not in got

    allowed = check(world, got["access_token"], "getUser", "--user-id", "u-active")
    assert allowed["allowed"] is True and allowed["httpStatus"] == 200, allowed
    assert allowed["principal"]["partnerId"] == "acme"
    assert allowed["principal"]["credentialKind"] == "CREDENTIAL_KIND_OAUTH_CLIENT"
    assert allowed["principal"]["credentialId"].startswith(f"{CLIENT_ID}:")
    # The token holds only the scope it asked for.
    denied = check(world, got["access_token"], "updateUser", "--user-id", "u-active")
    assert (denied["allowed"], denied["reason"], denied["httpStatus"]) == (False, "insufficient_scope", 403)


def test_token_flag_prints_the_bare_access_token_for_check_js(world):
    client = add_client(world, CLIENT_ID, refresh_tokens=True)
    token = one_line(get_token(issuer_of(world), client, "--token"))
    assert token.count(".") == 2, token  # a JWT, with no JSON around it
    allowed = check(world, token, "getUser", "--user-id", "u-active")
    assert allowed["allowed"] is True and allowed["principal"]["partnerId"] == "acme", allowed


def test_wrong_secret_exits_1_with_invalid_client(world):
    add_client(world, CLIENT_ID)
    done = get_token(issuer_of(world), Client(CLIENT_ID, "tg_cs_not-the-secret"))
    assert done.returncode == 1, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stdout == ""
    assert "error: invalid_client: client authentication failed (HTTP 401" in done.stderr


def test_unknown_scope_exits_1_with_invalid_scope(world):
    client = add_client(world, CLIENT_ID)
    done = get_token(issuer_of(world), client, "--scope", "no-such-scope:read")
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "error: invalid_scope" in done.stderr


def test_metadata_of_another_issuer_is_refused(tmp_path):
    """openid-client compares the metadata's issuer with the URL it discovered (RFC 8414 3.3); the
    script must not get around that. Here the server advertises its public URL, not the one asked."""
    world = start_world(f"sqlite:///{tmp_path / 'tollgate.db'}", tmp_path, issuer_url="https://tollgate.example.test")
    try:
        client = add_client(world, CLIENT_ID)
        done = get_token(issuer_of(world), client)
    finally:
        stop_world(world)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED" in done.stderr and "issuer" in done.stderr


def test_plain_http_to_another_host_is_refused_before_any_request():
    done = get_token("http://tollgate.example.test", Client(CLIENT_ID, "tg_cs_x"))
    assert done.returncode == 2, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert "refusing plain http to tollgate.example.test" in done.stderr
