"""The composition root: builds store, verifier, use cases and servicers, and serves them."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc, relations_pb2, relations_pb2_grpc

from .config import Settings
from .domain.policy import Policy
from .domain.ports import Clock, SystemClock
from .keyring import load_key_encryption_key
from .policy_file import load_policy
from .store import Store, create_store
from .tokens import TokenVerifier
from .transport.authorization import AuthorizationServicer
from .transport.ext_authz import ExtAuthzServicer
from .transport.relations import RelationsServicer
from .usecases.callers import CallerAuthenticator
from .usecases.check import CheckService
from .usecases.relations import RelationService, RelationSettings

log = logging.getLogger("tollgate.server")

SERVICE_NAMES = (
    authorization_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
    relations_pb2.DESCRIPTOR.services_by_name["Relations"].full_name,
    external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
)
# Bounds what one call may send us; real requests are a few KB.
MAX_MESSAGE_BYTES = 1024 * 1024


class PolicyHolder:
    """The policy in force; replaced atomically (a reference swap) when it is reloaded."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def current(self) -> Policy:
        return self._policy

    def replace(self, policy: Policy) -> None:
        self._policy = policy


@dataclass
class App:
    server: grpc.Server
    port: int
    store: Store
    policy: PolicyHolder
    relations: RelationService
    health: health.HealthServicer
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start_sweeper(self, interval_seconds: float) -> threading.Thread:
        """Records the expiry of relations past their deadline, every interval, until stop()."""

        def sweep() -> None:
            while not self._stopping.wait(interval_seconds):
                try:
                    self.relations.expire_due()
                except Exception:  # noqa: BLE001  (a store outage must not kill the sweeper)
                    log.warning("relation expiry sweep failed", exc_info=True)

        thread = threading.Thread(target=sweep, name="relation-sweeper", daemon=True)
        thread.start()
        return thread

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.store.dispose()


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    """Builds everything in order; each failure names its step. `clock` is for tests."""
    policy = PolicyHolder(_step("load the policy", lambda: load_policy(settings.policy_path)))
    store = _step("open the store", lambda: create_store(
        settings.effective_database_url, pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds, connect_timeout=settings.db_connect_timeout_seconds))
    _step("migrate the store", store.migrate)
    verifier = _step("load the key-encryption key", lambda: TokenVerifier(
        key_encryption_key=load_key_encryption_key(settings), leeway=settings.jwt_leeway))
    clock = clock or SystemClock()
    checks = CheckService(policy.current, store.unit_of_work, verifier, clock)
    relations = RelationService(store.unit_of_work, clock, RelationSettings(
        pending_ttl=timedelta(seconds=settings.pending_relation_ttl_seconds),
        connect_token_ttl=timedelta(seconds=settings.connect_token_ttl_seconds)))
    callers = CallerAuthenticator(policy.current, store.unit_of_work, verifier, clock)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_metadata_size", 64 * 1024)],
    )
    authorization_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(checks, settings.realm), server)
    relations_pb2_grpc.add_RelationsServicer_to_server(RelationsServicer(relations, callers), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        ExtAuthzServicer(checks, policy.current, settings.realm), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _step("bind the port", lambda: server.add_insecure_port(f"{settings.host}:{settings.port}"))
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return App(server, port, store, policy, relations, health_servicer)


def _step(name: str, action):
    try:
        return action()
    except Exception as error:
        raise RuntimeError(f"cannot {name}: {error}") from error


def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then stops accepting and lets in-flight calls finish."""
    app = build_app(settings)
    app.server.start()
    app.start_sweeper(settings.expiry_sweep_seconds)
    log.info("Tollgate serving on %s:%d (store: %s)", settings.host, app.port,
             "postgresql" if settings.effective_database_url.startswith("postgresql") else "sqlite")
    print(f"Tollgate serving on {settings.host}:{app.port}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    log.info("shutting down")
    app.stop()
