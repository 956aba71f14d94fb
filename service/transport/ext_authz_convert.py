"""Pure conversions between Envoy's ext_authz v3 messages and the core's check and decision.

The same CheckQuery goes to the same Checker as the native API, so a request decides the same way
through either adapter; only the envelope differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qs

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from ..check.query import CheckQuery
from ..domain.credentials import QueryApiKey
from ..domain.decide import Resource, api_field_name
from ..domain.decision import Decision, error_body, www_authenticate
from ..domain.routes import RESOURCE_FIELDS, RouteTable, ValueSource, query_parameter_values

# Identity headers set for the upstream on allow. Clients may send look-alikes: the ones we set
# overwrite them, the ones we do not set are removed (Envoy applies headers_to_remove after
# headers, so a header may never be in both), so an upstream can trust them.
PARTNER_HEADER = "x-tollgate-partner-id"
CREDENTIAL_HEADER = "x-tollgate-credential-id"
SCOPES_HEADER = "x-tollgate-scopes"
DECISION_HEADER = "x-tollgate-decision-id"
IDENTITY_HEADERS = (PARTNER_HEADER, CREDENTIAL_HEADER, SCOPES_HEADER, DECISION_HEADER)
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
# The filter's per-route context_extensions key that names the operation (beats the route table).
OPERATION_EXTENSION = "operation"
# Unrouted operations, and the operation echoed in dynamic_metadata, are cut to this length (an
# operation from context_extensions is decided whole but never echoed whole: a caller of the gRPC
# port may send one of any length).
MAX_UNROUTED_LENGTH = 200

_JSON = "application/json"
_RPC_CODE_OF_STATUS = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED, 429: code_pb2.RESOURCE_EXHAUSTED}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def request_headers(request: external_auth_pb2.CheckRequest) -> dict[str, str]:
    """Lower-cased headers, from `headers` or (when Envoy sends raw headers) `header_map`."""
    http = request.attributes.request.http
    if http.headers:
        return {k.lower(): v for k, v in http.headers.items()}
    headers: dict[str, str] = {}
    for entry in http.header_map.headers:
        value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
        headers.setdefault(entry.key.lower(), value)
    return headers


def check_query_from_ext_authz(request: external_auth_pb2.CheckRequest, routes: RouteTable,
                               client_address: str = "") -> CheckQuery:
    """Operation from context_extensions or the route table; resource ids from the matched route,
    overlaid by context_extensions `user_id`/`organization_id`/`customer_id` sources
    (`query.<name>` or `header.<name>`). No match decides as unknown_operation. Where the policy
    names an API key query parameter for the route, its values go along (the headers win)."""
    http = request.attributes.request.http
    headers = request_headers(request)
    extensions = request.attributes.context_extensions
    routed = routes.resolve(http.method, http.path, headers)
    # Unrouted requests keep "METHOD /path" as their (undeclared) operation, so the deny says what
    # was asked for; the query string is left out, it may carry secrets.
    unrouted = f"{http.method} {http.path.partition('?')[0]}"[:MAX_UNROUTED_LENGTH]
    operation = extensions.get(OPERATION_EXTENSION) or (routed.operation if routed else unrouted)
    resource = dict(routed.resource) if routed else {}
    resource.update(_extension_resource(extensions, http.path, headers))
    key_parameter = routes.api_key_query_parameter_of(routed)
    key_values = query_parameter_values(http.path, key_parameter) if key_parameter else ()
    return CheckQuery(
        authorization=headers.get("authorization", ""),
        api_key=headers.get("x-api-key", ""),
        operation=operation,
        resource=Resource(**{f: resource.get(f, "") for f in RESOURCE_FIELDS}),
        client_address=client_address,
        query_api_key=QueryApiKey(key_parameter, key_values) if key_values else None,
    )


def decisive_bytes(query: CheckQuery) -> bytes:
    """What an ext_authz request is named by for the decision memo when request_name cannot name
    it: every part of its query, the one thing its decision depends on besides the facts and the
    policy (which the memo watches). Envoy's own request bytes never repeat (a request id, times,
    per-request headers); these do whenever a client repeats a request."""
    resource, key = query.resource, query.query_api_key
    return _named(("query", query.at_least_as_fresh, query.explain, query.authorization, query.api_key,
                   query.operation, resource.user_id, resource.organization_id, resource.customer_id,
                   query.client_address, tuple(query.permissions), key and (key.parameter, key.values)))


def request_name(request: external_auth_pb2.CheckRequest, routes: RouteTable, client_address: str) -> bytes | None:
    """A name for an ext_authz request made from the fields check_query_from_ext_authz reads,
    before reading them: the method, the raw path (its query string included), the credential
    headers, the headers `routes` or a context_extensions source reads a resource id from, the
    extensions that name the operation or a resource id, and the client address. Two requests of
    one name convert to one query under `routes`, so the name may stand for the query (a memo that
    keeps decisions by it must also watch the policy). None when the headers come as a raw
    header_map or with an upper-case name: those are named by their query (decisive_bytes)."""
    http = request.attributes.request.http
    headers = http.headers
    if not headers:
        return None
    names = "".join(headers)  # the map's keys, iterated in C
    if names != names.lower():  # a mixed-case name: request_headers folds it, a lookup here would not
        return None
    get = headers.get
    read = routes.header_names
    parts = ("request", http.method, http.path, get("authorization", ""), get("x-api-key", ""), client_address,
             tuple([get(name, "") for name in read]) if read else ())
    extensions = request.attributes.context_extensions
    if not extensions:
        return _named(parts)
    sources = [extensions.get(field, "") for field in RESOURCE_FIELDS]
    return _named((*parts, extensions.get(OPERATION_EXTENSION, ""), *sources,
                   *[get(source[7:].lower(), "") for source in sources if source.startswith("header.")]))


def _named(parts: tuple[object, ...]) -> bytes:
    """`parts` (strings, numbers, None and tuples of them) as bytes that no other parts share: a
    tuple's repr, in which every string is quoted and escaped."""
    return repr(parts).encode("utf-8")


def query_parameters_to_remove(query: CheckQuery) -> tuple[str, ...]:
    """The API key query parameter whenever the request sent it, used or not (a header credential
    won), so that on an allow Envoy strips it and the upstream never sees the key."""
    return (query.query_api_key.parameter,) if query.query_api_key is not None else ()


def _extension_resource(extensions: Mapping[str, str], path: str, headers: Mapping[str, str]) -> dict[str, str]:
    sources = {field: extensions[field].partition(".") for field in RESOURCE_FIELDS if field in extensions}
    if not sources:  # the usual case: the route table says where the ids are
        return {}
    query = parse_qs(path.partition("?")[2])
    return {field: ValueSource(kind, name).read({}, query, headers)
            for field, (kind, _, name) in sources.items() if kind in ("query", "header") and name}


def ext_authz_response(decision: Decision, *, realm: str, decision_id: str, operation: str,
                       strip_credentials: bool, remove_query_parameters: tuple[str, ...] = ()
                       ) -> external_auth_pb2.CheckResponse:
    response = ext_authz_template(decision, realm, operation, strip_credentials)
    fill_ext_authz_response(response, decision, decision_id, remove_query_parameters)
    return response


def fill_ext_authz_response(response: external_auth_pb2.CheckResponse, decision: Decision, decision_id: str,
                            remove_query_parameters: tuple[str, ...]) -> None:
    """Sets what differs between the checks that reach one template: the decision id, in each place
    the template holds an empty one (the metadata, twice on an allow, and on an allow the first
    identity header), and the query parameters to remove."""
    response.dynamic_metadata.fields["decision_id"].string_value = decision_id
    if decision.allowed:
        ok = response.ok_response
        ok.dynamic_metadata.fields["decision_id"].string_value = decision_id
        ok.headers[0].header.value = decision_id
        if remove_query_parameters:
            ok.query_parameters_to_remove.extend(remove_query_parameters)


def ext_authz_template(decision: Decision, realm: str, operation: str, strip_credentials: bool,
                       decision_id: str = "") -> external_auth_pb2.CheckResponse:
    """The response to `decision`, all but what fill_ext_authz_response sets, with `decision_id`
    where that sets the decision id."""
    metadata = _metadata(decision, decision_id, operation)
    if decision.allowed:
        identity = _identity_headers(decision, decision_id)
        unset = [name for name in IDENTITY_HEADERS if name not in {o.header.key for o in identity}]
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=identity, headers_to_remove=[*unset, *(CREDENTIAL_HEADERS if strip_credentials else ())],
                dynamic_metadata=metadata),
            dynamic_metadata=metadata)
    headers = [_header("content-type", _JSON)]
    challenge = www_authenticate(decision, realm)
    if challenge:
        headers.append(_header("www-authenticate", challenge))
    if decision.retry_after:
        headers.append(_header("retry-after", str(decision.retry_after)))
    code = _RPC_CODE_OF_STATUS.get(decision.http_status, code_pb2.PERMISSION_DENIED)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=decision.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.http_status), headers=headers,
            body=error_body(decision)),
        dynamic_metadata=metadata)


def ext_authz_invalid(message: str, field: str, decision_id: str) -> external_auth_pb2.CheckResponse:
    """A request the route table resolved but that lacks what the operation needs: 400, denied.
    `field`: the request field as the core names it; the body names it as the partner API does
    ("resource.user_id" -> "userId"), as the 403 bodies do."""
    error = {"reason": "invalid_request", "message": message, "field": api_field_name(field)}
    body = json.dumps({"code": 400, "errors": [error]}, separators=(",", ":"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=400), headers=[_header("content-type", _JSON)], body=body),
        dynamic_metadata=_struct({"reason": "invalid_request", "decision_id": decision_id}))


def ext_authz_unavailable(decision_id: str) -> external_auth_pb2.CheckResponse:
    """Our own failure: error_response (503) so Envoy's failure_mode_allow / status_on_error
    apply. Never an allow."""
    body = json.dumps({"code": 503, "errors": [{"reason": "authorization_unavailable",
                                                "message": "authorization is temporarily unavailable"}]},
                      separators=(",", ":"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAVAILABLE, message="authorization is temporarily unavailable"),
        error_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=503), headers=[_header("content-type", _JSON)], body=body),
        dynamic_metadata=_struct({"reason": "authorization_unavailable", "decision_id": decision_id}))


def _identity_headers(decision: Decision, decision_id: str) -> list[base_pb2.HeaderValueOption]:
    values = {DECISION_HEADER: decision_id}  # first: ext_authz_response sets it by position
    if decision.principal is not None:
        values[PARTNER_HEADER] = decision.principal.partner_id
        values[CREDENTIAL_HEADER] = decision.principal.credential_id
        values[SCOPES_HEADER] = " ".join(str(grant) for grant in decision.grants)
    return [_header(name, value) for name, value in values.items()]


def _metadata(decision: Decision, decision_id: str, operation: str) -> struct_pb2.Struct:
    """Who was decided about (allow or deny, whenever the credential was proven; empty when none
    was recognised), for Envoy's access log. Never a credential, only its id."""
    principal = decision.principal
    return _struct({
        "decision_id": decision_id,
        "allowed": decision.allowed,
        "reason": decision.reason.value if decision.reason else "",
        "operation": operation[:MAX_UNROUTED_LENGTH],
        "partner_id": principal.partner_id if principal else "",
        "credential_id": principal.credential_id if principal else "",
        "credential_kind": principal.kind.value if principal else "",
    })


def _struct(values: dict) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)
