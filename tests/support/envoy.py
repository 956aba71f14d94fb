"""Building Envoy ext_authz v3 requests with the xds-protos client code, as a sidecar would."""

from __future__ import annotations

from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

# operation -> (method, path template) of the example policy's routes
ROUTE_OF = {
    "health": ("GET", "/health"),
    "getUser": ("GET", "/v1/users/{user_id}"),
    "updateUser": ("PATCH", "/v1/users/{user_id}"),
    "getOrganization": ("GET", "/v1/organizations/{organization_id}"),
    "createCourtBooking": ("POST", "/v1/court-bookings"),
    "listCustomerOrders": ("GET", "/v1/customers/{customer_id}/orders"),
}


def ext_authz_request(method: str, path: str, headers: dict[str, str] | None = None,
                      context_extensions: dict[str, str] | None = None) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="req-1", method=method, path=path, host="api.example.test", scheme="https", protocol="HTTP/1.1",
        headers={":authority": "api.example.test", "user-agent": "test", **(headers or {})})
    return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http),
        context_extensions=context_extensions or {}))


def ext_authz_request_for(operation: str, *, authorization: str = "", api_key: str = "", user_id: str = "",
                          organization_id: str = "", customer_id: str = "", permissions=()):
    """The HTTP request that the example routes map to this native check (None when none does)."""
    if permissions:
        return None
    method, template = ROUTE_OF.get(operation, ("GET", f"/v1/unknown/{operation}" if operation else "/"))
    path = template.format(user_id=user_id, organization_id=organization_id, customer_id=customer_id)
    headers = {}
    if authorization:
        headers["authorization"] = authorization
    if api_key:
        headers["x-api-key"] = api_key
    return ext_authz_request(method, path, headers)


def ext_authz_stub(channel) -> external_auth_pb2_grpc.AuthorizationStub:
    return external_auth_pb2_grpc.AuthorizationStub(channel)
