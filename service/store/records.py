"""Domain records made from stored rows: the one mapping of each table's columns to its record,
for the ORM rows the repositories load and the Core rows fact_reads.py reads (same column names)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from ..domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RefreshFamilyRecord,
    RelationRecord,
    RelationStatus,
    RemoteKeys,
    SigningKeyRecord,
    SubjectType,
)
from .models import ApiKeyRow, IssuerRow, OAuthClientRow, PartnerRow, RefreshFamilyRow, RelationRow, SigningKeyRow


def partner_record(row: PartnerRow | Row[Any]) -> PartnerRecord:
    return PartnerRecord(id=row.id, name=row.name, status=PartnerStatus(row.status), grants=tuple(row.grants),
                         roles=tuple(row.roles), created_at=row.created_at)


def api_key_record(row: ApiKeyRow | Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id, partner_id=row.partner_id, digest=row.digest, name=row.name, grants=tuple(row.grants),
        roles=tuple(row.roles), customer_numbers=tuple(row.customer_numbers), created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at)


def issuer_record(row: IssuerRow | Row[Any]) -> IssuerRecord:
    remote = None if row.jwks_uri is None else RemoteKeys(
        jwks_uri=row.jwks_uri, discovery_url=row.discovery_url, fetched_at=row.keys_fetched_at,
        refresh_at=row.keys_refresh_at, error=row.fetch_error, error_at=row.fetch_error_at,
        failures=row.fetch_failures)
    return IssuerRecord(
        id=row.id, issuer=row.issuer, audience=row.audience, algorithms=tuple(row.algorithms), jwks=row.jwks,
        hmac_secret_sealed=row.hmac_secret_sealed, require_at_jwt_typ=row.require_at_jwt_typ,
        customer_claim=row.customer_claim, created_at=row.created_at, remote=remote)


def relation_record(row: RelationRow | Row[Any]) -> RelationRecord:
    return RelationRecord(
        id=row.id, partner_id=row.partner_id, subject_type=SubjectType(row.subject_type), subject_id=row.subject_id,
        status=RelationStatus(row.status), created_at=row.created_at, updated_at=row.updated_at,
        expires_at=row.expires_at)


def oauth_client_record(row: OAuthClientRow | Row[Any]) -> OAuthClientRecord:
    return OAuthClientRecord(
        id=row.id, partner_id=row.partner_id, name=row.name, secret_digest=row.secret_digest,
        scopes=tuple(row.scopes), customer_numbers=tuple(row.customer_numbers), refresh_tokens=row.refresh_tokens,
        created_at=row.created_at, secret_rotated_at=row.secret_rotated_at, revoked_at=row.revoked_at)


def signing_key_record(row: SigningKeyRow | Row[Any]) -> SigningKeyRecord:
    return SigningKeyRecord(kid=row.kid, algorithm=row.algorithm, private_key_sealed=row.private_key_sealed,
                            public_jwk=dict(row.public_jwk), created_at=row.created_at, retired_at=row.retired_at,
                            publish_until=row.publish_until)


def storable(*values: str) -> bool:
    """False for a string no row can hold (a NUL, which PostgreSQL refuses, or a lone surrogate,
    which is not UTF-8). Lookups of such keys find nothing instead of failing in the driver."""
    for value in values:
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


def refresh_family_record(row: RefreshFamilyRow | Row[Any]) -> RefreshFamilyRecord:
    return RefreshFamilyRecord(id=row.id, client_id=row.client_id, scope=tuple(row.scope), created_at=row.created_at,
                               revoked_at=row.revoked_at)
