"""The relation life cycle: pending -> active | rejected | expired; active -> revoked | expired."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from .errors import PreconditionFailed
from .model import RelationRecord, RelationStatus

_ALLOWED = MappingProxyType({
    RelationStatus.PENDING: frozenset({RelationStatus.ACTIVE, RelationStatus.REJECTED, RelationStatus.EXPIRED}),
    RelationStatus.ACTIVE: frozenset({RelationStatus.REVOKED, RelationStatus.EXPIRED}),
})

OPEN_STATUSES = frozenset({RelationStatus.PENDING, RelationStatus.ACTIVE})


def can_transition(current: RelationStatus, target: RelationStatus) -> bool:
    return target in _ALLOWED.get(current, frozenset())


def ensure_transition(relation: RelationRecord, target: RelationStatus) -> None:
    """Raises PreconditionFailed(reason="illegal_transition") for a move the life cycle forbids."""
    if not can_transition(relation.status, target):
        raise PreconditionFailed(
            f"relation {relation.id} is {relation.status.value} and cannot become {target.value}",
            reason="illegal_transition",
        )


def is_due(relation: RelationRecord, now: datetime) -> bool:
    """An open relation whose expiry has passed: pending past its TTL, or active past its end."""
    return relation.status in OPEN_STATUSES and relation.expires_at is not None and relation.expires_at <= now


def as_seen_at(relation: RelationRecord, now: datetime) -> RelationRecord:
    """The relation as a reader sees it: one past its expiry reads as expired even before the
    sweeper has recorded the change."""
    return replace(relation, status=RelationStatus.EXPIRED) if is_due(relation, now) else relation
