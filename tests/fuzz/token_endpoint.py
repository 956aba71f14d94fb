"""Fuzz target: the OAuth endpoints over HTTP (POST /oauth/token, /oauth/revoke, /oauth/introspect)
on the server's real HTTP listener, with invariant 6 of harness.py.

The server's OAuth clients are harness.OAUTH_CLIENTS (seeded by harness.seed_oauth); its
client-authentication failure limit is set out of reach, so that no answer is a 429 that would
hide the parsing behind it. Every input is used twice:

(a) as a request in a small text framing: a request line, header lines, a blank line, the body as
    raw bytes, e.g.

        POST /oauth/token
        Content-Type: application/x-www-form-urlencoded
        Authorization: @basic-fuzz

        grant_type=client_credentials&scope=user%3Aread

    "@..." placeholders are replaced with this run's secrets: "@cs-<client>" (a client's secret),
    "@basic-<client>" (its whole Basic header value), "@gate-admin" (an API key that may
    introspect), the API keys and JWTs of harness.start(), and "@at" / "@rt": the latest access
    and refresh token of cli_fuzz, so the fuzzer can walk refresh, reuse, revocation and
    introspection. `Transfer-Encoding: chunked` sends the body chunked; Content-Length, Host,
    Connection and Upgrade are the HTTP client's to set. An input without a blank line is a form
    body posted to the endpoint its first byte picks.
(b) as a recipe read with atheris.FuzzedDataProvider (harness.oauth_request): genuine, mutated and
    garbage client authentication (Basic, body, Bearer, other schemes), parameters, form, JSON and
    raw bodies, content types, query strings, chunking and sizes around the 16 KiB limit.

    .venv/bin/python -m tests.fuzz.token_endpoint [libFuzzer flags] SCRATCH_DIR tests/fuzz/corpus/token_endpoint
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["service", "jwt"]):
    from tests.fuzz import harness

# What httptools parses as a method; other tokens are refused by the parser itself before the
# application sees them (test_hostile_token_endpoint section 2), so the framing sends POST instead.
METHODS = frozenset({"POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"})
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
PATH_CHARACTER = re.compile(r"[!-~]")  # printable ASCII but space; "#" is dropped below

fx: harness.Fixture
ledger: harness.OAuthLedger
http = None


def framed(data: bytes) -> harness.HttpRequest:
    """Interpretation (a): the input in the framing of the module docstring."""
    head, blank, body = data.partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    method, _, path = lines[0].strip().partition(" ")
    if not blank or not path.startswith("/"):
        path = harness.OAUTH_PATHS[data[0] % 3 if data else 0]
        return harness.HttpRequest("POST", path, [("Content-Type", b"application/x-www-form-urlencoded")],
                                   _expanded(data))
    headers, chunked = [], False
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not HEADER_NAME.fullmatch(name.strip()):
            continue
        raw = fx.expand(value).encode("latin-1", "replace")
        if name.strip().lower() == "transfer-encoding" and b"chunked" in raw.lower():
            chunked = True
        headers.append((name.strip(), bytes(b for b in raw if b == 9 or 32 <= b != 127).strip(b" \t")))
    target = "".join(c for c in fx.expand(path.strip()) if PATH_CHARACTER.fullmatch(c) and c != "#")
    return harness.HttpRequest(method.upper() if method.upper() in METHODS else "POST", target or "/", headers,
                               _expanded(body), chunked)


def _expanded(body: bytes) -> bytes:
    if b"@" not in body:
        return body
    return fx.expand(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def check(request: harness.HttpRequest) -> None:
    harness.assert_oauth_answer(ledger, request, harness.send_http(http, request))
    fx.state["@at"] = ledger.last_access.get("cli_fuzz", "")
    fx.state["@rt"] = ledger.last_refresh.get("cli_fuzz", "")


def test_one_input(data: bytes) -> None:
    check(framed(data))
    check(harness.oauth_request(harness.FuzzedChooser(atheris.FuzzedDataProvider(data)), ledger))


def prime() -> None:
    """A token (with a refresh token) of cli_fuzz for @at and @rt, and one of cli_gate, to start from."""
    for client in ("fuzz", "gate"):
        check(harness.HttpRequest("POST", harness.OAUTH_PATHS[0], [
            ("Authorization", fx.placeholders[f"@basic-{client}"].encode()),
            ("Content-Type", b"application/x-www-form-urlencoded")], b"grant_type=client_credentials"))
    assert fx.state["@at"] and fx.state["@rt"], "priming issued no token"


def main() -> None:
    global fx, ledger, http
    # A failure limit out of reach: a 429 would hide the parsing behind it.
    fx = harness.start(client_auth_failure_burst=10 ** 9)
    ledger = harness.seed_oauth(fx.world)
    fx.placeholders |= harness.oauth_placeholders(ledger)
    fx.secrets |= ledger.fixed_secrets()
    fx.state |= {"@at": "", "@rt": ""}
    http = harness.http_client(fx.world)
    prime()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
