"""Check through a real server on a free port, on SQLite and PostgreSQL: every reason code."""

import json

import grpc
import pytest

from tests.cases.check_cases import CASES
from tests.support.grpc_errors import expect_error


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_table(shared_world, case):
    response = shared_world.check(**case.request(shared_world))
    assert (response.reason, response.http_status) == (case.reason, case.http_status), response.message
    assert response.allowed is (case.reason == "")
    assert response.field == case.field
    assert response.decision_id
    # Who was decided about, a deny as an allow, whenever the credential was proven; else nobody.
    assert response.HasField("principal") is bool(case.partner_id)
    assert response.principal.partner_id == case.partner_id
    if case.reason:
        assert json.loads(response.body), "a deny carries a JSON body"
        assert response.deny_reason != 0 and not response.grants
    else:
        assert response.body == ""


def test_missing_token_answers_bare_challenge(shared_world):
    response = shared_world.check("getUser", user_id="u-active")
    assert response.www_authenticate == 'Bearer realm="tollgate"'
    assert json.loads(response.body)["error"] == "invalid_request"


def test_invalid_token_answers_rfc6750_challenge(shared_world):
    response = shared_world.check("getUser", api_key="tg_live_nope", user_id="u-active")
    assert response.www_authenticate.startswith('Bearer realm="tollgate", error="invalid_token", error_description="')
    assert json.loads(response.body) == {"error": "invalid_token", "error_description": response.message,
                                         "reason": "invalid_token"}
    assert "tg_live_nope" not in response.message


def test_insufficient_scope_names_the_scope(shared_world):
    response = shared_world.check("updateUser", authorization=shared_world.bearer("acme-reader"), user_id="u-active")
    assert "user:write" in response.message
    assert 'error="insufficient_scope"' in response.www_authenticate and 'scope="user:write"' in response.www_authenticate
    assert json.loads(response.body) == {"error": "insufficient_scope", "error_description": response.message,
                                         "scope": "user:write"}


def test_customer_denial_body_names_the_field(shared_world):
    response = shared_world.check("listCustomerOrders", authorization=shared_world.bearer("acme"), customer_id="C-9")
    assert json.loads(response.body) == {"code": 403, "errors": [
        {"reason": "customer_access_denied", "message": response.message, "field": "customerId"}]}
    assert response.www_authenticate == ""


def test_allow_reports_principal_and_effective_grants(shared_world):
    response = shared_world.check("getUser", authorization=shared_world.bearer("acme-reader"), user_id="u-active")
    assert response.principal.partner_id == "acme"
    assert response.principal.credential_id == shared_world.key_ids["acme-reader"]
    assert response.principal.credential_kind == 1  # CREDENTIAL_KIND_API_KEY
    assert [(g.scope, g.level) for g in response.grants] == [("user", 2)]  # ACCESS_LEVEL_READ


def test_jwt_principal_kind_and_id(shared_world):
    token = shared_world.jwt("ec", jti="jti-42")
    response = shared_world.check("createCourtBooking", authorization=f"Bearer {token}")
    assert response.allowed
    assert response.principal.credential_kind == 2 and response.principal.credential_id == "iss_ec:jti-42"


@pytest.mark.parametrize("request_args, field, words", [
    ({"operation": "getUser"}, "resource.user_id", "getUser needs the user id"),
    ({"operation": "getOrganization"}, "resource.organization_id", "getOrganization needs the organization id"),
    # A customer-bound operation without a customer number is a malformed call, not a deny.
    ({"operation": "listCustomerOrders", "authorization": "Bearer x"}, "resource.customer_id",
     "listCustomerOrders needs the customer number"),
    ({"operation": "getUser", "user_id": "u", "permissions": ["user:sometimes"]}, "permissions[0]", "permissions[0]"),
    ({"operation": "getUser", "user_id": "u\x00"}, "resource.user_id", "the user id is too long or has control"),
])
def test_malformed_check_is_invalid_argument(shared_world, request_args, field, words):
    """gRPC errors name the CheckRequest's field (what the gRPC caller set) in ErrorInfo."""
    error = expect_error(shared_world.check, **request_args)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field == field and words in error.message
