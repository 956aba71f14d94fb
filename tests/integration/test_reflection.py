"""Server reflection from the outside: buf curl (a third-party client of grpc.reflection.v1), and
`tollgate client describe` / `tollgate client call`, run for real against a real server."""

from __future__ import annotations

import shutil
import subprocess
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tests.integration.test_admin import seed_admin
from tests.integration.test_cli import expect_failure, run_cli
from tests.support.processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUF = PROJECT_ROOT / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def served(shared_world):
    """The shared server, with an admin key (ops) for the Admin calls."""
    shared_world.keys["ops"] = seed_admin(shared_world)
    return shared_world


def client(world, *args: str):
    return run_cli("client", *args, "--target", f"127.0.0.1:{world.app.port}")


# -- buf curl: grpc.reflection.v1, as grpcurl and Postman use it -------------------------------------

def buf_curl(world, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not BUF.exists():
        pytest.fail("buf is not installed (node_modules/@bufbuild/buf): run `make test`, which installs it "
                    "with npm ci", pytrace=False)
    return subprocess.run([str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                           "--reflect-protocol", "grpc-v1", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)


def test_buf_curl_lists_and_calls_through_reflection_v1(served):
    base = f"http://127.0.0.1:{served.app.port}"
    listed = buf_curl(served, "--list-methods", base)
    assert listed.returncode == 0, listed.stderr
    assert {"tollgate.v1.Authorization/Check", "tollgate.v1.Admin/ListRoles", "grpc.health.v1.Health/Check",
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} <= set(listed.stdout.split())
    called = buf_curl(served, "-d", f'{{"operation": "getUser", "resource": {{"userId": "u-active"}}, '
                                    f'"apiKey": "{served.keys["acme"]}"}}', f"{base}/tollgate.v1.Authorization/Check")
    assert called.returncode == 0, called.stderr
    assert '"allowed": true' in called.stdout and '"partnerId": "acme"' in called.stdout


# -- tollgate client describe ---------------------------------------------------------------------------

def test_describe_lists_the_services(served):
    services = [s["name"] for s in client(served, "describe", "--json").json["services"]]
    assert {"tollgate.v1.Authorization", "tollgate.v1.Relations", "tollgate.v1.Admin", "tollgate.v1.Tokens",
            "envoy.service.auth.v3.Authorization", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"} <= set(services)
    assert services == sorted(services)
    human = client(served, "describe")
    assert human.returncode == 0 and human.stdout.splitlines()[0] == "SERVICE"
    assert "tollgate.v1.Authorization" in human.stdout.split()


def test_describe_a_service_a_method_a_message_and_an_enum(served):
    service = client(served, "describe", "tollgate.v1.Authorization", "--json").json
    assert service["file"] == "tollgate/v1/authorization.proto"
    check = next(m for m in service["methods"] if m["name"] == "Check")
    assert check == {"name": "Check", "method": "tollgate.v1.Authorization/Check",
                     "request": "tollgate.v1.CheckRequest", "response": "tollgate.v1.CheckResponse",
                     "client_streaming": False, "server_streaming": False, "streaming": ""}

    for spelling in ("tollgate.v1.Authorization/Check", "tollgate.v1.Authorization.Check"):
        method = client(served, "describe", spelling, "--json").json
        assert method["method"] == "tollgate.v1.Authorization/Check"
        fields = {f["name"]: f for f in method["request_fields"]}
        assert fields["api_key"]["json_name"] == "apiKey" and fields["resource"]["type"] == "tollgate.v1.Resource"
        assert fields["permissions"]["label"] == "repeated"

    message = client(served, "describe", "tollgate.v1.Resource", "--json").json
    assert message["message"] == "tollgate.v1.Resource"
    assert {"user_id", "organization_id", "customer_id"} <= {f["name"] for f in message["fields"]}
    enum = client(served, "describe", "tollgate.v1.AccessLevel", "--json").json
    assert {"name": "ACCESS_LEVEL_READ", "number": 2} in enum["values"]

    human = client(served, "describe", "tollgate.v1.Authorization/Check").stdout
    assert "tollgate.v1.CheckRequest" in human and "apiKey" in human


def test_describe_an_unknown_symbol_is_bad_input(served):
    expect_failure(client(served, "describe", "tollgate.v1.Nothing"), "tollgate.v1.Nothing")


# -- tollgate client call -------------------------------------------------------------------------------

def test_call_check_returns_the_decision_as_json(served):
    request = f'{{"operation":"getUser","resource":{{"userId":"u-active"}},"apiKey":"{served.keys["acme"]}"}}'
    allowed = client(served, "call", "tollgate.v1.Authorization/Check", request)
    assert allowed.returncode == 0, allowed.stderr
    decision = allowed.json
    assert decision["allowed"] is True and decision["httpStatus"] == 200
    assert decision["principal"]["partnerId"] == "acme" and decision["decisionId"]
    assert served.keys["acme"] not in allowed.stdout

    denied = client(served, "call", "tollgate.v1.Authorization.Check",
                    '{"operation":"getUser","resource":{"userId":"u-active"}}').json
    assert denied["allowed"] is False and denied["httpStatus"] == 401 and denied["reason"] == "missing_token"


def test_call_an_admin_rpc_with_a_key(served):
    roles = client(served, "call", "tollgate.v1.Admin/ListRoles", "--key", served.keys["ops"])
    assert roles.returncode == 0, roles.stderr
    assert roles.json["roles"] and all("name" in role for role in roles.json["roles"])
    partner = client(served, "call", "tollgate.v1.Admin/GetPartner", '{"partnerId": "acme"}',
                     "--key", served.keys["ops"]).json
    assert partner["partner"]["id"] == "acme"

    without = expect_failure(client(served, "call", "tollgate.v1.Admin/ListRoles", "{}", "--json"),
                             "error: UNAUTHENTICATED: ", exit_code=1)
    assert without["code"] == "UNAUTHENTICATED" and without["reason"] == "missing_token"
    not_admin = client(served, "call", "tollgate.v1.Admin/ListRoles", "--key", served.keys["acme"])
    expect_failure(not_admin, "error: PERMISSION_DENIED: ", exit_code=1)


@pytest.mark.parametrize("method, request_json, fragment", [
    ("tollgate.v1.Authorization/Chek", "{}", "Check"),  # the message names the methods there are
    ("tollgate.v1.Nothing/Check", "{}", "tollgate.v1.Nothing"),
    ("nonsense", "{}", "nonsense"),
    ("grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "{}", "stream"),
    ("tollgate.v1.Authorization/Check", "{not json", "not valid JSON"),
    ("tollgate.v1.Authorization/Check", "[]", "JSON object"),
    ("tollgate.v1.Authorization/Check", '{"operation": 7, "nope": 1}', "tollgate.v1.CheckRequest"),
])
def test_bad_input_exits_2_without_a_traceback(served, method, request_json, fragment):
    expect_failure(client(served, "call", method, request_json), fragment)  # run_cli refuses any traceback


def test_an_unreachable_server_is_an_rpc_failure():
    result = run_cli("client", "describe", "--target", f"127.0.0.1:{free_port()}", "--timeout", "3s")
    expect_failure(result, "error: UNAVAILABLE: ", exit_code=1)


def test_any_server_with_only_v1alpha_reflection():
    """Not only Tollgate: a plain gRPC server with health and v1alpha reflection, as older servers have."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = ("--target", f"127.0.0.1:{port}")
        listed = run_cli("client", "describe", "--json", *target)
        assert [s["name"] for s in listed.json["services"]] == [health.SERVICE_NAME, reflection.SERVICE_NAME]
        answer = run_cli("client", "call", "grpc.health.v1.Health/Check", '{"service": ""}', *target)
        assert answer.returncode == 0 and answer.json == {"status": "SERVING"}, answer.stderr
        expect_failure(run_cli("client", "call", "grpc.health.v1.Health/Check", '{"service": "nope"}', *target),
                       "error: NOT_FOUND", exit_code=1)
    finally:
        server.stop(0)
