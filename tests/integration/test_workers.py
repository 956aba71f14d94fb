"""`serve --workers 2`: two processes share one port, both answer, SIGTERM stops them all."""

import os
from pathlib import Path

import grpc
import pytest
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from service.config import ConfigError, Settings
from service.workers import serve_workers
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def is_worker(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return cmdline.exists() and "spawn_main" in cmdline.read_text()


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
    assert [line for line in output.splitlines() if line.startswith("Tollgate serving on")] == [
        f"Tollgate serving on 127.0.0.1:{port}"] * 2
    assert not any(is_worker(p) for p in spawned)


@pytest.mark.parametrize("ports", [{"port": 0}, {"port": 50051, "mtls_port": 0}], ids=["port", "mtls-port"])
def test_several_workers_refuse_port_zero(tmp_path, ports):
    settings = Settings(data_dir=tmp_path, policy_path=EXAMPLE_POLICY, **ports)
    with pytest.raises(ConfigError, match="fixed ports"):
        serve_workers(settings, 2)
