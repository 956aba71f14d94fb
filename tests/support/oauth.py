"""The token service's test support: OAuth clients, partners and API keys seeded through the real
store, and an HTTP client for the OAuth endpoints that fails any answer echoing a secret it sent.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
from tollgate.v1 import tokens_pb2

from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord, OAuthClientRecord, PartnerRecord, PartnerStatus

from .world import World

TOKEN = "/oauth/token"
REVOKE = "/oauth/revoke"
INTROSPECT = "/oauth/introspect"
JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/oauth-authorization-server"
# Parameters and headers whose values are secrets: an answer must never contain what was sent in them.
SECRET_PARAMETERS = ("client_secret", "refresh_token", "token")
SHORTEST_CHECKED = 8  # shorter values ("x") may occur in any text by chance


@dataclass(frozen=True)
class Client:
    id: str
    secret: str = field(repr=False)

    @property
    def basic(self) -> tuple[str, str]:
        return self.id, self.secret

    def body(self) -> dict[str, str]:
        """The credentials as body parameters (client_secret_post)."""
        return {"client_id": self.id, "client_secret": self.secret}

    def proto(self) -> tokens_pb2.ClientCredentials:
        return tokens_pb2.ClientCredentials(client_id=self.id, client_secret=self.secret)


def add_client(world: World, client_id: str, partner_id: str = "acme", *, scopes: tuple[str, ...] = (),
               customer_numbers: tuple[str, ...] = (), refresh_tokens: bool = False, revoked: bool = False) -> Client:
    secret = opaque.generate(opaque.CLIENT_SECRET_PREFIX)
    now = world.clock.now()
    with world.seed() as repos:
        repos.oauth_clients.add(OAuthClientRecord(
            client_id, partner_id, client_id, opaque.digest(secret), scopes, customer_numbers, refresh_tokens, now,
            revoked_at=now if revoked else None))
    return Client(client_id, secret)


def add_partner(world: World, partner_id: str, *, grants: tuple[str, ...] = (), roles: tuple[str, ...] = (),
                status: PartnerStatus = PartnerStatus.ACTIVE) -> None:
    with world.seed() as repos:
        repos.partners.add(PartnerRecord(partner_id, partner_id.title(), status, grants, roles, world.clock.now()))


def add_api_key(world: World, name: str, partner_id: str, *, grants: tuple[str, ...] = (),
                roles: tuple[str, ...] = (), expires_in: int | None = None) -> str:
    """A new API key of `partner_id`, also kept in world.keys / world.key_ids under `name`."""
    key = opaque.generate(opaque.API_KEY_PREFIX)
    now = world.clock.now()
    record = ApiKeyRecord(new_id("key"), partner_id, opaque.digest(key), name, grants, roles, (), now,
                          expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None)
    with world.seed() as repos:
        repos.api_keys.add(record)
    world.keys[name], world.key_ids[name] = key, record.id
    return key


def set_partner_status(world: World, partner_id: str, status: PartnerStatus) -> None:
    with world.seed() as repos:
        assert repos.partners.set_status(partner_id, status)


def revoke_client(world: World, client_id: str) -> None:
    with world.seed() as repos:
        assert repos.oauth_clients.revoke(client_id, world.clock.now())


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (the tests that need a verified one verify it with the JWKS)."""
    return _segment(token, 1)


def header_of(token: str) -> dict[str, Any]:
    return _segment(token, 0)


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def basic_header(client_id: str, secret: str) -> str:
    """HTTP Basic as RFC 6749 section 2.3.1 has it: each part form-urlencoded, then base64."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


class OAuthHttp:
    """httpx on the world's HTTP listener. Every answer is checked before the test sees it: nothing
    sent as a secret (client secret, refresh token, token, bearer credential) comes back in its body
    or headers. `sent` lists further secrets of a raw body."""

    def __init__(self, world: World) -> None:
        self.base = f"http://127.0.0.1:{world.app.http_port}"
        self._http = httpx.Client(base_url=self.base, timeout=15)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OAuthHttp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def post(self, path: str, *, data: dict | None = None, json_body: Any = None, content: Any = None,
             headers: dict[str, str] | list[tuple[str, str]] | None = None, auth: tuple[str, str] | None = None,
             sent: tuple[str, ...] = ()) -> httpx.Response:
        secrets = list(sent)
        if auth is not None:
            secrets.append(auth[1])
        for values in (data, json_body):
            if isinstance(values, dict):
                secrets += [v for k, v in values.items() if k in SECRET_PARAMETERS and isinstance(v, str)]
        for name, value in (headers.items() if isinstance(headers, dict) else headers or ()):
            if name.lower() in ("authorization", "x-api-key"):
                secrets.append(value.partition(" ")[2] or value)
        kwargs: dict[str, Any] = {"headers": headers}
        if data is not None:
            kwargs["data"] = data
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        if auth is not None:
            kwargs["auth"] = auth
        response = self._http.post(path, **kwargs)
        assert_not_echoed(response, secrets)
        return response

    def get(self, path: str) -> httpx.Response:
        return self._http.get(path)

    def token(self, client: Client | None, via: str = "basic", **params: str) -> httpx.Response:
        """A token request; the client authenticates by `via`: "basic", "form" (body) or "json"."""
        if via == "basic":
            return self.post(TOKEN, data=params, auth=client.basic if client else None)
        body = {**(client.body() if client else {}), **params}
        return self.post(TOKEN, json_body=body) if via == "json" else self.post(TOKEN, data=body)

    def issue(self, client: Client, **params: str) -> dict[str, Any]:
        """A client_credentials grant that must succeed; its JSON answer."""
        response = self.token(client, grant_type="client_credentials", **params)
        assert response.status_code == 200, response.text
        return response.json()

    def refresh(self, client: Client, refresh_token: str, **params: str) -> httpx.Response:
        return self.token(client, grant_type="refresh_token", refresh_token=refresh_token, **params)

    def revoke(self, client: Client | None, token: str, **params: str) -> httpx.Response:
        return self.post(REVOKE, data={"token": token, **params}, auth=client.basic if client else None)

    def introspect(self, token: str, *, client: Client | None = None, bearer: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        return self.post(INTROSPECT, data={"token": token}, auth=client.basic if client else None, headers=headers)


def assert_not_echoed(response: httpx.Response, secrets: list[str]) -> None:
    texts = [response.text, *(f"{name}: {value}" for name, value in response.headers.items())]
    for secret in secrets:
        if len(secret) >= SHORTEST_CHECKED:
            assert not any(secret in text for text in texts), f"the answer to {response.request.url} echoes a secret"
