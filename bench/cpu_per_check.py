"""Server CPU per check, Tollgate against the floor, interleaved: the number issue 4 is judged by.

    .venv/bin/python -m bench.cpu_per_check                    # sqlite small store, sat, 5 rounds of 3 s
    .venv/bin/python -m bench.cpu_per_check --mode c1 --rounds 3 --store postgres
    .venv/bin/python -m bench.cpu_per_check --profile a        # + a py-spy profile of the server on (a)
    git archive HEAD~3 service | tar -x -C /tmp/base            # an older `service/` to compare with:
    .venv/bin/python -m bench.cpu_per_check --baseline /tmp/base
    .venv/bin/python -m bench.cpu_per_check --cache-off --baseline /tmp/base   # the miss path

`make bench` measures every scenario once, floor first, so a burst of other load on the shared
machine lands on one side of the ratio. Here the floor and one Tollgate worker run side by side
(each idle while the other is measured) and the rows alternate floor, (a), (b), floor ext_authz,
(e) for several rounds; the report gives each row's median server CPU µs per call (user + system
from /proc/<pid>/stat, as in bench/run.py), and the median over rounds of its ratio to the floor row
of the same API and round (adjacent in time, so both saw about the same machine). With
`--baseline DIR`, a third server runs DIR's `service/` package (same store, same generated code)
and its rows (a-base, …) follow each of ours: before/after in one run.
Throughput on one GIL-bound core is about floor CPU / our CPU, so the ratio is the target's
inverse (≤ 1.25 for ≥ 80 % of the floor's throughput).

The store is the small one (bench/seed.py): every measured check is a fact-cache hit, which is
what the steady state of a gateway looks like and what the store size does not change.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.affinity import cpu_for

from . import pinning
from . import run as bench_run
from . import seed as seeding
from .load import LoadGenerator, Scenario
from .run import Server, build_scenarios, floor_scenarios, floor_server, tollgate

ROWS = (("floor", "floor"), ("tollgate", "a"), ("tollgate", "b"), ("floor", "floor-ext"), ("tollgate", "e"))
FLOOR_OF = {"a": "floor", "b": "floor", "e": "floor-ext"}


def rows(baseline: bool) -> list[tuple[str, str]]:
    """(server, row key) in measuring order; a baseline row right after ours."""
    out = []
    for name, key in ROWS:
        out.append((name, key))
        if baseline and name == "tollgate":
            out.append(("baseline", key + "-base"))
    return out


@contextlib.contextmanager
def baseline_server(directory: Path, url: str, log_dir: Path, *, cache: bool = True):
    """bench.run's Tollgate server, started from `directory` (python -m service runs the package
    in its working directory)."""
    root = bench_run.PROJECT_ROOT
    bench_run.PROJECT_ROOT = directory
    try:
        manager = tollgate("baseline", url, log_dir, cache=cache)
        server = manager.__enter__()
    finally:
        bench_run.PROJECT_ROOT = root
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


def profile(server: Server, load: LoadGenerator, scenario: Scenario, seconds: float, output: Path) -> None:
    """py-spy (from PyPI, not a project dependency) over one saturated row; its output file is a
    flame-graph-ready "raw" stack count list."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    recorder = subprocess.Popen([py_spy, "record", "--pid", str(server.process.pid), "--format", "raw",
                                 "--rate", "500", "--gil", "--duration", str(int(seconds) + 1), "--output", str(output),
                                 "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        load.run(server.target, scenario, mode="sat", seconds=seconds, warmup=0.5)
    finally:
        recorder.wait(timeout=seconds + 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_check", description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--mode", choices=("sat", "c1"), default="sat")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per row (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--distinct", type=int, default=500)
    parser.add_argument("--profile", choices=("a", "b", "e"), help="also record a py-spy profile of this scenario")
    parser.add_argument("--profile-output", type=Path, default=Path("/tmp/tollgate-profile.txt"))
    parser.add_argument("--baseline", type=Path, help="a directory holding another `service/` to measure too")
    parser.add_argument("--cache-off", action="store_true",
                        help="Tollgate (and the baseline) with TOLLGATE_CACHE_MAX_ENTRIES=0: the miss path")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 0 < args.seconds <= 60:
        parser.error("--rounds must be 1..50 and --seconds in (0, 60]")

    order = rows(args.baseline is not None)
    cpu: dict[str, list[float]] = {key: [] for _, key in order}
    rate: dict[str, list[float]] = {key: [] for _, key in order}
    log_dir = Path(tempfile.mkdtemp(prefix="tollgate-cpu-"))
    try:
        with seeding.fresh_database(args.store) as url, contextlib.ExitStack() as stack:
            seeded = seeding.seed(url, seeding.SMALL, log=lambda _line: None)
            scenarios = build_scenarios(seeded, args.distinct)
            scenarios.update(floor_scenarios(scenarios))
            load = stack.enter_context(LoadGenerator(2))
            servers = {"floor": stack.enter_context(floor_server(log_dir)),
                       "tollgate": stack.enter_context(tollgate("cpu", url, log_dir, cache=not args.cache_off))}
            if args.baseline:
                servers["baseline"] = baseline = stack.enter_context(
                    baseline_server(args.baseline.resolve(), url, log_dir, cache=not args.cache_off))
                # On the CPU this tree's server and the floor run on (each pins itself, a tree from
                # before TOLLGATE_PIN_WORKERS does not): all three are measured alike.
                server_cpu = cpu_for(0, os.sched_getaffinity(0))
                if server_cpu is not None:
                    pinning.pin([baseline.process.pid], server_cpu)
            for name, key in order:  # every credential seen once: the rows measure cache hits
                load.run(servers[name].target, scenarios[key.removesuffix("-base")], mode="c1", seconds=0.2,
                         warmup=0, prime=True)
            for round_ in range(args.rounds):
                for name, key in order:
                    server, scenario = servers[name], scenarios[key.removesuffix("-base")]
                    m = load.run(server.target, scenario, mode=args.mode, seconds=args.seconds,
                                 warmup=args.warmup, cpu_probe=server.cpu_seconds)
                    problems = m.problems(scenario.expect)
                    if problems:
                        raise SystemExit(f"{key}: {'; '.join(problems)}")
                    if m.cpu_per_call is None:  # cpu_probe was given: only a failed probe leaves it unset
                        raise SystemExit(f"{key}: the server's CPU time could not be read")
                    cpu[key].append(m.cpu_per_call * 1e6)
                    rate[key].append(m.throughput)
                print(f"round {round_ + 1}: " + "  ".join(f"{k} {cpu[k][-1]:.0f}" for _, k in order), flush=True)
            if args.profile:
                profile(servers["tollgate"], load, scenarios[args.profile], 10.0, args.profile_output)
                print(f"py-spy profile of ({args.profile}) in {args.profile_output}")
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)

    print(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')}  store {args.store}, mode {args.mode}, {args.rounds} rounds "
          f"× {args.seconds:g} s{', cache off' if args.cache_off else ''}; medians over the rounds")
    print("| row | server CPU µs/check | CPU / floor | checks/s | checks/s / floor |")
    print("|---|---:|---:|---:|---:|")
    for _, key in order:
        base = FLOOR_OF.get(key.removesuffix("-base"))
        ratio = speed = "—"
        if base:  # per round against the floor row of the same round, then the median
            ratio = f"{statistics.median(c / f for c, f in zip(cpu[key], cpu[base], strict=False)):.2f}"
            speed = f"{statistics.median(r / f for r, f in zip(rate[key], rate[base], strict=False)):.2f}"
        print(f"| {key} | {statistics.median(cpu[key]):.0f} | {ratio} | {statistics.median(rate[key]):,.0f} | "
              f"{speed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
