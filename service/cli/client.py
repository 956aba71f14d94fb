"""`tollgate client …`: calls a running server over gRPC with the generated stubs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import duration_pb2
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc, common_pb2, relations_pb2, relations_pb2_grpc

from .output import Column, CommandFailed, Output
from .values import read_text

CALL_TIMEOUT_SECONDS = 10.0
CONNECT_TOKEN_WARNING = "this is the only time the connect token is shown; hand it to the partner now"

DECISION_LINES: list[Column] = [("allowed", "allowed"), ("http_status", "http_status"), ("reason", "reason"),
                                ("message", "message"), ("field", "field"), ("body", "body"),
                                ("partner", "partner_id"), ("grants", "grants"), ("decision_id", "decision_id")]
STEP_COLUMNS: list[Column] = [("step", "step"), ("outcome", "outcome"), ("facts", "facts_text")]
# The order facts are shown in (a proto map keeps none): as each step lists them, then any others.
FACT_ORDER = ("operation", "known", "public", "needs", "presented", "partner_id", "credential_id", "credential_kind",
              "reason", "enabled", "retry_after_seconds", "needed", "held", "missing", "subject_type", "subject_id",
              "relation_id", "relation_status", "expires_at", "demand", "claim", "token_user", "user_id",
              "customer_id", "credential_customer_ids", "why")
RELATION_LINES: list[Column] = [("id", "id"), ("partner", "partner_id"), ("subject", "subject_type"),
                                ("subject id", "subject_id"), ("status", "status"), ("created", "created_at"),
                                ("updated", "updated_at"), ("expires", "expires_at")]


# -- plumbing ------------------------------------------------------------------------------------

def credential(args: argparse.Namespace) -> str:
    return args.key or args.token or os.environ.get("TOLLGATE_CREDENTIAL", "")


def _open_channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS when a CA file is given (with a client certificate for mutual TLS)."""
    if not args.tls_ca:
        return grpc.insecure_channel(args.target)

    def read(path: str | None) -> bytes | None:
        return read_text(path, "TLS file").encode() if path else None

    return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(
        read(args.tls_ca), read(args.tls_client_key), read(args.tls_client_cert)))


@contextmanager
def channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    with _open_channel(args) as opened:
        try:
            yield opened
        except grpc.RpcError as error:
            raise call_failed(error) from None


def call_failed(error: grpc.RpcError) -> CommandFailed:
    """`error: <CODE>: <details>`, exit 1; the ErrorInfo reason and field go into the JSON error."""
    code = error.code().name if callable(getattr(error, "code", None)) else "UNKNOWN"
    details = (error.details() if callable(getattr(error, "details", None)) else "") or ""
    reason, field = _error_info(error)
    return CommandFailed(f"{code}: {details}", exit_code=1, code=code, reason=reason, field=field)


def _error_info(error: grpc.RpcError) -> tuple[str, str]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]  # a call's RpcError is also its grpc.Call
    except (ValueError, AttributeError):
        return "", ""
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, info.metadata.get("field", "")
    return "", ""


def _bearer_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    value = credential(args)
    return [("authorization", f"Bearer {value}")] if value else []


def _iso(message: Any, field: str) -> str | None:
    if not message.HasField(field):
        return None
    stamp = getattr(message, field).ToDatetime(tzinfo=UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix).lower()


def relation_view(relation: relations_pb2.Relation) -> dict[str, Any]:
    return {
        "id": relation.id,
        "partner_id": relation.partner_id,
        "subject_type": _enum(relations_pb2.SubjectType, relation.subject_type, "SUBJECT_TYPE_"),
        "subject_id": relation.subject_id,
        "status": _enum(relations_pb2.RelationStatus, relation.status, "RELATION_STATUS_"),
        "created_at": _iso(relation, "create_time"),
        "updated_at": _iso(relation, "update_time"),
        "expires_at": _iso(relation, "expire_time"),
    }


def event_view(event: relations_pb2.RelationEvent) -> dict[str, Any]:
    from_status = _enum(relations_pb2.RelationStatus, event.from_status, "RELATION_STATUS_")
    return {
        "id": event.id,
        "time": _iso(event, "time"),
        "actor": event.actor,
        "from_status": None if from_status == "unspecified" else from_status,
        "to_status": _enum(relations_pb2.RelationStatus, event.to_status, "RELATION_STATUS_"),
        "reason": event.reason,
    }


# -- Check ---------------------------------------------------------------------------------------

def check(args: argparse.Namespace, out: Output) -> None:
    value = credential(args)
    request = authorization_pb2.CheckRequest(
        authorization=f"Bearer {value}" if value else "",
        operation=args.operation or "",
        permissions=args.permission,
        resource=authorization_pb2.Resource(user_id=args.user_id or "", organization_id=args.organization_id or "",
                                            customer_id=args.customer_id or ""),
        explain=args.explain,
    )
    with channel(args) as opened:
        response = authorization_pb2_grpc.AuthorizationStub(opened).Check(request, timeout=CALL_TIMEOUT_SECONDS)
    view = decision_view(response)
    if not request.explain or out.as_json:
        return out.record(view, DECISION_LINES)  # JSON: every key, the explanation's included
    out.record(view, DECISION_LINES)
    rows = [{**step, "facts_text": " ".join(f"{k}={_quoted(v)}" for k, v in step["facts"].items())}
            for step in view["explanation"]]
    out.table("steps", rows, STEP_COLUMNS)


def decision_view(response: authorization_pb2.CheckResponse) -> dict[str, Any]:
    grants = [f"{g.scope}:{_enum(common_pb2.AccessLevel, g.level, 'ACCESS_LEVEL_')}" for g in response.grants]
    return {
        "allowed": response.allowed,
        "http_status": response.http_status,
        "reason": response.reason,
        "message": response.message,
        "field": response.field,
        "body": response.body,
        "www_authenticate": response.www_authenticate,
        "partner_id": response.principal.partner_id if response.HasField("principal") else None,
        "grants": grants,
        "decision_id": response.decision_id,
        **({"explanation": [step_view(step) for step in response.explanation]} if response.explanation else {}),
    }


def step_view(step: authorization_pb2.ExplainStep) -> dict[str, Any]:
    """One step of an explained check, its facts in FACT_ORDER."""
    rank = {name: index for index, name in enumerate(FACT_ORDER)}
    facts = sorted(step.facts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))
    return {"step": step.name, "outcome": _enum(authorization_pb2.StepOutcome, step.outcome, "STEP_OUTCOME_"),
            "facts": dict(facts)}


def _quoted(value: str) -> str:
    """A fact's value on a text line: quoted when it is empty or a list (space-separated)."""
    return value if value and " " not in value else f'"{value}"'


# -- Relations -----------------------------------------------------------------------------------

def _relations_call(args: argparse.Namespace, call: Callable[[relations_pb2_grpc.RelationsStub, list], Any]) -> Any:
    with channel(args) as opened:
        return call(relations_pb2_grpc.RelationsStub(opened), _bearer_metadata(args))


def _manage(args: argparse.Namespace, **action: Any) -> relations_pb2.ManageRelationResponse:
    request = relations_pb2.ManageRelationRequest(**action)
    return _relations_call(args, lambda stub, metadata: stub.ManageRelation(
        request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS))


def _show_relation(out: Output, response: relations_pb2.ManageRelationResponse) -> None:
    out.record(relation_view(response.relation), RELATION_LINES)


def request_relation(args: argparse.Namespace, out: Output) -> None:
    response = _manage(args, request_user_relation=relations_pb2.RequestUserRelation(
        user_id=args.user_id, partner_id=args.partner_id or ""))
    view = {**relation_view(response.relation), "created": response.created}
    out.record(view, [*RELATION_LINES, ("new request", "created")])


def approve_relation(args: argparse.Namespace, out: Output) -> None:
    action = relations_pb2.ApproveUserRelation(relation_id=args.relation_id, reason=args.reason or "")
    if args.ttl is not None:
        action.ttl.CopyFrom(duration_pb2.Duration(seconds=int(args.ttl.total_seconds())))
    _show_relation(out, _manage(args, approve_user_relation=action))


def reject_relation(args: argparse.Namespace, out: Output) -> None:
    action = relations_pb2.RejectUserRelation(relation_id=args.relation_id, reason=args.reason or "")
    _show_relation(out, _manage(args, reject_user_relation=action))


def revoke_relation(args: argparse.Namespace, out: Output) -> None:
    action = relations_pb2.RevokeRelation(relation_id=args.relation_id, reason=args.reason or "")
    _show_relation(out, _manage(args, revoke_relation=action))


def issue_connect_token(args: argparse.Namespace, out: Output) -> None:
    action = relations_pb2.IssueConnectToken(organization_id=args.organization_id, issued_by=args.issued_by or "")
    if args.ttl is not None:
        action.ttl.CopyFrom(duration_pb2.Duration(seconds=int(args.ttl.total_seconds())))
    if args.relation_ttl is not None:
        action.relation_ttl.CopyFrom(duration_pb2.Duration(seconds=int(args.relation_ttl.total_seconds())))
    token = _manage(args, issue_connect_token=action).connect_token
    out.record({"id": token.id, "token": token.token, "organization_id": token.organization_id,
                "expires_at": _iso(token, "expire_time")})
    out.warn(CONNECT_TOKEN_WARNING)


def claim_organization(args: argparse.Namespace, out: Output) -> None:
    action = relations_pb2.ClaimOrganizationRelation(connect_token=args.connect_token)
    _show_relation(out, _manage(args, claim_organization_relation=action))


def get_relation(args: argparse.Namespace, out: Output) -> None:
    request = relations_pb2.GetRelationRequest(relation_id=args.relation_id)
    response = _relations_call(args, lambda stub, metadata: stub.GetRelation(
        request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS))
    view = relation_view(response.relation)
    if out.as_json:
        return out.record({**view, "events": [event_view(e) for e in response.events]})
    out.record(view, RELATION_LINES)
    out.table("events", [event_view(e) for e in response.events],
              [("time", "time"), ("actor", "actor"), ("from", "from_status"), ("to", "to_status"),
               ("reason", "reason")])


def list_relations(args: argparse.Namespace, out: Output) -> None:
    request = relations_pb2.ListRelationsRequest(
        partner_id=args.partner or "", subject_id=args.subject_id or "",
        page_size=args.page_size, page_token=args.page_token or "",
        # Enum fields by their labels (argparse allowed only the domain's values).
        subject_type=f"SUBJECT_TYPE_{args.subject_type.upper()}" if args.subject_type else "SUBJECT_TYPE_UNSPECIFIED",
        status=f"RELATION_STATUS_{args.status.upper()}" if args.status else "RELATION_STATUS_UNSPECIFIED",
    )
    response = _relations_call(args, lambda stub, metadata: stub.ListRelations(
        request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS))
    out.table("relations", [relation_view(r) for r in response.relations],
              [(label, key) for label, key in RELATION_LINES if key != "updated_at"],
              extra={"next_page_token": response.next_page_token})
