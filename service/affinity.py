"""Runs a server process on one CPU.

A Python process computes on one core at a time (the interpreter lock). When the scheduler moves
its threads between cores, every hand-over of the lock from a thread on one core to a thread on
another wakes that core and moves the thread's memory with it: measured with h2load against one
worker on a 2-core machine, a process free to move spent 290-310 µs of CPU per cached Check and
one on a single CPU 150-180 µs, with half again the throughput (docs/performance.md). So each
worker process is given one CPU of those the server may use, before it starts any thread (a
thread keeps the CPUs it was created with); worker i takes the i-th, round robin.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("tollgate.server")


def cpu_for(worker_index: int, allowed: set[int]) -> int | None:
    """The CPU worker `worker_index` runs on; None when there is only one to run on anyway."""
    if len(allowed) < 2:
        return None
    return sorted(allowed)[worker_index % len(allowed)]


def pin_this_process(worker_index: int) -> int | None:
    """Confines the calling thread, and every thread it starts from now on, to the worker's CPU;
    returns it (None: not pinned, where the platform cannot or there is nothing to choose)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = cpu_for(worker_index, os.sched_getaffinity(0))
    if cpu is None:
        return None
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as error:  # e.g. a CPU the container may list but not use
        log.warning("cannot run worker %d on CPU %d: %s", worker_index, cpu, error)
        return None
    return cpu
