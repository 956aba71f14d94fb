"""The README's five-minute walk-through, run command by command against a real server process."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port, start_server, stop_server

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
TOLLGATE = ".venv/bin/tollgate"
CURL = "curl "
# The README's OAuth endpoint address; the test's server listens on a free port instead.
README_HTTP = "http://127.0.0.1:8080"

# Exactly the tollgate commands of the README's walk-through, in order.
WALKTHROUGH = [
    ".venv/bin/tollgate partner create platform --name Platform --role platform",
    '.venv/bin/tollgate partner create acme --name "Acme Bookings" --role booking-agent',
    ".venv/bin/tollgate key issue platform --name walkthrough",
    ".venv/bin/tollgate key issue acme --name walkthrough",
    '.venv/bin/tollgate client request-relation --user-id u-1 --key "$PARTNER_KEY"',
    '.venv/bin/tollgate client approve-relation "$RELATION_ID" --key "$PLATFORM_KEY"',
    '.venv/bin/tollgate client check --operation getUser --user-id u-1 --key "$PARTNER_KEY"',
    ".venv/bin/tollgate oauth-client create acme --name walkthrough --scope user:read",
    'curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials http://127.0.0.1:8080/oauth/token',
    '.venv/bin/tollgate client check --operation getUser --user-id u-1 --token "$ACCESS_TOKEN"',
    '.venv/bin/tollgate client revoke-relation "$RELATION_ID" --key "$PARTNER_KEY"',
    '.venv/bin/tollgate client check --operation getUser --user-id u-1 --key "$PARTNER_KEY"',
]


def readme_walkthrough() -> list[str]:
    """The tollgate and curl command lines in the code blocks of the README's walk-through section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Five-minute walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith((TOLLGATE, CURL))]


def fields(output: str) -> dict[str, str]:
    """The `label  value` lines of a human-readable record (label and value are two spaces apart)."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in output.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


@pytest.fixture
def environment(database_url, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(TOLLGATE_DATABASE_URL=database_url, TOLLGATE_DATA_DIR=str(tmp_path / "data"),
               TOLLGATE_POLICY_PATH=str(PROJECT_ROOT / "examples" / "policy.yaml"),
               TOLLGATE_TARGET=f"127.0.0.1:{free_port()}", TOLLGATE_HTTP_PORT=str(free_port()),
               TOLLGATE_METRICS_PORT=str(free_port()))  # never the fixed default, which another run may hold
    return env


@pytest.fixture
def server(environment):
    process = start_server(int(environment["TOLLGATE_TARGET"].rsplit(":", 1)[1]), environment)
    yield process
    stop_server(process)


def run(line: str, variables: dict[str, str], environment: dict[str, str]) -> str:
    """One README line: `.venv/bin/tollgate` becomes this interpreter's `-m service`, "$VAR" its value
    (also inside a word, as the shell would), and curl is the real curl, sent to the test's port."""
    words = [re.sub(r"\$([A-Z_]+)", lambda match: variables[match[1]], word) for word in shlex.split(line)]
    if words[0] == "curl":
        port = environment["TOLLGATE_HTTP_PORT"]
        command = [word.replace(README_HTTP, f"http://127.0.0.1:{port}") for word in words]
    else:
        assert words[0] == TOLLGATE
        command = [sys.executable, "-m", "service", *words[1:]]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_readme_shows_exactly_these_commands():
    assert readme_walkthrough() == WALKTHROUGH
    assert "make serve" in README.read_text(encoding="utf-8")


def test_walkthrough(server, environment):
    variables: dict[str, str] = {}
    outputs = []
    for line in WALKTHROUGH:
        output = run(line, variables, environment)
        outputs.append(output)
        if " key issue " in line:
            name = "PLATFORM_KEY" if " platform " in line else "PARTNER_KEY"
            variables[name] = fields(output)["key"]
            assert variables[name].startswith("tg_live_")
        if " request-relation " in line:
            variables["RELATION_ID"] = fields(output)["id"]
            assert variables["RELATION_ID"].startswith("rel_") and fields(output)["status"] == "pending"
        if " oauth-client create " in line:
            variables["CLIENT_ID"], variables["CLIENT_SECRET"] = fields(output)["client_id"], fields(output)["client_secret"]
            assert variables["CLIENT_SECRET"].startswith("tg_cs_")
        if line.startswith(CURL):
            answer = json.loads(output)
            assert answer["token_type"] == "Bearer" and answer["scope"] == "user:read"
            variables["ACCESS_TOKEN"] = answer["access_token"]

    approved, allowed = (fields(o) for o in outputs[5:7])
    allowed_with_token, revoked, denied = (fields(o) for o in outputs[9:])
    assert approved["status"] == "active"
    assert allowed["allowed"] == "yes" and allowed["http_status"] == "200"
    assert allowed_with_token["allowed"] == "yes" and allowed_with_token["http_status"] == "200"
    assert revoked["status"] == "revoked"
    assert denied["allowed"] == "no" and denied["http_status"] == "403"
    assert denied["reason"] == "user_access_denied"
    assert server.poll() is None
