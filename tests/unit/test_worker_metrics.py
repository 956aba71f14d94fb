"""How the parent merges its workers' metrics (service/worker_metrics.py): counters and histograms
summed by label set, build info once, the stalest key age, other gauges kept per worker."""

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.telemetry import Telemetry
from service.worker_metrics import merge


def worker_exposition(checks: int, key_age: float | None, busy: float) -> str:
    telemetry = Telemetry()
    for _ in range(checks):
        telemetry._decisions.record("native", True, "", 0.0003)
    telemetry._decisions.record("ext_authz", False, "missing_token", 0.002)
    telemetry.record_relation_change("approve", "ok")
    telemetry.watch_key_ages(lambda: {"https://idp.example": key_age})
    Gauge("tollgate_test_busy", "A gauge the merge knows nothing about.", registry=telemetry.registry).set(busy)
    return generate_latest(telemetry.registry).decode()


def samples(texts: list[str]) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(type("Merged", (), {"collect": lambda self: merge(texts)})())
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_and_histograms_are_summed_by_label_set():
    merged = samples([worker_exposition(3, 10.0, 1), worker_exposition(4, 20.0, 2)])
    native = (("adapter", "native"), ("decision", "allow"), ("reason", ""))
    assert merged[("tollgate_checks_total", native)] == 7
    assert merged[("tollgate_checks_total", (("adapter", "ext_authz"), ("decision", "deny"),
                                             ("reason", "missing_token")))] == 2
    assert merged[("tollgate_check_duration_seconds_count", (("adapter", "native"),))] == 7
    assert merged[("tollgate_check_duration_seconds_bucket", (("adapter", "native"), ("le", "0.0005")))] == 7
    assert merged[("tollgate_check_duration_seconds_bucket", (("adapter", "ext_authz"), ("le", "0.001")))] == 0
    assert merged[("tollgate_relation_changes_total", (("action", "approve"), ("outcome", "ok")))] == 2


def test_gauges_once_stalest_or_per_worker():
    merged = samples([worker_exposition(1, 10.0, 1), worker_exposition(1, 20.0, 2)])
    build_info = [key for key in merged if key[0] == "tollgate_build_info"]
    assert len(build_info) == 1 and merged[build_info[0]] == 1
    assert merged[("tollgate_jwks_age_seconds", (("issuer", "https://idp.example"),))] == 20.0
    assert merged[("tollgate_test_busy", (("worker", "0"),))] == 1
    assert merged[("tollgate_test_busy", (("worker", "1"),))] == 2
    created = [value for key, value in merged.items() if key[0] == "tollgate_relation_changes_created"]
    assert len(created) == 1  # the earliest worker's


def test_a_worker_that_never_fetched_the_keys_shows_as_never():
    merged = samples([worker_exposition(1, 10.0, 1), worker_exposition(1, None, 1)])
    assert merged[("tollgate_jwks_age_seconds", (("issuer", "https://idp.example"),))] == -1.0


def test_a_worker_not_yet_serving_adds_nothing():
    merged = samples([worker_exposition(2, 5.0, 1), ""])
    assert merged[("tollgate_checks_total", (("adapter", "native"), ("decision", "allow"), ("reason", "")))] == 2
