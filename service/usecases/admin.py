"""Administration of the facts Check relies on: partners, API keys, issuers and revoked tokens.

Used by the local operator (the command line). Every method is one unit of work and raises only
the typed errors of service/domain/errors.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Iterable

from ..domain import opaque
from ..domain.errors import InvalidRequest, NotFound, PreconditionFailed
from ..domain.ids import new_id
from ..domain.model import ApiKeyRecord, IssuerRecord, PartnerRecord, PartnerStatus
from ..domain.policy import Policy
from ..domain.ports import Clock, Repositories, UnitOfWork
from ..domain.scopes import GrantSet

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_NAME_LENGTH = 200
MAX_VALUE_LENGTH = 256

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
ALLOWED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS


class AdminService:
    def __init__(self, policy: Callable[[], Policy], unit_of_work: UnitOfWork, clock: Clock) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._clock = clock

    # -- partners --------------------------------------------------------------------------------

    def create_partner(self, partner_id: str, name: str, grants: Iterable[str], roles: Iterable[str]) -> PartnerRecord:
        """Raises Conflict(reason="partner_exists") when the id is taken."""
        _check_id(partner_id, "partner_id")
        _check_text(name, "name", required=True)
        grants, roles = self._checked_grants(grants, roles)
        partner = PartnerRecord(partner_id, name.strip(), PartnerStatus.ACTIVE, grants, roles, self._clock.now())
        with self._unit_of_work() as repos:
            repos.partners.add(partner)
        return partner

    def set_partner_status(self, partner_id: str, status: PartnerStatus) -> PartnerRecord:
        with self._unit_of_work() as repos:
            partner = _partner(repos, partner_id)
            repos.partners.set_status(partner_id, status)
            return replace(partner, status=status)

    def set_partner_grants(self, partner_id: str, grants: Iterable[str], roles: Iterable[str]) -> PartnerRecord:
        grants, roles = self._checked_grants(grants, roles)
        with self._unit_of_work() as repos:
            partner = _partner(repos, partner_id)
            repos.partners.set_grants(partner_id, grants, roles)
            return replace(partner, grants=grants, roles=roles)

    def get_partner(self, partner_id: str) -> PartnerRecord:
        with self._unit_of_work(read_only=True) as repos:
            return _partner(repos, partner_id)

    def list_partners(self) -> list[PartnerRecord]:
        with self._unit_of_work(read_only=True) as repos:
            return list(repos.partners.list())

    # -- API keys --------------------------------------------------------------------------------

    def issue_api_key(
        self,
        partner_id: str,
        name: str,
        grants: Iterable[str],
        roles: Iterable[str],
        customer_numbers: Iterable[str],
        expires_at: datetime | None,
    ) -> tuple[ApiKeyRecord, str]:
        """Returns the record and the plaintext key; the plaintext is never stored, only its digest."""
        _check_text(name, "name", required=False)
        grants, roles = self._checked_grants(grants, roles)
        customers = _checked_customers(customer_numbers)
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at must be in the future", field="expires_at")
        plaintext = opaque.generate(opaque.API_KEY_PREFIX)
        record = ApiKeyRecord(new_id("key"), partner_id, opaque.digest(plaintext), name.strip(), grants, roles,
                              customers, now, expires_at)
        with self._unit_of_work() as repos:
            partner = _partner(repos, partner_id)
            self._ensure_within_partner(partner, grants, roles)
            repos.api_keys.add(record)
        return record, plaintext

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        now = self._clock.now()
        with self._unit_of_work() as repos:
            key = repos.api_keys.get(key_id) if key_id else None
            if key is None:
                raise NotFound(f"API key {key_id!r} does not exist", reason="key_not_found", field="key_id")
            if key.revoked_at is not None or not repos.api_keys.revoke(key_id, now):
                raise PreconditionFailed(f"API key {key_id} is already revoked", reason="already_revoked")
            return replace(key, revoked_at=now)

    def list_api_keys(self, partner_id: str) -> list[ApiKeyRecord]:
        with self._unit_of_work(read_only=True) as repos:
            _partner(repos, partner_id)
            return list(repos.api_keys.list_for_partner(partner_id))

    # -- issuers and tokens ----------------------------------------------------------------------

    def register_issuer(self, record: IssuerRecord) -> IssuerRecord:
        """Raises Conflict(reason="issuer_exists") when the iss is already registered."""
        _check_issuer(record)
        with self._unit_of_work() as repos:
            repos.issuers.add(record)
        return record

    def rotate_issuer_keys(self, issuer_id_or_iss: str, jwks: dict[str, Any]) -> IssuerRecord:
        _check_jwks(jwks)
        with self._unit_of_work() as repos:
            issuer = _issuer(repos, issuer_id_or_iss)
            if issuer.hmac_secret_sealed is not None:
                raise PreconditionFailed(f"issuer {issuer.issuer} uses an HMAC secret, not a JWKS",
                                         reason="hmac_issuer")
            repos.issuers.replace_keys(issuer.id, jwks)
            return replace(issuer, jwks=jwks)

    def list_issuers(self) -> list[IssuerRecord]:
        with self._unit_of_work(read_only=True) as repos:
            return list(repos.issuers.list())

    def revoke_token(self, issuer: str, jti: str, expires_at: datetime | None = None) -> IssuerRecord:
        """Revokes one JWT by its jti (idempotent). `issuer` is the issuer id or its iss string."""
        _check_text(jti, "jti", required=True)
        with self._unit_of_work() as repos:
            record = _issuer(repos, issuer)
            repos.revoked_tokens.revoke(record.id, jti, self._clock.now(), expires_at)
            return record

    # -- shared steps ----------------------------------------------------------------------------

    def _checked_grants(self, grants: Iterable[str], roles: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        grants = tuple(dict.fromkeys(g.strip() for g in grants))
        roles = tuple(dict.fromkeys(r.strip() for r in roles))
        policy = self._policy()
        for grant in grants:
            try:
                policy.grants_from([grant], (), strict=True)
            except ValueError as error:
                raise InvalidRequest(f"bad grant: {error}", field="grants") from None
        for role in roles:
            try:
                policy.grants_from((), [role], strict=True)
            except ValueError as error:
                raise InvalidRequest(f"bad role: {error}", field="grants") from None
        return grants, roles

    def _ensure_within_partner(self, partner: PartnerRecord, grants: tuple[str, ...], roles: tuple[str, ...]) -> None:
        """A key may narrow its partner's grants, never widen them."""
        policy = self._policy()
        ceiling = policy.grants_from(partner.grants, partner.roles, strict=False)
        wanted: GrantSet = policy.grants_from(grants, roles, strict=True)
        for permission in wanted.listed(policy.scope_names):
            if not ceiling.allows(permission):
                raise InvalidRequest(
                    f"the key cannot hold {permission}: partner {partner.id} does not have it", field="grants")


def _partner(repos: Repositories, partner_id: str) -> PartnerRecord:
    partner = repos.partners.get(partner_id) if partner_id else None
    if partner is None:
        raise NotFound(f"partner {partner_id!r} does not exist", reason="partner_not_found", field="partner_id")
    return partner


def _issuer(repos: Repositories, issuer_id_or_iss: str) -> IssuerRecord:
    issuer = None
    if issuer_id_or_iss:
        issuer = repos.issuers.get(issuer_id_or_iss) or repos.issuers.find_by_issuer(issuer_id_or_iss)
    if issuer is None:
        raise NotFound(f"issuer {issuer_id_or_iss!r} is not registered", reason="issuer_not_found", field="issuer")
    return issuer


def _check_id(value: str, field: str) -> None:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidRequest(
            f"{field} {value!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            field=field)


def _check_text(value: str, field: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidRequest(f"{field} is required", field=field)
    if len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise InvalidRequest(f"{field} is longer than {MAX_NAME_LENGTH} or has control characters", field=field)


def _checked_customers(customer_numbers: Iterable[str]) -> tuple[str, ...]:
    customers = tuple(dict.fromkeys(c.strip() for c in customer_numbers))
    for customer in customers:
        if not customer or len(customer) > MAX_VALUE_LENGTH or not customer.isprintable() or " " in customer:
            raise InvalidRequest(f"customer number {customer!r} is empty, too long or has spaces",
                                 field="customer_numbers")
    return customers


def _check_issuer(record: IssuerRecord) -> None:
    if not record.issuer.strip() or len(record.issuer) > MAX_VALUE_LENGTH or not record.issuer.isprintable():
        raise InvalidRequest("issuer must be a non-empty printable string", field="issuer")
    _check_text(record.audience, "audience", required=True)
    _check_text(record.customer_claim, "customer_claim", required=True)
    algorithms = set(record.algorithms)
    if not algorithms:
        raise InvalidRequest("at least one algorithm is required", field="algorithms")
    for algorithm in record.algorithms:
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidRequest(f"algorithm {algorithm!r} is not allowed; use one of "
                                 f"{', '.join(sorted(ALLOWED_ALGORITHMS))}", field="algorithms")
    if algorithms & HMAC_ALGORITHMS and algorithms & ASYMMETRIC_ALGORITHMS:
        raise InvalidRequest("an issuer cannot mix HMAC and asymmetric algorithms", field="algorithms")
    if algorithms <= HMAC_ALGORITHMS:
        if not record.hmac_secret_sealed or record.jwks is not None:
            raise InvalidRequest("an HMAC issuer needs a sealed secret and no JWKS", field="hmac_secret")
    else:
        if record.hmac_secret_sealed is not None:
            raise InvalidRequest("an asymmetric issuer cannot have an HMAC secret", field="hmac_secret")
        _check_jwks(record.jwks)


def _check_jwks(jwks: Any) -> None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise InvalidRequest("the JWKS must be an object with a non-empty list of keys", field="jwks")
