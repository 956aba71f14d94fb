from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class MovableClock:
    """A clock the test moves forward, so expiry is tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
