"""StoreFacts: the facts of each check read from the store, in one read-only transaction."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType

from ..domain.credentials import PresentedCredential
from ..domain.model import AuthenticatedCredential, RelationRecord, SubjectType
from ..domain.ports import CredentialVerifier, FactReads, Facts


class StoreFacts:
    """A CheckFacts that always reads the store: as fresh as any revision asked for."""

    def __init__(self, fact_reads: FactReads, verifier: CredentialVerifier) -> None:
        self._fact_reads = fact_reads
        self._verifier = verifier

    def reading(self, at_least_as_fresh: int, optimistic: bool = False) -> _StoreReading:
        return _StoreReading(self._fact_reads, self._verifier, optimistic)


class _StoreReading:
    """A FactReading over one store reading (a read-only transaction, or an optimistic reading),
    open while the reading is."""

    def __init__(self, fact_reads: FactReads, verifier: CredentialVerifier, optimistic: bool) -> None:
        self._transaction = fact_reads(optimistic)
        self._verifier = verifier
        self._repos: Facts | None = None

    def __enter__(self) -> _StoreReading:
        self._repos = self._transaction.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool | None:
        self._repos = None
        return self._transaction.__exit__(kind, error, traceback)

    def _open(self) -> Facts:
        if self._repos is None:
            raise RuntimeError("a store reading is used outside its `with` block")
        return self._repos

    def credential(self, presented: PresentedCredential, now: datetime) -> AuthenticatedCredential:
        return self._verifier.verify(presented, self._open(), now)

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        return self._open().relations.is_active(partner_id, subject_type, subject_id, now)

    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        return self._open().relations.find_open(partner_id, subject_type, subject_id)
