"""The token service's memory-only grant: answered from the fact cache without ever opening a unit
of work (it runs on the event loop, which must not block), and None whenever it would need one."""

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import jwt
import pytest

from service.check.caching.fact_cache import FactCache
from service.domain import opaque
from service.domain.model import OAuthClientRecord, PartnerRecord, PartnerStatus
from service.domain.oauth import ClientCredentials, OAuthError, OAuthErrorCode, TokenRequest
from service.domain.policy import parse_policy
from service.domain.rate_limit import RateLimiter
from service.tokens import new_key_encryption_key
from service.tokens.signing import KeySigner
from service.usecases.tokens import ClientAuthentication, TokenService, TokenSettings

NOW = datetime(2026, 12, 7, tzinfo=UTC)
POLICY = parse_policy({"scopes": {"user": None}, "operations": {"getUser": {"permissions": ["user:read"]}}})
SECRET = opaque.generate(opaque.CLIENT_SECRET_PREFIX)


class FakeStore:
    """A unit of work over fixed facts that counts how often it is opened."""

    def __init__(self, signing_key) -> None:
        self.opened = 0
        partner = PartnerRecord("acme", "Acme", PartnerStatus.ACTIVE, ("user:read",), (), NOW)
        clients = {"cli_plain": self._client("cli_plain", False), "cli_refresh": self._client("cli_refresh", True)}
        self.repos = SimpleNamespace(
            oauth_clients=SimpleNamespace(get=clients.get),
            partners=SimpleNamespace(get={"acme": partner}.get),
            signing_keys=SimpleNamespace(list=lambda: [signing_key], active=lambda: signing_key),
            refresh_tokens=SimpleNamespace(add_family=lambda family: None, add=lambda token: None))

    @staticmethod
    def _client(client_id: str, refresh: bool) -> OAuthClientRecord:
        return OAuthClientRecord(client_id, "acme", client_id, opaque.digest(SECRET), (), (), refresh, NOW)

    @contextmanager
    def __call__(self, *, read_only: bool = False, changes_facts: bool = True):
        self.opened += 1
        yield self.repos

    def on_write(self, listener) -> None:
        pass

    def revision(self) -> int:
        return 1


@pytest.fixture
def service():
    signer = KeySigner(new_key_encryption_key())
    store = FakeStore(signer.new_key("ES256", NOW))
    cache = FactCache(store, max_age_seconds=60)
    cache.refresh()
    failures = ClientAuthentication(RateLimiter(1, 10), RateLimiter(1, 10))
    settings = TokenSettings("https://tollgate.test", "https://api.test", timedelta(hours=1), timedelta(days=1),
                             "customer_numbers", "ES256")
    clock = SimpleNamespace(now=lambda: NOW)
    return TokenService(lambda: POLICY, store, clock, signer, verifier=None, settings=settings, clients=failures,
                        cache=cache), store


def grant(client_id: str, secret: str = SECRET) -> TokenRequest:
    return TokenRequest("client_credentials", ClientCredentials(client_id, secret))


def test_a_grant_whose_facts_are_not_in_memory_is_left_to_a_thread(service):
    tokens, store = service
    assert tokens.issue_from_memory(grant("cli_plain")) is None
    assert store.opened == 0


def test_once_its_facts_are_cached_a_grant_is_answered_without_the_store(service):
    tokens, store = service
    tokens.issue(grant("cli_plain"))  # on a thread: reads the client, partner and keys into the cache
    opened = store.opened
    issued = tokens.issue_from_memory(grant("cli_plain"))
    assert issued is not None and store.opened == opened
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert (claims["client_id"], claims["scope"], claims["iss"]) == ("cli_plain", "user:read", "https://tollgate.test")


def test_a_grant_that_writes_a_refresh_token_is_left_to_a_thread(service):
    tokens, store = service
    tokens.issue(grant("cli_refresh"))
    opened = store.opened
    assert tokens.issue_from_memory(grant("cli_refresh")) is None
    assert store.opened == opened


def test_a_wrong_secret_is_refused_from_memory_too(service):
    tokens, _ = service
    tokens.issue(grant("cli_plain"))
    with pytest.raises(OAuthError) as refused:
        tokens.issue_from_memory(grant("cli_plain", "tg_cs_wrong"))
    assert refused.value.code is OAuthErrorCode.INVALID_CLIENT


def test_other_grants_are_left_to_a_thread(service):
    tokens, store = service
    assert tokens.issue_from_memory(TokenRequest("refresh_token", ClientCredentials("cli_refresh", SECRET))) is None
    assert tokens.issue_from_memory(TokenRequest("password", None)) is None
    assert store.opened == 0
