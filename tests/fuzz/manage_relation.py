"""Fuzz target: tollgate.v1.Relations/ManageRelation, with the invariants of harness.py.

Interpretation (a) reads all but the last byte as the serialized ManageRelationRequest; the last
byte picks the caller from CALLERS. Ids may be "@rel" and "@ct": the last relation id and connect
token the server returned in this run, so the fuzzer can walk the life cycle.

    .venv/bin/python -m tests.fuzz.manage_relation [libFuzzer flags] SCRATCH_DIR tests/fuzz/corpus/manage_relation
"""

from __future__ import annotations

import sys

import atheris
import grpc

with atheris.instrument_imports(include=["service", "jwt"]):
    from tests.fuzz import harness

from google.protobuf.duration_pb2 import Duration
from tollgate.v1 import relations_pb2 as rpb
from tollgate.v1 import relations_pb2_grpc

# (metadata name, value) of the caller; "@..." expanded by the fixture.
CALLERS = [
    None, ("authorization", "Bearer @acme"), ("authorization", "Bearer @platform"), ("x-api-key", "@globex"),
    ("authorization", "Bearer @jwt-rsa"), ("authorization", "Bearer @jwt-hmac"), ("authorization", "Bearer @acme-expired"),
    ("authorization", "Bearer @shady"), ("authorization", "Bearer tg_live_garbage"), ("x-api-key", "@acme-reader"),
    ("authorization", "Bearer @acme-revoked"), ("authorization", "Basic @platform"),
]
ERRORS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED})
IDS = ["@rel", "@rel", "u-active", "u-pending", "o-active", "acme", "platform", "globex", "", "rel_0"]
JUNK_NAMES = ["x-user-id", "x-forwarded-for", "x-request-id", "user-agent-x", "x-tollgate-partner-id"]
DURATIONS = [0, 1, -1, 59, 3600, 86400 * 30, 86400 * 30 + 1, 86400 * 3650 + 1, 10 ** 12, 10 ** 14, 2 ** 63 - 1, -(2 ** 63)]

fx: harness.Fixture
stub: relations_pb2_grpc.RelationsStub
raw_manage = None


def build(fdp) -> tuple[rpb.ManageRelationRequest, list[tuple[str, str | bytes]]]:
    """Interpretation (b): an action and caller metadata from fuzzed parts mixed with structure."""
    authorization, api_key = harness.credential_fields(fdp, fx)
    metadata: list[tuple[str, str | bytes]] = []
    if authorization:
        metadata.append(("authorization", harness.printable(authorization)))
    if api_key:
        metadata.append(("x-api-key", harness.printable(api_key)))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        metadata.append((fdp.PickValueInList(JUNK_NAMES), harness.header_text(fdp)))
    if fdp.ConsumeIntInRange(0, 7) == 0:
        metadata.append(("x-junk-bin", fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))))
    request = action(fdp)
    harness.expand_message(fx, request)
    return request, metadata


def action(fdp) -> rpb.ManageRelationRequest:
    def ident():
        return fdp.PickValueInList(IDS) if fdp.ConsumeIntInRange(0, 2) else harness.text(fdp)

    def duration():
        if not fdp.ConsumeBool():
            return None
        seconds = fdp.PickValueInList(DURATIONS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-(2 ** 63), 2 ** 63 - 1)
        return Duration(seconds=seconds, nanos=fdp.PickValueInList([0, 0, 1, -1, 999_999_999, 2 ** 31 - 1]))

    which = fdp.ConsumeIntInRange(0, 6)
    if which == 0:
        return rpb.ManageRelationRequest(request_user_relation=rpb.RequestUserRelation(user_id=ident(), partner_id=ident()))
    if which == 1:
        return rpb.ManageRelationRequest(approve_user_relation=rpb.ApproveUserRelation(
            relation_id=ident(), reason=harness.text(fdp), ttl=duration()))
    if which == 2:
        return rpb.ManageRelationRequest(reject_user_relation=rpb.RejectUserRelation(relation_id=ident(), reason=harness.text(fdp)))
    if which == 3:
        return rpb.ManageRelationRequest(revoke_relation=rpb.RevokeRelation(relation_id=ident(), reason=harness.text(fdp)))
    if which == 4:
        return rpb.ManageRelationRequest(issue_connect_token=rpb.IssueConnectToken(
            organization_id=ident(), issued_by=harness.text(fdp), ttl=duration(), relation_ttl=duration()))
    if which == 5:
        token = fdp.PickValueInList(["@ct", "@ct", "tg_ct_" + "0" * 36]) if fdp.ConsumeBool() else harness.text(fdp)
        if fdp.ConsumeIntInRange(0, 3) == 0:
            token = harness.mutate(fdp, fx.expand(token))
        return rpb.ManageRelationRequest(claim_organization_relation=rpb.ClaimOrganizationRelation(connect_token=token))
    return rpb.ManageRelationRequest()


def assert_outcome(request: rpb.ManageRelationRequest, metadata, outcome: harness.Outcome, request_bytes: int) -> None:
    metadata_bytes = sum(len(name) + len(value) + 32 for name, value in metadata)
    harness.assert_in_time_and_documented(outcome, ERRORS, request_bytes=request_bytes, metadata_bytes=metadata_bytes)
    authorizations = [v for k, v in metadata if k == "authorization"]
    api_keys = [v for k, v in metadata if k == "x-api-key"]
    quotable = harness.strings_in(request) + [v for k, v in metadata if k not in ("authorization", "x-api-key")
                                              and isinstance(v, str)]
    harness.assert_no_echo(fx, outcome, authorizations + api_keys, quotable)
    partner = fx.partner_of(harness.presented_token(authorizations[0] if authorizations else "",
                                                    api_keys[0] if api_keys else ""))
    has_action = request.WhichOneof("action") is not None
    if outcome.code is None:
        if partner is None or not has_action:
            harness.fail("ManageRelation succeeded without a genuine caller")
        relation = outcome.response.relation
        if partner != "platform" and outcome.response.HasField("relation") and relation.partner_id != partner:
            harness.fail(f"{partner!r} changed {outcome.response.relation.partner_id!r}'s relation")
        if outcome.response.relation.id:
            fx.state["@rel"] = outcome.response.relation.id
        if outcome.response.connect_token.token:
            fx.state["@ct"] = outcome.response.connect_token.token
        return
    if outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return
    if not has_action:
        if outcome.code is not grpc.StatusCode.INVALID_ARGUMENT:
            harness.fail(f"no action set, answered {outcome.code.name}")
    elif partner is None and (outcome.code is not grpc.StatusCode.UNAUTHENTICATED
                              or outcome.reason not in harness.TOKEN_REASONS):
        harness.fail(f"a caller without a genuine credential got {outcome.code.name} {outcome.reason!r}")
    if outcome.code is grpc.StatusCode.ABORTED and outcome.reason != "concurrent_change":
        harness.fail(f"ABORTED {outcome.reason!r}")


def test_one_input(data: bytes) -> None:
    fx.minted.clear()
    if data:
        request = harness.parse(rpb.ManageRelationRequest, data[:-1])
        caller = CALLERS[data[-1] % len(CALLERS)]
        if request is not None:
            metadata = [(caller[0], fx.expand(caller[1]))] if caller else []
            if harness.expand_message(fx, request):
                outcome, size = harness.call(stub.ManageRelation, request, metadata=metadata or None), request.ByteSize()
            else:
                outcome, size = harness.call(raw_manage, data[:-1], metadata=metadata or None), len(data) - 1
            assert_outcome(request, metadata, outcome, size)
    fx.minted.clear()
    request, metadata = build(atheris.FuzzedDataProvider(data))
    assert_outcome(request, metadata, harness.call(stub.ManageRelation, request, metadata=metadata or None), request.ByteSize())


def prime() -> None:
    """A pending relation and an unclaimed connect token for @rel and @ct to start from."""
    pending = fx.world.manage("acme", request_user_relation=rpb.RequestUserRelation(user_id="u-fuzz"))
    issued = fx.world.manage("platform", issue_connect_token=rpb.IssueConnectToken(organization_id="o-fuzz",
                                                                                    issued_by="fuzz"))
    fx.state["@rel"], fx.state["@ct"] = pending.relation.id, issued.connect_token.token


def main() -> None:
    global fx, stub, raw_manage
    fx = harness.start()
    stub = relations_pb2_grpc.RelationsStub(fx.world.channel)
    raw_manage = harness.raw_method(fx.world.channel, "/tollgate.v1.Relations/ManageRelation",
                                    rpb.ManageRelationResponse)
    prime()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
