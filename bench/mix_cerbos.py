"""Cerbos as a target of the realistic mix: the mix's JWT requests as CheckResources calls.

Cerbos has no API keys, so it is sent the JWT share of the mix only (the requests of the JWT
clients, ~25 %), and Tollgate is measured on the same share beside it (another server, sent the
same requests in the same rounds). Handing Cerbos the API-key requests as principals the caller had
already resolved would leave out the key lookup Tollgate does on them, and flatter Cerbos.

Each request becomes one CheckResources call that decides what Tollgate's native Check decides:

- the token goes as `auxData.jwt`, naming the key set of its issuer (the RS256 or the ES256 external
  issuer; the caller knows which issuer its client's tokens come from): Cerbos verifies the
  signature and expiry with that local key set, as shipped (its verified-token cache of 256 tokens);
- the principal is the partner (the token's `client_id`, as the caller would read it) with the
  partner's grants as an attribute, looked up by the caller as Tollgate looks them up in its store;
- the resource is the user (getUser, updateUser) or the organization (getOrganization) with its
  `active_partners` (every partner with an active relation to it in the seeded layout: the
  relation data a caller of Cerbos has to look up before each call, since Cerbos holds none), or a
  new court booking (createCourtBooking, no relation);
- a resource policy per kind (`policies`) allows the action when the token's issuer is one of the
  two, its audience the API's, its `client_id` the principal, the permission the operation needs is
  in both the token's scope and the partner's grants and, for users and organizations, the partner
  is among the resource's `active_partners`. So getUser and createCourtBooking are allowed,
  updateUser is denied (no scope or grant user:write), getOrganization is allowed, and a pending or
  revoked relation is denied (its partner is not among the active ones).

Cerbos gives an effect and no reason, so an answer is judged allow or deny (and must name the
resource asked about); its call counters are read around each row (`counters_checked`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from . import cerbos
from . import seed as seeding
from .mix_traffic import MixRequest, jwt_issuer

# operation: (resource kind, the permission it needs, whether it needs an active relation to the resource)
OPERATIONS = {
    "getUser": ("user", "user:read", True),
    "updateUser": ("user", "user:write", True),
    "getOrganization": ("organization", "organization:read", True),
    "createCourtBooking": ("court_booking", "court-booking:write", False),
}
NEW_BOOKING = "new"  # the id of createCourtBooking's resource, which does not exist yet
JWT = "request.aux_data.jwt"


def policies(issuers: Iterable[str], audience: str) -> dict[str, str]:
    """One resource policy per kind, by file name."""
    token = [
        f"{JWT}.iss in {json.dumps(sorted(issuers))}",
        f'"{audience}" in (type({JWT}.aud) == string ? [{JWT}.aud] : {JWT}.aud)',
        f"{JWT}.client_id == request.principal.id",
    ]
    rules: dict[str, list[dict]] = {}
    for operation, (kind, permission, related) in OPERATIONS.items():
        conditions = [*token, f'"{permission}" in {JWT}.scope.split(" ")',
                      f'"{permission}" in request.principal.attr.grants']
        if related:
            conditions.append("request.principal.id in request.resource.attr.active_partners")
        rules.setdefault(kind, []).append({
            "actions": [operation], "effect": "EFFECT_ALLOW", "roles": ["*"],
            "condition": {"match": {"all": {"of": [{"expr": c} for c in conditions]}}}})
    return {f"{kind}.yaml": yaml.safe_dump({"apiVersion": "api.cerbos.dev/v1", "resourcePolicy": {
        "version": "default", "resource": kind, "rules": kind_rules}}, sort_keys=False, width=1000)
        for kind, kind_rules in rules.items()}


def key_sets(seeded: seeding.Seeded) -> dict[str, dict]:
    """Each external issuer's JWKS as a local key set named after the issuer (Seeded.issuers' keys)."""
    from tests.support.keys import jwks
    return {name: jwks(signer) for name, signer in seeded.signers.items()}


def subject(request: MixRequest) -> str:
    return request.user_id or request.organization_id


def relation_data(requests: Iterable[MixRequest], size: seeding.SeedSize) -> dict[str, tuple[str, ...]]:
    """The active partners of every user and organization the JWT requests ask about."""
    related: dict[str, tuple[str, ...]] = {}
    for request in requests:
        if request.jwt and OPERATIONS[request.operation][2] and (name := subject(request)) not in related:
            related[name] = tuple(cerbos.related_partners(size, name))
    return related


# The request without its token, per (partner, operation, subject), in each load process: the part
# a caller would build from its own lookups; the token, which changes on renewal, is added per call.
_without_token: dict[tuple[str, str, str], bytes] = {}


@dataclass(frozen=True)
class CerbosCheck:
    """A mix request as a CheckResources call (JWT requests only)."""

    related: dict[str, tuple[str, ...]]  # relation_data(): what the caller hands over
    grants: tuple[str, ...] = tuple(seeding.PARTNER_GRANTS)  # every seeded partner's grants
    method: str = cerbos.PATH

    def encode(self, request: MixRequest, credential: str) -> bytes:
        from cerbos.request.v1 import request_pb2
        if not request.jwt:
            raise ValueError("Cerbos is sent JWT requests only")
        key = (request.partner, request.operation, subject(request))
        prefix = _without_token.get(key)
        if prefix is None:
            prefix = _without_token[key] = self._without_token(request).SerializeToString()
        # Serialized messages of one type concatenate into their merge: the prefix plus the token.
        token = request_pb2.CheckResourcesRequest(aux_data=request_pb2.AuxData(jwt=request_pb2.AuxData.JWT(
            token=credential, key_set_id=jwt_issuer(request.credential))))
        return prefix + token.SerializeToString()

    def _without_token(self, request: MixRequest):
        from cerbos.engine.v1 import engine_pb2
        from cerbos.request.v1 import request_pb2
        from google.protobuf import struct_pb2

        def strings(values: Iterable[str]) -> struct_pb2.Value:
            return struct_pb2.Value(list_value=struct_pb2.ListValue(
                values=[struct_pb2.Value(string_value=value) for value in values]))

        kind, _, related = OPERATIONS[request.operation]
        attributes = {"active_partners": strings(self.related[subject(request)])} if related else {}
        resource = engine_pb2.Resource(kind=kind, id=subject(request) or NEW_BOOKING, attr=attributes)
        return request_pb2.CheckResourcesRequest(
            principal=engine_pb2.Principal(id=request.partner, roles=["partner"],
                                           attr={"grants": strings(self.grants)}),
            resources=[request_pb2.CheckResourcesRequest.ResourceEntry(actions=[request.operation],
                                                                       resource=resource)])

    def verdict(self, response: bytes, request: MixRequest) -> str:
        from cerbos.effect.v1 import effect_pb2
        from cerbos.response.v1 import response_pb2
        answer = response_pb2.CheckResourcesResponse.FromString(response)
        if len(answer.results) != 1 or answer.results[0].resource.id != (subject(request) or NEW_BOOKING):
            return "wrong_resource"
        effect = answer.results[0].actions.get(request.operation, effect_pb2.EFFECT_UNSPECIFIED)
        return {effect_pb2.EFFECT_ALLOW: "allow", effect_pb2.EFFECT_DENY: "deny"}.get(effect, "no_effect")

    def expected(self, request: MixRequest) -> str:
        return "allow" if request.expected == "allow" else "deny"


def counters_checked(before: Counter, after: Counter, outcomes: Counter) -> tuple[str, list[str]]:
    """Cerbos's CheckResources calls answered OK and its successful engine checks must each have
    moved by the calls the load saw answered (every call of the row, warm-up included), and no
    other status by anything. (What was verified, problems.)"""
    answered = sum(count for verdict, count in outcomes.items() if not verdict.startswith("error:"))
    delta = cerbos.counter_delta(before, after)
    ok = delta.pop(("calls", "OK"), 0)
    engine = delta.pop(("engine", "success"), 0)
    problems = []
    if ok != answered:
        problems.append(f"Cerbos counted {ok:,} OK CheckResources calls, the load saw {answered:,} answered")
    if engine != answered:
        problems.append(f"Cerbos counted {engine:,} successful engine checks, the load saw {answered:,} answered")
    if delta:
        problems.append("unexpected Cerbos counts " + ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))
    return (f"Cerbos's counters moved by {ok:,} OK CheckResources calls and {engine:,} successful engine checks "
            f"= the {answered:,} answers, {sum(delta.values())} other"), problems
