"""What names an ext_authz request for the decision memo before it is converted (request_name), the
servicer's memo of conversions, and responses encoded from their template's bytes. No server, no
database: the checker is a fake of the Checker port."""

from __future__ import annotations

import itertools

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from service.check.query import CheckCall, Checked
from service.domain.decision import Decision, Reason, deny
from service.domain.errors import InvalidRequest
from service.domain.model import CredentialKind, Principal
from service.domain.policy import Policy, parse_policy
from service.telemetry import Telemetry
from service.transport.ext_authz import ExtAuthzServicer
from service.transport.ext_authz_convert import check_query_from_ext_authz, request_name
from service.transport.responses import DECISION_ID_PLACEHOLDER, ExtAuthzResponses
from tests.support.envoy import ext_authz_request

DOCUMENT = {
    "scopes": {"user": None},
    "operations": {"getA": {"relation": "user"}, "getB": {}, "getC": {}},
    "routes": [
        {"match": "GET /a/{id}", "operation": "getA", "resource": {"user_id": "path.id"}},
        {"match": "GET /b", "operation": "getB", "resource": {"user_id": "header.X-User",
                                                               "customer_id": "query.customer"},
         "api_key_query_parameter": "api_key"},
    ],
}
POLICY = parse_policy(DOCUMENT)
DECISION_ID = "0123456789abcdef0123456789abcdef"


def _variants() -> list[external_auth_pb2.CheckRequest]:
    """Requests that differ in every field the conversion reads, and in some it does not."""
    methods = ["GET", "get", "POST"]
    paths = ["/a/u-1", "/a/u-2", "/a/u-1?x=1", "/b", "/b?customer=7", "/b?api_key=k1", "/b?api_key=k1&api_key=k2", "/c"]
    header_sets = [
        {},
        {"authorization": "Bearer t1"},
        {"authorization": "Bearer t"},
        {"x-api-key": "Bearer t"},
        {"authorization": "Bearer t1", "x-user": "u-9"},
        {"authorization": "Bearer t1", "x-user": "u-8"},
        {"authorization": "Bearer t1", "x-request-id": "r-1"},  # not decisive
        {"authorization": "Bearer t1", "x-org": "o-1"},
    ]
    extension_sets = [{}, {"operation": "getC"}, {"organization_id": "header.X-Org"},
                      {"organization_id": "query.x"}, {"operation": ""}]
    requests = []
    for method, path, headers, extensions in itertools.product(methods, paths, header_sets, extension_sets):
        requests.append(ext_authz_request(method, path, headers, extensions))
    return requests


def _query(request: external_auth_pb2.CheckRequest, client_address: str = ""):
    try:
        return check_query_from_ext_authz(request, POLICY.routes, client_address)
    except InvalidRequest as error:
        return ("invalid", error.message)


def test_requests_of_one_name_convert_to_one_query():
    queries_by_name: dict[bytes, set] = {}
    for request in _variants():
        for client_address in ("", "10.0.0.1"):
            name = request_name(request, POLICY.routes, client_address)
            assert name is not None
            queries_by_name.setdefault(name, set()).add(repr(_query(request, client_address)))
    assert all(len(queries) == 1 for queries in queries_by_name.values())
    # And the name is not coarser than it must be: only headers nothing reads are left out.
    assert len(queries_by_name) > 1000


def test_a_header_nothing_reads_leaves_the_name_as_it_is_and_a_read_one_changes_it():
    def name(headers, extensions=None):
        return request_name(ext_authz_request("GET", "/b", headers, extensions), POLICY.routes, "")

    base = {"authorization": "Bearer t1"}
    assert name({**base, "x-request-id": "r-1"}) == name({**base, "x-request-id": "r-2"}) == name(base)
    assert name({**base, "x-user": "u-1"}) != name({**base, "x-user": "u-2"})  # a route reads X-User
    extensions = {"organization_id": "header.x-org"}
    assert name({**base, "x-org": "o-1"}, extensions) != name({**base, "x-org": "o-2"}, extensions)
    assert name({**base, "x-org": "o-1"}) == name({**base, "x-org": "o-2"})  # read only when named


def test_headers_with_an_upper_case_name_or_in_a_raw_header_map_are_named_by_their_query():
    mixed = ext_authz_request("GET", "/b", {"Authorization": "Bearer t1"})
    assert request_name(mixed, POLICY.routes, "") is None
    raw = ext_authz_request("GET", "/b")
    raw.attributes.request.http.ClearField("headers")
    raw.attributes.request.http.header_map.headers.append(base_pb2.HeaderValue(key="authorization", value="x"))
    assert request_name(raw, POLICY.routes, "") is None


# -- the servicer ------------------------------------------------------------------------------------

PRINCIPAL = Principal("acme", "key_1", CredentialKind.API_KEY)


class _Context:
    def time_remaining(self):
        return None

    def invocation_metadata(self):
        return ()


class _RecordingChecker:
    """A fake Checker: allows, and records each call's name and (decoded on demand) query."""

    def __init__(self, recall: bool = False) -> None:
        self.names: list[bytes | None] = []
        self.recall = recall

    def check(self, call: CheckCall) -> Checked:
        self.names.append(call.request_bytes)
        if self.recall:
            return Checked(Decision(True, principal=PRINCIPAL), recalled=True)
        call.query()
        return Checked(Decision(True, principal=PRINCIPAL))

    def check_batch(self, batch):
        raise NotImplementedError


def _servicer(checker, policy: list[Policy]) -> ExtAuthzServicer:
    return ExtAuthzServicer(checker, lambda: policy[0], "r", Telemetry(), client_addresses=False)


def _ask(servicer: ExtAuthzServicer, request: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse.FromString(servicer.Check(request.SerializeToString(), _Context()))


def test_a_recalled_request_is_answered_for_the_operation_its_policy_routes_it_to():
    checker, policy = _RecordingChecker(), [POLICY]
    servicer = _servicer(checker, policy)
    request = ext_authz_request("GET", "/a/u-1", {"authorization": "Bearer t1"})
    first = _ask(servicer, request)
    checker.recall = True  # now only the name is known, the query is never decoded
    again = _ask(servicer, request)
    assert first.dynamic_metadata["operation"] == again.dynamic_metadata["operation"] == "getA"
    assert checker.names[0] == checker.names[1] is not None
    renamed = dict(DOCUMENT, operations={**DOCUMENT["operations"], "getA2": {"relation": "user"}},
                   routes=[{**DOCUMENT["routes"][0], "operation": "getA2"}, DOCUMENT["routes"][1]])
    policy[0] = parse_policy(renamed)  # a reload: what a name converts to is learnt again
    assert _ask(servicer, request).dynamic_metadata["operation"] == "getA2"


def test_without_a_memo_no_request_is_named():
    checker = _RecordingChecker()
    servicer = ExtAuthzServicer(checker, lambda: POLICY, "r", Telemetry(), client_addresses=False,
                                names_requests=False)
    assert _ask(servicer, ext_authz_request("GET", "/a/u-1", {"authorization": "t"})).HasField("ok_response")
    assert checker.names == [None]


def test_bytes_that_are_not_a_check_request_are_invalid_argument():
    class Aborted(Exception):
        pass

    class Context(_Context):
        def abort_with_status(self, status):
            self.status = status
            raise Aborted

    context = Context()
    with pytest.raises(Aborted):
        _servicer(_RecordingChecker(), [POLICY]).Check(b"\xff\xff\xff", context)
    assert context.status.code.name == "INVALID_ARGUMENT"


# -- responses from their template's bytes -----------------------------------------------------------

@pytest.mark.parametrize("decision", [
    Decision(True, principal=PRINCIPAL),
    deny(Reason.USER_ACCESS_DENIED, "no relation", principal=PRINCIPAL),
], ids=["allow", "deny"])
@pytest.mark.parametrize("operation", ["getA", f"op {DECISION_ID_PLACEHOLDER}"], ids=["plain", "placeholder"])
@pytest.mark.parametrize("removed", [(), ("api_key",)], ids=["none", "removed"])
def test_the_encoded_response_is_the_response_message(decision, operation, removed):
    responses = ExtAuthzResponses("r")
    for _ in range(2):  # made, then from the kept template
        encoded = responses.serialized(decision, DECISION_ID, operation=operation, strip_credentials=True,
                                       remove_query_parameters=removed)
        message = responses.response(decision, DECISION_ID, operation=operation, strip_credentials=True,
                                     remove_query_parameters=removed)
        decoded = external_auth_pb2.CheckResponse.FromString(encoded)
        assert json_format.MessageToDict(decoded) == json_format.MessageToDict(message)
        assert DECISION_ID_PLACEHOLDER not in str(json_format.MessageToDict(decoded)).replace(
            f"op {DECISION_ID_PLACEHOLDER}", "")
        assert decoded.dynamic_metadata["decision_id"] == DECISION_ID
        if decision.allowed:
            assert decoded.ok_response.headers[0].header.value == DECISION_ID
