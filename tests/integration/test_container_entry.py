"""The container image's entry command, run outside a container (there is no container engine here).

`tollgate serve` (ENTRYPOINT + CMD) runs as a subprocess with exactly the environment the
Dockerfile's runtime stage sets, read from its ENV lines, overriding only what cannot be the same
outside a container: the host (127.0.0.1), the gRPC and metrics ports (free ones), the data dir (a
tmp dir) and the policy path (examples/policy.yaml). The Dockerfile's own HEALTHCHECK command must
then report SERVING, and SIGTERM (what `docker stop` sends) must end the server with exit code 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.dockerfile import GRPC_PORT, exec_form, healthcheck, load_stages, stage_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLICY = PROJECT_ROOT / "examples" / "policy.yaml"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (all held until each is known, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.bind(("127.0.0.1", 0))
            sockets.append(held)
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def seconds(value: str, default: float) -> float:
    """A Docker duration such as 5s, 1m30s or 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value or "")
    return sum(float(n) * units[u] for n, u in parts) if parts else default


def container_env(runtime, *, data_dir: Path, port: int, metrics_port: int) -> dict[str, str]:
    """The machine's environment without its TOLLGATE_* settings, plus the Dockerfile's ENV, plus the
    five overrides (each must be one the Dockerfile sets: we override, we do not add)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    image_env = stage_env(runtime, inherited=base)
    overrides = {
        "TOLLGATE_HOST": "127.0.0.1",
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_METRICS_PORT": str(metrics_port),
        "TOLLGATE_DATA_DIR": str(data_dir),
        "TOLLGATE_POLICY_PATH": str(POLICY),
    }
    missing = set(overrides) - set(image_env)
    assert not missing, f"the Dockerfile's runtime ENV does not set {missing}"
    return {**base, **image_env, **overrides}


def health_status(port: int) -> int | None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status
    except grpc.RpcError:
        return None


def logs(directory: Path) -> str:
    return "\n".join(f"--- {name}\n{(directory / name).read_text(errors='replace')}"
                     for name in ("stdout.log", "stderr.log") if (directory / name).exists())


def run_healthcheck(command: list[str], env: dict[str, str], port: int, timeout: float) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command as Docker runs it, with this venv's python for the image's `python`
    and the port substituted (it reads TOLLGATE_PORT; a literal default port is replaced too)."""
    argv = [sys.executable if word in ("python", "python3") and index == 0 else word.replace(GRPC_PORT, str(port))
            for index, word in enumerate(command)]
    return subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout + 10)


def test_the_image_entry_command_serves_passes_its_healthcheck_and_stops_on_sigterm(tmp_path):
    runtime = load_stages()[-1]
    entrypoint, cmd = exec_form(runtime.last("ENTRYPOINT")), exec_form(runtime.last("CMD"))
    assert entrypoint and entrypoint[0] == "tollgate", entrypoint
    options, probe = healthcheck(runtime)
    probe_timeout = seconds(options.get("timeout", ""), 30.0)

    data_dir = tmp_path / "var-lib-tollgate"  # does not exist yet, like a fresh volume's subdirectory
    port, metrics_port = free_ports(2)
    env = container_env(runtime, data_dir=data_dir, port=port, metrics_port=metrics_port)
    argv = [sys.executable, "-m", "service", *entrypoint[1:], *cmd]  # `tollgate serve`

    with open(tmp_path / "stdout.log", "wb") as stdout, open(tmp_path / "stderr.log", "wb") as stderr:
        server = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=stdout, stderr=stderr,
                                  stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while health_status(port) != health_pb2.HealthCheckResponse.SERVING:
            if server.poll() is not None:
                pytest.fail(f"`{' '.join(argv[3:])}` exited with {server.returncode} before serving\n"
                            f"{logs(tmp_path)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"not SERVING within {START_TIMEOUT_SECONDS:.0f} s\n{logs(tmp_path)}", pytrace=False)
            time.sleep(0.2)

        probe_result = run_healthcheck(probe, env, port, probe_timeout)
        assert probe_result.returncode == 0, \
            f"HEALTHCHECK exited {probe_result.returncode}\n{probe_result.stdout}{probe_result.stderr}"

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert response.status == 200, "the metrics port from the ENV serves /metrics"

        assert {"tollgate.db", "secret.key"} <= {p.name for p in data_dir.iterdir()}, \
            "the state lives in TOLLGATE_DATA_DIR"

        server.send_signal(signal.SIGTERM)
        try:
            returncode = server.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT_SECONDS:.0f} s after SIGTERM\n{logs(tmp_path)}", pytrace=False)
        assert returncode == 0, f"exit code {returncode} after SIGTERM\n{logs(tmp_path)}"
        assert "Traceback" not in (tmp_path / "stderr.log").read_text(errors="replace"), logs(tmp_path)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    # With nothing serving, the same probe must report unhealthy (so a 0 above meant something).
    assert run_healthcheck(probe, env, port, probe_timeout).returncode != 0
