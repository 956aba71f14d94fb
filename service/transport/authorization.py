"""tollgate.v1.Authorization: translate, call the checker, translate back."""

from __future__ import annotations

import time

import grpc
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from ..check.ports import Checker
from ..check.query import BatchQuery, CheckCall, CheckQuery
from ..domain.ids import new_decision_id
from ..telemetry import Telemetry
from .convert import check_items_from_proto, check_query_from_proto, revision_from_token
from .decoding import decode_request, takes_bytes
from .errors import translate_errors
from .metadata import peer_address
from .responses import CheckResponses

CHECK_METHOD = "/tollgate.v1.Authorization/Check"


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServicer):
    def __init__(self, checker: Checker, realm: str, telemetry: Telemetry, *, client_addresses: bool = True) -> None:
        """`client_addresses`: whether to say where each credential comes from when the request
        does not (the gRPC peer), for the failed-credential limit; off saves asking the peer."""
        self._checker = checker
        self._responses = CheckResponses(realm)
        self._telemetry = telemetry
        self._client_addresses = client_addresses

    @translate_errors
    @takes_bytes
    def Check(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        """Bytes in and bytes out (see decoding.takes_bytes): the checker decodes the request only
        if it needs to (a decision kept for identical bytes does not)."""
        started = time.perf_counter()
        call = CheckCall(lambda: self._check_query(raw, context), raw)
        decision, steps, _, recalled = self._checker.check(call)
        decision_id = new_decision_id()
        self._telemetry.record_decision("native", "" if decision.allowed else call.query().operation, decision,
                                        decision_id, time.perf_counter() - started, recalled)
        if steps is not None:
            return self._responses.message(decision, decision_id, steps).SerializeToString()
        return self._responses.serialized(decision, decision_id)

    @translate_errors
    def BatchCheck(self, request: authorization_pb2.BatchCheckRequest,
                   context: grpc.ServicerContext) -> authorization_pb2.BatchCheckResponse:
        started = time.perf_counter()
        items = check_items_from_proto(request)
        checked = self._checker.check_batch(BatchQuery(
            request.authorization, request.api_key, items, revision_from_token(request.at_least_as_fresh),
            self._client_address(request, context), request.explain))
        seconds = (time.perf_counter() - started) / len(checked)
        results = []
        for item, (decision, steps, _, _) in zip(items, checked, strict=True):
            decision_id = new_decision_id()
            self._telemetry.record_decision("batch", item.operation, decision, decision_id, seconds)
            results.append(self._responses.message(decision, decision_id, steps))
        return authorization_pb2.BatchCheckResponse(results=results)

    def _check_query(self, raw: bytes, context: grpc.ServicerContext) -> CheckQuery:
        request = decode_request(authorization_pb2.CheckRequest.FromString, raw, CHECK_METHOD)
        return check_query_from_proto(request, self._client_address(request, context) if self._client_addresses
                                      else request.client_address)

    def _client_address(self, request: authorization_pb2.CheckRequest | authorization_pb2.BatchCheckRequest,
                        context: grpc.ServicerContext) -> str:
        """Where the credential comes from: the request's own client_address, else the gRPC peer."""
        if request.client_address or not self._client_addresses:
            return request.client_address
        return peer_address(context)
