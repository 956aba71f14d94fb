"""The low-overhead load: h2load (nghttp2's C HTTP/2 benchmark client) sending gRPC unary calls.

The grpcio load generator (bench/load.py) checks every response but needs about a core of its own;
on a 2-core machine that leaves too little for the server to show how it scales with workers, and it
distorts the ratios to the floor. h2load costs a small fraction of that (its CPU is measured and
reported next to every row), so these rows measure the server.

How a gRPC call is made with h2load: the body file is one gRPC message frame (a 0 flag byte, the
big-endian 4-byte length, the serialized tollgate.v1 or Envoy ext_authz CheckRequest), sent with
`-d` (POST) to `/tollgate.v1.Authorization/Check` (`/envoy.service.auth.v3.Authorization/Check`)
over h2c with `content-type: application/grpc` and `te: trailers`. Each body goes to its own h2load
process (one credential per process; a row runs `bodies` of them at once, the connections split
between them), so a row exercises a few distinct credentials, every one seen before: it measures
the steady state of cache hits.

h2load only sees HTTP status 200, never the gRPC status in the trailers, so every row is verified
on the server's side: one grpcio call per body is decoded and checked before the row, and the
server's Prometheus counter `tollgate_checks_total{adapter,decision,reason}` (each worker's share,
`/metrics?worker=N`, summed) is read before and after the measured run, which must move by exactly the
number of calls h2load saw succeed, for the expected decision only. The measured run is
count-based (`-n`, sized from the warm-up's rate to last about `seconds`, killed after a bounded
timeout), so every call it started has completed and the equality is exact; the warm-up (`-D`)
ends with calls cut in flight, so there the counter must lie between succeeded and started.
The floor has no counter: its rows are checked by the grpcio call and h2load's counts only.

    python -m bench.h2load --ensure      # installs h2load (apt-get, as root) when it is missing
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .load import CALL_TIMEOUT, Request, Scenario, build_message, nearest_rank, outcome_of
from .tools import ToolMissing, ensure_tool

PACKAGE = "nghttp2-client"  # Debian/Ubuntu package of h2load
PATHS = {"native": "/tollgate.v1.Authorization/Check", "ext_authz": "/envoy.service.auth.v3.Authorization/Check",
         "cerbos": "/cerbos.svc.v1.CerbosService/CheckResources"}  # the Cerbos baseline (bench/cerbos.py)
SCRAPE_TIMEOUT = 10.0
CheckKey = tuple[str, str, str]  # (adapter, decision, reason) of tollgate_checks_total


H2LoadMissing = ToolMissing


def ensure_h2load(say: Callable[[str], None]) -> str:
    """The path of h2load; installs Debian's nghttp2-client with apt-get (as root, or through a
    password-less sudo) when it is not on PATH. Raises H2LoadMissing saying what to do otherwise."""
    how = (f"install h2load yourself (Debian/Ubuntu: `sudo apt-get install {PACKAGE}`; Fedora: "
           "`sudo dnf install nghttp2`; macOS: `brew install nghttp2`) and run again, or leave the h2load "
           "rows out with `--parts grpcio`")
    return ensure_tool("h2load", PACKAGE, how, say)


# -- bodies -------------------------------------------------------------------------------------

def grpc_frame(payload: bytes) -> bytes:
    """One gRPC length-prefixed message: compressed flag 0, big-endian 4-byte length, the bytes."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def write_bodies(directory: Path, scenario: Scenario, count: int) -> list[tuple[Path, Request]]:
    """Body files of the scenario's first `count` requests."""
    directory.mkdir(parents=True, exist_ok=True)
    bodies = []
    for i, request in enumerate(scenario.requests[:count]):
        path = directory / f"{scenario.key}-{i}.grpc"
        path.write_bytes(grpc_frame(build_message(scenario.api, request).SerializeToString()))
        bodies.append((path, request))
    return bodies


def check_bodies(target: str, scenario: Scenario, bodies: list[tuple[Path, Request]], expected: str) -> list[str]:
    """Decodes every body file, sends it with grpcio, and returns what is wrong with the answers."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
    from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

    native = scenario.api == "native"
    message_class = authorization_pb2.CheckRequest if native else external_auth_pb2.CheckRequest
    problems = []
    with grpc.insecure_channel(target) as channel:
        stub = (authorization_pb2_grpc if native else external_auth_pb2_grpc).AuthorizationStub(channel)
        for path, request in bodies:
            data = path.read_bytes()
            if data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
                problems.append(f"{path.name}: not one uncompressed gRPC frame")
                continue
            try:
                outcome = outcome_of(scenario.api, stub.Check(message_class.FromString(data[5:]),
                                                              timeout=CALL_TIMEOUT), request)
            except grpc.RpcError as error:
                outcome = f"error:{error.code().name}"
            if outcome != expected:
                problems.append(f"{path.name}: grpcio check gave {outcome}, expected {expected}")
    return problems


# -- the server's decision counter --------------------------------------------------------------

def scrape(urls: Sequence[str], metric: str = "tollgate_checks_total",
           labels: Sequence[str] = ("adapter", "decision", "reason")) -> dict[str, Counter]:
    """A counter (by default tollgate_checks_total by (adapter, decision, reason)) by the values
    of `labels`, per metrics URL (a server's /metrics?worker=N, one per worker); retried for up to
    SCRAPE_TIMEOUT seconds (the metrics may come up just after the gRPC port)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, Counter] = {}
    for url in urls:
        counts: Counter = Counter()
        for family in text_string_to_metric_families(metrics_text(url)):
            for sample in family.samples:
                if sample.name == metric:
                    counts[tuple(sample.labels.get(label, "") for label in labels)] += int(sample.value)
        found[url] = counts
    return found


def metrics_text(url: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    """A server's Prometheus metrics page, retried for up to `timeout` seconds (the metrics may
    come up just after the gRPC port)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http:// metrics URL
                return response.read().decode()
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no metrics at {url}") from None
            time.sleep(0.2)


def counter_delta(before: dict[str, Counter], after: dict[str, Counter]) -> tuple[Counter, dict[str, int]]:
    """The counter's movement summed over the URLs (workers), and the total movement per URL."""
    total: Counter = Counter()
    per_url: dict[str, int] = {}
    for url, counts in after.items():
        moved = Counter({key: value - before.get(url, Counter()).get(key, 0) for key, value in counts.items()})
        moved = Counter({key: value for key, value in moved.items() if value})
        total.update(moved)
        per_url[url] = sum(moved.values())
    return total, per_url


# -- running h2load -----------------------------------------------------------------------------

@dataclass
class H2LoadStats:
    """What one h2load process reported."""

    seconds: float = 0.0  # "finished in"
    total: int = 0
    started: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    cpu: float = 0.0  # user + system CPU seconds of the process (wait4 rusage)
    returncode: int | None = None
    latencies_us: list[int] = field(default_factory=list, repr=False)
    output: str = field(default="", repr=False)


_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s)\b")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")


def parse_output(text: str) -> H2LoadStats:
    stats = H2LoadStats(output=text)
    if match := _FINISHED.search(text):
        stats.seconds = float(match.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]
    if match := _REQUESTS.search(text):
        (stats.total, stats.started, stats.done, stats.succeeded, stats.failed, stats.errored,
         stats.timeout) = (int(g) for g in match.groups())
    return stats


def read_latencies(log_file: Path) -> list[int]:
    """Microseconds from start to end of each successful request (`--log-file`, status 200)."""
    latencies = []
    try:
        with open(log_file) as lines:
            for line in lines:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] == "200":
                    latencies.append(int(parts[2]))
    except OSError:
        pass
    return latencies


class H2LoadRun:
    """`len(bodies)` h2load processes started together, one body each, the connections split
    between them; `requests` (-n, split likewise) or `duration` (-D) seconds; `prefix`: a command
    each runs under (`taskset -c 1` with --pin)."""

    def __init__(self, h2load: str, target: str, api: str, bodies: Sequence[Path], work_dir: Path, *,
                 connections: int, streams: int, requests: int | None = None, duration: float | None = None,
                 name: str = "run", prefix: Sequence[str] = ()) -> None:
        if not target.startswith("127.0.0.1:"):
            raise ValueError("h2load only targets 127.0.0.1")
        if (requests is None) == (duration is None):
            raise ValueError("either requests or duration")
        if connections < len(bodies):
            raise ValueError("at least one connection per body")
        self.processes: list[tuple[subprocess.Popen, Path, Path]] = []
        self.stats: list[H2LoadStats] = []
        self.requested = 0  # the -n of every process, summed
        self.started_at = time.monotonic()
        count = len(bodies)
        for i, body in enumerate(bodies):
            clients = connections // count + (1 if i < connections % count else 0)
            out, log = work_dir / f"{name}-{i}.out", work_dir / f"{name}-{i}.log"
            command = [*prefix, h2load, "-t", "1", "-c", str(clients), "-m", str(streams), "-d", str(body),
                       "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log)]
            if requests is not None:
                share = max(clients, requests // count + (1 if i < requests % count else 0))
                self.requested += share
                command += ["-n", str(share)]
            else:
                assert duration is not None  # exactly one of requests and duration (checked above)
                command += ["-D", f"{max(1, round(duration * 1000))}ms"]
            command.append(f"http://{target}{PATHS[api]}")
            with open(out, "w") as output:
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.processes.append((process, out, log))

    def wait(self, timeout: float, tick: Callable[[float], None] | None = None) -> list[H2LoadStats]:
        """Waits for every process (killing those still running after `timeout` seconds); `tick`
        is called about every 0.1 s with the seconds since the start."""
        try:
            return self._wait(timeout, tick)
        except BaseException:
            self.kill()
            raise

    def _wait(self, timeout: float, tick: Callable[[float], None] | None) -> list[H2LoadStats]:
        deadline = self.started_at + timeout
        rusage: dict[int, float] = {}
        codes: dict[int, int] = {}
        while len(codes) < len(self.processes):
            for process, _out, _log in self.processes:
                if process.pid in codes:
                    continue
                if time.monotonic() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                else:
                    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                    if pid == 0:
                        continue
                codes[process.pid] = os.waitstatus_to_exitcode(status)
                process.returncode = codes[process.pid]
                rusage[process.pid] = usage.ru_utime + usage.ru_stime
            if tick is not None:
                tick(time.monotonic() - self.started_at)
            if len(codes) < len(self.processes):
                time.sleep(0.1)
        self.stats = []
        for process, out, log in self.processes:
            stats = parse_output(out.read_text(errors="replace"))
            stats.cpu = rusage[process.pid]
            stats.returncode = codes[process.pid]
            stats.latencies_us = read_latencies(log)
            self.stats.append(stats)
        return self.stats

    def kill(self) -> None:
        for process, _out, _log in self.processes:
            if process.returncode is None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)


@dataclass
class Summary:
    """The processes of one run added up."""

    stats: list[H2LoadStats]

    def _sum(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.stats)

    @property
    def started(self) -> int:
        return self._sum("started")

    @property
    def done(self) -> int:
        return self._sum("done")

    @property
    def succeeded(self) -> int:
        return self._sum("succeeded")

    @property
    def unsuccessful(self) -> int:
        return self._sum("failed") + self._sum("errored") + self._sum("timeout")

    @property
    def seconds(self) -> float:
        """The longest process's run (the processes start together)."""
        return max((s.seconds for s in self.stats), default=0.0)

    @property
    def throughput(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def cpu(self) -> float:
        return self._sum("cpu")

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of every request's latency, in seconds."""
        ordered = sorted(latency for s in self.stats for latency in s.latencies_us)
        return nearest_rank(ordered, q) / 1e6 if ordered else None

    def problems(self, requests: int | None = None) -> list[str]:
        found = []
        bad = [s for s in self.stats if s.returncode != 0 or not s.seconds]
        for s in bad:
            found.append(f"h2load exited {s.returncode}: {' / '.join(s.output.strip().splitlines()[-3:])}")
        if self.unsuccessful:
            found.append(f"h2load: {self._sum('failed')} failed, {self._sum('errored')} errored, "
                         f"{self._sum('timeout')} timed out")
        if requests is not None and self.done < requests:
            found.append(f"h2load finished {self.done:,} of {requests:,} requests")
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.h2load", description="h2load for the benchmark")
    parser.add_argument("--ensure", action="store_true", help="install h2load when it is missing, print its path")
    args = parser.parse_args(argv)
    if args.ensure:
        try:
            print(ensure_h2load(print))
        except H2LoadMissing as error:
            print(error, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
