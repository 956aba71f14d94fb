"""Part `coldstart`: a restarted replica of the full store under the mix's traffic from its first call.

A fresh Tollgate server (1 worker) is started on the seeded store; as soon as its gRPC port answers,
the mix's load processes (bench/mix_load.py, with traffic of their own: new token strings) send the
mix at a fixed rate in open loop (calls started on a schedule, whatever the answers do), by default
60 % of the throughput the mix part measured on this store (`--coldstart-rate` to set it), so the
queueing of saturation cannot hide a slow start or be mistaken for one. Each call's latency counts
from its scheduled start. The report compares the first 10 s of traffic with seconds 30-40 (steady
state): p50, p99, max, and the per-second p99 of the first seconds; plus the time from spawning the
process to its port answering and to its first answer. Every answer is checked against its
request's expected decision, and the server's decision counter must move by the same.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import h2load as h2
from . import seed as seeding
from .load import nearest_rank
from .mix import RECALLED, MixOptions, build_traffic, expected_decisions
from .mix_load import MixLoad, NativeCheck, RunSpec

DEFAULT_RATE = 1_000.0  # checks/s when the mix part did not run on the store
RATE_SHARE = 0.6  # of the mix's measured throughput
EARLY = (0.0, 10.0)  # seconds of traffic
STEADY = (30.0, 40.0)


@dataclass
class ColdStartOptions:
    rate: float | None = None  # checks/s in all; None: RATE_SHARE of the mix's throughput
    seconds: float = 40.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coldstart-rate", type=float, help="checks/s of the cold-start load (default: 60 %% of "
                        f"the mix's measured throughput, else {DEFAULT_RATE:,.0f})")
    parser.add_argument("--coldstart-seconds", type=float, default=40.0,
                        help="seconds of cold-start load (default 40: the first 10 against seconds 30-40)")


def options_from(args: argparse.Namespace, error: Callable[[str], None]) -> ColdStartOptions:
    if args.coldstart_rate is not None and not 10 <= args.coldstart_rate <= 20_000:
        error("--coldstart-rate must be 10..20,000")
    if not 10 <= args.coldstart_seconds <= 300:
        error("--coldstart-seconds must be 10..300")
    return ColdStartOptions(args.coldstart_rate, args.coldstart_seconds)


@dataclass
class Window:
    name: str
    calls: int = 0
    failed: int = 0  # not the expected decision, an error, or not sent
    p50: float | None = None
    p99: float | None = None
    maximum: float | None = None


@dataclass
class ColdStartResult:
    rate: float
    rate_source: str
    seconds: float
    to_port: float = 0.0  # spawn to the gRPC port answering, seconds
    to_first_answer: float | None = None  # spawn to the first answered call
    windows: list[Window] = field(default_factory=list)
    per_second_p99: list[tuple[int, float | None, int]] = field(default_factory=list)  # (second, p99, calls)
    # Sampled every second of traffic: (second, server cores, checks decided, of which from the memo).
    server_seconds: list[tuple[int, float, int, int]] = field(default_factory=list)
    load_cpu: float = 0.0
    server_cpu: float = 0.0
    not_sent: int = 0
    verified: str = ""
    problems: list[str] = field(default_factory=list)


def measure(bench, store: str, url: str, seeded: seeding.Seeded, mix_throughput: float | None) -> ColdStartResult:
    o: ColdStartOptions = bench.options.coldstart
    mix: MixOptions = bench.options.mix
    if o.rate:
        rate, source = o.rate, "--coldstart-rate"
    elif mix_throughput:
        rate, source = RATE_SHARE * mix_throughput, f"{RATE_SHARE:.0%} of the mix's {mix_throughput:,.0f}/s"
    else:
        rate, source = DEFAULT_RATE, "the default (the mix part did not run)"
    result = ColdStartResult(rate, source, o.seconds)
    traffic = build_traffic(seeded, mix, lasting=o.seconds + 180, say=bench.say)
    bench.say(f"[{store}] cold start: a fresh Tollgate 1 worker, {rate:,.0f} checks/s in open loop for "
              f"{o.seconds:g} s from its first answer")
    with MixLoad(mix.processes, traffic) as load:
        spawned = time.time()
        with bench.tollgate(f"{store}-coldstart", url, metrics=True) as server:
            result.to_port = time.time() - spawned
            start_at = time.time() + 0.05
            cpu_before = server.cpu_seconds()
            before = h2.scrape(server.metrics_urls)
            spec = RunSpec(server.target, NativeCheck(), start_at, o.seconds, rate=rate / mix.processes,
                           connections=mix.connections)
            stop = threading.Event()
            sampler = threading.Thread(target=_sample, args=(server, start_at, o.seconds, stop,
                                                             result.server_seconds), daemon=True)
            sampler.start()
            try:
                run = load.run(spec)
            finally:
                stop.set()
                sampler.join(timeout=10)
            result.server_cpu = server.cpu_seconds() - cpu_before
            delta, _ = h2.counter_delta(before, h2.scrape(server.metrics_urls))
    result.load_cpu = run.load_cpu
    # Every call's (scheduled start, latency): nan when it failed or was not sent.
    calls = sorted((s, lat) for p in run.processes for s, lat in zip(p.starts, p.latencies, strict=True))
    answered = [s + lat for s, lat in calls if not math.isnan(lat)]
    if answered:
        result.to_first_answer = start_at - spawned + min(answered)
    result.not_sent = sum(p.not_sent for p in run.processes)
    for name, (low, high) in (("first 10 s", EARLY), ("seconds 30-40", STEADY)):
        result.windows.append(_window(name, [lat for s, lat in calls if low <= s < high]))
    for second in range(min(int(o.seconds), 12)):
        inside = sorted(lat for s, lat in calls if second <= s < second + 1 and not math.isnan(lat))
        result.per_second_p99.append((second, nearest_rank(inside, 99) if inside else None, len(inside)))
    outcomes = run.outcomes
    if run.mismatches:
        result.problems.append(f"{run.mismatches:,} answers not the expected decision, e.g. "
                               + "; ".join(run.examples))
    if result.not_sent:
        result.problems.append(f"{result.not_sent:,} calls not sent ({MAX_NOTE})")
    expected = expected_decisions(outcomes)
    if delta != expected:
        result.problems.append(f"server counted {dict(delta)}; the load saw {dict(expected)}")
    result.verified = (f"{sum(outcomes.values()):,} answers checked, {run.mismatches} mismatches; the server's "
                       f"decision counter moved by the same {sum(delta.values()):,}")
    bench.say(_summary(result))
    return result


def _sample(server, start_at: float, seconds: float, stop: threading.Event,
            into: list[tuple[int, float, int, int]]) -> None:
    """Every second of traffic: the server's CPU (cores) and the checks it decided and recalled in it,
    read from /proc and its metrics port (a scrape a second costs the server little)."""
    def read() -> tuple[float, int, int]:
        checks = h2.scrape(server.metrics_urls)
        recalled = h2.scrape(server.metrics_urls, *RECALLED)
        return (server.cpu_seconds(), sum(sum(c.values()) for c in checks.values()),
                sum(sum(c.values()) for c in recalled.values()))

    time.sleep(max(0.0, start_at - time.time()))
    last = read()
    for second in range(int(seconds)):
        if stop.wait(max(0.0, start_at + second + 1 - time.time())):
            return
        now = read()
        into.append((second, now[0] - last[0], now[1] - last[1], now[2] - last[2]))
        last = now


MAX_NOTE = "more calls outstanding than the load keeps: the server had stalled"


def _window(name: str, latencies: list[float]) -> Window:
    good = sorted(lat for lat in latencies if not math.isnan(lat))
    window = Window(name, len(latencies), len(latencies) - len(good))
    if good:
        window.p50, window.p99, window.maximum = nearest_rank(good, 50), nearest_rank(good, 99), good[-1]
    return window


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:,.1f}"


def _summary(result: ColdStartResult) -> str:
    parts = [f"{w.name}: p50 {_ms(w.p50)} ms p99 {_ms(w.p99)} ms max {_ms(w.maximum)} ms ({w.calls:,} calls)"
             for w in result.windows]
    flag = "" if not result.problems else "  MISMATCH: " + "; ".join(result.problems)
    return (f"    cold start: port after {result.to_port:.2f} s, first answer after {_s(result.to_first_answer)} s; "
            + "; ".join(parts) + flag)


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f}"


def cold_start_table(result: ColdStartResult, add: Callable[[str], None]) -> None:
    add(f"### Cold start: a fresh Tollgate 1 worker under the mix at {result.rate:,.0f} checks/s "
        f"({result.rate_source}), open loop\n")
    add(f"- spawn → gRPC port answering: {result.to_port:.2f} s; spawn → first answer: "
        f"{_s(result.to_first_answer)} s; latencies count from each call's scheduled start")
    add("")
    add("| window (seconds of traffic) | calls | failed or not sent | p50 ms | p99 ms | max ms |")
    add("|---|---|---|---|---|---|")
    for w in result.windows:
        add(f"| {w.name} | {w.calls:,} | {w.failed:,} | {_ms(w.p50)} | {_ms(w.p99)} | {_ms(w.maximum)} |")
    early, steady = [*result.windows, Window(""), Window("")][:2]
    ratio = f"{early.p99 / steady.p99:.2f}" if early.p99 and steady.p99 else "n/a"
    add("")
    add(f"- p99 of the first 10 s / p99 of seconds 30-40: {ratio}")
    add("- p99 per second of traffic (ms, calls): " + ", ".join(
        f"{second}: {_ms(p99)} ({count:,})" for second, p99, count in result.per_second_p99))
    add("- per second of traffic, server cores / checks decided / share from the decision memo: " + ", ".join(
        f"{second}: {cores:.2f} / {checks:,} / {recalled / checks:.0%}" if checks else f"{second}: {cores:.2f} / 0"
        for second, cores, checks, recalled in result.server_seconds[:12]))
    later = [s for s in result.server_seconds if STEADY[0] <= s[0] < STEADY[1]]
    if later:
        cores = sum(s[1] for s in later) / len(later)
        checks = sum(s[2] for s in later)
        add(f"- seconds 30-40: server {cores:.2f} cores, {checks / len(later):,.0f} checks/s, "
            f"{sum(s[3] for s in later) / checks if checks else 0:.0%} from the decision memo")
    add(f"- server CPU over the run {result.server_cpu:.1f} s; load CPU {result.load_cpu:.1f} s")
    add(f"- verified: {result.verified}" + (" **MISMATCH: " + "; ".join(result.problems) + "**"
                                           if result.problems else ""))
    add("")
