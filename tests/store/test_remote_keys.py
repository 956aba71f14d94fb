"""RemoteKeyService on a real store (SQLite and PostgreSQL) with a fake fetcher: the schedule, the
backoff, the single flight and cool-down of refetches, and the claims that keep fetching to one
process. The real fetcher against real servers is tested in tests/integration/test_remote_issuers.py."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.errors import KeyFetchFailed
from service.domain.model import IssuerRecord, RemoteKeys
from service.domain.ports import FetchedKeySet
from service.usecases.remote_keys import RemoteKeyService, RemoteKeySettings
from tests.support.clock import MovableClock

ISS = "https://idp.test"
JWKS_URI = "https://idp.test/jwks"
T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
SETTINGS = RemoteKeySettings(min_refresh=timedelta(minutes=5), max_refresh=timedelta(hours=24),
                             default_refresh=timedelta(hours=1), refetch_cooldown=timedelta(seconds=30),
                             first_retry=timedelta(seconds=5), fetch_lease=timedelta(seconds=15))


def key_set(*kids: str) -> dict:
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": kid}
                     for kid in kids]}


class FakeFetcher:
    """domain.ports.KeySetFetcher: hands out what the test sets, counts calls, may block."""

    def __init__(self) -> None:
        self.keys: dict = key_set("k1")
        self.max_age: float | None = None
        self.failure: KeyFetchFailed | None = None
        self.fetches = 0
        self.gate: threading.Event | None = None

    def check_url(self, url: str) -> None:
        if not url.startswith("https://"):
            raise KeyFetchFailed("not https", outcome="url_refused")

    def discover(self, discovery_url: str, issuer: str) -> str:
        return JWKS_URI

    def fetch(self, jwks_uri: str) -> FetchedKeySet:
        self.fetches += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.failure is not None:
            raise self.failure
        return FetchedKeySet(self.keys, self.max_age)


@pytest.fixture
def world(store):
    fetcher, clock, outcomes = FakeFetcher(), MovableClock(T0), []
    service = RemoteKeyService(store.unit_of_work, fetcher, clock, SETTINGS,
                               observe=lambda issuer, outcome: outcomes.append(outcome))
    remote, jwks = service.resolve(ISS, jwks_uri=JWKS_URI)
    with store.unit_of_work() as repos:
        repos.issuers.add(IssuerRecord("iss_r", ISS, "aud", ("EdDSA",), jwks, None, True, "customer_numbers", T0,
                                       remote=remote))
    return store, service, fetcher, clock, outcomes


def stored(store) -> IssuerRecord:
    with store.unit_of_work(read_only=True) as repos:
        return repos.issuers.get("iss_r")


def test_registration_fetches_once_and_schedules_by_the_default(world):
    store, _, fetcher, _, outcomes = world
    issuer = stored(store)
    assert fetcher.fetches == 1 and outcomes == ["ok"]
    assert issuer.jwks == key_set("k1")
    assert issuer.remote == RemoteKeys(JWKS_URI, None, fetched_at=T0, refresh_at=T0 + timedelta(hours=1))


@pytest.mark.parametrize("max_age, expected", [(30, timedelta(minutes=5)), (7200, timedelta(hours=2)),
                                               (10**9, timedelta(hours=24))])
def test_cache_control_is_honoured_within_the_bounds(world, max_age, expected):
    store, service, fetcher, clock, _ = world
    fetcher.max_age = max_age
    clock.advance(3600)
    service.refresh_due()
    assert stored(store).remote.refresh_at == clock.now() + expected


def test_nothing_is_fetched_before_the_refresh_time(world):
    _store, service, fetcher, clock, _ = world
    clock.advance(3599)
    service.refresh_due()
    assert fetcher.fetches == 1


def test_a_failed_refresh_keeps_the_keys_and_backs_off_up_to_the_floor(world):
    store, service, fetcher, clock, outcomes = world
    fetcher.failure = KeyFetchFailed("the JWK Set answered HTTP 503", outcome="http_error")
    clock.advance(3600)
    delays = []
    for _ in range(8):
        service.refresh_due()
        issuer = stored(store)
        delays.append((issuer.remote.refresh_at - clock.now()).total_seconds())
        clock.advance(delays[-1])
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    assert issuer.jwks == key_set("k1")
    assert (issuer.remote.error, issuer.remote.failures) == ("the JWK Set answered HTTP 503", 8)
    assert outcomes.count("http_error") == 8
    fetcher.failure, fetcher.keys = None, key_set("k2")
    service.refresh_due()
    recovered = stored(store)
    assert recovered.jwks == key_set("k2") and recovered.remote.failures == 0
    assert recovered.remote.fetched_at == clock.now()


def test_only_a_change_of_keys_advances_the_store_revision(world):
    store, service, fetcher, clock, _ = world
    before = store.unit_of_work.revision()
    clock.advance(3600)
    service.refresh_due()
    assert store.unit_of_work.revision() == before  # same keys: caches keep what they verified
    fetcher.keys = key_set("k2")
    clock.advance(3600)
    service.refresh_due()
    assert store.unit_of_work.revision() == before + 1


def test_a_process_holding_the_claim_keeps_the_others_from_fetching(world):
    store, service, fetcher, clock, _ = world
    clock.advance(3600)
    with store.unit_of_work(changes_facts=False) as repos:
        assert repos.issuers.claim_fetch("iss_r", clock.now(), clock.now() + timedelta(seconds=15))
    service.refresh_due()
    assert fetcher.fetches == 1
    clock.advance(15)  # the holder died: its claim runs out
    service.refresh_due()
    assert fetcher.fetches == 2


def test_an_unknown_kid_refetches_once_per_cool_down(world):
    store, service, fetcher, _clock, _ = world
    fetcher.keys = key_set("k1", "k2")
    issuer = stored(store)
    assert service.fresher_keys(issuer) == key_set("k1", "k2")
    assert stored(store).jwks == key_set("k1", "k2")
    for _ in range(100):
        assert service.fresher_keys(issuer) is None  # cooling down: nobody is asked
    assert fetcher.fetches == 2


def test_concurrent_unknown_kids_share_one_fetch(world):
    store, service, fetcher, _clock, _ = world
    fetcher.keys, fetcher.gate = key_set("k1", "k2"), threading.Event()
    issuer = stored(store)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(service.fresher_keys(issuer))) for _ in range(20)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while fetcher.fetches < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # let the others reach the flight
    fetcher.gate.set()
    for thread in threads:
        thread.join(10)
    assert fetcher.fetches == 2  # registration + one refetch
    assert results.count(key_set("k1", "k2")) >= 1 and len(results) == 20


def test_another_process_within_the_cool_down_hands_over_what_it_stored(world, store):
    _, first, fetcher, clock, _ = world
    second = RemoteKeyService(store.unit_of_work, fetcher, clock, SETTINGS)
    issuer = stored(store)
    fetcher.keys = key_set("k1", "k2")
    assert first.fresher_keys(issuer) == key_set("k1", "k2")
    # The second process has the old record cached; the store's claim is taken, so it reads instead.
    assert second.fresher_keys(issuer) == key_set("k1", "k2")
    assert fetcher.fetches == 2


def test_a_failed_refetch_answers_no_newer_keys_and_is_recorded(world):
    store, service, fetcher, _, outcomes = world
    fetcher.failure = KeyFetchFailed("timed out", outcome="timeout")
    assert service.fresher_keys(stored(store)) is None
    issuer = stored(store)
    assert issuer.jwks == key_set("k1") and issuer.remote.error == "timed out" and outcomes[-1] == "timeout"


def test_the_age_of_each_issuers_keys_is_reported(world):
    _, service, _, clock, _ = world
    assert service.key_ages() == {}
    clock.advance(42)
    service.refresh_due()
    assert service.key_ages() == {ISS: 42.0}
