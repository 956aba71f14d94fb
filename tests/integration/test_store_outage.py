"""A store outage is UNAVAILABLE on Check and ManageRelation and a 503 error_response on ext_authz:
never an allow, never a crash, and service resumes without a restart."""

import threading
import time
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub
from sqlalchemy.engine import make_url
from tollgate.v1 import authorization_pb2 as apb
from tollgate.v1 import relations_pb2 as pb

from service.domain import opaque
from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.grpc_errors import call_error, expect_error
from tests.support.outage import DatabaseSwitch
from tests.support.tcp_proxy import TcpProxy
from tests.support.world import World, start_world, stop_world

SERVING, NOT_SERVING = HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING


@pytest.mark.postgres
def test_check_fails_closed_when_the_database_goes_away(postgres_url, postgres_admin_url, tmp_path):
    world = start_world(postgres_url, tmp_path, db_connect_timeout_seconds=2, cache_refresh_seconds=0.2)
    try:
        assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
        threads_before = threading.active_count()
        database = DatabaseSwitch(postgres_admin_url, postgres_url)
        database.cut()  # the store vanishes under the running server
        time.sleep(0.6)  # past the cache's staleness bound (2 x 0.2 s): cached facts are no longer used
        for _ in range(3):
            error = expect_error(world.check, "getUser", authorization=world.bearer("acme"), user_id="u-active")
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "store_unavailable")
            assert "postgres" not in error.message  # no URL, no driver text
        envoy = ext_authz_stub(world.channel).Check(ext_authz_request(
            "GET", "/v1/users/u-active", {"authorization": world.bearer("acme")}), timeout=10)
        assert envoy.HasField("error_response") and not envoy.HasField("ok_response")
        assert envoy.error_response.status.code == 503 and envoy.status.code == code_pb2.UNAVAILABLE
        assert envoy.dynamic_metadata["reason"] == "authorization_unavailable"
        error = expect_error(world.manage, "acme", request_user_relation=pb.RequestUserRelation(user_id="u-x"))
        assert error.code is grpc.StatusCode.UNAVAILABLE
        assert world.check("health").allowed, "public operations need no store"

        database.restore()  # and comes back: service resumes without a restart
        database.close()
        assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
        assert threading.active_count() <= threads_before + 2, "the outage leaked threads"
    finally:
        stop_world(world)


# -- network faults, under load, through a TCP proxy in front of PostgreSQL ---------------------
#
# The server's database URL points at tests/support/tcp_proxy.py. cut() is a network that drops
# every connection and refuses new ones; stall() is one that hangs: connections stay open, nothing
# is answered (the server never even sees the query), as when a firewall or load balancer in
# between stops forwarding. PostgreSQL only: SQLite has no network to lose.

LOAD_THREADS = 6
REFRESH = 0.2
FAULT_SETTINGS = dict(
    cache_refresh_seconds=REFRESH, health_check_seconds=0.2, max_workers=8, db_pool_size=4,
    db_pool_timeout_seconds=1, db_connect_timeout_seconds=1,
    db_statement_timeout_seconds=1)  # the watchdog cuts a silent connection after 1 + 1 s
WATCHDOG_SECONDS = 2.0
# Cached facts are used at most 2 x the refresh interval after the store last answered.
CACHE_BOUND = 2 * REFRESH


@dataclass(frozen=True)
class Call:
    kind: str  # "hit": a cached credential; "miss": one never seen (always reads the store); "envoy"
    started: float
    ended: float
    outcome: str  # "allowed", "denied:<reason>", "<GRPC_CODE>:<reason>", or "envoy:<http status>"


class Load:
    """LOAD_THREADS clients calling Check (cache hits and misses) and ext_authz in a loop, each
    call with `deadline` seconds; every call is recorded."""

    def __init__(self, world: World, deadline: float) -> None:
        self._world, self._deadline = world, deadline
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
                         for i in range(LOAD_THREADS)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._deadline + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a client call never ended"

    def between(self, start: float, end: float = float("inf")) -> list[Call]:
        """The calls made wholly within [start, end)."""
        with self._lock:
            return [call for call in self.calls if start <= call.started and call.ended < end]

    def _run(self, index: int) -> None:
        kinds = ("hit", "miss", "envoy")
        turn = index
        while not self._stop.is_set():
            kind = kinds[turn % len(kinds)]
            turn += 1
            started = time.monotonic()
            outcome = self._call(kind)
            with self._lock:
                self.calls.append(Call(kind, started, time.monotonic(), outcome))
            time.sleep(0.01)

    def _call(self, kind: str) -> str:
        world = self._world
        try:
            if kind == "envoy":
                answer = ext_authz_stub(world.channel).Check(ext_authz_request(
                    "GET", "/v1/users/u-active", {"authorization": world.bearer("acme")}), timeout=self._deadline)
                if answer.HasField("ok_response"):
                    return "allowed"
                if answer.HasField("error_response"):
                    return f"envoy:{answer.error_response.status.code}"
                return f"denied:{answer.dynamic_metadata['reason']}"
            key = world.keys["acme"] if kind == "hit" else opaque.generate(opaque.API_KEY_PREFIX)
            answer = world.authorization.Check(apb.CheckRequest(
                authorization=f"Bearer {key}", operation="getUser", resource=apb.Resource(user_id="u-active")),
                timeout=self._deadline)
            return "allowed" if answer.allowed else f"denied:{answer.reason}"
        except grpc.RpcError as error:
            failure = call_error(error)
            return f"{failure.code.name}:{failure.reason}"


@pytest.fixture
def proxied_world(postgres_url, tmp_path):
    """A server whose store is reached through a TCP proxy the test can cut or stall."""
    url = make_url(postgres_url)
    # Threads left by earlier tests' servers (an RPC pool keeps its threads) are not this server's.
    earlier = set(threading.enumerate())
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        world = start_world(proxy.url_for(postgres_url), tmp_path, **FAULT_SETTINGS)
        try:
            yield world, proxy, lambda: server_threads(earlier)
        finally:
            proxy.restore()
            stop_world(world)


def health_status(world: World, timeout: float = 5):
    return HealthStub(world.channel).Check(HealthCheckRequest(), timeout=timeout).status


def wait_for(predicate, seconds: float = 15.0) -> float | None:
    """Seconds until predicate() held, None if it never did within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def server_threads(earlier: set[threading.Thread]) -> tuple[int, int]:
    """(threads started since `earlier` other than RPC workers, the test's clients and the proxy;
    RPC workers). The RPC pool starts threads on demand up to max_workers and keeps them."""
    names = [thread.name for thread in threading.enumerate() if thread not in earlier]
    workers = sum(name.startswith("rpc") for name in names)
    others = sum(not name.startswith(("rpc", "load-", "tcp-proxy")) for name in names)
    return others, workers


def allowed_native_check(world: World) -> bool:
    try:
        return world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
    except grpc.RpcError:
        return False


def assert_healthy_again(world: World, load: Load, threads, baseline_threads: int, restored: float) -> float:
    """Waits for service to resume; returns the seconds it took after restore()."""
    assert wait_for(lambda: allowed_native_check(world), 15) is not None, \
        "service did not resume after the store came back"
    resumed = time.monotonic() - restored
    assert wait_for(lambda: health_status(world) == SERVING, 15) is not None
    settled = time.monotonic() + 0.5
    time.sleep(1.5)
    after = load.between(settled)
    assert after and {call.outcome for call in after} <= {"allowed", "denied:invalid_token"}, \
        f"not every call succeeds again: {sorted({call.outcome for call in after})}"
    others = wait_for(lambda: threads()[0] <= baseline_threads, 10)
    assert others is not None, f"threads leaked: {threads()[0]} > {baseline_threads}"
    assert threads()[1] <= FAULT_SETTINGS["max_workers"]
    return resumed


def assert_never_allowed_during(load: Load, fault: float, restored: float) -> None:
    """No decision made once cached facts were too old to use, and before the store came back, was
    an allow."""
    late = load.between(fault + CACHE_BOUND + 0.05, restored)
    assert late, "no calls were made during the fault"
    allowed = [call for call in late if call.outcome == "allowed"]
    assert not allowed, f"{len(allowed)} calls were allowed during the outage, at {[round(c.started - fault, 3) for c in allowed]} s"


@pytest.mark.postgres
def test_a_cut_network_fails_closed_under_load_and_service_resumes(proxied_world):
    world, proxy, threads = proxied_world
    with Load(world, deadline=3) as load:
        time.sleep(1.0)  # warm: the cache holds acme's key, every worker has been used
        assert {call.outcome for call in load.between(0)} <= {"allowed", "denied:invalid_token"}
        baseline_threads = threads()[0]

        cut = time.monotonic()
        proxy.cut()
        not_serving = wait_for(lambda: health_status(world) == NOT_SERVING, 10)
        assert not_serving is not None, "health still says SERVING with the store cut off"
        time.sleep(max(0.0, cut + CACHE_BOUND + 0.5 - time.monotonic()))
        steady = time.monotonic()
        error = expect_error(world.manage, "acme", request_user_relation=pb.RequestUserRelation(user_id="u-x"))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "store_unavailable")
        assert world.check("health").allowed, "public operations need no store"
        time.sleep(1.0)

        restored = time.monotonic()
        proxy.restore()
        resumed = assert_healthy_again(world, load, threads, baseline_threads, restored)

    assert_never_allowed_during(load, cut, restored)
    during = load.between(steady, restored)
    native = {call.outcome for call in during if call.kind != "envoy"}
    envoy = {call.outcome for call in during if call.kind == "envoy"}
    assert native == {"UNAVAILABLE:store_unavailable"}, native  # cache hits and misses alike
    assert envoy == {"envoy:503"}, envoy
    assert max(call.ended - call.started for call in during) < 1.5, "a cut store must fail fast"
    first_refusal = min(call.ended for call in load.between(cut) if call.outcome.startswith("UNAVAILABLE"))
    print(f"\ncut: first UNAVAILABLE {first_refusal - cut:.2f} s after the cut, NOT_SERVING after "
          f"{not_serving:.2f} s, {len(during)} calls refused in "
          f"≤ {max(call.ended - call.started for call in during) * 1000:.0f} ms; resumed {resumed:.2f} s "
          f"after restore")


@pytest.mark.postgres
def test_a_stalled_network_ends_every_call_by_its_deadline_and_service_resumes(proxied_world):
    world, proxy, threads = proxied_world
    deadline = 3.0
    with Load(world, deadline=deadline) as load:
        time.sleep(1.0)
        baseline_threads = threads()[0]

        stalled = time.monotonic()
        proxy.stall()
        not_serving = wait_for(lambda: health_status(world) == NOT_SERVING, 15)
        assert not_serving is not None, "health still says SERVING with the store hanging"
        assert world.check("health").allowed, "public operations are still answered"
        error = expect_error(world.manage, "acme", request_user_relation=pb.RequestUserRelation(user_id="u-x"))
        assert error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        time.sleep(3 * WATCHDOG_SECONDS)

        restored = time.monotonic()
        proxy.restore()
        resumed = assert_healthy_again(world, load, threads, baseline_threads, restored)

    assert_never_allowed_during(load, stalled, restored)
    during = load.between(stalled + CACHE_BOUND + 0.05, restored)
    outcomes = {call.outcome for call in during}
    assert outcomes <= {"UNAVAILABLE:store_unavailable", "DEADLINE_EXCEEDED:", "envoy:503"}, outcomes
    slowest = max(call.ended - call.started for call in during)
    assert slowest < deadline + 0.5, f"a call outlived its deadline: {slowest:.2f} s"
    # The server itself gave up on the hung store (not only the clients): the watchdog cut the
    # silent connections and the calls after it were refused by the server.
    assert world.app.store.watchdog is not None and world.app.store.watchdog.cut_count > 0
    refused = [call for call in during if call.outcome.startswith(("UNAVAILABLE", "envoy:503"))]
    assert refused, "the server never answered UNAVAILABLE during the stall"
    print(f"\nstall: NOT_SERVING after {not_serving:.2f} s, first refusal "
          f"{min(call.ended for call in refused) - stalled:.2f} s after the stall, slowest call "
          f"{slowest:.2f} s (deadline {deadline} s), {len(refused)}/{len(during)} refused by the server, "
          f"{world.app.store.watchdog.cut_count} connections cut; resumed {resumed:.2f} s after restore")
