import json

from service.domain.decision import Decision, Reason, deny, error_body, www_authenticate


def test_missing_token_has_no_error_attributes():
    decision = deny(Reason.MISSING_TOKEN, "a bearer token or API key is required")
    assert www_authenticate(decision, "tollgate") == 'Bearer realm="tollgate"'


def test_invalid_token_header_and_body():
    decision = deny(Reason.TOKEN_EXPIRED, 'the token "expired"')
    assert www_authenticate(decision, "tollgate") == (
        'Bearer realm="tollgate", error="invalid_token", error_description="the token expired"')
    assert json.loads(error_body(decision)) == {
        "error": "invalid_token", "error_description": 'the token "expired"', "reason": "token_expired"}


def test_insufficient_scope_names_the_scope():
    decision = deny(Reason.INSUFFICIENT_SCOPE, "lacks user:read", missing_scope="user:read")
    header = www_authenticate(decision, "tollgate")
    assert 'error="insufficient_scope"' in header and 'scope="user:read"' in header
    assert json.loads(error_body(decision))["scope"] == "user:read"


def test_access_denials_use_the_partner_api_body():
    decision = deny(Reason.CUSTOMER_ACCESS_DENIED, "no", field="customerId")
    assert www_authenticate(decision, "tollgate") == ""
    assert json.loads(error_body(decision)) == {
        "code": 403, "errors": [{"reason": "customer_access_denied", "message": "no", "field": "customerId"}]}


def test_allow_has_no_body():
    assert error_body(Decision(allowed=True)) == "" and www_authenticate(Decision(allowed=True), "r") == ""
