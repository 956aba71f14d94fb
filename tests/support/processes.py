"""Running the real `tollgate serve` in a subprocess, bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Starts `python -m service serve` and waits (at most 30 s) until it accepts gRPC calls."""
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        process.kill()
        raise AssertionError(f"the server did not start:\n{process.communicate(timeout=10)[0]}") from None
    finally:
        channel.close()
    return process


def stop_server(process: subprocess.Popen, timeout: float = 15) -> tuple[int, str]:
    """SIGTERM, then a bounded wait (kill past it). Returns the exit code and the output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=10)
    return process.returncode, output
