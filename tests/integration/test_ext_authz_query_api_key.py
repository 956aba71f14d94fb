"""An API key in a query parameter, through Envoy ext_authz on a real server (SQLite and
PostgreSQL): off by default, turned on by the policy globally (sidecar.api_key_query_parameter)
or per route; a header credential always wins; a repeated parameter is refused; on an allow the
parameter is listed in query_parameters_to_remove so the upstream never sees it; and the key
appears in no log line, decision log, metric, answer, header or dynamic metadata."""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.parse import quote

import pytest
from google.rpc import code_pb2

from service.domain.policy import parse_policy
from service.telemetry import JsonFormatter
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.policies import example_policy_document, with_api_key_query_parameter, write_policy
from tests.support.processes import free_port
from tests.support.world import World, start_world, stop_world

# The example policy with the setting on for every route, off on PATCH /v1/users/{userId}, and
# under another name on GET /v1/organizations/{organizationId}.
ON = with_api_key_query_parameter(example_policy_document(), "api_key", routes={
    "PATCH /v1/users/{userId}": "", "GET /v1/organizations/{organizationId}": "key"})


@pytest.fixture(scope="module")
def world(module_database_url, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    started = start_world(module_database_url, data, policy_path=write_policy(ON, data / "policy.yaml"))
    yield started
    stop_world(started)


@pytest.fixture
def policy_off(world):
    """The example policy as shipped (the setting off) for one test; the module's policy after."""
    on = world.app.policy.current()
    world.app.policy.replace(parse_policy(example_policy_document()))
    yield
    world.app.policy.replace(on)


def check(world: World, method: str, path: str, headers: dict[str, str] | None = None, extensions=None):
    return ext_authz_stub(world.channel).Check(ext_authz_request(method, path, headers, extensions), timeout=10)


def headers_of(options) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def assert_allowed(response, partner: str | None = "acme", removed: list[str] | None = None) -> None:
    assert response.HasField("ok_response"), (response.dynamic_metadata, response.denied_response.body)
    assert response.status.code == code_pb2.OK
    assert headers_of(response.ok_response.headers).get("x-tollgate-partner-id") == partner
    assert list(response.ok_response.query_parameters_to_remove) == (removed if removed is not None else ["api_key"])


def assert_denied(response, status: int, reason: str) -> str:
    """The deny's message (token errors have an OAuth-style body, access errors the API's)."""
    assert response.HasField("denied_response"), response
    assert response.denied_response.status.code == status
    assert response.dynamic_metadata["reason"] == reason
    body = json.loads(response.denied_response.body)
    if "errors" in body:
        assert body["errors"][0]["reason"] == reason
        return body["errors"][0]["message"]
    assert body.get("reason", "insufficient_scope") == reason
    return body["error_description"]


# -- on: the query parameter is the API key ----------------------------------------------------------------

def test_a_query_key_is_allowed_and_removed_for_the_upstream(world):
    response = check(world, "GET", f"/v1/users/u-active?api_key={world.keys['acme']}&other=1")
    assert_allowed(response)
    assert headers_of(response.ok_response.headers)["x-tollgate-credential-id"] == world.key_ids["acme"]
    assert response.dynamic_metadata["partner_id"] == "acme" and response.dynamic_metadata["operation"] == "getUser"


@pytest.mark.parametrize("spell", [
    lambda key: f"api_key={key}",
    lambda key: "api_key=" + quote(key, safe="").replace("_", "%5F"),  # the value percent-encoded
    lambda key: f"x=1&api_key={key}&y=%20",
], ids=["plain", "encoded-value", "among-others"])
def test_the_value_is_percent_decoded_as_envoy_passes_the_raw_path(world, spell):
    assert_allowed(check(world, "GET", f"/v1/users/u-active?{spell(world.keys['acme'])}"))


def test_a_parameter_name_is_matched_as_sent_as_envoy_matches_it_for_removal(world):
    """Envoy removes `api_key=` but not `api%5Fkey=`: a key under a name Envoy would leave in
    place for the upstream is no credential."""
    response = check(world, "GET", f"/v1/users/u-active?api%5Fkey={world.keys['acme']}")
    assert_denied(response, 401, "missing_token")


def test_a_query_key_is_judged_as_an_x_api_key_would_be(world):
    scoped = check(world, "GET", f"/v1/customers/C-1/orders?api_key={world.keys['acme-reader']}")
    assert_denied(scoped, 403, "insufficient_scope")
    assert_denied(check(world, "GET", f"/v1/users/u-active?api_key={world.keys['acme-expired']}"), 401,
                  "token_expired")
    assert_denied(check(world, "GET", f"/v1/users/u-active?api_key={world.keys['acme-revoked']}"), 401,
                  "token_revoked")
    mutated = world.keys["acme"][:-1] + ("A" if world.keys["acme"][-1] != "A" else "B")
    assert_denied(check(world, "GET", f"/v1/users/u-active?api_key={mutated}"), 401, "invalid_token")


def test_a_query_value_that_is_no_api_key_is_invalid(world):
    token = world.jwt("rsa")  # a valid JWT: accepted in Authorization, never as a query key
    message = assert_denied(check(world, "GET", f"/v1/users/u-active?api_key={token}"), 401, "invalid_token")
    assert message == "the api_key query parameter must carry an API key"
    assert_allowed(check(world, "GET", "/v1/users/u-active", {"authorization": f"Bearer {token}"}), removed=[])


def test_an_empty_parameter_is_no_credential(world):
    assert_denied(check(world, "GET", "/v1/users/u-active?api_key="), 401, "missing_token")
    assert_denied(check(world, "GET", "/v1/users/u-active?api_key"), 401, "missing_token")


def test_a_repeated_parameter_is_refused_not_guessed(world):
    key, other = world.keys["acme"], world.keys["globex"]
    for query in (f"api_key={key}&api_key={key}", f"api_key={key}&api_key={other}", f"api_key={key}&api_key="):
        response = check(world, "GET", f"/v1/users/u-active?{query}")
        message = assert_denied(response, 401, "invalid_token")
        assert message == "the api_key query parameter is repeated; send one API key"
        assert response.status.code == code_pb2.UNAUTHENTICATED
        assert 'error="invalid_token"' in headers_of(response.denied_response.headers)["www-authenticate"]


def test_the_parameter_is_removed_on_a_public_route_too(world):
    assert_allowed(check(world, "GET", f"/health?api_key={world.keys['acme']}"), partner=None)
    assert_allowed(check(world, "GET", "/health?api_key="), partner=None)
    assert_allowed(check(world, "GET", "/health?other=1"), partner=None, removed=[])


# -- a header credential always wins --------------------------------------------------------------------

@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_a_header_wins_over_a_bogus_query_key_which_is_still_removed(world, header):
    value = world.keys["acme"] if header == "x-api-key" else world.bearer("acme")
    for bogus in ("api_key=tg_live_bogus", "api_key=not-a-key", f"api_key={world.keys['globex']}",
                  "api_key=a&api_key=b"):
        response = check(world, "GET", f"/v1/users/u-active?{bogus}&other=1", {header: value})
        assert_allowed(response)


def test_a_bad_header_is_not_rescued_by_a_good_query_key(world):
    response = check(world, "GET", f"/v1/users/u-active?api_key={world.keys['acme']}",
                     {"x-api-key": "tg_live_bogus"})
    assert_denied(response, 401, "invalid_token")


# -- off: by default, and per route ---------------------------------------------------------------------

@pytest.mark.usefixtures("policy_off")
def test_off_by_default_the_query_key_is_no_credential(world):
    response = check(world, "GET", f"/v1/users/u-active?api_key={world.keys['acme']}&other=1")
    assert_denied(response, 401, "missing_token")
    public = check(world, "GET", f"/health?api_key={world.keys['acme']}")
    assert_allowed(public, partner=None, removed=[])  # off: the parameter is not Tollgate's business


def test_a_route_can_turn_it_off(world):
    response = check(world, "PATCH", f"/v1/users/u-active?api_key={world.keys['acme']}")
    assert_denied(response, 401, "missing_token")
    allowed = check(world, "PATCH", f"/v1/users/u-active?api_key={world.keys['acme']}",
                    {"x-api-key": world.keys["acme"]})
    assert_allowed(allowed, removed=[])


def test_a_route_can_name_its_own_parameter(world):
    assert_allowed(check(world, "GET", f"/v1/organizations/o-active?key={world.keys['acme']}&api_key=x"),
                   removed=["key"])
    assert_denied(check(world, "GET", f"/v1/organizations/o-active?api_key={world.keys['acme']}"), 401,
                  "missing_token")


def test_an_operation_named_by_context_extensions_follows_the_sidecar_setting(world):
    response = check(world, "GET", f"/legacy/profile?id=u-active&api_key={world.keys['acme']}", {},
                     {"operation": "getUser", "user_id": "query.id"})
    assert_allowed(response)


def test_native_check_is_unchanged(world):
    assert world.check("getUser", api_key=world.keys["acme"], user_id="u-active").allowed
    assert world.check("getUser", user_id="u-active").reason == "missing_token"


# -- the key is never written anywhere --------------------------------------------------------------------

def _needles(key: str) -> dict[str, bytes]:
    return {"key": key.encode(), "key body": key.removeprefix("tg_live_").encode(),
            "key encoded": quote(key, safe="").replace("_", "%5F").encode()}


def test_a_query_key_appears_in_no_log_metric_or_answer(database_url, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # the root logger: every library's debug output too
    world = start_world(database_url, tmp_path, metrics_port=free_port(),
                        policy_path=write_policy(ON, tmp_path / "policy.yaml"))
    seen: list[tuple[str, bytes]] = []
    secrets: dict[str, bytes] = {}
    try:
        keys = {name: world.keys[name] for name in ("acme", "acme-reader", "acme-expired", "acme-revoked", "globex")}
        bogus = "tg_live_" + "Q" * 40  # well formed enough to be looked up, never issued
        for name, key in [*keys.items(), ("bogus", bogus)]:
            secrets.update({f"{name} {label}": needle for label, needle in _needles(key).items()})
        requests = [("GET", f"/v1/users/{user}?api_key={key}&other=1", {}, None)
                    for user in ("u-active", "u-pending", "u-none") for key in [*keys.values(), bogus]]
        requests += [
            ("GET", f"/v1/customers/C-9/orders?api_key={keys['acme']}", {}, None),  # customer_access_denied
            ("GET", f"/v1/customers/C-1/orders?api_key={keys['acme-reader']}", {}, None),  # insufficient_scope
            ("GET", f"/v1/users/u-active?api_key={keys['acme']}&api_key={keys['globex']}", {}, None),  # repeated
            ("GET", f"/v1/users/u-active?api_key={quote(keys['acme'], safe='')}", {"x-api-key": "tg_live_x"}, None),
            ("GET", f"/v1/users/u-active?api_key={bogus}", {"x-api-key": keys["acme"]}, None),  # header wins
            ("PATCH", f"/v1/users/u-active?api_key={keys['acme']}", {}, None),  # off on this route
            ("DELETE", f"/v1/users/u-active?api_key={keys['acme']}", {}, None),  # unknown_operation
            ("GET", f"/nowhere?api_key={keys['acme']}", {}, None),
            ("GET", f"/health?api_key={keys['acme']}", {}, None),
            ("GET", f"/anything?api_key={keys['acme']}", {}, {"operation": "getUser"}),  # 400: no user id
            ("GET", f"/v1/organizations/o-active?key={keys['globex']}", {}, None),
        ]
        outcomes = set()
        for method, path, headers, extensions in requests:
            response = check(world, method, path, headers, extensions)
            outcomes.add(response.dynamic_metadata["reason"] or "allowed")
            seen += [(f"{method} {path[:40]}", str(response).encode()),
                     (f"{method} {path[:40]} (wire)", response.SerializeToString())]
        with urllib.request.urlopen(f"http://127.0.0.1:{world.app.metrics_port}/metrics", timeout=10) as answer:
            metrics = answer.read()
    finally:
        stop_world(world)
    out, err = capfd.readouterr()
    assert outcomes >= {"allowed", "invalid_token", "token_expired", "token_revoked", "insufficient_scope",
                        "user_access_denied", "customer_access_denied", "missing_token", "unknown_operation",
                        "invalid_request"}, outcomes
    assert b"tollgate_checks_total" in metrics and any(r.name == "tollgate.decisions" for r in caplog.records)
    formatter = JsonFormatter()
    for record in caplog.records:
        seen += [(f"log {record.name}", formatter.format(record).encode()),
                 (f"log {record.name} (raw)", repr(record.__dict__).encode())]
    seen += [("caplog text", caplog.text.encode()), ("metrics", metrics), ("stdout", out.encode()),
             ("stderr", err.encode())]
    leaks = [f"{label} in {where}" for where, what in seen for label, needle in secrets.items() if needle in what]
    assert leaks == []
    planted = [("planted", f"GET /v1/users/u-1?api_key={keys['acme']}".encode())]  # the scan does find keys
    assert [label for where, what in planted for label, needle in secrets.items() if needle in what]
