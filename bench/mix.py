"""Part `mix`: a realistic mix of native Checks at saturation, against the floor and Cerbos in the same run.

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

With the Cerbos binary (bench/cerbos.py), each round also measures the mix's JWT share (the JWT
clients' requests: Cerbos has no API keys) on Cerbos and on a second Tollgate (1 worker) that is
sent only that share, the two in alternating order (bench/mix_cerbos.py says how a request becomes
a CheckResources call and how Cerbos's answers and counters are checked); the table adds their
rows and the per-round ratios Tollgate / Cerbos. Without the binary the part runs without them and
says so.
"""

from __future__ import annotations

import argparse
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import cerbos, mix_cerbos
from . import h2load as h2
from . import seed as seeding
from .load import nearest_rank
from .mix_load import CheckEncoding, FloorCheck, MixLoad, NativeCheck, RunResult, RunSpec
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


FLOOR, ONE, ONE_JWT, CERBOS = "floor", "1 worker", "1 worker, JWT share", "Cerbos, JWT share"
NAMES = {FLOOR: "floor", ONE: "Tollgate 1 worker", ONE_JWT: "Tollgate 1 worker, JWT share", CERBOS: "Cerbos, JWT share"}
CERBOS_AIM = 1.5  # issue 16: Tollgate at least this many times Cerbos's throughput on the same requests


@dataclass
class MixRow:
    server: str  # FLOOR, ONE, ONE_JWT or CERBOS
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
    # Per Tollgate server (ONE, ONE_JWT): shares of requests already seen, and distinct things sent.
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    distinct: dict[str, dict[str, int]] = field(default_factory=dict)
    jwt_share: str = ""  # what the JWT share was (when Cerbos was measured)
    cerbos: str = ""  # the Cerbos version measured, or why it was not
    notes: list[str] = field(default_factory=list)

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


def describe_jwt_share(traffic: Traffic) -> str:
    jwt = [r for r in traffic.requests if r.jwt]
    denies = sum(1 for r in jwt if r.expected != "allow")
    operations = Counter(r.operation for r in jwt)
    return (f"{len(jwt):,} of the {len(traffic.requests):,} requests ({len(jwt) / len(traffic.requests):.1%}), "
            f"{denies / len(jwt) if jwt else 0:.1%} expected denies; "
            + ", ".join(f"{name} {count / len(jwt):.0%}" for name, count in operations.most_common()))


def measure_mix(bench, store: str, url: str, seeded: seeding.Seeded) -> MixResult:
    """The floor and Tollgate (1 worker) side by side, in interleaved rounds on the same requests;
    with the Cerbos binary, also Cerbos and another Tollgate (1 worker) on the mix's JWT share."""
    from .cerbos_rows import cerbos_server
    from .run import floor_server

    o: MixOptions = bench.options.mix
    row_seconds = o.warmup + o.seconds + START_DELAY + 3
    try:
        binary: Path | None = cerbos.binary()
    except cerbos.CerbosMissing as error:
        binary, missing = None, str(error)
    rows_per_round = 4 if binary else 2
    traffic = build_traffic(seeded, o, lasting=o.rounds * rows_per_round * row_seconds + 120, say=bench.say)
    result = MixResult(o, describe(traffic))
    sent: dict[str, list[tuple[int, array]]] = {ONE: [], ONE_JWT: []}  # (process, sent) of every round
    with ExitStack() as stack:
        floor = stack.enter_context(floor_server(bench.log_dir, 1, bench.options.service_dir))
        one = stack.enter_context(bench.tollgate(f"{store}-mix-1", url, metrics=True))
        pair: list[tuple[object, str, CheckEncoding, bool]] = []
        if binary is None:
            result.cerbos = f"not measured: {missing}"
            bench.say(f"[{store}] mix: Cerbos rows left out: {missing}")
        else:
            started = time.monotonic()
            related = mix_cerbos.relation_data(traffic.requests, seeded.size)
            result.jwt_share = describe_jwt_share(traffic)
            policies = mix_cerbos.policies(seeded.issuers.values(), seeding.AUDIENCE)
            server = stack.enter_context(cerbos_server(bench, binary, bench.log_dir / f"cerbos-{store}-mix",
                                                       mix_cerbos.key_sets(seeded), policies, jwt_cache=True))
            one_jwt = stack.enter_context(bench.tollgate(f"{store}-mix-1-jwt", url, metrics=True))
            result.cerbos = cerbos.version(binary)
            pair = [(one_jwt, ONE_JWT, NativeCheck(), True), (server, CERBOS, mix_cerbos.CerbosCheck(related), True)]
            bench.say(f"[{store}] mix: {result.cerbos} on {server.target}; the relation data of "
                      f"{len(related):,} users and organizations in {time.monotonic() - started:.1f} s")
        load = stack.enter_context(MixLoad(o.processes, traffic))
        bench.say(f"[{store}] mix: {', '.join(NAMES[label] for label in (FLOOR, ONE, *(p[1] for p in pair)))}; "
                  f"{o.rounds} rounds, {o.processes} processes × {o.inflight} in flight")
        for round_ in range(o.rounds):
            # The JWT-share pair alternates its order from round to round, so neither always follows the other.
            plan = [(floor, FLOOR, FloorCheck(), False), (one, ONE, NativeCheck(), False),
                    *(pair if round_ % 2 == 0 else pair[::-1])]
            for server, label, encoding, jwt_only in plan:
                row, run = _measure(load, server, label, encoding, round_ / o.rounds, o, jwt_only)
                row.round = round_
                result.rows.append(row)
                if label in sent:
                    sent[label] += [(i, p.sent) for i, p in enumerate(run.processes)]
                bench.say(_line(row))
    for label, codes in sent.items():
        if codes:
            result.seen[label], result.distinct[label] = _seen_before(traffic, o.processes, codes)
    return result


def _measure(load: MixLoad, server, label: str, encoding: CheckEncoding, cursor: float, o: MixOptions,
             jwt_only: bool) -> tuple[MixRow, RunResult]:
    from .run import settled

    row = MixRow(label, 0)
    cerbos_counted = label == CERBOS
    counted = bool(server.metrics_urls) and not cerbos_counted
    before = h2.scrape(server.metrics_urls) if counted else {}
    recalled_before = h2.scrape(server.metrics_urls, *RECALLED) if counted else {}
    cerbos_before = cerbos.scrape(server.metrics_urls[0]) if cerbos_counted else Counter()
    cpu: list[float] = []
    spec = RunSpec(server.target, encoding, time.time() + START_DELAY, o.seconds, o.warmup, o.inflight,
                   connections=o.connections, cursor=cursor, jwt_only=jwt_only)
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
    if cerbos_counted:
        # Every call of the run has ended (the load waits for each); a reading that still moves is waited out.
        after = settled(lambda: cerbos.scrape(server.metrics_urls[0]), limit=3.0)
        counters, problems = mix_cerbos.counters_checked(cerbos_before, after, row.outcomes)
        row.problems += problems
        verdicts = ", ".join(f"{verdict} {count:,}" for verdict, count in sorted(row.outcomes.items()))
        row.verified = (f"{answered:,} answers checked against the expected effect ({verdicts}), "
                        f"{run.mismatches} mismatches; {counters}")
    elif counted:
        delta, _ = h2.counter_delta(before, h2.scrape(server.metrics_urls))
        recalled, _ = h2.counter_delta(recalled_before, h2.scrape(server.metrics_urls, *RECALLED))
        row.recalled = recalled.get(("native",), 0)
        row.counted = sum(delta.values())
        expected = expected_decisions(row.outcomes)
        if delta != expected:
            row.problems.append(f"server counted {_decisions(delta)}; the load saw {_decisions(expected)}")
        row.verified = (f"{answered:,} answers checked, {run.mismatches} mismatches; the server's decision counter "
                        f"moved by the same {row.counted:,} ({_decisions(delta)})")
    else:
        row.verified = f"{answered:,} answers checked (the constant allow), {run.mismatches} mismatches"
    return row, run


RECALLED = ("tollgate_checks_recalled_total", ("adapter",))


def expected_decisions(outcomes: Counter) -> Counter:
    """The load's verdicts ("allow", "deny:<reason>") as the server's decision counter counts them."""
    expected: Counter = Counter()
    for verdict, count in outcomes.items():
        decision, _, reason = verdict.partition(":")
        expected[("native", decision, reason)] += count
    return expected


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
    return (f"    mix {row.server:<19} round {row.round + 1}: {row.throughput:6.0f}/s  p50 {_us(row.p50)} µs  "
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
    if result.jwt_share:
        add(f"- JWT share (the rows marked so; Cerbos has no API keys): {result.jwt_share}. {result.cerbos} "
            "(npm `@cerbos/cerbos-linux-x64`, its verified-token cache as shipped: 256 tokens) answers it as "
            "CheckResources calls: the token as `auxData.jwt` checked against its issuer's key set (the RS256 and "
            "the ES256 issuers' JWKS as two local key sets), the partner as the principal with its grants, the "
            "user or organization as the resource with its active partners (the relation data the caller looks "
            "up and hands over), a CEL rule per action (issuer, audience, `client_id` = principal, the "
            "permission in the token's scope and in the grants, the partner among the active partners). "
            "*Tollgate 1 worker, JWT share* is another Tollgate server sent the same requests in the same "
            "rounds (the two alternate which goes first). The API-key requests are left out of the comparison "
            "rather than handed to Cerbos as principals already resolved, which would spare Cerbos the key "
            "lookup Tollgate does")
    elif result.cerbos:
        add(f"- Cerbos {result.cerbos}")
    add("")
    add("| server | checks/s | / floor | p50 µs | p99 µs | p99 / floor's | p99.9 µs | server CPU µs/check | "
        "server cores | load CPU µs/call | load cores | decision memo hits |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    floors = {row.round: row for row in result.rounds(FLOOR)}
    for server in (FLOOR, ONE, ONE_JWT, CERBOS):
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
        add(f"| {NAMES[server]} | {_median([r.throughput for r in rows]) or 0:,.0f} | "
            f"{'' if server == FLOOR else _fixed(_median(ratios))} | {_us(_median([r.p50 for r in rows]))} | "
            f"{_us(_median([r.p99 for r in rows]))} | {'' if server == FLOOR else _fixed(_median(tails))} | "
            f"{_us(_median([r.p999 for r in rows]))} | {_us(_median([r.cpu_per_check for r in rows]))} | "
            f"{_fixed(_median([(r.server_cpu or 0) / s for r, s in zip(rows, seconds, strict=True)]))} | "
            f"{_us(_median([r.load_cpu_per_call for r in rows]))} | "
            f"{_fixed(_median([r.load_cpu / s for r, s in zip(rows, seconds, strict=True)]))} | {memo} |")
    add("")
    add("Medians over the rounds; `/ floor` and `p99 / floor's` are medians of the per-round ratios. Per round: "
        + "; ".join(f"{row.server} {row.round + 1}: {row.throughput:,.0f}/s p99 {_us(row.p99)} µs" for row in
                    result.rows))
    if result.rounds(CERBOS):
        _cerbos_ratios(result, add)
    for label, d in result.distinct.items():
        add(f"- sent to {NAMES[label]} over the rounds: {d['requests']:,} requests, {d['API keys']:,} distinct API "
            f"keys, {d['JWT clients']:,} JWT clients with {d['JWT tokens']:,} distinct tokens, {d['relations']:,} "
            "distinct relations")
        s = result.seen[label]
        add(f"- already sent before to the same server (from the requests sent; the fact cache's own hits are not "
            f"exported): the credential {s['credential']:.1%}, the relation {s['relation']:.1%}, the whole request "
            f"{s['request']:.1%} — the decision memo answered {_memo_share(result, label)} (it keeps at most "
            "10,000)")
    for note in result.notes:
        add(f"- {note}")
    for row in result.rows:
        add(f"- verified, {row.server} round {row.round + 1}: {row.verified}"
            + (" **MISMATCH: " + "; ".join(row.problems) + "**" if row.problems else ""))
    add("")


def _cerbos_ratios(result: MixResult, add: Callable[[str], None]) -> None:
    """Tollgate / Cerbos on the JWT share, per round and the median."""
    tollgate = {row.round: row for row in result.rounds(ONE_JWT)}
    pairs = [(tollgate[row.round], row) for row in result.rounds(CERBOS) if row.round in tollgate]

    def ratios(value: Callable[[MixRow], float | None], cerbos_over_tollgate: bool = False) -> list[float]:
        found = []
        for ours, theirs in pairs:
            top, bottom = (value(theirs), value(ours)) if cerbos_over_tollgate else (value(ours), value(theirs))
            if top is not None and bottom:
                found.append(top / bottom)
        return found

    add("")
    add("| JWT share: ratio (per round, then the median) | rounds | median |")
    add("|---|---|---:|")
    for name, values, aim in (
            ("checks/s, Tollgate / Cerbos", ratios(lambda r: r.throughput), CERBOS_AIM),
            ("server CPU per check, Cerbos / Tollgate", ratios(lambda r: r.cpu_per_check, True), None),
            ("p50, Cerbos / Tollgate", ratios(lambda r: r.p50, True), None),
            ("p99, Cerbos / Tollgate", ratios(lambda r: r.p99, True), None)):
        median = _median(values)
        verdict = f" (target ≥ {aim:g}: {'met' if median >= aim else 'not met'})" if aim and median else ""
        add(f"| {name} | {', '.join(f'{v:.2f}' for v in values) or 'n/a'} | {_fixed(median)}{verdict} |")
    add("")
    add("Unpinned, Cerbos's Go runtime spreads over both cores while a Tollgate worker uses at most about one, "
        "and both share the machine with the load: server CPU per check is the machine-independent comparison.")


def _memo_share(result: MixResult, label: str) -> str:
    rows = result.rounds(label)
    counted = sum(r.counted for r in rows)
    return f"{sum(r.recalled for r in rows) / counted:.1%}" if counted else "n/a"


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
