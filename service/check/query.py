"""What a transport hands the Check capability, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..domain.credentials import QueryApiKey
from ..domain.decide import CheckPlan, Resource
from ..domain.decision import Decision
from ..domain.explain import Step
from ..domain.model import AuthenticatedCredential
from ..domain.policy import Policy

MAX_BATCH = 100


@dataclass(frozen=True)
class CheckQuery:
    authorization: str = ""
    api_key: str = ""
    operation: str = ""
    permissions: list[str] = field(default_factory=list)
    resource: Resource = Resource()
    # A store revision (from ManageRelation) the decision must reflect; 0 for "any recent one".
    at_least_as_fresh: int = 0
    # Where the credential came from, for the failed-credential limit.
    client_address: str = ""
    # ext_authz only: the API key query parameter of a route that has one, when the request sent
    # it; used only when neither credential header carries anything.
    query_api_key: QueryApiKey | None = None
    # Whether to report the steps that led to the decision (Checked.steps).
    explain: bool = False


@dataclass(frozen=True)
class CheckItem:
    operation: str = ""
    permissions: list[str] = field(default_factory=list)
    resource: Resource = Resource()


@dataclass(frozen=True)
class BatchQuery:
    """Up to MAX_BATCH checks of one credential, verified once."""

    authorization: str
    api_key: str
    items: list[CheckItem]
    at_least_as_fresh: int = 0
    client_address: str = ""
    explain: bool = False


class CheckCall:
    """One Check as a transport hands it over: the query, decoded only when it is needed, and, when
    the transport has them, the request's own bytes, which name it whole (a decision kept for them
    answers any identical request without decoding it), and their SHA-256 digest when the
    transport has already taken it."""

    __slots__ = ("_decode", "_query", "digest", "request_bytes")

    def __init__(self, decode: Callable[[], CheckQuery], request_bytes: bytes | None = None,
                 digest: bytes | None = None) -> None:
        self._decode = decode
        self._query: CheckQuery | None = None
        self.request_bytes = request_bytes
        self.digest = digest

    @classmethod
    def of(cls, query: CheckQuery, request_bytes: bytes | None = None, digest: bytes | None = None) -> CheckCall:
        """A call whose query is already decoded; `request_bytes`, when given, name it whole."""
        call = cls(_never_decoded, request_bytes, digest)
        call._query = query
        return call

    def query(self) -> CheckQuery:
        """Raises InvalidRequest (from the decoder) for a malformed request."""
        query = self._query
        if query is None:
            query = self._query = self._decode()
        return query


def _never_decoded() -> CheckQuery:
    raise AssertionError("CheckCall.of holds its query")


class Basis(NamedTuple):
    """What a decision about a verified credential that no limit refused rests on: the policy and
    plan it was decided under and the credential (its expiry and, with the plan, the relations
    looked at). Only such decisions may be kept for identical requests (caching/remembering.py)."""

    policy: Policy
    plan: CheckPlan
    credential: AuthenticatedCredential


class Checked(NamedTuple):  # a tuple: made on every check, so made cheaply
    decision: Decision
    # The steps that led to the decision, when the query asked for them; None otherwise.
    steps: tuple[Step, ...] | None = None
    # See Basis; None for every other decision, and for explained ones (never kept).
    basis: Basis | None = None
    # Whether the decision was given again for an identical earlier request (the decision memo).
    recalled: bool = False
