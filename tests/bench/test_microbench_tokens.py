"""Microbenchmarks of Tollgate's own tokens (pytest-benchmark): a client_credentials grant on a
fact-cache hit, and Check's side — verifying a token Tollgate issued against an external issuer's
ES256 token, cache hit and miss, and the whole `CheckService.check` with either.

Not part of `make test` (see conftest.py): run them with

    TOLLGATE_BENCH=1 .venv/bin/python -m pytest tests/bench/test_microbench_tokens.py

As in test_microbench.py: a small migrated SQLite store seeded through the repositories; "hit":
the fact cache holds every record the step reads; "miss": the cache is cleared before each round,
so each record is read from the store in its own read-only unit of work. Both tokens are ES256
with the same scope, partner and lifetime, so what differs is the issuer: a registered one (issuer
record, JWKS, revoked `jti`) or Tollgate itself (published signing keys, client, revoked `jti`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("pytest_benchmark")

from service.check.caching.fact_cache import FactCache
from service.check.caching.facts import CachedFacts
from service.check.facts import StoreFacts
from service.check.query import CheckCall, CheckQuery
from service.check.service import CheckService
from service.domain import opaque
from service.domain.credentials import PresentedCredential, PresentedKind
from service.domain.decide import Resource
from service.domain.model import (
    CredentialKind,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.domain.oauth import ClientCredentials, TokenRequest
from service.domain.ports import SystemClock
from service.domain.rate_limit import RateLimiter
from service.policy_file import load_policy
from service.store import create_store
from service.tokens import TokenVerifier, new_key_encryption_key
from service.tokens.signing import KeySigner
from service.tokens.verifier import OwnIssuer
from service.usecases.tokens import ClientAuthentication, TokenService, TokenSettings
from tests.support.keys import access_token_claims, generate_signing_key, jwks
from tests.support.world import EXAMPLE_POLICY

pytestmark = pytest.mark.bench

OWN_ISSUER = "https://tollgate.bench.test"
EXTERNAL_ISSUER = "https://ec.bench.test"
AUDIENCE = "https://api.bench.test"
PARTNER = "acme"
CLIENT = "cli_micro"
USER = "u-1"
SCOPE = "user:read"
MISS_ROUNDS = 300


class TokenFacts:
    """The seeded store, Tollgate's token service and verifier on one warm fact cache, a client
    with its secret, and one token of each issuer."""

    def __init__(self, store, now: datetime) -> None:
        self.store = store
        self.now = now
        self.policy = load_policy(EXAMPLE_POLICY)
        kek = new_key_encryption_key()
        self.verifier = TokenVerifier(key_encryption_key=kek,
                                      own_issuer=OwnIssuer(OWN_ISSUER, OWN_ISSUER, "customer_numbers"))
        # A long max age: no refresh thread runs here, and a hit must stay a hit.
        self.cache = FactCache(store.unit_of_work, 100_000, max_age_seconds=3600)
        self.secret = opaque.generate(opaque.CLIENT_SECRET_PREFIX)
        external = generate_signing_key("ES256", "micro-ES256")
        with store.unit_of_work() as repos:
            repos.partners.add(PartnerRecord(PARTNER, "Acme", PartnerStatus.ACTIVE,
                                             ("user:read", "organization:read", "court-booking:write"), (), now))
            repos.oauth_clients.add(OAuthClientRecord(CLIENT, PARTNER, "micro", opaque.digest(self.secret), (),
                                                      ("C-1",), False, now))
            repos.issuers.add(IssuerRecord("iss_ES256", EXTERNAL_ISSUER, AUDIENCE, ("ES256",), jwks(external),
                                           None, True, "customer_numbers", now))
            repos.relations.insert_open(RelationRecord("rel_1", PARTNER, SubjectType.USER, USER,
                                                       RelationStatus.ACTIVE, now, now))
        failures = RateLimiter(1.0, 10), RateLimiter(1.0, 10)
        self.tokens = TokenService(
            lambda: self.policy, store.unit_of_work, SystemClock(), KeySigner(kek), self.verifier,
            TokenSettings(issuer=OWN_ISSUER, audience=OWN_ISSUER, access_token_lifetime=timedelta(hours=1),
                          refresh_token_lifetime=timedelta(days=30), customer_claim="customer_numbers",
                          signing_algorithm="ES256"),
            ClientAuthentication(*failures), self.cache)
        self.tokens.ensure_signing_key()  # a write: the cache is refreshed after it
        self.cache.refresh()
        # What wrk sends: no scope parameter, so the token carries the client's ceiling.
        self.grant = TokenRequest("client_credentials", ClientCredentials(CLIENT, self.secret))
        issued = self.tokens.issue(TokenRequest("client_credentials", ClientCredentials(CLIENT, self.secret),
                                                scope=SCOPE))
        self.jwts = {
            "tollgate": issued.access_token,
            "external-ES256": external.sign(access_token_claims(EXTERNAL_ISSUER, AUDIENCE, PARTNER, scope=SCOPE,
                                                                lifetime=3600, now=now)),
        }
        self.checks = CheckService(lambda: self.policy, CachedFacts(StoreFacts(store.fact_reads, self.verifier),
                                                                    self.cache, self.verifier), SystemClock())

    def presented(self, issuer: str) -> PresentedCredential:
        return PresentedCredential(PresentedKind.JWT, self.jwts[issuer])

    def query(self, issuer: str) -> CheckQuery:
        return CheckQuery(authorization=f"Bearer {self.jwts[issuer]}", operation="getUser",
                          resource=Resource(user_id=USER))


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    store = create_store(f"sqlite:///{tmp_path_factory.mktemp('bench-tokens') / 'tollgate.db'}")
    store.migrate()
    yield TokenFacts(store, datetime.now(UTC))
    store.dispose()


def _hit(benchmark, facts: TokenFacts, action):
    facts.cache.clear()
    action()  # fills the cache
    return benchmark(action)


def _miss(benchmark, facts: TokenFacts, action):
    return benchmark.pedantic(action, setup=facts.cache.clear, rounds=MISS_ROUNDS, warmup_rounds=5)


# -- the token endpoint's use case -------------------------------------------------------------

def test_issue_client_credentials_hit(benchmark, facts):
    """TokenService.issue, client_credentials, every fact cached (client, partner, signing key):
    the secret's digest, the scope ceiling from the policy, the claims and the ES256 signature."""
    issued = _hit(benchmark, facts, lambda: facts.tokens.issue(facts.grant, "127.0.0.1"))
    assert issued.access_token and not issued.refresh_token


# -- Check's side: a Tollgate token against an external issuer's ---------------------------------

ISSUERS = ["tollgate", "external-ES256"]


def _expected_kind(issuer: str) -> CredentialKind:
    return CredentialKind.OAUTH_CLIENT if issuer == "tollgate" else CredentialKind.JWT


@pytest.mark.parametrize("issuer", ISSUERS)
def test_verify_token_hit(benchmark, facts, issuer):
    """TokenVerifier.verify on the cached reader: parse, ES256 verification, then the issuer's
    facts (Tollgate: published keys, client, partner, revoked jti; external: issuer, partner, jti)."""
    presented = facts.presented(issuer)
    credential = _hit(benchmark, facts, lambda: facts.verifier.verify(presented, facts.cache.facts, facts.now))
    assert credential.principal.partner_id == PARTNER and credential.principal.kind is _expected_kind(issuer)


@pytest.mark.parametrize("issuer", ISSUERS)
def test_verify_token_miss(benchmark, facts, issuer):
    presented = facts.presented(issuer)
    credential = _miss(benchmark, facts, lambda: facts.verifier.verify(presented, facts.cache.facts, facts.now))
    assert credential.principal.partner_id == PARTNER and credential.principal.kind is _expected_kind(issuer)


@pytest.mark.parametrize("issuer", ISSUERS)
def test_check_token_hit(benchmark, facts, issuer):
    """CheckService.check, getUser with the user relation, every fact cached (the verified
    credential by its token's digest included): what Check spends deciding with either token."""
    call = CheckCall.of(facts.query(issuer))
    checked = _hit(benchmark, facts, lambda: facts.checks.check(call))
    assert checked.decision.allowed


@pytest.mark.parametrize("issuer", ISSUERS)
def test_check_token_miss(benchmark, facts, issuer):
    call = CheckCall.of(facts.query(issuer))
    checked = _miss(benchmark, facts, lambda: facts.checks.check(call))
    assert checked.decision.allowed
