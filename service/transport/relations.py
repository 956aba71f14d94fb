"""tollgate.v1.Relations: authenticate the caller, translate, call the use case, translate back."""

from __future__ import annotations

from tollgate.v1 import relations_pb2, relations_pb2_grpc

from ..domain.errors import DomainError, InvalidRequest
from ..telemetry import Telemetry
from ..usecases.callers import Caller, CallerAuthenticator
from ..usecases.relations import RelationService
from .convert import (
    duration_or_none,
    event_to_proto,
    relation_filter_from_proto,
    relation_to_proto,
    revision_token,
    timestamp,
)
from .errors import translate_errors
from .metadata import credential_headers

Response = relations_pb2.ManageRelationResponse


class RelationsServicer(relations_pb2_grpc.RelationsServicer):
    def __init__(self, relations: RelationService, callers: CallerAuthenticator, telemetry: Telemetry) -> None:
        self._relations = relations
        self._callers = callers
        self._telemetry = telemetry

    def _caller(self, context) -> Caller:
        return self._callers.authenticate(*credential_headers(context))

    @translate_errors
    def ManageRelation(self, request: relations_pb2.ManageRelationRequest, context) -> Response:
        action = request.WhichOneof("action")
        if action is None:
            raise InvalidRequest("exactly one action must be set", field="action")
        try:
            response = getattr(self, f"_{action}")(self._caller(context), getattr(request, action))
        except DomainError as error:
            self._telemetry.record_relation_change(action, error.reason)
            raise
        self._telemetry.record_relation_change(action, "ok")
        response.revision = revision_token(self._relations.current_revision())
        return response

    def _request_user_relation(self, caller: Caller, action: relations_pb2.RequestUserRelation) -> Response:
        relation, created = self._relations.request_user_relation(caller, action.user_id, action.partner_id)
        return Response(relation=relation_to_proto(relation), created=created)

    def _approve_user_relation(self, caller: Caller, action: relations_pb2.ApproveUserRelation) -> Response:
        ttl = duration_or_none(action, "ttl", "approve_user_relation.ttl")
        return Response(relation=relation_to_proto(
            self._relations.approve_user_relation(caller, action.relation_id, ttl, action.reason)))

    def _reject_user_relation(self, caller: Caller, action: relations_pb2.RejectUserRelation) -> Response:
        return Response(relation=relation_to_proto(
            self._relations.reject_user_relation(caller, action.relation_id, action.reason)))

    def _revoke_relation(self, caller: Caller, action: relations_pb2.RevokeRelation) -> Response:
        return Response(relation=relation_to_proto(
            self._relations.revoke_relation(caller, action.relation_id, action.reason)))

    def _issue_connect_token(self, caller: Caller, action: relations_pb2.IssueConnectToken) -> Response:
        issued = self._relations.issue_connect_token(
            caller, action.organization_id, action.issued_by,
            duration_or_none(action, "ttl", "issue_connect_token.ttl"),
            duration_or_none(action, "relation_ttl", "issue_connect_token.relation_ttl"),
        )
        return Response(connect_token=relations_pb2.ConnectToken(
            id=issued.record.id, token=issued.token, organization_id=issued.record.organization_id,
            expire_time=timestamp(issued.record.expires_at),
        ))

    def _claim_organization_relation(self, caller: Caller, action: relations_pb2.ClaimOrganizationRelation) -> Response:
        return Response(relation=relation_to_proto(
            self._relations.claim_organization_relation(caller, action.connect_token)))

    @translate_errors
    def GetRelation(self, request: relations_pb2.GetRelationRequest, context) -> relations_pb2.GetRelationResponse:
        relation, events = self._relations.get_relation(self._caller(context), request.relation_id)
        return relations_pb2.GetRelationResponse(
            relation=relation_to_proto(relation), events=[event_to_proto(e) for e in events])

    @translate_errors
    def ListRelations(self, request: relations_pb2.ListRelationsRequest,
                      context) -> relations_pb2.ListRelationsResponse:
        caller = self._caller(context)
        page, next_token = self._relations.list_relations(
            caller, relation_filter_from_proto(request), request.page_size, request.page_token)
        return relations_pb2.ListRelationsResponse(
            relations=[relation_to_proto(r) for r in page], next_page_token=next_token)
