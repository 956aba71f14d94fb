"""Talking to Tollgate's token endpoint from the benchmark: client_credentials grants from Python,
for the tokens scenario (f) uses (obtained from the server itself, never forged) and for checking
a server's answer before wrk loads it.

Each grant goes over a connection of its own (HTTP/1.1, `Connection: close`), a few threads at a
time: the answer does not depend on the connection, and a fresh one is never held up by a
keep-alive connection's delayed acknowledgements."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

from .seed import OAuthClient
from .wrk import GRANT_BODY, TOKEN_PATH, basic_authorization

TIMEOUT = 10.0


class GrantFailed(RuntimeError):
    pass


def grant(port: int, client: OAuthClient, scope: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST /oauth/token on 127.0.0.1:port with the client's Basic credentials: (status, JSON body)."""
    body = GRANT_BODY + (("&" + urlencode({"scope": scope})) if scope else "")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("POST", TOKEN_PATH, body=body, headers={
            "Authorization": basic_authorization(client.client_id, client.secret),
            "Content-Type": "application/x-www-form-urlencoded", "Connection": "close"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"unparsed": raw[:200].decode("utf-8", "replace")}
    return response.status, answer if isinstance(answer, dict) else {"unparsed": str(answer)[:200]}


def claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and payload, unverified (Check verifies the signature when it is used)."""
    def segment(text: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    head, payload, _ = token.split(".")
    return segment(head), segment(payload)


def token_problems(status: int, answer: dict[str, Any], client: OAuthClient, issuer: str) -> list[str]:
    """What is wrong with a token response to `client`'s grant; empty when it is an RFC 9068
    token of `issuer` for that client and its partner."""
    if status != 200 or "access_token" not in answer:
        return [f"{client.client_id}: HTTP {status} {str(answer)[:160]}"]
    try:
        header, claims = claims_of(answer["access_token"])
    except (ValueError, TypeError):
        return [f"{client.client_id}: the access token is not a JWT"]
    found = []
    if header.get("typ") != "at+jwt" or header.get("alg") in (None, "none"):
        found.append(f"{client.client_id}: header {header}")
    wanted = {"iss": issuer, "client_id": client.client_id, "partner_id": client.partner}
    found += [f"{client.client_id}: {name} {claims.get(name)!r}, expected {value!r}"
              for name, value in wanted.items() if claims.get(name) != value]
    if answer.get("token_type") != "Bearer":
        found.append(f"{client.client_id}: token_type {answer.get('token_type')!r}")
    return found


def issue_tokens(port: int, clients: Sequence[OAuthClient], issuer: str, scope: str | None = None,
                 threads: int = 4) -> list[str]:
    """One access token per client, in order, from the server's token endpoint; GrantFailed names
    the first clients whose answers were wrong."""
    def one(client: OAuthClient) -> tuple[str, list[str]]:
        status, answer = grant(port, client, scope)
        return answer.get("access_token", ""), token_problems(status, answer, client, issuer)

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(one, clients))
    problems = [problem for _, found in answers for problem in found]
    if problems:
        raise GrantFailed(f"{len(problems)} wrong token answers, e.g. " + "; ".join(problems[:3]))
    return [token for token, _ in answers]
