"""Part `mix`: a realistic mix of native Checks at saturation, against the floor in the same run.

The traffic (bench/mix_traffic.py): users drawn from a Zipf distribution over the store's 1M
relations, each asked about by the relation's partner with one of its credentials (tens of
thousands of API keys, and ~2,475 JWT clients whose tokens are renewed during the run), operations
following the relation (reads, a write, ~14 % expected denies). The load (bench/mix_load.py):
`--mix-processes` Python processes of grpc.aio calls, every answer checked against its request's
expected decision, their own CPU measured. The floor (bench/floor.py) and Tollgate (1 worker, metrics
on) run side by side and are measured in `--mix-rounds` interleaved rounds, floor first, both on the
same requests in a round (each round starts at another place in the traffic). Tollgate's decision
counter must move by exactly the load's verdicts; its decision-memo counter gives the memo's hit
rate. The fact cache's hits are not exported by the server; the table gives, from the requests
actually sent, the share whose credential and whose relation the server had already been asked
about (what a cache that never evicts could have answered: an upper bound of its hit rate).
"""

from __future__ import annotations

import argparse
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import h2load as h2
from . import seed as seeding
from .load import nearest_rank
from .mix_load import FloorCheck, MixLoad, NativeCheck, RunResult, RunSpec
from .mix_traffic import Traffic, build

START_DELAY = 0.5  # seconds between handing out a run and its start, so every process starts together


@dataclass
class MixOptions:
    rounds: int = 3
    seconds: float = 10.0
    warmup: float = 2.0
    processes: int = 2
    inflight: int = 16  # per process
    connections: int = 4  # per process
    zipf: float = 1.0
    renew_seconds: float = 30.0
    draws: int = 240_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mix-rounds", type=int, help="interleaved rounds of the mix rows (default 3; --quick: 1)")
    parser.add_argument("--mix-seconds", type=float, help="measured seconds per mix row and round (default "
                        "--seconds)")
    parser.add_argument("--mix-processes", type=int, default=2, help="mix load processes (default 2)")
    parser.add_argument("--mix-inflight", type=int, default=16, help="mix calls in flight per process (default 16)")
    parser.add_argument("--mix-zipf", type=float, default=1.0, help="Zipf exponent of the users drawn (default 1)")
    parser.add_argument("--mix-renew-seconds", type=float, default=30.0,
                        help="each JWT client's token is renewed this often, at staggered times (default 30)")


def options_from(args: argparse.Namespace, quick: bool, seconds: float, warmup: float,
                 error: Callable[[str], None]) -> MixOptions:
    rounds = args.mix_rounds if args.mix_rounds is not None else (1 if quick else 3)
    mix_seconds = args.mix_seconds if args.mix_seconds is not None else seconds
    if not 1 <= rounds <= 10 or not 0 < mix_seconds <= 120:
        error("--mix-rounds must be 1..10 and --mix-seconds in (0, 120]")
    if not 1 <= args.mix_processes <= 8 or not 1 <= args.mix_inflight <= 256:
        error("--mix-processes must be 1..8 and --mix-inflight 1..256")
    if not 0 < args.mix_zipf <= 3 or not 1 <= args.mix_renew_seconds <= 3600:
        error("--mix-zipf must be in (0, 3] and --mix-renew-seconds in [1, 3600]")
    return MixOptions(rounds, mix_seconds, warmup, args.mix_processes, args.mix_inflight, zipf=args.mix_zipf,
                      renew_seconds=args.mix_renew_seconds, draws=30_000 if quick else 240_000)


@dataclass
class MixRow:
    server: str  # "floor" or "1 worker"
    round: int
    throughput: float = 0.0
    p50: float | None = None
    p99: float | None = None
    p999: float | None = None
    server_cpu: float | None = None  # over the measured window
    load_cpu: float = 0.0  # the load processes', over the measured window
    calls: int = 0  # started in the measured window
    outcomes: Counter = field(default_factory=Counter)  # every call of the row, warm-up included
    recalled: int = 0  # answered from the decision memo (Tollgate)
    counted: int = 0  # decisions the server counted (Tollgate)
    verified: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def cpu_per_check(self) -> float | None:
        return self.server_cpu / self.calls if self.server_cpu is not None and self.calls else None

    @property
    def load_cpu_per_call(self) -> float | None:
        return self.load_cpu / self.calls if self.calls else None


@dataclass
class MixResult:
    options: MixOptions
    traffic: str  # what the traffic was
    rows: list[MixRow] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)  # Tollgate: shares of requests already seen
    distinct: dict[str, int] = field(default_factory=dict)  # Tollgate: distinct things sent

    def rounds(self, server: str) -> list[MixRow]:
        return [row for row in self.rows if row.server == server]

    def throughput(self, server: str) -> float | None:
        values = [row.throughput for row in self.rounds(server) if row.throughput]
        return statistics.median(values) if values else None

    @property
    def problems(self) -> list[str]:
        return [f"{row.server} round {row.round + 1}: {p}" for row in self.rows for p in row.problems]


def build_traffic(seeded: seeding.Seeded, options: MixOptions, lasting: float, say: Callable[[str], None]) -> Traffic:
    return build(seeded, options.draws, exponent=options.zipf, renew_seconds=options.renew_seconds,
                 lasting=lasting, say=say)


def describe(traffic: Traffic) -> str:
    return (f"{len(traffic.requests):,} requests drawn (Zipf s={traffic.zipf_exponent:g} over "
            f"{traffic.relations:,} relations), {traffic.expected_denies():.1%} expected denies; "
            f"{len(traffic.api_keys):,} API keys of {traffic.key_partners:,} partners and {traffic.jwt_clients:,} "
            f"JWT clients (RS256 and ES256 external issuers, each token renewed every {traffic.renew_seconds:g} s "
            f"at a staggered time)")


def measure_mix(bench, store: str, url: str, seeded: seeding.Seeded) -> MixResult:
    """The floor and Tollgate (1 worker) side by side, in interleaved rounds on the same requests."""
    from .run import floor_server

    o: MixOptions = bench.options.mix
    row_seconds = o.warmup + o.seconds + START_DELAY + 3
    traffic = build_traffic(seeded, o, lasting=o.rounds * 2 * row_seconds + 120, say=bench.say)
    result = MixResult(o, describe(traffic))
    sent: list[tuple[int, array]] = []  # Tollgate's (process, sent) of every round
    bench.say(f"[{store}] mix: floor and Tollgate 1 worker, {o.rounds} rounds, {o.processes} processes × "
              f"{o.inflight} in flight")
    with MixLoad(o.processes, traffic) as load, \
            floor_server(bench.log_dir, 1, bench.options.service_dir) as floor, \
            bench.tollgate(f"{store}-mix-1", url, metrics=True) as one:
        for round_ in range(o.rounds):
            for server, label, encoding in ((floor, "floor", FloorCheck()), (one, "1 worker", NativeCheck())):
                row, run = _measure(load, server, label, encoding, round_ / o.rounds, o)
                row.round = round_
                result.rows.append(row)
                if label == "1 worker":
                    sent += [(i, p.sent) for i, p in enumerate(run.processes)]
                bench.say(_line(row))
    result.seen, result.distinct = _seen_before(traffic, o.processes, sent)
    return result


def _measure(load: MixLoad, server, label: str, encoding, cursor: float, o: MixOptions) -> tuple[MixRow, RunResult]:
    row = MixRow(label, 0)
    counted = bool(server.metrics_urls)
    before = h2.scrape(server.metrics_urls) if counted else {}
    recalled_before = h2.scrape(server.metrics_urls, *RECALLED) if counted else {}
    cpu: list[float] = []
    spec = RunSpec(server.target, encoding, time.time() + START_DELAY, o.seconds, o.warmup, o.inflight,
                   connections=o.connections, cursor=cursor)
    run = load.run(spec, marks=lambda _mark: cpu.append(server.cpu_seconds()))
    row.server_cpu = cpu[1] - cpu[0]
    row.throughput = run.throughput
    row.calls = sum(p.measured for p in run.processes)
    row.load_cpu = run.load_cpu
    latencies = run.latencies()
    if latencies:
        row.p50, row.p99, row.p999 = (nearest_rank(latencies, q) for q in (50, 99, 99.9))
    row.outcomes = run.outcomes
    if run.mismatches:
        row.problems.append(f"{run.mismatches:,} answers not the expected decision, e.g. " + "; ".join(run.examples))
    answered = sum(row.outcomes.values())
    if counted:
        delta, _ = h2.counter_delta(before, h2.scrape(server.metrics_urls))
        recalled, _ = h2.counter_delta(recalled_before, h2.scrape(server.metrics_urls, *RECALLED))
        row.recalled = recalled.get(("native",), 0)
        row.counted = sum(delta.values())
        expected: Counter = Counter()
        for verdict, count in row.outcomes.items():
            decision, _, reason = verdict.partition(":")
            expected[("native", decision, reason)] += count
        if delta != expected:
            row.problems.append(f"server counted {_decisions(delta)}; the load saw {_decisions(expected)}")
        row.verified = (f"{answered:,} answers checked, {run.mismatches} mismatches; the server's decision counter "
                        f"moved by the same {row.counted:,} ({_decisions(delta)})")
    else:
        row.verified = f"{answered:,} answers checked (the constant allow), {run.mismatches} mismatches"
    return row, run


RECALLED = ("tollgate_checks_recalled_total", ("adapter",))


def _decisions(counts: Counter) -> str:
    return ", ".join(f"{decision}{'/' + reason if reason else ''} {count:,}"
                     for (_adapter, decision, reason), count in sorted(counts.items())) or "nothing"


def _seen_before(traffic: Traffic, processes: int, sent: list[tuple[int, array]]) -> tuple[dict, dict]:
    """From the requests sent to Tollgate in order (the processes' lists taken in turn): the share
    whose credential (API key, or JWT token string), whose relation, and whose whole request had been
    sent before; and how many distinct ones were sent."""
    per_process: dict[int, list[int]] = {}
    for index, codes in sent:
        per_process.setdefault(index, []).extend(codes)
    merged: list[tuple[int, int]] = []
    lists = [(index, codes) for index, codes in sorted(per_process.items())]
    longest = max((len(codes) for _, codes in lists), default=0)
    for position in range(longest):
        merged += [(index, codes[position]) for index, codes in lists if position < len(codes)]
    credentials: set = set()
    relations: set[int] = set()
    whole: set = set()
    api_keys: set[int] = set()
    jwt_clients: set[int] = set()
    hits: Counter = Counter()
    for index, code in merged:
        local, generation = divmod(code, 1024)
        request = traffic.requests[index + processes * local]
        credential = (request.jwt, request.credential, generation)
        hits["credential"] += credential in credentials
        hits["relation"] += request.relation in relations
        key = (credential, request.operation, request.user_id, request.organization_id)
        hits["request"] += key in whole
        credentials.add(credential)
        relations.add(request.relation)
        whole.add(key)
        (jwt_clients if request.jwt else api_keys).add(request.credential)
    total = len(merged) or 1
    return ({name: hits[name] / total for name in ("credential", "relation", "request")},
            {"requests": len(merged), "API keys": len(api_keys), "JWT clients": len(jwt_clients),
             "JWT tokens": len({c for c in credentials if c[0]}), "relations": len(relations)})


def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:,.0f}"


def _line(row: MixRow) -> str:
    flag = "" if not row.problems else "  MISMATCH: " + "; ".join(row.problems)
    memo = f"  memo {row.recalled / row.counted:.0%}" if row.counted else ""
    return (f"    mix {row.server:<9} round {row.round + 1}: {row.throughput:6.0f}/s  p50 {_us(row.p50)} µs  "
            f"p99 {_us(row.p99)} µs  server CPU {_us(row.cpu_per_check)} µs/check  load CPU "
            f"{_us(row.load_cpu_per_call)} µs/call ({row.load_cpu / row_seconds(row):.2f} cores){memo}{flag}")


def row_seconds(row: MixRow) -> float:
    return row.calls / row.throughput if row.throughput else 1.0


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mix_table(result: MixResult, add: Callable[[str], None]) -> None:
    o = result.options
    add(f"### Realistic mix (native Check at saturation), {o.rounds} interleaved rounds of {o.warmup:g} s + "
        f"{o.seconds:g} s\n")
    add(f"- traffic: {result.traffic}; no request the same as the one before it on its connection")
    add(f"- load: {o.processes} Python processes (grpc.aio, generic calls on bytes, every answer decoded and "
        f"checked), {o.inflight} calls in flight each over 4 connections; their CPU is in the table (a core is "
        "1.00), so it shows whether the load could have been the limit on this machine")
    add("")
    add("| server | checks/s | / floor | p50 µs | p99 µs | p99 / floor's | p99.9 µs | server CPU µs/check | "
        "server cores | load CPU µs/call | load cores | decision memo hits |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    floors = {row.round: row for row in result.rounds("floor")}
    for server in ("floor", "1 worker"):
        rows = result.rounds(server)
        if not rows:
            continue
        ratios = [row.throughput / floors[row.round].throughput for row in rows
                  if row.round in floors and floors[row.round].throughput]
        tails = [row.p99 / floor_p99 for row in rows
                 if row.p99 and row.round in floors and (floor_p99 := floors[row.round].p99)]
        memo = (f"{sum(r.recalled for r in rows) / sum(r.counted for r in rows):.1%}"
                if sum(r.counted for r in rows) else "n/a")
        seconds = [row_seconds(row) for row in rows]
        add(f"| {'Tollgate 1 worker' if server == '1 worker' else 'floor'} | "
            f"{_median([r.throughput for r in rows]) or 0:,.0f} | "
            f"{'' if server == 'floor' else _fixed(_median(ratios))} | {_us(_median([r.p50 for r in rows]))} | "
            f"{_us(_median([r.p99 for r in rows]))} | {'' if server == 'floor' else _fixed(_median(tails))} | "
            f"{_us(_median([r.p999 for r in rows]))} | {_us(_median([r.cpu_per_check for r in rows]))} | "
            f"{_fixed(_median([(r.server_cpu or 0) / s for r, s in zip(rows, seconds, strict=True)]))} | "
            f"{_us(_median([r.load_cpu_per_call for r in rows]))} | "
            f"{_fixed(_median([r.load_cpu / s for r, s in zip(rows, seconds, strict=True)]))} | {memo} |")
    add("")
    add("Medians over the rounds; `/ floor` and `p99 / floor's` are medians of the per-round ratios. Per round: "
        + "; ".join(f"{row.server} {row.round + 1}: {row.throughput:,.0f}/s p99 {_us(row.p99)} µs" for row in
                    result.rows))
    if result.distinct:
        d = result.distinct
        add(f"- sent to Tollgate over the rounds: {d['requests']:,} requests, {d['API keys']:,} distinct API keys, "
            f"{d['JWT clients']:,} JWT clients with {d['JWT tokens']:,} distinct tokens, {d['relations']:,} "
            "distinct relations")
        s = result.seen
        add(f"- already sent before to the same server (from the requests sent; the fact cache's own hits are not "
            f"exported): the credential {s['credential']:.1%}, the relation {s['relation']:.1%}, the whole request "
            f"{s['request']:.1%} — the decision memo answered {_memo_share(result)} (it keeps at most 10,000)")
    add("- Cerbos on the same traffic: not measured here (a `CheckEncoding` in bench/mix_load.py is the hook)")
    for row in result.rows:
        add(f"- verified, {row.server} round {row.round + 1}: {row.verified}"
            + (" **MISMATCH: " + "; ".join(row.problems) + "**" if row.problems else ""))
    add("")


def _memo_share(result: MixResult) -> str:
    rows = result.rounds("1 worker")
    counted = sum(r.counted for r in rows)
    return f"{sum(r.recalled for r in rows) / counted:.1%}" if counted else "n/a"


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
