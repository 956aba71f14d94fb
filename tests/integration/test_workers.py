"""`serve --workers 2`: two processes share one port, both answer, SIGTERM stops them all."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc, relations_pb2, relations_pb2_grpc

from service.config import ConfigError, Settings
from service.version import VERSION
from service.workers import serve_workers
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def is_worker(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return cmdline.exists() and "spawn_main" in cmdline.read_text()


class Scraped(Counter):
    """Sample values by metric name (all label sets summed) and by (name, *label values)."""

    version: list[str]


def scrape_metrics(metrics_port: int, query: str = "") -> Scraped:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics{query}", timeout=10) as answer:
        text = answer.read().decode()
    scraped = Scraped()
    scraped.version = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scraped[sample.name] += sample.value
            scraped[(sample.name, *sample.labels.values())] += sample.value
            if sample.name == "tollgate_build_info":
                scraped.version.append(sample.labels["version"])
    return scraped


def cli(*words: str, env: dict[str, str]) -> dict:
    """One `tollgate` command on the store of `env`, its --json output."""
    done = subprocess.run([sys.executable, "-m", "service", *words, "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_workers_share_the_port_and_stop_together(tmp_path):
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_METRICS_PORT": "0",
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY)}, "--workers", "2")
    try:
        spawned = {p for p in children(process.pid) if is_worker(p)}
        assert len(spawned) == 2
        for _ in range(20):  # new connections, spread by the kernel; every one must be answered
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                reply = authorization_pb2_grpc.AuthorizationStub(ch).Check(
                    authorization_pb2.CheckRequest(operation="health"), timeout=10)
                assert reply.allowed
    finally:
        code, output = stop_server(process)
    assert code == 0, output
    serving = [line for line in output.splitlines() if line.startswith("Tollgate serving on")]
    assert len(serving) == 1, output  # said once, by the parent, when both workers serve
    assert serving[0].startswith(f"Tollgate serving on 127.0.0.1:{port} with 2 workers (OAuth endpoints on http://"), \
        serving[0]
    assert serving[0].endswith("; metrics off; store: sqlite)"), serving[0]
    assert not any(is_worker(p) for p in spawned)


def test_one_metrics_endpoint_counts_every_workers_checks(tmp_path):
    """Checks over fresh connections land on both workers (the kernel spreads them); the one
    documented metrics port counts them all, and ?worker=N shows each worker's share."""
    port, metrics_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")},
           "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY),
           "TOLLGATE_METRICS_PORT": str(metrics_port)}
    process = start_server(port, env, "--workers", "2")
    checks = 30
    try:
        for index in range(checks):  # a new connection each time, so the kernel picks the worker anew
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                reply = authorization_pb2_grpc.AuthorizationStub(ch).Check(authorization_pb2.CheckRequest(
                    operation="health" if index % 3 else "getUser", resource=authorization_pb2.Resource(
                        user_id="u-1")), timeout=10)  # getUser without a credential: missing_token
            assert reply.allowed == bool(index % 3)
        whole = scrape_metrics(metrics_port)
        per_worker = [scrape_metrics(metrics_port, f"?worker={index}") for index in range(2)]
        missing = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics?worker=2")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(missing, timeout=10)
        assert refused.value.code == 404
    finally:
        code, output = stop_server(process)
    assert code == 0, output
    assert whole["tollgate_checks_total"] == checks
    assert whole[("tollgate_checks_total", "native", "allow", "")] == checks - checks // 3
    assert whole[("tollgate_checks_total", "native", "deny", "missing_token")] == checks // 3
    assert whole['tollgate_check_duration_seconds_count'] == checks
    served = [worker["tollgate_checks_total"] for worker in per_worker]
    assert sum(served) == checks and all(served), served  # both workers served, none was left out
    assert whole["tollgate_build_info"] == 1 and whole.version == [VERSION], whole.version  # once, not per worker


@pytest.mark.parametrize("ports", [{"port": 0}, {"port": 50051, "mtls_port": 0}], ids=["port", "mtls-port"])
def test_several_workers_refuse_port_zero(tmp_path, ports):
    settings = Settings(data_dir=tmp_path, policy_path=EXAMPLE_POLICY, **ports)
    with pytest.raises(ConfigError, match="fixed ports"):
        serve_workers(settings, 2)


def test_a_write_on_one_worker_is_read_by_the_other_at_once(tmp_path):
    """The kernel spreads connections over the workers, so a client's revoke and its next check
    may land on different workers. With the cache refresh at 30 s only the counter the workers
    share (service/check/caching/siblings.py) can make the other worker see the change: every check must."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")},
           "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY),
           "TOLLGATE_CACHE_REFRESH_SECONDS": "30"}

    cli("partner", "create", "platform", "--name", "Platform", "--role", "platform", env=env)
    cli("partner", "create", "acme", "--name", "Acme", "--role", "booking-agent", env=env)
    platform, acme = (cli("key", "issue", name, "--name", "t", env=env)["key"] for name in ("platform", "acme"))
    process = start_server(port, env, "--workers", "2")

    def call(method, request, key):  # a new connection each time, so the kernel picks the worker anew
        # (Check carries the credential in the request; the metadata is for ManageRelation.)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = (authorization_pb2_grpc.AuthorizationStub if method == "Check" else relations_pb2_grpc.RelationsStub)(ch)
            return getattr(stub, method)(request, metadata=[("authorization", f"Bearer {key}")], timeout=10)

    def allowed(user_id):
        return call("Check", authorization_pb2.CheckRequest(
            authorization=f"Bearer {acme}", operation="getUser",
            resource=authorization_pb2.Resource(user_id=user_id)), acme).allowed

    try:
        for index in range(12):
            user_id = f"u-{index}"
            assert not allowed(user_id)
            relation = call("ManageRelation", relations_pb2.ManageRelationRequest(
                request_user_relation=relations_pb2.RequestUserRelation(user_id=user_id)), acme).relation
            call("ManageRelation", relations_pb2.ManageRelationRequest(
                approve_user_relation=relations_pb2.ApproveUserRelation(relation_id=relation.id)), platform)
            assert [allowed(user_id) for _ in range(3)] == [True] * 3, index
            call("ManageRelation", relations_pb2.ManageRelationRequest(
                revoke_relation=relations_pb2.RevokeRelation(relation_id=relation.id)), acme)
            assert [allowed(user_id) for _ in range(3)] == [False] * 3, index
    finally:
        code, output = stop_server(process)
    assert code == 0, output


def test_every_worker_serves_the_token_endpoint_and_signs_with_the_one_key(tmp_path):
    """Both workers bind the HTTP port too; they raced to create the first signing key at start,
    and one key won: every token, whichever worker issued it, verifies with the one published key,
    and a token issued by one worker is revoked on the other at once."""
    import httpx
    import jwt

    port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")},
           "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY),
           "TOLLGATE_HTTP_PORT": str(http_port), "TOLLGATE_METRICS_PORT": str(metrics_port),
           "TOLLGATE_CACHE_REFRESH_SECONDS": "30"}

    cli("partner", "create", "acme", "--name", "Acme", "--role", "booking-agent", env=env)
    client = cli("oauth-client", "create", "acme", "--name", "t", env=env)
    process = start_server(port, env, "--workers", "2")
    base = f"http://127.0.0.1:{http_port}"
    try:
        keys = httpx.get(f"{base}/.well-known/jwks.json", timeout=10).json()["keys"]
        assert len(keys) == 1
        public = jwt.PyJWK(keys[0])
        tokens = []
        for _ in range(16):  # a new connection each time, so the kernel picks the worker anew
            with httpx.Client(timeout=10) as http:
                answer = http.post(f"{base}/oauth/token", data={"grant_type": "client_credentials"},
                                   auth=(client["client_id"], client["client_secret"]))
            assert answer.status_code == 200, answer.text
            tokens.append(answer.json()["access_token"])
        for token in tokens:
            assert jwt.get_unverified_header(token)["kid"] == keys[0]["kid"]
            jwt.decode(token, public.key, algorithms=["ES256"], audience=base)
        answered = [_token_answers(metrics_port, f"?worker={index}") for index in range(2)]
        assert sum(answered) == 16 and all(answered), answered  # both workers issued tokens
        assert _token_answers(metrics_port) == 16  # the one metrics endpoint counts them all
        with httpx.Client(timeout=10) as http:
            revoked = http.post(f"{base}/oauth/revoke", data={"token": tokens[0]},
                                auth=(client["client_id"], client["client_secret"]))
        assert revoked.status_code == 200
        for _ in range(4):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                reply = authorization_pb2_grpc.AuthorizationStub(ch).Check(authorization_pb2.CheckRequest(
                    authorization=f"Bearer {tokens[0]}", operation="createCourtBooking"), timeout=10)
            assert reply.reason == "token_revoked"
    finally:
        code, output = stop_server(process)
    assert code == 0, output


def _token_answers(metrics_port: int, query: str = "") -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics{query}", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('tollgate_token_requests_total{endpoint="token",status="200"}')))


def _threads_cpus(pid: int) -> set[frozenset[int]]:
    """The CPUs each thread of the process may run on."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to choose from")
def test_each_worker_runs_every_thread_on_a_cpu_of_its_own(tmp_path):
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATA_DIR": str(tmp_path),
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY)}, "--workers", "2")
    try:
        workers = sorted(p for p in children(process.pid) if is_worker(p))
        placed = [_threads_cpus(worker) for worker in workers]
        allowed = sorted(os.sched_getaffinity(0))
        assert sorted(placed, key=lambda cpus: sorted(next(iter(cpus)))) == [
            {frozenset({allowed[0]})}, {frozenset({allowed[1]})}]
        assert len(_threads_cpus(process.pid)) == 1 and len(next(iter(_threads_cpus(process.pid)))) == len(allowed)
    finally:
        code, output = stop_server(process)
    assert code == 0, output


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to choose from")
@pytest.mark.parametrize(("pin", "cpus"), [("on", 1), ("off", None)])
def test_one_server_process_runs_on_one_cpu_unless_told_not_to(tmp_path, pin, cpus):
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATA_DIR": str(tmp_path), "TOLLGATE_PIN_WORKERS": pin,
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY)}, "--workers", "1")
    try:
        placed = _threads_cpus(process.pid)
        assert len(placed) == 1, placed  # every thread alike
        assert len(next(iter(placed))) == (cpus or len(os.sched_getaffinity(0)))
    finally:
        code, output = stop_server(process)
    assert code == 0, output
