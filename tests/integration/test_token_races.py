"""Races of the token service through a real server on SQLite and PostgreSQL: many refreshes of one
refresh token (exactly one wins; since a second presentation of a spent token is indistinguishable
from theft, the family is then revoked, RFC 9700 section 4.14.2), revocation racing refresh, and
workers creating the first signing key at once. Every thread is released by a barrier and every
wait is bounded, so a deadlock fails the test instead of hanging it."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from tollgate.v1 import tokens_pb2 as pb
from tollgate.v1 import tokens_pb2_grpc

from service.domain.rate_limit import RateLimiter
from service.policy_file import load_policy
from service.store import create_store
from service.tokens import TokenVerifier, new_key_encryption_key
from service.tokens.signing import KeySigner
from service.usecases.tokens import ClientAuthentication, TokenService, TokenSettings
from tests.support.clock import MovableClock
from tests.support.oauth import Client, OAuthHttp, add_client, claims_of
from tests.support.races import race as racing
from tests.support.world import EXAMPLE_POLICY, World

THREADS = 12


def race(action, threads: int = THREADS) -> list:
    return racing(action, threads, timeout=90)


def refresh_over(world: World, transport: str, client: Client, token: str) -> tuple[str, dict]:
    """One refresh by HTTP or gRPC: ("ok", tokens) or (the OAuth error code, {})."""
    if transport == "http":
        with OAuthHttp(world) as http:
            response = http.refresh(client, token)
        if response.status_code == 200:
            return "ok", response.json()
        return response.json()["error"], {}
    stub = tokens_pb2_grpc.TokensStub(world.channel)
    try:
        issued = stub.IssueToken(pb.IssueTokenRequest(grant_type="refresh_token", client=client.proto(),
                                                      refresh_token=token), timeout=30)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
        return "invalid_grant", {}
    return "ok", {"access_token": issued.access_token, "refresh_token": issued.refresh_token}


def check_reason(world: World, access_token: str) -> str:
    return world.check("getUser", authorization=f"Bearer {access_token}", user_id="u-active").reason


def family_revoked(world: World, access_token: str) -> bool:
    with world.seed() as repos:
        return repos.refresh_tokens.get_family(claims_of(access_token)["rt_family"]).revoked_at is not None


@pytest.mark.parametrize("transports", [("http",), ("grpc",), ("http", "grpc")], ids=["http", "grpc", "mixed"])
def test_concurrent_refreshes_of_one_token_have_exactly_one_winner(world, transports):
    client = add_client(world, "cli_acme", refresh_tokens=True)
    with OAuthHttp(world) as http:
        issued = http.issue(client)
    assert check_reason(world, issued["access_token"]) == ""

    results = race(lambda i: refresh_over(world, transports[i % len(transports)], client, issued["refresh_token"]))

    outcomes = sorted(outcome for outcome, _ in results)
    assert outcomes == ["invalid_grant"] * (THREADS - 1) + ["ok"]
    winner = next(tokens for outcome, tokens in results if outcome == "ok")
    # The losers' presentations were reuse of a spent token: the whole family is revoked, the
    # winner's new tokens included.
    assert family_revoked(world, issued["access_token"])
    assert refresh_over(world, "http", client, winner["refresh_token"])[0] == "invalid_grant"
    for token in (winner["access_token"], issued["access_token"]):
        assert check_reason(world, token) == "token_revoked"


def test_revocation_racing_refreshes_leaves_nothing_of_the_family(world):
    client = add_client(world, "cli_acme", refresh_tokens=True)
    other = add_client(world, "cli_other")  # another client of the partner: its tokens stay
    with OAuthHttp(world) as http:
        issued = http.issue(client)
        bystander = http.issue(other)

    def act(i: int) -> tuple[str, str, dict]:
        if i % 2:
            with OAuthHttp(world) as http:
                return ("revoke", str(http.revoke(client, issued["refresh_token"]).status_code), {})
        return ("refresh", *refresh_over(world, "http", client, issued["refresh_token"]))

    results = race(act)
    assert [status for kind, status, _ in results if kind == "revoke"] == ["200"] * (THREADS // 2)
    refreshes = [(outcome, tokens) for kind, outcome, tokens in results if kind == "refresh"]
    assert {outcome for outcome, _ in refreshes} <= {"ok", "invalid_grant"}
    assert sum(outcome == "ok" for outcome, _ in refreshes) <= 1
    # Whatever the order, once the revocations have answered nothing of the family works.
    assert family_revoked(world, issued["access_token"])
    access_tokens = [issued["access_token"]] + [tokens["access_token"] for outcome, tokens in refreshes if tokens]
    for token in access_tokens:
        assert check_reason(world, token) == "token_revoked"
    for _outcome, tokens in refreshes:
        if tokens:
            assert refresh_over(world, "http", client, tokens["refresh_token"])[0] == "invalid_grant"
    with OAuthHttp(world) as http:
        # The revocation was the family's only: the client still gets tokens, and others are untouched.
        assert check_reason(world, http.issue(client)["access_token"]) == ""
    assert check_reason(world, bystander["access_token"]) == ""


def test_concurrent_revocations_of_one_access_token(world):
    client = add_client(world, "cli_acme")
    with OAuthHttp(world) as http:
        token = http.issue(client)["access_token"]
    assert check_reason(world, token) == ""

    def revoke(i: int) -> int:
        with OAuthHttp(world) as http:
            return http.revoke(client, token).status_code

    assert race(revoke) == [200] * THREADS
    assert check_reason(world, token) == "token_revoked"


# -- the first signing key ---------------------------------------------------------------------------


def token_service(store, key_encryption_key: str) -> TokenService:
    """The token use case as one worker process builds it (server.py), on the shared store."""
    policy = load_policy(EXAMPLE_POLICY)
    settings = TokenSettings(issuer="http://tollgate.test", audience="http://tollgate.test",
                             access_token_lifetime=timedelta(hours=1), refresh_token_lifetime=timedelta(days=30),
                             customer_claim="customer_numbers", signing_algorithm="ES256")
    return TokenService(lambda: policy, store.unit_of_work, MovableClock(), KeySigner(key_encryption_key),
                        TokenVerifier(key_encryption_key=key_encryption_key), settings,
                        ClientAuthentication(RateLimiter(1.0, 10), RateLimiter(1.0, 10)))


def test_workers_starting_together_make_exactly_one_signing_key(database_url):
    store = create_store(database_url, pool_size=THREADS, pool_timeout=30)
    store.migrate()
    try:
        kek = new_key_encryption_key()
        workers = [token_service(store, kek) for _ in range(THREADS)]
        keys = race(lambda i: workers[i].ensure_signing_key())
        assert len({key.kid for key in keys}) == 1
        with store.unit_of_work(read_only=True) as repos:
            stored = repos.signing_keys.list()
            assert [key.kid for key in stored] == [keys[0].kid]
            assert repos.signing_keys.active() == keys[0] == stored[0]
        # A later start finds it and makes none.
        assert token_service(store, kek).ensure_signing_key() == keys[0]
        with store.unit_of_work(read_only=True) as repos:
            assert len(repos.signing_keys.list()) == 1
    finally:
        store.dispose()
