"""The miss path and Cerbos, beside Tollgate's cached (b), in the h2load part's interleaved rounds.

Three ways of answering scenario (b) (RS256 token of an external issuer + scope `user:read` + an
active partner-user relation), each measured once per round at saturation and at concurrency 1:

- *1 worker* (the h2load part's own row): Tollgate with its caches, the steady state;
- *1 worker, miss path*: Tollgate with `TOLLGATE_CACHE_MAX_ENTRIES=0` (no fact cache, no decision
  memo, no verified-token cache): every call verifies the signature and reads the partner, the
  revocation state and the relation from the store;
- *Cerbos* and *Cerbos, JWT cache off*: the real Cerbos PDP deciding the same request
  (bench/cerbos.py), with its verified-token cache as shipped and turned off.

The table (`comparison_table`) gives each row's median throughput, latency and server CPU per call,
and the per-round ratios miss / Cerbos and cached / Cerbos with their medians. Tollgate's rows are
verified as every h2load row is (Bench.h2_measure); Cerbos's as bench/cerbos.py describes.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.keys import jwks

from . import cerbos, pinning
from . import h2load as h2
from . import seed as seeding
from .load import Scenario
from .run import (
    MIN_SHARE,
    Bench,
    H2Row,
    Options,
    Server,
    StoreResult,
    _count,
    _fixed,
    _median_of,
    _round_ratios,
    _spawn,
    _us,
    free_port,
    settled,
    stop,
)

CACHED, MISS = "1 worker", "1 worker, miss path"
CERBOS, CERBOS_NO_CACHE = "Cerbos", "Cerbos, JWT cache off"
C1 = " (c1)"
# Issue 16's aim for the miss path: at least this share of Cerbos's throughput, per store.
MISS_PATH_AIM = {"sqlite": 1.0, "postgres": 0.8}


@dataclass
class CerbosRows:
    """The servers and bodies of the comparison, for one store's h2load part."""

    bench: Bench
    result: StoreResult
    b: Scenario
    miss: Server
    baselines: dict[str, Server] = field(default_factory=dict)  # Cerbos servers by row label
    bodies: list[cerbos.Body] = field(default_factory=list)  # allows, then the deliberately denied body
    scenario: Scenario | None = None

    def measure(self, round_: int) -> None:
        """This round's rows: the miss path and each Cerbos at saturation, then at concurrency 1."""
        for concurrency_one in (False, True):
            suffix = C1 if concurrency_one else ""
            self.bench.h2_measure(self.result, self.miss, MISS + suffix, self.b, round_=round_,
                                  concurrency_one=concurrency_one)
            for label, server in self.baselines.items():
                self.measure_cerbos(server, label + suffix, round_, concurrency_one)

    def measure_cerbos(self, server: Server, label: str, round_: int, concurrency_one: bool) -> H2Row:
        """One Cerbos row, as Bench.h2_measure measures Tollgate's: the grpcio check of every body
        (and of the denied one), a warm-up (-D) that gives the rate, a count-based measured run,
        Cerbos's call counters read around it."""
        bench, o = self.bench, self.bench.options
        assert self.scenario is not None
        seconds = o.h2_seconds
        row = H2Row(self.result.store, label, self.scenario, round_)
        self.result.h2_rows.append(row)
        allows = [body for body in self.bodies if body.allow][:1 if concurrency_one else o.h2_bodies]
        denied = [body for body in self.bodies if not body.allow]
        row.problems += cerbos.check_bodies(server.target, allows + denied)
        bodies = [(body.path, body.request) for body in allows]
        url = server.metrics_urls[0]
        tag = f"{label}-{round_}".replace(", ", "-").replace(" ", "-").replace("(", "").replace(")", "")
        ok = ("calls", "OK")

        before = cerbos.scrape(url)
        warmup = max(o.warmup, 0.5)
        warm = h2.Summary(bench._h2_run(self.result, server, self.scenario, bodies, f"{tag}-warmup",
                                        concurrency_one, duration=warmup).wait(warmup + 30))
        row.problems += [f"warm-up: {problem}" for problem in warm.problems()]
        delta = cerbos.counter_delta(before, cerbos.scrape(url))
        if not warm.succeeded <= delta[ok] <= warm.started:
            row.problems.append(f"warm-up: Cerbos counted {delta[ok]:,} OK calls, h2load {warm.succeeded:,} "
                                f"succeeded of {warm.started:,} started")
        if not warm.throughput:
            bench._h2_say(row)
            return row
        rate = warm.throughput
        check = (f"grpcio check of the {len(allows)} bod{'y' if len(allows) == 1 else 'ies'}: EFFECT_ALLOW, "
                 f"and of {len(denied)} denied: EFFECT_DENY")
        for attempt in range(2):
            requests = max(2 if concurrency_one else o.h2_connections * o.h2_streams * 2, round(rate * seconds))
            before = settled(lambda: cerbos.scrape(url))  # calls the warm-up cut may still be decided
            cpu_before = server.cpu_seconds()
            run = bench._h2_run(self.result, server, self.scenario, bodies, f"{tag}-measured-{attempt}",
                                concurrency_one, requests=requests)
            stats = run.wait(3 * seconds + 30)
            row.server_cpu = server.cpu_seconds() - cpu_before
            row.requests = run.requested
            row.summary = summary = h2.Summary(stats)
            row.problems += summary.problems(run.requested)
            delta = cerbos.counter_delta(before, cerbos.scrape(url))
            row.checks = delta.pop(ok, 0)
            engine = delta.pop(("engine", "success"), 0)
            if row.checks != summary.succeeded:
                row.problems.append(f"Cerbos counted {row.checks:,} OK CheckResources calls, h2load "
                                    f"{summary.succeeded:,} succeeded")
            if engine != summary.succeeded:
                row.problems.append(f"Cerbos counted {engine:,} successful engine checks, h2load "
                                    f"{summary.succeeded:,} succeeded")
            if delta:
                row.problems.append("unexpected counts " + ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))
            row.verified = (f"{check}; Cerbos counted {row.checks:,} OK CheckResources calls and {engine:,} "
                            f"successful engine checks = h2load {summary.succeeded:,} succeeded, "
                            f"{sum(delta.values())} other")
            if row.problems or summary.seconds >= MIN_SHARE * seconds or not summary.throughput:
                break
            self.bench.say(f"    (h2load {label}: the run took {summary.seconds:.1f} s of {seconds:g}; once more, "
                           "sized from its rate)")
            rate = summary.throughput
        bench._h2_say(row)
        return row


@contextmanager
def cerbos_rows(bench: Bench, result: StoreResult, url: str, seeded: seeding.Seeded,
                scenarios: dict[str, Scenario]) -> Iterator[CerbosRows]:
    """The miss-path server and the Cerbos servers (left out, with a note, when the binary is
    missing), running for the h2load part of one store; pinned with --pin."""
    b = scenarios["b"]
    with ExitStack() as stack:
        miss = stack.enter_context(bench.tollgate(f"{result.store}-h2load-miss", url, metrics=True, cache=False))
        bench.pin(miss)
        rows = CerbosRows(bench, result, b, miss)
        try:
            binary = cerbos.binary()
        except cerbos.CerbosMissing as error:
            result.notes.append(f"Cerbos rows left out: {error}")
            bench.say(f"[{result.store}] Cerbos rows left out: {error}")
            binary = None
        if binary is None:
            yield rows
            return
        rows.scenario = Scenario(b.key, "(b) as a Cerbos CheckResources: the RS256 JWT as auxData, a CEL rule on "
                                 "its scope and the user's related partners given in the request", "cerbos",
                                 b.requests, b.expect)
        work = bench.log_dir / f"cerbos-{result.store}"
        count = max(bench.options.h2_bodies, 1)
        rows.bodies = cerbos.write_bodies(work / "bodies", "b", b.requests[:count], seeded.size, denied=True)
        issuer = seeded.issuers["rsa"]
        for label, jwt_cache in ((CERBOS, True), (CERBOS_NO_CACHE, False)):
            rows.baselines[label] = stack.enter_context(
                cerbos_server(bench, binary, work / ("cached" if jwt_cache else "uncached"),
                              {cerbos.KEY_SET: jwks(seeded.signers["rsa"])},
                              cerbos.b_policies(issuer, seeding.AUDIENCE), jwt_cache))
        targets = ", ".join(server.target for server in rows.baselines.values())
        bench.say(f"[{result.store}] {cerbos.version(binary)} on {targets}")
        yield rows


@contextmanager
def cerbos_server(bench: Bench, binary: Path, work: Path, key_sets: dict[str, dict], policies: dict[str, str],
                  jwt_cache: bool) -> Iterator[Server]:
    """A Cerbos server on free ports with the policy files and local key sets given (see
    cerbos.write_config); pinned with --pin."""
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    config = cerbos.write_config(work, grpc_port=grpc_port, http_port=http_port, key_sets=key_sets,
                                 policies=policies, jwt_cache=jwt_cache)
    cpus = str(pinning.SERVER_CPU) if bench.options.pin else None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "LANG": os.environ.get("LANG", "C.UTF-8")}
    process, log_path = _spawn(f"cerbos-{work.name}", cerbos.command(binary, config, cpus), env, bench.log_dir)
    metrics_url = f"http://127.0.0.1:{http_port}/_cerbos/metrics"
    server = Server(f"Cerbos ({work.name})", process, grpc_port, log_path, (metrics_url,))
    try:
        cerbos.wait_ready(metrics_url, process, log_path)
        if bench.options.pin:
            bench.pinned.add(process.pid)
        yield server
    finally:
        stop(server)


# -- the table ----------------------------------------------------------------------------------

def comparison_table(result: StoreResult, options: Options, add: Callable[[str], None]) -> None:
    if not result.h2_rounds(MISS, "b"):
        return
    rounds = {label: result.h2_rounds(label, "b") for label in (CACHED, MISS, CERBOS, CERBOS_NO_CACHE)}
    pinned = ("servers pinned to CPU 0 and h2load to CPU 1 (`--pin`)" if options.pin
              else "not pinned (the scheduler spreads servers and h2load over the cores; `--pin` pins them)")
    binary = cerbos.BINARY
    version = cerbos.version(binary) if binary.is_file() else "Cerbos (missing)"
    add(f"### Miss path and Cerbos: (b) in the same h2load rounds ({len(rounds[MISS])}, interleaved)\n")
    add(f"The same request three ways, measured in every round beside each other, {pinned}: Tollgate with its "
        "caches (*1 worker*, the row above), Tollgate's miss path (`TOLLGATE_CACHE_MAX_ENTRIES=0`: no fact cache, no "
        "decision memo, no verified-token cache, so every call verifies the RS256 signature and reads the partner, "
        f"the revocation state and the relation from the store), and {version} (npm `@cerbos/cerbos-linux-x64`): "
        "CheckResources with the token as `auxData.jwt` (verified against the issuer's JWKS in a local key set), "
        "a resource policy whose CEL rule requires the issuer, the audience, scope `user:read` and the token's "
        "`client_id` among the user's `active_partners`, the relation data the request carries (as a caller of "
        "Cerbos would look it up). *Cerbos* runs as shipped (its cache of 256 verified tokens on: the bodies' "
        "tokens are verified once); *Cerbos, JWT cache off* (`auxData.jwt.cacheSize: -1`) verifies every call. "
        "Cerbos rows are verified by a grpcio call per body (EFFECT_ALLOW; one body with the partner left out of "
        "the relation data: EFFECT_DENY) and by Cerbos's metrics: `rpc_server_call_duration_seconds_count` for "
        "CheckResources with status OK and `cerbos_dev_engine_check_latency_milliseconds_count{status=\"success\"}` "
        "both moved by exactly h2load's succeeded count.\n")
    add("| server | checks/s | p50 | p99 | server CPU µs/call | c1 p50 | c1 p99 | rounds |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, rows in rounds.items():
        c1 = result.h2_rounds(label + C1, "b")
        add(f"| {label} (b) | {_count(_median_of(rows, lambda r: r.throughput))} | "
            f"{_us(_median_of(rows, lambda r: r.summary and r.summary.percentile(50)))} | "
            f"{_us(_median_of(rows, lambda r: r.summary and r.summary.percentile(99)))} | "
            f"{_us(_median_of(rows, lambda r: r.cpu_per_check))} | "
            f"{_us(_median_of(c1, lambda r: r.summary and r.summary.percentile(50)))} | "
            f"{_us(_median_of(c1, lambda r: r.summary and r.summary.percentile(99)))} | {len(rows)} |")
    add("")
    add("| ratio (per round, then the median) | rounds | median |")
    add("|---|---|---:|")
    aim = MISS_PATH_AIM.get(result.store)
    for top, bottom in ((MISS, CERBOS), (MISS, CERBOS_NO_CACHE), (CACHED, CERBOS), (CACHED, CERBOS_NO_CACHE)):
        ratios = _round_ratios(rounds[bottom], rounds[top], lambda r: r.throughput)
        median = statistics.median(ratios) if ratios else None
        verdict = ""
        if top == MISS and bottom == CERBOS and aim is not None and median is not None:
            verdict = f" (aim ≥ {aim:.1f}: {'met' if median >= aim else 'not met'})"
        add(f"| checks/s, {top} / {bottom} | {', '.join(f'{r:.2f}' for r in ratios) or 'n/a'} | "
            f"{_fixed(median)}{verdict} |")
    for top, bottom in ((MISS, CERBOS), (MISS, CERBOS_NO_CACHE), (CACHED, CERBOS)):
        ratios = _round_ratios(rounds[bottom], rounds[top], lambda r: r.cpu_per_check)
        add(f"| server CPU per call, {top} / {bottom} | {', '.join(f'{r:.2f}' for r in ratios) or 'n/a'} | "
            f"{_fixed(statistics.median(ratios) if ratios else None)} |")
    add("")
