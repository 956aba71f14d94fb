"""The load generator: K client processes (spawned), each with its own gRPC channels.

Two modes per scenario:

- concurrency 1: one process, one blocking call at a time — the latency of one decision with
  nothing queued;
- saturation: every process keeps `inflight` calls outstanding (`stub.Check.future(...)`, a new
  call issued as soon as one completes), spread round-robin over its channels — the throughput
  ceiling, and the latency under it.

Each process cycles over its own share of the scenario's requests (all of them at concurrency 1).

Requests are built (protobuf messages) before timing starts. Each measurement has a warm-up
(excluded) and a bounded measuring window; calls still outstanding at its end are waited for at
most CALL_TIMEOUT seconds. Every response is classified (allow, deny:<reason>, error:<code>,
wrong_partner) and the counts are checked against the scenario's expectation by `problems()`.
Targets are 127.0.0.1 only.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

CALL_TIMEOUT = 10.0
# Distinct TCP connections per client process, so a server with several SO_REUSEPORT workers gets
# its connections spread by the kernel (one channel per process could land every client on one worker).
CHANNELS_PER_CLIENT = 4
READY_TIMEOUT = 60.0
PRIME_TIMEOUT = 120.0
PRIME_INFLIGHT = 8


@dataclass(frozen=True)
class Request:
    """One request, as plain data (it crosses to the client processes). `partner` is the partner
    an allow must name (the principal); "" when not checked."""

    partner: str = ""
    authorization: str = ""
    api_key: str = ""
    operation: str = ""
    user_id: str = ""
    organization_id: str = ""
    # ext_authz only: the HTTP request the sidecar would ask about.
    http_method: str = ""
    path: str = ""


@dataclass(frozen=True)
class Expectation:
    # The share of responses that must be allows, inclusive bounds.
    min_allowed: float = 1.0
    max_allowed: float = 1.0
    # The reasons a deny may carry; any other deny fails the run.
    deny_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    api: str  # "native" (tollgate.v1.Authorization/Check) or "ext_authz" (envoy.service.auth.v3)
    requests: tuple[Request, ...]
    expect: Expectation


@dataclass
class Measurement:
    scenario: str
    mode: str  # "c1" or "sat"
    clients: int
    inflight: int
    seconds: float
    completed: int
    latencies: list[float] = field(repr=False)
    outcomes: Counter
    total: int
    # CPU seconds the server spent from "go" to the last response (warm-up included, like `total`);
    # None when not probed.
    server_cpu: float | None = None

    @property
    def cpu_per_call(self) -> float | None:
        """Server CPU seconds per call: barely moved by other load on the machine, unlike wall time."""
        return self.server_cpu / self.total if self.server_cpu is not None and self.total else None

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the measured latencies, in seconds (nan when none)."""
        return nearest_rank(self.latencies, q) if self.latencies else float("nan")

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def p999(self) -> float:
        return self.percentile(99.9)

    def problems(self, expect: Expectation) -> list[str]:
        """Why these responses are not the decisions the scenario expects; empty when they are."""
        found = []
        if self.total == 0 or self.completed == 0:
            found.append("no call completed in the measuring window")
        allowed = self.outcomes.get("allow", 0)
        share = allowed / self.total if self.total else 0.0
        if not expect.min_allowed <= share <= expect.max_allowed:
            found.append(f"{share:.2%} allowed, expected {expect.min_allowed:.0%}..{expect.max_allowed:.0%}")
        for outcome, count in sorted(self.outcomes.items()):
            if outcome == "allow":
                continue
            if outcome.startswith("deny:") and outcome[5:] in expect.deny_reasons:
                continue
            found.append(f"{count} unexpected {outcome}")
        return found


def nearest_rank(ordered: list, q: float):
    """The nearest-rank q-th percentile of a sorted, non-empty list."""
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the parent side ----------------------------------------------------------------------------

class LoadGenerator:
    """K persistent client processes; each run() hands them one measurement."""

    def __init__(self, clients: int = 2) -> None:
        if clients < 1:
            raise ValueError("at least one client process")
        context = multiprocessing.get_context("spawn")
        self.clients = clients
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(clients)]
        self._processes = [context.Process(target=_client, args=(index, self._tasks[index], self._results),
                                           name=f"bench-client-{index}", daemon=True)
                           for index in range(clients)]
        for process in self._processes:
            process.start()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        stop_processes(self._tasks, self._processes)

    def run(self, target: str, scenario: Scenario, *, mode: str, seconds: float, warmup: float,
            inflight: int = 8, prime: bool = False,
            cpu_probe: Callable[[], float] | None = None) -> Measurement:
        """One measurement of `scenario` against `target` ("127.0.0.1:port"). `prime`: before the
        clock starts, every client sends its share of the requests once on each of its channels
        (so every server worker has seen every credential: the rows measure the steady state).
        `cpu_probe`: the server's CPU seconds so far, read when the clients start and when they are done."""
        if not target.startswith("127.0.0.1:"):
            raise ValueError("the load generator only targets 127.0.0.1")
        if mode not in ("c1", "sat"):
            raise ValueError(f"unknown mode {mode!r}")
        used = 1 if mode == "c1" else self.clients
        inflight = 1 if mode == "c1" else inflight
        task = {"target": target, "api": scenario.api, "requests": scenario.requests, "mode": mode,
                "inflight": inflight, "warmup": warmup, "seconds": seconds,
                "prime": prime}
        count = len(scenario.requests)
        for index in range(used):
            self._tasks[index].put(dict(task, offset=index * count // used, share=(index + 1) * count // used
                                        - index * count // used))
        ready, failures = self._collect("ready", used, READY_TIMEOUT + (PRIME_TIMEOUT if prime else 0))
        if failures:
            for index in ready:
                self._tasks[index].put(("abort", 0.0))
            self._collect("aborted", len(ready), READY_TIMEOUT)
            raise RuntimeError(f"a client could not prepare {scenario.key}:\n" + "\n".join(failures))
        cpu_before = cpu_probe() if cpu_probe else None
        start_at = time.monotonic() + 0.2
        for index in range(used):
            self._tasks[index].put(("go", start_at))
        done, failures = self._collect("done", used, warmup + seconds + 2 * CALL_TIMEOUT + 30)
        cpu_used = cpu_probe() - cpu_before if cpu_probe and cpu_before is not None else None
        if failures:
            raise RuntimeError(f"a client failed during {scenario.key}:\n" + "\n".join(failures))
        latencies: list[float] = []
        outcomes: Counter = Counter()
        completed = total = 0
        for data in done.values():
            latencies.extend(data["latencies"])
            outcomes.update(data["outcomes"])
            completed += data["completed"]
            total += data["total"]
        latencies.sort()
        return Measurement(scenario.key, mode, used, inflight, seconds, completed, latencies, outcomes, total,
                           cpu_used)

    def _collect(self, kind: str, count: int, timeout: float) -> tuple[dict[int, dict], list[str]]:
        got: dict[int, dict] = {}
        failures: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) + len(failures) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"client processes did not report {kind!r} within {timeout:.0f} s")
            try:
                message_kind, index, data = self._results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [p.name for p in self._processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"client process(es) {', '.join(dead)} died") from None
                continue
            if message_kind == "error":
                failures.append(f"client {index}: {data}")
            else:
                got[index] = data
        return got, failures


# -- the client processes -----------------------------------------------------------------------

def _client(index: int, tasks, results) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        channels = []
        try:
            calls, channels, messages = _prepare(task)
            if task["prime"]:
                _prime(task, calls, messages)
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
            results.put(("error", index, traceback.format_exc()))
            continue
        results.put(("ready", index, {}))
        try:
            command, start_at = tasks.get(timeout=READY_TIMEOUT + 30)
            if command != "go":
                results.put(("aborted", index, {}))
                continue
            run = _run_one_at_a_time if task["mode"] == "c1" else _run_saturated
            results.put(("done", index, run(task, calls, messages, start_at)))
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
            results.put(("error", index, traceback.format_exc()))
        finally:
            for channel in channels:
                channel.close()


def build_message(api: str, request: Request):
    """The protobuf request of `request`: a tollgate.v1 CheckRequest ("native") or an Envoy
    ext_authz CheckRequest ("ext_authz")."""
    if api == "native":
        from tollgate.v1 import authorization_pb2

        return authorization_pb2.CheckRequest(
            authorization=request.authorization, api_key=request.api_key, operation=request.operation,
            resource=authorization_pb2.Resource(user_id=request.user_id, organization_id=request.organization_id))
    from tests.support.envoy import ext_authz_request

    headers = {}
    if request.authorization:
        headers["authorization"] = request.authorization
    if request.api_key:
        headers["x-api-key"] = request.api_key
    return ext_authz_request(request.http_method, request.path, headers)


def outcome_of(api: str, response, request: Request) -> str:
    """The classified outcome of one response to `request` (allow, deny:<reason>, wrong_partner)."""
    outcome, partner = _outcome_reader(api)(response)
    return _checked(outcome, partner, request)


def _prepare(task: dict):
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc
    from tollgate.v1 import authorization_pb2_grpc

    native = task["api"] == "native"
    messages = [build_message(task["api"], request) for request in task["requests"]]
    count = 1 if task["mode"] == "c1" else CHANNELS_PER_CLIENT
    # A local subchannel pool: each channel is its own TCP connection.
    channels = [grpc.insecure_channel(task["target"], options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(count)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    stub_class = authorization_pb2_grpc.AuthorizationStub if native else external_auth_pb2_grpc.AuthorizationStub
    calls = [stub_class(channel).Check for channel in channels]
    return calls, channels, messages


def _prime(task: dict, calls, messages) -> None:
    """Sends this client's share of the requests once on every channel, PRIME_INFLIGHT at a time;
    bounded by PRIME_TIMEOUT. Failed calls are ignored here (the measurement counts its own)."""
    slots = threading.Semaphore(PRIME_INFLIGHT)
    deadline = time.monotonic() + PRIME_TIMEOUT
    for call in calls:
        for i in range(task["offset"], task["offset"] + task["share"]):
            if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError("priming did not finish in time")
            call.future(messages[i], timeout=CALL_TIMEOUT).add_done_callback(lambda _f: slots.release())
    for _ in range(PRIME_INFLIGHT):
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RuntimeError("priming did not finish in time")


def _outcome_reader(api: str):
    if api == "native":
        def read(response) -> tuple[str, str]:
            if response.allowed:
                return "allow", response.principal.partner_id
            return "deny:" + response.reason, ""
    else:
        def read(response) -> tuple[str, str]:
            fields = response.dynamic_metadata.fields
            partner = fields["partner_id"].string_value if "partner_id" in fields else ""
            if response.status.code == 0 and response.HasField("ok_response"):
                return "allow", partner
            reason = fields["reason"].string_value if "reason" in fields else str(response.status.code)
            return "deny:" + reason, ""
    return read


def _wait_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _run_one_at_a_time(task: dict, calls, messages, start_at: float) -> dict:
    import grpc

    read = _outcome_reader(task["api"])
    requests = task["requests"]
    call = calls[0]
    offset, share = task["offset"], task["share"]
    i = 0
    warm_end = start_at + task["warmup"]
    end = warm_end + task["seconds"]
    latencies: list[float] = []
    outcomes: Counter = Counter()
    total = 0
    _wait_until(start_at)
    monotonic = time.monotonic
    while True:
        started = monotonic()
        if started >= end:
            break
        index = offset + i % share
        i += 1
        try:
            outcome, partner = read(call(messages[index], timeout=CALL_TIMEOUT))
        except grpc.RpcError as error:
            outcome, partner = "error:" + error.code().name, ""
        finished = monotonic()
        total += 1
        outcomes[_checked(outcome, partner, requests[index])] += 1
        if started >= warm_end and finished < end:
            latencies.append(finished - started)
    return {"latencies": latencies, "outcomes": outcomes, "completed": len(latencies), "total": total}


def _run_saturated(task: dict, calls, messages, start_at: float) -> dict:
    read = _outcome_reader(task["api"])
    requests = task["requests"]
    inflight = task["inflight"]
    slots = threading.Semaphore(inflight)
    # (started, finished, outcome, partner, index); list.append is atomic, the callbacks run on
    # gRPC's threads.
    records: list[tuple] = []
    monotonic = time.monotonic

    def done(started: float, index: int, future) -> None:
        finished = monotonic()
        try:
            error = future.exception()
            if error is None:
                outcome, partner = read(future.result())
            else:
                code = error.code() if hasattr(error, "code") else None
                outcome, partner = "error:" + (code.name if code is not None else type(error).__name__), ""
        except Exception as error:  # noqa: BLE001 - counted, fails the run
            outcome, partner = "error:" + type(error).__name__, ""
        records.append((started, finished, outcome, partner, index))
        slots.release()

    offset, share = task["offset"], task["share"]
    channels = len(calls)
    i = 0
    warm_end = start_at + task["warmup"]
    end = warm_end + task["seconds"]
    _wait_until(start_at)
    while True:
        slots.acquire()
        started = monotonic()
        if started >= end:
            slots.release()
            break
        index = offset + i % share
        future = calls[i % channels].future(messages[index], timeout=CALL_TIMEOUT)
        i += 1
        future.add_done_callback(partial(done, started, index))
    # Drain: every outstanding call ends within its timeout.
    for _ in range(inflight):
        slots.acquire(timeout=CALL_TIMEOUT + 5)
    latencies = []
    outcomes: Counter = Counter()
    completed = 0
    for started, finished, outcome, partner, index in records:
        outcomes[_checked(outcome, partner, requests[index])] += 1
        if warm_end <= finished < end:
            completed += 1
            if started >= warm_end:
                latencies.append(finished - started)
    return {"latencies": latencies, "outcomes": outcomes, "completed": completed, "total": len(records)}


def _checked(outcome: str, partner: str, request: Request) -> str:
    if outcome == "allow" and request.partner and partner != request.partner:
        return "wrong_partner"
    return outcome


def stop_processes(tasks: list, processes: list) -> None:
    """Tells each spawned load process to end (None on its task queue) and waits for it; one that
    does not end within 10 s is killed."""
    for queue_ in tasks:
        queue_.put(None)
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
