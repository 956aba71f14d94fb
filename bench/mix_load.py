"""The mix's load generator: spawned Python processes, each an asyncio loop of grpc.aio generic
unary calls (bytes in, bytes out), every response decoded and checked, its own CPU measured.

Why not h2load: it sends one body per process over every connection, and the mix needs every request
of a connection to differ from the one before (and tokens that change during the run). The price of
a Python generator is CPU: about 150 µs per call on this kind of machine, which is why every run
reports the generator's own CPU (time.process_time of each process over the measured window, so
gRPC's C threads included) next to the server's, so a reader sees whether the two cores were shared
fairly or the generator could have been the limit.

A target is a `CheckEncoding`: a gRPC method path, how a request becomes a body (given the credential
in use at that moment: tokens are renewed during the run, so bodies are built when sent, the protobuf
encoding costing ~2 µs), and how an answer is judged (the decision the request expects: "allow",
"deny:<reason>", anything else is a mismatch). Tollgate's native Check and the floor are here; another
server (Cerbos, say) needs only another encoding.

Two modes: closed loop (`inflight` calls per process always outstanding, a new one when one ends:
throughput at saturation) and open loop (calls started on a fixed schedule, `rate` per second per
process, whatever the answers do: latency at a given load, without the queueing of saturation;
latency counted from the scheduled start, so a stalled server is not hidden by a stalled sender).
On each connection no request is the same as the one sent before it on that connection.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .load import stop_processes
from .mix_traffic import MixRequest, Traffic

CALL_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
MAX_OUTSTANDING = 2_000  # open loop: a call due while this many are outstanding is counted as not sent
NATIVE_CHECK = "/tollgate.v1.Authorization/Check"


class CheckEncoding(Protocol):
    @property
    def method(self) -> str: ...  # the gRPC method path

    def encode(self, request: MixRequest, credential: str) -> bytes: ...

    def verdict(self, response: bytes, request: MixRequest) -> str: ...

    def expected(self, request: MixRequest) -> str: ...


@dataclass(frozen=True)
class NativeCheck:
    """Tollgate's native Check: an allow must name the request's partner."""

    method: str = NATIVE_CHECK

    def encode(self, request: MixRequest, credential: str) -> bytes:
        from tollgate.v1 import authorization_pb2 as pb
        message = pb.CheckRequest(operation=request.operation,
                                  resource=pb.Resource(user_id=request.user_id,
                                                       organization_id=request.organization_id))
        if request.jwt:
            message.authorization = "Bearer " + credential
        else:
            message.api_key = credential
        return message.SerializeToString()

    def verdict(self, response: bytes, request: MixRequest) -> str:
        from tollgate.v1 import authorization_pb2 as pb
        answer = pb.CheckResponse.FromString(response)
        if answer.allowed:
            return "allow" if answer.principal.partner_id == request.partner else "wrong_partner"
        return "deny:" + answer.reason

    def expected(self, request: MixRequest) -> str:
        return request.expected


@dataclass(frozen=True)
class FloorCheck(NativeCheck):
    """The floor answers every Check with the same anonymous allow."""

    def verdict(self, response: bytes, request: MixRequest) -> str:
        from tollgate.v1 import authorization_pb2 as pb
        return "allow" if pb.CheckResponse.FromString(response).allowed else "deny"

    def expected(self, request: MixRequest) -> str:
        return "allow"


@dataclass(frozen=True)
class RunSpec:
    target: str  # 127.0.0.1:port
    encoding: CheckEncoding
    start_at: float  # wall clock (time.time()): every process starts together
    seconds: float  # measured
    warmup: float = 0.0  # closed loop only
    inflight: int = 16  # closed loop: per process
    rate: float = 0.0  # open loop: calls per second per process; 0: closed loop
    connections: int = 4  # per process
    cursor: float = 0.0  # where in its requests the process starts, as a fraction
    jwt_only: bool = False  # send only the requests carrying a JWT (the share a PDP without API keys can answer)


@dataclass
class ProcessResult:
    outcomes: Counter  # every call of the run (warm-up included), by verdict
    mismatches: int
    examples: list[str]  # a few mismatches, without credentials
    measured: int  # calls started in the measured window
    cpu: float  # the process's CPU seconds over the measured window
    latencies: array  # closed loop: the measured window's, seconds
    # Open loop: each call's scheduled start (seconds after start_at) and latency (nan: failed or not sent).
    starts: array = field(default_factory=lambda: array("d"))
    sent: array = field(default_factory=lambda: array("q"))  # request index * 1024 + token generation
    not_sent: int = 0


@dataclass
class RunResult:
    processes: list[ProcessResult]
    spec: RunSpec

    @property
    def outcomes(self) -> Counter:
        total: Counter = Counter()
        for p in self.processes:
            total.update(p.outcomes)
        return total

    @property
    def mismatches(self) -> int:
        return sum(p.mismatches for p in self.processes)

    @property
    def examples(self) -> list[str]:
        return [e for p in self.processes for e in p.examples][:5]

    @property
    def throughput(self) -> float:
        return sum(p.measured for p in self.processes) / self.spec.seconds

    @property
    def load_cpu(self) -> float:
        return sum(p.cpu for p in self.processes)

    def latencies(self) -> list[float]:
        return sorted(x for p in self.processes for x in p.latencies)


# -- the parent side ----------------------------------------------------------------------------

class MixLoad:
    """`processes` persistent load processes holding the traffic (each its share)."""

    def __init__(self, processes: int, traffic: Traffic) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = processes
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(processes)]
        self._processes = [context.Process(target=_process, args=(i, self._tasks[i], self._results),
                                           name=f"mix-load-{i}", daemon=True) for i in range(processes)]
        for process in self._processes:
            process.start()
        for i, tasks in enumerate(self._tasks):
            tasks.put(("traffic", traffic.share(i, processes)))
        self._collect(READY_TIMEOUT + 60)

    def __enter__(self) -> MixLoad:
        return self

    def __exit__(self, *_exc) -> None:
        stop_processes(self._tasks, self._processes)

    def run(self, spec: RunSpec, marks: Callable[[float], None] | None = None) -> RunResult:
        """One run in every process. `marks(t)` is called (in this process) at the start and at the
        end of the measured window, t being the wall-clock mark, e.g. to read the server's CPU."""
        if not spec.target.startswith("127.0.0.1:"):
            raise ValueError("the mix load only targets 127.0.0.1")
        for tasks in self._tasks:
            tasks.put(("run", spec))
        if marks is not None:
            begin = spec.start_at + spec.warmup
            for mark in (begin, begin + spec.seconds):
                time.sleep(max(0.0, mark - time.time()))
                marks(mark)
        done = self._collect(spec.start_at - time.time() + spec.warmup + spec.seconds + 2 * CALL_TIMEOUT + 30)
        return RunResult([done[i] for i in range(self.count)], spec)

    def _collect(self, timeout: float) -> dict[int, ProcessResult]:
        got: dict[int, ProcessResult] = {}
        failures: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) + len(failures) < self.count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"mix load processes did not answer within {timeout:.0f} s")
            try:
                kind, index, data = self._results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if dead := [p.name for p in self._processes if not p.is_alive()]:
                    raise RuntimeError(f"mix load process(es) {', '.join(dead)} died") from None
                continue
            if kind == "error":
                failures.append(f"process {index}: {data}")
            else:
                got[index] = data
        if failures:
            raise RuntimeError("mix load failed:\n" + "\n".join(failures))
        return got


# -- the load processes -------------------------------------------------------------------------

def _process(index: int, tasks, results) -> None:
    traffic: Traffic | None = None
    while True:
        task = tasks.get()
        if task is None:
            return
        kind, payload = task
        try:
            if kind == "traffic":
                traffic = payload
                results.put(("ready", index, None))
            else:
                assert traffic is not None
                results.put(("done", index, asyncio.run(_run(traffic, payload))))
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
            results.put(("error", index, traceback.format_exc()))


class _Sender:
    """Picks each connection's next request (never the one it sent last) and judges the answer."""

    def __init__(self, traffic: Traffic, spec: RunSpec) -> None:
        self.traffic = traffic
        self.spec = spec
        self.encoding = spec.encoding
        requests = traffic.requests
        # The indices sent, in order: the cursor walks this list, so a JWT-only run sends the same
        # requests, in the same order, as every other JWT-only run with the same cursor.
        self.order: Sequence[int] = ([i for i, r in enumerate(requests) if r.jwt] if spec.jwt_only
                                     else range(len(requests)))
        if not self.order:
            raise ValueError("no requests to send (a JWT-only run over traffic without JWT requests)")
        self.cursor = int(spec.cursor * len(self.order)) % len(self.order)
        self.outcomes: Counter = Counter()
        self.mismatches = 0
        self.examples: list[str] = []
        self.sent = array("q")
        self.last: dict[int, bytes] = {}

    def next_body(self, connection: int, now: float) -> tuple[MixRequest, bytes]:
        requests, order = self.traffic.requests, self.order
        for attempt in range(len(order)):
            i = order[self.cursor]
            self.cursor = (self.cursor + 1) % len(order)
            request = requests[i]
            credential, generation = self.traffic.credential(request, now)
            body = self.encoding.encode(request, credential)
            # The last attempt is sent even if it repeats: every request to send is the same.
            if body != self.last.get(connection) or attempt == len(order) - 1:
                self.last[connection] = body
                self.sent.append(i * 1024 + generation)
                return request, body
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def judge(self, request: MixRequest, verdict: str) -> bool:
        self.outcomes[verdict] += 1
        if verdict == self.encoding.expected(request):
            return True
        self.mismatches += 1
        if len(self.examples) < 5:  # never the credential
            self.examples.append(f"{request.operation} partner {request.partner} user {request.user_id or '-'} "
                                 f"org {request.organization_id or '-'} ({'JWT' if request.jwt else 'API key'}): "
                                 f"{verdict}, expected {self.encoding.expected(request)}")
        return False


async def _run(traffic: Traffic, spec: RunSpec) -> ProcessResult:
    import grpc

    channels = [grpc.aio.insecure_channel(spec.target) for _ in range(spec.connections)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT)
        calls: list = [channel.unary_unary(spec.encoding.method) for channel in channels]
        sender = _Sender(traffic, spec)
        if spec.rate:
            return await _open_loop(sender, calls, spec)
        return await _closed_loop(sender, calls, spec)
    finally:
        for channel in channels:
            await channel.close()


async def _call(sender: _Sender, call, connection: int, now: float) -> tuple[bool, float]:
    """One call: (answered as expected, latency in seconds from now)."""
    import grpc

    request, body = sender.next_body(connection, now)
    try:
        response = await call(body, timeout=CALL_TIMEOUT)
        verdict = sender.encoding.verdict(response, request)
    except grpc.aio.AioRpcError as error:
        verdict = f"error:{error.code().name}"
    return sender.judge(request, verdict), time.time() - now


async def _closed_loop(sender: _Sender, calls: list, spec: RunSpec) -> ProcessResult:
    begin = spec.start_at + spec.warmup
    end = begin + spec.seconds
    latencies = array("d")
    measured = 0
    cpu: list[float] = []

    async def cpu_marks() -> None:
        for mark in (begin, end):
            await asyncio.sleep(max(0.0, mark - time.time()))
            cpu.append(time.process_time())

    async def worker(w: int) -> None:
        nonlocal measured
        connection = w % len(calls)
        while (now := time.time()) < end:
            _, latency = await _call(sender, calls[connection], connection, now)
            if now >= begin:
                measured += 1
                latencies.append(latency)

    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    await asyncio.gather(cpu_marks(), *(worker(w) for w in range(spec.inflight)))
    return ProcessResult(sender.outcomes, sender.mismatches, sender.examples, measured, cpu[1] - cpu[0],
                         latencies, sent=sender.sent)


async def _open_loop(sender: _Sender, calls: list, spec: RunSpec) -> ProcessResult:
    count = int(spec.rate * spec.seconds)
    starts = array("d", (i / spec.rate for i in range(count)))
    latencies = array("d", [float("nan")] * count)
    outstanding: set[asyncio.Task] = set()
    not_sent = 0

    async def one(i: int, due: float) -> None:
        ok, latency = await _call(sender, calls[i % len(calls)], i % len(calls), due)
        if ok:
            latencies[i] = latency

    cpu_start = time.process_time()
    for i in range(count):
        due = spec.start_at + starts[i]
        if (delay := due - time.time()) > 0:
            await asyncio.sleep(delay)
        if len(outstanding) >= MAX_OUTSTANDING:
            not_sent += 1
            continue
        task = asyncio.create_task(one(i, due))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    if outstanding:
        await asyncio.wait(outstanding, timeout=2 * CALL_TIMEOUT)
    return ProcessResult(sender.outcomes, sender.mismatches, sender.examples, count - not_sent,
                         time.process_time() - cpu_start, latencies, starts=starts, sent=sender.sent,
                         not_sent=not_sent)
