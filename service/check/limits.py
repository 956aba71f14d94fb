"""The two limits a check is held to, as one object: the partner's rate of checks, and the gate on
client addresses that keep presenting credentials that fail."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..domain.explain import ExplainContext
from ..domain.rate_limit import RateLimiter
from .query import CheckCall


class CheckLimits:
    def __init__(self, partner_rate: RateLimiter | None = None, failed_credentials: RateLimiter | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = partner_rate
        # Per client address, charged one token per credential that fails; an address without a
        # token left is refused before verification, which is where a flood of forged tokens
        # would spend our CPU (a signature check each).
        self._failures = failed_credentials
        self._monotonic = monotonic
        # Whether either limit is on: with neither, a check asks them nothing.
        self.on = partner_rate is not None or failed_credentials is not None
        self.explained = ExplainContext(failure_limit=failed_credentials is not None,
                                        rate_limit=partner_rate is not None)

    def failures_wait(self, client_address: str) -> int:
        """Seconds the address must wait before a credential of it is verified again; 0: go on."""
        failures = self._failures
        return failures.blocked_for(client_address, self._monotonic()) if failures is not None else 0

    def count_failure(self, client_address: str) -> None:
        if self._failures is not None:
            self._failures.retry_after(client_address, 1, self._monotonic())

    def take(self, partner_id: str, checks: int) -> int:
        """Spends `checks` of the partner's rate; the seconds to wait when it has not that many
        left (then nothing is spent), else 0."""
        rate = self._rate
        return rate.retry_after(partner_id, checks, self._monotonic()) if rate is not None else 0

    def admit_recalled(self, call: CheckCall, partner_id: str) -> bool:
        """Whether a decision kept for an identical request may answer `call`: both limits apply
        as to a check (the call is counted). False: decide it anew, which answers the refusal (a
        refused take spends nothing, so the call is not counted twice). The query is decoded only
        when the failed-credential gate needs its client address."""
        if self._failures is not None and self._failures.blocked_for(call.query().client_address, self._monotonic()):
            return False
        return not self.take(partner_id, 1)
