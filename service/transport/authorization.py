"""tollgate.v1.Authorization: translate, call the use case, translate back."""

from __future__ import annotations

import time
import uuid

from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from ..telemetry import Telemetry
from ..usecases.check import CheckService
from .convert import check_query_from_proto, check_response_to_proto
from .errors import translate_errors


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServicer):
    def __init__(self, checks: CheckService, realm: str, telemetry: Telemetry) -> None:
        self._checks = checks
        self._realm = realm
        self._telemetry = telemetry

    @translate_errors
    def Check(self, request: authorization_pb2.CheckRequest, context) -> authorization_pb2.CheckResponse:
        started = time.perf_counter()
        query = check_query_from_proto(request)
        decision = self._checks.check(query)
        decision_id = uuid.uuid4().hex
        self._telemetry.record_decision("native", query.operation, decision, decision_id,
                                        time.perf_counter() - started)
        return check_response_to_proto(decision, realm=self._realm, decision_id=decision_id)
