"""A running Tollgate server on a free port with a seeded store, and a client for it.

The store is seeded through its repositories (the real SQL store); every call goes over a real
gRPC channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc, relations_pb2, relations_pb2_grpc

from service.config import load_settings
from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    PartnerRecord,
    PartnerStatus,
    RelationRecord,
    RelationStatus,
    SubjectType,
)
from service.server import App, build_app
from service.tokens import new_key_encryption_key, seal_secret

from .clock import MovableClock
from .keys import SigningKey, access_token_claims, generate_signing_key, jwks
from .processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = PROJECT_ROOT / "examples" / "policy.yaml"
AUDIENCE = "https://api.example.test"


@dataclass
class World:
    app: App
    clock: MovableClock
    channel: grpc.Channel
    keys: dict[str, str] = field(default_factory=dict)  # name -> plaintext API key
    key_ids: dict[str, str] = field(default_factory=dict)
    signers: dict[str, SigningKey] = field(default_factory=dict)  # issuer name -> current key
    issuers: dict[str, str] = field(default_factory=dict)  # issuer name -> iss

    @property
    def authorization(self) -> authorization_pb2_grpc.AuthorizationStub:
        return authorization_pb2_grpc.AuthorizationStub(self.channel)

    @property
    def relations(self) -> relations_pb2_grpc.RelationsStub:
        return relations_pb2_grpc.RelationsStub(self.channel)

    def check(self, operation: str = "", *, authorization: str = "", api_key: str = "", permissions=(),
              user_id: str = "", organization_id: str = "", customer_id: str = "") -> authorization_pb2.CheckResponse:
        request = authorization_pb2.CheckRequest(
            authorization=authorization, api_key=api_key, operation=operation, permissions=list(permissions),
            resource=authorization_pb2.Resource(user_id=user_id, organization_id=organization_id,
                                                customer_id=customer_id))
        return self.authorization.Check(request, timeout=10)

    def bearer(self, key_name: str) -> str:
        return f"Bearer {self.keys[key_name]}"

    def manage(self, key_name: str, **action) -> relations_pb2.ManageRelationResponse:
        return self.relations.ManageRelation(relations_pb2.ManageRelationRequest(**action),
                                             metadata=[("authorization", self.bearer(key_name))], timeout=10)

    def jwt(self, issuer_name: str, partner_id: str = "acme", *, signer: SigningKey | None = None,
            lifetime: int = 300, **claims) -> str:
        base = access_token_claims(self.issuers[issuer_name], AUDIENCE, partner_id, lifetime=lifetime,
                                   now=self.clock.now())
        base.update(claims)
        return (signer or self.signers[issuer_name]).sign({k: v for k, v in base.items() if v is not None})

    def seed(self):
        return self.app.store.unit_of_work()


def start_world(database_url: str, data_dir: Path, **settings) -> World:
    clock = MovableClock()
    kek = new_key_encryption_key()
    app = _started_app(database_url, data_dir, clock, kek, settings)
    world = World(app, clock, grpc.insecure_channel(f"127.0.0.1:{app.port}"))
    _seed(world, kek)
    return world


def start_replica(world: World, data_dir: Path, **settings) -> World:
    """Another server on `world`'s database, as a second replica would be: same key-encryption key
    and issuer URL, its own caches, clock and port; the seeded facts (and their names) are world's."""
    settings.setdefault("issuer_url", world.app.settings.token_issuer)
    clock = MovableClock(world.clock.now())
    app = _started_app(world.app.settings.database_url, data_dir, clock, world.app.settings.key_encryption_key,
                       settings)
    return World(app, clock, grpc.insecure_channel(f"127.0.0.1:{app.port}"), keys=world.keys, key_ids=world.key_ids,
                 signers=world.signers, issuers=world.issuers)


def _started_app(database_url: str, data_dir: Path, clock: MovableClock, kek: str, settings: dict) -> App:
    settings.setdefault("metrics_port", 0)
    settings.setdefault("http_port", free_port())
    settings.setdefault("policy_path", EXAMPLE_POLICY)
    config = load_settings(environ={}, host="127.0.0.1", port=0, database_url=database_url, data_dir=data_dir,
                           key_encryption_key=kek, **settings)
    app = build_app(config, clock=clock)
    try:
        app.start()
    except BaseException:
        app.stop(grace=0)  # a half-started server must not leave its threads to later tests
        raise
    return app


def stop_world(world: World) -> None:
    world.channel.close()
    world.app.stop(grace=0)


# -- the seeded facts ---------------------------------------------------------------------------

PARTNERS = {
    "acme": (PartnerStatus.ACTIVE, ("user:write", "organization:read", "court-booking:write", "order:read"), ()),
    "globex": (PartnerStatus.ACTIVE, (), ("reader",)),
    "platform": (PartnerStatus.ACTIVE, (), ("platform",)),
    "shady": (PartnerStatus.SUSPENDED, ("admin",), ()),
}

# name -> (partner, grants, roles, customer numbers, expires in seconds or None, revoked)
API_KEYS = {
    "acme": ("acme", (), (), ("C-1", "C-2"), None, False),
    "acme-reader": ("acme", ("read:user",), (), (), None, False),
    "acme-expired": ("acme", (), (), (), -60, False),
    "acme-revoked": ("acme", (), (), (), None, True),
    "globex": ("globex", (), (), (), None, False),
    "platform": ("platform", (), (), (), None, False),
    "shady": ("shady", (), (), (), None, False),
}


def _seed(world: World, kek: str) -> None:
    now = world.clock.now()
    with world.seed() as repos:
        for partner_id, (status, grants, roles) in PARTNERS.items():
            repos.partners.add(PartnerRecord(partner_id, partner_id.title(), status, grants, roles, now))
        for name, (partner, grants, roles, customers, expires_in, revoked) in API_KEYS.items():
            key = opaque.generate(opaque.API_KEY_PREFIX)
            record = ApiKeyRecord(
                new_id("key"), partner, opaque.digest(key), name, grants, roles, customers, now,
                expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None,
                revoked_at=now if revoked else None)
            repos.api_keys.add(record)
            world.keys[name], world.key_ids[name] = key, record.id
        _seed_issuers(world, repos, kek, now)
        _relation(repos, "acme", SubjectType.USER, "u-active", RelationStatus.ACTIVE, now, None)
        _relation(repos, "acme", SubjectType.USER, "u-pending", RelationStatus.PENDING, now, now + timedelta(days=7))
        _relation(repos, "acme", SubjectType.USER, "u-lapsed", RelationStatus.ACTIVE, now, now - timedelta(seconds=1))
        _relation(repos, "acme", SubjectType.ORGANIZATION, "o-active", RelationStatus.ACTIVE, now, None)
        _relation(repos, "globex", SubjectType.USER, "u-active", RelationStatus.ACTIVE, now, None)


ISSUER_ALGORITHMS = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA", "hmac": "HS256"}


def _seed_issuers(world: World, repos, kek: str, now) -> None:
    for name, alg in ISSUER_ALGORITHMS.items():
        signer = generate_signing_key(alg, f"{name}-1")
        iss = f"https://{name}.issuer.test"
        hmac = alg.startswith("HS")
        repos.issuers.add(IssuerRecord(
            id=f"iss_{name}", issuer=iss, audience=AUDIENCE, algorithms=(alg,),
            jwks=None if hmac else jwks(signer), hmac_secret_sealed=seal_secret(signer.secret, kek) if hmac else None,
            require_at_jwt_typ=True, customer_claim="customer_numbers", created_at=now))
        world.signers[name], world.issuers[name] = signer, iss


def _relation(repos, partner, subject_type, subject_id, status, now, expires_at) -> None:
    repos.relations.insert_open(RelationRecord(new_id("rel"), partner, subject_type, subject_id, status, now, now,
                                               expires_at))
