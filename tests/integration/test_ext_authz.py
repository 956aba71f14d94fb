"""Envoy ext_authz v3 through a real server, driven by the xds-protos client: every reason code
decides exactly as the native Check, and the headers a sidecar relies on are right."""

import json

import pytest
from google.rpc import code_pb2

from tests.cases.check_cases import CASES
from tests.support.envoy import ext_authz_request, ext_authz_request_for, ext_authz_stub

ROUTABLE = [c for c in CASES if "permission" not in c.name]


def headers_of(options):
    return {o.header.key: o.header.value for o in options}


def ext_check(world, request):
    return ext_authz_stub(world.channel).Check(request, timeout=10)


@pytest.mark.parametrize("case", ROUTABLE, ids=[c.name for c in ROUTABLE])
def test_ext_authz_decides_like_native_check(shared_world, case):
    args = case.request(shared_world)
    native = shared_world.check(**args)
    envoy = ext_check(shared_world, ext_authz_request_for(**args))
    assert envoy.dynamic_metadata["reason"] == native.reason == case.reason
    # Who was decided about (Envoy's access log prints it), a deny as an allow; nobody when no
    # credential was recognised.
    metadata = envoy.dynamic_metadata
    assert metadata["partner_id"] == native.principal.partner_id == case.partner_id
    assert metadata["credential_id"] == native.principal.credential_id
    assert (metadata["credential_kind"] != "") is bool(case.partner_id)
    if native.allowed:
        assert envoy.HasField("ok_response") and envoy.status.code == code_pb2.OK
        assert headers_of(envoy.ok_response.headers).get("x-tollgate-partner-id", "") == case.partner_id
        return
    denied = envoy.denied_response
    assert envoy.HasField("denied_response")
    assert denied.status.code == native.http_status == case.http_status
    assert envoy.status.code == (code_pb2.UNAUTHENTICATED if case.http_status == 401 else code_pb2.PERMISSION_DENIED)
    if case.reason == "unknown_operation":  # the HTTP request names a route, not an operation
        assert json.loads(denied.body)["errors"][0]["reason"] == "unknown_operation"
    else:
        assert denied.body == native.body and json.loads(denied.body)
    headers = headers_of(denied.headers)
    assert headers["content-type"] == "application/json"
    assert headers.get("www-authenticate", "") == native.www_authenticate


def test_allow_sets_identity_headers_and_strips_credentials(shared_world):
    request = ext_authz_request("GET", "/v1/users/u-active?expand=1", {
        "authorization": shared_world.bearer("acme-reader"), "x-tollgate-partner-id": "forged"})
    response = ext_check(shared_world, request)
    ok = response.ok_response
    headers = headers_of(ok.headers)
    assert headers["x-tollgate-partner-id"] == "acme" and headers["x-tollgate-scopes"] == "user:read"
    assert headers["x-tollgate-credential-id"] == shared_world.key_ids["acme-reader"]
    assert headers["x-tollgate-decision-id"] == response.dynamic_metadata["decision_id"]
    assert set(ok.headers_to_remove) == {"authorization", "x-api-key"}  # forged values are overwritten
    assert all(o.append_action == o.OVERWRITE_IF_EXISTS_OR_ADD for o in ok.headers)
    assert response.dynamic_metadata["partner_id"] == "acme" and response.dynamic_metadata["operation"] == "getUser"


def test_public_route_removes_forged_identity_headers(shared_world):
    response = ext_check(shared_world, ext_authz_request("GET", "/health/", {"x-tollgate-partner-id": "forged"}))
    assert response.HasField("ok_response")
    removed, set_here = set(response.ok_response.headers_to_remove), set(headers_of(response.ok_response.headers))
    assert {"x-tollgate-partner-id", "x-tollgate-credential-id", "x-tollgate-scopes"} <= removed
    assert not removed & set_here, "Envoy removes after setting: a header may never be in both"


def test_context_extension_operation_beats_the_route_table(shared_world):
    headers = {"x-api-key": shared_world.keys["acme-reader"]}
    routed = ext_check(shared_world, ext_authz_request("GET", "/v1/users/u-active", headers))
    assert routed.HasField("ok_response")
    overridden = ext_check(shared_world, ext_authz_request("GET", "/v1/users/u-active", headers,
                                                           {"operation": "updateUser"}))
    assert overridden.denied_response.status.code == 403
    assert overridden.dynamic_metadata["reason"] == "insufficient_scope"


def test_context_extension_resource_sources(shared_world):
    headers = {"x-api-key": shared_world.keys["acme"], "x-org": "o-active"}
    response = ext_check(shared_world, ext_authz_request(
        "GET", "/internal/org-report", headers, {"operation": "getOrganization", "organization_id": "header.x-org"}))
    assert response.HasField("ok_response"), response.dynamic_metadata


@pytest.mark.parametrize("method, path", [("DELETE", "/v1/users/u-active"), ("GET", "/v1/users"), ("GET", "/admin")])
def test_unmatched_routes_are_unknown_operation(shared_world, method, path):
    response = ext_check(shared_world, ext_authz_request(method, path, {"x-api-key": shared_world.keys["acme"]}))
    assert response.denied_response.status.code == 403
    assert response.dynamic_metadata["reason"] == "unknown_operation"
    assert f"{method} {path}" in json.loads(response.denied_response.body)["errors"][0]["message"]


@pytest.mark.parametrize("operation, extensions, field", [
    ("getUser", {}, "userId"),
    ("getOrganization", {}, "organizationId"),
    # A customer-bound operation without a customer number: malformed (400), as native Check's
    # INVALID_ARGUMENT, never a customer_access_denied 403.
    ("listCustomerOrders", {"customer_id": "header.x-customer-id"}, "customerId"),
])
def test_operation_without_its_resource_is_a_400_naming_the_api_field(shared_world, operation, extensions, field):
    """The 400 names the field as the 403s of the same resource do (the partner API's name)."""
    response = ext_check(shared_world, ext_authz_request(
        "GET", "/anything", {"x-api-key": shared_world.keys["acme"]}, {"operation": operation, **extensions}))
    assert response.denied_response.status.code == 400
    error = json.loads(response.denied_response.body)["errors"][0]
    assert (error["reason"], error["field"]) == ("invalid_request", field)
    assert "resource." not in error["message"] and operation in error["message"]


def test_a_too_long_resource_id_is_a_400_naming_the_api_field(shared_world):
    response = ext_check(shared_world, ext_authz_request(
        "GET", "/v1/users/" + "u" * 300, {"x-api-key": shared_world.keys["acme"]}))
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["errors"][0]["field"] == "userId"
