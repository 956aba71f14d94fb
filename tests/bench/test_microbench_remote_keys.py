"""Microbenchmarks of remote issuers' keys (pytest-benchmark): what a token of a remote issuer costs
Check, and what a flood of tokens with made-up kids costs while refetching cools down.

Not part of `make test` (see conftest.py): run them with

    TOLLGATE_BENCH=1 .venv/bin/python -m pytest tests/bench/test_microbench_remote_keys.py

A small migrated SQLite store; the remote issuer's keys were fetched at registration from a local
key server (so the fetch path is the real one) and the cool-down is taken before measuring, as it
is during a flood. Each round presents a token not seen before (the fact cache is cleared before
each round: the miss path, every fact read from the store), so nothing is remembered between
rounds. Compare with the same whole Check of a valid RS256 token of the same issuer.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from itertools import count

import pytest

pytest.importorskip("pytest_benchmark")

from service.check.caching.fact_cache import FactCache
from service.check.caching.facts import CachedFacts
from service.check.facts import StoreFacts
from service.check.query import CheckCall, CheckQuery
from service.check.service import CheckService
from service.domain.decide import Resource
from service.domain.model import (
    IssuerRecord,
    PartnerRecord,
    PartnerStatus,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.domain.ports import SystemClock
from service.policy_file import load_policy
from service.store import create_store
from service.tokens import TokenVerifier, new_key_encryption_key
from service.tokens.fetch import HttpKeySetFetcher
from service.usecases.remote_keys import RemoteKeyService
from tests.support.key_servers import KeyServer, good_set
from tests.support.keys import access_token_claims, generate_signing_key
from tests.support.world import EXAMPLE_POLICY

pytestmark = pytest.mark.bench

AUDIENCE = "https://api.bench.test"
ROUNDS = 300


class RemoteFacts:
    def __init__(self, store, keys: KeyServer) -> None:
        now = datetime.now(UTC)
        self.store, self.now = store, now
        self.good = good_set("bench-rsa")
        keys.json("/jwks", self.good.jwks)
        self.iss = keys.url("/")
        self.remote = RemoteKeyService(store.unit_of_work, HttpKeySetFetcher(allow_loopback_http=True), SystemClock())
        remote, jwks = self.remote.resolve(self.iss, jwks_uri=keys.url("/jwks"))
        with store.unit_of_work() as repos:
            repos.partners.add(PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read",), (), now))
            repos.issuers.add(IssuerRecord("iss_remote", self.iss, AUDIENCE, ("RS256",), jwks, None, True,
                                           "customer_numbers", now, remote=remote))
            repos.relations.insert_open(RelationRecord("rel_1", "acme", SubjectType.USER, "u-1", RelationStatus.ACTIVE,
                                                       now, now))
        verifier = TokenVerifier(key_encryption_key=new_key_encryption_key(), remote_keys=self.remote)
        self.cache = FactCache(store.unit_of_work, 100_000, max_age_seconds=3600)
        policy = load_policy(EXAMPLE_POLICY)
        self.checks = CheckService(lambda: policy, CachedFacts(StoreFacts(store.fact_reads, verifier), self.cache,
                                                               verifier), SystemClock())
        self.forger = generate_signing_key("RS256", "forger")
        self._serial = count()
        # The flood's first token takes the one refetch; the rest of the cool-down asks nobody.
        assert not self.check(self.forged()).allowed and keys.count("/jwks") == 2

    def check(self, query: CheckQuery):
        return self.checks.check(CheckCall.of(query)).decision

    def valid(self) -> CheckQuery:
        claims = access_token_claims(self.iss, AUDIENCE, "acme", scope="user:read", lifetime=3600,
                                     jti=f"jti-{next(self._serial)}")
        return CheckQuery(authorization=f"Bearer {self.good.signer.sign(claims)}", operation="getUser",
                          resource=Resource(user_id="u-1"))

    def forged(self) -> CheckQuery:
        claims = access_token_claims(self.iss, AUDIENCE, "acme", scope="user:read", lifetime=3600)
        token = self.forger.sign(claims, headers={"kid": secrets.token_urlsafe(12)})
        return CheckQuery(authorization=f"Bearer {token}", operation="getUser", resource=Resource(user_id="u-1"))


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    store = create_store(f"sqlite:///{tmp_path_factory.mktemp('bench-remote') / 'tollgate.db'}")
    store.migrate()
    with KeyServer() as keys:
        yield RemoteFacts(store, keys)
    store.dispose()


def _each_round_new(benchmark, facts: RemoteFacts, make):
    queries: list[CheckQuery] = []

    def setup():
        facts.cache.clear()
        queries.append(make())
        return (queries[-1],), {}

    return benchmark.pedantic(facts.check, setup=setup, rounds=ROUNDS, warmup_rounds=5)


def test_check_remote_issuer_token_miss(benchmark, facts):
    """A valid token of the remote issuer, every fact read from the store: as any RS256 token."""
    assert _each_round_new(benchmark, facts, facts.valid).allowed


def test_check_forged_kid_during_cool_down_miss(benchmark, facts):
    """A token naming a kid nobody published, during the cool-down: refused before any signature
    check, with no fetch (the key server's count stays put)."""
    decision = _each_round_new(benchmark, facts, facts.forged)
    assert not decision.allowed and decision.reason.value == "invalid_token"
