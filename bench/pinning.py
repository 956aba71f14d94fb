"""`--pin`: a one-process server on CPU 0 and its h2load on CPU 1.

On a 2-core machine an unpinned server and h2load share both cores as the scheduler sees fit, and
a multi-threaded server (Cerbos's Go runtime, grpcio's C core threads) takes part of the core h2load
runs on. Pinned, each side has one core of its own, as in the issue's measurement ("server pinned to
one core, h2load on the other"). Servers started by the bench are pinned once they are up: every
thread of every process of theirs (threads and workers made later inherit the mask).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

SERVER_CPU = 0
LOAD_CPU = 1


def unavailable() -> str | None:
    """Why pinning cannot work here, or None."""
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, LOAD_CPU} <= cpus:
        return f"--pin needs CPUs {SERVER_CPU} and {LOAD_CPU}; this process may run on {sorted(cpus)}"
    if shutil.which("taskset") is None:
        return "--pin needs taskset (util-linux) on PATH"
    return None


def pin(pids: Iterable[int], cpu: int = SERVER_CPU) -> None:
    """Every thread of these processes onto `cpu` (a process that has exited is passed over)."""
    for pid in pids:
        try:
            threads = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for thread in threads:
            try:
                os.sched_setaffinity(thread, {cpu})
            except OSError:
                continue  # the thread ended meanwhile


def load_prefix(pinned: bool) -> list[str]:
    """The command prefix that runs h2load on the load's CPU when its server is pinned."""
    return ["taskset", "-c", str(LOAD_CPU)] if pinned else []
