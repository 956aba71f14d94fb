"""The Check table: credential + facts -> decision, reason, HTTP status.

Each case builds its request from the seeded world (tests/support/world.py) so one table drives
the native Check and any other adapter of the same core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.support.keys import generate_signing_key

ATTACKER = generate_signing_key("RS256", "attacker")  # signs with the real kid in its header


@dataclass(frozen=True)
class CheckCase:
    name: str
    request: Callable  # world -> dict of World.check keyword arguments (operation included)
    reason: str  # "" for allow
    http_status: int
    field: str = ""
    # The principal's partner: on allow, and on a deny decided after the credential was proven
    # (insufficient_scope, the access denials); "" when no credential was recognised.
    partner_id: str = ""


def key(name: str, header: str = "authorization"):
    def with_key(world, **request):
        credential = world.bearer(name) if header == "authorization" else world.keys[name]
        return {header: credential, **request}
    return with_key


def token(issuer: str, partner: str = "acme", **claims):
    def with_token(world, **request):
        return {"authorization": f"Bearer {world.jwt(issuer, partner, **claims)}", **request}
    return with_token


def forged_token(world, **request):
    claims = {"iss": world.issuers["rsa"], "aud": "https://api.example.test", "client_id": "acme",
              "exp": int(world.clock.now().timestamp()) + 300}
    return {"authorization": "Bearer " + ATTACKER.sign(claims, headers={"kid": "rsa-1"}), **request}


def case(name, credential, operation, reason, status, *, field="", partner_id="", **request):
    def build(world):
        args = {"operation": operation, **request}
        return credential(world, **args) if credential else args
    return CheckCase(name, build, reason, status, field, partner_id)


CASES = [
    # unknown / public / missing
    case("unknown operation", key("acme"), "deleteEverything", "unknown_operation", 403),
    case("no operation and no permissions", key("acme"), "", "unknown_operation", 403),
    case("public without credential", None, "health", "", 200),
    case("public with a broken credential", lambda w, **r: {"authorization": "Bearer junk", **r}, "health", "", 200),
    case("no credential", None, "getUser", "missing_token", 401, user_id="u-active"),
    # invalid
    case("malformed api key", lambda w, **r: {"api_key": "tg_live_nope", **r}, "getUser", "invalid_token", 401,
         user_id="u-active"),
    case("unknown api key", lambda w, **r: {"api_key": "tg_live_" + "A" * 30 + w.keys["acme"][-6:], **r},
         "getUser", "invalid_token", 401, user_id="u-active"),
    # RFC 6750 section 3.1: another auth-scheme carries no bearer credentials; an X-API-Key beside it counts
    case("basic auth scheme", lambda w, **r: {"authorization": "Basic YTpi", **r}, "getUser", "missing_token", 401,
         user_id="u-active"),
    case("basic auth scheme beside an api key",
         lambda w, **r: {"authorization": "Basic YTpi", "api_key": w.keys["acme"], **r}, "getUser", "", 200,
         partner_id="acme", user_id="u-active"),
    case("bearer with two tokens", lambda w, **r: {"authorization": "Bearer a b", **r}, "getUser", "invalid_token",
         401, user_id="u-active"),
    case("jwt bad signature", forged_token, "getUser", "invalid_token", 401, user_id="u-active"),
    case("jwt unknown issuer", token("rsa", iss="https://evil.test"), "getUser", "invalid_token", 401,
         user_id="u-active"),
    case("jwt wrong audience", token("rsa", aud="https://other.test"), "getUser", "invalid_token", 401,
         user_id="u-active"),
    case("jwt missing exp", token("rsa", exp=None), "getUser", "invalid_token", 401, user_id="u-active"),
    case("jwt issued in the future", lambda w, **r: token("rsa", iat=int(w.clock.now().timestamp()) + 3600)(w, **r),
         "getUser", "invalid_token", 401, user_id="u-active"),
    case("jwt unknown partner", token("rsa", partner="nobody"), "getUser", "invalid_token", 401, user_id="u-active"),
    # expired
    case("expired api key", key("acme-expired"), "getUser", "token_expired", 401, user_id="u-active"),
    case("expired jwt", token("rsa", lifetime=-120), "getUser", "token_expired", 401, user_id="u-active"),
    # revoked
    case("revoked api key", key("acme-revoked"), "getUser", "token_revoked", 401, user_id="u-active"),
    case("suspended partner key", key("shady"), "getUser", "token_revoked", 401, user_id="u-active"),
    case("suspended partner jwt", token("ec", partner="shady"), "getUser", "token_revoked", 401, user_id="u-active"),
    # scope
    case("reader key cannot write", key("acme-reader"), "updateUser", "insufficient_scope", 403, user_id="u-active",
         partner_id="acme"),
    case("role reader cannot book", key("globex"), "createCourtBooking", "insufficient_scope", 403,
         partner_id="globex"),
    case("jwt scope narrows", token("rsa", scope="read:user"), "updateUser", "insufficient_scope", 403,
         user_id="u-active", partner_id="acme"),
    case("jwt scope cannot widen", token("rsa", partner="globex", scope="admin"), "updateUser",
         "insufficient_scope", 403, user_id="u-active", partner_id="globex"),
    case("explicit permission missing", key("acme"), "", "insufficient_scope", 403, permissions=["relations:write"],
         partner_id="acme"),
    # relations
    case("pending user relation", key("acme"), "getUser", "user_access_denied", 403, field="userId",
         user_id="u-pending", partner_id="acme"),
    case("no user relation", key("acme"), "getUser", "user_access_denied", 403, field="userId", user_id="u-none",
         partner_id="acme"),
    case("lapsed user relation", key("acme"), "getUser", "user_access_denied", 403, field="userId",
         user_id="u-lapsed", partner_id="acme"),
    case("no org relation", key("acme"), "getOrganization", "organization_access_denied", 403,
         field="organizationId", organization_id="o-none", partner_id="acme"),
    case("other partner's org", key("globex"), "getOrganization", "organization_access_denied", 403,
         field="organizationId", organization_id="o-active", partner_id="globex"),
    # customer
    case("foreign customer number", key("acme"), "listCustomerOrders", "customer_access_denied", 403,
         field="customerId", customer_id="C-9", partner_id="acme"),
    case("jwt without customer numbers", token("rsa"), "listCustomerOrders", "customer_access_denied", 403,
         field="customerId", customer_id="C-1", partner_id="acme"),
    # allows
    case("api key via authorization", key("acme"), "getUser", "", 200, partner_id="acme", user_id="u-active"),
    case("api key via x-api-key", key("acme", header="api_key"), "updateUser", "", 200, partner_id="acme",
         user_id="u-active"),
    case("reader key reads", key("acme-reader"), "getUser", "", 200, partner_id="acme", user_id="u-active"),
    case("role reader reads", key("globex"), "getUser", "", 200, partner_id="globex", user_id="u-active"),
    case("org relation", key("acme"), "getOrganization", "", 200, partner_id="acme", organization_id="o-active"),
    case("customer number", key("acme"), "listCustomerOrders", "", 200, partner_id="acme", customer_id="C-2"),
    case("jwt customer claim", token("rsa", customer_numbers=["C-7"]), "listCustomerOrders", "", 200,
         partner_id="acme", customer_id="C-7"),
    case("jwt rs256", token("rsa"), "getUser", "", 200, partner_id="acme", user_id="u-active"),
    case("jwt es256", token("ec"), "getOrganization", "", 200, partner_id="acme", organization_id="o-active"),
    case("jwt eddsa", token("ed"), "getUser", "", 200, partner_id="acme", user_id="u-active"),
    case("jwt hs256", token("hmac"), "createCourtBooking", "", 200, partner_id="acme"),
    case("jwt oauth scope spelling", token("rsa", scope="openid read:user"), "getUser", "", 200, partner_id="acme",
         user_id="u-active"),
    case("jwt scp list and alias", token("ec", scp=["write:bookings"]), "createCourtBooking", "", 200,
         partner_id="acme"),
    case("jwt sub when no client_id", token("ed", client_id=None, sub="acme"), "createCourtBooking", "", 200,
         partner_id="acme"),
    case("explicit permissions only", key("acme"), "", "", 200, partner_id="acme",
         permissions=["user:read", "read:bookings"]),
]
