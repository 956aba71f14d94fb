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
6. a small store (1k relations) beside the full one for the "cost does not grow with the
   relations" comparison: (b) at concurrency 1 on both, fact cache on and off, in interleaved rounds.

Steps 2-6 use the grpcio load generator (bench/load.py, part `grpcio`). Part `h2load` adds rows
driven by h2load (bench/h2load.py), which leaves the server most of the machine, in interleaved
rounds reported as medians: at saturation the floor with 1 and 2 processes, Tollgate with 1 and 2
workers (scenarios (a), (b), (b-es), (f) and (e)) and with the decision memo off ((a), (b), (b-es),
(f)); at concurrency 1 the floor and 1 worker. Each row is verified against the server's decision
counter. Part `rss` (`--rss-minutes N`) runs (b) at saturation for N minutes against one worker and
samples its RSS every 10 s.

Part `tokens` measures the token endpoint (`POST /oauth/token`, client_credentials) with wrk
(bench/wrk.py) over HTTP/1.1 keep-alive connections, every request from another of the seeded
OAuth clients (2,000 by default), against the HTTP floor (bench/http_floor.py: the same Starlette
and uvicorn stack with an empty handler, 1 and 2 processes) and Tollgate (1 and 2 workers), all
side by side in interleaved rounds; each row is verified by the script's count of non-200 answers
and by the server's `tollgate_token_requests_total`. The h2load part adds (f), Check of a token
that Tollgate issued (obtained from its token endpoint at the start), next to (b) and (b-es), the
same check with an external issuer's RS256 and ES256 tokens.

Every response is checked against its scenario's expectation; a mismatch fails the run (exit 1)
after the results are written. Results: markdown tables on stdout and in bench/results.md.
Every loop is bounded (seconds per measurement, call timeouts, h2load runs killed after a timeout)
and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from service.tokens import new_key_encryption_key
from tests.support.keys import access_token_claims

from . import cold_start, mix, oauth, pinning, propagation, wrk
from . import h2load as h2
from . import seed as seeding
from .load import Expectation, LoadGenerator, Measurement, Request, Scenario
from .tools import ToolMissing

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = PROJECT_ROOT / "bench" / "results.md"
POLICY = PROJECT_ROOT / "examples" / "policy.yaml"
DISTINCT = 2_000  # distinct credentials (and users) per scenario
TOKEN_LIFETIME = 3 * 3600
START_TIMEOUT = 60.0
RSS_INTERVAL = 10.0  # seconds between RSS samples of --rss-minutes
MIN_SHARE = 0.6  # an h2load measured run shorter than this share of --h2load-seconds is run again
# Tollgate's own issuer in every bench server: the servers of a store share it (and their key-encryption
# key), so a token one of them issued is accepted by the others, as replicas of one deployment.
ISSUER_URL = "https://tollgate.bench.test"
SETTLE = 0.3  # seconds after a wrk run before the server's counters are read (its last answers land)
# The scenarios the grpcio load generator runs (b-es and f are h2load rows).
GRPCIO_SCENARIOS = ("a", "b", "c", "d-sig", "d-rel", "e")


# -- scenarios ----------------------------------------------------------------------------------

def build_scenarios(seeded: seeding.Seeded, distinct: int = DISTINCT) -> dict[str, Scenario]:
    """The scenarios over `distinct` credentials of the seeded store (fewer API keys when the
    store keeps fewer); (f) needs a running server and is built by `own_token_scenario`."""
    size = seeded.size
    active = seeding.active_partners(size)
    partner_index = {seeding.partner_id(p): p for p in range(size.partners)}

    keys = seeded.api_keys[:distinct]
    api_key = tuple(Request(partner=pid, api_key=key, operation="createCourtBooking") for pid, key in keys)

    def token(issuer: str, pid: str, scope: str) -> str:
        claims = access_token_claims(seeded.issuers[issuer], seeding.AUDIENCE, pid, scope=scope,
                                     lifetime=TOKEN_LIFETIME)
        return seeded.signers[issuer].sign(claims)

    def nth(kind: str, i: int) -> tuple[str, str]:
        return nth_subject(size, active, kind, i)

    user_jwt, user_jwt_es = [], []
    for i in range(distinct):
        pid, user = nth(seeding.ACTIVE_USER, i)
        user_jwt.append(Request(partner=pid, authorization=f"Bearer {token('rsa', pid, 'user:read')}",
                                operation="getUser", user_id=user))
        user_jwt_es.append(Request(partner=pid, authorization=f"Bearer {token('ec', pid, 'user:read')}",
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
    # (e) and, for the same-request comparison, (e)'s requests as native Check: the same credentials,
    # and the operation and resource the policy's routes map each HTTP request to.
    ext_authz, ext_authz_native = [], []
    for i in range(distinct):
        if i % 2 == 0 and keys:
            pid, key = keys[(i // 2) % len(keys)]
            ext_authz.append(Request(partner=pid, api_key=key, http_method="POST", path="/v1/court-bookings"))
            ext_authz_native.append(Request(partner=pid, api_key=key, operation="createCourtBooking"))
        else:
            request = user_jwt[i]
            ext_authz.append(Request(partner=request.partner, authorization=request.authorization,
                                     http_method="GET", path=f"/v1/users/{request.user_id}"))
            ext_authz_native.append(request)
    allow = Expectation(min_allowed=1.0)
    return {
        "a": Scenario("a", "(a) API key + scope (createCourtBooking)", "native", api_key,
                      Expectation(min_allowed=0.99)),
        "b": Scenario("b", "(b) JWT RS256 + scope + user relation (getUser)", "native", tuple(user_jwt), allow),
        "b-es": Scenario("b-es", "(b-es) JWT ES256, external issuer + scope + user relation (getUser)", "native",
                         tuple(user_jwt_es), allow),
        "c": Scenario("c", "(c) JWT ES256 + organization relation (getOrganization)", "native", tuple(org_jwt),
                      allow),
        "d-sig": Scenario("d-sig", "(d) deny: bad RS256 signature", "native", tuple(bad_signature),
                          Expectation(min_allowed=0.0, max_allowed=0.0, deny_reasons=("invalid_token",))),
        "d-rel": Scenario("d-rel", "(d) deny: no active user relation", "native", tuple(missing_relation),
                          Expectation(min_allowed=0.0, max_allowed=0.0, deny_reasons=("user_access_denied",))),
        "e": Scenario("e", "(e) ext_authz: API key + JWT/relation mix", "ext_authz", tuple(ext_authz),
                      Expectation(min_allowed=0.99)),
        "e-native": Scenario("e-native", "(e-native) (e)'s requests as native Check", "native",
                             tuple(ext_authz_native), Expectation(min_allowed=0.99)),
    }


def nth_subject(size: seeding.SeedSize, active: list[int], kind: str, i: int) -> tuple[str, str]:
    """The i-th (partner, subject) with a relation of `kind`, spread over the active partners first
    (so the i-th seeded OAuth client, seeding.oauth_client_partner, belongs to the i-th pair's partner)."""
    p = active[i % len(active)]
    subjects = seeding.subjects(size, p, kind)
    return seeding.partner_id(p), subjects[(i // len(active)) % len(subjects)]


def own_token_scenario(seeded: seeding.Seeded, tokens: list[str]) -> Scenario:
    """(f): the requests of (b) (the same partner/user pairs, getUser) with, instead of an external
    issuer's token, the access token Tollgate issued to the i-th seeded OAuth client (scope user:read)."""
    active = seeding.active_partners(seeded.size)
    requests = []
    for i, token in enumerate(tokens):
        pid, user = nth_subject(seeded.size, active, seeding.ACTIVE_USER, i)
        if seeded.oauth_clients[i].partner != pid:
            raise AssertionError(f"OAuth client {i} belongs to {seeded.oauth_clients[i].partner}, not {pid}")
        requests.append(Request(partner=pid, authorization=f"Bearer {token}", operation="getUser", user_id=user))
    return Scenario("f", "(f) JWT ES256 issued by Tollgate + scope + user relation (getUser)", "native",
                    tuple(requests), Expectation(min_allowed=1.0))


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


def free_ports(count: int, avoid: tuple[int, ...] = ()) -> int:
    """The first of `count` consecutive free ports, none of them in `avoid` (ports chosen for the
    same server but not bound yet)."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535 or set(range(first, first + count)) & set(avoid):
            continue
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path
    # Metrics URLs, one per worker (the server's one metrics port, ?worker=N: each worker's own
    # share); empty when metrics are off. Further top-level processes (the 2-process floor).
    metrics_urls: tuple[str, ...] = ()
    others: tuple[subprocess.Popen, ...] = ()
    # The OAuth endpoints' HTTP port (Tollgate; the HTTP floor serves only this one); 0: none.
    http_port: int = 0

    @property
    def http_target(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        tops = [self.process.pid, *(p.pid for p in self.others)]
        return [pid for top in tops for pid in (top, *descendants(top))]

    def rss_kib(self) -> dict[int, int]:
        """VmRSS of the server process(es) and of every descendant (the workers), by pid."""
        return {pid: rss for pid in self.pids() if (rss := vm_rss_kib(pid)) is not None}

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process(es) and descendants so far (exited ones aside)."""
        return sum(cpu_seconds(pid) for pid in self.pids())

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


def _spawn(name: str, command: list[str], env: dict[str, str], log_dir: Path,
           service_dir: Path | None = None) -> tuple[subprocess.Popen, Path]:
    """`service_dir`: run from there (its `service` package is imported first), with this tree
    on PYTHONPATH for the bench modules."""
    log_path = log_dir / f"{name}.log"
    if service_dir is not None:
        env = {**env, "PYTHONPATH": str(PROJECT_ROOT)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=service_dir or PROJECT_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, log_path


def _wait_ready(server: Server, listeners: int, grpc_port: bool = True) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    if grpc_port:
        with grpc.insecure_channel(server.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
            except grpc.FutureTimeoutError:
                raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}") from None
    # Every worker must be listening before the clients connect, or the kernel spreads all the
    # connections over the ones that are.
    ports = ([server.port] if grpc_port else []) + ([server.http_port] if server.http_port else [])
    for port in ports:
        while listening_sockets(port) < listeners:
            if time.monotonic() > deadline or server.process.poll() is not None:
                raise RuntimeError(f"{server.name}: {listening_sockets(port)} of {listeners} workers listen on "
                                   f"{port}:\n{server.log_tail()}")
            time.sleep(0.1)


def stop(server: Server) -> None:
    processes = [server.process, *server.others]
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def tollgate(name: str, url: str, log_dir: Path, *, workers: int = 1, cache: bool = True,
             metrics: bool = False, memo: bool = True, kek: str | None = None,
             service_dir: Path | None = None, settings: dict[str, str] | None = None) -> Iterator[Server]:
    """The real server; `metrics`: with /metrics on consecutive free ports (one per worker);
    `memo`: False turns the decision memo off (every check decided from the fact cache); `kek`:
    the key-encryption key (servers on one store share it: it seals the store's signing key;
    default: a fresh one); `service_dir`: a source tree whose `service` to run instead of this one;
    `settings`: further TOLLGATE_* variables.
    Every server gets its own free HTTP port for the OAuth endpoints (its workers share it)."""
    port = free_port()
    http_port = free_port()
    while http_port == port:
        http_port = free_port()
    metrics_port = free_ports(1, avoid=(port, http_port)) if metrics else 0
    data_dir = log_dir / f"{name}-data"
    data_dir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TOLLGATE_DATABASE_URL": url,
        "TOLLGATE_DATA_DIR": str(data_dir),
        "TOLLGATE_POLICY_PATH": str(POLICY),
        # Seals the store's signing key (made by the first server to start on it).
        "TOLLGATE_KEY_ENCRYPTION_KEY": kek or new_key_encryption_key(),
        "TOLLGATE_LOG_FORMAT": "json",
        "TOLLGATE_LOG_LEVEL": "WARNING",
        "TOLLGATE_WORKERS": str(workers),
        "TOLLGATE_HTTP_PORT": str(http_port),
        "TOLLGATE_ISSUER_URL": ISSUER_URL,
        "TOLLGATE_ACCESS_TOKEN_LIFETIME_SECONDS": str(TOKEN_LIFETIME),
    }
    if not cache:
        env["TOLLGATE_CACHE_MAX_ENTRIES"] = "0"
    if not memo:
        env["TOLLGATE_DECISION_MEMO_MAX_ENTRIES"] = "0"
    env.update(settings or {})
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(metrics_port)]
    process, log_path = _spawn(name, command, env, log_dir, service_dir)
    server = Server(name, process, port, log_path,
                    tuple(f"http://127.0.0.1:{metrics_port}/metrics?worker={index}" for index in range(workers))
                    if metrics else (), http_port=http_port)
    try:
        _wait_ready(server, workers)
        yield server
    finally:
        stop(server)


@contextmanager
def floor_server(log_dir: Path, processes: int = 1, service_dir: Path | None = None) -> Iterator[Server]:
    """The floor; `processes` > 1: that many floor processes on one port (gRPC binds with
    SO_REUSEPORT), the floor of a server with as many workers."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8")}
    spawned = [_spawn(f"floor-{processes}-{i}", [sys.executable, "-m", "bench.floor", "--port", str(port),
                                                  "--index", str(i)], env, log_dir, service_dir)
               for i in range(processes)]
    server = Server("floor", spawned[0][0], port, spawned[0][1], others=tuple(p for p, _ in spawned[1:]))
    try:
        _wait_ready(server, processes)
        yield server
    finally:
        stop(server)


@contextmanager
def http_floor_server(log_dir: Path, processes: int = 1, service_dir: Path | None = None) -> Iterator[Server]:
    """The HTTP floor (bench/http_floor.py): `processes` processes on one port (SO_REUSEPORT)."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8")}
    spawned = [_spawn(f"http-floor-{processes}-{i}", [sys.executable, "-m", "bench.http_floor", "--port", str(port),
                                                       "--index", str(i)], env, log_dir, service_dir)
               for i in range(processes)]
    server = Server("HTTP floor", spawned[0][0], port, spawned[0][1], others=tuple(p for p, _ in spawned[1:]),
                    http_port=port)
    try:
        _wait_ready(server, processes, grpc_port=False)
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
    round: int | None = None  # the 1k-vs-1M rows are measured in interleaved rounds (Bench.relations_rows)


@dataclass
class H2Row:
    """One h2load row: a server, a scenario, at saturation."""

    store: str
    server: str  # "floor", "floor, 2 processes", "1 worker", "2 workers", "1 worker, no decision memo",
    # and at concurrency 1 (one connection, one stream, one body): "floor (c1)", "1 worker (c1)"
    scenario: Scenario
    round: int = 0  # rows are measured in interleaved rounds (see Bench.h2load_rows)
    requests: int = 0  # -n of the measured run
    summary: h2.Summary | None = None
    server_cpu: float | None = None
    checks: int = 0  # decisions counted by the server (the floor: calls h2load saw succeed)
    split: list[int] = field(default_factory=list)  # checks per worker (its /metrics?worker=N)
    verified: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float | None:
        return self.summary.throughput if self.summary and self.summary.seconds else None

    @property
    def cpu_per_check(self) -> float | None:
        return self.server_cpu / self.checks if self.server_cpu is not None and self.checks else None

    @property
    def load_cpu_share(self) -> float | None:
        """CPU of the h2load processes over the run, as a share of one core."""
        return self.summary.cpu / self.summary.seconds if self.summary and self.summary.seconds else None


@dataclass
class TokenRow:
    """One wrk row: a server answering client_credentials grants at saturation, in one round."""

    store: str
    server: str  # "HTTP floor", "HTTP floor, 2 processes", "1 worker", "2 workers"
    round: int = 0
    result: wrk.WrkResult | None = None
    server_cpu: float | None = None
    server_seconds: float | None = None  # the wall time over which server_cpu was read
    answered: int = 0  # 200s counted by the server (the floor: wrk's good answers)
    split: list[int] = field(default_factory=list)  # 200s per worker (its /metrics?worker=N)
    verified: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float | None:
        return self.result.throughput if self.result and self.result.seconds else None

    @property
    def cpu_per_grant(self) -> float | None:
        return self.server_cpu / self.answered if self.server_cpu is not None and self.answered else None

    @property
    def server_cores(self) -> float | None:
        """The server's CPU over the measured run in cores (1.0: one core busy all the time)."""
        return self.server_cpu / self.server_seconds if self.server_cpu is not None and self.server_seconds else None

    @property
    def grants_per_core(self) -> float | None:
        """Grants per second of server CPU: what one core fully used would answer at this cost."""
        cost = self.cpu_per_grant
        return 1 / cost if cost else None

    @property
    def load_cpu_share(self) -> float | None:
        return self.result.cpu / self.result.seconds if self.result and self.result.seconds else None


@dataclass
class GrantCheck:
    """One grant sent with Python to a server before its rows: what it answered."""

    description: str
    problems: list[str] = field(default_factory=list)


@dataclass
class RssRun:
    """Server RSS sampled under saturation load (h2load, scenario (b), 1 worker)."""

    minutes: float
    warmup: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    row: H2Row | None = None

    def measured(self) -> list[tuple[float, float]]:
        return [(t, mib) for t, mib in self.samples if t >= self.warmup - 0.5]

    def slope(self) -> float | None:
        """Least-squares slope of the samples after the warm-up, MiB per minute."""
        points = self.measured()
        if len(points) < 2:
            return None
        mean_t = sum(t for t, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        return sum((t - mean_t) * (m - mean_m) for t, m in points) / spread * 60 if spread else None


@dataclass
class StoreResult:
    store: str
    seeded: dict[str, dict] = field(default_factory=dict)  # size name -> counts and seconds
    rows: list[Row] = field(default_factory=list)
    rss: list[tuple[str, dict[int, int], dict[int, int]]] = field(default_factory=list)  # server, start, end
    notes: list[str] = field(default_factory=list)
    h2_rows: list[H2Row] = field(default_factory=list)
    rss_run: RssRun | None = None
    token_rows: list[TokenRow] = field(default_factory=list)
    mix: mix.MixResult | None = None  # part mix (bench/mix.py)
    cold_start: cold_start.ColdStartResult | None = None  # part coldstart (bench/cold_start.py)

    def token_rounds(self, server: str) -> list[TokenRow]:
        return [row for row in self.token_rows if row.server == server]

    def h2_rounds(self, server: str, scenario: str) -> list[H2Row]:
        """Every round's row of one server and scenario, in round order."""
        return [row for row in self.h2_rows if row.server == server and row.scenario.key == scenario]

    def h2_floor_row(self, row: H2Row) -> H2Row | None:
        """The floor row of the same round that `row` is compared with."""
        floor_key = "floor-ext" if row.scenario.api == "ext_authz" else "floor"
        for floor in self.h2_rounds(_h2_floor_of(row.server), floor_key):
            if floor.round == row.round:
                return floor
        return None

    def find(self, server: str, scenario: str, mode: str) -> Measurement | None:
        for row in self.rows:
            if row.server == server and row.scenario.key == scenario and row.measurement.mode == mode:
                return row.measurement
        return None

    def rounds_of(self, server: str) -> list[Measurement]:
        """The interleaved rounds of one server of the 1k-vs-1M comparison, in round order."""
        return [row.measurement for row in self.rows if row.server == server and row.round is not None]


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
    parts: tuple[str, ...] = ("grpcio", "h2load")
    h2_connections: int = 16
    h2_streams: int = 2
    h2_bodies: int = 4
    h2_rounds: int = 5
    h2_seconds: float = 4.0
    rss_minutes: float = 0.0
    rss_warmup: float = 30.0
    h2load: str = ""  # the binary, found (or installed) before the run
    h2load_version: str = ""
    tokens_rounds: int = 5
    tokens_seconds: float = 5.0
    tokens_connections: int = 16
    tokens_threads: int = 2
    oauth_clients: int = seeding.OAUTH_CLIENTS
    service_dir: Path | None = None  # run the servers' `service` package from this tree
    wrk: str = ""  # the binary, found (or installed) before the run
    wrk_version: str = ""
    pin: bool = False  # one-process servers of the h2load part on CPU 0, their h2load on CPU 1 (bench/pinning.py)
    server_settings: dict[str, str] = field(default_factory=dict)  # --server-setting, for every Tollgate server
    mix: mix.MixOptions = field(default_factory=mix.MixOptions)
    coldstart: cold_start.ColdStartOptions = field(default_factory=cold_start.ColdStartOptions)


class Bench:
    def __init__(self, options: Options, load: LoadGenerator | None, log_dir: Path,
                 say: Callable[[str], None]) -> None:
        self.options = options
        self.load = load
        self.log_dir = log_dir
        self.say = say
        # Shared by every server of the run: the first server on a store seals its signing key
        # with it, and the others must unseal that key to issue tokens.
        self.kek = new_key_encryption_key()
        self.pinned: set[int] = set()  # main pids of the servers pinned with --pin

    def pin(self, server: Server) -> None:
        """With --pin: the server onto the servers' CPU, and its h2load runs onto the other."""
        if self.options.pin:
            pinning.pin(server.pids())
            self.pinned.add(server.process.pid)

    def tollgate(self, name: str, url: str, **options) -> AbstractContextManager[Server]:
        """The real server (see `tollgate`) with the run's key-encryption key and source tree, and
        the run's --server-setting values under the row's own."""
        settings = {**self.options.server_settings, **options.pop("settings", {})}
        return tollgate(name, url, self.log_dir, kek=self.kek, service_dir=self.options.service_dir,
                        settings=settings, **options)

    def own_token_scenario(self, result: StoreResult, server: Server, seeded: seeding.Seeded) -> Scenario | None:
        """(f): tokens for the scenario's first `distinct` seeded OAuth clients, from the server's
        token endpoint (scope user:read). None, with a note, when the server issues none."""
        clients = seeded.oauth_clients[:self.options.distinct]
        started = time.monotonic()
        try:
            tokens = oauth.issue_tokens(server.http_port, clients, ISSUER_URL, scope="user:read")
        except (oauth.GrantFailed, OSError) as error:
            result.notes.append(f"(f) left out: the token endpoint gave no tokens ({error})")
            self.say(f"[{result.store}] (f) left out: {error}")
            return None
        self.say(f"[{result.store}] (f): {len(tokens):,} tokens from {len(clients):,} OAuth clients in "
                 f"{time.monotonic() - started:.1f} s")
        return own_token_scenario(seeded, tokens)

    def measure(self, result: StoreResult, server: Server, label: str, scenario: Scenario, mode: str, *,
                prime: bool = False, seconds: float | None = None, round_: int | None = None) -> Measurement:
        o = self.options
        assert self.load is not None, "measure() runs only when the load generator was started"
        m = self.load.run(server.target, scenario, mode=mode, seconds=seconds or o.seconds, warmup=o.warmup,
                          inflight=o.inflight, prime=prime, cpu_probe=server.cpu_seconds)
        problems = m.problems(scenario.expect)
        result.rows.append(Row(result.store, label, scenario, m, problems, round_))
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
            seeded = seeding.seed(url, size, oauth_clients=o.oauth_clients, log=self.say)
            result.seeded[size.name] = {"counts": seeded.counts, "seconds": seeded.seconds}
            self.say(f"[{backend}] seeded in {seeded.seconds['total']:.1f} s; signing tokens")
            scenarios = build_scenarios(seeded, o.distinct)
            if "grpcio" in o.parts:
                self.grpcio_rows(result, url, scenarios)
            if "h2load" in o.parts:
                self.h2load_rows(result, url, scenarios, seeded)
            if "tokens" in o.parts:
                self.token_rows(result, url, seeded)
            if "rss" in o.parts:
                self.rss_over_time(result, url, scenarios)
            if "grpcio" in o.parts and not o.small:
                self.relations_rows(result, url, scenarios["b"])
            if "propagation" in o.parts and backend == "postgres":
                self.propagation_rows(result, url, seeded)
            if "mix" in o.parts:
                result.mix = mix.measure_mix(self, backend, url, seeded)
            if "coldstart" in o.parts:
                result.cold_start = cold_start.measure(self, backend, url, seeded,
                                                       result.mix.throughput("1 worker") if result.mix else None)
        if "grpcio" in o.parts and o.small:
            result.notes.append("`--small`: the store has 1k relations, so the 1k-vs-1M comparison is n/a.")
        return result

    def propagation_rows(self, result: StoreResult, url: str, seeded: seeding.Seeded) -> None:
        """A change committed by another process reaching the server, with the push and without it
        (the poll): bench/propagation.py, noted under the store's tables."""
        keys = list({partner: (partner, key) for partner, key in seeded.api_keys}.values())
        for push, trials in ((True, propagation.TRIALS), (False, propagation.POLL_TRIALS)):
            chosen = keys[propagation.TRIALS:][:trials] if not push else keys[:trials]
            latencies = propagation.measure(len(chosen), push, url, chosen, self.log_dir, self.say, self.kek)
            result.notes.append(f"propagation, push {'on' if push else 'off'} (suspend a partner in the store, until "
                                f"the server denies its key): {propagation.summary(latencies)}")

    RELATIONS_ROUNDS = 3

    def relations_rows(self, result: StoreResult, url: str, b_full: Scenario) -> None:
        """(b) at concurrency 1 against the full store (1M relations) and a small one (1k), fact
        cache on and off: all four servers side by side, measured in interleaved rounds of half a
        row's seconds each, so that a drift of the shared machine lands on both sides of the ratio."""
        o, backend = self.options, result.store
        with seeding.fresh_database(backend) as small_url, ExitStack() as servers:
            self.say(f"[{backend}] small store beside the full one, for the 1k-vs-1M comparison")
            small = seeding.seed(small_url, seeding.SMALL, log=lambda _line: None)
            result.seeded[seeding.SMALL.name] = {"counts": small.counts, "seconds": small.seconds}
            b_small = build_scenarios(small, o.distinct)["b"]
            rows = []
            for cache in (True, False):
                suffix = "" if cache else ", no cache"
                for size, store_url, scenario in (("1M", url, b_full), ("1k", small_url, b_small)):
                    server = servers.enter_context(self.tollgate(f"{backend}-{size}-{cache}", store_url, cache=cache))
                    rows.append((server, f"1 worker, {size} relations{suffix}", scenario))
            for round_ in range(self.RELATIONS_ROUNDS):
                self.say(f"[{backend}] 1k vs 1M relations: round {round_ + 1} of {self.RELATIONS_ROUNDS}")
                for server, label, scenario in rows:
                    self.measure(result, server, label, scenario, "c1", prime=round_ == 0, seconds=o.seconds / 2,
                                 round_=round_)

    def grpcio_rows(self, result: StoreResult, url: str, scenarios: dict[str, Scenario]) -> None:
        """The rows driven by the grpcio load generator, which checks every response."""
        o = self.options
        backend = result.store
        self.say(f"[{backend}] floor")
        with floor_server(self.log_dir, 1, o.service_dir) as floor:
            for scenario in floor_scenarios(scenarios).values():
                for mode in ("c1", "sat"):
                    self.measure(result, floor, "floor", scenario, mode, prime=mode == "c1")

        self.say(f"[{backend}] Tollgate, 1 worker")
        with self.tollgate(f"{backend}-1", url) as server:
            started = server.rss_kib()
            for scenario in (scenarios[key] for key in GRPCIO_SCENARIOS):
                for mode in ("c1", "sat"):  # c1 first: its priming pass warms the caches for both
                    self.measure(result, server, "1 worker", scenario, mode, prime=mode == "c1")
            result.rss.append(("1 worker", started, server.rss_kib()))

        workload = ["a"] if o.quick else ["a", "b"]
        self.say(f"[{backend}] Tollgate, 2 workers")
        with self.tollgate(f"{backend}-2", url, workers=2) as server:
            started = server.rss_kib()
            for key in workload:
                self.measure(result, server, "2 workers", scenarios[key], "sat", prime=True)
            result.rss.append(("2 workers", started, server.rss_kib()))

        if not o.quick:
            self.say(f"[{backend}] Tollgate, 1 worker, fact cache off")
            with self.tollgate(f"{backend}-nocache", url, cache=False) as server:
                for mode in ("c1", "sat"):
                    self.measure(result, server, "1 worker, no cache", scenarios["b"], mode,
                                 prime=mode == "c1")

    # -- h2load rows ----------------------------------------------------------------------------

    H2_SCENARIOS = ("a", "b", "b-es", "f", "e")

    def h2load_rows(self, result: StoreResult, url: str, scenarios: dict[str, Scenario],
                    seeded: seeding.Seeded) -> None:
        """Rows driven by h2load, in interleaved rounds: every server compared runs side by side
        (each idle while another is measured) and every round measures each row once, floors
        first, so that a burst of other load on the shared machine lands on both sides of a ratio;
        the table reports medians over the rounds. At saturation: the floor with 1 and 2
        processes, Tollgate with 1 and 2 workers, and 1 worker with the decision memo off; at
        concurrency 1: the floor and 1 worker. Beside them, Tollgate's miss path and Cerbos
        (bench/cerbos_rows.py). With --pin the one-process servers run on one CPU and h2load on the other."""
        from .cerbos_rows import cerbos_rows  # it imports this module

        backend = result.store
        floors = floor_scenarios(scenarios)
        a, b, e = (scenarios[key] for key in ("a", "b", "e"))
        service_dir = self.options.service_dir
        with floor_server(self.log_dir, 1, service_dir) as floor, \
                floor_server(self.log_dir, 2, service_dir) as floor2, \
                self.tollgate(f"{backend}-h2load-1", url, metrics=True) as one, \
                self.tollgate(f"{backend}-h2load-no-memo", url, metrics=True, memo=False) as no_memo, \
                self.tollgate(f"{backend}-h2load-2", url, workers=2, metrics=True) as two, \
                cerbos_rows(self, result, url, seeded, scenarios) as versus:
            for single in (floor, one, no_memo):
                self.pin(single)
            jwt_scenarios = [b, scenarios["b-es"]]
            if own := self.own_token_scenario(result, one, seeded):
                jwt_scenarios.append(own)
            saturation = [
                (floor, "floor", floors["floor"]), (floor2, "floor, 2 processes", floors["floor"]),
                (one, "1 worker", a), (two, "2 workers", a), (no_memo, "1 worker, no decision memo", a)]
            for scenario in jwt_scenarios:
                saturation += [(one, "1 worker", scenario), (two, "2 workers", scenario),
                               (no_memo, "1 worker, no decision memo", scenario)]
            saturation += [
                (floor, "floor", floors["floor-ext"]), (floor2, "floor, 2 processes", floors["floor-ext"]),
                (one, "1 worker", e), (two, "2 workers", e), (one, "1 worker", scenarios["e-native"])]
            concurrency_one = [(floor, "floor (c1)", floors["floor"]), (one, "1 worker (c1)", a)]
            concurrency_one += [(one, "1 worker (c1)", scenario) for scenario in jwt_scenarios]
            concurrency_one += [(floor, "floor (c1)", floors["floor-ext"]), (one, "1 worker (c1)", e),
                                (one, "1 worker (c1)", scenarios["e-native"])]
            for round_ in range(self.options.h2_rounds):
                self.say(f"[{backend}] h2load: round {round_ + 1} of {self.options.h2_rounds}")
                for server, label, scenario in saturation:
                    self.h2_measure(result, server, label, scenario, round_=round_)
                versus.measure(round_)
                for server, label, scenario in concurrency_one:
                    self.h2_measure(result, server, label, scenario, round_=round_, concurrency_one=True)

    def _h2_bodies(self, result: StoreResult, scenario: Scenario, count: int) -> list[tuple[Path, Request]]:
        return h2.write_bodies(self.log_dir / f"h2load-{result.store}" / "bodies", scenario, count)

    def _h2_run(self, result: StoreResult, server: Server, scenario: Scenario, bodies, name: str,
                concurrency_one: bool, **amount) -> h2.H2LoadRun:
        o = self.options
        work = self.log_dir / f"h2load-{result.store}"
        work.mkdir(parents=True, exist_ok=True)
        connections, streams = (1, 1) if concurrency_one else (o.h2_connections, o.h2_streams)
        return h2.H2LoadRun(o.h2load, server.target, scenario.api, [path for path, _ in bodies], work,
                            connections=connections, streams=streams, name=name,
                            prefix=pinning.load_prefix(server.process.pid in self.pinned), **amount)

    def h2_measure(self, result: StoreResult, server: Server, label: str, scenario: Scenario, *,
                   round_: int = 0, concurrency_one: bool = False) -> H2Row:
        """One h2load row: the grpcio check of every body, a warm-up (-D) that also gives the rate,
        then a measured run of about `h2_seconds` (-n), with the server's decision counter and CPU read
        around it. `concurrency_one`: one body, one connection, one stream (latency, not throughput)."""
        o = self.options
        seconds = o.h2_seconds
        row = H2Row(result.store, label, scenario, round_)
        result.h2_rows.append(row)
        bodies = self._h2_bodies(result, scenario, 1 if concurrency_one else o.h2_bodies)
        expected = (scenario.api, "allow", "")  # every h2load scenario is an allow
        counted = bool(server.metrics_urls)
        tag = f"{label}-{scenario.key}-{round_}".replace(", ", "-").replace(" ", "-").replace("(", "").replace(")", "")
        row.problems += h2.check_bodies(server.target, scenario, bodies, "allow")

        before = h2.scrape(server.metrics_urls) if counted else {}
        warmup = max(o.warmup, 0.5)
        warm = h2.Summary(self._h2_run(result, server, scenario, bodies, f"{tag}-warmup", concurrency_one,
                                       duration=warmup).wait(warmup + 30))
        row.problems += [f"warm-up: {problem}" for problem in warm.problems()]
        if counted:
            delta, _ = h2.counter_delta(before, h2.scrape(server.metrics_urls))
            got = delta.pop(expected, 0)
            # -D ends with calls cut in flight: the server may have decided some h2load never saw.
            if not warm.succeeded <= got <= warm.started:
                row.problems.append(f"warm-up: server counted {got:,} allows, h2load {warm.succeeded:,} succeeded "
                                    f"of {warm.started:,} started")
            if delta:
                row.problems.append(f"warm-up: unexpected decisions {_decisions(delta)}")
        if not warm.throughput:
            self._h2_say(row)
            return row

        rate = warm.throughput
        check = f"grpcio check of the {len(bodies)} bod{'y' if len(bodies) == 1 else 'ies'}: allow"
        # The measured run is count-based, sized from the last rate seen; when it ends in less than
        # MIN_SHARE of `h2_seconds` (the warm-up's rate was low: a fresh server, a noisy neighbour) it
        # is run once more, sized from its own rate. Every attempt is verified.
        for attempt in range(2):
            requests = max(2 if concurrency_one else o.h2_connections * o.h2_streams * 2, round(rate * seconds))
            # A slow server (the miss path) is still deciding calls the warm-up cut in flight: the
            # counter is read once it has stopped moving, or they would be counted against this run.
            before = settled(lambda: h2.scrape(server.metrics_urls)) if counted else {}
            cpu_before = server.cpu_seconds()
            run = self._h2_run(result, server, scenario, bodies, f"{tag}-measured-{attempt}", concurrency_one,
                               requests=requests)
            stats = run.wait(3 * seconds + 30)
            row.server_cpu = server.cpu_seconds() - cpu_before
            row.requests = run.requested
            row.summary = summary = h2.Summary(stats)
            row.problems += summary.problems(run.requested)
            if counted:
                delta, per_worker = h2.counter_delta(before, h2.scrape(server.metrics_urls))
                row.checks = delta.pop(expected, 0)
                row.split = [per_worker.get(url, 0) for url in server.metrics_urls]
                if row.checks != summary.succeeded:
                    row.problems.append(f"server counted {row.checks:,} allows, h2load {summary.succeeded:,} "
                                        "succeeded")
                if delta:
                    row.problems.append(f"unexpected decisions {_decisions(delta)}")
                row.verified = (f"{check}; server counted {row.checks:,} {scenario.api} allows = h2load "
                                f"{summary.succeeded:,} succeeded, {sum(delta.values())} other decisions")
            else:
                row.checks = summary.succeeded
                row.verified = f"{check}; h2load {summary.succeeded:,} succeeded (no decision counter on the floor)"
            if row.problems or summary.seconds >= MIN_SHARE * seconds or not summary.throughput:
                break
            self.say(f"    (h2load {label} {scenario.key}: the run took {summary.seconds:.1f} s of "
                     f"{seconds:g}; once more, sized from its rate)")
            rate = summary.throughput
        self._h2_say(row)
        return row

    def _h2_say(self, row: H2Row) -> None:
        s = row.summary
        flag = "" if not row.problems else "  MISMATCH: " + "; ".join(row.problems)
        if s is None:
            self.say(f"    h2load {row.server:<28} {row.scenario.key:<9} no measurement{flag}")
            return
        split = f"  per worker {'/'.join(f'{n:,}' for n in row.split)}" if len(row.split) > 1 else ""
        self.say(f"    h2load {row.server:<28} {row.scenario.key:<9} {s.throughput:6.0f}/s  "
                 f"p50 {_us(s.percentile(50))} µs  p99 {_us(s.percentile(99))} µs  "
                 f"server CPU {_us(row.cpu_per_check)} µs/check  "
                 f"h2load CPU {_pct(row.load_cpu_share)} of a core  ({s.done:,} calls){split}{flag}")

    def rss_over_time(self, result: StoreResult, url: str, scenarios: dict[str, Scenario]) -> None:
        """Scenario (b) at saturation (h2load) against one worker for `rss_minutes` after a
        `rss_warmup`-second warm-up, the server's RSS sampled every RSS_INTERVAL seconds."""
        o = self.options
        scenario = scenarios["b"]
        run_info = RssRun(o.rss_minutes, o.rss_warmup)
        result.rss_run = run_info
        duration = o.rss_warmup + o.rss_minutes * 60
        self.say(f"[{result.store}] RSS over time: (b) at saturation (h2load) for {o.rss_warmup:g} s + "
                 f"{o.rss_minutes:g} min, 1 worker, RSS every {RSS_INTERVAL:g} s")
        with self.tollgate(f"{result.store}-rss", url, metrics=True) as server:
            row = H2Row(result.store, "1 worker", scenario)
            run_info.row = row
            bodies = self._h2_bodies(result, scenario, self.options.h2_bodies)
            row.problems += h2.check_bodies(server.target, scenario, bodies, "allow")
            before = h2.scrape(server.metrics_urls)
            cpu_before = server.cpu_seconds()
            run = self._h2_run(result, server, scenario, bodies, "rss", False, duration=duration)
            due = [0.0]

            def sample(elapsed: float) -> None:
                if elapsed >= due[0]:
                    run_info.samples.append((elapsed, sum(server.rss_kib().values()) / 1024))
                    due[0] += RSS_INTERVAL
                    if len(run_info.samples) % 6 == 0:
                        self.say(f"    {elapsed:5.0f} s: RSS {run_info.samples[-1][1]:.1f} MiB")

            stats = run.wait(duration + 60, sample)
            ended = time.monotonic() - run.started_at
            if not run_info.samples or ended - run_info.samples[-1][0] >= RSS_INTERVAL / 2:
                run_info.samples.append((ended, sum(server.rss_kib().values()) / 1024))
            row.server_cpu = server.cpu_seconds() - cpu_before
            row.summary = summary = h2.Summary(stats)
            row.problems += summary.problems()
            delta, _ = h2.counter_delta(before, h2.scrape(server.metrics_urls))
            row.checks = delta.pop((scenario.api, "allow", ""), 0)
            if not summary.succeeded <= row.checks <= summary.started:
                row.problems.append(f"server counted {row.checks:,} allows, h2load {summary.succeeded:,} succeeded "
                                    f"of {summary.started:,} started")
            if delta:
                row.problems.append(f"unexpected decisions {_decisions(delta)}")
            row.verified = (f"server counted {row.checks:,} allows for h2load's {summary.succeeded:,} succeeded "
                            f"({summary.started:,} started), {sum(delta.values())} other decisions")
        points = run_info.measured()
        if points:
            self.say(f"    RSS start {points[0][1]:.1f} MiB, max {max(m for _, m in points):.1f}, end "
                     f"{points[-1][1]:.1f}, slope {_slope(run_info.slope())} MiB/min; "
                     f"{summary.throughput:,.0f} checks/s"
                     f"{'' if not row.problems else '  MISMATCH: ' + '; '.join(row.problems)}")

    # -- token endpoint rows (wrk) --------------------------------------------------------------

    TOKEN_SERVERS = ("HTTP floor", "HTTP floor, 2 processes", "1 worker", "2 workers")
    PRIME_SECONDS = 20.0  # at most, per server, sending every client's grant a few times before round 1

    def token_rows(self, result: StoreResult, url: str, seeded: seeding.Seeded) -> None:
        """client_credentials grants at saturation, driven by wrk over keep-alive connections with
        every seeded OAuth client in turn: the HTTP floor (1 and 2 processes) and Tollgate (1 and 2
        workers) side by side, in interleaved rounds (each round measures every row once, floors
        first); Tollgate's fact caches are primed with every client before the first round."""
        o, backend = self.options, result.store
        work = self.log_dir / f"wrk-{backend}"
        work.mkdir(parents=True, exist_ok=True)
        clients = seeded.oauth_clients
        script = wrk.write_script(work / "grants.lua",
                                  [wrk.basic_authorization(c.client_id, c.secret) for c in clients])
        self.say(f"[{backend}] token endpoint: {len(clients):,} OAuth clients, wrk {o.tokens_threads} threads × "
                 f"{o.tokens_connections} connections")
        with http_floor_server(self.log_dir, 1, o.service_dir) as floor, \
                http_floor_server(self.log_dir, 2, o.service_dir) as floor2, \
                self.tollgate(f"{backend}-tokens-1", url, metrics=True) as one, \
                self.tollgate(f"{backend}-tokens-2", url, workers=2, metrics=True) as two:
            servers = list(zip((floor, floor2, one, two), self.TOKEN_SERVERS, strict=True))
            checks = {label: self._grant_check(server, label, clients) for server, label in servers}
            for server, label in servers:
                if server.metrics_urls:
                    self._prime_grants(server, label, script, work, len(clients) * 3 * len(server.metrics_urls))
            for round_ in range(o.tokens_rounds):
                self.say(f"[{backend}] token endpoint: round {round_ + 1} of {o.tokens_rounds}")
                for server, label in servers:
                    self.token_measure(result, server, label, script, work, checks[label], round_)

    def _grant_check(self, server: Server, label: str, clients: list[seeding.OAuthClient]) -> GrantCheck:
        """Four clients' grants sent with Python: Tollgate must answer each with an RFC 9068 token
        for that client, the floor with its constant."""
        sample = clients[:4]
        problems = []
        for client in sample:
            try:
                status, answer = oauth.grant(server.http_port, client)
            except OSError as error:
                problems.append(f"{client.client_id}: {error}")
                continue
            if server.metrics_urls:
                problems += oauth.token_problems(status, answer, client, ISSUER_URL)
            elif status != 200 or "access_token" not in answer:
                problems.append(f"{client.client_id}: HTTP {status} {str(answer)[:160]}")
        what = "an ES256 access token for the client" if server.metrics_urls else "the constant"
        description = f"Python grant of {len(sample)} clients: {what}" + ("" if not problems else " — FAILED")
        if problems:
            self.say(f"    {label}: grant check failed: {'; '.join(problems[:3])}")
        return GrantCheck(description, problems)

    def _prime_grants(self, server: Server, label: str, script: Path, work: Path, target: int) -> None:
        """wrk runs of 2 s until about `target` grants were answered (every client's a few times on
        every worker, so its facts are cached) or PRIME_SECONDS have passed."""
        o = self.options
        started, answered = time.monotonic(), 0
        while answered < target and time.monotonic() - started < self.PRIME_SECONDS:
            run = wrk.WrkRun(o.wrk, server.http_target, script, work, seconds=2, connections=o.tokens_connections,
                             threads=o.tokens_threads, name=f"prime-{label}".replace(" ", "-").replace(",", ""))
            done = run.wait()
            answered += done.requests
            if done.problems() or not done.requests:
                break
        self.say(f"    {label}: primed with {answered:,} grants in {time.monotonic() - started:.1f} s")

    def token_measure(self, result: StoreResult, server: Server, label: str, script: Path, work: Path,
                      check: GrantCheck, round_: int) -> TokenRow:
        """One wrk row: a warm-up, then the measured run, the server's token counter and CPU read
        around it (after SETTLE seconds, so that answers to wrk's last requests are counted)."""
        o = self.options
        row = TokenRow(result.store, label, round_)
        result.token_rows.append(row)
        row.problems += check.problems
        tag = f"{label}-{round_}".replace(", ", "-").replace(" ", "-")
        counted = bool(server.metrics_urls)

        def run(name: str, seconds: float) -> wrk.WrkResult:
            return wrk.WrkRun(o.wrk, server.http_target, script, work, seconds=seconds,
                              connections=o.tokens_connections, threads=o.tokens_threads, name=name).wait()

        warm = run(f"{tag}-warmup", max(o.warmup, 1.0))
        row.problems += [f"warm-up: {problem}" for problem in warm.problems()]
        time.sleep(SETTLE)
        before = h2.scrape(server.metrics_urls, *TOKEN_COUNTER) if counted else {}
        cpu_before, clock = server.cpu_seconds(), time.monotonic()
        row.result = done = run(f"{tag}-measured", o.tokens_seconds)
        time.sleep(SETTLE)
        row.server_cpu = server.cpu_seconds() - cpu_before
        row.server_seconds = time.monotonic() - clock
        row.problems += done.problems()
        wrk_says = f"wrk: {done.good:,} answers 200 with an access_token, {done.bad:,} other"
        if counted:
            delta, per_worker = h2.counter_delta(before, h2.scrape(server.metrics_urls, *TOKEN_COUNTER))
            row.answered = delta.pop(("token", "200"), 0)
            row.split = [per_worker.get(url, 0) for url in server.metrics_urls]
            if not done.good <= row.answered <= done.good + o.tokens_connections:
                row.problems.append(f"server counted {row.answered:,} token 200s, wrk {done.good:,} "
                                    f"(+ at most {o.tokens_connections} in flight)")
            if delta:
                row.problems.append("unexpected answers " + ", ".join(
                    f"{endpoint} {status} {count:+,}" for (endpoint, status), count in sorted(delta.items())))
            row.verified = (f"{check.description}; {wrk_says}; server counted {row.answered:,} token 200s "
                            f"({row.answered - done.good:+,} in flight when wrk stopped), "
                            f"{sum(delta.values())} other answers")
        else:
            row.answered = done.good
            row.verified = f"{check.description}; {wrk_says} (no counter on the floor)"
        self._token_say(row)
        return row

    def _token_say(self, row: TokenRow) -> None:
        r = row.result
        flag = "" if not row.problems else "  MISMATCH: " + "; ".join(row.problems)
        if r is None:
            self.say(f"    wrk {row.server:<24} no measurement{flag}")
            return
        split = f"  per worker {'/'.join(f'{n:,}' for n in row.split)}" if len(row.split) > 1 else ""
        self.say(f"    wrk {row.server:<24} {r.throughput:6.0f} grants/s  p50 {_us(r.percentile('p50'))} µs  "
                 f"p99 {_us(r.percentile('p99'))} µs  server CPU {_us(row.cpu_per_grant)} µs/grant "
                 f"({_cores(row.server_cores)} cores)  "
                 f"wrk CPU {_pct(row.load_cpu_share)} of a core  ({r.requests:,} grants){split}{flag}")


# tollgate_token_requests_total by (endpoint, status): the token endpoint's answers, per worker.
TOKEN_COUNTER = ("tollgate_token_requests_total", ("endpoint", "status"))


def settled(read: Callable, limit: float = 5.0):
    """`read()` once two readings 0.2 s apart agree (at most `limit` seconds on)."""
    last = read()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = read()
        if current == last:
            break
        last = current
    return last


def _decisions(delta) -> str:
    return ", ".join(f"{adapter}/{decision}/{reason or '-'} {count:+,}" for (adapter, decision, reason), count
                     in sorted(delta.items()))


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def _slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


# -- the report ---------------------------------------------------------------------------------

def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


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
    if "grpcio" in options.parts:
        add(f"- grpcio load: {options.clients} client processes × {options.inflight} calls in flight at saturation "
            f"(4 connections each), 1 process × 1 call at concurrency 1 (c1); {options.seconds:g} s measured per "
            f"row after {options.warmup:g} s warm-up; {options.distinct:,} distinct requests (credentials, users) "
            "per scenario, each sent once before its c1 row (and before the 2-worker rows, on every connection) "
            "so that the rows measure the steady state")
    add("- server CPU µs/check: user + system CPU time of the server process(es) (/proc/<pid>/stat) over the "
        "row (warm-up included) divided by the calls answered in it; unlike wall-clock numbers it barely moves "
        "with other load on the machine")
    if "h2load" in options.parts or "rss" in options.parts:
        add(f"- h2load load: {options.h2load_version or 'h2load'} (the nghttp2 C client), {options.h2_connections} "
            f"connections × {options.h2_streams} streams, {options.h2_bodies} bodies (details above its tables)")
    if "tokens" in options.parts:
        add(f"- wrk load (token endpoint): {options.wrk_version or 'wrk'}, {options.tokens_threads} threads, "
            f"{options.tokens_connections} keep-alive connections in all, {options.oauth_clients:,} distinct OAuth "
            "clients in turn (details above its tables)")
    if options.service_dir is not None:
        add(f"- the servers (Tollgate and the floors) ran the `service` package of `{options.service_dir}`, "
            "not this tree's")
    add("- latencies are client-side round trips in µs; `/ floor` compares with the constant-answer server "
        "of the same stack measured in the same run (native rows against the native floor, ext_authz "
        "against the ext_authz floor)\n")
    for result in results:
        add(f"## {result.store}\n")
        for name, seeded in result.seeded.items():
            c, s = seeded["counts"], seeded["seconds"]
            add(f"- seeded ({name}): {c['partners']:,} partners, {c['api_keys']:,} API keys, "
                f"{c['relations']:,} relations, {c['jwt_issuers']} issuers, {c.get('oauth_clients', 0):,} OAuth "
                f"clients in {s['total']:.1f} s "
                f"(keys {s['api_keys']:.1f} s, relations {s['relations']:.1f} s)")
        add("")
        if result.rows:
            grpcio_table(result, add)
        if result.h2_rows:
            h2load_table(result, options, add)
            from .cerbos_rows import comparison_table  # it imports this module
            comparison_table(result, options, add)
        if result.token_rows:
            token_table(result, options, add)
        if result.rss_run:
            rss_table(result.rss_run, options, add)
        if result.mix:
            mix.mix_table(result.mix, add)
        if result.cold_start:
            cold_start.cold_start_table(result.cold_start, add)
        for note in result.notes:
            add(f"- {note}")
        if result.notes:
            add("")
    problems = [(r.store, r.server, r.scenario.key, r.measurement.mode, p) for res in results for r in res.rows
                for p in r.problems]
    problems += [(r.store, f"h2load {r.server}", r.scenario.key, "sat", p) for res in results for r in res.h2_rows
                 for p in r.problems]
    problems += [(res.store, "RSS run", "b", "sat", p) for res in results if res.rss_run and res.rss_run.row
                 for p in res.rss_run.row.problems]
    problems += [(r.store, f"wrk {r.server}", "token", f"round {r.round + 1}", p) for res in results
                 for r in res.token_rows for p in r.problems]
    problems += [(res.store, "mix", "mix", "sat", p) for res in results if res.mix for p in res.mix.problems]
    problems += [(res.store, "cold start", "mix", "open", p) for res in results if res.cold_start
                 for p in res.cold_start.problems]
    if problems:
        add("## Mismatches (the run failed)\n")
        for store, server, key, mode, problem in problems:
            add(f"- {store} / {server} / {key} / {mode}: {problem}")
        add("")
    return "\n".join(out)


def grpcio_table(result: StoreResult, add: Callable[[str], None]) -> None:
    add("### Load generator: grpcio (Python, every response checked)\n")
    add("| server | scenario | mode | checks/s | p50 | p99 | p99.9 | server CPU µs/check | checks/s / floor "
        "| p50 / floor | CPU / floor | responses |")
    add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in result.rows:
        if row.round is not None:
            continue  # the 1k-vs-1M rounds have their own table
        m = row.measurement
        floor_key = "floor-ext" if row.scenario.api == "ext_authz" else "floor"
        floor = result.find("floor", floor_key, m.mode)
        is_floor = row.server == "floor"
        responses = ", ".join(f"{k} {v:,}" for k, v in sorted(m.outcomes.items()))
        if row.problems:
            responses += " **MISMATCH: " + "; ".join(row.problems) + "**"
        add(f"| {row.server} | {row.scenario.title} | {m.mode} | {m.throughput:,.0f} | {_us(m.p50)} | "
            f"{_us(m.p99)} | {_us(m.p999)} | {_us(m.cpu_per_call)} | "
            f"{'—' if is_floor else _ratio(m.throughput, floor.throughput if floor else None)} | "
            f"{'—' if is_floor else _ratio(m.p50, floor.p50 if floor else None)} | "
            f"{'—' if is_floor else _ratio(m.cpu_per_call, floor.cpu_per_call if floor else None)} | {responses} |")
    add("")
    add("| comparison | value |")
    add("|---|---|")
    for label, suffix in (("p50 (b) at c1, cache on", ""), ("p50 (b) at c1, cache off", ", no cache")):
        pairs = [(big.p50, small.p50) for big, small in zip(result.rounds_of(f"1 worker, 1M relations{suffix}"),
                                                           result.rounds_of(f"1 worker, 1k relations{suffix}"),
                                                           strict=False)
                 if big.p50 and small.p50]
        ratios = [big / small for big, small in pairs]
        value = (f"1k relations {_us(statistics.median(small for _, small in pairs))} µs, 1M relations "
                 f"{_us(statistics.median(big for big, _ in pairs))} µs (medians of {len(pairs)} interleaved "
                 f"rounds); 1M / 1k {statistics.median(ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
                 if pairs else "n/a")
        add(f"| {label} | {value} |")
    for key in ("a", "b"):
        one, two = result.find("1 worker", key, "sat"), result.find("2 workers", key, "sat")
        value = (f"{one.throughput:,.0f} → {two.throughput:,.0f} checks/s, "
                 f"ratio {_ratio(two.throughput, one.throughput)}" if one and two else "n/a")
        add(f"| 2 workers / 1 worker, ({key}) at saturation | {value} |")
    for server, start, end in result.rss:
        add(f"| server RSS MiB, {server}: start → end | {_mib(start)} → {_mib(end)} |")
    add("")
    rounds = [row for row in result.rows if row.round is not None]
    if rounds:
        add(f"The 1k-vs-1M rows: (b) at c1, the four servers side by side, measured in interleaved rounds "
            f"({Bench.RELATIONS_ROUNDS}; each row half the measured seconds of the rows above):\n")
        add("| server | round | checks/s | p50 | p99 | p99.9 | server CPU µs/check | responses |")
        add("|---|---:|---:|---:|---:|---:|---:|---|")
        for row in rounds:
            m = row.measurement
            responses = ", ".join(f"{k} {v:,}" for k, v in sorted(m.outcomes.items()))
            if row.problems:
                responses += " **MISMATCH: " + "; ".join(row.problems) + "**"
            add(f"| {row.server} | {(row.round or 0) + 1} | {m.throughput:,.0f} | {_us(m.p50)} | {_us(m.p99)} | "
                f"{_us(m.p999)} | {_us(m.cpu_per_call)} | {responses} |")
        add("")


def h2load_table(result: StoreResult, options: Options, add: Callable[[str], None]) -> None:
    o = options
    add(f"### Load generator: h2load (nghttp2 C client, {o.h2_bodies} processes × 1 body, "
        f"{o.h2_connections} connections × {o.h2_streams} streams in all)\n")
    add(f"At saturation each row sends {o.h2_bodies} distinct pre-serialized requests (the first of the "
        "scenario: distinct credentials, every one seen before — steady-state cache hits, and, unless the row says "
        "*no decision memo*, decisions recalled from the decision memo: see docs/performance.md), one per h2load "
        "process; rows marked *(c1)* send one request over one connection with one stream (concurrency 1). "
        f"Rounds: {o.h2_rounds}, interleaved — the servers compared run side by side and each round measures every "
        "row once, the floor first; each figure is the median over the rounds, and each `/ floor` ratio the "
        "median of the per-round ratios to the floor row of the same round. Per row and round: a "
        f"{max(o.warmup, 0.5):g} s warm-up (`-D`), then `-n` sized to last about {o.h2_seconds:g} s. "
        "Latency: per-request times from h2load's `--log-file` (µs; at saturation it includes queueing behind the "
        f"{o.h2_connections * o.h2_streams} calls in flight). *h2load CPU*: user + system CPU of the h2load "
        "processes over the measured run, as a share of one core (the load generator's cost on the same "
        "machine). *verified*, in every round: every body decoded and sent once with grpcio and its answer "
        "checked, and the server's `tollgate_checks_total` moved by exactly h2load's succeeded count for the "
        "expected decision and by nothing else.\n")
    add("| server | scenario | checks/s | p50 | p99 | p99.9 | server CPU µs/check | checks/s / floor | CPU / floor "
        "| h2load CPU | checks per worker | verified (last round) |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for server, key in dict.fromkeys((row.server, row.scenario.key) for row in result.h2_rows):
        rows = result.h2_rounds(server, key)
        last = rows[-1]
        is_floor = server.startswith("floor")
        problems = [f"round {row.round + 1}: {p}" for row in rows for p in row.problems]
        verified = last.verified + (" **MISMATCH: " + "; ".join(problems) + "**" if problems else "")
        split = [sum(column) for column in zip(*(row.split for row in rows), strict=True)]
        add(f"| {server} | {last.scenario.title} | {_count(_median_of(rows, lambda r: r.throughput))} | "
            f"{_us(_median_of(rows, lambda r: r.summary and r.summary.percentile(50)))} | "
            f"{_us(_median_of(rows, lambda r: r.summary and r.summary.percentile(99)))} | "
            f"{_us(_median_of(rows, lambda r: r.summary and r.summary.percentile(99.9)))} | "
            f"{_us(_median_of(rows, lambda r: r.cpu_per_check))} | "
            f"{'—' if is_floor else _fixed(_median_of(rows, lambda r: _per_floor(result, r, 'throughput')))} | "
            f"{'—' if is_floor else _fixed(_median_of(rows, lambda r: _per_floor(result, r, 'cpu_per_check')))} | "
            f"{_pct(_median_of(rows, lambda r: r.load_cpu_share))} | "
            f"{' / '.join(f'{n:,}' for n in split) if len(split) > 1 else '—'} | {verified} |")
    add("")
    add("| comparison (h2load, medians over the rounds) | value |")
    add("|---|---|")
    # (label, (server, scenario) of the denominator, (server, scenario) of the numerator)
    pairs = [(f"floor, 2 processes / floor, {kind}", ("floor", key), ("floor, 2 processes", key))
             for kind, key in (("native", "floor"), ("ext_authz", "floor-ext"))]
    pairs += [(f"2 workers / 1 worker, ({key})", ("1 worker", key), ("2 workers", key)) for key in Bench.H2_SCENARIOS]
    pairs += [(f"decision memo on / off, 1 worker, ({key})", ("1 worker, no decision memo", key), ("1 worker", key))
              for key in ("a", "b", "b-es", "f")]
    # ext_authz against native Check of the same requests (the same decisions).
    pairs += [("ext_authz (e) / native Check of the same requests (e-native), 1 worker", ("1 worker", "e-native"),
               ("1 worker", "e"))]
    # Check of a token Tollgate issued against the same check of an external issuer's token.
    pairs += [(f"(f) / ({other}), {server}", (server, other), (server, "f")) for other in ("b", "b-es")
              for server in ("1 worker", "2 workers", "1 worker, no decision memo")]
    for label, (one_server, one_key), (two_server, two_key) in pairs:
        ones, twos = result.h2_rounds(one_server, one_key), result.h2_rounds(two_server, two_key)
        one, two = (_median_of(rows, lambda r: r.throughput) for rows in (ones, twos))
        ratios = _round_ratios(ones, twos, lambda r: r.throughput)
        value = (f"{_count(one)} → {_count(two)} checks/s; median of the per-round ratios "
                 f"{_fixed(statistics.median(ratios))} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
                 if one and two and ratios else "n/a")
        add(f"| {label} | {value} |")
    # The tail at saturation: each row's p99 over the floor's p99 of the same round.
    for key in Bench.H2_SCENARIOS:
        floor_key = "floor-ext" if key == "e" else "floor"
        ratios = _round_ratios(result.h2_rounds("floor", floor_key), result.h2_rounds("1 worker", key),
                               lambda r: r.summary and r.summary.percentile(99))
        value = (f"median of the per-round ratios {_fixed(statistics.median(ratios))} "
                 f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; aim ≤ 2)" if ratios else "n/a")
        add(f"| p99 at saturation, 1 worker ({key}) / floor | {value} |")
    for key in Bench.H2_SCENARIOS:
        rows = result.h2_rounds("1 worker (c1)", key)
        floors = result.h2_rounds("floor (c1)", "floor-ext" if key == "e" else "floor")
        p50, p99 = (_median_of(rows, lambda r, q=q: r.summary and r.summary.percentile(q)) for q in (50, 99))
        f50, f99 = (_median_of(floors, lambda r, q=q: r.summary and r.summary.percentile(q)) for q in (50, 99))
        value = (f"p50 {_us(p50)} µs, p99 {_us(p99)} µs (floor: p50 {_us(f50)} µs, p99 {_us(f99)} µs)"
                 if rows else "n/a")
        add(f"| concurrency 1, 1 worker, ({key}) | {value} |")
    for other in ("b", "b-es"):
        ratios = _round_ratios(result.h2_rounds("1 worker (c1)", other), result.h2_rounds("1 worker (c1)", "f"),
                               lambda r: r.summary and r.summary.percentile(50))
        value = (f"median of the per-round ratios {_fixed(statistics.median(ratios))} "
                 f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})" if ratios else "n/a")
        add(f"| concurrency 1, 1 worker, p50 of (f) / p50 of ({other}) | {value} |")
    add("")
    add("The 2-worker rows are compared with the 2-process floor (the same stack on as many processes), the c1 rows "
        "with the floor at c1, the others with the 1-process floor at saturation. (f) uses tokens the server issued "
        "from its token endpoint at the start of the part (one per OAuth client, scope user:read), on the same "
        "partner/user pairs as (b) and (b-es); (b-es) is (b) with an external issuer's ES256 token, the algorithm "
        "Tollgate signs with, so (f) / (b-es) compares the issuers alone.\n")


# Keycloak's published sizing: about 120 client-credentials grants per second per vCPU; the aim is ten times that.
KEYCLOAK_GRANTS_PER_VCPU = 120
GRANTS_PER_CORE_AIM = 10 * KEYCLOAK_GRANTS_PER_VCPU


def token_table(result: StoreResult, options: Options, add: Callable[[str], None]) -> None:
    o = options
    add(f"### Token endpoint: wrk (HTTP/1.1 client_credentials grants, {o.oauth_clients:,} distinct OAuth clients)\n")
    add(f"`POST /oauth/token` with `grant_type=client_credentials` and HTTP Basic client authentication, over "
        f"{o.tokens_connections} keep-alive connections ({o.tokens_threads} wrk threads); every request comes from "
        f"the next of {o.oauth_clients:,} seeded OAuth clients (each thread cycles through all of them from its own "
        "offset), every one granted before the first round (Tollgate's fact cache holds them: no store read per "
        "grant, and a client_credentials grant writes nothing). *HTTP floor*: the same Starlette/uvicorn stack and "
        "listener with an empty handler that reads the form and answers a constant token response "
        "(bench/http_floor.py), 1 and 2 processes on one port; Tollgate: `tollgate serve` with 1 and 2 workers "
        f"(SO_REUSEPORT). Rounds: {o.tokens_rounds}, interleaved (all servers side by side, each round measures every "
        f"row once, floors first); per row and round a {max(o.warmup, 1.0):g} s warm-up, then "
        f"{max(1, math.ceil(o.tokens_seconds))} s measured (wrk takes whole seconds). Each figure is the median over "
        "the rounds, each ratio the median of the per-round ratios (2 workers against the 2-process floor). Latency: "
        "wrk's per-request round trip (µs; at saturation it includes queueing behind the other connections). "
        "*server CPU µs/grant*: user + system CPU of the server's processes over the measured run / the grants it "
        "answered, and *server cores*: that CPU over the run's wall time (1.00: one core busy throughout; "
        "a server far from its cores' worth is not saturated, and its CPU per grant then includes what it spends "
        "idle: the event loop, gRPC's polling, the cache refresh); *grants per core-second*: the inverse of the CPU "
        "per grant, what one core fully used answers at this cost. *wrk "
        "CPU*: the load generator's CPU over the run, as a share of one core (it shares the machine). *verified*, in "
        "every round: four grants sent with Python first (Tollgate: each an ES256 RFC 9068 token naming the client "
        "and its partner), no answer but a 200 with an `access_token` (wrk's Lua `response()`), no socket error, "
        "and the server's `tollgate_token_requests_total{endpoint=\"token\"}` moved by wrk's 200s (plus the "
        "requests in flight when wrk stopped) and by no other status.\n")
    add("| server | grants/s | p50 | p99 | server CPU µs/grant | server cores | grants per core-second "
        "| grants/s / floor | CPU / floor | wrk CPU | grants per worker | verified (last round) |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for server in Bench.TOKEN_SERVERS:
        rows = result.token_rounds(server)
        if not rows:
            continue
        floor = _token_floor_of(server)
        floors = result.token_rounds(floor) if floor else []
        problems = [f"round {row.round + 1}: {p}" for row in rows for p in row.problems]
        verified = rows[-1].verified + (" **MISMATCH: " + "; ".join(problems) + "**" if problems else "")
        split = [sum(column) for column in zip(*(row.split for row in rows), strict=True)]
        ratio = _round_ratios(floors, rows, lambda r: r.throughput)
        cpu_ratio = _round_ratios(floors, rows, lambda r: r.cpu_per_grant)
        add(f"| {server} | {_count(_median_of(rows, lambda r: r.throughput))} | "
            f"{_us(_median_of(rows, lambda r: r.result and r.result.percentile('p50')))} | "
            f"{_us(_median_of(rows, lambda r: r.result and r.result.percentile('p99')))} | "
            f"{_us(_median_of(rows, lambda r: r.cpu_per_grant))} | "
            f"{_cores(_median_of(rows, lambda r: r.server_cores))} | "
            f"{_count(_median_of(rows, lambda r: r.grants_per_core))} | "
            f"{_fixed(statistics.median(ratio)) if floor and ratio else '—'} | "
            f"{_fixed(statistics.median(cpu_ratio)) if floor and cpu_ratio else '—'} | "
            f"{_pct(_median_of(rows, lambda r: r.load_cpu_share))} | "
            f"{' / '.join(f'{n:,}' for n in split) if len(split) > 1 else '—'} | {verified} |")
    add("")
    add("| comparison (wrk, medians over the rounds) | value |")
    add("|---|---|")
    for label, one_name, two_name in (("HTTP floor, 2 processes / HTTP floor", "HTTP floor", "HTTP floor, 2 processes"),
                                      ("Tollgate 2 workers / 1 worker", "1 worker", "2 workers"),
                                      ("Tollgate 1 worker / HTTP floor", "HTTP floor", "1 worker"),
                                      ("Tollgate 2 workers / HTTP floor, 2 processes", "HTTP floor, 2 processes",
                                       "2 workers")):
        ones, twos = result.token_rounds(one_name), result.token_rounds(two_name)
        one, two = (_median_of(rows, lambda r: r.throughput) for rows in (ones, twos))
        ratios = _round_ratios(ones, twos, lambda r: r.throughput)
        value = (f"{_count(one)} → {_count(two)} grants/s; median of the per-round ratios "
                 f"{_fixed(statistics.median(ratios))} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
                 if one and two and ratios else "n/a")
        add(f"| {label} | {value} |")
    for server in ("1 worker", "2 workers"):
        rows = result.token_rounds(server)
        per_core = _median_of(rows, lambda r: r.grants_per_core)
        cores = _median_of(rows, lambda r: r.server_cores)
        value = (f"{_count(per_core)} grants per core-second = {per_core / KEYCLOAK_GRANTS_PER_VCPU:.1f} × Keycloak's "
                 f"~{KEYCLOAK_GRANTS_PER_VCPU} per vCPU (aim: {GRANTS_PER_CORE_AIM:,}, 10 ×), the server using "
                 f"{_cores(cores)} cores" if per_core else "n/a")
        add(f"| Tollgate {server}, grants per core-second | {value} |")
    add("")


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _token_floor_of(server: str) -> str | None:
    return {"1 worker": "HTTP floor", "2 workers": "HTTP floor, 2 processes"}.get(server)


def _round_ratios(denominators: list, numerators: list, value: Callable) -> list[float]:
    """numerator / denominator of the rows of the same round, in round order, where both have a value."""
    by_round = {row.round: row for row in denominators}
    ratios = []
    for row in numerators:
        other = by_round.get(row.round)
        top, bottom = value(row), other is not None and value(other)
        if top and bottom:
            ratios.append(top / bottom)
    return ratios


def _median_of(rows: list, value: Callable) -> float | None:
    values = [v for v in (value(row) for row in rows) if v is not None and v == v]
    return statistics.median(values) if values else None


def _per_floor(result: StoreResult, row: H2Row, attribute: str) -> float | None:
    floor = result.h2_floor_row(row)
    ours, theirs = getattr(row, attribute), floor and getattr(floor, attribute)
    return ours / theirs if ours and theirs else None


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _h2_floor_of(server: str) -> str:
    if server == "2 workers":
        return "floor, 2 processes"
    return "floor (c1)" if server.endswith("(c1)") else "floor"


def rss_table(run: RssRun, options: Options, add: Callable[[str], None]) -> None:
    add(f"### Server RSS over time: (b) at saturation, 1 worker, h2load, {run.minutes:g} min after a "
        f"{run.warmup:g} s warm-up\n")
    points = run.measured()
    row = run.row
    s = row.summary if row else None
    if not points or row is None or s is None:
        add("- no samples\n")
        return
    add(f"- RSS (MiB, sampled every {RSS_INTERVAL:g} s): start {points[0][1]:.1f} (at {points[0][0]:.0f} s), "
        f"max {max(m for _, m in points):.1f}, end {points[-1][1]:.1f}; slope {_slope(run.slope())} MiB/min "
        f"(least squares over {len(points)} samples)")
    add(f"- load: {s.throughput:,.0f} checks/s, {options.h2_bodies} bodies, {options.h2_connections} connections × "
        f"{options.h2_streams} streams; server CPU {_us(row.cpu_per_check)} µs/check; h2load CPU "
        f"{_pct(row.load_cpu_share)} of a core")
    add(f"- verified: {row.verified}" + (" **MISMATCH: " + "; ".join(row.problems) + "**" if row.problems else ""))
    add("- samples: " + ", ".join(f"{t:.0f} s {m:.1f}" for t, m in run.samples))
    add("")


def parse(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Tollgate Check under load, "
                                     "against a same-stack floor; writes bench/results.md.")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, help="measured seconds per row (default 10; --quick: 2.5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each row (default 2; --quick: 0.5)")
    parser.add_argument("--small", action="store_true", help="seed 1k relations and 100 keys instead of 1M and 100k")
    parser.add_argument("--quick", action="store_true",
                        help="a ~5-minute smoke: --small, 3 s per row with the warm-up, fewer server variants")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes at saturation (default 2)")
    parser.add_argument("--inflight", type=int, default=8,
                        help="calls in flight per client process at saturation (default 8)")
    parser.add_argument("--distinct", type=int, help=f"distinct requests per scenario (default {DISTINCT:,}; "
                        "--quick: 500)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown results file")
    parser.add_argument("--parts", default="grpcio,h2load,tokens,propagation",
                        help="comma-separated: grpcio (the Python load generator's rows), h2load (saturation rows "
                        "driven by h2load), tokens (the token endpoint's grants, driven by wrk), rss (RSS over "
                        "time, with --rss-minutes), propagation (a change committed elsewhere reaching the server, "
                        "PostgreSQL only: bench/propagation.py), mix (a realistic mix against the floor, and "
                        "its JWT share against Cerbos: bench/mix.py), coldstart (a fresh server under the mix: "
                        "bench/cold_start.py); default grpcio,h2load,tokens,propagation")
    parser.add_argument("--h2load-connections", type=int, default=16,
                        help="h2load connections in all, split between the bodies (default 16)")
    parser.add_argument("--h2load-streams", type=int, default=2,
                        help="concurrent streams per h2load connection (default 2)")
    parser.add_argument("--h2load-bodies", type=int, default=4,
                        help="distinct requests per h2load row, one h2load process each (default 4)")
    parser.add_argument("--h2load-rounds", type=int, help="interleaved rounds of the h2load rows (default 5; "
                        "--quick: 1)")
    parser.add_argument("--h2load-seconds", type=float, help="measured seconds per h2load row and round (default 4; "
                        "--quick: 2)")
    parser.add_argument("--tokens-rounds", type=int, help="interleaved rounds of the token endpoint rows (default 5; "
                        "--quick: 1)")
    parser.add_argument("--tokens-seconds", type=float, help="measured seconds per token row and round, rounded up "
                        "to whole seconds (default 5; --quick: 2)")
    parser.add_argument("--tokens-connections", type=int, default=16,
                        help="wrk keep-alive connections in all (default 16)")
    parser.add_argument("--tokens-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--oauth-clients", type=int, help=f"OAuth clients seeded, and cycled through by wrk "
                        f"(default {seeding.OAUTH_CLIENTS:,}; --quick: 1,000)")
    parser.add_argument("--service-dir", type=Path, help="run the servers (Tollgate and the floors) from the "
                        "`service` package in this directory instead of this tree's, e.g. a copy with a change "
                        "to measure")
    parser.add_argument("--server-setting", action="append", default=[], metavar="TOLLGATE_NAME=VALUE",
                        help="a setting for every Tollgate server of the run (repeatable), e.g. "
                             "TOLLGATE_GC_FREEZE_SECONDS=10, to measure a setting against a run without it")
    parser.add_argument("--pin", action="store_true",
                        help="h2load part: run the one-process servers (floor, Tollgate 1 worker, miss path, Cerbos) "
                        "on CPU 0 and their h2load on CPU 1 (taskset); the 2-process servers stay unpinned "
                        "(default off)")
    parser.add_argument("--rss-minutes", type=float, default=0.0,
                        help="also run (b) at saturation against 1 worker for this many minutes after the "
                        "RSS warm-up, sampling the server's RSS every 10 s (adds the rss part; default off)")
    parser.add_argument("--rss-warmup", type=float, default=30.0,
                        help="seconds of load before the first counted RSS sample (default 30)")
    mix.add_arguments(parser)
    cold_start.add_arguments(parser)
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
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if unknown := set(parts) - {"grpcio", "h2load", "tokens", "rss", "propagation", "mix", "coldstart"}:
        parser.error(f"unknown --parts {', '.join(sorted(unknown))}")
    if args.rss_minutes and "rss" not in parts:
        parts += ("rss",)
    if "rss" in parts and not 0 < args.rss_minutes <= 120:
        parser.error("the rss part needs --rss-minutes in (0, 120]")
    if not 0 <= args.rss_warmup <= 600:
        parser.error("--rss-warmup must be in [0, 600]")
    if not 1 <= args.h2load_bodies <= 16 or not args.h2load_bodies <= args.h2load_connections <= 256 \
            or not 1 <= args.h2load_streams <= 256:
        parser.error("--h2load-bodies must be 1..16, --h2load-connections bodies..256, --h2load-streams 1..256")
    h2_rounds = args.h2load_rounds if args.h2load_rounds is not None else (1 if args.quick else 5)
    h2_seconds = args.h2load_seconds if args.h2load_seconds is not None else (2.0 if args.quick else 4.0)
    if not 1 <= h2_rounds <= 20 or not 0 < h2_seconds <= 120:
        parser.error("--h2load-rounds must be 1..20 and --h2load-seconds in (0, 120]")
    tokens_rounds = args.tokens_rounds if args.tokens_rounds is not None else (1 if args.quick else 5)
    tokens_seconds = args.tokens_seconds if args.tokens_seconds is not None else (2.0 if args.quick else 5.0)
    oauth_clients = args.oauth_clients if args.oauth_clients is not None else (1_000 if args.quick else
                                                                               seeding.OAUTH_CLIENTS)
    if not 1 <= tokens_rounds <= 20 or not 0 < tokens_seconds <= 120:
        parser.error("--tokens-rounds must be 1..20 and --tokens-seconds in (0, 120]")
    if not 1 <= args.tokens_threads <= args.tokens_connections <= 256:
        parser.error("--tokens-threads must be 1..--tokens-connections, and --tokens-connections at most 256")
    if not 100 <= oauth_clients <= 50_000:
        parser.error("--oauth-clients must be 100..50,000")
    service_dir = args.service_dir.resolve() if args.service_dir else None
    if service_dir is not None and not (service_dir / "service" / "__main__.py").is_file():
        parser.error(f"--service-dir: no service package in {service_dir}")
    if args.pin and (why := pinning.unavailable()):
        parser.error(why)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    return Options(stores, args.small or args.quick, args.quick, seconds, warmup, args.clients, args.inflight,
                   distinct, args.output, parts, args.h2load_connections, args.h2load_streams, args.h2load_bodies,
                   h2_rounds, h2_seconds, args.rss_minutes, args.rss_warmup, tokens_rounds=tokens_rounds,
                   tokens_seconds=tokens_seconds, tokens_connections=args.tokens_connections,
                   tokens_threads=args.tokens_threads, oauth_clients=oauth_clients, service_dir=service_dir,
                   pin=args.pin, server_settings=_server_settings(args.server_setting, parser.error),
                   mix=mix.options_from(args, args.quick, seconds, warmup, parser.error),
                   coldstart=cold_start.options_from(args, parser.error)), args


def _server_settings(given: list[str], error: Callable[[str], None]) -> dict[str, str]:
    settings = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name.startswith("TOLLGATE_"):
            error(f"--server-setting takes TOLLGATE_NAME=VALUE, not {item!r}")
        settings[name] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    options, _ = parse(argv)
    command = shlex.join([Path(sys.executable).name, "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(UTC).astimezone()
    clock = time.monotonic()
    info = machine()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - clock:6.1f} s] {line}", flush=True)

    say(f"bench: stores {', '.join(options.stores)}; parts {', '.join(options.parts)}; "
        f"{'small' if options.small else 'full'} seeding; {options.seconds:g} s + {options.warmup:g} s warm-up per "
        f"row; grpcio {options.clients} clients × {options.inflight} in flight; h2load {options.h2_connections} "
        f"connections × {options.h2_streams} streams, {options.h2_bodies} bodies; wrk {options.tokens_threads} "
        f"threads × {options.tokens_connections} connections, {options.oauth_clients:,} OAuth clients")
    if "h2load" in options.parts or "rss" in options.parts:
        try:
            options.h2load = h2.ensure_h2load(say)
        except ToolMissing as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        options.h2load_version = _version(options.h2load)
        say(f"h2load: {options.h2load} ({options.h2load_version})")
    if "tokens" in options.parts:
        try:
            options.wrk = wrk.ensure_wrk(say)
        except ToolMissing as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        options.wrk_version = _version(options.wrk, "-v")
        say(f"wrk: {options.wrk} ({options.wrk_version})")
    results: list[StoreResult] = []
    log_dir = Path(tempfile.mkdtemp(prefix="tollgate-bench-logs-"))
    try:
        with ExitStack() as stack:
            load = stack.enter_context(LoadGenerator(options.clients)) if "grpcio" in options.parts else None
            bench = Bench(options, load, log_dir, say)
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
    failed = (any(row.problems for result in results for row in result.rows)
              or any(row.problems for result in results for row in result.h2_rows))
    failed = failed or any(result.rss_run.row.problems for result in results if result.rss_run and result.rss_run.row)
    failed = failed or any(row.problems for result in results for row in result.token_rows)
    failed = failed or any(result.mix and result.mix.problems for result in results)
    failed = failed or any(result.cold_start and result.cold_start.problems for result in results)
    return 1 if failed else 0


def _version(binary: str, flag: str = "--version") -> str:
    """The tool's version line (wrk prints it first, with its usage, and exits 1)."""
    try:
        done = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "version unknown"


if __name__ == "__main__":
    sys.exit(main())
