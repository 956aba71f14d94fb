"""Several server processes on one port (SO_REUSEPORT): the kernel spreads connections over them.

One Python process is bound by its interpreter lock, so a second core needs a second process.
The parent migrates the store once, starts the workers (spawned, never forked: gRPC does not
survive fork), forwards SIGTERM/SIGINT/SIGHUP to them and exits when they have all stopped. A
worker that dies on its own takes the others down, so a supervisor restarts one whole unit.
The parent also serves the metrics port, merging the workers' metrics (service/worker_metrics.py),
and says "serving" once, when every worker serves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from .check.caching.siblings import SiblingWrites
from .config import ConfigError, Settings
from .worker_metrics import LOOPBACK, MetricsEndpoint, WorkerMetrics

if TYPE_CHECKING:
    from .server import App, Listening

log = logging.getLogger("tollgate.workers")


def serve_workers(settings: Settings, count: int) -> int:
    """Runs `count` workers until a signal stops them; returns the exit code."""
    from .server import prepare_store

    if settings.port == 0 or settings.mtls_port == 0:
        raise ConfigError("several workers need fixed ports (port 0 would give each its own)")
    prepare_store(settings)  # migrate once, before the workers race to
    metrics = WorkerMetrics(count) if settings.metrics_port else None
    endpoint = _metrics_endpoint(settings, metrics) if metrics else None
    try:
        return _run(settings, count, metrics, endpoint)
    finally:
        if endpoint is not None:
            endpoint.stop()
        if metrics is not None:
            metrics.close()


def _metrics_endpoint(settings: Settings, metrics: WorkerMetrics) -> MetricsEndpoint:
    try:
        return MetricsEndpoint(settings.host, settings.metrics_port, metrics)
    except OSError as error:
        raise RuntimeError(f"cannot bind the metrics port: {error}") from error


def _run(settings: Settings, count: int, metrics: WorkerMetrics | None, endpoint: MetricsEndpoint | None) -> int:
    context = multiprocessing.get_context("spawn")
    siblings = SiblingWrites(context)
    pipes = [context.Pipe(duplex=False) for _ in range(count)]
    workers = [context.Process(target=_worker, args=(_worker_settings(settings), index, siblings, sender,
                                                     metrics is not None), name=f"worker-{index}")
               for index, (_, sender) in enumerate(pipes)]
    for worker in workers:
        worker.start()
    for _, sender in pipes:
        sender.close()  # each worker holds its own end; a worker gone before reporting reads as EOF
    started = _Started(settings, [receiver for receiver, _ in pipes], metrics,
                       endpoint.port if endpoint is not None else None)
    if metrics is not None:
        metrics.before_collect = started.receive
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
        started.receive()
        for worker in workers:
            worker.join(timeout=0.2)
            if not stopping.is_set() and worker.exitcode not in (None, 0):
                log.error("%s exited with %s; stopping the others", worker.name, worker.exitcode)
                forward(signal.SIGTERM, None)
    return max((abs(worker.exitcode or 0) for worker in workers), default=0) if not stopping.is_set() else 0


class _Started:
    """Collects the workers' reports (service.server.Listening) and, once every worker serves,
    announces the server once and points the metrics endpoint at the workers' metrics."""

    def __init__(self, settings: Settings, receivers: list[Connection], metrics: WorkerMetrics | None,
                 metrics_port: int | None) -> None:
        self._settings, self._metrics, self._metrics_port = settings, metrics, metrics_port
        self._count = len(receivers)
        self._waiting = dict(enumerate(receivers))
        self._listening: dict[int, Listening] = {}
        # receive() runs in the supervising loop and before each metrics scrape.
        self._lock = threading.Lock()

    def receive(self) -> None:
        with self._lock:
            self._receive()

    def _receive(self) -> None:
        for index, receiver in list(self._waiting.items()):
            if not receiver.poll():
                continue
            del self._waiting[index]
            try:
                listening = receiver.recv()
            except EOFError:  # the worker ended before serving; the supervising loop sees its exit
                continue
            finally:
                receiver.close()
            self._listening[index] = listening
            if self._metrics is not None and listening.metrics_port:
                self._metrics.add(index, listening.metrics_port)
            if len(self._listening) == self._count:
                self._announce()

    def _announce(self) -> None:
        from .server import announce

        first = self._listening[0]
        announce(self._settings, replace(first, metrics_port=self._metrics_port), len(self._listening))


def _worker_settings(settings: Settings) -> Settings:
    """A worker serves no metrics port of its own: the parent serves the one metrics port."""
    return replace(settings, metrics_port=0)


def _worker(settings: Settings, index: int, siblings: SiblingWrites, ready: Connection, report_metrics: bool) -> None:
    from .affinity import pin_this_process
    from .server import Listening, serve
    from .telemetry import configure_logging

    if settings.pin_workers:
        pin_this_process(index)  # before the server starts a thread
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")

    def started(app: App) -> None:
        """Serves this worker's metrics on a loopback port of its own, for the parent to merge, and
        tells the parent where this worker listens."""
        metrics_port = app.telemetry.serve_metrics(LOOPBACK, 0) if report_metrics else None
        ready.send(replace(Listening.of(app), metrics_port=metrics_port))
        ready.close()

    serve(settings, siblings, started=started)
