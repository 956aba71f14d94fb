"""`make serve` as the README shows it: settings from the environment (`TOLLGATE_PORT=… make serve`),
and a flag only for a make variable that was given (`make serve PORT=…`)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from tests.support.processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# make installs the project first when pyproject.toml is newer than the venv's stamp.
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 20.0


def make_environment(**settings: str) -> dict[str, str]:
    """This machine's environment without TOLLGATE_* settings, make variables (an enclosing `make
    test` passes its own in MAKEFLAGS) or HOST/PORT/POLICY, plus `settings`."""
    dropped = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "HOST", "PORT", "POLICY"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_") and k not in dropped}
    return {**env, **settings}


def dry_run(*words: str, env: dict[str, str]) -> str:
    done = subprocess.run(["make", "--no-print-directory", "-n", "serve", *words], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if " serve" in line][-1]


def test_make_serve_passes_a_flag_only_for_a_variable_given():
    env = make_environment(TOLLGATE_PORT="50999")
    assert dry_run(env=env).split() == [".venv/bin/tollgate", "serve"]
    assert dry_run("PORT=50061", env=env).split() == [".venv/bin/tollgate", "serve", "--port", "50061"]
    assert dry_run("HOST=0.0.0.0", "POLICY=my.yaml", env=env).split() == [
        ".venv/bin/tollgate", "serve", "--host", "0.0.0.0", "--policy", "my.yaml"]
    assert dry_run(env={**env, "PORT": "50062"}).split()[-2:] == ["--port", "50062"]  # `PORT=50062 make serve`


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            queue.extend(children)
    return found


def serve_process(make_pid: int) -> int | None:
    """The `tollgate serve` process make started (directly, or through a shell)."""
    for pid in descendants(make_pid):
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "serve" in words and any(word.endswith("tollgate") for word in words):
            return pid
    return None


def wait_until_serving(make: subprocess.Popen, port: int, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return
            except grpc.FutureTimeoutError:
                pass
            if make.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"`make serve` did not serve on TOLLGATE_PORT={port} "
                                     f"(exit {make.poll()}):\n{log.read()}")


def test_make_serve_takes_its_settings_from_the_environment(tmp_path):
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = make_environment(TOLLGATE_PORT=str(port), TOLLGATE_HTTP_PORT=str(http_port),
                           TOLLGATE_METRICS_PORT=str(metrics_port), TOLLGATE_DATA_DIR=str(tmp_path / "data"))
    log = tempfile.TemporaryFile(mode="w+")
    make = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=PROJECT_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        wait_until_serving(make, port, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reply = authorization_pb2_grpc.AuthorizationStub(channel).Check(
                authorization_pb2.CheckRequest(operation="health"), timeout=10)
            assert reply.allowed
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert 'tollgate_checks_total{adapter="native",decision="allow",reason=""} 1.0' in metrics
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/.well-known/jwks.json", timeout=10) as answer:
            assert answer.status == 200
        assert (tmp_path / "data" / "tollgate.db").exists(), "TOLLGATE_DATA_DIR is used"

        server = serve_process(make.pid)
        assert server is not None, descendants(make.pid)
        os.kill(server, signal.SIGTERM)  # as a supervisor stops it; make then ends with the server's code
        assert make.wait(timeout=STOP_TIMEOUT_SECONDS) == 0
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=10)
        log.seek(0)
        output = log.read()
        log.close()
    serving = [line for line in output.splitlines() if line.startswith("Tollgate serving on")]
    assert len(serving) == 1 and serving[0].startswith(f"Tollgate serving on 127.0.0.1:{port} with "), output
