"""The shortcuts of a cached Check keep every answer the same: decision ids, prebuilt responses,
kept metric children."""

from __future__ import annotations

import dataclasses
import os
import re
import threading

from prometheus_client import generate_latest
from tollgate.v1 import authorization_pb2

from service.domain.decision import Decision, Reason, deny
from service.domain.ids import new_decision_id
from service.domain.model import CredentialKind, Principal
from service.domain.scopes import AccessLevel, Permission
from service.telemetry import Telemetry
from service.transport.convert import check_response_template
from service.transport.ext_authz_convert import DECISION_HEADER, ext_authz_template
from service.transport.responses import CheckResponses, ExtAuthzResponses

ALLOW = Decision(allowed=True, message="allowed", principal=Principal("p", "key_1", CredentialKind.API_KEY),
                 grants=(Permission("court-booking", AccessLevel.WRITE), Permission("user", AccessLevel.READ)))
DENY = deny(Reason.INSUFFICIENT_SCOPE, "the credential lacks the permission user:write", missing_scope="user:write")


def test_decision_ids_are_32_hex_digits_and_unique():
    ids = [new_decision_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_its_own_decision_id_prefix():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert len(theirs) == 32 and theirs[:16] != new_decision_id()[:16]


def test_a_native_response_is_the_built_one_with_its_own_decision_id():
    responses = CheckResponses("r")
    for decision in (ALLOW, DENY):
        first = responses.message(decision, "a" * 32)
        first.message = "changed by the caller"  # a copy: the next response is not touched
        second = responses.message(decision, "b" * 32)
        expected = check_response_template(decision, "r")
        expected.decision_id = "b" * 32
        assert second == expected
    assert CheckResponses("other").message(DENY, "c").www_authenticate.startswith('Bearer realm="other"')


def test_a_serialized_response_decodes_as_the_built_one_with_its_own_decision_id():
    """The first response to a decision builds its template, the next ones copy it; any realm and
    any decision id (32 characters, as new_decision_id makes them, or another length) still give
    the built response, also for an equal decision that is another object."""
    for repeat in range(3):
        for decision in (ALLOW, DENY, dataclasses.replace(ALLOW)):
            for realm in ("r", "other", "r"):
                responses = CheckResponses(realm)
                for decision_id in (new_decision_id(), "d", "é" * 32):
                    encoded = responses.serialized(decision, decision_id)
                    expected = check_response_template(decision, realm)
                    expected.decision_id = decision_id
                    assert authorization_pb2.CheckResponse.FromString(encoded) == expected, repeat


def test_an_ext_authz_response_carries_its_decision_id_everywhere():
    responses = ExtAuthzResponses("r")
    for decision in (ALLOW, DENY):
        for decision_id in ("a" * 32, "b" * 32):
            response = responses.response(decision, decision_id, operation="getUser", strip_credentials=True)
            assert response.dynamic_metadata["decision_id"] == decision_id
            if decision.allowed:
                headers = {h.header.key: h.header.value for h in response.ok_response.headers}
                assert headers[DECISION_HEADER] == decision_id
                assert response.ok_response.dynamic_metadata["decision_id"] == decision_id
            built = ext_authz_template(decision, "r", "getUser", True)
            for message in (built.dynamic_metadata, *([built.ok_response.dynamic_metadata] if decision.allowed else [])):
                message.fields["decision_id"].string_value = decision_id
            if decision.allowed:
                built.ok_response.headers[0].header.value = decision_id
            assert response == built


def test_metrics_count_every_decision():
    telemetry = Telemetry()
    for _ in range(3):
        telemetry.record_decision("native", "getUser", ALLOW, "d", 0.0002)
    telemetry.record_decision("native", "getUser", DENY, "d", 0.0002)
    telemetry.record_decision("ext_authz", "getUser", ALLOW, "d", 0.002)
    text = generate_latest(telemetry.registry).decode()
    assert 'tollgate_checks_total{adapter="native",decision="allow",reason=""} 3.0' in text
    assert 'tollgate_checks_total{adapter="native",decision="deny",reason="insufficient_scope"} 1.0' in text
    assert 'tollgate_checks_total{adapter="ext_authz",decision="allow",reason=""} 1.0' in text
    assert 'tollgate_check_duration_seconds_count{adapter="native"} 4.0' in text
    assert 'tollgate_check_duration_seconds_bucket{adapter="ext_authz",le="0.0025"} 1.0' in text
    assert 'tollgate_check_duration_seconds_bucket{adapter="ext_authz",le="0.001"} 0.0' in text
    assert 'tollgate_check_duration_seconds_bucket{adapter="native",le="0.00025"} 4.0' in text
    assert 'tollgate_check_duration_seconds_bucket{adapter="native",le="+Inf"} 4.0' in text
    assert 'tollgate_check_duration_seconds_sum{adapter="native"} 0.0008' in text


def test_metrics_lose_no_count_across_threads_and_scrapes():
    """Each handler thread counts in its own tallies; scrapes taken while they count never
    disturb them, and the sum over threads is exact (also after the threads have ended)."""
    telemetry = Telemetry()
    per_thread, threads = 5_000, 8
    start = threading.Barrier(threads + 1)

    def count():
        start.wait()
        for i in range(per_thread):
            telemetry.record_decision("native", "getUser", ALLOW if i % 2 else DENY, "d", 0.0003)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    while any(worker.is_alive() for worker in workers):
        generate_latest(telemetry.registry)
    for worker in workers:
        worker.join()
    text = generate_latest(telemetry.registry).decode()
    half = threads * per_thread // 2
    assert f'tollgate_checks_total{{adapter="native",decision="allow",reason=""}} {float(half)}' in text
    assert f'tollgate_checks_total{{adapter="native",decision="deny",reason="insufficient_scope"}} {float(half)}' in text
    assert f'tollgate_check_duration_seconds_bucket{{adapter="native",le="0.0005"}} {float(2 * half)}' in text


def test_a_decision_hashes_every_field_once():
    """Templates are keyed by Decision: two decisions that differ in any one field are different
    keys, and a decision's hash, computed once, stays what it was."""
    other_values = {"allowed": False, "reason": Reason.INVALID_TOKEN, "message": "m", "field": "userId",
                    "principal": Principal("q", "key_2", CredentialKind.JWT), "grants": (),
                    "missing_scope": "user:write", "retry_after": 7}
    assert set(other_values) == {field.name for field in dataclasses.fields(Decision)}
    base = hash(ALLOW)
    for name, value in other_values.items():
        changed = dataclasses.replace(ALLOW, **{name: value})
        assert changed != ALLOW and hash(changed) != base, name
    assert hash(ALLOW) == base and hash(dataclasses.replace(ALLOW)) == base
