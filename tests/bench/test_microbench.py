"""Microbenchmarks of one Check's steps, on a cache hit and on a miss (pytest-benchmark).

Not part of `make test` (see conftest.py): run them with

    TOLLGATE_BENCH=1 .venv/bin/python -m pytest tests/bench

The store is a small migrated SQLite file seeded through the repositories. "hit": the fact cache
(`FactCache.facts`) already holds every record the step reads; "miss": the cache is cleared before
each round, so the step reads the store (one read-only unit of work per record). The whole
`CheckService.check` on a cache hit is what the handler spends deciding, the gRPC stack aside
(target: at most 30 µs).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

pytest.importorskip("pytest_benchmark")

from service.check.caching.fact_cache import FactCache
from service.check.caching.facts import CachedFacts
from service.check.caching.remembering import RememberingChecker
from service.check.caching.revision_memo import RevisionMemo
from service.check.facts import StoreFacts
from service.check.limits import CheckLimits
from service.check.query import CheckCall, CheckQuery
from service.check.service import CheckService
from service.domain import opaque
from service.domain.credentials import PresentedCredential, PresentedKind
from service.domain.decide import CheckInput, Resource, decide, effective_grants, plan_check
from service.domain.model import (
    ApiKeyRecord,
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
from service.tokens import TokenVerifier
from tests.support.keys import access_token_claims, generate_signing_key, jwks
from tests.support.world import EXAMPLE_POLICY

pytestmark = pytest.mark.bench

AUDIENCE = "https://api.bench.test"
PARTNER = "acme"
USER = "u-1"
ORGANIZATION = "o-1"
ISSUERS = {"RS256": "https://rsa.bench.test", "ES256": "https://ec.bench.test"}
MISS_ROUNDS = 300


class Facts:
    """The seeded store, the verifier, a warm fact cache and the credentials."""

    def __init__(self, store, now: datetime) -> None:
        self.store = store
        self.policy = load_policy(EXAMPLE_POLICY)
        self.verifier = TokenVerifier(key_encryption_key=None)
        # A long max age: no refresh thread runs here, and a hit must stay a hit.
        self.cache = FactCache(store.unit_of_work, 100_000, max_age_seconds=3600, fact_reads=store.fact_reads)
        self.cache.refresh()
        self.now = now
        self.api_key = opaque.generate(opaque.API_KEY_PREFIX)
        self.signers = {alg: generate_signing_key(alg, f"micro-{alg}") for alg in ISSUERS}
        with store.unit_of_work() as repos:
            repos.partners.add(PartnerRecord(PARTNER, "Acme", PartnerStatus.ACTIVE,
                                             ("user:read", "organization:read", "court-booking:write"), (), now))
            repos.api_keys.add(ApiKeyRecord("key_1", PARTNER, opaque.digest(self.api_key), "micro", (), (), (), now))
            for alg, iss in ISSUERS.items():
                repos.issuers.add(IssuerRecord(f"iss_{alg}", iss, AUDIENCE, (alg,), jwks(self.signers[alg]), None,
                                               True, "customer_numbers", now))
            repos.relations.insert_open(RelationRecord("rel_1", PARTNER, SubjectType.USER, USER,
                                                       RelationStatus.ACTIVE, now, now))
            repos.relations.insert_open(RelationRecord("rel_2", PARTNER, SubjectType.ORGANIZATION, ORGANIZATION,
                                                       RelationStatus.ACTIVE, now, now))
        self.tokens = {alg: self.signers[alg].sign(access_token_claims(
            ISSUERS[alg], AUDIENCE, PARTNER, scope="user:read organization:read", lifetime=3600, now=now))
            for alg in ISSUERS}
        self.checks = CheckService(lambda: self.policy, CachedFacts(StoreFacts(store.fact_reads, self.verifier),
                                                                    self.cache, self.verifier), SystemClock())
        # As the server stacks it: with the decision memo (identical repeated checks recalled).
        self.remembering = RememberingChecker(self.checks, self.cache, lambda: self.policy, SystemClock(),
                                              CheckLimits())

    def presented(self, kind: str) -> PresentedCredential:
        if kind == "api_key":
            return PresentedCredential(PresentedKind.API_KEY, self.api_key)
        return PresentedCredential(PresentedKind.JWT, self.tokens[kind])


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    store = create_store(f"sqlite:///{tmp_path_factory.mktemp('bench') / 'tollgate.db'}")
    store.migrate()
    yield Facts(store, datetime.now(UTC))
    store.dispose()


def _hit(benchmark, facts: Facts, action):
    facts.cache.clear()
    action()  # fills the cache
    return benchmark(action)


def _miss(benchmark, facts: Facts, action):
    return benchmark.pedantic(action, setup=facts.cache.clear, rounds=MISS_ROUNDS, warmup_rounds=5)


# -- credential verification (TokenVerifier.verify on the cached reader) --------------------------

@pytest.mark.parametrize("kind", ["api_key", "RS256", "ES256"])
def test_verify_credential_hit(benchmark, facts, kind):
    presented = facts.presented(kind)
    credential = _hit(benchmark, facts, lambda: facts.verifier.verify(presented, facts.cache.facts, facts.now))
    assert credential.principal.partner_id == PARTNER


@pytest.mark.parametrize("kind", ["api_key", "RS256", "ES256"])
def test_verify_credential_miss(benchmark, facts, kind):
    presented = facts.presented(kind)
    credential = _miss(benchmark, facts, lambda: facts.verifier.verify(presented, facts.cache.facts, facts.now))
    assert credential.principal.partner_id == PARTNER


@pytest.mark.parametrize("kind", ["api_key", "RS256"])
def test_cached_credential_hit(benchmark, facts, kind):
    """FactCache.credential: the verified credential by its token's digest, as Check uses it (a
    JWT's signature is then not verified again)."""
    presented = facts.presented(kind)

    def verify():
        return facts.verifier.verify(presented, facts.cache.facts, facts.now)

    credential = _hit(benchmark, facts, lambda: facts.cache.credential(presented, facts.now, verify))
    assert credential.principal.partner_id == PARTNER


# -- the pure decision -------------------------------------------------------------------------

def test_decide(benchmark, facts):
    credential = facts.verifier.verify(facts.presented("RS256"), facts.cache.facts, facts.now)
    plan = plan_check(facts.policy, "getUser", [], Resource(user_id=USER))
    check_input = CheckInput(plan, credential, effective_grants(facts.policy, credential),
                             frozenset({SubjectType.USER}), facts.policy.scope_names)
    decision = benchmark(decide, check_input)
    assert decision.allowed


def test_plan_check(benchmark, facts):
    """What Check computes before decide(): the plan of the operation from the policy."""
    plan = benchmark(plan_check, facts.policy, "getUser", [], Resource(user_id=USER))
    assert plan.known


def test_effective_grants(benchmark, facts):
    """... and the credential's effective grants (its partner's, narrowed by the token's scope)."""
    credential = facts.verifier.verify(facts.presented("RS256"), facts.cache.facts, facts.now)
    grants = benchmark(effective_grants, facts.policy, credential)
    assert grants


# -- relation lookup ---------------------------------------------------------------------------

def test_relation_lookup_hit(benchmark, facts):
    active = _hit(benchmark, facts, lambda: facts.cache.facts.relations.is_active(PARTNER, SubjectType.USER, USER, facts.now))
    assert active


def test_relation_lookup_miss(benchmark, facts):
    active = _miss(benchmark, facts,
                   lambda: facts.cache.facts.relations.is_active(PARTNER, SubjectType.USER, USER, facts.now))
    assert active


# -- the whole use case ------------------------------------------------------------------------

QUERIES = {
    "api_key-createCourtBooking": lambda f: CheckQuery(api_key=f.api_key, operation="createCourtBooking"),
    "RS256-getUser": lambda f: CheckQuery(authorization=f"Bearer {f.tokens['RS256']}", operation="getUser",
                                          resource=Resource(user_id=USER)),
    "ES256-getOrganization": lambda f: CheckQuery(authorization=f"Bearer {f.tokens['ES256']}",
                                                  operation="getOrganization",
                                                  resource=Resource(organization_id=ORGANIZATION)),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_check_hit(benchmark, facts, name):
    """CheckService.check with every fact cached: the handler's decision cost (target ≤ 30 µs)."""
    call = CheckCall.of(QUERIES[name](facts))
    checked = _hit(benchmark, facts, lambda: facts.checks.check(call))
    assert checked.decision.allowed


@pytest.mark.parametrize("name", list(QUERIES))
def test_check_recalled(benchmark, facts, name):
    """RememberingChecker.check of a request an identical one was decided for (the decision memo's
    hit: the request's bytes hashed and looked up, the query never decoded)."""
    query = QUERIES[name](facts)
    call = CheckCall(lambda: query, name.encode())
    facts.remembering.check(call)
    checked = benchmark(lambda: facts.remembering.check(call))
    assert checked.recalled and checked.decision.allowed


@pytest.mark.parametrize("name", list(QUERIES))
def test_check_cache_off(benchmark, facts, name):
    """CheckService.check as a server with TOLLGATE_CACHE_MAX_ENTRIES=0 runs it (the miss path):
    the signature verified and the store read every time (its revision, the API key, the
    relation), only partners, issuers and the revoked-token sets kept per revision."""
    checks = CheckService(lambda: facts.policy, StoreFacts(RevisionMemo(facts.store.fact_reads), facts.verifier),
                          SystemClock())
    call = CheckCall.of(QUERIES[name](facts))
    checks.check(call)
    checked = benchmark(lambda: checks.check(call))
    assert checked.decision.allowed


@pytest.mark.parametrize("name", list(QUERIES))
def test_check_miss(benchmark, facts, name):
    """CheckService.check with an empty cache: verification and every fact read from the store."""
    call = CheckCall.of(QUERIES[name](facts))
    checked = _miss(benchmark, facts, lambda: facts.checks.check(call))
    assert checked.decision.allowed



# -- the servicers: transport, use case and telemetry, as a gRPC thread runs them ---------------

class _Context:
    """The two things the servicers ask of a grpc.ServicerContext on the way to a decision."""

    def time_remaining(self):
        return None

    def invocation_metadata(self):
        return ()

    def peer(self):
        return "ipv4:127.0.0.1:50000"


def _servicer_requests(f: Facts) -> dict:
    from envoy.service.auth.v3 import external_auth_pb2  # noqa: F401 - registers the messages
    from tollgate.v1 import authorization_pb2

    from tests.support.envoy import ext_authz_request

    return {
        "native-api_key": authorization_pb2.CheckRequest(api_key=f.api_key, operation="createCourtBooking"),
        "native-RS256": authorization_pb2.CheckRequest(authorization=f"Bearer {f.tokens['RS256']}",
                                                       operation="getUser",
                                                       resource=authorization_pb2.Resource(user_id=USER)),
        "ext_authz-api_key": ext_authz_request("POST", "/v1/court-bookings", {"x-api-key": f.api_key}),
        "ext_authz-RS256": ext_authz_request("GET", f"/v1/users/{USER}",
                                             {"authorization": f"Bearer {f.tokens['RS256']}"}),
    }


@pytest.mark.parametrize("memo", ["memo", "no-memo"])
@pytest.mark.parametrize("name", ["native-api_key", "native-RS256", "ext_authz-api_key", "ext_authz-RS256"])
def test_servicer_check_hit(benchmark, facts, name, memo):
    """The handler's whole share of a cached Check: the request's bytes to the response's (native
    Check and ext_authz take and return bytes), the servicer in between (query, decision, decision id, metrics, response); with the decision memo (as served; native Check recalls the decision of
    an identical request) and without. Compare with bench/cpu_per_check.py's server CPU per check."""
    from envoy.service.auth.v3 import external_auth_pb2
    from tollgate.v1 import authorization_pb2

    from service.telemetry import Telemetry
    from service.transport.authorization import AuthorizationServicer
    from service.transport.ext_authz import ExtAuthzServicer

    telemetry = Telemetry()
    checks = facts.remembering if memo == "memo" else facts.checks
    # As the server builds them with the failed-credential limit off (the default).
    servicer = (AuthorizationServicer(checks, "bench", telemetry, client_addresses=False) if name.startswith("native")
                else ExtAuthzServicer(checks, lambda: facts.policy, "bench", telemetry, client_addresses=False,
                                      names_requests=memo == "memo"))
    request = _servicer_requests(facts)[name]
    raw, context = request.SerializeToString(), _Context()

    def call() -> bytes:  # bytes in and out (service/transport/decoding.py takes_bytes)
        return servicer.Check(raw, context)

    if name.startswith("native"):
        assert authorization_pb2.CheckResponse.FromString(_hit(benchmark, facts, call)).allowed
        return
    assert external_auth_pb2.CheckResponse.FromString(_hit(benchmark, facts, call)).HasField("ok_response")
