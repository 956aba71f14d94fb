"""RevisionMemo: the few, slowly changing facts kept for one store revision, in front of the
store's readings (a FactReads decorator); for Check without the fact cache.

With the fact cache off every check reads the store, so that its decision reflects every change
committed before it. Most of what a check reads is shared by many checks and changes rarely: the
issuer of a token (and so its parsed keys, which the verifier keeps per issuer record), the
partner, the OAuth client and the signing keys, and whether a token was revoked. Each reading
here reads the store revision first, in the reading's own transaction, and answers those from
memory while the revision stands; API keys, relations and refresh token families, which are many
and differ from request to request, are read every time. The revoked-token sets are loaded whole,
once per revision, so that checking a token never seen before costs no read. Any change committed
anywhere moves the revision, and the next reading starts an empty memo: a decision reflects the
store exactly as reading everything would.

An optimistic reading (what Check asks for first) does not read the revision first, in a
transaction: it answers from the memo of the revision last seen and reads the rest without a
transaction, each statement with the revision it saw (store/fact_reads.py at_revision), and reads
the revision at its end only if nothing else did. When every statement saw the memo's revision,
no change was committed between them and the memo's facts are the store's: one statement per
check where a transaction takes four. When one saw another, the reading raises ReadAgain, this
memo moves on to the revision seen, and the check is read again (check/service.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from ...domain.bounded import BoundedMap
from ...domain.model import (
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    SigningKeyRecord,
    active_signing_key,
    published_signing_keys,
)
from ...domain.ports import FactSnapshot, ReadAgain, RevisionReads

Record = TypeVar("Record")

# Partners, issuers and clients kept per revision (emptied when full: a flood of distinct ids costs
# only the reads it would have cost anyway).
DEFAULT_MAX_ENTRIES = 10_000


class RevisionMemo:
    def __init__(self, inner: RevisionReads, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._inner = inner
        self._max_entries = max_entries
        self._memo = _Memo(-1, max_entries)

    @contextmanager
    def __call__(self, optimistic: bool = False) -> Iterator[FactSnapshot]:
        memo = self._memo
        if not optimistic or memo.revision < 0:
            with self._inner() as facts:
                yield _RememberedFacts(facts, self._memo_at(facts.revision()))
            return
        try:
            with self._inner.at_revision(memo.revision) as facts:
                yield _RememberedFacts(facts, memo)
        except ReadAgain as moved:
            if moved.revision > self._memo.revision:  # the next reading answers from the newer one
                self._memo_at(moved.revision)
            raise

    def _memo_at(self, revision: int) -> _Memo:
        memo = self._memo
        if memo.revision != revision:
            # Readings racing across a change each use the memo of the revision they read; the
            # last one kept is of no use to the other only until its next change.
            memo = self._memo = _Memo(revision, self._max_entries)
        return memo


class _Memo:
    """What readings at one revision read of the facts it keeps. Only found records are kept: an
    unknown id is read again (it is a refusal, not a check that passes)."""

    def __init__(self, revision: int, max_entries: int) -> None:
        self.revision = revision
        self.records: BoundedMap[tuple[str, str], object] = BoundedMap(max_entries)
        self.signing_keys: builtins.list[SigningKeyRecord] | None = None
        self.revoked_tokens: frozenset[tuple[str, str]] | None = None
        self.revoked_access_tokens: frozenset[str] | None = None


class _RememberedFacts:
    """FactSnapshot over one reading: the memo's facts from memory, the rest from the reading."""

    def __init__(self, facts: FactSnapshot, memo: _Memo) -> None:
        self._facts = facts
        self._memo = memo
        self.api_keys = facts.api_keys
        self.relations = facts.relations
        self.refresh_tokens = facts.refresh_tokens
        self.partners = _Partners(self)
        self.issuers = _Issuers(self)
        self.oauth_clients = _OAuthClients(self)
        self.signing_keys = _SigningKeys(self)
        self.revoked_tokens = _RevokedTokens(self)
        self.revoked_access_tokens = _RevokedAccessTokens(self)

    def revision(self) -> int:
        return self._memo.revision

    def revoked_token_ids(self) -> frozenset[tuple[str, str]]:
        memo = self._memo
        if memo.revoked_tokens is None:
            memo.revoked_tokens = self._facts.revoked_token_ids()
        return memo.revoked_tokens

    def revoked_access_token_ids(self) -> frozenset[str]:
        memo = self._memo
        if memo.revoked_access_tokens is None:
            memo.revoked_access_tokens = self._facts.revoked_access_token_ids()
        return memo.revoked_access_tokens


class _View:
    __slots__ = ("_facts", "_records", "_remembered")

    def __init__(self, remembered: _RememberedFacts) -> None:
        self._remembered = remembered
        self._facts = remembered._facts  # the reading's, for what memory lacks
        self._records = remembered._memo.records

    def _kept(self, key: tuple[str, str], read: Callable[[], Record | None]) -> Record | None:
        """The record kept for `key` at this revision, else `read`'s, kept when found."""
        found = self._records.get(key)
        if found is None:
            found = read()
            if found is not None:
                self._records.put(key, found)
        return found  # type: ignore[return-value]  # what `read` returned for this key


class _Partners(_View):
    def get(self, partner_id: str) -> PartnerRecord | None:
        return self._kept(("partner", partner_id), lambda: self._facts.partners.get(partner_id))


class _Issuers(_View):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        return self._kept(("issuer", issuer), lambda: self._facts.issuers.find_by_issuer(issuer))


class _OAuthClients(_View):
    def get(self, client_id: str) -> OAuthClientRecord | None:
        return self._kept(("client", client_id), lambda: self._facts.oauth_clients.get(client_id))


class _SigningKeys(_View):
    def active(self) -> SigningKeyRecord | None:
        return active_signing_key(self.list())

    def published(self, now: datetime) -> builtins.list[SigningKeyRecord]:
        return published_signing_keys(self.list(), now)  # kept whole, judged against the clock

    def list(self) -> builtins.list[SigningKeyRecord]:
        memo = self._remembered._memo
        if memo.signing_keys is None:
            memo.signing_keys = self._facts.signing_keys.list()
        return builtins.list(memo.signing_keys)


class _RevokedTokens(_View):
    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        return (issuer_id, jti) in self._remembered.revoked_token_ids()


class _RevokedAccessTokens(_View):
    def is_revoked(self, jti: str) -> bool:
        return jti in self._remembered.revoked_access_token_ids()
