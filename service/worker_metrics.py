"""One metrics endpoint for a server of several worker processes (service/workers.py).

Each worker counts in its own memory (service/telemetry.py: per-thread tallies, no lock on the hot
path) and serves its metrics on an internal port of the loopback interface, which it reports to the
parent. The parent serves the documented port (TOLLGATE_METRICS_PORT): each scrape there scrapes
every worker and merges what they answer, so one endpoint shows the whole server:

- counters and histograms are summed by label set (every bucket, `_count` and `_sum`), so the
  series are exactly those of a one-process server, whatever the worker count; their `_created`
  gauges take the earliest worker's;
- `tollgate_build_info` is the same in every worker and is shown once;
- `tollgate_jwks_age_seconds` takes the stalest worker's view (the largest age, or -1 when a
  worker has never fetched the keys);
- any other gauge keeps one series per worker, with a `worker` label (a sum or a maximum would
  mean nothing in general).

`/metrics?worker=N` answers worker N's own metrics (how the kernel spread the connections). A worker
that does not answer within SCRAPE_TIMEOUT_SECONDS counts with its last answer, so the sums never go
backwards while the server runs (a worker that dies takes the whole server down).
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("tollgate.metrics")

# Workers serve their metrics here, on a port the kernel picks: only the parent reads them.
LOOPBACK = "127.0.0.1"
SCRAPE_TIMEOUT_SECONDS = 5.0
WORKER_LABEL = "worker"
_SHOWN_ONCE = frozenset({"tollgate_build_info"})
_STALEST = frozenset({"tollgate_jwks_age_seconds"})
_SUMMED_TYPES = frozenset({"counter", "histogram"})
# Direct connections only: an http_proxy in the environment must not see the loopback scrapes.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WorkerMetrics(Collector):
    """The workers' internal metrics endpoints, as they report them, and their merged view."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._ports: list[int | None] = [None] * count  # None: not serving yet
        self._last: list[str] = [""] * count
        self._pool = ThreadPoolExecutor(max_workers=min(count, 8), thread_name_prefix="metrics-scrape")
        # Called before each scrape: takes in the reports of workers that began serving since the
        # supervising loop last looked, so no worker that has served a call is left out.
        self.before_collect: Callable[[], None] = lambda: None

    def add(self, index: int, port: int) -> None:
        self._ports[index] = port

    def scrape(self, index: int) -> str:
        """Worker `index`'s metrics (Prometheus text), or its last answer if it gives none now."""
        port = self._ports[index]
        if port is None:
            return ""
        try:
            with _OPENER.open(f"http://{LOOPBACK}:{port}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as answer:
                text = answer.read().decode()
        except OSError as error:
            log.warning("worker %d's metrics did not answer (%s); its last ones are shown", index, error)
            return self._last[index]
        self._last[index] = text
        return text

    def collect(self) -> Iterator[Metric]:
        self.before_collect()
        yield from merge(list(self._pool.map(self.scrape, range(self.count))))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def merge(texts: Sequence[str]) -> list[Metric]:
    """The families of several workers' expositions (worker i's at index i), merged as the module
    docstring says."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple, tuple[str, dict[str, str], float]]] = {}
    for worker, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            merged = values[family.name]
            combine = _combination(family)
            for sample in family.samples:
                labels = dict(sample.labels)
                if combine is None:
                    labels[WORKER_LABEL] = str(worker)
                key = (sample.name, tuple(sorted(labels.items())))
                earlier = merged.get(key)
                value = sample.value if earlier is None or combine is None else combine(earlier[2], sample.value)
                merged[key] = (sample.name, labels, value)
    for name, family in families.items():
        for sample_name, labels, value in values[name].values():
            family.add_sample(sample_name, labels, value)
    return list(families.values())


def _combination(family: Metric) -> Callable[[float, float], float] | None:
    """How a family's samples from two workers become one; None: they stay apart, by worker."""
    if family.type in _SUMMED_TYPES:
        return _sum
    if family.name.endswith("_created"):  # a counter's creation time (a gauge in the text format)
        return min
    if family.name in _SHOWN_ONCE:
        return _first
    if family.name in _STALEST:
        return _stalest
    return None


def _sum(a: float, b: float) -> float:
    return a + b


def _first(a: float, _b: float) -> float:
    return a


def _stalest(a: float, b: float) -> float:
    return -1.0 if a < 0 or b < 0 else max(a, b)


class MetricsEndpoint:
    """The parent's HTTP listener: GET /metrics (the whole server) and /metrics?worker=N."""

    def __init__(self, host: str, port: int, workers: WorkerMetrics) -> None:
        registry = CollectorRegistry()
        registry.register(workers)
        server_class = type("MetricsServer", (ThreadingHTTPServer,), {
            "address_family": socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                 flags=socket.AI_PASSIVE)[0][0],
            "daemon_threads": True})
        self._server = server_class((host, port), functools.partial(_MetricsHandler, registry, workers))
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _MetricsHandler(BaseHTTPRequestHandler):
    def __init__(self, registry: CollectorRegistry, workers: WorkerMetrics, *args) -> None:
        self._registry, self._workers = registry, workers
        super().__init__(*args)

    def do_GET(self) -> None:  # the name http.server calls
        url = urlsplit(self.path)
        if url.path not in ("/", "/metrics"):
            self.send_error(404)
            return
        worker = parse_qs(url.query).get(WORKER_LABEL)
        if worker is None:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(self._registry)
        elif worker[0].isdigit() and int(worker[0]) < self._workers.count:
            body, content_type = self._workers.scrape(int(worker[0])).encode(), CONTENT_TYPE_LATEST
        else:
            self.send_error(404, f"workers are numbered 0..{self._workers.count - 1}")
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (http.server's signature)
        pass  # one line per scrape would drown the log
