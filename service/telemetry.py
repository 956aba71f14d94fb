"""Metrics (Prometheus, on their own HTTP port) and the decision log: what operators watch.

One Telemetry per server, on its own registry, so several servers in one process never share
counters. The decision log has one JSON line per denied decision: reason, partner, operation,
decision id — never a credential.
"""

from __future__ import annotations

import json
import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from .domain.decision import Decision

decision_log = logging.getLogger("tollgate.decisions")

# Check latency is dominated by gRPC (~0.2 ms); buckets resolve the sub-millisecond range.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._checks = Counter("tollgate_checks", "Check decisions by adapter, decision and reason.",
                               ["adapter", "decision", "reason"], registry=self.registry)
        self._latency = Histogram("tollgate_check_duration_seconds", "Time to decide one check, by adapter.",
                                  ["adapter"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._relation_changes = Counter("tollgate_relation_changes", "ManageRelation calls by action and outcome.",
                                         ["action", "outcome"], registry=self.registry)
        self._store_errors = Counter("tollgate_store_errors", "Store failures seen while serving, by operation.",
                                     ["operation"], registry=self.registry)
        self._http: WSGIServer | None = None
        # labels() takes a lock and checks and joins the label values on every call, several µs a
        # check; there are only a few dozen label sets, so each child is looked up once and kept.
        # (A plain dict: two threads racing on a new key store the same child.)
        self._check_children: dict[tuple[str, bool, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def record_decision(self, adapter: str, operation: str, decision: Decision, decision_id: str,
                        seconds: float) -> None:
        reason = decision.reason.value if decision.reason else ""
        allowed = decision.allowed
        checks = self._check_children.get((adapter, allowed, reason))
        if checks is None:
            checks = self._check_children[adapter, allowed, reason] = self._checks.labels(
                adapter, "allow" if allowed else "deny", reason)
        checks.inc()
        latency = self._latency_children.get(adapter)
        if latency is None:
            latency = self._latency_children[adapter] = self._latency.labels(adapter)
        latency.observe(seconds)
        if not allowed:
            decision_log.info("denied", extra={"fields": {
                "decision_id": decision_id, "adapter": adapter, "operation": operation[:200], "reason": reason,
                "http_status": decision.http_status,
                "partner_id": decision.principal.partner_id if decision.principal else "",
            }})

    def record_relation_change(self, action: str, outcome: str) -> None:
        self._relation_changes.labels(action, outcome).inc()

    def record_store_error(self, operation: str) -> None:
        self._store_errors.labels(operation).inc()

    def serve_metrics(self, host: str, port: int) -> int:
        """Serves /metrics over HTTP on its own port; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


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
