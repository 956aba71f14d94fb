"""Soak: a real server process on PostgreSQL under a bounded mix of allows, denies and relation
changes from many threads. Zero errors other than the expected denies, every relation's event
history replays to its state, and the server's memory stays flat.

TOLLGATE_SOAK_SECONDS sets the duration (default 40 s; the issue's 2-minute run: 120).
"""

import itertools
import os
import random
import threading
import time
from pathlib import Path

import grpc
import pytest
from tollgate.v1 import authorization_pb2 as apb
from tollgate.v1 import authorization_pb2_grpc, relations_pb2_grpc
from tollgate.v1 import relations_pb2 as pb

from tests.support.envoy import ext_authz_request, ext_authz_stub
from tests.support.processes import free_port, start_server, stop_server
from tests.support.world import EXAMPLE_POLICY, start_world, stop_world

SECONDS = float(os.environ.get("TOLLGATE_SOAK_SECONDS", "40"))


def rss_kib(pid: int) -> int:
    """The resident memory of the server: the process and its workers."""
    total = 0
    for process in [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        status = Path(f"/proc/{process}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total


class Soak:
    def __init__(self, port: int, keys: dict[str, str]) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.check = authorization_pb2_grpc.AuthorizationStub(self.channel).Check
        self.manage = relations_pb2_grpc.RelationsStub(self.channel).ManageRelation
        self.get = relations_pb2_grpc.RelationsStub(self.channel).GetRelation
        self.envoy = ext_authz_stub(self.channel).Check
        self.keys = keys
        self.failures: list[str] = []
        self.counts = {"checks": 0, "changes": 0}
        self.churned: list[str] = []
        self.lock = threading.Lock()

    def meta(self, name):
        return [("authorization", f"Bearer {self.keys[name]}")]

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            with self.lock:
                self.failures.append(what)

    def checker(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        acme = f"Bearer {self.keys['acme']}"
        cases = [
            (apb.CheckRequest(authorization=acme, operation="getUser", resource=apb.Resource(user_id="u-active")), ""),
            (apb.CheckRequest(authorization=acme, operation="getUser", resource=apb.Resource(user_id="u-none")),
             "user_access_denied"),
            (apb.CheckRequest(authorization="Bearer tg_live_forged", operation="getUser",
                              resource=apb.Resource(user_id="u-active")), "invalid_token"),
            (apb.CheckRequest(operation="health"), ""),
        ]
        envoy_allow = ext_authz_request("GET", "/v1/users/u-active", {"authorization": acme})
        while time.monotonic() < deadline:
            if rng.random() < 0.2:
                reply = self.envoy(envoy_allow, timeout=10)
                self.expect(reply.HasField("ok_response"), f"ext_authz: {reply.dynamic_metadata}")
            else:
                request, reason = rng.choice(cases)
                reply = self.check(request, timeout=10)
                self.expect(reply.reason == reason, f"{request.operation}: {reply.reason} != {reason}")
            with self.lock:
                self.counts["checks"] += 1

    def churner(self, worker: int, deadline: float) -> None:
        for index in itertools.count():
            if time.monotonic() >= deadline:
                return
            user = f"u-soak-{worker}-{index}"
            relation = self.manage(pb.ManageRelationRequest(request_user_relation=pb.RequestUserRelation(
                user_id=user)), metadata=self.meta("acme"), timeout=10).relation
            approved = self.manage(pb.ManageRelationRequest(approve_user_relation=pb.ApproveUserRelation(
                relation_id=relation.id)), metadata=self.meta("platform"), timeout=10)
            allowed = self.check(apb.CheckRequest(authorization=f"Bearer {self.keys['acme']}", operation="getUser",
                                                  resource=apb.Resource(user_id=user),
                                                  at_least_as_fresh=approved.revision), timeout=10)
            self.expect(allowed.allowed, f"{user} not allowed after approval: {allowed.reason}")
            revoked = self.manage(pb.ManageRelationRequest(revoke_relation=pb.RevokeRelation(
                relation_id=relation.id)), metadata=self.meta("acme"), timeout=10)
            denied = self.check(apb.CheckRequest(authorization=f"Bearer {self.keys['acme']}", operation="getUser",
                                                 resource=apb.Resource(user_id=user),
                                                 at_least_as_fresh=revoked.revision), timeout=10)
            self.expect(denied.reason == "user_access_denied", f"{user} after revoke: {denied.reason}")
            with self.lock:
                self.counts["changes"] += 3
                self.churned.append(relation.id)

    def run(self, target, *args) -> None:
        try:
            target(*args)
        except grpc.RpcError as error:  # no RPC may fail in this mix
            self.expect(False, f"{target.__name__}: {error.code()} {error.details()}")


@pytest.mark.postgres
def test_soak(postgres_url, tmp_path):
    seeded = start_world(postgres_url, tmp_path / "seed")  # seeds the database, then steps aside
    keys = dict(seeded.keys)
    stop_world(seeded)
    port = free_port()
    process = start_server(port, {**os.environ, "TOLLGATE_DATABASE_URL": postgres_url,
                                  "TOLLGATE_DATA_DIR": str(tmp_path / "data"), "TOLLGATE_METRICS_PORT": "0",
                                  "TOLLGATE_POLICY_PATH": str(EXAMPLE_POLICY), "TOLLGATE_LOG_LEVEL": "WARNING"})
    soak = Soak(port, keys)
    try:
        warm_until = time.monotonic() + SECONDS * 0.25
        deadline = time.monotonic() + SECONDS
        threads = [threading.Thread(target=soak.run, args=(soak.checker, seed, deadline)) for seed in range(6)]
        threads += [threading.Thread(target=soak.run, args=(soak.churner, worker, deadline)) for worker in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, warm_until - time.monotonic()))
        rss_after_warm_up = rss_kib(process.pid)
        for thread in threads:
            thread.join(timeout=SECONDS + 60)
        rss_at_end = rss_kib(process.pid)
        assert not any(thread.is_alive() for thread in threads), "a load thread hung"
        assert soak.failures == [], soak.failures[:10]
        assert soak.counts["checks"] > 100 and soak.churned, soak.counts
        for relation_id in soak.churned:  # no lost or extra event: each history replays to its state
            history = soak.get(pb.GetRelationRequest(relation_id=relation_id), metadata=soak.meta("platform"),
                               timeout=10)
            assert [(e.from_status, e.to_status) for e in history.events] == [
                (pb.RELATION_STATUS_UNSPECIFIED, pb.RELATION_STATUS_PENDING),
                (pb.RELATION_STATUS_PENDING, pb.RELATION_STATUS_ACTIVE),
                (pb.RELATION_STATUS_ACTIVE, pb.RELATION_STATUS_REVOKED)]
            assert history.relation.status == pb.RELATION_STATUS_REVOKED
        print(f"soak {SECONDS:.0f} s: {soak.counts['checks']} checks, {soak.counts['changes']} relation changes, "
              f"{len(soak.churned)} histories replayed, server RSS {rss_after_warm_up} -> {rss_at_end} KiB")
        assert rss_at_end - rss_after_warm_up < 30 * 1024, (rss_after_warm_up, rss_at_end)
    finally:
        soak.channel.close()
        code, output = stop_server(process)
    assert code == 0, output[-2000:]
