"""BatchCheck: one credential, many items; each result is exactly what Check answers."""

import grpc
import pytest
from tollgate.v1 import authorization_pb2 as pb

from tests.support.grpc_errors import expect_error

ITEMS = [
    ("getUser", {"user_id": "u-active"}), ("getUser", {"user_id": "u-pending"}), ("health", {}),
    ("updateUser", {"user_id": "u-active"}), ("getOrganization", {"organization_id": "o-active"}),
    ("getOrganization", {"organization_id": "o-none"}), ("listCustomerOrders", {"customer_id": "C-9"}),
    ("nosuchOperation", {}), ("createCourtBooking", {}),
]


def batch(world, credential, items, **extra):
    return world.authorization.BatchCheck(pb.BatchCheckRequest(
        authorization=credential, items=[pb.BatchCheckItem(operation=op, resource=pb.Resource(**res))
                                         for op, res in items], **extra), timeout=10)


@pytest.mark.parametrize("key_name", ["acme", "acme-reader", "acme-revoked", None])
def test_each_result_is_what_check_answers(shared_world, key_name):
    credential = shared_world.bearer(key_name) if key_name else ""
    results = batch(shared_world, credential, ITEMS).results
    assert len(results) == len(ITEMS)
    for (operation, resource), result in zip(ITEMS, results, strict=True):
        single = shared_world.check(operation, authorization=credential, **resource)
        assert (result.allowed, result.reason, result.http_status, result.body, result.www_authenticate) == (
            single.allowed, single.reason, single.http_status, single.body, single.www_authenticate), operation


@pytest.mark.parametrize("items, field", [
    ([], "items"),
    ([("health", {})] * 101, "items"),
    ([("health", {}), ("getUser", {})], "items[1].resource.user_id"),
])
def test_malformed_batches_are_invalid_argument(shared_world, items, field):
    error = expect_error(batch, shared_world, shared_world.bearer("acme"), items)
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
