"""Racing threads: the same action started at once, for the races the store must decide."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Result = TypeVar("Result")


def race(action: Callable[[int], Result], threads: int, timeout: float = 60) -> list[Result]:
    """Runs action(i) in `threads` threads released together by a barrier; returns the results in
    order. Bounded: the barrier waits at most 30 s, the whole race `timeout` seconds."""
    barrier = threading.Barrier(threads, timeout=30)

    def one(index: int) -> Result:
        barrier.wait()
        return action(index)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(threads), timeout=timeout))
