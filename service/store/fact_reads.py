"""The facts Check, credential verification and the token grants read (domain.ports.Facts), read
with SQLAlchemy Core on one connection in one read-only transaction.

These reads run on every check the fact cache does not answer (and on every check with the cache
off), so they skip what the ORM adds for nothing here: a Session per unit of work, building each
statement anew (and with it its cache key), and loading rows into identity-mapped objects. Each
statement is built once, at import, with bound parameters: SQLAlchemy compiles it once per
dialect and reuses the compiled form; a read is one execute and one row. The records are made by
the same functions as the repositories' (repositories.py), from rows with the same column names,
so both read paths give equal records (tests/store run both).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, or_, select

from ..domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    RefreshFamilyRecord,
    RelationRecord,
    RelationStatus,
    SigningKeyRecord,
    SubjectType,
)
from ..domain.ports import FactSnapshot
from .models import (
    ApiKeyRow,
    IssuerRow,
    OAuthClientRow,
    PartnerRow,
    RefreshFamilyRow,
    RelationRow,
    RevokedAccessTokenRow,
    RevokedTokenRow,
    SigningKeyRow,
    StoreRevisionRow,
)
from .records import (
    api_key_record,
    issuer_record,
    oauth_client_record,
    partner_record,
    refresh_family_record,
    relation_record,
    signing_key_record,
    storable,
)
from .repositories import OPEN_STATUSES
from .unit_of_work import translated_errors

_partners = PartnerRow.__table__.c
_api_keys = ApiKeyRow.__table__.c
_issuers = IssuerRow.__table__.c
_revoked = RevokedTokenRow.__table__.c
_relations = RelationRow.__table__.c
_clients = OAuthClientRow.__table__.c
_families = RefreshFamilyRow.__table__.c
_revoked_access = RevokedAccessTokenRow.__table__.c
_signing = SigningKeyRow.__table__.c

_PARTNER = select(PartnerRow.__table__).where(_partners.id == bindparam("id"))
_API_KEY_BY_DIGEST = select(ApiKeyRow.__table__).where(_api_keys.digest == bindparam("digest"))
_ISSUER_BY_ISS = select(IssuerRow.__table__).where(_issuers.issuer == bindparam("issuer"))
_TOKEN_REVOKED = select(exists().where(_revoked.issuer_id == bindparam("issuer_id"), _revoked.jti == bindparam("jti")))
_TRIPLE = (_relations.partner_id == bindparam("partner_id"), _relations.subject_type == bindparam("subject_type"),
           _relations.subject_id == bindparam("subject_id"))
_OPEN_RELATION = select(RelationRow.__table__).where(*_TRIPLE, _relations.status.in_(OPEN_STATUSES))
# One EXISTS over ix_relations_triple, asked on every relation-bound check.
_RELATION_ACTIVE = select(exists().where(
    *_TRIPLE, _relations.status == RelationStatus.ACTIVE.value,
    or_(_relations.expires_at.is_(None), _relations.expires_at > bindparam("now"))))
_CLIENT = select(OAuthClientRow.__table__).where(_clients.id == bindparam("id"))
_FAMILY = select(RefreshFamilyRow.__table__).where(_families.id == bindparam("id"))
_ACCESS_TOKEN_REVOKED = select(exists().where(_revoked_access.jti == bindparam("jti")))
_ACTIVE_SIGNING_KEY = select(SigningKeyRow.__table__).where(_signing.active.is_(True))
_PUBLISHED_SIGNING_KEYS = (select(SigningKeyRow.__table__)
                           .where(or_(_signing.publish_until.is_(None), _signing.publish_until > bindparam("now")))
                           .order_by(_signing.created_at.desc(), _signing.kid))
_REVISION = select(StoreRevisionRow.__table__.c.revision).where(StoreRevisionRow.__table__.c.id == 1)
_REVOKED_TOKEN_IDS = select(_revoked.issuer_id, _revoked.jti)
_REVOKED_ACCESS_TOKEN_IDS = select(_revoked_access.jti)
_SIGNING_KEYS = select(SigningKeyRow.__table__).order_by(_signing.created_at.desc(), _signing.kid)

# Connection.execute, as each reader holds it.
_Execute = Callable[..., Any]


class SqlFactReads:
    """Opens readings of the facts: `with fact_reads() as facts: ...`, one read-only transaction."""

    def __init__(self, engine: Engine, watched: Callable[[], AbstractContextManager[None]]) -> None:
        self._engine = engine
        self._watched = watched

    @contextmanager
    def __call__(self) -> Iterator[FactSnapshot]:
        """Raises StoreUnavailable when the store cannot be reached (on entry, or on any read)."""
        with translated_errors(), self._watched(), self._engine.connect() as connection, connection.begin():
            yield SqlFacts(connection)


class SqlFacts:
    """domain.ports.FactSnapshot on one connection."""

    def __init__(self, connection: Connection) -> None:
        self._execute = execute = connection.execute
        self.partners = _Partners(execute)
        self.api_keys = _ApiKeys(execute)
        self.issuers = _Issuers(execute)
        self.revoked_tokens = _RevokedTokens(execute)
        self.relations = _Relations(execute)
        self.oauth_clients = _OAuthClients(execute)
        self.refresh_tokens = _RefreshFamilies(execute)
        self.revoked_access_tokens = _RevokedAccessTokens(execute)
        self.signing_keys = _SigningKeys(execute)

    def revision(self) -> int:
        return int(self._execute(_REVISION).scalar_one())

    def revoked_token_ids(self) -> frozenset[tuple[str, str]]:
        return frozenset((issuer_id, jti) for issuer_id, jti in self._execute(_REVOKED_TOKEN_IDS))

    def revoked_access_token_ids(self) -> frozenset[str]:
        return frozenset(self._execute(_REVOKED_ACCESS_TOKEN_IDS).scalars())


class _Reader:
    __slots__ = ("_execute",)

    def __init__(self, execute: _Execute) -> None:
        self._execute = execute


class _Partners(_Reader):
    def get(self, partner_id: str) -> PartnerRecord | None:
        if not storable(partner_id):
            return None
        row = self._execute(_PARTNER, {"id": partner_id}).first()
        return partner_record(row) if row is not None else None


class _ApiKeys(_Reader):
    def find_by_digest(self, digest: str) -> ApiKeyRecord | None:
        if not storable(digest):
            return None
        row = self._execute(_API_KEY_BY_DIGEST, {"digest": digest}).first()
        return api_key_record(row) if row is not None else None


class _Issuers(_Reader):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        if not storable(issuer):  # `iss` comes from a token not yet verified
            return None
        row = self._execute(_ISSUER_BY_ISS, {"issuer": issuer}).first()
        return issuer_record(row) if row is not None else None


class _RevokedTokens(_Reader):
    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        if not storable(issuer_id, jti):
            return False
        return bool(self._execute(_TOKEN_REVOKED, {"issuer_id": issuer_id, "jti": jti}).scalar())


class _Relations(_Reader):
    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        if not storable(partner_id, subject_id):
            return None
        row = self._execute(_OPEN_RELATION, {"partner_id": partner_id, "subject_type": subject_type.value,
                                             "subject_id": subject_id}).first()
        return relation_record(row) if row is not None else None

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        if not storable(partner_id, subject_id):
            return False
        return bool(self._execute(_RELATION_ACTIVE, {"partner_id": partner_id, "subject_type": subject_type.value,
                                                     "subject_id": subject_id, "now": now}).scalar())


class _OAuthClients(_Reader):
    def get(self, client_id: str) -> OAuthClientRecord | None:
        if not storable(client_id):  # a client id comes from an unauthenticated request
            return None
        row = self._execute(_CLIENT, {"id": client_id}).first()
        return oauth_client_record(row) if row is not None else None


class _RefreshFamilies(_Reader):
    def get_family(self, family_id: str) -> RefreshFamilyRecord | None:
        if not storable(family_id):
            return None
        row = self._execute(_FAMILY, {"id": family_id}).first()
        return refresh_family_record(row) if row is not None else None


class _RevokedAccessTokens(_Reader):
    def is_revoked(self, jti: str) -> bool:
        if not storable(jti):
            return False
        return bool(self._execute(_ACCESS_TOKEN_REVOKED, {"jti": jti}).scalar())


class _SigningKeys(_Reader):
    def active(self) -> SigningKeyRecord | None:
        row = self._execute(_ACTIVE_SIGNING_KEY).first()
        return signing_key_record(row) if row is not None else None

    def published(self, now: datetime) -> list[SigningKeyRecord]:
        return [signing_key_record(row) for row in self._execute(_PUBLISHED_SIGNING_KEYS, {"now": now})]

    def list(self) -> builtins.list[SigningKeyRecord]:
        return [signing_key_record(row) for row in self._execute(_SIGNING_KEYS)]
