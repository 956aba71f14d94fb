"""`make bench` / `python -m bench.run`: Tollgate's Check under load, against a same-stack floor.

For each store (SQLite, PostgreSQL or both):

1. seed a realistic store (bench/seed.py): 10k partners, 100k API keys, 1M relations (`--small`:
   100 partners, 100 keys, 1k relations);
2. the floor (bench/floor.py, a constant-answer gRPC server of the same stack) with the same
   requests as scenarios (a) and (e), at concurrency 1 and at saturation;
3. the real server (`python -m service serve`, one worker) with scenarios (a)-(e) at concurrency 1
   and at saturation, its RSS read at start and at end;
4. the same server with two workers (SO_REUSEPORT) for the throughput ratio;
5. the same server with the fact cache turned off (every check reads the store);
6. a small store (1k relations) for the "cost does not grow with the relations" comparison.

Every response is checked against its scenario's expectation; a mismatch fails the run (exit 1)
after the results are written. Results: a markdown table on stdout and in bench/results.md.
Every loop is bounded (seconds per measurement, call timeouts) and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import grpc

from service.tokens import new_key_encryption_key
from tests.support.keys import access_token_claims

from . import seed as seeding
from .load import Expectation, LoadGenerator, Measurement, Request, Scenario

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = PROJECT_ROOT / "bench" / "results.md"
POLICY = PROJECT_ROOT / "examples" / "policy.yaml"
DISTINCT = 2_000  # distinct credentials (and users) per scenario
TOKEN_LIFETIME = 3 * 3600
START_TIMEOUT = 60.0


# -- scenarios ----------------------------------------------------------------------------------

def build_scenarios(seeded: seeding.Seeded, distinct: int = DISTINCT) -> dict[str, Scenario]:
    """The five scenarios over `distinct` credentials of the seeded store (fewer API keys when the
    store keeps fewer)."""
    size = seeded.size
    partners = [seeding.partner_id(p) for p in seeding.active_partners(size)]
    partner_index = {seeding.partner_id(p): p for p in range(size.partners)}

    keys = seeded.api_keys[:distinct]
    api_key = tuple(Request(partner=pid, api_key=key, operation="createCourtBooking") for pid, key in keys)

    def token(issuer: str, pid: str, scope: str) -> str:
        claims = access_token_claims(seeded.issuers[issuer], seeding.AUDIENCE, pid, scope=scope,
                                     lifetime=TOKEN_LIFETIME)
        return seeded.signers[issuer].sign(claims)

    def nth(kind: str, i: int) -> tuple[str, str]:
        """The i-th (partner, subject) with a relation of `kind`, spread over partners first."""
        pid = partners[i % len(partners)]
        subjects = seeding.subjects(size, partner_index[pid], kind)
        return pid, subjects[(i // len(partners)) % len(subjects)]

    user_jwt = []
    for i in range(distinct):
        pid, user = nth(seeding.ACTIVE_USER, i)
        user_jwt.append(Request(partner=pid, authorization=f"Bearer {token('rsa', pid, 'user:read')}",
                                operation="getUser", user_id=user))
    org_jwt = []
    for i in range(distinct):
        pid, organization = nth(seeding.ACTIVE_ORGANIZATION, i)
        org_jwt.append(Request(partner=pid, authorization=f"Bearer {token('ec', pid, 'organization:read')}",
                               operation="getOrganization", organization_id=organization))
    # Another token's signature on this token's header and payload: well-formed, the right
    # length, and refused only by the RSA verification itself.
    bad_signature = []
    for i, request in enumerate(user_jwt):
        head, payload, _ = request.authorization.removeprefix("Bearer ").split(".")
        other = user_jwt[(i + 1) % len(user_jwt)].authorization.rsplit(".", 1)[1]
        bad_signature.append(replace(request, partner="", authorization=f"Bearer {head}.{payload}.{other}"))
    # Valid tokens on users the partner has no active relation with: a pending or revoked one where
    # the layout has it, otherwise a user never related to anybody.
    missing_relation = []
    for i, request in enumerate(user_jwt):
        p = partner_index[request.partner]
        lapsed = seeding.subjects(size, p, seeding.PENDING_USER) + seeding.subjects(size, p, seeding.REVOKED_USER)
        user = lapsed[i % len(lapsed)] if lapsed and i % 2 == 0 else f"u-x{i:06d}"
        missing_relation.append(replace(request, partner="", user_id=user))
    ext_authz = []
    for i in range(distinct):
        if i % 2 == 0 and keys:
            pid, key = keys[(i // 2) % len(keys)]
            ext_authz.append(Request(partner=pid, api_key=key, http_method="POST", path="/v1/court-bookings"))
        else:
            request = user_jwt[i]
            ext_authz.append(Request(partner=request.partner, authorization=request.authorization,
                                     http_method="GET", path=f"/v1/users/{request.user_id}"))
    allow = Expectation(min_allowed=1.0)
    return {
        "a": Scenario("a", "(a) API key + scope (createCourtBooking)", "native", api_key,
                      Expectation(min_allowed=0.99)),
        "b": Scenario("b", "(b) JWT RS256 + scope + user relation (getUser)", "native", tuple(user_jwt), allow),
        "c": Scenario("c", "(c) JWT ES256 + organization relation (getOrganization)", "native", tuple(org_jwt),
                      allow),
        "d-sig": Scenario("d-sig", "(d) deny: bad RS256 signature", "native", tuple(bad_signature),
                          Expectation(min_allowed=0.0, max_allowed=0.0, deny_reasons=("invalid_token",))),
        "d-rel": Scenario("d-rel", "(d) deny: no active user relation", "native", tuple(missing_relation),
                          Expectation(min_allowed=0.0, max_allowed=0.0, deny_reasons=("user_access_denied",))),
        "e": Scenario("e", "(e) ext_authz: API key + JWT/relation mix", "ext_authz", tuple(ext_authz),
                      Expectation(min_allowed=0.99)),
    }


def floor_scenarios(scenarios: dict[str, Scenario]) -> dict[str, Scenario]:
    """The floor gets the requests of (a) and (e), and answers every one with an anonymous allow."""
    def anonymous(scenario: Scenario, key: str, title: str) -> Scenario:
        return Scenario(key, title, scenario.api, tuple(replace(r, partner="") for r in scenario.requests),
                        Expectation(min_allowed=1.0))
    return {"floor": anonymous(scenarios["a"], "floor", "floor: constant allow, requests of (a)"),
            "floor-ext": anonymous(scenarios["e"], "floor-ext", "floor: constant ext_authz allow, requests of (e)")}


# -- server processes ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_kib(self) -> dict[int, int]:
        """VmRSS of the server process and of every descendant (the workers), by pid."""
        return {pid: rss for pid in [self.process.pid, *descendants(self.process.pid)]
                if (rss := vm_rss_kib(pid)) is not None}

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and its descendants so far (exited ones aside)."""
        return sum(cpu_seconds(pid) for pid in [self.process.pid, *descendants(self.process.pid)])

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def vm_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per SO_REUSEPORT worker)."""
    # gRPC binds 127.0.0.1 as an IPv4 socket or as a dual-stack one (v4-mapped, in tcp6).
    wanted = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines if line.split()[1] in wanted and line.split()[3] == "0A")
    return count


def _spawn(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen, Path]:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log_path


def _wait_ready(server: Server, listeners: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with grpc.insecure_channel(server.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        except grpc.FutureTimeoutError:
            raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}") from None
    # Every worker must be listening before the clients connect, or the kernel spreads all the
    # connections over the ones that are.
    while listening_sockets(server.port) < listeners:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"{server.name}: {listening_sockets(server.port)} of {listeners} workers listen:\n"
                               f"{server.log_tail()}")
        time.sleep(0.1)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)


@contextmanager
def tollgate(name: str, url: str, log_dir: Path, *, workers: int = 1, cache: bool = True) -> Iterator[Server]:
    port = free_port()
    data_dir = log_dir / f"{name}-data"
    data_dir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TOLLGATE_DATABASE_URL": url,
        "TOLLGATE_DATA_DIR": str(data_dir),
        "TOLLGATE_POLICY_PATH": str(POLICY),
        # Nothing is sealed (no HS256 issuer); the server still wants the key at start.
        "TOLLGATE_KEY_ENCRYPTION_KEY": new_key_encryption_key(),
        "TOLLGATE_LOG_FORMAT": "json",
        "TOLLGATE_LOG_LEVEL": "WARNING",
        "TOLLGATE_WORKERS": str(workers),
    }
    if not cache:
        env["TOLLGATE_CACHE_MAX_ENTRIES"] = "0"
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0"]
    process, log_path = _spawn(name, command, env, log_dir)
    server = Server(name, process, port, log_path)
    try:
        _wait_ready(server, workers)
        yield server
    finally:
        stop(server)


@contextmanager
def floor_server(log_dir: Path) -> Iterator[Server]:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8")}
    process, log_path = _spawn("floor", [sys.executable, "-m", "bench.floor", "--port", str(port)], env, log_dir)
    server = Server("floor", process, port, log_path)
    try:
        _wait_ready(server, 1)
        yield server
    finally:
        stop(server)


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Row:
    store: str
    server: str  # "floor", "1 worker", "2 workers", "1 worker, no cache", "1 worker, 1k relations", …
    scenario: Scenario
    measurement: Measurement
    problems: list[str]


@dataclass
class StoreResult:
    store: str
    seeded: dict[str, dict] = field(default_factory=dict)  # size name -> counts and seconds
    rows: list[Row] = field(default_factory=list)
    rss: list[tuple[str, dict[int, int], dict[int, int]]] = field(default_factory=list)  # server, start, end
    notes: list[str] = field(default_factory=list)

    def find(self, server: str, scenario: str, mode: str) -> Measurement | None:
        for row in self.rows:
            if row.server == server and row.scenario.key == scenario and row.measurement.mode == mode:
                return row.measurement
        return None


@dataclass
class Options:
    stores: list[str]
    small: bool
    quick: bool
    seconds: float
    warmup: float
    clients: int
    inflight: int
    distinct: int
    output: Path


class Bench:
    def __init__(self, options: Options, load: LoadGenerator, log_dir: Path, say: Callable[[str], None]) -> None:
        self.options = options
        self.load = load
        self.log_dir = log_dir
        self.say = say

    def measure(self, result: StoreResult, server: Server, label: str, scenario: Scenario, mode: str, *,
                prime: bool = False) -> Measurement:
        o = self.options
        m = self.load.run(server.target, scenario, mode=mode, seconds=o.seconds, warmup=o.warmup,
                          inflight=o.inflight, prime=prime, cpu_probe=server.cpu_seconds)
        problems = m.problems(scenario.expect)
        result.rows.append(Row(result.store, label, scenario, m, problems))
        flag = "" if not problems else "  MISMATCH: " + "; ".join(problems)
        self.say(f"    {label:<34} {scenario.key:<9} {mode:<3} {m.throughput:6.0f}/s  p50 {_us(m.p50)} µs  "
                 f"p99 {_us(m.p99)} µs  p99.9 {_us(m.p999)} µs  server CPU {_us(m.cpu_per_call)} µs/check  "
                 f"({m.total} calls){flag}")
        return m

    def run_store(self, backend: str) -> StoreResult:
        o = self.options
        result = StoreResult(backend)
        size = seeding.SMALL if o.small else seeding.FULL
        with seeding.fresh_database(backend) as url:
            self.say(f"[{backend}] seeding ({size.name}: {size.partners:,} partners, {size.keys:,} keys, "
                     f"{size.relations:,} relations)")
            seeded = seeding.seed(url, size, log=self.say)
            result.seeded[size.name] = {"counts": seeded.counts, "seconds": seeded.seconds}
            self.say(f"[{backend}] seeded in {seeded.seconds['total']:.1f} s; signing tokens")
            scenarios = build_scenarios(seeded, o.distinct)

            self.say(f"[{backend}] floor")
            with floor_server(self.log_dir) as floor:
                for scenario in floor_scenarios(scenarios).values():
                    for mode in ("c1", "sat"):
                        self.measure(result, floor, "floor", scenario, mode, prime=mode == "c1")

            self.say(f"[{backend}] Tollgate, 1 worker")
            with tollgate(f"{backend}-1", url, self.log_dir) as server:
                started = server.rss_kib()
                for scenario in scenarios.values():
                    for mode in ("c1", "sat"):  # c1 first: its priming pass warms the caches for both
                        self.measure(result, server, "1 worker", scenario, mode, prime=mode == "c1")
                result.rss.append(("1 worker", started, server.rss_kib()))

            workload = ["a"] if o.quick else ["a", "b"]
            self.say(f"[{backend}] Tollgate, 2 workers")
            with tollgate(f"{backend}-2", url, self.log_dir, workers=2) as server:
                started = server.rss_kib()
                for key in workload:
                    self.measure(result, server, "2 workers", scenarios[key], "sat", prime=True)
                result.rss.append(("2 workers", started, server.rss_kib()))

            if not o.quick:
                self.say(f"[{backend}] Tollgate, 1 worker, fact cache off")
                with tollgate(f"{backend}-nocache", url, self.log_dir, cache=False) as server:
                    for mode in ("c1", "sat"):
                        self.measure(result, server, "1 worker, no cache", scenarios["b"], mode,
                                     prime=mode == "c1")

        if not o.small:
            with seeding.fresh_database(backend) as url:
                self.say(f"[{backend}] small store for the 1k-vs-1M comparison")
                small = seeding.seed(url, seeding.SMALL, log=lambda _line: None)
                result.seeded[seeding.SMALL.name] = {"counts": small.counts, "seconds": small.seconds}
                b_small = build_scenarios(small, o.distinct)["b"]
                for cache in (True, False):
                    label = "1 worker, 1k relations" + ("" if cache else ", no cache")
                    with tollgate(f"{backend}-small-{cache}", url, self.log_dir, cache=cache) as server:
                        self.measure(result, server, label, b_small, "c1", prime=True)
        else:
            result.notes.append("`--small`: the store has 1k relations, so the 1k-vs-1M comparison is n/a.")
        return result


# -- the report ---------------------------------------------------------------------------------

def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None or seconds != seconds else f"{seconds * 1e6:,.0f}"


def _ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    if not numerator or not denominator or numerator != numerator or denominator != denominator:
        return "n/a"
    return f"{numerator / denominator:.{digits}f}"


def _mib(kib: dict[int, int]) -> str:
    if not kib:
        return "n/a"
    total = sum(kib.values()) / 1024
    return f"{total:,.0f}" if len(kib) == 1 else f"{total:,.0f} ({len(kib)} processes)"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def report(results: list[StoreResult], options: Options, command: str, started: datetime, elapsed: float,
           info: dict[str, str], load_end: str) -> str:
    out: list[str] = []
    add = out.append
    add("# Tollgate benchmark results\n")
    add(f"- date: {started.strftime('%Y-%m-%d %H:%M:%S %Z')}; run took {elapsed / 60:.1f} min")
    add(f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}; Python {info['python']}; "
        f"load average at start {info['load']}, at end {load_end}")
    add(f"- command: `{command}`")
    add(f"- load: {options.clients} client processes × {options.inflight} calls in flight at saturation "
        f"(4 connections each), 1 process × 1 call at concurrency 1 (c1); {options.seconds:g} s measured per "
        f"row after {options.warmup:g} s warm-up; {options.distinct:,} distinct requests (credentials, users) per "
        "scenario, each sent once before its c1 row (and before the 2-worker rows, on every connection) "
        "so that the rows measure the steady state")
    add("- server CPU µs/check: user + system CPU time of the server process(es) (/proc/<pid>/stat) over the "
        "row (warm-up included) divided by the calls answered in it; unlike wall-clock numbers it barely moves "
        "with other load on the machine")
    add("- latencies are client-side round trips in µs; `/ floor` compares with the constant-answer server "
        "of the same stack measured in the same run (native rows against the native floor, ext_authz "
        "against the ext_authz floor)\n")
    for result in results:
        add(f"## {result.store}\n")
        for name, seeded in result.seeded.items():
            c, s = seeded["counts"], seeded["seconds"]
            add(f"- seeded ({name}): {c['partners']:,} partners, {c['api_keys']:,} API keys, "
                f"{c['relations']:,} relations, {c['jwt_issuers']} issuers in {s['total']:.1f} s "
                f"(keys {s['api_keys']:.1f} s, relations {s['relations']:.1f} s)")
        add("")
        add("| server | scenario | mode | checks/s | p50 | p99 | p99.9 | server CPU µs/check | checks/s / floor "
            "| p50 / floor | CPU / floor | responses |")
        add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for row in result.rows:
            m = row.measurement
            floor_key = "floor-ext" if row.scenario.api == "ext_authz" else "floor"
            floor = result.find("floor", floor_key, m.mode)
            is_floor = row.server == "floor"
            responses = ", ".join(f"{k} {v:,}" for k, v in sorted(m.outcomes.items()))
            if row.problems:
                responses += " **MISMATCH: " + "; ".join(row.problems) + "**"
            add(f"| {row.server} | {row.scenario.title} | {m.mode} | {m.throughput:,.0f} | {_us(m.p50)} | "
                f"{_us(m.p99)} | {_us(m.p999)} | {_us(m.cpu_per_call)} | "
                f"{'—' if is_floor else _ratio(m.throughput, floor and floor.throughput)} | "
                f"{'—' if is_floor else _ratio(m.p50, floor and floor.p50)} | "
                f"{'—' if is_floor else _ratio(m.cpu_per_call, floor and floor.cpu_per_call)} | {responses} |")
        add("")
        add("| comparison | value |")
        add("|---|---|")
        for label, server_small, server_big in (("p50 (b) at c1, cache on", "1 worker, 1k relations", "1 worker"),
                                                ("p50 (b) at c1, cache off", "1 worker, 1k relations, no cache",
                                                 "1 worker, no cache")):
            small, big = result.find(server_small, "b", "c1"), result.find(server_big, "b", "c1")
            value = (f"1k relations {_us(small.p50)} µs, 1M relations {_us(big.p50)} µs, ratio "
                     f"{_ratio(big.p50, small.p50)}") if small and big else "n/a"
            add(f"| {label} | {value} |")
        for key in ("a", "b"):
            one, two = result.find("1 worker", key, "sat"), result.find("2 workers", key, "sat")
            value = (f"{one.throughput:,.0f} → {two.throughput:,.0f} checks/s, ratio {_ratio(two.throughput, one.throughput)}"
                     if one and two else "n/a")
            add(f"| 2 workers / 1 worker, ({key}) at saturation | {value} |")
        for server, start, end in result.rss:
            add(f"| server RSS MiB, {server}: start → end | {_mib(start)} → {_mib(end)} |")
        add("")
        for note in result.notes:
            add(f"- {note}")
        if result.notes:
            add("")
    problems = [(r.store, r.server, r.scenario.key, r.measurement.mode, p) for res in results for r in res.rows
                for p in r.problems]
    if problems:
        add("## Mismatches (the run failed)\n")
        for store, server, key, mode, problem in problems:
            add(f"- {store} / {server} / {key} / {mode}: {problem}")
        add("")
    return "\n".join(out)


def parse(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Tollgate Check under load, "
                                     "against a same-stack floor; writes bench/results.md.")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, help="measured seconds per row (default 10; --quick: 2.5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each row (default 2; --quick: 0.5)")
    parser.add_argument("--small", action="store_true", help="seed 1k relations and 100 keys instead of 1M and 100k")
    parser.add_argument("--quick", action="store_true",
                        help="a ~2-minute smoke: --small, 3 s per row with the warm-up, fewer server variants")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes at saturation (default 2)")
    parser.add_argument("--inflight", type=int, default=8,
                        help="calls in flight per client process at saturation (default 8)")
    parser.add_argument("--distinct", type=int, help=f"distinct requests per scenario (default {DISTINCT:,}; "
                        "--quick: 500)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown results file")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (2.5 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    if not 0 < seconds <= 120 or not 0 <= warmup <= 60:
        parser.error("--seconds must be in (0, 120] and --warmup in [0, 60]")
    distinct = args.distinct if args.distinct is not None else (500 if args.quick else DISTINCT)
    if not 10 <= distinct <= 20_000:
        parser.error("--distinct must be 10..20,000")
    if not 1 <= args.clients <= 16 or not 1 <= args.inflight <= 256:
        parser.error("--clients must be 1..16 and --inflight 1..256")
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    return Options(stores, args.small or args.quick, args.quick, seconds, warmup, args.clients, args.inflight,
                   distinct, args.output), args


def main(argv: list[str] | None = None) -> int:
    options, _ = parse(argv)
    command = shlex.join([Path(sys.executable).name, "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(timezone.utc).astimezone()
    clock = time.monotonic()
    info = machine()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - clock:6.1f} s] {line}", flush=True)

    say(f"bench: stores {', '.join(options.stores)}; {'small' if options.small else 'full'} seeding; "
        f"{options.seconds:g} s + {options.warmup:g} s warm-up per row; {options.clients} clients × "
        f"{options.inflight} in flight")
    results: list[StoreResult] = []
    log_dir = Path(tempfile.mkdtemp(prefix="tollgate-bench-logs-"))
    try:
        with LoadGenerator(options.clients) as load:
            bench = Bench(options, load, log_dir, say)
            if not bench.workers:
                say("note: `serve --workers` is not available; the 2-worker rows will be n/a")
            for backend in options.stores:
                results.append(bench.run_store(backend))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    elapsed = time.monotonic() - clock
    text = report(results, options, command, started, elapsed, info, machine()["load"])
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text + "\n")
    print()
    print(text)
    print(f"\nwritten to {options.output} ({elapsed / 60:.1f} min)")
    failed = any(row.problems for result in results for row in result.rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
