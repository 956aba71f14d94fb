"""Who is calling an administrative RPC, and what they may do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..domain.credentials import parse_presented
from ..domain.decide import effective_grants
from ..domain.errors import CredentialRejected, Unauthenticated
from ..domain.model import CredentialKind, Principal
from ..domain.policy import Policy
from ..domain.ports import Clock, CredentialVerifier, UnitOfWork
from ..domain.scopes import AccessLevel, Permission

# The grant that makes a credential a platform credential ("relations:admin" or "relations:write"):
# it may act on users' and org admins' behalf and on every partner's relations.
PLATFORM_PERMISSION = Permission("relations", AccessLevel.WRITE)
# The grant that makes a credential an admin credential (tollgate.v1.Admin). No policy scope is
# named "admin": the `admin` grant (every scope at write) is what holds it.
ADMIN_PERMISSION = Permission("admin", AccessLevel.WRITE)
# The grant that lets a caller use token introspection (RFC 7662): "introspect:read" where the
# policy declares the scope introspect, or admin.
INTROSPECT_PERMISSION = Permission("introspect", AccessLevel.READ)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    is_platform: bool
    # May call tollgate.v1.Admin (holds ADMIN_PERMISSION).
    is_admin: bool = False

    @property
    def partner_id(self) -> str:
        return self.principal.partner_id

    @property
    def actor(self) -> str:
        """How the caller is named in relation events."""
        if self is OPERATOR:
            return "operator"
        role = "platform" if self.is_platform else "partner"
        return f"{role}:{self.principal.partner_id}"


# The local operator using the command line: platform and admin rights, named "operator" in events.
OPERATOR = Caller(Principal(partner_id="", credential_id="cli", kind=CredentialKind.API_KEY), is_platform=True,
                  is_admin=True)


class CallerAuthenticator:
    def __init__(
        self, policy: Callable[[], Policy], unit_of_work: UnitOfWork, verifier: CredentialVerifier, clock: Clock
    ) -> None:
        self._policy = policy
        self._unit_of_work = unit_of_work
        self._verifier = verifier
        self._clock = clock

    def authenticate(self, authorization: str, api_key: str) -> Caller:
        """Raises Unauthenticated (with the token reason) when the credential is missing or bad."""
        try:
            presented = parse_presented(authorization, api_key)
            if presented is None:
                raise Unauthenticated("a bearer token or API key is required", reason="missing_token")
            with self._unit_of_work(read_only=True) as repos:
                credential = self._verifier.verify(presented, repos, self._clock.now())
        except CredentialRejected as rejected:
            raise Unauthenticated(rejected.message, reason=rejected.reason) from None
        grants = effective_grants(self._policy(), credential)
        return Caller(credential.principal, grants.allows(PLATFORM_PERMISSION), grants.allows(ADMIN_PERMISSION))
