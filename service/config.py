"""Typed settings with defaults, read once from flags and TOLLGATE_* environment variables,
validated at start, and passed in. Secrets never appear in repr()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path

from .domain.oauth import SIGNING_ALGORITHMS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The services client_cert_required_for may name: check is tollgate.v1.Authorization (Check and
# BatchCheck), relations tollgate.v1.Relations, admin tollgate.v1.Admin, ext_authz Envoy's
# envoy.service.auth.v3.Authorization, tokens tollgate.v1.Tokens.
CLIENT_CERT_SERVICES = ("check", "relations", "admin", "ext_authz", "tokens")
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_POLICY = PROJECT_ROOT / "examples" / "policy.yaml"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = DEFAULT_DATA_DIR
    # Empty: a SQLite file in data_dir. postgresql+psycopg://… selects PostgreSQL.
    database_url: str = field(default="", repr=False)
    policy_path: Path = DEFAULT_POLICY
    # The realm named in WWW-Authenticate.
    realm: str = "tollgate"
    # Clock skew tolerated on exp/nbf.
    jwt_leeway_seconds: int = 30
    # Fernet key that seals HMAC issuer secrets at rest. Empty: kept in data_dir/secret.key.
    key_encryption_key: str = field(default="", repr=False)
    pending_relation_ttl_seconds: int = 7 * 24 * 3600
    connect_token_ttl_seconds: int = 24 * 3600
    # How often the sweeper records expired relations.
    expiry_sweep_seconds: float = 30.0
    max_workers: int = 16
    # Each server process runs on one CPU of those it may use (worker i on the i-th, round robin).
    # A Python process computes on one core at a time; left free to move, its threads hand the
    # interpreter lock back and forth across cores, which cost a third of its throughput here
    # (service/affinity.py). Off: the scheduler places them.
    pin_workers: bool = True
    # On SIGTERM: stop accepting calls, then give in-flight ones this long to finish.
    shutdown_grace_seconds: float = 10.0
    # TLS on the gRPC port: PEM certificate chain and key (both or neither). With a client CA,
    # callers must present a certificate it signed (mutual TLS for sidecars and admins) ...
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # ... unless mtls_port is set: then the main port asks for no client certificate, and a second
    # listener on this port (same host, same server certificate) requires one signed by the client
    # CA. None: no second listener; 0: any free port (tests).
    mtls_port: int | None = None
    # Services (names from CLIENT_CERT_SERVICES) that answer only calls made with a verified client
    # certificate, i.e. on the mutual-TLS listener; elsewhere they answer UNAUTHENTICATED.
    client_cert_required_for: tuple[str, ...] = ()
    # Checks per second each partner may make, per process (0: no limit), and the burst allowed.
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 100
    # Failed credentials per second each client address may present, per process (0: no limit),
    # and the burst allowed; past it, the address is answered rate_limit_exceeded unverified.
    # Off by default: clients behind one gateway share its address unless it forwards theirs.
    failed_credential_rate_per_second: float = 0.0
    failed_credential_burst: int = 20
    # Server processes sharing the port (SO_REUSEPORT); 0 means one per core.
    workers: int = 0
    # Check's fact cache: at most this many entries (0 turns caching off) ...
    cache_max_entries: int = 100_000
    # ... and how often other replicas' changes are looked for. A replica sees another's change
    # within this; cached facts older than twice this are not used (Check reads the store).
    cache_refresh_seconds: float = 0.5
    # PostgreSQL, with the fact cache: each server process also LISTENs for the revision the
    # writers NOTIFY on commit, so other replicas' changes are usually seen within milliseconds;
    # the refresh above stays the bound (service/store/notifications.py). Off: polling alone.
    revision_push: bool = True
    # Where to LISTEN, when not at database_url: a transaction-pooling pgbouncer cannot hold a
    # LISTEN, so point this at PostgreSQL itself (or a session-pooling pool). Empty: database_url.
    revision_listen_url: str = field(default="", repr=False)
    # Decisions of identical repeated checks kept (service/check/caching/remembering.py), at most
    # this many; 0 turns it off, as does turning the fact cache off.
    decision_memo_max_entries: int = 10_000
    # How often the objects that have lived until then (the caches' facts, above all) are moved
    # out of the garbage collector's reach (gc.freeze); 0, the default, never. A full collection
    # over a full fact cache stops every thread for tens of milliseconds; but with a small cache,
    # freezing cost 5-10 % of saturated throughput (docs/performance.md), so it is opt-in.
    gc_freeze_seconds: float = 0.0
    # Prometheus /metrics on its own HTTP port (same host as gRPC); 0 turns it off.
    metrics_port: int = 9464
    # The OAuth 2 endpoints (token, revocation, introspection, metadata, JWKS) over HTTP, on this
    # port of the same host as gRPC, served by every worker; 0 turns them off.
    http_port: int = 8080
    # Tollgate's own issuer: the "iss" of the tokens it issues and the base of its endpoint URLs in
    # the RFC 8414 metadata. Empty: http://<host>:<http_port>. Set it to the public URL in a
    # deployment (replicas must share it).
    issuer_url: str = ""
    # The "aud" of the tokens it issues (and that Check requires of them). Empty: the issuer URL.
    token_audience: str = ""
    access_token_lifetime_seconds: int = 3600
    # A refresh token's own lifetime (each rotation starts a new one).
    refresh_token_lifetime_seconds: int = 30 * 24 * 3600
    # The claim of its tokens that holds an OAuth client's customer numbers.
    token_customer_claim: str = "customer_numbers"
    # The algorithm of the signing keys it makes: ES256, RS256 or EdDSA.
    token_signing_algorithm: str = "ES256"
    # Failed client authentications per second per client id and per client address, and the
    # burst allowed; past either, the token endpoints answer 429 without looking at the secret.
    client_auth_failure_rate_per_second: float = 1.0
    client_auth_failure_burst: int = 10
    # Remote issuers (registered by discovery URL or jwks_uri) have their keys fetched over HTTPS,
    # verified against the system's CAs, or against this bundle instead (a private PKI) ...
    jwks_ca_file: Path | None = None
    # ... and over plain http:// only to a loopback address, only when this is true (tests, local work).
    jwks_allow_loopback_http: bool = False
    # One fetch: the connection and the whole response within this, the body at most this large.
    jwks_timeout_seconds: float = 5.0
    jwks_max_bytes: int = 256 * 1024
    # Keys are refreshed when the provider's Cache-Control max-age runs out, within these bounds
    # (after an hour when it gives none); a failed fetch is retried sooner, with backoff.
    jwks_min_refresh_seconds: float = 300.0
    jwks_max_refresh_seconds: float = 24 * 3600.0
    # A token naming a key id the keys lack refetches them at most once per issuer per this.
    jwks_refetch_cooldown_seconds: float = 30.0
    # How often the store is pinged to keep the health status true.
    health_check_seconds: float = 2.0
    log_level: str = "INFO"
    # "json" (one object per line) or "text".
    log_format: str = "json"
    db_pool_size: int = 10
    db_pool_timeout_seconds: float = 5.0
    db_connect_timeout_seconds: float = 5.0
    # PostgreSQL: a statement runs at most this long (statement_timeout), and a request whose
    # connection gives no answer for this + 1 s (a hung network) has it cut and fails UNAVAILABLE.
    # 0 turns both off.
    db_statement_timeout_seconds: float = 5.0

    @property
    def jwt_leeway(self) -> timedelta:
        return timedelta(seconds=self.jwt_leeway_seconds)

    @property
    def token_issuer(self) -> str:
        """The issuer URL, without a trailing slash."""
        return (self.issuer_url or f"http://{_url_host(self.host)}:{self.http_port}").rstrip("/")

    @property
    def token_audience_or_issuer(self) -> str:
        return self.token_audience or self.token_issuer

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def effective_database_url(self) -> str:
        from .store import default_sqlite_url  # the store names its own file

        return self.database_url or default_sqlite_url(self.data_dir)

    @property
    def effective_revision_listen_url(self) -> str:
        return self.revision_listen_url or self.effective_database_url



def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_ENV_PREFIX = "TOLLGATE_"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Defaults <- TOLLGATE_<NAME> environment variables <- explicit overrides (flags)."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for setting in fields(Settings):
        raw = environ.get(_ENV_PREFIX + setting.name.upper())
        if raw is not None and raw != "":
            values[setting.name] = _convert(setting.name, setting.type, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _validated(Settings(**values))  # type: ignore[arg-type]  # each value _convert-ed to its field's type


def _convert(name: str, kind: object, raw: str) -> object:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path", "Path | None"):
            return Path(raw)
        if kind == "int | None":
            return int(raw)
        if kind == "tuple[str, ...]":
            return _names(raw)
        if kind in (bool, "bool"):
            return _flag(name, raw)
    except ValueError:
        raise ConfigError(f"{_ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{_ENV_PREFIX}{name.upper()} must be true or false (on or off), got {raw!r}")


def _validated(settings: Settings) -> Settings:
    for name in ("port", "metrics_port", "http_port"):
        if not 0 <= getattr(settings, name) <= 65535:
            raise ConfigError(f"{name} must be 0..65535, got {getattr(settings, name)}")
    _validated_token_service(settings)
    _validated_remote_keys(settings)
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {settings.log_level!r}")
    if settings.log_format not in ("json", "text"):
        raise ConfigError(f"log_format must be json or text, got {settings.log_format!r}")
    for name in ("jwt_leeway_seconds", "pending_relation_ttl_seconds", "connect_token_ttl_seconds",
                 "cache_max_entries", "decision_memo_max_entries", "gc_freeze_seconds"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    if settings.workers < 0:
        raise ConfigError("workers must be 0 (one per core) or more")
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError("tls_cert_file and tls_key_file go together")
    if settings.tls_client_ca_file is not None and settings.tls_cert_file is None:
        raise ConfigError("tls_client_ca_file needs tls_cert_file and tls_key_file")
    settings = _validated_client_certs(settings)
    if settings.rate_limit_per_second < 0 or settings.rate_limit_burst < 1:
        raise ConfigError("rate_limit_per_second must not be negative and rate_limit_burst must be at least 1")
    if settings.failed_credential_rate_per_second < 0 or settings.failed_credential_burst < 1:
        raise ConfigError("failed_credential_rate_per_second must not be negative and "
                          "failed_credential_burst must be at least 1")
    for name in ("db_pool_timeout_seconds", "db_connect_timeout_seconds", "db_statement_timeout_seconds"):
        if not 0 <= getattr(settings, name) <= 3600:
            raise ConfigError(f"{name} must be 0..3600 seconds, got {getattr(settings, name)}")
    if settings.max_workers < 1 or settings.db_pool_size < 1:
        raise ConfigError("max_workers and db_pool_size must be at least 1")
    if settings.database_url and not settings.database_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("database_url must be a sqlite:// or postgresql+psycopg:// URL")
    if settings.revision_listen_url and not settings.revision_listen_url.startswith("postgresql"):
        raise ConfigError("revision_listen_url must be a postgresql:// or postgresql+psycopg:// URL")
    return settings


def _validated_token_service(settings: Settings) -> None:
    if settings.http_port and settings.http_port in (settings.port, settings.metrics_port):
        raise ConfigError(f"http_port must differ from port and metrics_port, got {settings.http_port}")
    if settings.issuer_url and not settings.issuer_url.startswith(("https://", "http://")):
        raise ConfigError("issuer_url must be an http:// or https:// URL")
    for name in ("access_token_lifetime_seconds", "refresh_token_lifetime_seconds"):
        if not 60 <= getattr(settings, name) <= 366 * 24 * 3600:
            raise ConfigError(f"{name} must be between 60 seconds and a year")
    if settings.token_signing_algorithm not in SIGNING_ALGORITHMS:
        raise ConfigError(f"token_signing_algorithm must be one of {', '.join(SIGNING_ALGORITHMS)}")
    if not settings.token_customer_claim.strip():
        raise ConfigError("token_customer_claim must not be empty")
    if settings.client_auth_failure_rate_per_second <= 0 or settings.client_auth_failure_burst < 1:
        raise ConfigError("client_auth_failure_rate_per_second must be positive and "
                          "client_auth_failure_burst at least 1")


def _validated_remote_keys(settings: Settings) -> None:
    if not 0.1 <= settings.jwks_timeout_seconds <= 60:
        raise ConfigError(f"jwks_timeout_seconds must be 0.1..60, got {settings.jwks_timeout_seconds}")
    if not 1024 <= settings.jwks_max_bytes <= 16 * 1024 * 1024:
        raise ConfigError(f"jwks_max_bytes must be 1024..16777216, got {settings.jwks_max_bytes}")
    if not 0 < settings.jwks_min_refresh_seconds <= settings.jwks_max_refresh_seconds:
        raise ConfigError("jwks_min_refresh_seconds must be positive and at most jwks_max_refresh_seconds")
    if settings.jwks_refetch_cooldown_seconds <= 0:
        raise ConfigError("jwks_refetch_cooldown_seconds must be positive: without a cool-down, tokens with "
                          "made-up key ids would make a fetch each")
    if settings.jwks_ca_file is not None and not settings.jwks_ca_file.is_file():
        raise ConfigError(f"jwks_ca_file {settings.jwks_ca_file} is not a readable file")


def _names(raw: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A comma list ("admin, ext_authz") or a sequence -> unique names in order, blanks dropped."""
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def _validated_client_certs(settings: Settings) -> Settings:
    """The mutual-TLS listener and the services gated on it; returns settings with the list normalised."""
    mtls_port = settings.mtls_port
    if mtls_port is not None:
        if not 0 <= mtls_port <= 65535:
            raise ConfigError(f"mtls_port must be 0..65535, got {mtls_port}")
        if settings.tls_cert_file is None or settings.tls_client_ca_file is None:
            raise ConfigError("mtls_port needs tls_cert_file, tls_key_file and tls_client_ca_file "
                              "(the second listener is TLS with required client certificates)")
        if mtls_port and mtls_port in (settings.port, settings.metrics_port):
            raise ConfigError(f"mtls_port must differ from port and metrics_port, got {mtls_port}")
    required = _names(settings.client_cert_required_for)
    unknown = [name for name in required if name not in CLIENT_CERT_SERVICES]
    if unknown:
        raise ConfigError(f"client_cert_required_for: unknown service {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(CLIENT_CERT_SERVICES)}")
    if required and settings.tls_client_ca_file is None:
        raise ConfigError("client_cert_required_for needs tls_client_ca_file (and mtls_port, so that "
                          "the other services stay reachable without a client certificate)")
    return replace(settings, client_cert_required_for=required)
