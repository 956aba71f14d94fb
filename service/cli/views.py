"""Records -> plain dicts with stable keys and ISO-8601 UTC timestamps. Never secrets or digests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..domain.model import ApiKeyRecord, IssuerRecord, PartnerRecord, RelationRecord
from .output import Column


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # stores may hand back naive UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    keys = (issuer.jwks or {}).get("keys") or []
    return {
        "id": issuer.id,
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "algorithms": list(issuer.algorithms),
        "key_source": "hmac_secret" if issuer.hmac_secret_sealed else "jwks",
        "key_ids": [str(k.get("kid", "")) for k in keys if isinstance(k, dict)],
        "require_at_jwt_typ": issuer.require_at_jwt_typ,
        "customer_claim": issuer.customer_claim,
        "created_at": iso(issuer.created_at),
    }


ISSUER_COLUMNS: list[Column] = [("id", "id"), ("issuer", "issuer"), ("audience", "audience"),
                                ("algorithms", "algorithms"), ("keys", "key_source"), ("kids", "key_ids"),
                                ("at+jwt", "require_at_jwt_typ"), ("customer claim", "customer_claim"),
                                ("created", "created_at")]


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
