"""The Check capability's ports: what its transports call (Checker) and what it reads (CheckFacts).

Each shortcut implements the port it wraps: RememberingChecker is a Checker around a Checker,
CachedFacts a CheckFacts around a CheckFacts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from ..domain.credentials import PresentedCredential
from ..domain.model import AuthenticatedCredential, RelationRecord, SubjectType
from .query import BatchQuery, CheckCall, Checked


class Checker(Protocol):
    def check(self, call: CheckCall) -> Checked:
        """Raises InvalidRequest for a malformed query and StoreUnavailable when the store is down;
        every other outcome, allow or deny, is the returned decision."""
        ...

    def check_batch(self, batch: BatchQuery) -> list[Checked]:
        """As check() for each item, with the credential verified once; an InvalidRequest names the
        item ("items[3].resource.user_id")."""
        ...


class FactReading(Protocol):
    """The facts of one check, read from one source at one time."""

    def credential(self, presented: PresentedCredential, now: datetime) -> AuthenticatedCredential:
        """The proven credential; raises CredentialRejected (invalid_token, token_expired,
        token_revoked)."""
        ...

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        """Whether the partner has an active, unexpired relation with the subject at `now`."""
        ...

    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        """The pending or active relation of the triple (what is_active judges; for explanations)."""
        ...


class CheckFacts(Protocol):
    def reading(self, at_least_as_fresh: int, optimistic: bool = False) -> AbstractContextManager[FactReading]:
        """The facts of one check, at least as fresh as the store revision `at_least_as_fresh` (0:
        any recent one). Raises StoreUnavailable when they cannot be read. `optimistic`: the
        reading may be one that raises ReadAgain (domain/ports.py) from any read or from its end;
        nothing it answered may then be used, and the check is read again."""
        ...
