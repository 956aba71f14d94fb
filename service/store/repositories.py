"""The repositories of service/domain/ports.py on one SQLAlchemy session (one transaction).

They never commit: the unit of work does. Reads return domain records, never rows. Inserts are
INSERT statements rather than session.add(), so a duplicate is an IntegrityError from the
database (not an identity-map clash) and the identity map never holds a row twice. Changes are
single UPDATE statements whose WHERE clause is the precondition (compare-and-set); the ORM keeps
rows already loaded in this session in step with them (synchronize_session).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Insert, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..domain.errors import Conflict, InvalidRequest
from ..domain.model import (
    AdminAuditRecord,
    ApiKeyRecord,
    ConnectTokenRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    RelationEventRecord,
    RelationFilter,
    RelationRecord,
    RelationStatus,
    RemoteKeys,
    SigningKeyRecord,
    SubjectType,
)
from .models import (
    AdminAuditRow,
    ApiKeyRow,
    ConnectTokenRow,
    IssuerRow,
    OAuthClientRow,
    PartnerRow,
    RefreshFamilyRow,
    RefreshTokenRow,
    RelationEventRow,
    RelationRow,
    RevokedAccessTokenRow,
    RevokedTokenRow,
    SigningKeyRow,
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

OPEN_STATUSES = (RelationStatus.PENDING.value, RelationStatus.ACTIVE.value)


class _Repository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _inserted(self, statement: Insert) -> bool:
        """Runs the INSERT in a savepoint; False when a unique constraint refused it. Only the
        savepoint is rolled back, so the transaction stays usable (PostgreSQL would otherwise
        abort it)."""
        try:
            with self._session.begin_nested():
                self._session.execute(statement)
        except IntegrityError:
            return False
        return True


# -- partners ------------------------------------------------------------------------------------


class SqlPartnerRepository(_Repository):
    def get(self, partner_id: str) -> PartnerRecord | None:
        if not storable(partner_id):
            return None
        row = self._session.get(PartnerRow, partner_id)
        return partner_record(row) if row is not None else None

    def add(self, partner: PartnerRecord) -> None:
        statement = insert(PartnerRow).values(
            id=partner.id, name=partner.name, status=partner.status.value, grants=list(partner.grants),
            roles=list(partner.roles), created_at=partner.created_at)
        if not self._inserted(statement):
            raise Conflict(f"partner {partner.id} already exists", reason="partner_exists", field="partner_id")

    def set_status(self, partner_id: str, status: PartnerStatus) -> bool:
        return _update_one(self._session, PartnerRow, PartnerRow.id == partner_id, status=status.value)

    def set_grants(self, partner_id: str, grants: tuple[str, ...], roles: tuple[str, ...]) -> bool:
        return _update_one(self._session, PartnerRow, PartnerRow.id == partner_id,
                           grants=list(grants), roles=list(roles))

    def list(self) -> list[PartnerRecord]:
        return [partner_record(row) for row in self._session.scalars(select(PartnerRow).order_by(PartnerRow.id))]



# -- API keys ------------------------------------------------------------------------------------


class SqlApiKeyRepository(_Repository):
    def find_by_digest(self, digest: str) -> ApiKeyRecord | None:
        if not storable(digest):
            return None
        row = self._session.scalars(select(ApiKeyRow).where(ApiKeyRow.digest == digest)).one_or_none()
        return api_key_record(row) if row is not None else None

    def get(self, key_id: str) -> ApiKeyRecord | None:
        if not storable(key_id):
            return None
        row = self._session.get(ApiKeyRow, key_id)
        return api_key_record(row) if row is not None else None

    def add(self, key: ApiKeyRecord) -> None:
        self._session.execute(insert(ApiKeyRow).values(
            id=key.id, partner_id=key.partner_id, digest=key.digest, name=key.name, grants=list(key.grants),
            roles=list(key.roles), customer_numbers=list(key.customer_numbers), created_at=key.created_at,
            expires_at=key.expires_at, revoked_at=key.revoked_at))

    def revoke(self, key_id: str, at: datetime) -> bool:
        return _update_one(self._session, ApiKeyRow, (ApiKeyRow.id == key_id) & ApiKeyRow.revoked_at.is_(None),
                           revoked_at=at)

    def list_for_partner(self, partner_id: str) -> list[ApiKeyRecord]:
        rows = self._session.scalars(select(ApiKeyRow).where(ApiKeyRow.partner_id == partner_id)
                                     .order_by(ApiKeyRow.created_at, ApiKeyRow.id))
        return [api_key_record(row) for row in rows]



# -- JWT issuers and revoked tokens --------------------------------------------------------------


class SqlIssuerRepository(_Repository):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        if not storable(issuer):  # `iss` comes from a token not yet verified
            return None
        row = self._session.scalars(select(IssuerRow).where(IssuerRow.issuer == issuer)).one_or_none()
        return issuer_record(row) if row is not None else None

    def get(self, issuer_id: str) -> IssuerRecord | None:
        if not storable(issuer_id):
            return None
        row = self._session.get(IssuerRow, issuer_id)
        return issuer_record(row) if row is not None else None

    def add(self, issuer: IssuerRecord) -> None:
        statement = insert(IssuerRow).values(
            id=issuer.id, issuer=issuer.issuer, audience=issuer.audience, algorithms=list(issuer.algorithms),
            jwks=issuer.jwks, hmac_secret_sealed=issuer.hmac_secret_sealed,
            require_at_jwt_typ=issuer.require_at_jwt_typ, customer_claim=issuer.customer_claim,
            created_at=issuer.created_at, **_remote_columns(issuer.remote))
        # A taken id or a taken iss: either way this issuer is already registered.
        if not self._inserted(statement):
            raise Conflict(f"issuer {issuer.issuer} is already registered", reason="issuer_exists", field="issuer")

    def replace_keys(self, issuer_id: str, jwks: dict) -> bool:
        return _update_one(self._session, IssuerRow, IssuerRow.id == issuer_id, jwks=jwks)

    def list(self) -> list[IssuerRecord]:
        return [issuer_record(row) for row in self._session.scalars(select(IssuerRow).order_by(IssuerRow.issuer))]

    def list_remote(self) -> builtins.list[IssuerRecord]:
        query = select(IssuerRow).where(IssuerRow.jwks_uri.is_not(None)).order_by(IssuerRow.issuer)
        return [issuer_record(row) for row in self._session.scalars(query)]

    def claim_fetch(self, issuer_id: str, now: datetime, until: datetime) -> bool:
        free = or_(IssuerRow.fetch_claimed_until.is_(None), IssuerRow.fetch_claimed_until <= now)
        # Still due: a process that saw it due before another fetched it must not fetch again.
        due = or_(IssuerRow.keys_refresh_at.is_(None), IssuerRow.keys_refresh_at <= now)
        return _update_one(self._session, IssuerRow, (IssuerRow.id == issuer_id) & free & due,
                           fetch_claimed_until=until)

    def claim_refetch(self, issuer_id: str, now: datetime, not_before: datetime) -> bool:
        free = or_(IssuerRow.refetch_not_before.is_(None), IssuerRow.refetch_not_before <= now)
        return _update_one(self._session, IssuerRow, (IssuerRow.id == issuer_id) & free, refetch_not_before=not_before)

    def record_fetch_success(self, issuer_id: str, jwks: dict, fetched_at: datetime, refresh_at: datetime,
                             jwks_uri: str) -> None:
        _update_one(self._session, IssuerRow, IssuerRow.id == issuer_id, jwks=jwks, jwks_uri=jwks_uri,
                    keys_fetched_at=fetched_at,
                    keys_refresh_at=refresh_at, fetch_failures=0, fetch_claimed_until=None)

    def record_fetch_failure(self, issuer_id: str, error: str, at: datetime, retry_at: datetime) -> None:
        _update_one(self._session, IssuerRow, IssuerRow.id == issuer_id, fetch_error=error, fetch_error_at=at,
                    keys_refresh_at=retry_at, fetch_failures=IssuerRow.fetch_failures + 1, fetch_claimed_until=None)


def _remote_columns(remote: RemoteKeys | None) -> dict[str, Any]:
    if remote is None:
        return {}
    return {"jwks_uri": remote.jwks_uri, "discovery_url": remote.discovery_url, "keys_fetched_at": remote.fetched_at,
            "keys_refresh_at": remote.refresh_at, "fetch_error": remote.error, "fetch_error_at": remote.error_at,
            "fetch_failures": remote.failures}



def _insert_ignoring_duplicates(session: Session, model: type, index_elements: list[str], **values: Any) -> None:
    """INSERT … ON CONFLICT DO NOTHING: idempotent without a read first."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(model).values(**values).on_conflict_do_nothing(index_elements=index_elements))


class SqlRevokedTokenRepository(_Repository):
    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        if not storable(issuer_id, jti):
            return False
        # Primary-key lookup, without loading the row.
        query = select(exists().where(RevokedTokenRow.issuer_id == issuer_id, RevokedTokenRow.jti == jti))
        return bool(self._session.scalar(query))

    def revoke(self, issuer_id: str, jti: str, at: datetime, expires_at: datetime | None) -> None:
        # The database skips a second revocation of the same jti.
        _insert_ignoring_duplicates(self._session, RevokedTokenRow, ["issuer_id", "jti"], issuer_id=issuer_id,
                                    jti=jti, revoked_at=at, expires_at=expires_at)


# -- relations -----------------------------------------------------------------------------------


class SqlRelationRepository(_Repository):
    def get(self, relation_id: str) -> RelationRecord | None:
        if not storable(relation_id):
            return None
        row = self._session.scalars(select(RelationRow).where(RelationRow.id == relation_id)).one_or_none()
        return relation_record(row) if row is not None else None

    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        if not storable(partner_id, subject_id):
            return None
        query = select(RelationRow).where(*_triple(partner_id, subject_type, subject_id),
                                          RelationRow.status.in_(OPEN_STATUSES))
        row = self._session.scalars(query).one_or_none()
        return relation_record(row) if row is not None else None

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        # Check asks this on every relation-bound request: one EXISTS over ix_relations_triple.
        if not storable(partner_id, subject_id):
            return False
        query = select(exists().where(
            *_triple(partner_id, subject_type, subject_id), RelationRow.status == RelationStatus.ACTIVE.value,
            or_(RelationRow.expires_at.is_(None), RelationRow.expires_at > now)))
        return bool(self._session.scalar(query))

    def insert_open(self, relation: RelationRecord) -> bool:
        if relation.status.value not in OPEN_STATUSES:
            raise ValueError(f"insert_open takes a pending or active relation, not {relation.status.value}")
        statement = insert(RelationRow).values(
            id=relation.id, partner_id=relation.partner_id, subject_type=relation.subject_type.value,
            subject_id=relation.subject_id, status=relation.status.value, created_at=relation.created_at,
            updated_at=relation.updated_at, expires_at=relation.expires_at)
        # uq_relations_open decides: False when another open relation of the triple exists, or
        # was inserted concurrently (PostgreSQL makes this insert wait for that one's commit).
        return self._inserted(statement)

    def transition(self, relation_id: str, from_status: RelationStatus, to_status: RelationStatus, at: datetime,
                   expires_at: datetime | None) -> bool:
        return _update_one(self._session, RelationRow,
                           (RelationRow.id == relation_id) & (RelationRow.status == from_status.value),
                           status=to_status.value, updated_at=at, expires_at=expires_at)

    def append_event(self, event: RelationEventRecord) -> RelationEventRecord:
        statement = insert(RelationEventRow).values(
            relation_id=event.relation_id, actor=event.actor, at=event.at,
            from_status=event.from_status.value if event.from_status is not None else None,
            to_status=event.to_status.value, reason=event.reason).returning(RelationEventRow.id)
        return RelationEventRecord(
            relation_id=event.relation_id, actor=event.actor, at=event.at, from_status=event.from_status,
            to_status=event.to_status, reason=event.reason, id=self._session.execute(statement).scalar_one())

    def events(self, relation_id: str) -> list[RelationEventRecord]:
        rows = self._session.scalars(select(RelationEventRow).where(RelationEventRow.relation_id == relation_id)
                                     .order_by(RelationEventRow.id))
        return [_event(row) for row in rows]

    def list(self, relation_filter: RelationFilter, page_size: int,
             page_token: str) -> tuple[list[RelationRecord], str]:
        if page_size < 1:
            raise InvalidRequest("page_size must be positive", field="page_size")
        # Keyset paging on seq: stable while rows are added, and no OFFSET scan.
        query = (select(RelationRow)
                 .where(RelationRow.seq > _decode_page_token(page_token), *_filtered(relation_filter))
                 .order_by(RelationRow.seq).limit(page_size + 1))  # one more tells whether a next page exists
        rows = self._session.scalars(query).all()
        page = rows[:page_size]
        next_token = _encode_page_token(page[-1].seq) if len(rows) > page_size else ""
        return [relation_record(row) for row in page], next_token

    def due_for_expiry(self, now: datetime, limit: int) -> builtins.list[RelationRecord]:
        query = (select(RelationRow)
                 .where(RelationRow.status.in_(OPEN_STATUSES), RelationRow.expires_at <= now)
                 .order_by(RelationRow.expires_at, RelationRow.seq).limit(limit))
        return [relation_record(row) for row in self._session.scalars(query)]


def _triple(partner_id: str, subject_type: SubjectType, subject_id: str) -> tuple[ColumnElement[bool], ...]:
    return (RelationRow.partner_id == partner_id, RelationRow.subject_type == subject_type.value,
            RelationRow.subject_id == subject_id)


def _filtered(relation_filter: RelationFilter) -> list[ColumnElement[bool]]:
    conditions = []
    if relation_filter.partner_id is not None:
        conditions.append(RelationRow.partner_id == relation_filter.partner_id)
    if relation_filter.subject_type is not None:
        conditions.append(RelationRow.subject_type == relation_filter.subject_type.value)
    if relation_filter.subject_id is not None:
        conditions.append(RelationRow.subject_id == relation_filter.subject_id)
    if relation_filter.status is not None:
        conditions.append(RelationRow.status == relation_filter.status.value)
    return conditions



def _event(row: RelationEventRow) -> RelationEventRecord:
    return RelationEventRecord(
        relation_id=row.relation_id, actor=row.actor, at=row.at,
        from_status=RelationStatus(row.from_status) if row.from_status is not None else None,
        to_status=RelationStatus(row.to_status), reason=row.reason, id=row.id)


# Page tokens: urlsafe base64 of "r1:<seq>" without padding. Only the exact encoding this module
# produces is accepted, so a token is opaque to clients and anything else is refused.
_PAGE_TOKEN_PREFIX = "r1:"
_PAGE_TOKEN_SEQ = re.compile(r"[1-9][0-9]{0,17}")  # below 2**63 on every backend


def _encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_PAGE_TOKEN_PREFIX}{seq}".encode()).decode().rstrip("=")


def _decode_page_token(token: str) -> int:
    """The seq after which the page starts; 0 for the first page (no token)."""
    if not token:
        return 0
    seq = _page_token_seq(token)
    # Re-encoding must give the token back: no padding, whitespace or other spelling gets through.
    if seq is None or _encode_page_token(seq) != token:
        raise InvalidRequest("page_token is not valid", field="page_token")
    return seq


def _page_token_seq(token: str) -> int | None:
    if len(token) > 64:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    digits = text.removeprefix(_PAGE_TOKEN_PREFIX)
    return int(digits) if text.startswith(_PAGE_TOKEN_PREFIX) and _PAGE_TOKEN_SEQ.fullmatch(digits) else None


# -- connect tokens ------------------------------------------------------------------------------


class SqlConnectTokenRepository(_Repository):
    def add(self, token: ConnectTokenRecord) -> None:
        self._session.execute(insert(ConnectTokenRow).values(
            id=token.id, digest=token.digest, organization_id=token.organization_id, issued_by=token.issued_by,
            created_at=token.created_at, expires_at=token.expires_at,
            relation_ttl_seconds=token.relation_ttl_seconds, used_at=token.used_at,
            used_by_partner_id=token.used_by_partner_id))

    def find_by_digest(self, digest: str) -> ConnectTokenRecord | None:
        if not storable(digest):
            return None
        row = self._session.scalars(select(ConnectTokenRow).where(ConnectTokenRow.digest == digest)).one_or_none()
        return _connect_token(row) if row is not None else None

    def mark_used(self, token_id: str, partner_id: str, at: datetime) -> bool:
        # The WHERE clause is the claim: of racing transactions exactly one matches the row; the
        # others wait for its lock (PostgreSQL) or the write lock (SQLite) and then match nothing.
        claimable = ((ConnectTokenRow.id == token_id) & ConnectTokenRow.used_at.is_(None)
                     & (ConnectTokenRow.expires_at > at))
        return _update_one(self._session, ConnectTokenRow, claimable, used_at=at, used_by_partner_id=partner_id)


def _connect_token(row: ConnectTokenRow) -> ConnectTokenRecord:
    return ConnectTokenRecord(
        id=row.id, digest=row.digest, organization_id=row.organization_id, issued_by=row.issued_by,
        created_at=row.created_at, expires_at=row.expires_at, relation_ttl_seconds=row.relation_ttl_seconds,
        used_at=row.used_at, used_by_partner_id=row.used_by_partner_id)


# -- shared --------------------------------------------------------------------------------------



def _update_one(session: Session, model: type, where: ColumnElement[bool], **values: Any) -> bool:
    """One UPDATE … WHERE `where`; True when it changed exactly one row."""
    result = session.execute(update(model).where(where).values(**values))
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult


# -- admin audit ---------------------------------------------------------------------------------


class SqlAdminAuditRepository(_Repository):
    def append(self, record: AdminAuditRecord) -> AdminAuditRecord:
        statement = insert(AdminAuditRow).values(
            actor=record.actor, action=record.action, target=record.target, at=record.at, outcome=record.outcome,
            details=record.details).returning(AdminAuditRow.id)
        return AdminAuditRecord(
            actor=record.actor, action=record.action, target=record.target, at=record.at, outcome=record.outcome,
            details=record.details, id=self._session.execute(statement).scalar_one())

    def list(self, *, actor: str | None, action: str | None, since: datetime | None, until: datetime | None,
             page_size: int, page_token: str) -> tuple[list[AdminAuditRecord], str]:
        if page_size < 1:
            raise InvalidRequest("page_size must be positive", field="page_size")
        if not storable(actor or "", action or ""):
            return [], ""
        conditions = [AdminAuditRow.id > _decode_audit_page_token(page_token)]
        if actor is not None:
            conditions.append(AdminAuditRow.actor == actor)
        if action is not None:
            conditions.append(AdminAuditRow.action == action)
        if since is not None:
            conditions.append(AdminAuditRow.at >= since)
        if until is not None:
            conditions.append(AdminAuditRow.at < until)
        # Keyset paging on id (insertion order), one more row than the page to know if one follows.
        rows = self._session.scalars(select(AdminAuditRow).where(*conditions).order_by(AdminAuditRow.id)
                                     .limit(page_size + 1)).all()
        page = rows[:page_size]
        next_token = _encode_audit_page_token(page[-1].id) if len(rows) > page_size else ""
        return [_audit(row) for row in page], next_token


def _audit(row: AdminAuditRow) -> AdminAuditRecord:
    return AdminAuditRecord(actor=row.actor, action=row.action, target=row.target, at=row.at, outcome=row.outcome,
                            details=dict(row.details or {}), id=row.id)


# Audit page tokens: urlsafe base64 of "a1:<id>" without padding, decoded as strictly as the
# relation page tokens (and never accepted for one another).
_AUDIT_PAGE_TOKEN_PREFIX = "a1:"


def _encode_audit_page_token(audit_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_AUDIT_PAGE_TOKEN_PREFIX}{audit_id}".encode()).decode().rstrip("=")


def _decode_audit_page_token(token: str) -> int:
    """The id after which the page starts; 0 for the first page (no token)."""
    if not token:
        return 0
    audit_id = None
    if len(token) <= 64:
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        except (binascii.Error, UnicodeError, ValueError):
            text = ""
        digits = text.removeprefix(_AUDIT_PAGE_TOKEN_PREFIX)
        if text.startswith(_AUDIT_PAGE_TOKEN_PREFIX) and _PAGE_TOKEN_SEQ.fullmatch(digits):
            audit_id = int(digits)
    if audit_id is None or _encode_audit_page_token(audit_id) != token:
        raise InvalidRequest("page_token is not valid", field="page_token")
    return audit_id


# -- Tollgate's own token service ----------------------------------------------------------------


class SqlOAuthClientRepository(_Repository):
    def get(self, client_id: str) -> OAuthClientRecord | None:
        if not storable(client_id):  # a client id comes from an unauthenticated request
            return None
        row = self._session.get(OAuthClientRow, client_id)
        return oauth_client_record(row) if row is not None else None

    def add(self, client: OAuthClientRecord) -> None:
        self._session.execute(insert(OAuthClientRow).values(
            id=client.id, partner_id=client.partner_id, name=client.name, secret_digest=client.secret_digest,
            scopes=list(client.scopes), customer_numbers=list(client.customer_numbers),
            refresh_tokens=client.refresh_tokens, created_at=client.created_at,
            secret_rotated_at=client.secret_rotated_at, revoked_at=client.revoked_at))

    def list_for_partner(self, partner_id: str | None) -> list[OAuthClientRecord]:
        query = select(OAuthClientRow).order_by(OAuthClientRow.created_at, OAuthClientRow.id)
        if partner_id is not None:
            query = query.where(OAuthClientRow.partner_id == partner_id)
        return [oauth_client_record(row) for row in self._session.scalars(query)]

    def set_secret(self, client_id: str, secret_digest: str, at: datetime) -> bool:
        return _update_one(self._session, OAuthClientRow,
                           (OAuthClientRow.id == client_id) & OAuthClientRow.revoked_at.is_(None),
                           secret_digest=secret_digest, secret_rotated_at=at)

    def revoke(self, client_id: str, at: datetime) -> bool:
        return _update_one(self._session, OAuthClientRow,
                           (OAuthClientRow.id == client_id) & OAuthClientRow.revoked_at.is_(None), revoked_at=at)



class SqlRefreshTokenRepository(_Repository):
    def add_family(self, family: RefreshFamilyRecord) -> None:
        self._session.execute(insert(RefreshFamilyRow).values(
            id=family.id, client_id=family.client_id, scope=list(family.scope), created_at=family.created_at,
            revoked_at=family.revoked_at))

    def get_family(self, family_id: str) -> RefreshFamilyRecord | None:
        if not storable(family_id):
            return None
        row = self._session.get(RefreshFamilyRow, family_id)
        return refresh_family_record(row) if row is not None else None

    def add(self, token: RefreshTokenRecord) -> None:
        self._session.execute(insert(RefreshTokenRow).values(
            id=token.id, family_id=token.family_id, client_id=token.client_id, digest=token.digest,
            created_at=token.created_at, expires_at=token.expires_at, used_at=token.used_at))

    def find_by_digest(self, digest: str) -> RefreshTokenRecord | None:
        if not storable(digest):
            return None
        row = self._session.scalars(select(RefreshTokenRow).where(RefreshTokenRow.digest == digest)).one_or_none()
        if row is None:
            return None
        return RefreshTokenRecord(id=row.id, family_id=row.family_id, client_id=row.client_id, digest=row.digest,
                                  created_at=row.created_at, expires_at=row.expires_at, used_at=row.used_at)

    def mark_used(self, token_id: str, at: datetime) -> bool:
        # The WHERE clause is the claim: of racing refreshes exactly one matches the row.
        return _update_one(self._session, RefreshTokenRow,
                           (RefreshTokenRow.id == token_id) & RefreshTokenRow.used_at.is_(None), used_at=at)

    def revoke_family(self, family_id: str, at: datetime) -> bool:
        return _update_one(self._session, RefreshFamilyRow,
                           (RefreshFamilyRow.id == family_id) & RefreshFamilyRow.revoked_at.is_(None), revoked_at=at)


class SqlRevokedAccessTokenRepository(_Repository):
    def is_revoked(self, jti: str) -> bool:
        if not storable(jti):
            return False
        return bool(self._session.scalar(select(exists().where(RevokedAccessTokenRow.jti == jti))))

    def revoke(self, jti: str, client_id: str, at: datetime, expires_at: datetime) -> None:
        _insert_ignoring_duplicates(self._session, RevokedAccessTokenRow, ["jti"], jti=jti, client_id=client_id,
                                    revoked_at=at, expires_at=expires_at)


class SqlSigningKeyRepository(_Repository):
    def active(self) -> SigningKeyRecord | None:
        row = self._session.scalars(select(SigningKeyRow).where(SigningKeyRow.active.is_(True))).one_or_none()
        return signing_key_record(row) if row is not None else None

    def published(self, now: datetime) -> list[SigningKeyRecord]:
        query = (select(SigningKeyRow)
                 .where(or_(SigningKeyRow.publish_until.is_(None), SigningKeyRow.publish_until > now))
                 .order_by(SigningKeyRow.created_at.desc(), SigningKeyRow.kid))
        return [signing_key_record(row) for row in self._session.scalars(query)]

    def list(self) -> list[SigningKeyRecord]:
        query = select(SigningKeyRow).order_by(SigningKeyRow.created_at.desc(), SigningKeyRow.kid)
        return [signing_key_record(row) for row in self._session.scalars(query)]

    def add_active(self, key: SigningKeyRecord) -> bool:
        # uq_signing_keys_active decides: False when another key is active.
        return self._inserted(insert(SigningKeyRow).values(
            kid=key.kid, algorithm=key.algorithm, private_key_sealed=key.private_key_sealed,
            public_jwk=key.public_jwk, created_at=key.created_at, active=True, retired_at=None, publish_until=None))

    def retire(self, kid: str, at: datetime, publish_until: datetime) -> bool:
        return _update_one(self._session, SigningKeyRow, (SigningKeyRow.kid == kid) & SigningKeyRow.active.is_(True),
                           active=None, retired_at=at, publish_until=publish_until)
