"""RememberingChecker: decisions of repeated identical checks, kept while every fact behind them
stands; a Checker decorator.

A service asks the same question again and again: one credential, one operation, one resource, once
per request of a session. Deciding it anew from the fact cache is cheap, but on a gRPC handler
thread it is most of the handler's CPU. Zanzibar keeps check results per snapshot for the same
reason; here an answer is kept per request and per fact-cache generation, which every change to
the store moves on (this process's writes at once, other replicas' within the refresh bound), and
it is given again only while all of these hold:

- the fact cache is current (confirmed against the store within its bound): while the store is
  unreachable nothing is answered from memory, as with the fact cache itself;
- the cache is still at the generation the facts were read in, and the policy is the same object;
- the clock is before `valid_until`: the credential's expiry and that of every active relation the
  decision rests on (the time-dependent facts, judged again once they may have lapsed).

Only decisions about a verified credential that no limit refused are kept (Checked.basis), never
explained ones. A rejected credential is verified (and, with the failed-credential limit, charged)
every time; both limits apply to every call, kept decision or not.

A request is named by the bytes its transport hands over (CheckCall.request_bytes): native Check's
own request bytes, so an identical request is answered without being decoded; for ext_authz, the
fields its conversion reads (transport/ext_authz_convert.py request_name), since Envoy's requests
never repeat byte for byte. Keys are SHA-256 digests of those
bytes, never the bytes themselves: they hold the credential.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from ...domain.bounded import BoundedMap
from ...domain.decide import relations_looked_at
from ...domain.policy import Policy
from ...domain.ports import Clock
from ..limits import CheckLimits
from ..ports import Checker
from ..query import Basis, BatchQuery, CheckCall, Checked
from .fact_cache import FactCache

DEFAULT_MAX_ENTRIES = 10_000


class KeptDecision(NamedTuple):  # a tuple: made on every decided check, so made cheaply
    checked: Checked  # as it is given again (recalled)
    partner_id: str  # whose rate limit the call is counted against
    policy: Policy
    generation: int
    valid_until: datetime | None  # None: no expiry among the facts


class RememberingChecker:
    def __init__(self, inner: Checker, cache: FactCache, policy: Callable[[], Policy], clock: Clock,
                 limits: CheckLimits, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._inner = inner
        self._cache = cache
        self._policy = policy
        self._clock = clock
        self._limits = limits
        self._relations = cache.facts.relations
        # Emptied when full (domain/bounded.py): a flood of distinct requests only ever costs the
        # deciding it would have cost anyway.
        self._kept: BoundedMap[bytes, KeptDecision] = BoundedMap(max_entries)

    def check(self, call: CheckCall) -> Checked:
        request_bytes = call.request_bytes
        if request_bytes is None:  # nothing names the request whole
            return self._inner.check(call)
        key = call.digest or hashlib.sha256(request_bytes).digest()
        kept = self._kept.get(key)
        if kept is not None and self._stands(kept):
            limits = self._limits
            if not limits.on or limits.admit_recalled(call, kept.partner_id):
                return kept.checked
        generation = self._cache.generation  # before any fact is read (see _remember)
        checked = self._inner.check(call)
        basis = checked.basis
        # Never an explained decision (it is of a decision made now), and only one read from the
        # cache: one that asked for a newer revision than the cache holds read the store.
        if basis is not None and checked.steps is None and call.query().at_least_as_fresh <= self._cache.revision:
            self._remember(key, checked, basis, generation)
        return checked

    def check_batch(self, batch: BatchQuery) -> list[Checked]:
        return self._inner.check_batch(batch)

    def _stands(self, kept: KeptDecision) -> bool:
        cache = self._cache
        if kept.policy is not self._policy() or kept.generation != cache.generation or not cache.is_current():
            return False
        return kept.valid_until is None or self._clock.now() < kept.valid_until

    def _remember(self, key: bytes, checked: Checked, basis: Basis, generation: int) -> None:
        """Keeps the decision until the first of its facts may lapse: the credential's expiry and
        that of each relation the plan looked at, the token user's included (an inactive one only
        makes it end sooner). `generation`: the cache's, read before any fact of the decision was;
        a change committed meanwhile has moved it on, so the decision is never given again."""
        credential = basis.credential
        partner_id = credential.principal.partner_id
        valid_until = credential.expires_at
        for subject_type, subject_id in relations_looked_at(basis.plan, credential):
            expiry = self._relations.relation_expiry(partner_id, subject_type, subject_id)
            if expiry is not None and (valid_until is None or expiry < valid_until):
                valid_until = expiry
        self._kept.put(key, KeptDecision(checked._replace(recalled=True), partner_id, basis.policy, generation,
                                         valid_until))
