"""The composition root: builds store, verifier, use cases and servicers, and serves them."""

from __future__ import annotations

import functools
import gc
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tollgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    authorization_pb2,
    authorization_pb2_grpc,
    relations_pb2,
    relations_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)

from .check.caching.fact_cache import FactCache
from .check.caching.facts import CachedFacts
from .check.caching.remembering import RememberingChecker
from .check.caching.revision_memo import RevisionMemo
from .check.caching.siblings import SiblingWrites
from .check.facts import StoreFacts
from .check.limits import CheckLimits
from .check.ports import Checker, CheckFacts
from .check.service import CheckService
from .config import Settings
from .domain.errors import DomainError
from .domain.policy import Policy
from .domain.ports import Clock, SystemClock, UnitOfWork
from .domain.rate_limit import RateLimiter
from .http.app import HttpListener, oauth_app
from .keyring import load_key_encryption_key
from .policy_file import load_policy
from .store import Store, create_store
from .store.notifications import RevisionListener, revision_listener
from .telemetry import Telemetry
from .tokens import TokenVerifier, load_jwks, seal_secret
from .tokens.fetch import HttpKeySetFetcher
from .tokens.signing import KeySigner
from .tokens.verifier import OwnIssuer
from .transport.admin import AdminServicer
from .transport.authorization import AuthorizationServicer
from .transport.client_certs import ClientCertificateRequired
from .transport.decoding import add_decoding_in_handler
from .transport.ext_authz import ExtAuthzServicer
from .transport.reflection import enable_server_reflection
from .transport.relations import RelationsServicer
from .transport.tokens import TokensServicer
from .usecases.admin import AdminService, SigningKeySettings
from .usecases.callers import CallerAuthenticator
from .usecases.relations import RelationService, RelationSettings
from .usecases.remote_keys import FetchObserver, RemoteKeyService, RemoteKeySettings
from .usecases.tokens import ClientAuthentication, TokenService, TokenSettings

log = logging.getLogger("tollgate.server")

# Our services, by the names TOLLGATE_CLIENT_CERT_REQUIRED_FOR uses (config.CLIENT_CERT_SERVICES).
GATED_SERVICES = {
    "check": authorization_pb2.DESCRIPTOR.services_by_name["Authorization"],
    "relations": relations_pb2.DESCRIPTOR.services_by_name["Relations"],
    "admin": admin_pb2.DESCRIPTOR.services_by_name["Admin"],
    "ext_authz": external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"],
    "tokens": tokens_pb2.DESCRIPTOR.services_by_name["Tokens"],
}
SERVICE_NAMES = tuple(service.full_name for service in GATED_SERVICES.values())
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
    settings: Settings
    server: grpc.Server
    port: int
    store: Store
    policy: PolicyHolder
    relations: RelationService
    health: health.HealthServicer
    telemetry: Telemetry
    cache: FactCache | None
    remote_keys: RemoteKeyService
    metrics_port: int = 0
    # The mutual-TLS listener's bound port, None when there is none (TOLLGATE_MTLS_PORT unset).
    mtls_port: int | None = None
    # The OAuth endpoints' listener, None when TOLLGATE_HTTP_PORT is 0.
    http: HttpListener | None = None
    # PostgreSQL with the fact cache: hears of other replicas' changes as they commit.
    revision_listener: RevisionListener | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    def start(self) -> None:
        """Serves RPCs, the OAuth endpoints and metrics, and starts the expiry sweeper and the
        health watcher."""
        self.server.start()
        if self.http is not None:
            self.http.start()
        if self.settings.metrics_port:
            self.metrics_port = self.telemetry.serve_metrics(self.settings.host, self.settings.metrics_port)
        self._every(self.settings.expiry_sweep_seconds, "relation-sweeper", self.relations.expire_due)
        self._every(self.settings.health_check_seconds, "health-watcher", self.check_health)
        # Often enough to refresh keys when due and to retry a failed fetch on time.
        self._every(max(0.2, min(5.0, self.settings.jwks_min_refresh_seconds / 4)), "issuer-key-refresh",
                    self.remote_keys.refresh_due)
        if self.cache is not None:
            self.cache.refresh()
            # The poll stays when changes are pushed too: it bounds staleness while the push is down.
            self._every(self.settings.cache_refresh_seconds, "cache-refresh", self.cache.refresh)
        if self.settings.gc_freeze_seconds:
            gc.freeze()  # what start-up made (modules, the policy) is never garbage
            self._every(self.settings.gc_freeze_seconds, "gc-freeze", gc.freeze)
        if self.revision_listener is not None:
            # Connected and caught up (or known to be down: the poll covers) when start() returns,
            # so every change committed from then on is pushed.
            self.revision_listener.start(wait_seconds=self.settings.db_connect_timeout_seconds + 1)

    def check_health(self) -> bool:
        """SERVING while the store answers the reads Check makes, NOT_SERVING while it does not
        (the policy is loaded before the server starts, and a reload never leaves it without one)."""
        try:
            self.store.unit_of_work.ping()
            serving = True
        except DomainError:
            serving = False
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)
        return serving

    def reload_policy(self) -> bool:
        """Loads the policy file again; a broken file is refused and the old policy keeps serving."""
        try:
            self.policy.replace(load_policy(self.settings.policy_path))
        except DomainError as error:
            log.error("policy reload refused, the previous policy stays in force: %s", error.message)
            return False
        log.info("policy reloaded from %s", self.settings.policy_path)
        return True

    def _every(self, interval_seconds: float, name: str, action) -> None:
        def loop() -> None:
            while not self._stopping.wait(interval_seconds):
                try:
                    action()
                except Exception:  # a store outage must not kill the loop
                    log.warning("%s failed", name, exc_info=True)

        threading.Thread(target=loop, name=name, daemon=True).start()

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting calls, lets in-flight ones finish within `grace`, then closes the store."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.stop()
        self.server.stop(grace).wait()
        if self.revision_listener is not None:  # after the calls in flight: it kept their facts fresh
            self.revision_listener.stop()
        self.telemetry.stop()
        self.store.dispose()
        if self.settings.gc_freeze_seconds:
            gc.unfreeze()  # whatever this app held and let go is collected again


def prepare_store(settings: Settings) -> None:
    """Creates or upgrades the schema, once, before any worker starts."""
    store = _step("open the store", lambda: create_store(settings.effective_database_url,
                                                         connect_timeout=settings.db_connect_timeout_seconds))
    try:
        _step("migrate the store", store.migrate)
    finally:
        store.dispose()


def build_app(settings: Settings, clock: Clock | None = None, siblings: SiblingWrites | None = None) -> App:
    """Builds everything in order; each failure names its step. `clock` is for tests; `siblings`
    is the write counter shared with the other worker processes of this server, if any."""
    policy = PolicyHolder(_step("load the policy", lambda: load_policy(settings.policy_path)))
    store = _step("open the store", lambda: create_store(
        settings.effective_database_url, pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds, connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds))
    _step("migrate the store", store.migrate)
    key_encryption_key = _step("load the key-encryption key", lambda: load_key_encryption_key(settings))
    clock = clock or SystemClock()
    telemetry = Telemetry()
    remote_keys = _step("prepare fetching issuers' keys", lambda: _remote_keys(settings, store, clock, telemetry))
    verifier = _step("prepare token verification", lambda: TokenVerifier(
        key_encryption_key=key_encryption_key, leeway=settings.jwt_leeway, own_issuer=OwnIssuer(
            settings.token_issuer, settings.token_audience_or_issuer, settings.token_customer_claim),
        remote_keys=remote_keys))
    cache = FactCache(store.unit_of_work, settings.cache_max_entries,
                      max_age_seconds=2 * settings.cache_refresh_seconds,
                      sibling_writes=siblings.current if siblings else None,
                      fact_reads=store.fact_reads) if settings.cache_max_entries else None
    if siblings is not None:
        store.unit_of_work.on_write(siblings.advance)
    checker = _checker(settings, policy, store, verifier, clock, cache)
    # The servicers say where credentials come from only for the failed-credential limit.
    client_addresses = bool(settings.failed_credential_rate_per_second)
    relations = RelationService(store.unit_of_work, clock, RelationSettings(
        pending_ttl=timedelta(seconds=settings.pending_relation_ttl_seconds),
        connect_token_ttl=timedelta(seconds=settings.connect_token_ttl_seconds)))
    callers = CallerAuthenticator(policy.current, store.unit_of_work, verifier, clock)
    signer = KeySigner(key_encryption_key)
    tokens = _token_service(settings, policy, store, clock, signer, verifier, cache)
    _step("prepare the signing key", tokens.ensure_signing_key)
    # A restarted replica's first checks all miss its empty caches: each would otherwise also wait
    # for a connection of its own to be opened.
    store.open_connections(settings.db_pool_size)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_metadata_size", 64 * 1024),
                 # Several worker processes bind one port; the kernel balances connections.
                 ("grpc.so_reuseport", 1)],
    )
    gate = functools.partial(_gated, settings)
    add_decoding_in_handler(authorization_pb2_grpc.add_AuthorizationServicer_to_server,
                            gate("check", AuthorizationServicer(checker, settings.realm, telemetry,
                                                              client_addresses=client_addresses)), server)
    add_decoding_in_handler(relations_pb2_grpc.add_RelationsServicer_to_server,
                            gate("relations", RelationsServicer(relations, callers, telemetry)), server)
    # Admin seals HMAC issuer secrets with the key-encryption key and validates JWKS (service.tokens).
    admin = AdminService(policy.current, store.unit_of_work, clock, validate_jwks=load_jwks,
                         seal=functools.partial(seal_secret, kek=key_encryption_key), signer=signer,
                         remote_keys=remote_keys,
                         signing=SigningKeySettings(settings.token_signing_algorithm, timedelta(
                             seconds=settings.access_token_lifetime_seconds + settings.jwt_leeway_seconds)))
    add_decoding_in_handler(admin_pb2_grpc.add_AdminServicer_to_server,
                            gate("admin", AdminServicer(admin, callers, telemetry)), server)
    add_decoding_in_handler(external_auth_pb2_grpc.add_AuthorizationServicer_to_server,
                            gate("ext_authz", ExtAuthzServicer(
                                checker, policy.current, settings.realm, telemetry, client_addresses=client_addresses,
                                names_requests=isinstance(checker, RememberingChecker))),
                            server)
    add_decoding_in_handler(tokens_pb2_grpc.add_TokensServicer_to_server,
                            gate("tokens", TokensServicer(tokens, telemetry)), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)  # grpc.reflection.v1 and v1alpha
    port = _step("bind the port", lambda: _bind(server, settings))
    mtls_port = _step("bind the mutual-TLS port", lambda: _bind_mutual_tls(server, settings))
    http = _step("bind the HTTP port", lambda: HttpListener(
        oauth_app(tokens, policy.current, settings.realm, telemetry), settings.host, settings.http_port,
        reuse_port=settings.worker_count > 1, grace_seconds=settings.shutdown_grace_seconds)
        ) if settings.http_port else None
    app = App(settings, server, port, store, policy, relations, health_servicer, telemetry, cache, remote_keys,
              mtls_port=mtls_port, http=http, revision_listener=_revision_listener(settings, store, cache, telemetry))
    app.check_health()
    return app


def _checker(settings: Settings, policy: PolicyHolder, store: Store, verifier: TokenVerifier, clock: Clock,
             cache: FactCache | None) -> Checker:
    """Check, and its shortcuts stacked around the ports they wrap: the fact cache in front of the
    store's facts, the decision memo around the whole checker (it needs the fact cache: its kept
    decisions end with the cache's generation)."""
    limits = CheckLimits(
        RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        if settings.rate_limit_per_second else None,
        RateLimiter(settings.failed_credential_rate_per_second, settings.failed_credential_burst)
        if settings.failed_credential_rate_per_second else None)
    if cache is None:
        # Every check reads the store; what many checks share is kept per store revision.
        facts: CheckFacts = StoreFacts(RevisionMemo(store.fact_reads), verifier)
    else:
        facts = CachedFacts(StoreFacts(store.fact_reads, verifier), cache, verifier)
    checker: Checker = CheckService(policy.current, facts, clock, limits)
    if cache is not None and settings.decision_memo_max_entries:
        checker = RememberingChecker(checker, cache, policy.current, clock, limits, settings.decision_memo_max_entries)
    return checker


def _revision_listener(settings: Settings, store: Store, cache: FactCache | None,
                       telemetry: Telemetry) -> RevisionListener | None:
    """The push of other replicas' changes: PostgreSQL only (SQLite has no other server to hear
    from), and only for a fact cache to refresh."""
    if store.backend != "postgresql" or cache is None or not settings.revision_push:
        return None
    listener = revision_listener(settings.effective_revision_listen_url, cache.refresh,
                                 connect_timeout=settings.db_connect_timeout_seconds, own=store.unit_of_work.wrote,
                                 on_notification=telemetry.record_revision_notification)
    telemetry.watch_revision_listener(lambda: listener.up)
    return listener


def _remote_keys(settings: Settings, store: Store, clock: Clock, telemetry: Telemetry) -> RemoteKeyService:
    remote_keys = remote_key_service(settings, store.unit_of_work, clock, observe=telemetry.record_key_fetch)
    telemetry.watch_key_ages(remote_keys.key_ages)
    return remote_keys


def remote_key_service(settings: Settings, unit_of_work: UnitOfWork, clock: Clock, *,
                       observe: FetchObserver | None = None) -> RemoteKeyService:
    """Fetching remote issuers' keys as the settings say (the server's, and the command line's)."""
    fetcher = HttpKeySetFetcher(timeout_seconds=settings.jwks_timeout_seconds, max_bytes=settings.jwks_max_bytes,
                                ca_file=settings.jwks_ca_file, allow_loopback_http=settings.jwks_allow_loopback_http)
    return RemoteKeyService(unit_of_work, fetcher, clock, RemoteKeySettings(
        min_refresh=timedelta(seconds=settings.jwks_min_refresh_seconds),
        max_refresh=timedelta(seconds=settings.jwks_max_refresh_seconds),
        refetch_cooldown=timedelta(seconds=settings.jwks_refetch_cooldown_seconds),
        # A claim outlives any fetch: discovery and key set, each within the timeout.
        fetch_lease=timedelta(seconds=2 * settings.jwks_timeout_seconds + 5)),
        observe=observe, wait_seconds=2 * settings.jwks_timeout_seconds)


def _token_service(settings: Settings, policy: PolicyHolder, store: Store, clock: Clock, signer: KeySigner,
                   verifier: TokenVerifier, cache: FactCache | None) -> TokenService:
    failures = functools.partial(RateLimiter, settings.client_auth_failure_rate_per_second,
                                 settings.client_auth_failure_burst)
    return TokenService(policy.current, store.unit_of_work, clock, signer, verifier, TokenSettings(
        issuer=settings.token_issuer, audience=settings.token_audience_or_issuer,
        access_token_lifetime=timedelta(seconds=settings.access_token_lifetime_seconds),
        refresh_token_lifetime=timedelta(seconds=settings.refresh_token_lifetime_seconds),
        customer_claim=settings.token_customer_claim, signing_algorithm=settings.token_signing_algorithm),
        ClientAuthentication(failures(), failures()), cache)


def _gated(settings: Settings, name: str, servicer: object) -> object:
    """The servicer itself, or, when `name` is in client_cert_required_for, a stand-in that
    refuses calls without a verified client certificate (service/transport/client_certs.py)."""
    if name not in settings.client_cert_required_for:
        return servicer
    return ClientCertificateRequired(servicer, GATED_SERVICES[name])


def _bind(server: grpc.Server, settings: Settings) -> int:
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return server.add_insecure_port(address)
    # With a mutual-TLS port the main port must not ask for client certificates: the gate in
    # transport/client_certs.py relies on a peer certificate meaning "verified on the mTLS port".
    client_ca = settings.tls_client_ca_file if settings.mtls_port is None else None
    return server.add_secure_port(address, _tls_credentials(settings, client_ca))


def _bind_mutual_tls(server: grpc.Server, settings: Settings) -> int | None:
    """The second listener: same host and server certificate, client certificates required and
    verified against the client CA during the handshake."""
    if settings.mtls_port is None:
        return None
    return server.add_secure_port(f"{settings.host}:{settings.mtls_port}",
                                  _tls_credentials(settings, settings.tls_client_ca_file))


def _tls_credentials(settings: Settings, client_ca: Path | None) -> grpc.ServerCredentials:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None, require_client_auth=client_ca is not None)


def _step(name: str, action):
    try:
        return action()
    except Exception as error:
        raise RuntimeError(f"cannot {name}: {error}") from error


@dataclass(frozen=True)
class Listening:
    """The ports a server answers on, as bound (None: that listener is off). A worker process sends
    its own to the parent (service/workers.py), which announces the whole server once."""

    port: int
    http_port: int | None = None
    mtls_port: int | None = None
    metrics_port: int | None = None

    @classmethod
    def of(cls, app: App) -> Listening:
        return cls(app.port, app.http_port, app.mtls_port, app.metrics_port or None)


def announce(settings: Settings, listening: Listening, workers: int = 1) -> None:
    """Says once, on stdout and in the log, that the server is up: where, with how many worker
    processes, and on which ports."""
    url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    store = "postgresql" if settings.effective_database_url.startswith("postgresql") else "sqlite"
    details = [f"OAuth endpoints on http://{url_host}:{listening.http_port}" if listening.http_port else "",
               f"mutual TLS on {settings.host}:{listening.mtls_port}" if listening.mtls_port else "",
               f"metrics on http://{url_host}:{listening.metrics_port}/metrics" if listening.metrics_port
               else "metrics off", f"store: {store}"]
    line = (f"Tollgate serving on {settings.host}:{listening.port} with {workers} worker{'s' if workers != 1 else ''}"
            f" ({'; '.join(detail for detail in details if detail)})")
    log.info("%s", line, extra={"fields": {"workers": workers, "port": listening.port, "http_port": listening.http_port,
                                           "mtls_port": listening.mtls_port, "metrics_port": listening.metrics_port,
                                           "store": store, "issuer": settings.token_issuer}})
    print(line, flush=True)
    wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 - compares the setting, binds nothing
    if listening.http_port and not settings.issuer_url and wildcard:
        log.warning("TOLLGATE_ISSUER_URL is not set: tokens name the issuer %s, which clients cannot reach; "
                    "set it to the public URL of the OAuth endpoints", settings.token_issuer)
    if listening.mtls_port:
        log.info("client certificate required (on the mutual-TLS port %d) for: %s", listening.mtls_port,
                 ", ".join(settings.client_cert_required_for) or "none")


def serve(settings: Settings, siblings: SiblingWrites | None = None,
          started: Callable[[App], None] | None = None) -> None:
    """Serves until SIGTERM or SIGINT, then stops accepting and lets in-flight calls finish.
    SIGHUP reloads the policy file. `started` is for a worker process: it is called once the app
    serves, instead of the announcement (the parent makes it, once for all workers)."""
    app = build_app(settings, siblings=siblings)
    app.start()
    if started is None:
        announce(settings, Listening.of(app))
    else:
        started(app)
    stopped, reload_requested = threading.Event(), threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.set())
    while not stopped.wait(0.2):
        if reload_requested.is_set():  # reload outside the signal handler: it reads a file and logs
            reload_requested.clear()
            app.reload_policy()
    log.info("shutting down")
    app.stop(settings.shutdown_grace_seconds)
