"""Issuers whose keys are fetched: a real OpenID provider (oidc-provider, npm) registered by its
discovery URL, and hostile key servers the tests own, against a real server on SQLite and
PostgreSQL. The world's clock is moved by hand, so "the next refresh" happens when a test says."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tollgate.v1 import admin_pb2 as pb

from service.config import load_settings
from service.server import build_app
from tests.integration.test_admin import Admin, seed_admin
from tests.integration.test_cli import Cli, clean_env
from tests.support.certs import CertificateAuthority
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.grpc_errors import expect_error
from tests.support.key_servers import (
    KeyServer,
    discovery_document,
    duplicate_kid_set,
    ec_claiming_rs256_set,
    encryption_key_set,
    good_set,
    hmac_set,
    private_members_set,
    weak_rsa_set,
)
from tests.support.keys import access_token_claims, generate_signing_key
from tests.support.oidc import AUDIENCE, OidcProvider, provider_key
from tests.support.processes import free_port
from tests.support.world import start_world, stop_world

ACME_SECRET = "acme-secret-0123456789abcdef"
COOLDOWN = 30
TIMEOUT = 2.0
# Loopback HTTP allowed (the provider runs on 127.0.0.1); refreshes looked for every 0.25 s.
SETTINGS = {"jwks_allow_loopback_http": True, "jwks_min_refresh_seconds": 1.0,
            "jwks_refetch_cooldown_seconds": float(COOLDOWN), "jwks_timeout_seconds": TIMEOUT}


@pytest.fixture
def world(database_url, tmp_path):
    started = start_world(database_url, tmp_path, metrics_port=free_port(), **SETTINGS)
    yield started
    stop_world(started)


@pytest.fixture
def admin(world):
    return Admin(world, seed_admin(world))


@pytest.fixture
def idp():
    # Tokens outlive the hour the tests move the clock by to make a refresh due.
    with OidcProvider(token_ttl=3 * 3600) as provider:
        provider.start([provider_key("RS256", "idp-a")])
        yield provider


def register(admin, iss: str, **source) -> pb.Issuer:
    return admin.RegisterIssuer(pb.RegisterIssuerRequest(issuer=iss, audience=AUDIENCE, algorithms=["RS256"],
                                                         **source)).issuer


def issuer_named(admin, iss: str) -> pb.Issuer:
    return next(i for i in admin.ListIssuers(pb.ListIssuersRequest()).issuers if i.issuer == iss)


def wait_for(condition, what: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def next_refresh(world, admin, iss: str, advance: float = 3601) -> pb.Issuer:
    """Moves the clock past the refresh time and waits for the background refresher's attempt."""
    before = issuer_named(admin, iss).remote
    world.clock.advance(advance)
    return wait_for(lambda: (lambda now: now if (now.remote.last_fetch_time != before.last_fetch_time
                                                 or now.remote.last_error_time != before.last_error_time) else None)(
        issuer_named(admin, iss)), "the next refresh")


def check_user(world, token: str):
    return world.check("getUser", authorization=f"Bearer {token}", user_id="u-active")


def scrape(world) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{world.app.metrics_port}/metrics", timeout=10) as response:
        return response.read().decode()


# -- a real provider ---------------------------------------------------------------------------


def test_a_provider_registered_by_discovery_is_trusted_by_check_and_ext_authz(world, admin, idp):
    issuer = register(admin, idp.issuer, discovery_url=idp.discovery_url)
    assert issuer.key_source == pb.ISSUER_KEY_SOURCE_DISCOVERY and list(issuer.key_ids) == ["idp-a"]
    assert (issuer.remote.jwks_uri, issuer.remote.discovery_url) == (idp.jwks_uri, idp.discovery_url)
    assert issuer.remote.HasField("last_fetch_time") and not issuer.remote.last_error
    assert idp.stats()["discovery"] == 1 and idp.stats()["jwks"] == 1

    token = idp.token("acme", ACME_SECRET, scope="user:read")
    allowed = check_user(world, token)
    assert allowed.allowed and allowed.principal.partner_id == "acme", allowed
    envoy = ext_authz_stub(world.channel).Check(
        ext_authz_request("GET", "/v1/users/u-active", {"authorization": f"Bearer {token}"}), timeout=10)
    assert envoy.status.code == code_pb2.OK and envoy.HasField("ok_response")
    # The token's scope narrows: user:read does not reach updateUser.
    assert world.check("updateUser", authorization=f"Bearer {token}", user_id="u-active").reason == \
        "insufficient_scope"
    assert idp.stats()["jwks"] == 1  # verifying needed no further fetch


def test_discovery_must_name_the_registered_issuer_exactly(world, admin, idp):
    failure = expect_error(register, admin, idp.issuer + "/", discovery_url=idp.discovery_url)
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "key_fetch_failed"
    assert "names" in failure.message and idp.issuer in failure.message
    assert all(i.issuer != idp.issuer + "/" for i in admin.ListIssuers(pb.ListIssuersRequest()).issuers)


def test_a_rotation_at_the_provider_needs_nobody(world, admin, idp):
    register(admin, idp.issuer, discovery_url=idp.discovery_url)
    old_token = idp.token("acme", ACME_SECRET)
    assert check_user(world, old_token).allowed

    idp.restart([provider_key("RS256", "idp-b"), provider_key("RS256", "idp-a")])  # b signs, a still published
    new_token = idp.token("acme", ACME_SECRET)
    assert check_user(world, new_token).allowed  # after one refetch
    assert idp.stats()["jwks"] == 1
    assert list(issuer_named(admin, idp.issuer).key_ids) == ["idp-b", "idp-a"]

    idp.restart([provider_key("RS256", "idp-b")])  # a removed
    assert check_user(world, old_token).allowed  # until the next fetch, a is still known
    refreshed = next_refresh(world, admin, idp.issuer)
    assert list(refreshed.key_ids) == ["idp-b"] and refreshed.remote.consecutive_failures == 0
    refused = check_user(world, old_token)
    assert not refused.allowed and refused.reason == "invalid_token"
    assert check_user(world, new_token).allowed


def test_while_the_provider_is_down_cached_keys_keep_working(world, admin, idp, database_url, tmp_path):
    register(admin, idp.issuer, discovery_url=idp.discovery_url)
    token = idp.token("acme", ACME_SECRET)
    idp.stop()

    failed = next_refresh(world, admin, idp.issuer)
    assert failed.remote.consecutive_failures >= 1 and "could not be fetched" in failed.remote.last_error
    assert check_user(world, token).allowed
    health = health_pb2_grpc.HealthStub(world.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    metrics = scrape(world)
    assert f'tollgate_jwks_fetches_total{{issuer="{idp.issuer}",outcome="connect"}}' in metrics
    assert f'tollgate_jwks_age_seconds{{issuer="{idp.issuer}"}}' in metrics
    listed = Cli(database_url, tmp_path / "cli").ok("issuer", "list").json["issuers"]
    shown = next(i for i in listed if i["issuer"] == idp.issuer)
    assert shown["failures_in_a_row"] >= 1 and "could not be fetched" in shown["last_error"]
    assert shown["key_ids"] == ["idp-a"] and shown["last_fetch"]

    idp.start([provider_key("RS256", "idp-a")])
    recovered = next_refresh(world, admin, idp.issuer, advance=400)  # past the backoff
    assert recovered.remote.consecutive_failures == 0 and list(recovered.key_ids) == ["idp-a"]
    assert f'tollgate_jwks_fetches_total{{issuer="{idp.issuer}",outcome="ok"}}' in scrape(world)


def forged_kid_token(iss: str) -> str:
    """Right issuer, audience and alg, a kid nobody published, and a key the provider never had."""
    signer = generate_signing_key("RS256", "forger")
    claims = access_token_claims(iss, AUDIENCE, "acme")
    return signer.sign(claims, headers={"kid": secrets.token_urlsafe(12)})


def test_a_burst_of_unknown_kids_costs_one_fetch_per_cool_down(world, admin, idp):
    register(admin, idp.issuer, discovery_url=idp.discovery_url)
    idp.reset_stats()
    tokens = [forged_kid_token(idp.issuer) for _ in range(1000)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda token: check_user(world, token), tokens))
    assert all(not a.allowed and a.reason == "invalid_token" for a in answers)
    assert idp.stats()["jwks"] == 1

    world.clock.advance(COOLDOWN)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda token: check_user(world, token), tokens[:200]))
    assert all(a.reason == "invalid_token" for a in answers)
    assert idp.stats()["jwks"] == 2
    assert check_user(world, idp.token("acme", ACME_SECRET)).allowed  # the real key is unaffected


def test_replicas_share_one_fetch(world, admin, idp, database_url, tmp_path):
    """A second server on the same store (another replica) with the same clock: each refresh and
    each cool-down costs one fetch between them, and a rotation seen by one is used by both."""
    register(admin, idp.issuer, discovery_url=idp.discovery_url)
    config = load_settings(environ={}, host="127.0.0.1", port=0, database_url=database_url,
                           data_dir=tmp_path / "replica", http_port=0, metrics_port=0,
                           key_encryption_key=world.app.settings.key_encryption_key, **SETTINGS)
    replica = build_app(config, clock=world.clock)
    replica.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{replica.port}")
        idp.reset_stats()
        for _ in range(3):
            next_refresh(world, admin, idp.issuer)
            time.sleep(0.6)  # both refreshers have looked at least twice
        assert idp.stats()["jwks"] == 3

        idp.restart([provider_key("RS256", "idp-b"), provider_key("RS256", "idp-a")])
        token = idp.token("acme", ACME_SECRET)
        from tests.support.world import World
        other = World(replica, world.clock, channel)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: (world if n % 2 else other).check(
                "getUser", authorization=f"Bearer {token}", user_id="u-active"), range(40)))
        assert idp.stats()["jwks"] == 1
        assert answers[0].allowed or answers[1].allowed
        wait_for(lambda: other.check("getUser", authorization=f"Bearer {token}", user_id="u-active").allowed,
                 "the other replica to see the new key", 5)
        channel.close()
    finally:
        replica.stop(grace=0)


# -- hostile key servers -----------------------------------------------------------------------


@pytest.fixture
def keys():
    with KeyServer() as server:
        yield server


@pytest.fixture
def good():
    return good_set("good-1")


@pytest.fixture
def registered(world, admin, keys, good):
    """An issuer registered by jwks_uri on the test's key server, and a token it accepts."""
    keys.json("/jwks", good.jwks)
    iss = keys.url("/")
    issuer = register(admin, iss, jwks_uri=keys.url("/jwks"))
    assert issuer.key_source == pb.ISSUER_KEY_SOURCE_JWKS_URI and list(issuer.key_ids) == ["good-1"]
    token = good.signer.sign(access_token_claims(iss, AUDIENCE, "acme", lifetime=3 * 3600))
    assert check_user(world, token).allowed
    return iss, token


def refused_refresh(admin, iss: str):
    return expect_error(admin.RefreshIssuerKeys, pb.RefreshIssuerKeysRequest(issuer=iss))


HOSTILE = {
    "a huge body": (lambda keys, other: keys.huge("/jwks"), "larger than 262144 bytes"),
    "a huge chunked body": (lambda keys, other: keys.huge("/jwks", content_length=False), "larger than"),
    "a gzip bomb": (lambda keys, other: keys.gzip_bomb("/jwks"), "larger than"),
    "a slow body": (lambda keys, other: keys.slow("/jwks", interval=0.5), "did not arrive within 2 s"),
    "no answer": (lambda keys, other: keys.stall("/jwks"), "did not arrive within 2 s"),
    "a hang-up": (lambda keys, other: keys.hang_up("/jwks"), "could not be fetched"),
    "a redirect to another host": (lambda keys, other: keys.redirect("/jwks", other.url("/jwks")), "another origin"),
    "a redirect to another name": (lambda keys, other: keys.redirect("/jwks", keys.url("/jwks2", host="localhost")),
                                   "another origin"),
    "HTTP 500": (lambda keys, other: keys.json("/jwks", {"error": "x"}, status=500), "answered HTTP 500"),
    "invalid JSON": (lambda keys, other: keys.raw("/jwks", b'{"keys": [}'), "not valid JSON"),
    "not a JWK Set": (lambda keys, other: keys.json("/jwks", ["keys"]), "not a JWK Set"),
    "an HMAC key": (lambda keys, other: keys.json("/jwks", hmac_set().jwks), "private or symmetric"),
    "private members": (lambda keys, other: keys.json("/jwks", private_members_set().jwks), "private or symmetric"),
    "duplicate kids": (lambda keys, other: keys.json("/jwks", duplicate_kid_set().jwks), "duplicate kids"),
    "only an encryption key": (lambda keys, other: keys.json("/jwks", encryption_key_set().jwks),
                               "no usable signature key (key 0 is not for signatures"),
    "an EC key claiming RS256": (lambda keys, other: keys.json("/jwks", ec_claiming_rs256_set().jwks),
                                 "alg that does not fit"),
    "a weak RSA key": (lambda keys, other: keys.json("/jwks", weak_rsa_set().jwks), "shorter than 2048 bits"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_key_server_is_refused_and_the_last_good_keys_kept(world, admin, keys, registered, case):
    iss, token = registered
    serve, expected = HOSTILE[case]
    with KeyServer() as other:
        other.json("/jwks", good_set("elsewhere").jwks)
        keys.json("/jwks2", good_set("elsewhere").jwks)
        serve(keys, other)
        started = time.monotonic()
        failure = refused_refresh(admin, iss)
        assert time.monotonic() - started < 3 * TIMEOUT  # bounded in time
        assert other.count("/jwks") == 0 and keys.count("/jwks2") == 0  # no redirect followed
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "key_fetch_failed"
    assert expected in failure.message, failure.message
    issuer = issuer_named(admin, iss)
    assert list(issuer.key_ids) == ["good-1"] and expected in issuer.remote.last_error
    assert issuer.remote.consecutive_failures == 1
    assert check_user(world, token).allowed


def test_keys_for_other_uses_are_left_out_and_a_same_host_redirect_followed(world, admin, keys, registered):
    iss, token = registered
    mixed = {"keys": [*encryption_key_set("enc-1").jwks["keys"], *good_set("good-2").jwks["keys"]]}
    keys.json("/moved", mixed, headers={"Cache-Control": "public, max-age=7200"})
    keys.redirect("/jwks", keys.url("/moved"))
    refreshed = admin.RefreshIssuerKeys(pb.RefreshIssuerKeysRequest(issuer=iss)).issuer
    assert list(refreshed.key_ids) == ["good-2"]
    remote = refreshed.remote
    assert remote.next_fetch_time.seconds - remote.last_fetch_time.seconds == 7200  # Cache-Control honoured
    assert not check_user(world, token).allowed  # good-1 was removed by the provider


def test_urls_that_are_never_fetched(world, admin, keys, database_url, tmp_path):
    keys.json("/jwks", good_set().jwks)
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/jwks", "http://example.com/jwks",
                keys.url("/jwks").replace("://", "://user:pw@")):
        failure = expect_error(register, admin, "https://idp.test", jwks_uri=url)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.reason == "url_refused", url
    assert keys.count("/jwks") == 0

    # Without TOLLGATE_JWKS_ALLOW_LOOPBACK_HTTP, not even loopback HTTP (the command line here).
    cli = Cli(database_url, tmp_path / "cli")
    refused = cli("issuer", "add", "https://idp.test", "--audience", AUDIENCE, "--alg", "RS256",
                  "--jwks-uri", keys.url("/jwks"), env=clean_env())
    assert refused.returncode == 2 and "TOLLGATE_JWKS_ALLOW_LOOPBACK_HTTP" in refused.stderr
    added = cli.ok("issuer", "add", "https://idp.test", "--audience", AUDIENCE, "--alg", "RS256",
                   "--jwks-uri", keys.url("/jwks"), env=clean_env(TOLLGATE_JWKS_ALLOW_LOOPBACK_HTTP="true")).json
    assert added["key_source"] == "jwks_uri" and added["key_ids"] == ["good-rsa"] and keys.count("/jwks") == 1


def test_a_discovery_document_pointing_elsewhere_is_refused(world, admin, keys):
    keys.json("/.well-known/openid-configuration", discovery_document(keys.url("/"), "file:///etc/passwd"))
    failure = expect_error(register, admin, keys.url("/"), discovery_url=keys.url("/.well-known/openid-configuration"))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "key_fetch_failed"
    assert "'file:///etc/passwd' is not an https:// URL" in failure.message


def test_https_with_a_private_ca(database_url, tmp_path):
    (tmp_path / "pki").mkdir()
    ca = CertificateAuthority(tmp_path / "pki")
    good = good_set("tls-1")
    with KeyServer(tls=ca.issue("keys", server=True)) as keys:
        keys.json("/jwks", good.jwks)
        untrusting = start_world(database_url, tmp_path / "a", **SETTINGS)
        try:
            failure = expect_error(register, Admin(untrusting, seed_admin(untrusting)), "https://idp.test",
                                   jwks_uri=keys.url("/jwks"))
            assert failure.reason == "key_fetch_failed" and "TOLLGATE_JWKS_CA_FILE" in failure.message
        finally:
            stop_world(untrusting)
    # A new server on another database: this one trusts the CA.
    with KeyServer(tls=ca.issue("keys2", server=True)) as keys:
        keys.json("/jwks", good.jwks)
        trusting = start_world(f"sqlite:///{tmp_path / 'b' / 't.db'}", tmp_path / "b",
                               jwks_ca_file=ca.cert, **SETTINGS)
        try:
            issuer = register(Admin(trusting, seed_admin(trusting)), "https://idp.test", jwks_uri=keys.url("/jwks"))
            assert list(issuer.key_ids) == ["tls-1"]
        finally:
            stop_world(trusting)


def test_registered_keys_cannot_be_rotated_by_hand(world, admin, registered):
    iss, _ = registered
    failure = expect_error(admin.RotateIssuerKeys, pb.RotateIssuerKeysRequest(issuer=iss,
                                                                            jwks=json.dumps(good_set().jwks)))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "remote_issuer"
