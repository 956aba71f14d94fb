"""Several server processes on one port (SO_REUSEPORT): the kernel spreads connections over them.

One Python process is bound by its interpreter lock, so a second core needs a second process.
The parent migrates the store once, starts the workers (spawned, never forked: gRPC does not
survive fork), forwards SIGTERM/SIGINT/SIGHUP to them and exits when they have all stopped. A
worker that dies on its own takes the others down, so a supervisor restarts one whole unit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import replace

from .config import ConfigError, Settings
from .siblings import SiblingWrites

log = logging.getLogger("tollgate.workers")


def serve_workers(settings: Settings, count: int) -> int:
    """Runs `count` workers until a signal stops them; returns the exit code."""
    from .server import prepare_store

    if settings.port == 0 or settings.mtls_port == 0:
        raise ConfigError("several workers need fixed ports (port 0 would give each its own)")
    prepare_store(settings)  # migrate once, before the workers race to
    context = multiprocessing.get_context("spawn")
    siblings = SiblingWrites(context)
    workers = [context.Process(target=_worker, args=(_worker_settings(settings, index), siblings),
                               name=f"worker-{index}")
               for index in range(count)]
    for worker in workers:
        worker.start()
    stopping = threading.Event()

    def forward(signum, _frame) -> None:
        if signum != signal.SIGHUP:
            stopping.set()
        for worker in workers:
            if worker.pid and worker.is_alive():
                os.kill(worker.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=0.2)
            if not stopping.is_set() and worker.exitcode not in (None, 0):
                log.error("%s exited with %s; stopping the others", worker.name, worker.exitcode)
                forward(signal.SIGTERM, None)
    return max((abs(worker.exitcode or 0) for worker in workers), default=0) if not stopping.is_set() else 0


def _worker_settings(settings: Settings, index: int) -> Settings:
    """Each worker serves metrics on its own port (metrics_port + index): counters are per process."""
    return replace(settings, metrics_port=settings.metrics_port + index if settings.metrics_port else 0)


def _worker(settings: Settings, siblings: SiblingWrites) -> None:
    from .server import serve
    from .telemetry import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    serve(settings, siblings)
