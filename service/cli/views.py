"""Records -> plain dicts with stable keys and ISO-8601 UTC timestamps. Never secrets or digests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    RelationRecord,
    SigningKeyRecord,
)
from ..usecases.admin import key_source
from ..usecases.remote_keys import key_ids
from .output import Column


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # stores may hand back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def partner_view(partner: PartnerRecord) -> dict[str, Any]:
    return {
        "id": partner.id,
        "name": partner.name,
        "status": partner.status.value,
        "grants": list(partner.grants),
        "roles": list(partner.roles),
        "created_at": iso(partner.created_at),
    }


PARTNER_COLUMNS: list[Column] = [("id", "id"), ("name", "name"), ("status", "status"), ("grants", "grants"),
                                 ("roles", "roles"), ("created", "created_at")]


def key_view(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "partner_id": key.partner_id,
        "name": key.name,
        "grants": list(key.grants),
        "roles": list(key.roles),
        "customer_numbers": list(key.customer_numbers),
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
    }


KEY_COLUMNS: list[Column] = [("id", "id"), ("name", "name"), ("grants", "grants"), ("roles", "roles"),
                             ("customers", "customer_numbers"), ("created", "created_at"),
                             ("expires", "expires_at"), ("revoked", "revoked_at")]


def issuer_view(issuer: IssuerRecord) -> dict[str, Any]:
    remote = issuer.remote
    return {
        "id": issuer.id,
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "algorithms": list(issuer.algorithms),
        "key_source": key_source(issuer),
        "key_ids": key_ids(issuer.jwks),
        "require_at_jwt_typ": issuer.require_at_jwt_typ,
        "customer_claim": issuer.customer_claim,
        "created_at": iso(issuer.created_at),
        "jwks_uri": remote.jwks_uri if remote else None,
        "discovery_url": remote.discovery_url if remote else None,
        "last_fetch": iso(remote.fetched_at) if remote else None,
        "next_fetch": iso(remote.refresh_at) if remote else None,
        "last_error": remote.error if remote else None,
        "last_error_at": iso(remote.error_at) if remote else None,
        "failures_in_a_row": remote.failures if remote else None,
    }


ISSUER_COLUMNS: list[Column] = [("id", "id"), ("issuer", "issuer"), ("audience", "audience"),
                                ("algorithms", "algorithms"), ("keys", "key_source"), ("kids", "key_ids"),
                                ("at+jwt", "require_at_jwt_typ"), ("customer claim", "customer_claim"),
                                ("created", "created_at"), ("jwks_uri", "jwks_uri"), ("last fetch", "last_fetch"),
                                ("last error", "last_error"), ("failures", "failures_in_a_row")]


def oauth_client_view(client: OAuthClientRecord) -> dict[str, Any]:
    """Never the secret's digest."""
    return {
        "id": client.id,
        "partner_id": client.partner_id,
        "name": client.name,
        "scopes": list(client.scopes),
        "customer_numbers": list(client.customer_numbers),
        "refresh_tokens": client.refresh_tokens,
        "created_at": iso(client.created_at),
        "secret_rotated_at": iso(client.secret_rotated_at),
        "revoked_at": iso(client.revoked_at),
    }


OAUTH_CLIENT_COLUMNS: list[Column] = [("id", "id"), ("partner", "partner_id"), ("name", "name"),
                                      ("scopes", "scopes"), ("customers", "customer_numbers"),
                                      ("refresh tokens", "refresh_tokens"), ("created", "created_at"),
                                      ("secret rotated", "secret_rotated_at"), ("revoked", "revoked_at")]


def signing_key_view(key: SigningKeyRecord) -> dict[str, Any]:
    """The public half only, never the sealed private key."""
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "active": key.retired_at is None,
        "created_at": iso(key.created_at),
        "retired_at": iso(key.retired_at),
        "publish_until": iso(key.publish_until),
        "public_jwk": dict(key.public_jwk),
    }


SIGNING_KEY_COLUMNS: list[Column] = [("kid", "kid"), ("algorithm", "algorithm"), ("active", "active"),
                                     ("created", "created_at"), ("retired", "retired_at"),
                                     ("publish until", "publish_until")]


def relation_view(relation: RelationRecord) -> dict[str, Any]:
    return {
        "id": relation.id,
        "partner_id": relation.partner_id,
        "subject_type": relation.subject_type.value,
        "subject_id": relation.subject_id,
        "status": relation.status.value,
        "created_at": iso(relation.created_at),
        "updated_at": iso(relation.updated_at),
        "expires_at": iso(relation.expires_at),
    }


RELATION_COLUMNS: list[Column] = [("id", "id"), ("partner", "partner_id"), ("subject", "subject_type"),
                                  ("subject id", "subject_id"), ("status", "status"),
                                  ("created", "created_at"), ("expires", "expires_at")]
