"""Fuzz target: envoy.service.auth.v3.Authorization/Check (ext_authz), with the invariants of harness.py.

    .venv/bin/python -m tests.fuzz.ext_authz [libFuzzer flags] SCRATCH_DIR tests/fuzz/corpus/ext_authz
"""

from __future__ import annotations

from urllib.parse import quote

import atheris

with atheris.instrument_imports(include=["service", "jwt"]):
    from tests.fuzz import harness

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

ROUTES = ["/health", "/v1/users/{id}", "/v1/organizations/{id}", "/v1/court-bookings", "/v1/customers/{id}/orders"]
METHODS = ["GET", "POST", "PATCH", "get", "", "CONNECT", "DELETE"]
IDS = ["u-active", "u-pending", "o-active", "C-1", "", "%2e%2e", "%00", "a" * 300]
ODD_PATHS = ["", "/", "//health", "/./health", "/health/..", "/v1/users/u-active/", "/v1/users//u-active", "*",
             "health", "/v1/users/%ZZ", "/%F0%9F%98%80", "/health?a=%00&a=2", "/health#f"]
CREDENTIAL_NAMES = ["authorization", "Authorization", "AUTHORIZATION", "x-api-key", "X-Api-Key"]
JUNK_NAMES = ["x-user-id", "x-tollgate-partner-id", "x-tollgate-scopes", "host", ":path", "cookie", "x-forwarded-for"]
EXTENSION_KEYS = ["operation", "user_id", "organization_id", "customer_id"]
EXTENSION_VALUES = ["health", "getUser", "listCustomerOrders", "query.user_id", "header.x-user-id", "path.userId",
                    "query.", "header.", ""]

fx: harness.Fixture


def build(fdp) -> external_auth_pb2.CheckRequest:
    """Interpretation (b): an ext_authz request from fuzzed parts mixed with structure."""
    authorization, api_key = harness.credential_fields(fdp, fx)
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind <= 1:
        resource_id = fdp.PickValueInList(IDS) if fdp.ConsumeBool() else quote(harness.text(fdp, 24, long=False))
        path = fdp.PickValueInList(ROUTES).replace("{id}", resource_id)
        path += fdp.PickValueInList(["", "", "?user_id=u-active", "?a=%00", "#frag", "?" + "x=1&" * 2000])
    elif kind == 2:
        path = fdp.PickValueInList(ODD_PATHS)
    else:
        path = harness.text(fdp)
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id=harness.text(fdp, 8, long=False), method=fdp.PickValueInList(METHODS) if fdp.ConsumeBool() else harness.text(fdp, 8),
        path=path, host=fdp.PickValueInList(["api.example.test", ""]), scheme="https", protocol="HTTP/1.1",
        query=harness.text(fdp, 8, long=False))
    headers: list[tuple[str, str]] = []
    if authorization:
        headers.append((fdp.PickValueInList(CREDENTIAL_NAMES[:3]), authorization))
    if api_key:
        headers.append((fdp.PickValueInList(CREDENTIAL_NAMES[3:]), api_key))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = fdp.PickValueInList(JUNK_NAMES) if fdp.ConsumeBool() else harness.text(fdp, 12, long=False)
        headers.append((name, harness.text(fdp)))
    if fdp.ConsumeBool():  # Envoy's raw form: bytes values, which the server decodes with errors replaced
        for name, value in headers:
            raw = value.encode() if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
            http.header_map.headers.append(base_pb2.HeaderValue(key=name, raw_value=raw))
    else:
        http.headers.update(dict(headers))
    extensions = {}
    for _ in range(fdp.PickValueInList([0, 0, 0, 1, 2])):
        key = fdp.PickValueInList(EXTENSION_KEYS) if fdp.ConsumeIntInRange(0, 3) else harness.text(fdp, 8, long=False)
        extensions[key] = fdp.PickValueInList(EXTENSION_VALUES) if fdp.ConsumeBool() else harness.text(fdp)
    return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http), context_extensions=extensions))


def credential_values(http) -> tuple[list[str], list[str]]:
    """Every Authorization and X-API-Key value in the request, in either header form."""
    authorization, api_key = [], []
    entries = [(k, v) for k, v in http.headers.items()]
    entries += [(e.key, e.raw_value.decode("utf-8", "replace") if e.raw_value else e.value) for e in http.header_map.headers]
    for name, value in entries:
        if name.lower() == "authorization":
            authorization.append(value)
        elif name.lower() == "x-api-key":
            api_key.append(value)
    return authorization, api_key


def assert_outcome(request: external_auth_pb2.CheckRequest, outcome: harness.Outcome, request_bytes: int) -> None:
    harness.assert_in_time_and_documented(outcome, frozenset(), request_bytes=request_bytes)
    http = request.attributes.request.http
    authorizations, api_keys = credential_values(http)
    credentials = authorizations + api_keys
    quotable = [s for s in harness.strings_in(request) if s not in credentials]
    harness.assert_no_echo(fx, outcome, credentials, quotable)
    if outcome.code is not None:
        return
    response = outcome.response
    kind = response.WhichOneof("http_response")
    reason = response.dynamic_metadata.fields["reason"].string_value
    if kind == "ok_response":
        partners = {fx.partner_of(harness.presented_token(a, "")) for a in authorizations}
        partners |= {fx.partner_of(harness.presented_token("", k)) for k in api_keys}
        partners.discard(None)
        headers = {o.header.key: o.header.value for o in response.ok_response.headers}
        public = harness.is_public_http(http.method, http.path, request.attributes.context_extensions.get("operation", ""))
        if "x-tollgate-partner-id" in headers:
            if headers["x-tollgate-partner-id"] not in partners:
                harness.fail(f"allowed as {headers['x-tollgate-partner-id']!r} without that partner's genuine credential")
        elif not public:
            harness.fail("a non-public allow without a partner")
        return
    if kind != "denied_response":
        harness.fail(f"ext_authz answered {kind}: {response.status.message[:200]!r}")
    denied_partner = response.dynamic_metadata.fields["partner_id"].string_value
    if denied_partner:  # only after a genuine credential was proven, as its partner
        partners = {fx.partner_of(harness.presented_token(a, k)) for a in authorizations or [""]
                    for k in api_keys or [""]}
        if denied_partner not in partners or reason in harness.TOKEN_REASONS:
            harness.fail(f"a {reason!r} deny names {denied_partner!r} without that partner's genuine credential")
    status = response.denied_response.status.code
    expected = 400 if reason == "invalid_request" else harness.DOCUMENTED_REASONS.get(reason)
    if status != expected:
        harness.fail(f"undocumented deny {reason!r} / {status}")


def ready(fixture: harness.Fixture) -> None:
    global fx
    fx = fixture


def main() -> None:
    harness.fuzz_message_target("/envoy.service.auth.v3.Authorization/Check", external_auth_pb2.CheckRequest,
                                external_auth_pb2.CheckResponse, build, assert_outcome, ready)


if __name__ == "__main__":
    main()
