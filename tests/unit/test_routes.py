from pathlib import Path

import pytest

from service.domain.errors import PolicyError
from service.domain.policy import parse_policy
from service.policy_file import load_policy

ROUTES = load_policy(Path(__file__).resolve().parents[2] / "examples" / "policy.yaml").routes


@pytest.mark.parametrize("method, path, headers, operation, resource", [
    ("GET", "/health", {}, "health", {}),
    ("GET", "/v1/users/u-1", {}, "getUser", {"user_id": "u-1"}),
    ("GET", "/v1/users/u-1/", {}, "getUser", {"user_id": "u-1"}),
    ("GET", "/v1/users/u-1?fields=name&x=1", {}, "getUser", {"user_id": "u-1"}),
    ("GET", "/v1/users/u%20two", {}, "getUser", {"user_id": "u two"}),
    ("patch", "/v1/users/u-1", {}, "updateUser", {"user_id": "u-1"}),
    ("GET", "/v1/organizations/o-1", {}, "getOrganization", {"organization_id": "o-1"}),
    ("POST", "/v1/court-bookings?dry=1", {}, "createCourtBooking", {}),
    ("GET", "/v1/customers/C-1/orders", {}, "listCustomerOrders", {"customer_id": "C-1"}),
])
def test_example_routes(method, path, headers, operation, resource):
    routed = ROUTES.resolve(method, path, headers)
    assert routed is not None and routed.operation == operation and dict(routed.resource) == resource


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/v1/users/u-1"), ("GET", "/v1/users"), ("GET", "/v1/users/u-1/extra"), ("GET", "/"),
    ("GET", "/v1/users//"), ("GET", "/v1/users/../admin"), ("GET", "/v1/customers/C-1"),
])
def test_unmatched_routes(method, path):
    assert ROUTES.resolve(method, path, {}) is None


def _policy(routes):
    return parse_policy({"scopes": {"user": None}, "operations": {"a": {}, "b": {}}, "routes": routes})


def test_literal_beats_parameter_and_query_header_sources():
    table = _policy([
        {"match": "GET /items/{id}", "operation": "a", "resource": {"user_id": "path.id"}},
        {"match": "GET /items/mine", "operation": "b",
         "resource": {"user_id": "header.X-User", "customer_id": "query.customer"}},
    ]).routes
    assert table.resolve("GET", "/items/mine?customer=C-5", {"x-user": "u-9"}).resource == {
        "user_id": "u-9", "customer_id": "C-5"}
    assert table.resolve("GET", "/items/mine?customer=1&customer=2", {}).resource["customer_id"] == ""
    assert table.resolve("GET", "/items/7", {}).operation == "a"


@pytest.mark.parametrize("routes, field", [
    ("GET /x", "routes"),
    ([{"match": "FETCH /x", "operation": "a"}], "routes[0].match"),
    ([{"match": "GET x", "operation": "a"}], "routes[0].match"),
    ([{"match": "GET /x", "operation": "nope"}], "routes[0].operation"),
    ([{"match": "GET /x/{id}", "operation": "a", "resource": {"user_id": "path.other"}}], "routes[0].resource.user_id"),
    ([{"match": "GET /x", "operation": "a", "resource": {"account": "query.a"}}], "routes[0].resource.account"),
    ([{"match": "GET /x/{a}", "operation": "a"}, {"match": "GET /x/{b}", "operation": "b"}], "routes[1].match"),
])
def test_bad_routes_name_the_key(routes, field):
    with pytest.raises(PolicyError) as raised:
        _policy(routes)
    assert raised.value.field == field
