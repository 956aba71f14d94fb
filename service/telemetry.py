"""Metrics (Prometheus, on their own HTTP port) and the decision log: what operators watch.

One Telemetry per server, on its own registry, so several servers in one process never share
counters. The decision log has one JSON line per denied decision: reason, partner, operation,
decision id — never a credential.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Callable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .domain.decision import Decision
from .version import VERSION

decision_log = logging.getLogger("tollgate.decisions")

# Check latency is dominated by gRPC (~0.2 ms); buckets resolve the sub-millisecond range.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class DecisionMetrics(Collector):
    """`tollgate_checks_total`, `tollgate_checks_recalled_total` and `tollgate_check_duration_seconds`,
    counted per handler thread.

    They move on every check, which makes them the dearest metrics to keep: prometheus_client's
    Counter and Histogram take a lock per increment and walk the buckets in Python, several frames
    per check on the hot path. Here each thread adds to its own tallies (no other thread writes
    them, so no lock and no lost increment), and a scrape sums every thread's.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[_Tallies] = []  # every thread's, kept after the thread ends
        self._lock = threading.Lock()  # guards _all only

    def record(self, adapter: str, allowed: bool, reason: str, seconds: float, recalled: bool = False) -> None:
        tallies = getattr(self._local, "tallies", None)
        if tallies is None:
            tallies = self._local.tallies = _Tallies()
            with self._lock:
                self._all.append(tallies)
        key = (adapter, allowed, reason)
        tallies.decisions[key] = tallies.decisions.get(key, 0) + 1
        if recalled:
            tallies.recalled[adapter] = tallies.recalled.get(adapter, 0) + 1
        latency = tallies.latency.get(adapter)
        if latency is None:
            latency = tallies.latency[adapter] = [0.0] + [0] * (len(_LATENCY_BUCKETS) + 1)
        latency[0] += seconds
        latency[1 + bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1

    def collect(self):
        with self._lock:
            every = list(self._all)
        decisions: dict[tuple[str, bool, str], int] = {}
        recalled: dict[str, int] = {}
        latency: dict[str, list[float]] = {}
        for tallies in every:
            for key, count in list(tallies.decisions.items()):
                decisions[key] = decisions.get(key, 0) + count
            for adapter, count in list(tallies.recalled.items()):
                recalled[adapter] = recalled.get(adapter, 0) + count
            for adapter, counts in list(tallies.latency.items()):
                total = latency.setdefault(adapter, [0.0] * len(counts))
                for i, value in enumerate(list(counts)):
                    total[i] += value
        checks = CounterMetricFamily("tollgate_checks", "Check decisions by adapter, decision and reason.",
                                     labels=["adapter", "decision", "reason"])
        for (adapter, allowed, reason), count in sorted(decisions.items()):
            checks.add_metric([adapter, "allow" if allowed else "deny", reason], count)
        yield checks
        memo = CounterMetricFamily("tollgate_checks_recalled", "Checks answered from the decision memo (counted in "
                                   "tollgate_checks_total too), by adapter.", labels=["adapter"])
        for adapter, count in sorted(recalled.items()):
            memo.add_metric([adapter], count)
        yield memo
        durations = HistogramMetricFamily("tollgate_check_duration_seconds", "Time to decide one check, by adapter.",
                                          labels=["adapter"])
        for adapter, (total_seconds, *counts) in sorted(latency.items()):
            cumulative: float = 0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip((*(str(b) for b in _LATENCY_BUCKETS), "+Inf"), counts, strict=True):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            durations.add_metric([adapter], buckets, total_seconds)
        yield durations


class _KeyAges(Collector):
    def __init__(self, ages: Callable[[], Mapping[str, float | None]]) -> None:
        self._ages = ages

    def collect(self):
        gauge = GaugeMetricFamily("tollgate_jwks_age_seconds", "Seconds since each remote issuer's keys were last "
                                  "fetched successfully (-1: never).", labels=["issuer"])
        for issuer, age in sorted(self._ages().items()):
            gauge.add_metric([issuer], -1.0 if age is None else age)
        yield gauge


class _ListenerUp(Collector):
    def __init__(self, up: Callable[[], bool]) -> None:
        self._up = up

    def collect(self):
        yield GaugeMetricFamily("tollgate_revision_listener_up", "1 while the revision listener's connection is up "
                                "(other replicas' changes pushed), 0 while it is down (seen by polling).",
                                value=1.0 if self._up() else 0.0)


class _Tallies:
    """One thread's counts: decisions by (adapter, allowed, reason); per adapter, those recalled
    from the decision memo, and the sum of the durations followed by the count of each bucket (the
    last one: above every bound)."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, bool, str], int] = {}
        self.recalled: dict[str, int] = {}
        self.latency: dict[str, list] = {}


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._decisions = DecisionMetrics()
        self.registry.register(self._decisions)
        self._relation_changes = Counter("tollgate_relation_changes", "ManageRelation calls by action and outcome.",
                                         ["action", "outcome"], registry=self.registry)
        self._store_errors = Counter("tollgate_store_errors", "Store failures seen while serving, by operation.",
                                     ["operation"], registry=self.registry)
        self._token_requests = Counter("tollgate_token_requests", "OAuth endpoint answers (HTTP), by endpoint and "
                                       "status.", ["endpoint", "status"], registry=self.registry)
        self._key_fetches = Counter("tollgate_jwks_fetches", "Fetches of remote issuers' discovery documents and "
                                    "key sets, by issuer and outcome (ok, timeout, http_error, invalid_keys…).",
                                    ["issuer", "outcome"], registry=self.registry)
        self._revision_notifications = Counter(
            "tollgate_revision_notifications", "Store revision notifications received (PostgreSQL LISTEN): changes "
            "committed anywhere, pushed to this process.", registry=self.registry)
        build_info(self.registry)
        self._http: WSGIServer | None = None

    def record_decision(self, adapter: str, operation: str, decision: Decision, decision_id: str,
                        seconds: float, recalled: bool = False) -> None:
        """`operation` goes to the decision log, which has denials only ("" will do for an allow);
        `recalled`: the decision came from the decision memo."""
        reason = decision.reason.value if decision.reason else ""
        allowed = decision.allowed
        self._decisions.record(adapter, allowed, reason, seconds, recalled)
        if not allowed:
            # Who was refused, whenever the credential was proven (empty when none was recognised):
            # the partner and the credential's id and kind, never the credential.
            principal = decision.principal
            decision_log.info("denied", extra={"fields": {
                "decision_id": decision_id, "adapter": adapter, "operation": operation[:200], "reason": reason,
                "http_status": decision.http_status,
                "partner_id": principal.partner_id if principal else "",
                "credential_id": principal.credential_id if principal else "",
                "credential_kind": principal.kind.value if principal else "",
            }})

    def record_relation_change(self, action: str, outcome: str) -> None:
        self._relation_changes.labels(action, outcome).inc()

    def record_token_request(self, endpoint: str, status: int) -> None:
        self._token_requests.labels(endpoint, str(status)).inc()

    def record_store_error(self, operation: str) -> None:
        self._store_errors.labels(operation).inc()

    def record_key_fetch(self, issuer: str, outcome: str) -> None:
        self._key_fetches.labels(issuer, outcome).inc()

    def record_revision_notification(self) -> None:
        self._revision_notifications.inc()

    def watch_revision_listener(self, up: Callable[[], bool]) -> None:
        """`tollgate_revision_listener_up`: 1 while this process LISTENs for store revisions, 0 while
        its connection is down (changes are then seen by polling). Only where there is a listener."""
        self.registry.register(_ListenerUp(up))

    def watch_key_ages(self, ages: Callable[[], Mapping[str, float | None]]) -> None:
        """`tollgate_jwks_age_seconds`: how old each remote issuer's keys are (-1: never fetched)."""
        self.registry.register(_KeyAges(ages))

    def serve_metrics(self, host: str, port: int) -> int:
        """Serves /metrics over HTTP on its own port; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def build_info(registry: CollectorRegistry) -> None:
    """`tollgate_build_info{version}` = 1: which version is running (join on it in queries)."""
    Gauge("tollgate_build_info", "Always 1; the version label is the running Tollgate's.", ["version"],
          registry=registry).labels(VERSION).set(1)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `fields` passed in extra."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
