"""The decision core: plan a check from the request, then decide from the facts looked up for it.

Both functions are pure. The use case in between verifies the credential and looks up exactly the
relation facts the plan names, so decide() needs no I/O and no mocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .decision import ALLOW_PUBLIC, Decision, Reason, deny
from .errors import CredentialRejected, InvalidRequest
from .model import AuthenticatedCredential, CredentialKind, SubjectType
from .policy import Policy, TokenUser
from .scopes import GrantSet, Permission
from .text import excerpt

MAX_PERMISSIONS = 32
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Resource:
    user_id: str = ""
    organization_id: str = ""
    customer_id: str = ""

    def subject_id(self, subject_type: SubjectType) -> str:
        return self.user_id if subject_type is SubjectType.USER else self.organization_id


@dataclass(frozen=True)
class CheckPlan:
    """What a request needs, resolved against the policy before any credential is looked at."""

    operation: str
    known: bool
    public: bool = False
    permissions: tuple[Permission, ...] = ()
    relations: frozenset[SubjectType] = frozenset()
    check_customer: bool = False
    resource: Resource = Resource()
    # What the operation demands of the user the token acts for, and the claim naming that user
    # (the policy's token_user_claim, captured with the plan: plans live as long as their policy).
    token_user: TokenUser | None = None
    user_claim: str | None = None


# Each resource field has two names. gRPC errors (INVALID_ARGUMENT's ErrorInfo) name its path in
# the CheckRequest, which is what a gRPC caller set; everything a gateway hands its client (the
# JSON bodies, CheckResponse.field, ext_authz's 400) names it as the partner API does, which is
# what that client sent.
USER_ID_FIELD, ORGANIZATION_ID_FIELD, CUSTOMER_ID_FIELD = "userId", "organizationId", "customerId"
API_FIELD_NAMES = {
    "resource.user_id": USER_ID_FIELD,
    "resource.organization_id": ORGANIZATION_ID_FIELD,
    "resource.customer_id": CUSTOMER_ID_FIELD,
}
# How the messages of malformed requests name each resource field (in words, the same on both
# surfaces; the error's field names it for machines).
_RESOURCE_NOUNS = {"user_id": "user id", "organization_id": "organization id", "customer_id": "customer number"}
_RESOURCE_FIELDS = {
    SubjectType.USER: "user_id",
    SubjectType.ORGANIZATION: "organization_id",
}


def api_field_name(field: str) -> str:
    """A request field as the partner API names it ("resource.user_id" -> "userId"); other
    fields (which only a gRPC caller can get wrong) keep their own name."""
    return API_FIELD_NAMES.get(field, field)


def plan_check(policy: Policy, operation: str, permission_texts: list[str], resource: Resource) -> CheckPlan:
    """Raises InvalidRequest (naming the field) for a malformed request."""
    _validate_ids(resource)
    if len(permission_texts) > MAX_PERMISSIONS:
        raise InvalidRequest(f"at most {MAX_PERMISSIONS} permissions", field="permissions")
    explicit = []
    for index, text in enumerate(permission_texts):
        try:
            explicit.append(policy.parse_permission(text))
        except ValueError as error:
            raise InvalidRequest(f"permissions[{index}]: {error}", field=f"permissions[{index}]") from None
    declared = policy.operations.get(operation) if operation else None
    if declared is None and (operation or not explicit):
        return CheckPlan(operation=operation, known=False)
    if declared is not None and declared.public and not explicit:
        return CheckPlan(operation=operation, known=True, public=True)
    if declared is not None:
        relations, needs_customer = declared.relations, declared.requires_customer
    else:  # explicit permissions only: every resource named in the request is checked
        relations = frozenset(t for t in SubjectType if resource.subject_id(t))
        needs_customer = False
    for subject_type in relations:
        if not resource.subject_id(subject_type):
            name = _RESOURCE_FIELDS[subject_type]
            raise InvalidRequest(f"{operation or 'the check'} needs the {_RESOURCE_NOUNS[name]}",
                                 field=f"resource.{name}")
    if needs_customer and not resource.customer_id:
        # A malformed call, not a deny: there is no customer number to refuse (the operation is
        # declared customer-bound, and the caller left out what it acts for).
        raise InvalidRequest(f"{operation} needs the {_RESOURCE_NOUNS['customer_id']}", field="resource.customer_id")
    permissions = tuple(dict.fromkeys((*(declared.permissions if declared else ()), *explicit)))
    token_user = declared.token_user if declared is not None else None
    return CheckPlan(operation, True, False, permissions, relations, bool(resource.customer_id), resource,
                     token_user, policy.token_user_claim if token_user is not None else None)


def _validate_ids(resource: Resource) -> None:
    for name in ("user_id", "organization_id", "customer_id"):
        value = getattr(resource, name)
        if len(value) > MAX_ID_LENGTH or not value.isprintable():
            raise InvalidRequest(f"the {_RESOURCE_NOUNS[name]} is too long or has control characters",
                                 field=f"resource.{name}")


def effective_grants(policy: Policy, credential: AuthenticatedCredential) -> GrantSet:
    """The credential's own grants (else the roles the policy gives its kind, else its partner's),
    narrowed by a JWT's scope claim, and never beyond the partner's grants."""
    partner = credential.partner
    ceiling = policy.grants_from(partner.grants, partner.roles, strict=False)
    if credential.token_scopes is not None:
        own = policy.grants_from(credential.token_scopes, (), strict=False)
    elif credential.own_grants or credential.own_roles:
        own = policy.grants_from(credential.own_grants, credential.own_roles, strict=False)
    elif credential.principal.kind in policy.kind_roles:
        own = policy.grants_from((), policy.kind_roles[credential.principal.kind], strict=False)
    else:
        own = ceiling
    return own.capped_by(ceiling)


def acting_user(credential: AuthenticatedCredential, claim: str | None) -> str | None:
    """The user a verified token acts for: its claim `claim` (the policy's token_user_claim), unless
    that names the token's own client (client_id, else sub, as the verifier reads the partner): a
    client-credentials token acts for no user. API keys never do; None when `claim` is not set."""
    if not claim or credential.principal.kind is CredentialKind.API_KEY:
        return None
    user = credential.claim(claim)
    if not user or len(user) > MAX_ID_LENGTH or not user.isprintable():
        return None
    client = credential.claim("client_id") or credential.claim("sub")
    return None if user == client else user


def relations_looked_at(plan: CheckPlan, credential: AuthenticatedCredential) -> list[tuple[SubjectType, str]]:
    """The relations (subject type, subject id) a decision of `plan` about `credential` rests on:
    the resource's, and for token_user: related the token user's."""
    looked_at = [(subject_type, plan.resource.subject_id(subject_type)) for subject_type in plan.relations]
    user = acting_user(credential, plan.user_claim) if plan.token_user is TokenUser.RELATED else None
    if user is not None:
        looked_at.append((SubjectType.USER, user))
    return looked_at


@dataclass(frozen=True)
class CheckInput:
    plan: CheckPlan
    # None: no credential sent. CredentialRejected: verification failed. Else: who is calling.
    credential: AuthenticatedCredential | CredentialRejected | None
    grants: GrantSet = GrantSet()
    # The subjects (among plan.relations) with which the partner has an active relation.
    active_relations: frozenset[SubjectType] = frozenset()
    known_scopes: frozenset[str] = frozenset()
    # Seconds the partner must wait, when it has spent its rate of checks; 0 when it has not.
    retry_after: int = 0
    # Seconds the client address must wait, when it presented too many failed credentials (it is
    # refused before its credential is verified, so `credential` is None); 0 when it has not.
    failures_retry_after: int = 0
    # For a plan whose token_user is related: whether the user the token acts for (acting_user)
    # has an active relation with the partner. Looked up as the relations above are.
    token_user_related: bool = False


def decide(check: CheckInput) -> Decision:
    """Evaluates the steps in the documented order; the first failure decides. Every decision made
    after the credential was proven names its principal, a deny as an allow does."""
    plan, credential = check.plan, check.credential
    if not plan.known:
        return deny(Reason.UNKNOWN_OPERATION, f"operation {excerpt(plan.operation)} is not defined" if plan.operation
                    else "the check names neither an operation nor permissions")
    if plan.public:
        return ALLOW_PUBLIC
    if check.failures_retry_after:
        return deny(Reason.RATE_LIMIT_EXCEEDED, "too many failed credentials from this client address; "
                    f"retry in {check.failures_retry_after} s", retry_after=check.failures_retry_after)
    if credential is None:
        return deny(Reason.MISSING_TOKEN, "a bearer token or API key is required")
    if isinstance(credential, CredentialRejected):
        return deny(Reason(credential.reason), credential.message)
    principal = credential.principal
    if check.retry_after:
        return deny(Reason.RATE_LIMIT_EXCEEDED, f"too many checks; retry in {check.retry_after} s",
                    retry_after=check.retry_after, principal=principal)
    missing = [p for p in plan.permissions if not check.grants.allows(p)]
    if missing:
        needed = " ".join(str(p) for p in missing)
        return deny(Reason.INSUFFICIENT_SCOPE, f"the credential lacks the permission {needed}", missing_scope=needed,
                    principal=principal)
    if SubjectType.USER in plan.relations and SubjectType.USER not in check.active_relations:
        return deny(Reason.USER_ACCESS_DENIED, "the partner has no active relation with this user",
                    field=USER_ID_FIELD, principal=principal)
    if plan.token_user is not None:
        denied = token_user_denial(plan, credential, check.token_user_related)
        if denied is not None:
            return denied
    if SubjectType.ORGANIZATION in plan.relations and SubjectType.ORGANIZATION not in check.active_relations:
        return deny(Reason.ORGANIZATION_ACCESS_DENIED, "the partner has no active relation with this organization",
                    field=ORGANIZATION_ID_FIELD, principal=principal)
    if plan.check_customer and plan.resource.customer_id not in credential.customer_numbers:
        return deny(Reason.CUSTOMER_ACCESS_DENIED, "the credential may not act for this customer number",
                    field=CUSTOMER_ID_FIELD, principal=principal)
    return Decision(allowed=True, message="allowed", principal=principal,
                    grants=check.grants.listed(check.known_scopes))


def token_user_denial(plan: CheckPlan, credential: AuthenticatedCredential, related: bool) -> Decision | None:
    """The operation's token_user demand: a token acting for the request's user (self) or for a user
    related to the partner (related). The messages never quote the token or its user."""
    user = acting_user(credential, plan.user_claim)
    principal = credential.principal
    if user is None:
        return deny(Reason.USER_ACCESS_DENIED, f"{plan.operation} needs a token acting for a signed-in user; "
                    "this credential acts for no user", field=USER_ID_FIELD, principal=principal)
    if plan.token_user is TokenUser.SELF and user != plan.resource.user_id:
        return deny(Reason.USER_ACCESS_DENIED, "the token acts for another user than this one", field=USER_ID_FIELD,
                    principal=principal)
    if plan.token_user is TokenUser.RELATED and not related:
        return deny(Reason.USER_ACCESS_DENIED, "the user the token acts for has no active relation with the partner",
                    field=USER_ID_FIELD, principal=principal)
    return None
