"""A realistic store for the load benchmark, on SQLite or PostgreSQL.

Full size: 10,000 partners, 100,000 API keys (10 per partner) and 1,000,000 relations (100 per
partner: 80 % active partner-user, 10 % active partner-organization, 5 % pending, 5 % revoked),
plus an RS256 and an ES256 JWT issuer and 2,000 OAuth clients (`oauth_clients`, spread over the
active partners; `--small`: 100 partners, 100 keys, 1,000 relations, the same clients).

The schema comes from the store's own migration (`create_store(url).migrate()`); the rows are then
written in bulk on the store's tables: SQLAlchemy Core `insert()` executemany in batches on SQLite,
PostgreSQL's `COPY … FROM STDIN` (psycopg) for the two big tables on PostgreSQL (Core executemany
takes minutes there for a million rows), followed by ANALYZE so the planner knows the sizes.

Every layout decision is a pure function of (partner, index), so the load generator can name an
active relation, a pending one or none without reading the store back. API keys are generated with
`service.domain.opaque.generate` and stored as `opaque.digest`; the plaintext of a few thousand
(one per active partner) is kept for the load. OAuth client secrets likewise
(`opaque.generate(opaque.CLIENT_SECRET_PREFIX)`, only the digest stored, every plaintext kept).

    python -m bench.seed --store sqlite [--small] [--oauth-clients N]   # seeds, prints the timings, drops it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url

from service.domain import opaque
from service.store import create_store
from service.store.models import ApiKeyRow, IssuerRow, OAuthClientRow, PartnerRow, RelationRow
from tests.support.keys import SigningKey, generate_signing_key, jwks

AUDIENCE = "https://api.bench.test"
ISSUERS = {"rsa": ("RS256", "https://rsa.bench.test"), "ec": ("ES256", "https://ec.bench.test")}
PARTNER_GRANTS = ["user:read", "organization:read", "court-booking:write"]
DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BATCH = 20_000
OAUTH_CLIENTS = 2_000  # distinct OAuth clients seeded for the token endpoint's load

# Relation kinds, by the index's position in the partner's 100 slots (percent).
ACTIVE_USER, ACTIVE_ORGANIZATION, PENDING_USER, REVOKED_USER = "active-user", "active-org", "pending", "revoked"


@dataclass(frozen=True)
class SeedSize:
    name: str
    partners: int
    keys_per_partner: int
    relations_per_partner: int
    # How many plaintext API keys are kept for the load (the first key of that many active partners).
    kept_keys: int

    @property
    def keys(self) -> int:
        return self.partners * self.keys_per_partner

    @property
    def relations(self) -> int:
        return self.partners * self.relations_per_partner


FULL = SeedSize("full", partners=10_000, keys_per_partner=10, relations_per_partner=100, kept_keys=3_000)
SMALL = SeedSize("small", partners=100, keys_per_partner=1, relations_per_partner=10, kept_keys=100)


# -- the layout (pure functions, shared with the load) --------------------------------------------

def partner_id(p: int) -> str:
    return f"p{p:05d}"


def is_suspended(p: int) -> bool:
    """One partner in a hundred is suspended (its credentials are refused with token_revoked)."""
    return p % 100 == 99


def relation_kind(j: int, per_partner: int) -> str:
    percent = j * 100 // per_partner
    if percent < 80:
        return ACTIVE_USER
    if percent < 90:
        return ACTIVE_ORGANIZATION
    if percent < 95:
        return PENDING_USER
    return REVOKED_USER


def subject_id(p: int, j: int, kind: str) -> str:
    """Distinct per partner for every j (so at most one open relation per triple); users are
    shared between partners, as real users are related to several partners."""
    if kind == ACTIVE_ORGANIZATION:
        return f"o-{(p * 17 + j) % 50_000:05d}"
    return f"u-{(p * 131 + j) % 500_000:06d}"


def subjects(size: SeedSize, p: int, kind: str) -> list[str]:
    return [subject_id(p, j, kind) for j in range(size.relations_per_partner)
            if relation_kind(j, size.relations_per_partner) == kind]


def active_partners(size: SeedSize) -> list[int]:
    return [p for p in range(size.partners) if not is_suspended(p)]


def oauth_client_partner(size: SeedSize, i: int) -> str:
    """The partner of the i-th OAuth client: the active partners in turn, the same order in which
    the load's scenarios pick (partner, user) pairs, so client i can ask about the i-th pair."""
    partners = active_partners(size)
    return partner_id(partners[i % len(partners)])


# -- the result ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OAuthClient:
    partner: str
    client_id: str
    secret: str = field(repr=False)


@dataclass
class Seeded:
    url: str
    backend: str
    size: SeedSize
    # (partner id, plaintext API key) of active, unexpired, unrevoked keys, for the load.
    api_keys: list[tuple[str, str]]
    signers: dict[str, SigningKey] = field(repr=False)
    issuers: dict[str, str]
    counts: dict[str, int]
    seconds: dict[str, float]
    # Every seeded OAuth client (all active), in order: client i belongs to oauth_client_partner(i).
    oauth_clients: list[OAuthClient] = field(default_factory=list, repr=False)
    # Every valid plaintext API key of every active partner, by partner id (the mix's key spread).
    partner_api_keys: dict[str, list[str]] = field(default_factory=dict, repr=False)


# -- seeding ------------------------------------------------------------------------------------

def seed(url: str, size: SeedSize, *, oauth_clients: int = OAUTH_CLIENTS,
         log: Callable[[str], None] = print) -> Seeded:
    """Migrates the (empty) database at `url` and fills it, with `oauth_clients` OAuth clients.
    Returns what the load needs."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    store = create_store(url)
    try:
        store.migrate()
        engine = store.engine
        timings["migrate"] = time.perf_counter() - started
        now = datetime.now(UTC).replace(microsecond=0)
        signers = {name: generate_signing_key(alg, f"bench-{name}-1") for name, (alg, _) in ISSUERS.items()}

        mark = time.perf_counter()
        _core_insert(engine, PartnerRow.__table__, _partners(size, now))
        _core_insert(engine, IssuerRow.__table__, _issuers(signers, now))
        timings["partners"] = time.perf_counter() - mark

        mark = time.perf_counter()
        kept: list[tuple[str, str]] = []
        valid: dict[str, list[str]] = {}
        _bulk(engine, ApiKeyRow.__table__, _api_keys(size, now, kept, valid))
        timings["api_keys"] = time.perf_counter() - mark
        log(f"  {size.keys:,} API keys in {timings['api_keys']:.1f} s")

        mark = time.perf_counter()
        _bulk(engine, RelationRow.__table__, _relations(size, now))
        timings["relations"] = time.perf_counter() - mark
        log(f"  {size.relations:,} relations in {timings['relations']:.1f} s")

        mark = time.perf_counter()
        clients: list[OAuthClient] = []
        _core_insert(engine, OAuthClientRow.__table__, _oauth_clients(size, oauth_clients, now, clients))
        timings["oauth_clients"] = time.perf_counter() - mark

        mark = time.perf_counter()
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        timings["analyze"] = time.perf_counter() - mark
        with engine.connect() as connection:
            def count(table: str) -> int:
                query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - the literal names below only
                return connection.execute(query).scalar_one()

            counts = {table: count(table)
                      for table in ("partners", "api_keys", "jwt_issuers", "relations", "oauth_clients")}
        timings["total"] = time.perf_counter() - started
        return Seeded(url=url, backend=engine.dialect.name, size=size, api_keys=kept, signers=signers,
                      issuers={name: iss for name, (_, iss) in ISSUERS.items()}, counts=counts, seconds=timings,
                      oauth_clients=clients, partner_api_keys=valid)
    finally:
        store.dispose()


def _partners(size: SeedSize, now: datetime) -> Iterator[dict]:
    for p in range(size.partners):
        yield {"id": partner_id(p), "name": f"Partner {p}", "status": "suspended" if is_suspended(p) else "active",
               "grants": PARTNER_GRANTS, "roles": [], "created_at": now - timedelta(days=400)}


def _issuers(signers: dict[str, SigningKey], now: datetime) -> Iterator[dict]:
    for name, (alg, iss) in ISSUERS.items():
        yield {"id": f"iss_{name}", "issuer": iss, "audience": AUDIENCE, "algorithms": [alg],
               "jwks": jwks(signers[name]), "hmac_secret_sealed": None, "require_at_jwt_typ": True,
               "customer_claim": "customer_numbers", "created_at": now}


def _api_keys(size: SeedSize, now: datetime, kept: list[tuple[str, str]],
              valid: dict[str, list[str]]) -> Iterator[dict]:
    """Per partner: key 0 valid (kept for the load on the first `kept_keys` active partners),
    and of the others one in ten revoked and one in ten expired; every valid key of an active
    partner also goes to `valid`."""
    index = 0
    for p in range(size.partners):
        for k in range(size.keys_per_partner):
            key = opaque.generate(opaque.API_KEY_PREFIX)
            revoked = k % 10 == 9
            expired = k % 10 == 8
            if k == 0 and not is_suspended(p) and len(kept) < size.kept_keys:
                kept.append((partner_id(p), key))
            if not revoked and not expired and not is_suspended(p):
                valid.setdefault(partner_id(p), []).append(key)
            yield {"id": f"key_{index:032x}", "partner_id": partner_id(p), "digest": opaque.digest(key),
                   "name": f"bench-{k}", "grants": [], "roles": [], "customer_numbers": [f"C-{p}"],
                   "created_at": now - timedelta(days=100),
                   "expires_at": now - timedelta(days=1) if expired else (now + timedelta(days=365) if k % 3 else None),
                   "revoked_at": now - timedelta(days=2) if revoked else None}
            index += 1


def _relations(size: SeedSize, now: datetime) -> Iterator[dict]:
    per = size.relations_per_partner
    index = 0
    for p in range(size.partners):
        for j in range(per):
            kind = relation_kind(j, per)
            status = {PENDING_USER: "pending", REVOKED_USER: "revoked"}.get(kind, "active")
            if kind == PENDING_USER:
                expires_at = now + timedelta(days=7)
            elif status == "active" and j % 10 == 3:
                expires_at = now + timedelta(days=365)
            else:
                expires_at = None
            yield {"id": f"rel_{index:032x}", "partner_id": partner_id(p),
                   "subject_type": "organization" if kind == ACTIVE_ORGANIZATION else "user",
                   "subject_id": subject_id(p, j, kind), "status": status,
                   "created_at": now - timedelta(days=30), "updated_at": now - timedelta(days=29),
                   "expires_at": expires_at}
            index += 1


def _oauth_clients(size: SeedSize, count: int, now: datetime, kept: list[OAuthClient]) -> Iterator[dict]:
    """Active confidential clients without scopes of their own (their tokens carry what their
    partner is granted) and without refresh tokens (the default)."""
    for i in range(count):
        client = OAuthClient(oauth_client_partner(size, i), f"cli_{i:032x}",
                             opaque.generate(opaque.CLIENT_SECRET_PREFIX))
        kept.append(client)
        yield {"id": client.client_id, "partner_id": client.partner, "name": f"bench-client-{i}",
               "secret_digest": opaque.digest(client.secret), "scopes": [], "customer_numbers": [f"C-{i}"],
               "refresh_tokens": False, "created_at": now - timedelta(days=10), "secret_rotated_at": None,
               "revoked_at": None}


def _batches(rows: Iterable[dict], size: int = BATCH) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _core_insert(engine: Engine, table, rows: Iterable[dict]) -> None:
    """SQLAlchemy Core insert(), executemany in batches, one transaction."""
    with engine.begin() as connection:
        for batch in _batches(rows):
            connection.execute(insert(table), batch)


def _bulk(engine: Engine, table, rows: Iterable[dict]) -> None:
    if engine.dialect.name == "postgresql":
        _copy(engine, table, rows)
    else:
        _core_insert(engine, table, rows)


def _copy(engine: Engine, table, rows: Iterable[dict]) -> None:
    """PostgreSQL COPY FROM STDIN through psycopg, one transaction. JSON columns go as JSON text,
    timestamps as aware datetimes (timestamptz)."""
    columns: Sequence[str] | None = None
    json_columns = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        iterator = iter(rows)
        first = next(iterator, None)
        if first is None:
            return
        columns = list(first)
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(statement) as copy:
            for row in _chain(first, iterator):
                copy.write_row([json.dumps(row[c]) if c in json_columns else row[c] for c in columns])
        raw.commit()
    finally:
        raw.close()


def _chain(first: dict, rest: Iterator[dict]) -> Iterator[dict]:
    yield first
    yield from rest


# -- databases for a run ------------------------------------------------------------------------

def postgres_admin_url() -> str:
    return os.environ.get("TOLLGATE_BENCH_POSTGRES_URL",
                          os.environ.get("TOLLGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL))


@contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """An empty database for one benchmark store: a SQLite file in a temporary directory, or a
    PostgreSQL database tollgate_bench_<uuid> that is dropped afterwards (even with connections
    left open)."""
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="tollgate-bench-")
        try:
            yield f"sqlite:///{Path(directory) / 'tollgate.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    admin_url = make_url(postgres_admin_url())
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"tollgate_bench_{uuid.uuid4().hex}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description="Seed a benchmark store and time it "
                                     "(the database is dropped afterwards).")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--small", action="store_true", help="1k relations and 100 keys instead of 1M and 100k")
    parser.add_argument("--oauth-clients", type=int, default=OAUTH_CLIENTS,
                        help=f"OAuth clients to seed (default {OAUTH_CLIENTS:,})")
    args = parser.parse_args(argv)
    size = SMALL if args.small else FULL
    with fresh_database(args.store) as url:
        print(f"seeding {args.store} ({size.name})")
        seeded = seed(url, size, oauth_clients=args.oauth_clients)
        print(json.dumps({"counts": seeded.counts, "seconds": {k: round(v, 2) for k, v in seeded.seconds.items()},
                          "kept_keys": len(seeded.api_keys)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
