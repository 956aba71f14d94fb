"""envoy.service.auth.v3.Authorization: Envoy's ext_authz on the same core as tollgate.v1.Check.

Every outcome is a CheckResponse: allow, deny (with the gateway-ready body), 400 for a request the
operation cannot be checked on, and error_response (503) for our own failures — never an allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from hashlib import sha256
from typing import NamedTuple

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from ..check.ports import Checker
from ..check.query import CheckCall, CheckQuery
from ..domain.bounded import BoundedMap
from ..domain.errors import InvalidRequest
from ..domain.ids import new_decision_id
from ..domain.policy import Policy
from ..telemetry import Telemetry
from .decoding import decode_request, takes_bytes
from .errors import deadline_passed, rich_status, status_code_for
from .ext_authz_convert import (
    check_query_from_ext_authz,
    decisive_bytes,
    ext_authz_invalid,
    ext_authz_unavailable,
    query_parameters_to_remove,
    request_name,
)
from .metadata import peer_address
from .responses import ExtAuthzResponses

log = logging.getLogger("tollgate.ext_authz")

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
# As many request names as the decision memo keeps decisions (emptied when full, as it is).
MAX_CONVERTED = 10_000


class _Converted(NamedTuple):
    """What a request converts to under one policy, kept by its name: all a recalled decision's
    response needs of the query. Never the credential."""

    policy: Policy
    operation: str
    remove_query_parameters: tuple[str, ...]


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, checker: Checker, policy: Callable[[], Policy], realm: str, telemetry: Telemetry, *,
                 client_addresses: bool = True, names_requests: bool = True) -> None:
        """`client_addresses`: whether to say where each credential comes from, for the
        failed-credential limit; off saves reading it from the request. `names_requests`: whether
        to name each call, for a decision memo to recall; off (no memo) saves making the names."""
        self._checker = checker
        self._client_addresses = client_addresses
        self._names_requests = names_requests
        self._policy = policy
        self._responses = ExtAuthzResponses(realm)
        self._telemetry = telemetry
        # By the SHA-256 of request_name(): a request seen before is answered from the memo without
        # being converted at all (headers, route match, resource ids).
        self._converted: BoundedMap[bytes, _Converted] = BoundedMap(MAX_CONVERTED)

    @takes_bytes
    def Check(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        """Bytes in and bytes out (see decoding.takes_bytes): the response is its template's
        encoding with the decision id written in."""
        started = time.perf_counter()
        decision_id = new_decision_id()
        if deadline_passed(context):  # Envoy has given up on this call: start no store work for it
            return ext_authz_unavailable(decision_id).SerializeToString()
        try:
            request = decode_request(external_auth_pb2.CheckRequest.FromString, raw, CHECK_METHOD)
        except InvalidRequest as refusal:  # a malformed call, not a request to decide: no CheckResponse
            context.abort_with_status(rich_status(status_code_for(refusal), refusal.message, refusal.reason))
        policy = self._policy()
        try:
            call, converted = self._call(request, policy, self._client_address(request, context))
            decision, _, _, recalled = self._checker.check(call)
        except InvalidRequest as error:
            return ext_authz_invalid(error.message, error.field, decision_id).SerializeToString()
        except Exception:  # store down or a bug: fail closed, let Envoy's failure policy apply
            log.warning("ext_authz check failed; answering 503", exc_info=True)
            self._telemetry.record_store_error("ext_authz")
            return ext_authz_unavailable(decision_id).SerializeToString()
        operation = converted.operation
        self._telemetry.record_decision("ext_authz", operation, decision, decision_id,
                                        time.perf_counter() - started, recalled)
        return self._responses.serialized(decision, decision_id, operation, policy.strip_credential_headers,
                                          converted.remove_query_parameters)

    def _call(self, request: external_auth_pb2.CheckRequest, policy: Policy,
              client_address: str) -> tuple[CheckCall, _Converted]:
        """The call to check, named for the decision memo when one is stacked, and what its query
        converts to. A request whose name was seen under this policy is converted only if the
        memo has no decision for it."""
        routes = policy.routes
        name = request_name(request, routes, client_address) if self._names_requests else None
        if name is None:
            query = check_query_from_ext_authz(request, routes, client_address)
            request_bytes = decisive_bytes(query) if self._names_requests else None
            return CheckCall.of(query, request_bytes), _converted(policy, query)
        digest = sha256(name).digest()
        converted = self._converted.get(digest)
        if converted is not None and converted.policy is policy:
            return CheckCall(lambda: check_query_from_ext_authz(request, routes, client_address), name,
                             digest), converted
        query = check_query_from_ext_authz(request, routes, client_address)
        converted = _converted(policy, query)
        self._converted.put(digest, converted)
        return CheckCall.of(query, name, digest), converted

    def _client_address(self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext) -> str:
        """The downstream client as Envoy saw it; the sidecar itself only when it says nothing."""
        if not self._client_addresses:
            return ""
        return request.attributes.source.address.socket_address.address or peer_address(context)


def _converted(policy: Policy, query: CheckQuery) -> _Converted:
    return _Converted(policy, query.operation, query_parameters_to_remove(query))
