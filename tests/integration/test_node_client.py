"""examples/node/check.js, the Node.js client, run for real against a running server.

It needs Node.js and the root node_modules, which `make test` installs (npm ci) before pytest runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.support.world import PROJECT_ROOT, start_world, stop_world

CHECK_JS = PROJECT_ROOT / "examples" / "node" / "check.js"


def require_node_modules() -> None:
    """Fails (never skips) when the Node tooling is missing: `make test` installs it."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH; install Node.js 20+ and run `make test`", pytrace=False)
    if not (PROJECT_ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules is missing: run `make test`, which installs it with npm ci", pytrace=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One server on SQLite for the module (the client does not care about the backend)."""
    data = tmp_path_factory.mktemp("node-client")
    started = start_world(f"sqlite:///{data / 'tollgate.db'}", data)
    yield started
    stop_world(started)


def run_check(target: str, credential: str, *args: str) -> subprocess.CompletedProcess:
    require_node_modules()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(TOLLGATE_TARGET=target, TOLLGATE_CREDENTIAL=credential)
    return subprocess.run(["node", str(CHECK_JS), *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def decision(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_allowed_with_a_bearer_api_key(world):
    response = decision(run_check(f"127.0.0.1:{world.app.port}", world.bearer("acme"),
                                  "getUser", "--user-id", "u-active"))
    assert response["allowed"] is True, response
    assert response["httpStatus"] == 200
    assert response["reason"] == ""
    assert response["principal"]["partnerId"] == "acme"


def test_a_bare_key_is_sent_as_bearer(world):
    response = decision(run_check(f"127.0.0.1:{world.app.port}", world.keys["acme"],
                                  "getUser", "--user-id", "u-active"))
    assert response["allowed"] is True, response


def test_deny_is_a_decision_not_an_error(world):
    response = decision(run_check(f"127.0.0.1:{world.app.port}", world.bearer("acme-reader"),
                                  "updateUser", "--user-id", "u-active"))
    assert response["allowed"] is False, response
    assert response["reason"] == "insufficient_scope"
    assert response["httpStatus"] == 403
    assert response["denyReason"] == "DENY_REASON_INSUFFICIENT_SCOPE"


def test_rpc_error_exits_1():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_check(f"127.0.0.1:{port}", "Bearer x", "getUser", "--user-id", "u-active")
    assert done.returncode == 1, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stdout == ""
    assert "error: UNAVAILABLE" in done.stderr
