"""Credentials from gRPC call metadata (for the RPCs that authenticate their caller), and the
caller's address."""

from __future__ import annotations

import grpc


def credential_headers(context: grpc.ServicerContext) -> tuple[str, str]:
    """(authorization, x-api-key) from the invocation metadata; empty strings when absent."""
    authorization = api_key = ""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and not authorization:
            authorization = value if isinstance(value, str) else ""
        elif key == "x-api-key" and not api_key:
            api_key = value if isinstance(value, str) else ""
    return authorization, api_key


def peer_address(context: grpc.ServicerContext) -> str:
    """The caller's address without scheme and port: "ipv4:10.0.0.7:51234" -> "10.0.0.7",
    "ipv6:[::1]:51234" -> "::1"; other forms (unix:…) whole."""
    peer = context.peer() or ""
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        return rest.rpartition(":")[0]
    if scheme == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer
