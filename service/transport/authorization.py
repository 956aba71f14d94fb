"""tollgate.v1.Authorization: translate, call the use case, translate back."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from ..domain.ids import new_decision_id
from ..telemetry import Telemetry
from ..usecases.check import CheckService
from .convert import (
    check_items_from_proto,
    check_query_from_proto,
    check_response_to_proto,
    revision_from_token,
    serialized_check_response,
)
from .decoding import decode_request, takes_bytes
from .errors import translate_errors
from .metadata import peer_address


CHECK_METHOD = "/tollgate.v1.Authorization/Check"


def _check_request(raw: bytes) -> authorization_pb2.CheckRequest:
    return decode_request(authorization_pb2.CheckRequest.FromString, raw, CHECK_METHOD)


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServicer):
    def __init__(self, checks: CheckService, realm: str, telemetry: Telemetry) -> None:
        self._checks = checks
        self._realm = realm
        self._telemetry = telemetry

    @translate_errors
    @takes_bytes
    def Check(self, raw: bytes, context) -> bytes:
        """Bytes in and bytes out (see decoding.takes_bytes): a request identical to an earlier one
        is found in the decision memo by the digest of its bytes and answered without decoding it."""
        started = time.perf_counter()
        checks = self._checks
        request = decision = memo_key = client_address = None
        if checks.remembers_decisions:
            # The whole request names the decision (a digest: the request holds the credential).
            memo_key = hashlib.sha256(raw).digest()
            if checks.limits_failed_credentials:  # the request may say where its credential comes from
                request = _check_request(raw)
                client_address = self._client_address(request, context)
            decision = checks.recall(memo_key, client_address or "")
        recalled = decision is not None
        if decision is None:
            if request is None:
                request = _check_request(raw)
            if client_address is None:
                client_address = self._client_address(request, context)
            query = check_query_from_proto(request)
            if client_address != query.client_address:
                query = replace(query, client_address=client_address)
            decision = checks.check(query, memo_key)
        elif request is None and not decision.allowed:  # denials are logged with their operation
            request = _check_request(raw)
        decision_id = new_decision_id()
        self._telemetry.record_decision("native", "" if request is None else request.operation, decision, decision_id,
                                        time.perf_counter() - started, recalled)
        return serialized_check_response(decision, realm=self._realm, decision_id=decision_id, recalled=recalled)

    @translate_errors
    def BatchCheck(self, request: authorization_pb2.BatchCheckRequest, context) -> authorization_pb2.BatchCheckResponse:
        started = time.perf_counter()
        items = check_items_from_proto(request)
        decisions = self._checks.check_batch(request.authorization, request.api_key, items,
                                             revision_from_token(request.at_least_as_fresh),
                                             self._client_address(request, context))
        seconds = (time.perf_counter() - started) / len(decisions)
        results = []
        for item, decision in zip(items, decisions):
            decision_id = new_decision_id()
            self._telemetry.record_decision("batch", item.operation, decision, decision_id, seconds)
            results.append(check_response_to_proto(decision, realm=self._realm, decision_id=decision_id))
        return authorization_pb2.BatchCheckResponse(results=results)

    def _client_address(self, request, context) -> str:
        """Where the credential comes from, for the failed-credential limit: the request's own
        client_address, else the gRPC peer; "" when the limit is off (the peer is not asked)."""
        if request.client_address or not self._checks.limits_failed_credentials:
            return request.client_address
        return peer_address(context)
