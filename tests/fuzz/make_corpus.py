"""Writes the seed corpus: a handful of small valid serialized requests per target, so a run starts
from meaningful inputs. Credentials are @placeholders (harness.Fixture.expand), because the keys
and tokens of a run are made when its server starts.

    .venv/bin/python -m tests.fuzz.make_corpus      # rewrites tests/fuzz/corpus/<target>/
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf.duration_pb2 import Duration
from tollgate.v1 import authorization_pb2 as apb
from tollgate.v1 import relations_pb2 as rpb

CORPUS = Path(__file__).resolve().parent / "corpus"


def check_seeds() -> list[bytes]:
    def request(operation, authorization="", api_key="", permissions=(), **resource):
        return apb.CheckRequest(operation=operation, authorization=authorization, api_key=api_key,
                                permissions=list(permissions), resource=apb.Resource(**resource))

    return [m.SerializeToString() for m in (
        request("health"),
        request("getUser", "Bearer @acme", user_id="u-active"),
        request("getUser", api_key="@acme-reader", user_id="u-active"),
        request("getUser", "Bearer @jwt-rsa", user_id="u-pending"),
        request("getOrganization", "Bearer @jwt-ec", organization_id="o-active"),
        request("listCustomerOrders", "bearer @acme", customer_id="C-1"),
        request("createCourtBooking", "Bearer @jwt-ed"),
        request("", "Bearer @jwt-hmac", permissions=["relations:admin"]),
        request("updateUser", "Bearer @acme-expired", user_id="u-active"),
        request("getUser", "Bearer @shady", user_id="u-active"),
        request("getUser", "Bearer eyJhbGciOiJub25lIn0.e30.", user_id="u-active"),
        apb.CheckRequest(operation="getUser", authorization="Bearer @globex", at_least_as_fresh="1",
                         resource=apb.Resource(user_id="u-active")),
    )]


def ext_authz_seeds() -> list[bytes]:
    def request(method, path, headers=None, extensions=None, raw=False):
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            id="r1", method=method, path=path, host="api.example.test", scheme="https", protocol="HTTP/1.1")
        if raw:
            http.header_map.headers.extend(base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items())
        else:
            http.headers.update(headers or {})
        return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http), context_extensions=extensions or {}))

    return [m.SerializeToString() for m in (
        request("GET", "/health"),
        request("GET", "/v1/users/u-active", {"authorization": "Bearer @acme"}),
        request("GET", "/v1/users/u-active?x=1", {"x-api-key": "@acme-reader", "x-tollgate-partner-id": "globex"}),
        request("PATCH", "/v1/users/u-active", {"authorization": "Bearer @jwt-rsa"}),
        request("GET", "/v1/organizations/o-active", {"authorization": "Bearer @jwt-ec"}, raw=True),
        request("GET", "/v1/customers/C-1/orders", {"authorization": "Bearer @acme"}),
        request("POST", "/v1/court-bookings", {"authorization": "Bearer @jwt-ed"}),
        request("GET", "/anything", {"authorization": "Bearer @jwt-hmac"},
                {"operation": "getUser", "user_id": "header.x-user-id"}),
        request("GET", "/v1/users/%2e%2e", {"authorization": "Bearer @acme-revoked"}),
    )]


def manage_seeds() -> list[bytes]:
    """The serialized request, then one byte that picks the caller (manage_relation.CALLERS)."""
    seeds = [
        (rpb.ManageRelationRequest(request_user_relation=rpb.RequestUserRelation(user_id="u-new")), 1),
        (rpb.ManageRelationRequest(approve_user_relation=rpb.ApproveUserRelation(
            relation_id="@rel", reason="ok", ttl=Duration(seconds=3600))), 2),
        (rpb.ManageRelationRequest(reject_user_relation=rpb.RejectUserRelation(relation_id="@rel")), 2),
        (rpb.ManageRelationRequest(revoke_relation=rpb.RevokeRelation(relation_id="@rel", reason="done")), 1),
        (rpb.ManageRelationRequest(issue_connect_token=rpb.IssueConnectToken(
            organization_id="o-new", issued_by="admin@o-new", ttl=Duration(seconds=600))), 2),
        (rpb.ManageRelationRequest(claim_organization_relation=rpb.ClaimOrganizationRelation(connect_token="@ct")), 1),
        (rpb.ManageRelationRequest(request_user_relation=rpb.RequestUserRelation(user_id="u-active")), 4),
        (rpb.ManageRelationRequest(request_user_relation=rpb.RequestUserRelation(user_id="u-x")), 6),
        (rpb.ManageRelationRequest(), 0),
    ]
    return [message.SerializeToString() + bytes([caller]) for message, caller in seeds]


def token_endpoint_seeds() -> list[bytes]:
    """Requests in tests.fuzz.token_endpoint's framing: a request line, headers, a blank line, the
    body; "@cs-fuzz", "@basic-fuzz", "@at", "@rt"... are the run's secrets (see that module)."""
    def request(path: str, headers: dict[str, str], body: str) -> bytes:
        head = "\n".join([f"POST {path}", *(f"{name}: {value}" for name, value in headers.items())])
        return f"{head}\n\n{body}".encode()

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    json_body = {"Content-Type": "application/json"}
    return [
        request("/oauth/token", {**form, "Authorization": "@basic-fuzz"},
                "grant_type=client_credentials&scope=user%3Aread"),
        request("/oauth/token", json_body,
                '{"grant_type":"client_credentials","client_id":"cli_fuzz","client_secret":"@cs-fuzz"}'),
        request("/oauth/token", {**form, "Authorization": "@basic-fuzz"}, "grant_type=refresh_token&refresh_token=@rt"),
        request("/oauth/token", {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
                                 "Transfer-Encoding": "chunked", "Authorization": "@basic-plain"},
                "grant_type=client_credentials"),
        request("/oauth/introspect", {**form, "Authorization": "@basic-gate"}, "token=@at"),
        request("/oauth/introspect", {**json_body, "Authorization": "Bearer @gate-admin"}, '{"token":"@rt"}'),
        request("/oauth/revoke", form, "token=@rt&client_id=cli_fuzz&client_secret=@cs-fuzz"),
        request("/oauth/revoke", {**json_body, "Authorization": "@basic-fuzz"},
                '{"token":"@at","token_type_hint":"access_token"}'),
    ]


def main() -> None:
    for target, seeds in (("check", check_seeds()), ("ext_authz", ext_authz_seeds()),
                          ("manage_relation", manage_seeds()), ("token_endpoint", token_endpoint_seeds())):
        directory = CORPUS / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for seed in seeds:
            (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        print(f"{directory}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
