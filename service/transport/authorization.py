"""tollgate.v1.Authorization: translate, call the use case, translate back."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace

from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from ..domain.decision import Decision
from ..domain.explain import Step
from ..domain.ids import new_decision_id
from ..telemetry import Telemetry
from ..usecases.check import CheckService
from .convert import (
    check_items_from_proto,
    check_query_from_proto,
    check_response_to_proto,
    explained_check_response,
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
            if request.explain:  # never recalled above: explained checks are never remembered
                return self._explained(query, request.operation, started).SerializeToString()
            decision = checks.check(query, memo_key)
        elif request is None and not decision.allowed:  # denials are logged with their operation
            request = _check_request(raw)
        decision_id = new_decision_id()
        self._telemetry.record_decision("native", "" if request is None else request.operation, decision, decision_id,
                                        time.perf_counter() - started, recalled)
        return serialized_check_response(decision, realm=self._realm, decision_id=decision_id, recalled=recalled)

    def _explained(self, query, operation: str, started: float) -> authorization_pb2.CheckResponse:
        decision, steps = self._checks.explain(query)
        decision_id = new_decision_id()
        self._telemetry.record_decision("native", operation, decision, decision_id, time.perf_counter() - started)
        return explained_check_response(decision, steps, realm=self._realm, decision_id=decision_id)

    @translate_errors
    def BatchCheck(self, request: authorization_pb2.BatchCheckRequest, context) -> authorization_pb2.BatchCheckResponse:
        started = time.perf_counter()
        items = check_items_from_proto(request)
        arguments = (request.authorization, request.api_key, items, revision_from_token(request.at_least_as_fresh),
                     self._client_address(request, context))
        explained: Sequence[tuple[Decision, tuple[Step, ...] | None]]
        if request.explain:
            explained = self._checks.explain_batch(*arguments)
        else:
            explained = [(decision, None) for decision in self._checks.check_batch(*arguments)]
        seconds = (time.perf_counter() - started) / len(explained)
        results = []
        for item, (decision, steps) in zip(items, explained, strict=True):
            decision_id = new_decision_id()
            self._telemetry.record_decision("batch", item.operation, decision, decision_id, seconds)
            results.append(check_response_to_proto(decision, realm=self._realm, decision_id=decision_id)
                           if steps is None else
                           explained_check_response(decision, steps, realm=self._realm, decision_id=decision_id))
        return authorization_pb2.BatchCheckResponse(results=results)

    def _client_address(self, request, context) -> str:
        """Where the credential comes from, for the failed-credential limit: the request's own
        client_address, else the gRPC peer; "" when the limit is off (the peer is not asked)."""
        if request.client_address or not self._checks.limits_failed_credentials:
            return request.client_address
        return peer_address(context)
