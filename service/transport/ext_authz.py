"""envoy.service.auth.v3.Authorization: Envoy's ext_authz on the same core as tollgate.v1.Check.

Every outcome is a CheckResponse: allow, deny (with the gateway-ready body), 400 for a request the
operation cannot be checked on, and error_response (503) for our own failures — never an allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from ..check.ports import Checker
from ..check.query import CheckCall
from ..domain.errors import InvalidRequest
from ..domain.ids import new_decision_id
from ..domain.policy import Policy
from ..telemetry import Telemetry
from .errors import deadline_passed
from .ext_authz_convert import (
    check_query_from_ext_authz,
    decisive_bytes,
    ext_authz_invalid,
    ext_authz_unavailable,
    query_parameters_to_remove,
)
from .metadata import peer_address
from .responses import ExtAuthzResponses

log = logging.getLogger("tollgate.ext_authz")


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, checker: Checker, policy: Callable[[], Policy], realm: str, telemetry: Telemetry, *,
                 client_addresses: bool = True, names_requests: bool = True) -> None:
        """`client_addresses`: whether to say where each credential comes from, for the
        failed-credential limit; off saves reading it from the request. `names_requests`: whether
        to name each call by its query's decisive parts, for a decision memo to recall; off (no
        memo) saves encoding them."""
        self._checker = checker
        self._client_addresses = client_addresses
        self._names_requests = names_requests
        self._policy = policy
        self._responses = ExtAuthzResponses(realm)
        self._telemetry = telemetry

    def Check(self, request: external_auth_pb2.CheckRequest,
              context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        decision_id = new_decision_id()
        if deadline_passed(context):  # Envoy has given up on this call: start no store work for it
            return ext_authz_unavailable(decision_id)
        policy = self._policy()
        try:
            query = check_query_from_ext_authz(request, policy.routes, self._client_address(request, context))
            # Named by its query's decisive parts, so a repeated request can be answered by the memo.
            decision, _, _, recalled = self._checker.check(
                CheckCall.of(query, decisive_bytes(query) if self._names_requests else None))
        except InvalidRequest as error:
            return ext_authz_invalid(error.message, error.field, decision_id)
        except Exception:  # store down or a bug: fail closed, let Envoy's failure policy apply
            log.warning("ext_authz check failed; answering 503", exc_info=True)
            self._telemetry.record_store_error("ext_authz")
            return ext_authz_unavailable(decision_id)
        self._telemetry.record_decision("ext_authz", query.operation, decision, decision_id,
                                        time.perf_counter() - started, recalled)
        return self._responses.response(decision, decision_id, operation=query.operation,
                                        strip_credentials=policy.strip_credential_headers,
                                        remove_query_parameters=query_parameters_to_remove(query))

    def _client_address(self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext) -> str:
        """The downstream client as Envoy saw it; the sidecar itself only when it says nothing."""
        if not self._client_addresses:
            return ""
        return request.attributes.source.address.socket_address.address or peer_address(context)
