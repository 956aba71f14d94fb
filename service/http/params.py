"""Reading an OAuth request (RFC 6749 sections 2.3.1 and 3.2): a bounded body that is a form (the
standard) or a JSON object, each parameter at most once, client credentials from HTTP Basic or
from the body but never both, and never from the URL."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import ClientDisconnect, Request

from ..domain.credentials import PresentedCredential, parse_presented
from ..domain.errors import CredentialRejected
from ..domain.oauth import ClientCredentials, OAuthError, OAuthErrorCode

# Token requests are a few hundred bytes; a body beyond this is refused before it is parsed.
MAX_BODY_BYTES = 16 * 1024
MAX_PARAMETER_CHARS = 8 * 1024


def _invalid(description: str) -> OAuthError:
    return OAuthError(OAuthErrorCode.INVALID_REQUEST, description)


@dataclass(frozen=True)
class OAuthParameters:
    values: dict[str, str] = field(repr=False)
    # From the Authorization header: Basic client credentials, or a bearer credential (introspection).
    basic: ClientCredentials | None = None
    bearer: PresentedCredential | None = None

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def client(self) -> ClientCredentials | None:
        """The client's credentials from Basic or the body (client_secret_post); RFC 6749 2.3
        allows one method per request. None when the request has none."""
        body_id, body_secret = self.values.get("client_id"), self.values.get("client_secret")
        if self.basic is not None:
            if body_secret is not None or (body_id is not None and body_id != self.basic.client_id):
                raise _invalid("use one client authentication method, not Basic and the body both")
            return self.basic
        if body_id is None:
            return None
        return ClientCredentials(body_id, body_secret or "")


async def read_parameters(request: Request) -> OAuthParameters:
    """Raises OAuthError(invalid_request) for anything but one bounded form or JSON object."""
    if request.url.query:
        raise _invalid("parameters go in the request body, not the URL")
    body = await _bounded_body(request)
    values = _parsed(body, request.headers.get("content-type", ""))
    for name, value in values.items():
        if len(value) > MAX_PARAMETER_CHARS or "\x00" in value:
            raise _invalid(f"the parameter {name if name.isidentifier() and len(name) < 40 else '?'} is malformed")
    basic, bearer = _authorization(request.headers.getlist("authorization"), request.headers.getlist("x-api-key"))
    return OAuthParameters(values, basic, bearer)


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _invalid(f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _invalid(f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away before its body ended (or sent a chunk the HTTP parser refused, which
        # closes the connection): no one is left to answer, and it is no error of ours to log.
        raise _invalid("the body ended before it was complete") from None
    return b"".join(chunks)


def _parsed(body: bytes, content_type: str) -> dict[str, str]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8") from None
    if media_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=64)
        except ValueError:
            raise _invalid("the body is not a valid form") from None
    elif media_type == "application/json":
        pairs = _json_pairs(text)
    else:
        raise _invalid("the body must be application/x-www-form-urlencoded or application/json")
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise _invalid("a parameter is repeated")  # RFC 6749 section 3.2
        values[name] = value
    return values


class _JsonObject(list):
    """A JSON object's members in order (duplicates kept, for _parsed to refuse): a list type of
    its own, so that a JSON array is never mistaken for an object."""


def _json_pairs(text: str) -> list[tuple[str, str]]:
    try:
        document = json.loads(text, object_pairs_hook=_JsonObject)
    except (ValueError, RecursionError):
        raise _invalid("the body is not valid JSON") from None
    if not isinstance(document, _JsonObject) or len(document) > 64:
        raise _invalid("the JSON body must be an object of at most 64 parameters")
    for _name, value in document:
        if not isinstance(value, str):
            raise _invalid("every JSON parameter must be a string")
    return document


def _authorization(authorization: list[str], api_key: list[str]) -> tuple[ClientCredentials | None,
                                                                        PresentedCredential | None]:
    if len(authorization) > 1 or len(api_key) > 1:
        raise _invalid("the Authorization header is repeated")
    header = authorization[0].strip() if authorization else ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        return _basic(value.strip()), None
    try:
        return None, parse_presented(header, api_key[0] if api_key else "")
    except CredentialRejected:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the Authorization header is malformed") from None


def _basic(value: str) -> ClientCredentials:
    """RFC 6749 section 2.3.1: id and secret are form-encoded, then joined by a colon."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    # binascii.Error: not base64; UnicodeDecodeError: not UTF-8 once decoded; ValueError: a header
    # byte beyond ASCII (Starlette reads headers as Latin-1), which b64decode refuses to look at.
    except ValueError:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the Basic credentials are malformed") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "the Basic credentials are malformed")
    return ClientCredentials(unquote_plus(client_id), unquote_plus(secret))
