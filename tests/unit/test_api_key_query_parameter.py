"""The API key query parameter (ext_authz, opt-in): the policy setting, reading the parameter from a
raw path, judging it as a credential, and the ext_authz conversion. No server, no database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2

from service.check.query import CheckQuery
from service.domain.credentials import PresentedKind, QueryApiKey, parse_presented
from service.domain.decide import Resource
from service.domain.decision import Decision, Reason, deny
from service.domain.errors import CredentialRejected, PolicyError
from service.domain.model import CredentialKind, Principal
from service.domain.policy import parse_policy
from service.domain.routes import query_parameter_values
from service.policy_file import load_policy
from service.transport.ext_authz_convert import (
    check_query_from_ext_authz,
    decisive_bytes,
    ext_authz_response,
    query_parameters_to_remove,
)
from tests.support.envoy import ext_authz_request

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT_ROOT / "examples" / "policy.yaml"
KEY = "tg_live_" + "k" * 40


def document(sidecar=None, **route_settings):
    """A small policy: GET /a/{id} (getA), GET /b (getB), GET /open (public); route_settings
    by operation name set that route's api_key_query_parameter."""
    routes = [{"match": "GET /a/{id}", "operation": "getA", "resource": {"user_id": "path.id"}},
              {"match": "GET /b", "operation": "getB"},
              {"match": "GET /open", "operation": "open"}]
    for route in routes:
        if route["operation"] in route_settings:
            route["api_key_query_parameter"] = route_settings[route["operation"]]
    operations = {"getA": {"relation": "user"}, "getB": {}, "open": {"public": True}}
    policy = {"scopes": {"user": None}, "operations": operations, "routes": routes}
    if sidecar is not None:
        policy["sidecar"] = sidecar
    return policy


def parameters(policy) -> dict[str, str]:
    return {route.operation: route.api_key_query_parameter for route in policy.routes.routes}


# -- the policy setting ------------------------------------------------------------------------------------

def test_off_by_default_and_in_the_example_policy():
    assert parameters(parse_policy(document())) == {"getA": "", "getB": "", "open": ""}
    assert parse_policy(document()).routes.api_key_query_parameter == ""
    example = load_policy(EXAMPLE)
    assert example.routes.api_key_query_parameter == ""
    assert all(route.api_key_query_parameter == "" for route in example.routes.routes)


def test_the_sidecar_setting_applies_to_every_route_and_a_route_overrides_it():
    policy = parse_policy(document({"api_key_query_parameter": "api_key"}, getB="", open="key"))
    assert parameters(policy) == {"getA": "api_key", "getB": "", "open": "key"}
    assert policy.routes.api_key_query_parameter == "api_key"  # for operations context_extensions name
    only_one = parse_policy(document(getA="api_key"))
    assert parameters(only_one) == {"getA": "api_key", "getB": "", "open": ""}


def test_the_example_policy_documents_the_setting_commented_out():
    text = EXAMPLE.read_text()
    assert "# api_key_query_parameter: api_key" in text
    assert "api_key_query_parameter" not in yaml.safe_load(text).get("sidecar", {})


@pytest.mark.parametrize("value", ["api key", "api_key=", "a&b", "api%5Fkey", "k" * 65, "clé", 1, True, None,
                                   ["api_key"], {"name": "api_key"}])
@pytest.mark.parametrize("where", ["sidecar", "route"])
def test_a_bad_parameter_name_is_refused_naming_the_key(value, where):
    spec = document({"api_key_query_parameter": value}) if where == "sidecar" else document(getB=value)
    field = "sidecar.api_key_query_parameter" if where == "sidecar" else "routes[1].api_key_query_parameter"
    with pytest.raises(PolicyError) as raised:
        parse_policy(spec)
    assert raised.value.field == field
    assert "query parameter name" in raised.value.message


@pytest.mark.parametrize("name", ["api_key", "key", "X-Api-Key", "access.key", "k~1", "k" * 64])
def test_sane_parameter_names_are_accepted(name):
    assert parameters(parse_policy(document({"api_key_query_parameter": name})))["getB"] == name


def test_a_resource_read_from_the_key_parameter_is_refused():
    spec = document({"api_key_query_parameter": "api_key"})
    spec["routes"][1]["resource"] = {"customer_id": "query.api_key"}
    with pytest.raises(PolicyError) as raised:
        parse_policy(spec)
    assert raised.value.field == "routes[1].resource.customer_id" and "carries the API key" in raised.value.message
    spec["routes"][1]["api_key_query_parameter"] = ""  # off on that route: the parameter is its own
    assert parse_policy(spec).routes.routes[1].api_key_query_parameter == ""


def test_the_policy_file_error_names_the_file_and_the_line(tmp_path):
    spec = document({"strip_credential_headers": True, "api_key_query_parameter": "api key"})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "api_key_query_parameter" in text)
    assert str(raised.value).startswith(f"{path}: line {line}, sidecar.api_key_query_parameter must be")


def test_other_sidecar_keys_are_still_refused():
    with pytest.raises(PolicyError) as raised:
        parse_policy(document({"api_key_parameter": "api_key"}))
    assert raised.value.field == "sidecar" and "api_key_query_parameter" in raised.value.message


# -- reading the parameter from the raw path ---------------------------------------------------------------

@pytest.mark.parametrize("path, values", [
    ("/a", ()),
    ("/a?", ()),
    ("/a?other=1", ()),
    (f"/a?api_key={KEY}", (KEY,)),
    (f"/a?x=1&api_key={KEY}&y=2", (KEY,)),
    ("/a?api_key=tg%5Flive%5Fabc", ("tg_live_abc",)),
    ("/a?api%5Fkey=v&api_key%3Dv", ()),  # names as sent: Envoy would not remove these
    ("/a?api_key=a&api_key=b", ("a", "b")),
    ("/a?api_key=", ("",)),
    ("/a?api_key", ("",)),
    ("/a?API_KEY=v&api_keys=v&xapi_key=v", ()),
    ("/a?api_key=a+b%2B%20", ("a+b+ ",)),
    ("/a?api_key=x=y", ("x=y",)),
    ("/a?api_key=%ff", ("\ufffd",)),
])
def test_query_parameter_values(path, values):
    assert query_parameter_values(path, "api_key") == values


# -- judging it as a credential ----------------------------------------------------------------------------

def test_a_query_key_is_an_api_key_only_without_a_header_credential():
    query = QueryApiKey("api_key", (KEY,))
    assert parse_presented("", "", query).kind is PresentedKind.API_KEY
    assert parse_presented("", "", query).value == KEY
    assert parse_presented("", "tg_live_header", query).value == "tg_live_header"
    assert parse_presented("Bearer eyJ.a.b", "", query).value == "eyJ.a.b"
    assert parse_presented("", "", None) is None
    assert parse_presented("  ", " ", QueryApiKey("api_key", (KEY,))).value == KEY


@pytest.mark.parametrize("values, message", [
    ((KEY, KEY), "the api_key query parameter is repeated; send one API key"),
    ((KEY, ""), "the api_key query parameter is repeated; send one API key"),
    (("eyJhbGciOiJFUzI1NiJ9.e30.sig",), "the api_key query parameter must carry an API key"),
    (("Bearer " + KEY,), "the api_key query parameter must carry an API key"),
    ((f" {KEY}",), "the api_key query parameter must carry an API key"),  # a URL is not trimmed
    (("tg_live_" + "x" * 20_000,), "the credential is too long"),
])
def test_a_bad_query_key_is_invalid_token(values, message):
    with pytest.raises(CredentialRejected) as raised:
        parse_presented("", "", QueryApiKey("api_key", values))
    assert raised.value.reason == "invalid_token" and raised.value.message == message
    assert KEY not in raised.value.message


def test_a_header_wins_even_over_a_repeated_parameter():
    assert parse_presented("", KEY, QueryApiKey("api_key", ("a", "b"))).value == KEY


def test_an_empty_query_key_is_no_credential_and_repr_hides_the_value():
    assert parse_presented("", "", QueryApiKey("api_key", ("",))) is None
    assert KEY not in repr(QueryApiKey("api_key", (KEY,))) and KEY not in str(QueryApiKey("api_key", (KEY,)))


# -- the ext_authz conversion ------------------------------------------------------------------------------

ROUTES = parse_policy(document({"api_key_query_parameter": "api_key"}, getB="")).routes


@pytest.mark.parametrize("method, path, extensions, expected", [
    ("GET", f"/a/u-1?api_key={KEY}&x=1", {}, QueryApiKey("api_key", (KEY,))),
    ("GET", "/a/u-1?x=1", {}, None),
    ("GET", f"/b?api_key={KEY}", {}, None),  # off on that route
    ("GET", f"/open?api_key={KEY}&api_key=", {}, QueryApiKey("api_key", (KEY, ""))),
    ("GET", f"/elsewhere?api_key={KEY}", {"operation": "getA"}, QueryApiKey("api_key", (KEY,))),  # the sidecar's
])
def test_check_query_carries_the_query_key(method, path, extensions, expected):
    query = check_query_from_ext_authz(ext_authz_request(method, path, {}, extensions), ROUTES)
    assert query.query_api_key == expected
    assert query_parameters_to_remove(query) == ((expected.parameter,) if expected else ())
    assert (query.authorization, query.api_key) == ("", "")


def test_check_query_keeps_the_query_key_beside_a_header_and_off_by_default():
    query = check_query_from_ext_authz(ext_authz_request("GET", f"/a/u-1?api_key={KEY}", {"x-api-key": "h"}), ROUTES)
    assert query.api_key == "h" and query_parameters_to_remove(query) == ("api_key",)
    off = parse_policy(document()).routes
    assert check_query_from_ext_authz(ext_authz_request("GET", f"/a/u-1?api_key={KEY}"), off).query_api_key is None


ALLOW = Decision(allowed=True, message="allowed", principal=Principal("p", "key_1", CredentialKind.API_KEY))


def test_only_an_allow_removes_the_parameter_and_templates_are_not_touched():
    removed = ext_authz_response(ALLOW, realm="r", decision_id="d1", operation="getA", strip_credentials=False,
                                 remove_query_parameters=("api_key",))
    assert list(removed.ok_response.query_parameters_to_remove) == ["api_key"]
    again = ext_authz_response(ALLOW, realm="r", decision_id="d2", operation="getA", strip_credentials=False)
    assert list(again.ok_response.query_parameters_to_remove) == []  # the shared template was not changed
    denied = ext_authz_response(deny(Reason.INVALID_TOKEN, "bad"), realm="r", decision_id="d3", operation="getA",
                                strip_credentials=False, remove_query_parameters=("api_key",))
    assert denied.HasField("denied_response") and not denied.HasField("ok_response")
    assert "query_parameters_to_remove" in {f.name for f in external_auth_pb2.OkHttpResponse.DESCRIPTOR.fields}


# -- the Envoy example never logs a query string -----------------------------------------------------------

def test_the_envoy_example_access_log_prints_the_path_without_its_query_string():
    text = str(yaml.safe_load((PROJECT_ROOT / "docs" / "envoy.yaml").read_text()))
    assert "%PATH(NQ:ORIG_OR_PATH)%" in text
    assert "REQ(:PATH)" not in text and "X-ENVOY-ORIGINAL-PATH" not in text and "%PATH%" not in text


# -- what names an ext_authz request in the decision memo ------------------------------------------

def test_the_decisive_bytes_of_two_queries_differ_whenever_the_queries_do():
    base = CheckQuery(authorization="Bearer ab", api_key="", operation="getA", resource=Resource(user_id="u-1"))
    variants = [
        replace(base, authorization="Bearer a", api_key="b"),  # a character moved between fields
        replace(base, operation="getAu", resource=Resource(user_id="-1")),
        replace(base, permissions=["user:read"]),
        replace(base, permissions=["user:read", ""]),
        replace(base, resource=Resource(organization_id="u-1")),
        replace(base, client_address="10.0.0.1"),
        replace(base, at_least_as_fresh=3),
        replace(base, explain=True),
        replace(base, query_api_key=QueryApiKey("api_key", ("k",))),
        replace(base, query_api_key=QueryApiKey("api_keyk", ())),
        replace(base, query_api_key=QueryApiKey("api_key", ("k", "k"))),
    ]
    encodings = [decisive_bytes(query) for query in (base, *variants)]
    assert len(set(encodings)) == len(encodings)
    assert decisive_bytes(replace(base)) == decisive_bytes(base), "equal queries are one question"
