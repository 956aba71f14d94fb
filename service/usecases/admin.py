"""Administration of the facts Check relies on: partners, API keys, issuers and revoked tokens,
the OAuth clients and signing keys of Tollgate's own token service, and the audit trail of that
administration.

Used by the local operator (the command line, as OPERATOR) and by tollgate.v1.Admin (as an admin
Caller). Every method is one unit of work and raises only the typed errors of
service/domain/errors.py. Only admin callers get through (NotPermitted, reason "admin_only").

Audit: every change appends an AdminAuditRecord in the same transaction as the change, so both
commit or neither does. A refused call (any domain error, including "admin_only", of a change;
"admin_only" of a read) is recorded in a small transaction of its own. Successful reads are not
recorded: reading the audit trail must not grow it. Secrets (API keys, client secrets, HMAC
secrets, tokens, private keys) are never recorded; anything that looks like one is redacted before
it is stored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ..domain import opaque
from ..domain.errors import (
    Conflict,
    DomainError,
    InvalidRequest,
    NotFound,
    NotPermitted,
    PreconditionFailed,
    StoreUnavailable,
)
from ..domain.ids import new_id
from ..domain.model import (
    AdminAuditRecord,
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    RemoteKeys,
    SigningKeyRecord,
)
from ..domain.oauth import is_scope_token
from ..domain.policy import Policy
from ..domain.ports import Clock, Repositories, TokenSigner, UnitOfWork
from ..domain.scopes import GrantSet
from ..domain.text import excerpt
from .callers import OPERATOR, Caller
from .remote_keys import RemoteKeyService, key_ids

log = logging.getLogger("tollgate.admin")

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_NAME_LENGTH = 200
MAX_VALUE_LENGTH = 256

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
ALLOWED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
# RFC 7518 section 3.2: an HMAC key is at least as long as the hash output.
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
DEFAULT_CUSTOMER_CLAIM = "customer_numbers"

OUTCOME_OK = "ok"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_AUDIT_TEXT = 300

Result = TypeVar("Result")
# What a change hands back to be audited: its result, the target it acted on, and the details.
Change = Callable[[Repositories, datetime], tuple[Result, str, dict[str, Any]]]


@dataclass(frozen=True)
class NewIssuer:
    """An issuer to register (tollgate.v1.Admin/RegisterIssuer, `tollgate issuer add`).

    Exactly one source of keys is set: `jwks` (a public JWK Set, as JSON text or an object),
    `hmac_secret` (the plaintext shared secret, sealed before it is stored), `jwks_uri` (fetched
    now and kept fresh), or `discovery_url` (an OpenID Connect Discovery / RFC 8414 document
    whose `issuer` must be `issuer` and whose `jwks_uri` is used).
    """

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks: str | dict[str, Any] | None = None
    hmac_secret: bytes | None = field(default=None, repr=False)
    jwks_uri: str = ""
    discovery_url: str = ""
    require_at_jwt_typ: bool = True
    customer_claim: str = DEFAULT_CUSTOMER_CLAIM


@dataclass(frozen=True)
class SigningKeySettings:
    """How rotate_signing_key makes and retires the keys of Tollgate's own issuer."""

    # The algorithm of new keys (one of service.domain.oauth.SIGNING_ALGORITHMS).
    algorithm: str = "ES256"
    # How long a retired key stays published: the access-token lifetime plus the JWT leeway, so
    # that every token it signed has expired before verifiers can no longer find its key.
    publish_retired_for: timedelta = timedelta(seconds=3600 + 30)


@dataclass(frozen=True)
class AuditQuery:
    """Filters of list_audit_events; None (or empty) means any."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AdminService:
    """`seal` turns an HMAC secret into what the store keeps (the server passes
    service.tokens.seal_secret with its key-encryption key); `validate_jwks` checks and normalizes
    a public JWK Set, raising ValueError (service.tokens.load_jwks). Without them (the command line,
    which does both itself) JWKS get only a shape check and raw HMAC secrets are refused.
    `signer` makes the signing keys of Tollgate's own issuer, as `signing` says; without it
    rotate_signing_key is refused. `remote_keys` fetches the keys of issuers registered by
    discovery URL or jwks_uri; without it those are refused."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        unit_of_work: UnitOfWork,
        clock: Clock,
        *,
        seal: Callable[[bytes], str] | None = None,
        validate_jwks: Callable[[Any], dict[str, Any]] | None = None,
        signer: TokenSigner | None = None,
        signing: SigningKeySettings | None = None,
        remote_keys: RemoteKeyService | None = None,
    ) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._seal = seal
        self._validate_jwks = validate_jwks
        self._signer = signer
        self._signing = signing or SigningKeySettings()
        self._remote_keys = remote_keys

    # -- partners --------------------------------------------------------------------------------

    def create_partner(self, partner_id: str, name: str, grants: Iterable[str], roles: Iterable[str], *,
                       caller: Caller = OPERATOR) -> PartnerRecord:
        """Raises Conflict(reason="partner_exists") when the id is taken. A partner given neither
        grants nor roles gets the policy's default_role (the policy in force now), if it names one."""
        grants, roles = tuple(grants), tuple(roles)

        def change(repos: Repositories, now: datetime):
            _check_id(partner_id, "partner_id")
            _check_text(name, "name", required=True)
            default_role = None if grants or roles else self._policy().default_role
            checked_grants, checked_roles = self._checked_grants(grants, (default_role,) if default_role else roles)
            partner = PartnerRecord(partner_id, name.strip(), PartnerStatus.ACTIVE, checked_grants, checked_roles, now)
            repos.partners.add(partner)
            details: dict[str, object] = {"name": partner.name, "grants": list(partner.grants),
                                          "roles": list(partner.roles)}
            if default_role:
                details["default_role"] = True  # the role came from the policy, not the request
            return partner, partner.id, details

        return self._change(caller, "partner.create", partner_id, change)

    def set_partner_status(self, partner_id: str, status: PartnerStatus | None, *,
                           caller: Caller = OPERATOR) -> PartnerRecord:
        """`status` None (not a known status) is refused with InvalidRequest(field="status")."""
        def change(repos: Repositories, now: datetime):
            if not isinstance(status, PartnerStatus):
                raise InvalidRequest("status must be active or suspended", field="status")
            partner = _partner(repos, partner_id)
            repos.partners.set_status(partner_id, status)
            return replace(partner, status=status), partner.id, {"from": partner.status.value, "to": status.value}

        action = ("partner.suspend" if status is PartnerStatus.SUSPENDED
                  else "partner.activate" if status is PartnerStatus.ACTIVE else "partner.set_status")
        return self._change(caller, action, partner_id, change)

    def set_partner_grants(self, partner_id: str, grants: Iterable[str], roles: Iterable[str], *,
                           caller: Caller = OPERATOR) -> PartnerRecord:
        def change(repos: Repositories, now: datetime):
            checked_grants, checked_roles = self._checked_grants(grants, roles)
            partner = _partner(repos, partner_id)
            repos.partners.set_grants(partner_id, checked_grants, checked_roles)
            return replace(partner, grants=checked_grants, roles=checked_roles), partner.id, {
                "grants": list(checked_grants), "roles": list(checked_roles),
                "previous_grants": list(partner.grants), "previous_roles": list(partner.roles)}

        return self._change(caller, "partner.set_grants", partner_id, change)

    def get_partner(self, partner_id: str, *, caller: Caller = OPERATOR) -> PartnerRecord:
        self._require_admin(caller, "partner.get", partner_id)
        with self._unit_of_work(read_only=True) as repos:
            return _partner(repos, partner_id)

    def list_partners(self, *, caller: Caller = OPERATOR) -> list[PartnerRecord]:
        self._require_admin(caller, "partner.list", "")
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
        *,
        caller: Caller = OPERATOR,
    ) -> tuple[ApiKeyRecord, str]:
        """Returns the record and the plaintext key; the plaintext is never stored, only its digest
        (and it is never audited)."""
        plaintext = opaque.generate(opaque.API_KEY_PREFIX)

        def change(repos: Repositories, now: datetime):
            _check_text(name, "name", required=False)
            checked_grants, checked_roles = self._checked_grants(grants, roles)
            customers = _checked_customers(customer_numbers)
            if expires_at is not None and expires_at <= now:
                raise InvalidRequest("expires_at must be in the future", field="expires_at")
            record = ApiKeyRecord(new_id("key"), partner_id, opaque.digest(plaintext), name.strip(), checked_grants,
                                  checked_roles, customers, now, expires_at)
            partner = _partner(repos, partner_id)
            self._ensure_within_partner(partner, checked_grants, checked_roles)
            repos.api_keys.add(record)
            return (record, plaintext), record.id, {
                "partner_id": partner_id, "name": record.name, "grants": list(record.grants),
                "roles": list(record.roles), "customer_numbers": list(record.customer_numbers),
                "expires_at": _iso(record.expires_at)}

        return self._change(caller, "api_key.issue", partner_id, change)

    def revoke_api_key(self, key_id: str, *, caller: Caller = OPERATOR) -> ApiKeyRecord:
        def change(repos: Repositories, now: datetime):
            key = repos.api_keys.get(key_id) if key_id else None
            if key is None:
                raise NotFound(f"API key {excerpt(key_id)} does not exist", reason="key_not_found", field="key_id")
            if key.revoked_at is not None or not repos.api_keys.revoke(key_id, now):
                raise PreconditionFailed(f"API key {excerpt(key_id)} is already revoked", reason="already_revoked")
            return replace(key, revoked_at=now), key.id, {"partner_id": key.partner_id, "name": key.name}

        return self._change(caller, "api_key.revoke", key_id, change)

    def list_api_keys(self, partner_id: str, *, caller: Caller = OPERATOR) -> list[ApiKeyRecord]:
        self._require_admin(caller, "api_key.list", partner_id)
        with self._unit_of_work(read_only=True) as repos:
            _partner(repos, partner_id)
            return list(repos.api_keys.list_for_partner(partner_id))

    # -- issuers and tokens ----------------------------------------------------------------------

    def register_issuer(self, record: IssuerRecord, *, caller: Caller = OPERATOR) -> IssuerRecord:
        """Registers an issuer whose keys are already checked and sealed (the command line).
        Raises Conflict(reason="issuer_exists") when the iss is already registered."""
        def change(repos: Repositories, now: datetime):
            _check_issuer(record)
            repos.issuers.add(record)
            return record, record.id, _issuer_details(record)

        return self._change(caller, "issuer.register", record.issuer, change)

    def register_new_issuer(self, new: NewIssuer, *, caller: Caller = OPERATOR) -> IssuerRecord:
        """Registers an issuer from raw key material (the JWKS is validated, public keys only; the
        HMAC secret sealed) or from where its keys are published (fetched now, before anything is
        stored: an issuer whose keys cannot be had is not registered). Raises
        Conflict(reason="issuer_exists") when the iss is taken, KeyFetchFailed when the fetch fails."""
        remote, fetched = self._remote_issuer_keys(new, caller)

        def change(repos: Repositories, now: datetime):
            record = IssuerRecord(
                id=new_id("iss"), issuer=new.issuer, audience=new.audience,
                algorithms=tuple(dict.fromkeys(a.strip() for a in new.algorithms)), jwks=None,
                hmac_secret_sealed=None, require_at_jwt_typ=new.require_at_jwt_typ,
                customer_claim=new.customer_claim or DEFAULT_CUSTOMER_CLAIM, created_at=now)
            if new.hmac_secret is not None:
                record = replace(record, hmac_secret_sealed=self._sealed(new.hmac_secret, record.algorithms))
            elif remote is not None:
                record = replace(record, jwks=fetched, remote=remote)
            else:
                record = replace(record, jwks=self._checked_jwks(new.jwks))
            _check_issuer(record)
            repos.issuers.add(record)
            return record, record.id, _issuer_details(record)

        return self._change(caller, "issuer.register", new.issuer, change)

    def _remote_issuer_keys(self, new: NewIssuer, caller: Caller) -> tuple[RemoteKeys | None, dict | None]:
        """Where a remote issuer's keys come from and its first key set; (None, None) for the
        others. The fetch happens before the unit of work, which it would otherwise hold open."""
        try:
            _require_admin(caller)
            sources = [new.jwks is not None, new.hmac_secret is not None, bool(new.jwks_uri), bool(new.discovery_url)]
            if sum(sources) != 1:
                raise InvalidRequest("exactly one of jwks, hmac_secret, jwks_uri and discovery_url is required",
                                     field="jwks")
            if not (new.jwks_uri or new.discovery_url):
                return None, None
            if self._remote_keys is None:
                raise PreconditionFailed("issuers with remote keys cannot be registered here",
                                         reason="remote_keys_unavailable")
            return self._remote_keys.resolve(new.issuer, discovery_url=new.discovery_url, jwks_uri=new.jwks_uri)
        except DomainError as error:
            self._record_refusal(caller, "issuer.register", new.issuer, error)
            raise

    def refresh_issuer_keys(self, issuer_id_or_iss: str, *, caller: Caller = OPERATOR) -> IssuerRecord:
        """Fetches a remote issuer's keys now. Raises KeyFetchFailed (after recording it on the
        issuer) when the fetch fails; the last good keys stay in use."""
        action = "issuer.refresh_keys"
        try:
            _require_admin(caller)
            if self._remote_keys is None:
                raise PreconditionFailed("remote keys cannot be fetched here", reason="remote_keys_unavailable")
            record = self._remote_keys.refresh(issuer_id_or_iss)
        except DomainError as error:
            self._record_refusal(caller, action, issuer_id_or_iss, error)
            raise
        with self._unit_of_work(changes_facts=False) as repos:
            repos.audit.append(_record(caller, action, record.id, self._clock.now(), OUTCOME_OK,
                                       {"issuer": record.issuer, "kids": key_ids(record.jwks)}))
        return record

    def rotate_issuer_keys(self, issuer_id_or_iss: str, jwks: dict[str, Any] | str, *,
                           caller: Caller = OPERATOR) -> IssuerRecord:
        def change(repos: Repositories, now: datetime):
            checked = self._checked_jwks(jwks)
            issuer = _issuer(repos, issuer_id_or_iss)
            if issuer.hmac_secret_sealed is not None:
                raise PreconditionFailed(f"issuer {excerpt(issuer.issuer)} uses an HMAC secret, not a JWKS",
                                         reason="hmac_issuer")
            if issuer.remote is not None:
                raise PreconditionFailed(f"issuer {excerpt(issuer.issuer)} has its keys fetched from its jwks_uri; "
                                         "refresh them instead", reason="remote_issuer")
            repos.issuers.replace_keys(issuer.id, checked)
            return replace(issuer, jwks=checked), issuer.id, {
                "issuer": issuer.issuer, "kids": key_ids(checked), "previous_kids": key_ids(issuer.jwks)}

        return self._change(caller, "issuer.rotate_keys", issuer_id_or_iss, change)

    def list_issuers(self, *, caller: Caller = OPERATOR) -> list[IssuerRecord]:
        self._require_admin(caller, "issuer.list", "")
        with self._unit_of_work(read_only=True) as repos:
            return list(repos.issuers.list())

    def list_roles(self, *, caller: Caller = OPERATOR) -> list[tuple[str, tuple[str, ...]]]:
        """(name, grants) of every role of the policy in force, by name."""
        self._require_admin(caller, "role.list", "")
        policy = self._policy()
        return [(name, tuple(str(p) for p in grants.listed(policy.scope_names)))
                for name, grants in sorted(policy.roles.items())]

    def revoke_token(self, issuer: str, jti: str, expires_at: datetime | None = None, *,
                     caller: Caller = OPERATOR) -> IssuerRecord:
        """Revokes one JWT by its jti (idempotent). `issuer` is the issuer id or its iss string."""
        def change(repos: Repositories, now: datetime):
            _check_text(jti, "jti", required=True)
            record = _issuer(repos, issuer)
            repos.revoked_tokens.revoke(record.id, jti, now, expires_at)
            return record, f"{record.id}:{jti}", {"issuer": record.issuer, "jti": jti,
                                                  "expires_at": _iso(expires_at)}

        return self._change(caller, "token.revoke", f"{issuer}:{jti}", change)

    # -- OAuth clients of the token service ------------------------------------------------------

    def create_oauth_client(self, partner_id: str, name: str, scopes: Iterable[str], customer_numbers: Iterable[str],
                            refresh_tokens: bool, *, caller: Caller = OPERATOR) -> tuple[OAuthClientRecord, str]:
        """Returns the record and the plaintext client secret; only the secret's digest is stored
        (and the secret is never audited). Scopes narrow the partner's grants, never widen them."""
        secret = opaque.generate(opaque.CLIENT_SECRET_PREFIX)

        def change(repos: Repositories, now: datetime):
            _check_text(name, "name", required=False)
            checked_scopes = self._checked_scopes(scopes)
            customers = _checked_customers(customer_numbers)
            partner = _partner(repos, partner_id)
            self._ensure_within_partner(partner, checked_scopes, (), holder="client", field="scopes")
            client = OAuthClientRecord(new_id("cli"), partner.id, name.strip(), opaque.digest(secret), checked_scopes,
                                       customers, bool(refresh_tokens), now)
            repos.oauth_clients.add(client)
            return (client, secret), client.id, {
                "partner_id": partner.id, "name": client.name, "scopes": list(client.scopes),
                "customer_numbers": list(client.customer_numbers), "refresh_tokens": client.refresh_tokens}

        return self._change(caller, "oauth_client.create", partner_id, change)

    def list_oauth_clients(self, partner_id: str | None, *, caller: Caller = OPERATOR) -> list[OAuthClientRecord]:
        """A partner's clients (NotFound when it does not exist), or every client when None."""
        self._require_admin(caller, "oauth_client.list", partner_id or "")
        with self._unit_of_work(read_only=True) as repos:
            if partner_id is not None:
                _partner(repos, partner_id)
            return list(repos.oauth_clients.list_for_partner(partner_id))

    def rotate_oauth_client_secret(self, client_id: str, *,
                                   caller: Caller = OPERATOR) -> tuple[OAuthClientRecord, str]:
        """Returns the record and the new plaintext secret; the old secret stops working at once."""
        secret = opaque.generate(opaque.CLIENT_SECRET_PREFIX)

        def change(repos: Repositories, now: datetime):
            client = _oauth_client(repos, client_id)
            digest = opaque.digest(secret)
            # set_secret's WHERE clause refuses a client revoked since it was read.
            if client.revoked_at is not None or not repos.oauth_clients.set_secret(client.id, digest, now):
                raise PreconditionFailed(f"OAuth client {excerpt(client_id)} is revoked", reason="already_revoked")
            rotated = replace(client, secret_digest=digest, secret_rotated_at=now)
            return (rotated, secret), client.id, {"partner_id": client.partner_id, "name": client.name}

        return self._change(caller, "oauth_client.rotate_secret", client_id, change)

    def revoke_oauth_client(self, client_id: str, *, caller: Caller = OPERATOR) -> OAuthClientRecord:
        def change(repos: Repositories, now: datetime):
            client = _oauth_client(repos, client_id)
            if client.revoked_at is not None or not repos.oauth_clients.revoke(client.id, now):
                raise PreconditionFailed(f"OAuth client {excerpt(client_id)} is already revoked",
                                         reason="already_revoked")
            return replace(client, revoked_at=now), client.id, {"partner_id": client.partner_id, "name": client.name}

        return self._change(caller, "oauth_client.revoke", client_id, change)

    # -- signing keys of the token service -------------------------------------------------------

    def rotate_signing_key(self, *, caller: Caller = OPERATOR) -> tuple[SigningKeyRecord, SigningKeyRecord | None]:
        """Makes a new active key and retires the active one (published until every token it
        signed has expired), in one transaction. Returns (new key, the retired key or None).
        Raises Conflict(reason="concurrent_rotation") when another rotation won the race."""
        def change(repos: Repositories, now: datetime):
            new = self._new_signing_key(now)  # made before the first query: no transaction waits on it
            previous = repos.signing_keys.active()
            retired = None
            if previous is not None:
                publish_until = now + self._signing.publish_retired_for
                if not repos.signing_keys.retire(previous.kid, now, publish_until):
                    raise _concurrent_rotation()
                retired = replace(previous, retired_at=now, publish_until=publish_until)
            if not repos.signing_keys.add_active(new):
                raise _concurrent_rotation()
            return (new, retired), new.kid, {"kid": new.kid, "previous_kid": previous.kid if previous else None,
                                             "algorithm": new.algorithm}

        return self._change(caller, "signing_key.rotate", "", change)

    def list_signing_keys(self, *, caller: Caller = OPERATOR) -> list[SigningKeyRecord]:
        """Every key, newest first."""
        self._require_admin(caller, "signing_key.list", "")
        with self._unit_of_work(read_only=True) as repos:
            return list(repos.signing_keys.list())

    # -- the audit trail -------------------------------------------------------------------------

    def list_audit_events(self, query: AuditQuery = AuditQuery(), page_size: int = 0, page_token: str = "", *,
                          caller: Caller = OPERATOR) -> tuple[list[AdminAuditRecord], str]:
        """A page of audit records, oldest first, and the next page's token ("" on the last page)."""
        self._require_admin(caller, "audit.list", "")
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be between 0 and {MAX_PAGE_SIZE}", field="page_size")
        if query.since is not None and query.until is not None and query.until <= query.since:
            raise InvalidRequest("the end of the time range must be after its start", field="end_time")
        with self._unit_of_work(read_only=True) as repos:
            return repos.audit.list(actor=query.actor or None, action=query.action or None, since=query.since,
                                    until=query.until, page_size=page_size or DEFAULT_PAGE_SIZE,
                                    page_token=page_token)

    # -- shared steps ----------------------------------------------------------------------------

    def _change(self, caller: Caller, action: str, target: str, change: Change[Result]) -> Result:
        """Runs `change` in one unit of work that also appends its audit record (both commit or
        neither). Any domain error, including "admin_only", is audited on its own and re-raised."""
        try:
            _require_admin(caller)
            now = self._clock.now()
            with self._unit_of_work() as repos:
                result, audited_target, details = change(repos, now)
                repos.audit.append(_record(caller, action, audited_target, now, OUTCOME_OK, details))
            return result
        except DomainError as error:
            self._record_refusal(caller, action, target, error)
            raise

    def _require_admin(self, caller: Caller, action: str, target: str) -> None:
        try:
            _require_admin(caller)
        except NotPermitted as error:
            self._record_refusal(caller, action, target, error)
            raise

    def _record_refusal(self, caller: Caller, action: str, target: str, error: DomainError) -> None:
        """Audits a refused call in its own transaction. When even that fails (the store is down),
        the refusal is logged instead and the caller still gets the original error."""
        if isinstance(error, StoreUnavailable):
            log.warning("admin action %s by %s not audited: the store is unavailable", action, audit_actor(caller))
            return
        details: dict[str, Any] = {"message": error.message}
        if error.field:
            details["field"] = error.field
        try:
            with self._unit_of_work(changes_facts=False) as repos:
                repos.audit.append(_record(caller, action, target, self._clock.now(), error.reason, details))
        except DomainError as failure:
            log.warning("admin action %s by %s (refused: %s) not audited: %s", action, audit_actor(caller),
                        error.reason, failure.reason)

    def _checked_jwks(self, jwks: Any) -> dict[str, Any]:
        if self._validate_jwks is None:
            if isinstance(jwks, str):
                raise InvalidRequest("a JWKS as text cannot be checked here", field="jwks")
            _check_jwks(jwks)
            return jwks
        try:
            return self._validate_jwks(jwks)
        except (ValueError, TypeError) as error:
            raise InvalidRequest(f"invalid JWKS: {error}", field="jwks") from None

    def _sealed(self, secret: bytes, algorithms: tuple[str, ...]) -> str:
        if self._seal is None:
            raise InvalidRequest("HMAC secrets cannot be sealed here", field="hmac_secret")
        needed = max((HMAC_KEY_BYTES.get(a, 0) for a in algorithms), default=0)
        if len(secret) < needed:
            raise InvalidRequest(f"the HMAC secret has {len(secret)} bytes; {', '.join(algorithms)} needs at least "
                                 f"{needed} (RFC 7518 section 3.2)", field="hmac_secret")
        try:
            return self._seal(secret)
        except ValueError:
            raise InvalidRequest("the HMAC secret cannot be sealed", field="hmac_secret") from None

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

    def _checked_scopes(self, scopes: Iterable[str]) -> tuple[str, ...]:
        """An OAuth client's scopes: each a grant of the policy, and a scope token its access
        tokens can carry in their space-separated scope claim (RFC 6749 section 3.3)."""
        checked = tuple(dict.fromkeys(s.strip() for s in scopes))
        policy = self._policy()
        for scope in checked:
            if not is_scope_token(scope):
                raise InvalidRequest(f"bad scope {excerpt(scope)}: not an RFC 6749 scope token", field="scopes")
            try:
                policy.grants_from([scope], (), strict=True)
            except ValueError as error:
                raise InvalidRequest(f"bad scope: {error}", field="scopes") from None
        return checked

    def _ensure_within_partner(self, partner: PartnerRecord, grants: tuple[str, ...], roles: tuple[str, ...], *,
                               holder: str = "key", field: str = "grants") -> None:
        """A key (or client) may narrow its partner's grants, never widen them."""
        policy = self._policy()
        ceiling = policy.grants_from(partner.grants, partner.roles, strict=False)
        wanted: GrantSet = policy.grants_from(grants, roles, strict=True)
        for permission in wanted.listed(policy.scope_names):
            if not ceiling.allows(permission):
                raise InvalidRequest(
                    f"the {holder} cannot hold {permission}: partner {partner.id} does not have it", field=field)

    def _new_signing_key(self, now: datetime) -> SigningKeyRecord:
        if self._signer is None:
            raise InvalidRequest("signing keys cannot be made here")
        try:
            return self._signer.new_key(self._signing.algorithm, now)
        except ValueError as error:
            raise InvalidRequest(f"cannot make a signing key: {error}") from None


def _partner(repos: Repositories, partner_id: str) -> PartnerRecord:
    partner = repos.partners.get(partner_id) if partner_id else None
    if partner is None:
        raise NotFound(f"partner {excerpt(partner_id)} does not exist", reason="partner_not_found", field="partner_id")
    return partner


def _oauth_client(repos: Repositories, client_id: str) -> OAuthClientRecord:
    client = repos.oauth_clients.get(client_id) if client_id else None
    if client is None:
        raise NotFound(f"OAuth client {excerpt(client_id)} does not exist", reason="client_not_found",
                       field="client_id")
    return client


def _concurrent_rotation() -> Conflict:
    return Conflict("another signing key rotation won the race; list the keys and try again if needed",
                    reason="concurrent_rotation")


def _issuer(repos: Repositories, issuer_id_or_iss: str) -> IssuerRecord:
    issuer = None
    if issuer_id_or_iss:
        issuer = repos.issuers.get(issuer_id_or_iss) or repos.issuers.find_by_issuer(issuer_id_or_iss)
    if issuer is None:
        raise NotFound(f"issuer {excerpt(issuer_id_or_iss)} is not registered", reason="issuer_not_found",
                       field="issuer")
    return issuer


def _check_id(value: str, field: str) -> None:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidRequest(
            f"{field} {excerpt(value)} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
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
            raise InvalidRequest(f"customer number {excerpt(customer)} is empty, too long or has spaces",
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
            raise InvalidRequest(f"algorithm {excerpt(algorithm)} is not allowed; use one of "
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


# -- authorization and audit records -------------------------------------------------------------


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise NotPermitted("only an admin credential may administer Tollgate", reason="admin_only")


def audit_actor(caller: Caller) -> str:
    """"operator" (the command line), "admin:<partner id>", or for a refused non-admin the name
    relation events give it ("partner:<id>", "platform:<id>")."""
    if caller is OPERATOR:
        return "operator"
    if caller.is_admin:
        return f"admin:{caller.partner_id}"
    return caller.actor


def _record(caller: Caller, action: str, target: str, at: datetime, outcome: str,
            details: dict[str, Any]) -> AdminAuditRecord:
    details = dict(details)
    if caller is not OPERATOR:
        details["credential_id"] = caller.principal.credential_id
    return AdminAuditRecord(actor=_scrubbed(audit_actor(caller)), action=action, target=_scrubbed(target), at=at,
                            outcome=_scrubbed(outcome), details=_scrubbed_json(details))


# What a pasted secret looks like: an opaque Tollgate secret, or a JWT (three base64url parts).
_SECRET_PREFIXES = (opaque.API_KEY_PREFIX, opaque.CONNECT_TOKEN_PREFIX, opaque.CLIENT_SECRET_PREFIX,
                    opaque.REFRESH_TOKEN_PREFIX)
_SECRET_LOOKALIKES = re.compile(
    rf"(?:{'|'.join(re.escape(prefix) for prefix in _SECRET_PREFIXES)})[A-Za-z0-9]*"
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")


def _scrubbed(text: str) -> str:
    """Audit text: secret look-alikes redacted (e.g. a key pasted as a key id), non-printable
    characters replaced (the store refuses some), and at most MAX_AUDIT_TEXT characters."""
    text = _SECRET_LOOKALIKES.sub("[redacted]", text)
    text = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text[:MAX_AUDIT_TEXT])
    return text


def _scrubbed_json(value: Any) -> Any:
    if isinstance(value, str):
        return _scrubbed(value)
    if isinstance(value, dict):
        return {_scrubbed(str(k)): _scrubbed_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _scrubbed(str(value))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _issuer_details(record: IssuerRecord) -> dict[str, Any]:
    """What an issuer registration records: never the (sealed) secret, only public key ids."""
    details = {"issuer": record.issuer, "audience": record.audience, "algorithms": list(record.algorithms),
               "key_source": key_source(record), "kids": key_ids(record.jwks),
               "require_at_jwt_typ": record.require_at_jwt_typ, "customer_claim": record.customer_claim}
    if record.remote is not None:
        details["jwks_uri"] = record.remote.jwks_uri
        if record.remote.discovery_url:
            details["discovery_url"] = record.remote.discovery_url
    return details


def key_source(issuer: IssuerRecord) -> str:
    """Where an issuer's keys come from: "hmac_secret", "jwks" (registered), "jwks_uri" or "discovery"."""
    if issuer.hmac_secret_sealed:
        return "hmac_secret"
    if issuer.remote is None:
        return "jwks"
    return "discovery" if issuer.remote.discovery_url else "jwks_uri"
