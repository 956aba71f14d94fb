"""The write counter that the worker processes of one server share (`serve --workers N`).

Each worker has its own fact cache, and the kernel spreads connections over the workers, so a
client's next call may land on a worker other than the one that just took its write. Each worker
advances this counter in shared memory after every write that changes facts; a worker that sees
it move refreshes its cache before the next check (service/check/caching/fact_cache.py). Across
machines, the store revision and at_least_as_fresh do this job.
"""

from __future__ import annotations

from multiprocessing.context import BaseContext


class SiblingWrites:
    """Made by the parent before it starts the workers, and handed to each of them."""

    def __init__(self, context: BaseContext) -> None:
        # Read without the lock on every check (an aligned 64-bit load); advanced under it, so
        # that two workers' writes never collapse into one step.
        self._count = context.RawValue("Q", 0)
        self._lock = context.Lock()

    def current(self) -> int:
        return self._count.value

    def advance(self) -> None:
        with self._lock:
            self._count.value += 1
