"""Fuzz target: tollgate.v1.Authorization/Check (native), with the invariants of harness.py.

    .venv/bin/python -m tests.fuzz.check [libFuzzer flags] SCRATCH_DIR tests/fuzz/corpus/check
"""

from __future__ import annotations

import atheris
import grpc

with atheris.instrument_imports(include=["service", "jwt"]):
    from tests.fuzz import harness

from tollgate.v1 import authorization_pb2 as apb

OPERATIONS = ["health", "getUser", "updateUser", "getOrganization", "createCourtBooking", "listCustomerOrders", ""]
PERMISSIONS = ["user:read", "read:user", "user:write", "court-booking:write", "read:bookings", "order:read",
               "relations:admin", "admin", "organization:read", "user:", ":read"]
IDS = ["", "u-active", "u-pending", "u-lapsed", "o-active", "C-1", "C-2"]

fx: harness.Fixture


def build(fdp) -> apb.CheckRequest:
    """Interpretation (b): a CheckRequest from fuzzed parts mixed with structure."""
    authorization, api_key = harness.credential_fields(fdp, fx)
    def pick(values):
        return fdp.PickValueInList(values) if fdp.ConsumeIntInRange(0, 2) else harness.text(fdp)
    permissions = [pick(PERMISSIONS) for _ in range(fdp.PickValueInList([0, 0, 1, 2, 33]))]
    return apb.CheckRequest(
        authorization=authorization, api_key=api_key, operation=pick(OPERATIONS), permissions=permissions,
        resource=apb.Resource(user_id=pick(IDS), organization_id=pick(IDS), customer_id=pick(IDS)),
        at_least_as_fresh=fdp.PickValueInList(["", "", "1", "²", "99999999999999999999999", "-1", " 1"]),
        client_address=pick(["", "127.0.0.1", "::1"]))


def assert_outcome(request: apb.CheckRequest, outcome: harness.Outcome, request_bytes: int) -> None:
    harness.assert_in_time_and_documented(outcome, frozenset({grpc.StatusCode.INVALID_ARGUMENT}),
                                          request_bytes=request_bytes)
    credentials = (request.authorization, request.api_key)
    quotable = [s for s in harness.strings_in(request) if s not in credentials]
    harness.assert_no_echo(fx, outcome, credentials, quotable)
    if outcome.code is not None:
        return
    response = outcome.response
    partner = fx.partner_of(harness.presented_token(request.authorization, request.api_key))
    public = request.operation == "health" and not request.permissions
    if response.allowed:
        if response.http_status != 200 or response.reason:
            harness.fail(f"an allow with status {response.http_status} and reason {response.reason!r}")
        if partner is None and not public:
            harness.fail("allowed without a genuine credential")
        if response.HasField("principal"):
            if response.principal.partner_id != partner:
                harness.fail(f"allowed as {response.principal.partner_id!r}, the credential is {partner!r}'s")
        elif not public:
            harness.fail("a non-public allow without a principal")
        return
    if harness.DOCUMENTED_REASONS.get(response.reason) != response.http_status:
        harness.fail(f"undocumented deny {response.reason!r} / {response.http_status}")
    if response.grants:
        harness.fail("a deny that lists grants")
    if response.HasField("principal"):  # only after a genuine credential was proven, as its partner
        if response.principal.partner_id != partner or response.reason in harness.TOKEN_REASONS:
            harness.fail(f"a {response.reason!r} deny names {response.principal.partner_id!r}, the credential is "
                         f"{partner!r}'s")


def ready(fixture: harness.Fixture) -> None:
    global fx
    fx = fixture


def main() -> None:
    harness.fuzz_message_target("/tollgate.v1.Authorization/Check", apb.CheckRequest, apb.CheckResponse, build,
                                assert_outcome, ready)


if __name__ == "__main__":
    main()
