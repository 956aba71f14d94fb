"""CheckRequest.explain through a real server on SQLite and PostgreSQL: the steps evaluated, in
order, with the facts each used (grants held and needed, the relation looked at and its state,
the customer numbers compared), never a secret; never answered from the decision memo; and the
command line's `client check --explain`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from tollgate.v1 import authorization_pb2

from service.domain.model import SubjectType
from tests.support.world import start_world, stop_world

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ORDER = ["operation", "failed_credential_limit", "credential", "rate_limit", "permissions", "user_relation",
         "token_user", "organization_relation", "customer"]
OUTCOMES = {authorization_pb2.STEP_OUTCOME_PASSED: "passed", authorization_pb2.STEP_OUTCOME_FAILED: "failed",
            authorization_pb2.STEP_OUTCOME_SKIPPED: "skipped"}


def explained(world, operation: str, *, authorization: str = "", **resource) -> authorization_pb2.CheckResponse:
    request = authorization_pb2.CheckRequest(authorization=authorization, operation=operation, explain=True,
                                             resource=authorization_pb2.Resource(**resource))
    return world.authorization.Check(request, timeout=10)


def steps(response) -> dict[str, tuple[str, dict[str, str]]]:
    assert [step.name for step in response.explanation] == ORDER
    return {step.name: (OUTCOMES[step.outcome], dict(step.facts)) for step in response.explanation}


def open_relation_id(world, partner: str, subject_type: SubjectType, subject_id: str) -> str:
    with world.seed() as repos:
        return repos.relations.find_open(partner, subject_type, subject_id).id


def recalled(world) -> str:
    return [line for line in generate_latest(world.app.telemetry.registry).decode().splitlines()
            if line.startswith("tollgate_checks_recalled_total")]


def assert_no_secret(response, *secrets: str) -> None:
    text = str(response) + response.SerializeToString().decode("utf-8", "replace")
    for secret in secrets:
        assert secret not in text


def test_a_pending_relation_is_named_with_its_id_and_state(shared_world):
    world = shared_world
    response = explained(world, "getUser", authorization=world.bearer("acme"), user_id="u-pending")
    assert response.reason == "user_access_denied" and response.principal.partner_id == "acme"
    found = steps(response)
    assert found["operation"] == ("passed", {"operation": "getUser", "known": "yes", "public": "no",
                                             "needs": "user:read"})
    assert found["failed_credential_limit"][0] == found["rate_limit"][0] == "skipped"  # both limits are off
    assert found["credential"] == ("passed", {"presented": "yes", "partner_id": "acme",
                                              "credential_id": world.key_ids["acme"], "credential_kind": "api_key"})
    outcome, facts = found["permissions"]
    assert outcome == "passed" and facts["needed"] == "user:read" and "user:write" in facts["held"].split()
    outcome, facts = found["user_relation"]
    assert outcome == "failed"
    assert facts["relation_id"] == open_relation_id(world, "acme", SubjectType.USER, "u-pending")
    assert (facts["subject_type"], facts["subject_id"], facts["relation_status"]) == ("user", "u-pending", "pending")
    assert "expires_at" in facts
    assert [found[name][0] for name in ORDER[6:]] == ["skipped"] * 3
    assert_no_secret(response, world.keys["acme"])


@pytest.mark.parametrize("user_id, status, outcome", [("u-active", "active", "passed"), ("u-nobody", "none", "failed"),
                                                      ("u-lapsed", "active", "failed")])
def test_relation_states(shared_world, user_id, status, outcome):
    """A lapsed relation is still recorded active until the sweep: its expiry says why it failed."""
    response = explained(shared_world, "getUser", authorization=shared_world.bearer("acme"), user_id=user_id)
    found, facts = steps(response)["user_relation"]
    assert (found, facts["relation_status"]) == (outcome, status)
    assert response.allowed is (outcome == "passed")


def test_scope_and_customer_facts(shared_world):
    world = shared_world
    scope = steps(explained(world, "updateUser", authorization=world.bearer("acme-reader"), user_id="u-active"))
    assert scope["permissions"] == ("failed", {"needed": "user:write", "held": "user:read", "missing": "user:write"})
    customer = steps(explained(world, "listCustomerOrders", authorization=world.bearer("acme"), customer_id="C-9"))
    assert customer["customer"] == ("failed", {"customer_id": "C-9", "credential_customer_ids": "C-1 C-2"})
    assert customer["user_relation"] == ("skipped", {"why": "the operation needs no such relation"})


def test_an_unrecognised_credential_is_explained_without_a_principal(shared_world):
    world = shared_world
    for authorization, presented, reason in [("", "none", "missing_token"), ("Basic YTpi", "none", "missing_token"),
                                             (world.bearer("acme-revoked"), "yes", "token_revoked")]:
        response = explained(world, "getUser", authorization=authorization, user_id="u-active")
        assert response.reason == reason and not response.HasField("principal")
        outcome, facts = steps(response)["credential"]
        assert outcome == "failed" and facts["presented"] == presented
        assert facts.get("reason", "missing_token") == reason and "partner_id" not in facts
        assert_no_secret(response, world.keys["acme-revoked"])


def test_a_jwt_is_named_by_its_id_never_quoted(shared_world):
    token = shared_world.jwt("ec", "acme", jti="jti-explained")
    response = explained(shared_world, "createCourtBooking", authorization=f"Bearer {token}")
    assert response.allowed
    assert steps(response)["credential"][1]["credential_id"] == "iss_ec:jti-explained"
    assert_no_secret(response, token, *token.split("."))


def test_explained_checks_are_never_recalled_nor_remembered(shared_world):
    """The memo answers the plain repeats; an explained check is decided afresh each time and
    leaves nothing a plain repeat could be answered with."""
    world = shared_world
    key = world.bearer("acme")
    plain = [world.check("getUser", authorization=key, user_id="u-active") for _ in range(2)]
    before = recalled(world)
    answers = [explained(world, "getUser", authorization=key, user_id="u-active") for _ in range(3)]
    assert recalled(world) == before
    for answer in answers:
        assert answer.allowed and len(answer.explanation) == len(ORDER)
        assert {OUTCOMES[s.outcome] for s in answer.explanation} == {"passed", "skipped"}
        answer.ClearField("explanation")
        answer.decision_id = plain[0].decision_id
        assert answer == plain[0]
    again = world.check("getUser", authorization=key, user_id="u-active")
    assert not again.explanation and again.allowed


def test_a_batch_explains_every_item(shared_world):
    world = shared_world
    request = authorization_pb2.BatchCheckRequest(authorization=world.bearer("acme"), explain=True, items=[
        authorization_pb2.BatchCheckItem(operation="getUser", resource=authorization_pb2.Resource(user_id="u-active")),
        authorization_pb2.BatchCheckItem(operation="getOrganization",
                                         resource=authorization_pb2.Resource(organization_id="o-nobody")),
        authorization_pb2.BatchCheckItem(operation="health")])
    allowed, denied, public = world.authorization.BatchCheck(request, timeout=10).results
    assert steps(allowed)["user_relation"][0] == "passed"
    assert steps(denied)["organization_relation"] == ("failed", {
        "subject_type": "organization", "subject_id": "o-nobody", "relation_status": "none"})
    assert [OUTCOMES[s.outcome] for s in public.explanation] == ["passed"] + ["skipped"] * (len(ORDER) - 1)
    request.explain = False
    assert not any(r.explanation for r in world.authorization.BatchCheck(request, timeout=10).results)


def test_explained_without_the_fact_cache_reads_the_store(database_url, tmp_path):
    """With the cache off the decision reads the store in one unit of work, and so does its
    explanation; the limits that are on say so."""
    world = start_world(database_url, tmp_path, cache_max_entries=0, rate_limit_per_second=100)
    try:
        response = explained(world, "getOrganization", authorization=world.bearer("acme"), organization_id="o-active")
        found = steps(response)
        assert response.allowed and found["organization_relation"][0] == "passed"
        assert found["organization_relation"][1]["relation_id"] == open_relation_id(
            world, "acme", SubjectType.ORGANIZATION, "o-active")
        assert found["rate_limit"] == ("passed", {"enabled": "yes", "retry_after_seconds": "0"})
    finally:
        stop_world(world)


def run_client(world, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return subprocess.run([sys.executable, "-m", "service", "client", "check", "--target",
                           f"127.0.0.1:{world.app.port}", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_command_line_prints_the_steps(shared_world):
    world = shared_world
    args = ("--operation", "getUser", "--user-id", "u-pending", "--key", world.keys["acme"], "--explain")
    text = run_client(world, *args)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["allowed", "no"] and "partner      acme" in text.stdout
    table = lines[lines.index(next(line for line in lines if line.startswith("STEP"))):]
    assert [line.split()[:2] for line in table[1:]] == [
        ["operation", "passed"], ["failed_credential_limit", "skipped"], ["credential", "passed"],
        ["rate_limit", "skipped"], ["permissions", "passed"], ["user_relation", "failed"],
        ["token_user", "skipped"], ["organization_relation", "skipped"], ["customer", "skipped"]]
    assert "relation_status=pending" in table[6] and "subject_id=u-pending" in table[6]
    as_json = run_client(world, *args, "--json")
    document = json.loads(as_json.stdout)
    assert document["partner_id"] == "acme" and document["reason"] == "user_access_denied"
    assert [step["step"] for step in document["explanation"]] == ORDER
    assert document["explanation"][5]["facts"]["relation_status"] == "pending"
    for output in (text.stdout, as_json.stdout):
        assert world.keys["acme"] not in output
    plain = json.loads(run_client(world, *args[:-1], "--json").stdout)
    assert "explanation" not in plain
