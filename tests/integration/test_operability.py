"""Operating Tollgate: metrics, decision logs, health that follows the store, reflection, reload."""

import json
import logging
import os
import shutil
import signal
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc
from tollgate.v1 import relations_pb2 as pb

from service.version import VERSION
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.outage import DatabaseSwitch
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY, start_world, stop_world


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_count_decisions_relations_and_never_secrets(database_url, tmp_path):
    world = start_world(database_url, tmp_path, metrics_port=free_port())
    try:
        world.check("getUser", authorization=world.bearer("acme"), user_id="u-active")
        world.check("getUser", user_id="u-active")
        world.check("getUser", user_id="u-active")
        ext_authz_stub(world.channel).Check(ext_authz_request("GET", "/health"), timeout=10)
        world.manage("acme", request_user_relation=pb.RequestUserRelation(user_id="u-m"))
        metrics = scrape(world.app.metrics_port)
    finally:
        stop_world(world)
    assert 'tollgate_checks_total{adapter="native",decision="allow",reason=""} 1.0' in metrics
    assert 'tollgate_checks_total{adapter="native",decision="deny",reason="missing_token"} 2.0' in metrics
    assert 'tollgate_checks_total{adapter="ext_authz",decision="allow",reason=""} 1.0' in metrics
    assert 'tollgate_check_duration_seconds_count{adapter="native"} 3.0' in metrics
    assert 'tollgate_relation_changes_total{action="request_user_relation",outcome="ok"} 1.0' in metrics
    assert f'tollgate_build_info{{version="{VERSION}"}} 1.0' in metrics
    assert not any(key in metrics for key in world.keys.values())


def test_one_json_log_line_per_denied_decision_without_the_token(shared_world, caplog):
    token = shared_world.jwt("rsa", scope="read:user", jti="jti-logged")
    with caplog.at_level(logging.INFO, logger="tollgate.decisions"):
        shared_world.check("updateUser", authorization=f"Bearer {token}", user_id="u-active")
        shared_world.check("getUser", authorization=f"Bearer {token}", user_id="u-active")  # allowed: no line
    records = [r for r in caplog.records if r.name == "tollgate.decisions"]
    assert len(records) == 1
    from service.telemetry import JsonFormatter

    line = json.loads(JsonFormatter().format(records[0]))
    # The credential was proven before the deny: the line names who was refused (never the token).
    assert {k: line[k] for k in ("reason", "partner_id", "credential_id", "credential_kind", "operation",
                                 "http_status", "adapter")} == {
        "reason": "insufficient_scope", "partner_id": "acme", "credential_id": "iss_rsa:jti-logged",
        "credential_kind": "jwt", "operation": "updateUser", "http_status": 403, "adapter": "native"}
    assert line["decision_id"] and token not in caplog.text


def health_status(channel, service=""):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(predicate, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.postgres
def test_health_follows_the_store(postgres_url, postgres_admin_url, tmp_path):
    world = start_world(postgres_url, tmp_path, health_check_seconds=0.2, db_connect_timeout_seconds=2)
    database = DatabaseSwitch(postgres_admin_url, postgres_url)
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_status(world.channel) == serving
        assert health_status(world.channel, "tollgate.v1.Authorization") == serving
        database.cut()
        assert wait_for(lambda: health_status(world.channel) == health_pb2.HealthCheckResponse.NOT_SERVING)
        database.restore()
        assert wait_for(lambda: health_status(world.channel) == serving)
    finally:
        database.close()
        stop_world(world)


def test_reflection_lists_every_service(shared_world):
    stub = reflection_pb2_grpc.ServerReflectionStub(shared_world.channel)
    answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=10))
    assert {s.name for s in answer.list_services_response.service} >= {
        "tollgate.v1.Authorization", "tollgate.v1.Relations", "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_reflection_v1_lists_every_service_and_resolves_files(shared_world):
    """What grpcurl, buf curl and Postman ask first (tests/integration/test_reflection.py runs buf curl)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from service.transport.reflection import v1_file_proto

    pool = descriptor_pool.DescriptorPool()  # v1's own messages, apart from the server's pool
    pool.Add(v1_file_proto())
    request_class, response_class = (message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"grpc.reflection.v1.ServerReflection{kind}")) for kind in ("Request", "Response"))
    info = shared_world.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)

    def ask(**request):
        return next(info(iter([request_class(**request)]), timeout=10))

    listed = {s.name for s in ask(list_services="").list_services_response.service}
    assert listed >= {"tollgate.v1.Authorization", "tollgate.v1.Relations", "tollgate.v1.Admin", "tollgate.v1.Tokens",
                      "envoy.service.auth.v3.Authorization", "grpc.health.v1.Health",
                      "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
    for symbol, file_name in (("tollgate.v1.Authorization", "tollgate/v1/authorization.proto"),
                              ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto")):
        answer = ask(file_containing_symbol=symbol)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in answer.file_descriptor_response.file_descriptor_proto]
        assert files[0].name == file_name and symbol.rpartition(".")[2] in {s.name for s in files[0].service}
        assert answer.original_request.file_containing_symbol == symbol
    unknown = ask(file_containing_symbol="tollgate.v1.Nothing")
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_sighup_reloads_the_policy_and_refuses_a_broken_one(tmp_path):
    policy = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATA_DIR": str(tmp_path / "data"), "TOLLGATE_POLICY_PATH": str(policy),
                                  "TOLLGATE_METRICS_PORT": "0", "TOLLGATE_LOG_FORMAT": "json"})
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = authorization_pb2_grpc.AuthorizationStub(channel)
    def reason():
        return stub.Check(authorization_pb2.CheckRequest(operation="status"), timeout=5).reason
    try:
        assert reason() == "unknown_operation"
        policy.write_text(policy.read_text().replace("\noperations:\n", "\noperations:\n  status:\n    public: true\n", 1))
        process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reason() == ""), "the reloaded policy makes status public"
        policy.write_text("operations: [broken\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert reason() == "", "a broken policy is refused; the previous one keeps serving"
    finally:
        channel.close()
        code, output = stop_server(process)
    assert code == 0, output
    assert "policy reload refused" in output and "policy reloaded" in output
    assert all(json.loads(line) for line in output.splitlines() if line.startswith("{"))


def test_sigterm_under_load_finishes_cleanly(tmp_path):
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_METRICS_PORT": "0",
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY), "TOLLGATE_WORKERS": "1"})
    outcomes: list[str] = []
    stop = time.monotonic() + 20

    def load():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = authorization_pb2_grpc.AuthorizationStub(channel)
            while time.monotonic() < stop:
                try:
                    stub.Check(authorization_pb2.CheckRequest(operation="health"), timeout=5)
                    outcomes.append("ok")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
                    return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    code, output = stop_server(process)
    for thread in threads:
        thread.join(timeout=30)
    assert code == 0 and time.monotonic() - started < 12, output
    assert outcomes.count("ok") > 10
    # Calls arriving after the stop are refused (UNAVAILABLE, or CANCELLED by grpcio): never INTERNAL.
    assert set(outcomes) <= {"ok", "UNAVAILABLE", "CANCELLED"}, set(outcomes)
