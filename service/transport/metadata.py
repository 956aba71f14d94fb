"""Credentials from gRPC call metadata (for the RPCs that authenticate their caller)."""

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
