"""Decisions of repeated identical checks, kept for as long as every fact behind them stands.

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

Only decisions about a verified credential are kept. A rejected credential is verified (and, with
the failed-credential limit, charged) every time; rate limits are applied by the caller on every
call, kept decision or not.

Keys are SHA-256 digests of the whole request, never the request itself: it holds the credential.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from ..domain.decision import Decision
from ..domain.policy import Policy
from .fact_cache import FactCache

DEFAULT_MAX_ENTRIES = 10_000


class KeptDecision(NamedTuple):  # a tuple: made on every decided check, so made cheaply
    decision: Decision
    partner_id: str  # whose rate limit the call is counted against
    policy: Policy
    generation: int
    valid_until: datetime | None  # None: no expiry among the facts


class DecisionMemo:
    def __init__(self, cache: FactCache, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._cache = cache
        self._max_entries = max_entries
        # A plain dict (get and set are atomic under the GIL; racing threads store equal answers),
        # emptied when full: a gateway's steady state refills it within a few calls, and a flood
        # of distinct requests only ever costs the deciding it would have cost anyway.
        self._kept: dict[bytes, KeptDecision] = {}

    def recall(self, key: bytes, policy: Policy, now: Callable[[], datetime]) -> KeptDecision | None:
        kept = self._kept.get(key)
        if kept is None or kept.policy is not policy or kept.generation != self._cache.generation:
            return None
        if not self._cache.is_current():
            return None
        if kept.valid_until is not None and now() >= kept.valid_until:
            return None
        return kept

    def remember(self, key: bytes, decision: Decision, partner_id: str, policy: Policy, generation: int,
                 valid_until: datetime | None) -> None:
        """`generation`: the cache's (FactCache.generation), read before any fact of `decision`
        was; a change committed meanwhile has moved it on, so the answer is never given again."""
        if len(self._kept) >= self._max_entries:
            self._kept.clear()
        self._kept[key] = KeptDecision(decision, partner_id, policy, generation, valid_until)
