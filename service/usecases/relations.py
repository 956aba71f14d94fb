"""The relation life cycle as use cases. Every change and its event share one transaction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..domain import opaque
from ..domain.errors import Conflict, InvalidRequest, NotFound, NotPermitted, PreconditionFailed
from ..domain.ids import new_id
from ..domain.model import (
    ConnectTokenRecord,
    RelationEventRecord,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from ..domain.ports import Clock, Repositories, UnitOfWork
from ..domain.relations import as_seen_at, ensure_transition, is_due
from ..domain.text import excerpt
from .callers import Caller

SYSTEM_ACTOR = "system"
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_TTL = timedelta(days=3650)


@dataclass(frozen=True)
class RelationSettings:
    # How long a partner's request waits for the user before it expires.
    pending_ttl: timedelta = timedelta(days=7)
    connect_token_ttl: timedelta = timedelta(hours=24)
    max_connect_token_ttl: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class IssuedConnectToken:
    record: ConnectTokenRecord
    # The plaintext, returned to the issuer exactly once; only its digest is stored.
    token: str


class RelationService:
    def __init__(self, unit_of_work: UnitOfWork, clock: Clock, settings: RelationSettings = RelationSettings()) -> None:
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._settings = settings

    # -- actions -------------------------------------------------------------------------------

    def request_user_relation(self, caller: Caller, user_id: str, partner_id: str = "") -> tuple[RelationRecord, bool]:
        """Idempotent: returns (the open relation, False) when one exists, else (new pending, True)."""
        _require(user_id, "request_user_relation.user_id")
        partner_id = partner_id or caller.partner_id
        if partner_id != caller.partner_id and not caller.is_platform:
            raise NotPermitted("a partner may only request relations for itself", reason="not_own_partner")
        now = self._clock.now()
        with self._unit_of_work() as repos:
            if repos.partners.get(partner_id) is None:
                raise NotFound(f"partner {excerpt(partner_id)} does not exist", reason="partner_not_found",
                               field="request_user_relation.partner_id")
            existing = self._open_relation(repos, partner_id, SubjectType.USER, user_id, now)
            if existing is not None:
                return existing, False
            pending = RelationRecord(new_id("rel"), partner_id, SubjectType.USER, user_id, RelationStatus.PENDING,
                                     now, now, now + self._settings.pending_ttl)
            if not repos.relations.insert_open(pending):  # a concurrent request won: return its relation
                winner = repos.relations.find_open(partner_id, SubjectType.USER, user_id)
                if winner is None:
                    raise Conflict("the relation changed concurrently; retry", reason="concurrent_change")
                return winner, False
            _append_event(repos, pending, None, caller.actor, "requested", now)
            return pending, True

    def approve_user_relation(self, caller: Caller, relation_id: str, ttl: timedelta | None,
                              reason: str) -> RelationRecord:
        _require_platform(caller, "approve user relations")
        _check_ttl(ttl, "approve_user_relation.ttl")
        now = self._clock.now()
        expires_at = now + ttl if ttl else None
        return self._change(caller, relation_id, RelationStatus.ACTIVE, reason or "approved by the user", expires_at,
                            subject_type=SubjectType.USER)

    def reject_user_relation(self, caller: Caller, relation_id: str, reason: str) -> RelationRecord:
        _require_platform(caller, "reject user relations")
        return self._change(caller, relation_id, RelationStatus.REJECTED, reason or "rejected by the user", None,
                            subject_type=SubjectType.USER)

    def revoke_relation(self, caller: Caller, relation_id: str, reason: str) -> RelationRecord:
        return self._change(caller, relation_id, RelationStatus.REVOKED, reason or "revoked", None)

    def issue_connect_token(
        self, caller: Caller, organization_id: str, issued_by: str, ttl: timedelta | None,
        relation_ttl: timedelta | None,
    ) -> IssuedConnectToken:
        _require_platform(caller, "issue connect tokens")
        _require(organization_id, "issue_connect_token.organization_id")
        if issued_by:
            _require(issued_by, "issue_connect_token.issued_by")
        _check_ttl(ttl, "issue_connect_token.ttl", self._settings.max_connect_token_ttl)
        _check_ttl(relation_ttl, "issue_connect_token.relation_ttl")
        now = self._clock.now()
        token = opaque.generate(opaque.CONNECT_TOKEN_PREFIX)
        record = ConnectTokenRecord(
            id=new_id("ct"), digest=opaque.digest(token), organization_id=organization_id,
            issued_by=issued_by or caller.actor, created_at=now,
            expires_at=now + (ttl or self._settings.connect_token_ttl),
            relation_ttl_seconds=int(relation_ttl.total_seconds()) if relation_ttl else None,
        )
        with self._unit_of_work() as repos:
            repos.connect_tokens.add(record)
        return IssuedConnectToken(record, token)

    def claim_organization_relation(self, caller: Caller, connect_token: str) -> RelationRecord:
        """The token is consumed by exactly one claim (the database decides races)."""
        if not opaque.well_formed(connect_token, opaque.CONNECT_TOKEN_PREFIX):
            raise NotFound("the connect token is not valid", reason="connect_token_unknown",
                           field="claim_organization_relation.connect_token")
        now = self._clock.now()
        with self._unit_of_work() as repos:
            token = repos.connect_tokens.find_by_digest(opaque.digest(connect_token))
            if token is None:
                raise NotFound("the connect token is not valid", reason="connect_token_unknown",
                               field="claim_organization_relation.connect_token")
            if token.used_at is None and token.expires_at <= now:
                raise PreconditionFailed("the connect token has expired", reason="connect_token_expired")
            if token.used_at is not None or not repos.connect_tokens.mark_used(token.id, caller.partner_id, now):
                raise PreconditionFailed("the connect token was already used", reason="connect_token_used")
            return self._activate_organization(repos, caller, token, now)

    def _activate_organization(self, repos: Repositories, caller: Caller, token: ConnectTokenRecord,
                               now: datetime) -> RelationRecord:
        existing = self._open_relation(repos, caller.partner_id, SubjectType.ORGANIZATION, token.organization_id, now)
        if existing is not None:
            return existing
        expires_at = now + timedelta(seconds=token.relation_ttl_seconds) if token.relation_ttl_seconds else None
        relation = RelationRecord(new_id("rel"), caller.partner_id, SubjectType.ORGANIZATION, token.organization_id,
                                  RelationStatus.ACTIVE, now, now, expires_at)
        if not repos.relations.insert_open(relation):
            raise Conflict("the relation changed concurrently; retry", reason="concurrent_change")
        _append_event(repos, relation, None, caller.actor, f"claimed connect token {token.id}", now)
        return relation

    # -- reads -----------------------------------------------------------------------------------

    def current_revision(self) -> int:
        """The store revision now: at or after every change this process has committed."""
        return self._unit_of_work.revision()

    def get_relation(self, caller: Caller, relation_id: str) -> tuple[RelationRecord, list[RelationEventRecord]]:
        _require(relation_id, "relation_id")
        with self._unit_of_work(read_only=True) as repos:
            relation = _visible(repos, caller, relation_id)
            return as_seen_at(relation, self._clock.now()), repos.relations.events(relation_id)

    def list_relations(self, caller: Caller, relation_filter: RelationFilter, page_size: int,
                       page_token: str) -> tuple[list[RelationRecord], str]:
        if not caller.is_platform:
            if relation_filter.partner_id not in (None, caller.partner_id):
                raise NotPermitted("a partner may only list its own relations", reason="not_own_partner")
            relation_filter = replace(relation_filter, partner_id=caller.partner_id)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be between 0 and {MAX_PAGE_SIZE}", field="page_size")
        with self._unit_of_work(read_only=True) as repos:
            page, next_token = repos.relations.list(relation_filter, page_size or DEFAULT_PAGE_SIZE, page_token)
        now = self._clock.now()
        return [as_seen_at(r, now) for r in page], next_token

    def expire_due(self, limit: int = 500) -> int:
        """Records the expiry of relations past their deadline (the sweeper). Returns how many."""
        now = self._clock.now()
        with self._unit_of_work(read_only=True) as repos:
            due = repos.relations.due_for_expiry(now, limit)
        if not due:  # the usual case: no write, so no revision change and no cache flush
            return 0
        with self._unit_of_work() as repos:
            expired = 0
            for relation in due:
                if repos.relations.transition(relation.id, relation.status, RelationStatus.EXPIRED, now,
                                              relation.expires_at):
                    _append_event(repos, relation, relation.status, SYSTEM_ACTOR, "expired", now,
                                  to_status=RelationStatus.EXPIRED)
                    expired += 1
            return expired

    # -- shared steps ----------------------------------------------------------------------------

    def _change(self, caller: Caller, relation_id: str, target: RelationStatus, reason: str,
                expires_at: datetime | None, subject_type: SubjectType | None = None) -> RelationRecord:
        """Moves one relation and records the event, in one transaction. A relation found past
        its expiry is recorded as expired (committed) and the action fails with relation_expired."""
        _require(relation_id, "relation_id")
        now = self._clock.now()
        failure: PreconditionFailed | None = None
        with self._unit_of_work() as repos:
            relation = _visible(repos, caller, relation_id)
            if subject_type is not None and relation.subject_type is not subject_type:
                raise PreconditionFailed(f"relation {relation_id} is not a {subject_type.value} relation",
                                         reason="wrong_subject_type")
            if is_due(relation, now):
                _move(repos, relation, RelationStatus.EXPIRED, SYSTEM_ACTOR, "expired", now, relation.expires_at)
                failure = PreconditionFailed(f"relation {relation_id} has expired", reason="relation_expired")
            else:
                ensure_transition(relation, target)
                changed = _move(repos, relation, target, caller.actor, reason, now, expires_at)
        if failure is not None:
            raise failure
        return changed

    def _open_relation(self, repos: Repositories, partner_id: str, subject_type: SubjectType, subject_id: str,
                       now: datetime) -> RelationRecord | None:
        """The open relation of a triple; one found past its expiry is expired first (and freed)."""
        relation = repos.relations.find_open(partner_id, subject_type, subject_id)
        if relation is not None and is_due(relation, now):
            _move(repos, relation, RelationStatus.EXPIRED, SYSTEM_ACTOR, "expired", now, relation.expires_at)
            return None
        return relation


def _visible(repos: Repositories, caller: Caller, relation_id: str) -> RelationRecord:
    """Partners see only their own relations; anything else reads as not found."""
    relation = repos.relations.get(relation_id)
    if relation is None or (not caller.is_platform and relation.partner_id != caller.partner_id):
        raise NotFound(f"relation {relation_id} does not exist", reason="relation_not_found", field="relation_id")
    return relation


def _move(repos: Repositories, relation: RelationRecord, target: RelationStatus, actor: str, reason: str,
          now: datetime, expires_at: datetime | None) -> RelationRecord:
    if not repos.relations.transition(relation.id, relation.status, target, now, expires_at):
        raise Conflict(f"relation {relation.id} changed concurrently; retry", reason="concurrent_change")
    _append_event(repos, relation, relation.status, actor, reason, now, to_status=target)
    return replace(relation, status=target, updated_at=now, expires_at=expires_at)


def _append_event(repos: Repositories, relation: RelationRecord, from_status: RelationStatus | None, actor: str,
                  reason: str, now: datetime, to_status: RelationStatus | None = None) -> None:
    repos.relations.append_event(RelationEventRecord(
        relation_id=relation.id, actor=actor, at=now, from_status=from_status,
        to_status=to_status or relation.status, reason=reason[:500],
    ))


def _require(value: str, field: str) -> None:
    if not value or not value.strip():
        raise InvalidRequest(f"{field} is required", field=field)
    if len(value) > 256 or not value.isprintable():
        raise InvalidRequest(f"{field} is too long or has control characters", field=field)


def _require_platform(caller: Caller, what: str) -> None:
    if not caller.is_platform:
        raise NotPermitted(f"only a platform credential may {what}", reason="platform_only")


def _check_ttl(ttl: timedelta | None, field: str, maximum: timedelta = MAX_TTL) -> None:
    if ttl is not None and (ttl <= timedelta(0) or ttl > maximum):
        raise InvalidRequest(f"{field} must be positive and at most {maximum}", field=field)
