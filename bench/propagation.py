"""A change reaching another replica: the time from a committed change to the other server's
answer reflecting it, on PostgreSQL, with the push (LISTEN/NOTIFY) on and off.

    .venv/bin/python -m bench.propagation                  # 50 trials with the push, 10 without
    .venv/bin/python -m bench.propagation --trials 200

A real server (`python -m service serve`, one worker) and this process share one PostgreSQL
database; this process makes each change through the store, as another replica or an admin command
on another machine would: it suspends a partner, then asks the server for a check of that
partner's API key every millisecond until it is denied (token_revoked), then reactivates the
partner and waits for the server to allow again. The server keeps its fact cache and decision memo
on and has answered the check before each change, so its answer comes from its caches until they
are invalidated. The poll interval is set long (30 s) for the push rows, so only the push can
explain a fast change; the rows without the push use the default poll (0.5 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from service.domain.model import PartnerStatus
from service.store import create_store
from service.tokens import new_key_encryption_key

from . import run as bench_run
from . import seed as seeding

WAIT_LIMIT_SECONDS = 10.0
TRIALS, POLL_TRIALS = 50, 10


def measure(trials: int, push: bool, url: str, api_keys: list[tuple[str, str]], log_dir: Path,
            say: Callable[[str], None], kek: str | None = None) -> list[float]:
    """Milliseconds from each committed suspension to the server's deny, over `trials` partners.
    `kek`: the key-encryption key of the store's signing key, when other servers made one."""
    settings = ({"TOLLGATE_CACHE_REFRESH_SECONDS": "30"} if push
                else {"TOLLGATE_REVISION_PUSH": "off", "TOLLGATE_CACHE_REFRESH_SECONDS": "0.5"})
    kek = kek or new_key_encryption_key()
    store = create_store(url)
    latencies: list[float] = []
    with ExitStack() as stack:
        server = stack.enter_context(bench_run.tollgate(f"propagation-{push}", url, log_dir, kek=kek,
                                                        settings=settings))
        channel = stack.enter_context(grpc.insecure_channel(server.target))
        check = authorization_pb2_grpc.AuthorizationStub(channel).Check
        for partner_id, api_key in api_keys[:trials]:
            request = authorization_pb2.CheckRequest(api_key=api_key, operation="createCourtBooking")
            if not check(request, timeout=5).allowed:
                raise RuntimeError(f"{partner_id}'s key is not allowed before the change")
            with store.unit_of_work() as repos:
                repos.partners.set_status(partner_id, PartnerStatus.SUSPENDED)
            committed = time.perf_counter()
            latencies.append(1000 * _until(check, request, False, committed))
            with store.unit_of_work() as repos:
                repos.partners.set_status(partner_id, PartnerStatus.ACTIVE)
            _until(check, request, True, time.perf_counter())
    store.dispose()
    say(f"push {'on' if push else 'off'}: {summary(latencies)}")
    return latencies


def _until(check: Callable[..., authorization_pb2.CheckResponse], request: authorization_pb2.CheckRequest,
           allowed: bool, since: float) -> float:
    """Seconds from `since` until the server answers `request` with `allowed` (asked every
    millisecond, bounded)."""
    while check(request, timeout=5).allowed is not allowed:
        if time.perf_counter() - since > WAIT_LIMIT_SECONDS:
            raise RuntimeError(f"the change did not reach the other server within {WAIT_LIMIT_SECONDS:g} s")
        time.sleep(0.001)
    return time.perf_counter() - since


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return (f"{len(ordered)} trials, p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, "
            f"max {ordered[-1]:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=TRIALS, help=f"changes measured with the push (default {TRIALS})")
    parser.add_argument("--poll-trials", type=int, default=POLL_TRIALS,
                        help=f"changes measured without it (default {POLL_TRIALS})")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)

    def say(line: str) -> None:
        print(line, flush=True)

    with seeding.fresh_database("postgres") as url:
        seeded = seeding.seed(url, seeding.SMALL, oauth_clients=0, log=lambda _line: None)
        keys = list({partner: (partner, key) for partner, key in seeded.api_keys}.values())  # one per partner
        if len(keys) < max(args.trials, args.poll_trials):
            parser.error(f"the small store has {len(keys)} partners with keys")
        log_dir = Path(tempfile.mkdtemp(prefix="tollgate-propagation-"))
        say(f"{started:%Y-%m-%d %H:%M} UTC, PostgreSQL, one server (one worker) and this process as the writer")
        measure(args.trials, True, url, keys, log_dir, say)
        measure(args.poll_trials, False, url, keys[args.trials:] or keys, log_dir, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
