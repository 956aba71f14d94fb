"""Running the real `tollgate serve` in a subprocess, bounded in time."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Starts `python -m service serve` with exactly `env` and waits (at most 30 s) until it
    accepts gRPC calls. Output goes to a file (a pipe nobody reads could stall the server). The
    OAuth endpoints listen on env's TOLLGATE_HTTP_PORT, else on a free port (never the default 8080)."""
    env = {"TOLLGATE_HTTP_PORT": str(free_port()), **env}
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log  # type: ignore[attr-defined]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            code, output = stop_server(process)
            raise AssertionError(f"the server did not start (exit {code}):\n{output}") from None
    return process


def stop_server(process: subprocess.Popen, timeout: float = 15) -> tuple[int, str]:
    """SIGTERM, then a bounded wait (kill past it). Returns the exit code and the output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    output = log.read()
    log.close()
    return process.returncode, output
