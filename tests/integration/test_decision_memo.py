"""Decisions of repeated identical checks (service/check/caching/remembering.py) are given again only
while every fact behind them stands: on SQLite and PostgreSQL, through the real store, fact cache
and token verification; then through a real server, with the memo on and off."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from service.check.caching.fact_cache import FactCache
from service.check.caching.facts import CachedFacts
from service.check.caching.remembering import RememberingChecker
from service.check.facts import StoreFacts
from service.check.limits import CheckLimits
from service.check.query import CheckCall, CheckQuery
from service.check.service import CheckService
from service.domain import opaque
from service.domain.decide import Resource
from service.domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    PartnerRecord,
    PartnerStatus,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.domain.rate_limit import RateLimiter
from service.policy_file import load_policy
from service.store import create_store
from service.tokens import TokenVerifier
from tests.support.clock import MovableClock
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.keys import access_token_claims, generate_signing_key, jwks
from tests.support.world import EXAMPLE_POLICY, start_world, stop_world

ISSUER = "https://memo.test"
AUDIENCE = "https://api.memo.test"


class Asked:
    """The decision memo as these tests ask it. check(query, key) is a request named `key` (its
    bytes, as native Check names it); recall(key) sends that request again and gives the decision
    only when the memo answered it (None: it was decided anew)."""

    def __init__(self, checker: RememberingChecker) -> None:
        self.checker = checker
        self._queries: dict[bytes, CheckQuery] = {}

    def check(self, query: CheckQuery, key: bytes | None = None):
        if key is not None:
            self._queries[key] = query
        return self.checker.check(CheckCall(lambda: query, key)).decision

    def recall(self, key: bytes, client_address: str | None = None):
        query = self._queries.get(key, CheckQuery())
        if client_address is not None:
            query = replace(query, client_address=client_address)
        checked = self.checker.check(CheckCall(lambda: query, key))
        return checked.decision if checked.recalled else None


def stack(policy, store, cache: FactCache, clock, limits: CheckLimits, *, max_entries: int = 10_000,
          inner=lambda checker: checker) -> RememberingChecker:
    """As the server stacks Check: store facts, the fact cache, the core, the memo around it."""
    verifier = TokenVerifier(key_encryption_key=None)
    core = CheckService(policy, CachedFacts(StoreFacts(store.fact_reads, verifier), cache, verifier), clock, limits)
    return RememberingChecker(inner(core), cache, policy, clock, limits, max_entries)


@dataclass
class Setup:
    store: object
    clock: MovableClock
    cache: FactCache
    api_key: str
    signer: object
    policy: object

    def service(self, limiter: RateLimiter | None = None, failed_credentials: RateLimiter | None = None,
                **options) -> Asked:
        return Asked(stack(lambda: self.policy, self.store, self.cache, self.clock,
                           CheckLimits(limiter, failed_credentials), **options))

    def token(self, lifetime: int = 600) -> str:
        return self.signer.sign(access_token_claims(ISSUER, AUDIENCE, "acme", scope="user:read",
                                                    lifetime=lifetime, now=self.clock.now()))


@pytest.fixture
def setup(database_url):
    store = create_store(database_url)
    store.migrate()
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    now = clock.now()
    api_key = opaque.generate(opaque.API_KEY_PREFIX)
    signer = generate_signing_key("RS256", "memo-1")
    with store.unit_of_work() as repos:
        repos.partners.add(PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE,
                                         ("user:read", "court-booking:write"), (), now))
        repos.api_keys.add(ApiKeyRecord("key_1", "acme", opaque.digest(api_key), "memo", (), (), (), now))
        repos.issuers.add(IssuerRecord("iss_rs", ISSUER, AUDIENCE, ("RS256",), jwks(signer), None, True,
                                       "customer_numbers", now))
        repos.relations.insert_open(RelationRecord("rel_1", "acme", SubjectType.USER, "u-1",
                                                   RelationStatus.ACTIVE, now, now))
        repos.relations.insert_open(RelationRecord("rel_2", "acme", SubjectType.USER, "u-2", RelationStatus.ACTIVE,
                                                   now, now, expires_at=now + timedelta(seconds=100)))
    cache = FactCache(store.unit_of_work, 10_000, max_age_seconds=3600)
    cache.refresh()
    yield Setup(store, clock, cache, api_key, signer, load_policy(EXAMPLE_POLICY))
    store.dispose()


BOOKING = dict(operation="createCourtBooking")


def ask(checks: Asked, key: bytes, **query) -> tuple[object, object]:
    """(what recall() gives, what check() decides) for one request."""
    return checks.recall(key), checks.check(CheckQuery(**query), key)


def test_an_identical_check_is_answered_with_the_kept_decision(setup):
    checks = setup.service()
    recalled, first = ask(checks, b"k", api_key=setup.api_key, **BOOKING)
    assert recalled is None and first.allowed
    assert checks.recall(b"k") is first
    assert checks.recall(b"other") is None


def test_a_write_of_this_process_ends_every_kept_decision(setup):
    checks = setup.service()
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed
    with setup.store.unit_of_work() as repos:
        repos.api_keys.revoke("key_1", setup.clock.now())
    assert checks.recall(b"k") is None
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").reason.value == "token_revoked"


def test_another_replicas_write_ends_it_at_the_next_refresh(setup, database_url):
    checks = setup.service()
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed
    other = create_store(database_url)  # another replica: its writes do not reach this cache directly
    try:
        with other.unit_of_work() as repos:
            repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
    finally:
        other.dispose()
    setup.cache.refresh()  # what the refresh loop does within cache_refresh_seconds
    assert checks.recall(b"k") is None
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").reason.value == "token_revoked"


def test_nothing_is_recalled_once_the_cache_is_past_its_bound(setup):
    cache = FactCache(setup.store.unit_of_work, 100, max_age_seconds=0.05)
    cache.refresh()
    checks = Asked(stack(lambda: setup.policy, setup.store, cache, setup.clock, CheckLimits()))
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed
    assert checks.recall(b"k") is not None
    time.sleep(0.1)  # past max_age with no refresh: the store may be down
    assert checks.recall(b"k") is None


def test_a_token_past_its_expiry_is_verified_again(setup):
    checks = setup.service()
    token = setup.token(lifetime=60)
    query = dict(authorization=f"Bearer {token}", operation="getUser", resource=Resource(user_id="u-1"))
    assert checks.check(CheckQuery(**query), b"k").allowed
    setup.clock.advance(59)
    assert checks.recall(b"k") is not None
    setup.clock.advance(1)  # at exp: within the leeway, check() still allows, but from a fresh verification
    assert checks.recall(b"k") is None
    assert checks.check(CheckQuery(**query), b"k").allowed
    assert checks.recall(b"k") is None, "a credential already past its expiry is never kept"
    setup.clock.advance(31)
    assert checks.check(CheckQuery(**query), b"k").reason.value == "token_expired"


def test_a_relation_past_its_expiry_ends_the_decision(setup):
    checks = setup.service()
    query = dict(api_key=setup.api_key, operation="getUser", resource=Resource(user_id="u-2"))
    assert checks.check(CheckQuery(**query), b"k").allowed
    setup.clock.advance(99)
    assert checks.recall(b"k") is not None
    setup.clock.advance(1)
    assert checks.recall(b"k") is None
    assert checks.check(CheckQuery(**query), b"k").reason.value == "user_access_denied"


def test_denies_about_a_verified_credential_are_kept_and_rejections_are_not(setup):
    checks = setup.service()
    denied = checks.check(CheckQuery(api_key=setup.api_key, operation="getUser", resource=Resource(user_id="u-9")),
                          b"no-relation")
    assert denied.reason.value == "user_access_denied" and checks.recall(b"no-relation") is denied
    forged = setup.api_key[:-4] + ("AAAA" if not setup.api_key.endswith("AAAA") else "BBBB")
    assert not checks.check(CheckQuery(api_key=forged, **BOOKING), b"forged").allowed
    assert checks.recall(b"forged") is None


def test_a_new_policy_ends_every_kept_decision(setup):
    checks = setup.service()
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed
    setup.policy = load_policy(EXAMPLE_POLICY)  # a reload: a new object, even with the same text
    assert checks.recall(b"k") is None


def test_recalled_checks_count_against_the_partners_rate(setup):
    checks = setup.service(limiter=RateLimiter(rate=0.001, burst=3))
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed  # 1 of 3
    assert checks.recall(b"k") is not None and checks.recall(b"k") is not None  # 2 and 3
    assert checks.recall(b"k") is None, "the fourth is refused: check() answers it"
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").reason.value == "rate_limit_exceeded"


def test_a_blocked_client_address_is_not_answered_from_memory(setup):
    failures = RateLimiter(rate=0.001, burst=1)
    checks = setup.service(failed_credentials=failures)
    good = CheckQuery(api_key=setup.api_key, client_address="10.0.0.1", **BOOKING)
    assert checks.check(good, b"k").allowed
    assert checks.recall(b"k", "10.0.0.1") is not None
    assert not checks.check(CheckQuery(api_key="tg_live_forged", client_address="10.0.0.1", **BOOKING)).allowed
    assert checks.recall(b"k", "10.0.0.1") is None
    assert checks.check(good, b"k").reason.value == "rate_limit_exceeded"
    assert checks.recall(b"k", "10.0.0.2") is not None, "other addresses are not blocked"


class ChangedWhileDeciding:
    """A checker around the core across whose decision a change is committed (the cache cleared,
    as a write of this process does), once."""

    def __init__(self, core, cache: FactCache) -> None:
        self._core = core
        self._cache = cache
        self.changes = 1

    def check(self, call):
        checked = self._core.check(call)
        if self.changes:
            self.changes -= 1
            self._cache.clear()
        return checked

    def check_batch(self, batch):
        return self._core.check_batch(batch)


def test_a_decision_read_across_a_change_is_never_given(setup):
    """The memo stamps the generation read before the facts; a change committed in between moves
    the cache on, so the stamp is already old when the decision is kept."""
    checks = setup.service(inner=lambda core: ChangedWhileDeciding(core, setup.cache))
    assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), b"k").allowed
    assert checks.recall(b"k") is None
    assert checks.recall(b"k") is not None, "decided again after the change, it is kept"


def test_the_memo_is_bounded(setup):
    checks = setup.service(max_entries=3)
    for i in range(10):
        assert checks.check(CheckQuery(api_key=setup.api_key, **BOOKING), bytes([i])).allowed
    assert sum(checks.recall(bytes([i])) is not None for i in range(10)) <= 3


@pytest.mark.parametrize("memo_entries", [10_000, 0])
def test_repeated_checks_through_the_server_answer_alike(database_url, tmp_path, memo_entries):
    world = start_world(database_url, tmp_path, decision_memo_max_entries=memo_entries)
    try:
        key = world.bearer("acme")
        answers = [world.check("getUser", authorization=key, user_id="u-active") for _ in range(5)]
        assert all(a.allowed for a in answers) and len({a.decision_id for a in answers}) == 5
        first = answers[0]
        for answer in answers[1:]:
            answer.decision_id = first.decision_id
            assert answer == first
        metrics = generate_latest(world.app.telemetry.registry).decode()
        assert 'tollgate_checks_total{adapter="native",decision="allow",reason=""} 5.0' in metrics
        recalled = [line for line in metrics.splitlines() if line.startswith("tollgate_checks_recalled_total")]
        assert recalled == (['tollgate_checks_recalled_total{adapter="native"} 4.0'] if memo_entries else [])
        with world.seed() as repos:
            repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
        assert world.check("getUser", authorization=key, user_id="u-active").reason == "token_revoked"
    finally:
        stop_world(world)


def test_recalled_denials_are_logged_with_their_operation(database_url, tmp_path, caplog):
    """A recalled request is not decoded on the way to its answer, except to log a denial."""
    world = start_world(database_url, tmp_path)
    try:
        key = world.bearer("acme")
        with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
            answers = [world.check("getUser", authorization=key, user_id="u-nobody") for _ in range(3)]
        assert {a.reason for a in answers} == {"user_access_denied"}
        records = [r.fields for r in caplog.records if r.name == "tollgate.decisions"]
        assert [(r["operation"], r["reason"]) for r in records] == [("getUser", "user_access_denied")] * 3
        assert [r["decision_id"] for r in records] == [a.decision_id for a in answers]
    finally:
        stop_world(world)


def test_repeated_ext_authz_requests_are_recalled_by_their_decisive_parts(database_url, tmp_path):
    """Envoy's requests differ in their request id and per-request headers; the same credential,
    method and path are still the same question, answered from the memo until a fact changes."""
    world = start_world(database_url, tmp_path)
    try:
        stub = ext_authz_stub(world.channel)
        key = world.bearer("acme")

        def ask(request_id: str):
            request = ext_authz_request("GET", "/v1/users/u-active", {"authorization": key, "x-request-id": request_id})
            request.attributes.request.http.id = request_id
            return stub.Check(request)

        answers = [ask(f"req-{i}") for i in range(5)]
        assert all(a.HasField("ok_response") for a in answers)
        assert len({a.dynamic_metadata["decision_id"] for a in answers}) == 5
        metrics = generate_latest(world.app.telemetry.registry).decode()
        assert 'tollgate_checks_recalled_total{adapter="ext_authz"} 4.0' in metrics
        other_user = stub.Check(ext_authz_request("GET", "/v1/users/u-nobody", {"authorization": key}))
        assert other_user.denied_response.status.code == 403, "another resource is another question"
        with world.seed() as repos:
            repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
        revoked = ask("req-after")
        assert revoked.denied_response.status.code == 401
        assert revoked.dynamic_metadata["reason"] == "token_revoked"
    finally:
        stop_world(world)
