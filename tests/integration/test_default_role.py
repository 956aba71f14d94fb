"""The policy's default_role through the real Admin gRPC service and the real command line, on
SQLite and PostgreSQL: a partner created with neither roles nor grants gets it, one created with
either gets exactly what was asked, and a reloaded policy's default applies from then on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tollgate.v1 import admin_pb2 as pb

from tests.integration.test_admin import ADMIN_ACTOR, Admin, audit, seed_admin
from tests.integration.test_cli import Result, run_cli
from tests.support.world import EXAMPLE_POLICY, start_world, stop_world


def write_policy(path: Path, default_role: str | None) -> Path:
    """The example policy with `default_role` set (or left out)."""
    document = yaml.safe_load(EXAMPLE_POLICY.read_text())
    if default_role is not None:
        document["default_role"] = default_role
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def policy_path(tmp_path) -> Path:
    return write_policy(tmp_path / "policy.yaml", "reader")


@pytest.fixture
def world(database_url, tmp_path, policy_path):
    started = start_world(database_url, tmp_path / "data", policy_path=policy_path)
    yield started
    stop_world(started)


@pytest.fixture
def admin(world):
    return Admin(world, seed_admin(world))


def create(admin, partner_id: str, **fields) -> pb.Partner:
    return admin.CreatePartner(pb.CreatePartnerRequest(partner_id=partner_id, name=partner_id.title(),
                                                       **fields)).partner


def test_create_partner_gets_the_default_role_unless_it_asks_for_roles_or_grants(world, admin):
    plain = create(admin, "initech")
    assert (list(plain.grants), list(plain.roles)) == ([], ["reader"])
    assert admin.GetPartner(pb.GetPartnerRequest(partner_id="initech")).partner == plain

    granted = create(admin, "hooli", grants=["court-booking:write"])
    assert (list(granted.grants), list(granted.roles)) == (["court-booking:write"], [])
    roled = create(admin, "umbrella", roles=["booking-agent"])
    assert (list(roled.grants), list(roled.roles)) == ([], ["booking-agent"])

    events = [e for e in audit(admin, actor=ADMIN_ACTOR) if e.action == "partner.create"]
    assert [(e.target, json.loads(e.details).get("default_role", False)) for e in events] == [
        ("initech", True), ("hooli", False), ("umbrella", False)]
    assert json.loads(events[0].details)["roles"] == ["reader"]


def test_the_default_role_grants_what_the_role_holds(world, admin):
    create(admin, "initech")
    key = admin.IssueApiKey(pb.IssueApiKeyRequest(partner_id="initech", name="k")).key
    # reader holds user:read: getUser gets past the scope step, to the relation step.
    assert world.check("getUser", api_key=key, user_id="u-1").reason == "user_access_denied"
    assert world.check("createCourtBooking", api_key=key).reason == "insufficient_scope"


def test_a_reloaded_policy_default_applies_to_the_next_partner(world, admin, policy_path):
    assert list(create(admin, "first").roles) == ["reader"]
    write_policy(policy_path, "booking-agent")
    assert world.app.reload_policy()
    assert list(create(admin, "second").roles) == ["booking-agent"]
    write_policy(policy_path, None)
    assert world.app.reload_policy()
    assert list(create(admin, "third").roles) == []
    # A policy whose default_role names no role is refused at reload; the one in force stays.
    policy_path.write_text(policy_path.read_text() + "default_role: nobody\n")
    assert not world.app.reload_policy()
    assert list(create(admin, "fourth").roles) == []


# -- the command line ------------------------------------------------------------------------------


def cli(database_url: str, data_dir: Path, policy: Path, *args: str) -> Result:
    result = run_cli(*args, "--database-url", database_url, "--data-dir", str(data_dir), "--policy", str(policy),
                     "--json")
    return result


def test_partner_create_on_the_command_line(database_url, tmp_path, policy_path):
    data = tmp_path / "data"
    assert cli(database_url, data, policy_path, "migrate").returncode == 0

    created = cli(database_url, data, policy_path, "partner", "create", "acme", "--name", "Acme")
    assert created.returncode == 0, created.stderr
    assert (created.json["grants"], created.json["roles"]) == ([], ["reader"])
    granted = cli(database_url, data, policy_path, "partner", "create", "globex", "--name", "Globex",
                  "--grant", "read:orders").json
    assert (granted["grants"], granted["roles"]) == (["read:orders"], [])
    roled = cli(database_url, data, policy_path, "partner", "create", "hooli", "--name", "Hooli",
                "--role", "platform").json
    assert (roled["grants"], roled["roles"]) == ([], ["platform"])

    human = run_cli("partner", "show", "acme", "--database-url", database_url, "--data-dir", str(data),
                    "--policy", str(policy_path))
    assert human.returncode == 0 and "reader" in human.stdout

    without = write_policy(tmp_path / "plain.yaml", None)
    assert cli(database_url, data, without, "partner", "create", "plain", "--name", "Plain").json["roles"] == []


def test_the_command_line_refuses_a_policy_with_an_unknown_default_role(database_url, tmp_path):
    data = tmp_path / "data"
    broken = write_policy(tmp_path / "broken.yaml", "raeder")
    result = cli(database_url, data, broken, "partner", "create", "acme", "--name", "Acme")
    assert result.returncode != 0
    assert "default_role must name a role the policy defines" in result.stderr and str(broken) in result.stderr
