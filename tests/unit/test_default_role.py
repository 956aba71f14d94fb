"""The policy's default_role: loaded when it names a defined role, refused (naming file, line and key)
otherwise; and AdminService.create_partner applying it, with the policy in force at the time."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.domain.errors import PolicyError
from service.domain.policy import parse_policy
from service.policy_file import load_policy
from service.usecases.admin import AdminService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

BASE = {
    "scopes": {"user": None, "court-booking": None},
    "roles": {"reader": {"grants": ["user:read"]}, "booker": {"grants": ["court-booking:write"]}},
    "operations": {"getUser": {"permissions": ["user:read"], "relation": "user"}},
}


def test_default_role_names_a_defined_role():
    assert parse_policy({**BASE, "default_role": "reader"}).default_role == "reader"
    assert parse_policy(BASE).default_role is None


def test_the_example_policy_sets_no_default_role():
    assert load_policy(EXAMPLE).default_role is None


@pytest.mark.parametrize("value", ["writer", "", 3, ["reader"], {"reader": None}])
def test_an_undefined_default_role_is_refused(value):
    with pytest.raises(PolicyError) as raised:
        parse_policy({**BASE, "default_role": value})
    assert raised.value.field == "default_role"
    assert "default_role must name a role the policy defines" in raised.value.message
    assert "booker, reader" in raised.value.message


def test_a_default_role_without_roles_is_refused():
    with pytest.raises(PolicyError) as raised:
        parse_policy({**{k: v for k, v in BASE.items() if k != "roles"}, "default_role": "reader"})
    assert raised.value.field == "default_role" and "defined: none" in raised.value.message


def test_the_policy_file_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("scopes:\n  user: {}\nroles:\n  reader: {grants: [user:read]}\noperations:\n  a: {}\n"
                    "default_role: raeder\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert str(path) in str(raised.value) and "line 7" in str(raised.value) and "'raeder'" in str(raised.value)


# -- AdminService.create_partner, against an in-memory store ---------------------------------------


class Partners:
    def __init__(self) -> None:
        self.added = []

    def add(self, partner) -> None:
        self.added.append(partner)


class Audit:
    def __init__(self) -> None:
        self.records = []

    def append(self, record) -> None:
        self.records.append(record)


class Repos:
    def __init__(self) -> None:
        self.partners, self.audit = Partners(), Audit()


class Clock:
    def now(self) -> datetime:
        return NOW


def admin_with(policies: list):
    repos = Repos()

    @contextmanager
    def unit_of_work(read_only: bool = False):
        yield repos

    return AdminService(lambda: policies[0], unit_of_work, Clock()), repos


@pytest.mark.parametrize("grants, roles, expected_grants, expected_roles", [
    ((), (), (), ("reader",)),
    (["user:read"], (), ("user:read",), ()),
    ((), ["booker"], (), ("booker",)),
    (["user:read"], ["booker"], ("user:read",), ("booker",)),
])
def test_create_partner_applies_the_default_role_only_without_roles_or_grants(grants, roles, expected_grants,
                                                                             expected_roles):
    admin, repos = admin_with([parse_policy({**BASE, "default_role": "reader"})])
    partner = admin.create_partner("p1", "P", grants, roles)
    assert (partner.grants, partner.roles) == (expected_grants, expected_roles)
    assert repos.partners.added == [partner]
    details = repos.audit.records[0].details
    assert details["roles"] == list(expected_roles) and details.get("default_role", False) is (not grants and not roles)


def test_create_partner_uses_the_policy_in_force_at_the_time():
    policies = [parse_policy(BASE)]
    admin, _ = admin_with(policies)
    assert admin.create_partner("p1", "P", (), ()).roles == ()
    policies[0] = parse_policy({**BASE, "default_role": "booker"})  # a reload
    assert admin.create_partner("p2", "P", iter(()), iter(())).roles == ("booker",)


def test_the_commented_default_role_in_the_example_policy_loads():
    import yaml

    text = EXAMPLE.read_text()
    assert "\n# default_role: reader\n" in text
    policy = parse_policy(yaml.safe_load(text.replace("\n# default_role: reader\n", "\ndefault_role: reader\n")))
    assert policy.default_role == "reader"
