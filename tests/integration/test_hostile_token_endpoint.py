"""Hostile input to the token service's HTTP endpoints (POST /oauth/token, /oauth/revoke,
/oauth/introspect) through the real listener (uvicorn, port 0), on SQLite and PostgreSQL: whatever
a client sends, the answer arrives in time over a connection that stays up, as a JSON object with
an RFC 6749 section 5.2 error of the documented set and its status (400, 401 with WWW-Authenticate,
403, 404, 405; 429 with Retry-After only from the failure limit) or a success of the right shape,
`Cache-Control: no-store`, never 500, never a token without the client's genuine secret, never a
secret sent echoed back.

1. Property-based fuzzing (hypothesis) of each endpoint: genuine, mutated and garbage client
   authentication (Basic spelled every way, not base64, no colon, percent-encoded, non-UTF-8,
   Latin-1 header bytes, a megabyte long; body credentials; Bearer and X-API-Key; other schemes;
   both methods at once; two Authorization headers), grant types, scopes, refresh tokens (live,
   spent, another client's, mutated) and tokens to revoke or introspect; form, JSON and raw
   bodies (duplicates, NUL and control characters, non-UTF-8, deep nesting, arrays, numbers, NaN,
   BOMs, UTF-16), wrong and missing content types and charset parameters, chunked bodies, bodies
   around 16 KiB, query strings, other paths and methods. The server's failure limit is set out
   of reach, so that no 429 hides what is behind it. The recipe (`harness.oauth_request`) and the
   oracle (`harness.assert_oauth_answer`, invariant 6 of tests/fuzz/harness.py) are shared with
   the coverage-guided target tests/fuzz/token_endpoint.py: this suite draws the choices, the
   target takes them from libFuzzer's bytes.
2. Bytes that are no valid HTTP/1.1 (a raw socket): request smuggling shapes, bad chunks, NUL and
   CR in headers, unknown methods, HTTP/2 prefaces, TLS hellos. What httptools' parser refuses is
   answered by uvicorn itself (400, text/plain, the connection closed, nothing of the request in
   it); the rest reaches the endpoints and is held to the oracle.
3. Limits: 16 KiB bodies (declared, chunked, or declared larger and never sent), 64 parameters.
4. The failure limit at its default: 429 with Retry-After, then a token again after the wait.
5. Bugs these tests found, fixed (each test says what the bug was).
6. Afterwards: no answer of the module's server was a 5xx, not even one whose client had gone
   (its metrics count every answer); the tests above also find nothing logged at ERROR.

Derandomized like tests/integration/test_hostile_input.py: TOLLGATE_FUZZ_RANDOM=1 explores new
examples, TOLLGATE_FUZZ_EXAMPLES=<factor> scales how many.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.request
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.harness import OAUTH_PATHS, HttpAnswer, HttpRequest, OAuthLedger
from tests.support.hostile import DEADLINE_SECONDS, hostile_text
from tests.support.processes import free_port
from tests.support.world import World, start_world, stop_world

SCALE = float(os.environ.get("TOLLGATE_FUZZ_EXAMPLES", "1"))
FORM = ("Content-Type", b"application/x-www-form-urlencoded")


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    derandomize=os.environ.get("TOLLGATE_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    print_blob=True)


@dataclass
class TokenWorld:
    world: World
    ledger: OAuthLedger
    http: httpx.Client

    def secret(self, client_id: str = "cli_fuzz") -> str:
        return self.ledger.clients[client_id]

    def basic(self, client_id: str = "cli_fuzz") -> tuple[str, bytes]:
        return "Authorization", harness.basic_value(client_id, self.secret(client_id)).encode()

    def send(self, request: HttpRequest, *, may_throttle: bool = False) -> tuple[HttpAnswer, dict]:
        answer = harness.send_http(self.http, request)
        return answer, harness.assert_oauth_answer(self.ledger, request, answer, may_throttle=may_throttle)


def start_token_world(database_url: str, data_dir, **settings) -> TokenWorld:
    world = start_world(database_url, data_dir, **settings)
    return TokenWorld(world, harness.seed_oauth(world), harness.http_client(world))


def stop_token_world(tw: TokenWorld) -> None:
    tw.http.close()
    stop_world(tw.world)


@pytest.fixture(scope="module")
def token_world(module_database_url, tmp_path_factory):
    """One server per module and store, its failure limit out of reach (client_auth_failure_burst)."""
    tw = start_token_world(module_database_url, tmp_path_factory.mktemp("data"), client_auth_failure_burst=100_000,
                           metrics_port=free_port())
    yield tw
    stop_token_world(tw)


class Drawn:
    """The recipe's choices (harness.oauth_request) as hypothesis draws, labelled so that a failing
    example reads as the request it was."""

    def __init__(self, data) -> None:
        self.data = data

    def pick(self, values: list, label: str = ""):
        return self.data.draw(st.sampled_from(values), label=label)

    def number(self, low: int, high: int, label: str = "") -> int:
        return self.data.draw(st.integers(low, high), label=label)

    def text(self, label: str = "", max_size: int = 48) -> str:
        return self.data.draw(hostile_text(max_size), label=label)

    def raw(self, label: str = "", max_size: int = 64) -> bytes:
        return self.data.draw(st.binary(max_size=max_size), label=label)


def token_request(tw: TokenWorld, client_id: str = "cli_fuzz", body: bytes = b"grant_type=client_credentials",
                  path: str = OAUTH_PATHS[0]) -> HttpRequest:
    return HttpRequest("POST", path, [tw.basic(client_id), FORM], body)


def assert_still_issuing(tw: TokenWorld) -> None:
    """A genuine client still gets a token, and Check allows it as its partner."""
    answer, body = tw.send(token_request(tw))
    assert answer.status == 200, body
    decision = tw.world.check("getUser", authorization=f"Bearer {body['access_token']}", user_id="u-active")
    assert decision.allowed and decision.principal.partner_id == "acme", decision


# --- 1. property-based fuzzing -----------------------------------------------------------------


@pytest.mark.parametrize("path, examples", [(OAUTH_PATHS[0], 400), (OAUTH_PATHS[1], 150), (OAUTH_PATHS[2], 150)])
def test_fuzz_oauth_endpoint(token_world, path, examples, caplog):
    tw = token_world
    before = len(tw.ledger.access_tokens)

    @fuzz_settings(examples)
    @given(data=st.data())
    def run(data):
        request = harness.oauth_request(Drawn(data), tw.ledger, (path,))
        answer = harness.send_http(tw.http, request)
        harness.assert_oauth_answer(tw.ledger, request, answer)

    run()
    assert_still_issuing(tw)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    if path == OAUTH_PATHS[0]:
        assert len(tw.ledger.access_tokens) - before >= 20, "the recipe rarely reaches a genuine grant"


def _answer(status: int, body, headers=(), seconds: float = 0.01) -> HttpAnswer:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    base = [("content-type", "application/json"), ("cache-control", "no-store")]
    return HttpAnswer(status, base + list(headers), content, seconds)


def _jwt(claims: dict) -> str:
    from tests.support.hostile import b64url

    return f"e30.{b64url(json.dumps(claims).encode())}.c2ln"


def _bad_answers(ledger: OAuthLedger) -> dict[str, tuple[HttpRequest, HttpAnswer]]:
    """name -> (request, answer) that invariant 6 must refuse."""
    secret, gate = ledger.clients["cli_fuzz"], ledger.clients["cli_gate"]
    genuine = HttpRequest("POST", OAUTH_PATHS[0], [("Authorization", harness.basic_value("cli_fuzz", secret).encode())],
                          b"grant_type=client_credentials")
    def basic(client_id, secret):
        return [("Authorization", harness.basic_value(client_id, secret).encode())]
    forged = HttpRequest("POST", OAUTH_PATHS[0], basic("cli_fuzz", secret + "x"), b"grant_type=client_credentials")
    introspect = HttpRequest("POST", OAUTH_PATHS[2], basic("cli_gate", gate), b"token=tg_rt_unknown")
    error = {"error": "invalid_client", "error_description": "client authentication failed"}
    challenge = [("www-authenticate", 'Basic realm="tollgate"')]
    token = {"access_token": _jwt({"client_id": "cli_fuzz", "sub": "cli_fuzz", "partner_id": "acme"}),
             "token_type": "Bearer", "expires_in": 3600, "scope": "admin"}
    return {
        "500": (genuine, _answer(500, {"error": "server_error", "error_description": "internal error"})),
        "no answer": (genuine, HttpAnswer(None, [], b"", 0.01, "RemoteProtocolError: Server disconnected")),
        "too late": (genuine, _answer(401, error, challenge, seconds=DEADLINE_SECONDS)),
        "text/plain": (genuine, HttpAnswer(400, [("content-type", "text/plain")], b"Invalid HTTP request received.",
                                           0.01)),
        "no no-store": (genuine, HttpAnswer(401, [("content-type", "application/json"), *challenge],
                                             json.dumps(error).encode(), 0.01)),
        "undocumented error": (genuine, _answer(400, {"error": "server_error", "error_description": "x"})),
        "error with the wrong status": (genuine, _answer(400, error)),
        "401 without a challenge": (genuine, _answer(401, error)),
        "429 where no limit applies": (genuine, _answer(429, {"error": "temporarily_unavailable",
                                                              "error_description": "wait"}, [("retry-after", "1")])),
        "description outside RFC 6749": (genuine, _answer(401, {**error, "error_description": 'say "hi"'}, challenge)),
        "secret echoed": (forged, _answer(401, {**error, "error_description": f"bad secret {secret}x"}, challenge)),
        "secret echoed in a header": (forged, _answer(401, error, [*challenge, ("x-debug", secret + "x")])),
        "seeded key echoed": (genuine, _answer(401, {**error, "error_description": next(iter(ledger.api_keys))},
                                               challenge)),
        "token for a forged secret": (forged, _answer(200, token)),
        "token for a dead client": (genuine, _answer(200, {**token, "access_token": _jwt(
            {"client_id": "cli_revoked", "sub": "cli_revoked", "partner_id": "acme"})})),
        "token naming another partner": (genuine, _answer(200, {**token, "access_token": _jwt(
            {"client_id": "cli_fuzz", "sub": "cli_fuzz", "partner_id": "globex"})})),
        "revocation for a forged secret": (HttpRequest("POST", OAUTH_PATHS[1], forged.headers, b"token=x"),
                                           _answer(200, {})),
        "introspection for an outsider": (HttpRequest("POST", OAUTH_PATHS[2], genuine.headers, b"token=x"),
                                          _answer(200, {"active": False})),
        "an unknown token active": (introspect, _answer(200, {"active": True, "token_type": "refresh_token",
                                                              "client_id": "cli_fuzz", "sub": "cli_fuzz"})),
        "an inactive token with more": (introspect, _answer(200, {"active": False, "client_id": "cli_fuzz"})),
        "200 elsewhere": (HttpRequest("POST", "/oauth/authorize", genuine.headers, b""), _answer(200, {})),
        "an oversized answer": (genuine, _answer(401, {**error, "error_description": "x" * 9000}, challenge)),
    }


def control_ledger() -> OAuthLedger:
    """A ledger of made-up secrets, for holding the oracle itself to account (no server)."""
    secret = harness.opaque.generate
    clients = {"cli_fuzz": secret("tg_cs_"), "cli_gate": secret("tg_cs_")}
    return OAuthLedger(clients=clients, dead_clients={"cli_revoked": secret("tg_cs_")},
                       client_partners={"cli_fuzz": "acme", "cli_gate": "gate", "cli_revoked": "acme"},
                       introspectors={clients["cli_gate"]}, api_keys={secret("tg_live_"): "acme"}, other_tokens=[])


@pytest.mark.parametrize("name", sorted(_bad_answers(control_ledger())))
def test_the_oracle_refuses_what_it_must(name):
    """Invariant 6 itself: each of these answers breaks it (a silent oracle cannot pass the fuzzing)."""
    ledger = control_ledger()
    request, answer = _bad_answers(ledger)[name]
    with pytest.raises(harness.InvariantBroken):
        harness.assert_oauth_answer(ledger, request, answer)


def test_the_oracle_accepts_a_genuine_exchange_and_refuses_a_second_refresh():
    ledger = control_ledger()
    basic = harness.basic_value("cli_fuzz", ledger.clients["cli_fuzz"], scheme="basic", encode_all=True)
    request = HttpRequest("POST", OAUTH_PATHS[0], [("Authorization", basic.encode())], b"grant_type=client_credentials")
    token = _jwt({"client_id": "cli_fuzz", "sub": "cli_fuzz", "partner_id": "acme", "rt_family": "rtf_1"})
    refresh = harness.opaque.generate("tg_rt_")
    issued = {"access_token": token, "token_type": "Bearer", "expires_in": 60, "scope": "admin"}
    harness.assert_oauth_answer(ledger, request, _answer(200, {**issued, "refresh_token": refresh}))
    assert ledger.live_refresh == {"rtf_1": refresh} and ledger.access_tokens == {token: "cli_fuzz"}
    spent = HttpRequest("POST", OAUTH_PATHS[0], request.headers, b"grant_type=refresh_token&refresh_token=tg_rt_spent")
    with pytest.raises(harness.InvariantBroken, match="unspent refresh token"):
        harness.assert_oauth_answer(ledger, spent, _answer(200, {"access_token": token, "token_type": "Bearer",
                                                                 "expires_in": 60, "scope": "admin",
                                                                 "refresh_token": harness.opaque.generate("tg_rt_")}))


# --- 2. bytes that are no valid HTTP -----------------------------------------------------------

PARSER_REFUSAL = b"Invalid HTTP request received."


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes, float]:
    """Sends `data` on a new connection and reads one answer: (status, headers, body, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS) as connection:
        connection.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"the connection closed without an answer: {received[:200]!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = (line.partition(":") for line in lines[1:])
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = connection.recv(65536)
            assert chunk, "the connection closed in the middle of the answer"
            body += chunk
    return int(lines[0].split()[1]), headers, body, time.monotonic() - started


def raw_requests(basic: bytes) -> dict[str, bytes]:
    host, body = b"Host: x\r\n", b"grant_type=client_credentials"
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    auth = b"Authorization: " + basic + b"\r\n"
    post = b"POST /oauth/token HTTP/1.1\r\n" + host
    return {
        "nul-in-a-header": post + b"Authorization: " + basic + b"\x00\r\nContent-Length: 0\r\n\r\n",
        "cr-in-a-header": post + b"Authorization: " + basic + b"\rX\r\nContent-Length: 0\r\n\r\n",
        "non-ascii-digit-content-length": post + b"Content-Length: \xc2\xb2\r\n\r\nab",
        "negative-content-length": post + b"Content-Length: -1\r\n\r\n",
        "content-length-past-64-bits": post + b"Content-Length: 99999999999999999999999\r\n\r\n",
        "two-content-lengths": post + auth + b"Content-Length: 29\r\nContent-Length: 2\r\n\r\n" + body,
        "content-length-and-chunked": post + auth + form
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "transfer-encoding-identity": post + form + b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\na=b",
        "bad-chunk-size": post + auth + form + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        "bad-second-chunk": post + auth + form + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n",
        "huge-chunk-extension": post + auth + form + b"Transfer-Encoding: chunked\r\n\r\n1d;a=" + b"x" * 10_000
        + b"\r\n" + body + b"\r\n0\r\n\r\n",
        "credential-in-a-chunked-trailer": post + form + b"Transfer-Encoding: chunked\r\n\r\n1d\r\n" + body
        + b"\r\n0\r\n" + auth + b"\r\n",
        "unknown-method": b"FOO /oauth/token HTTP/1.1\r\n" + host + auth + b"Content-Length: 0\r\n\r\n",
        "lower-case-method": b"post /oauth/token HTTP/1.1\r\n" + host + auth + b"Content-Length: 0\r\n\r\n",
        "http-0.9": b"GET /oauth/token\r\n\r\n",
        "http-2.0-request-line": b"POST /oauth/token HTTP/2.0\r\n" + host + auth + b"Content-Length: 0\r\n\r\n",
        "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "h2c-upgrade": post + auth + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n",
        "websocket-upgrade": post + auth + form
        + b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 29\r\n\r\n" + body,
        "bare-line-feeds": b"POST /oauth/token HTTP/1.1\nHost: x\nAuthorization: " + basic + b"\nContent-Length: 0\n\n",
        "folded-header": post + b"Authorization: Basic\r\n " + basic[6:] + b"\r\nContent-Length: 0\r\n\r\n",
        "space-before-the-colon": post + b"Authorization : " + basic + b"\r\nContent-Length: 0\r\n\r\n",
        "header-without-a-colon": post + b"Authorization " + basic + b"\r\nContent-Length: 0\r\n\r\n",
        "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        "absolute-uri-of-another-host": b"POST http://evil.test/oauth/token HTTP/1.1\r\n" + host + auth + form
        + b"Content-Length: 29\r\n\r\n" + body,
        "no-host": b"POST /oauth/token HTTP/1.1\r\n" + auth + form + b"Content-Length: 29\r\n\r\n" + body,
        "100-kB-request-line": b"POST /oauth/token?" + b"a" * 100_000 + b" HTTP/1.1\r\n" + host
        + b"Content-Length: 0\r\n\r\n",
        "5000-headers": post + b"".join(b"X-%d: y\r\n" % i for i in range(5000)) + b"Content-Length: 0\r\n\r\n",
        "pipelined-then-garbage": (post + auth + form + b"Content-Length: 29\r\n\r\n" + body) * 2 + b"GARBAGE\r\n\r\n",
        "latin-1-path": b"POST /oauth/t\xe9ken HTTP/1.1\r\n" + host + auth + b"Content-Length: 0\r\n\r\n",
        "nul-in-the-path": b"POST /oauth/token\x00 HTTP/1.1\r\n" + host + auth + b"Content-Length: 0\r\n\r\n",
    }


RAW_NAMES = sorted(raw_requests(b"Basic x"))
# Request smuggling shapes: they must never reach an endpoint.
REFUSED_BY_THE_PARSER = {"two-content-lengths", "content-length-and-chunked", "transfer-encoding-identity",
                         "bad-chunk-size", "nul-in-a-header", "cr-in-a-header", "bare-line-feeds", "folded-header"}


@pytest.mark.parametrize("name", RAW_NAMES)
def test_bytes_that_are_no_valid_http(token_world, name, caplog):
    tw = token_world
    basic = harness.basic_value("cli_fuzz", tw.secret()).encode()
    status, headers, body, seconds = raw_exchange(tw.world.app.http_port, raw_requests(basic)[name])
    assert seconds < DEADLINE_SECONDS
    assert tw.secret() not in body.decode("latin-1") + repr(headers), "the answer echoes the secret"
    if body == PARSER_REFUSAL:
        # httptools refused the bytes; uvicorn answers for itself, and closes the connection.
        assert (status, headers.get("connection")) == (400, "close"), headers
    else:
        assert name not in REFUSED_BY_THE_PARSER, f"{name} reached an endpoint: {status} {body[:200]!r}"
        assert status in harness.OAUTH_STATUSES and headers["content-type"] == "application/json", (status, body)
        assert "no-store" in headers["cache-control"]
        document = json.loads(body)
        assert "access_token" in document or status in (404, 405) \
            or harness.OAUTH_ERRORS.get(document["error"]) == status, document
    assert_still_issuing(tw)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_a_body_cut_short_is_no_server_error(token_world, caplog):
    """The client goes away in the middle of its body (or sends a chunk the parser refuses, which
    closes the connection): nothing is logged as unexpected (regression: it was a logged 500)."""
    tw = token_world
    head = (b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\ngrant_type=")
    with socket.create_connection(("127.0.0.1", tw.world.app.http_port), timeout=DEADLINE_SECONDS) as connection:
        connection.sendall(head)
        time.sleep(0.2)
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert_still_issuing(tw)


# --- 3. limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_16_kib_is_read_and_one_byte_more_is_refused(token_world, chunked):
    tw = token_world
    # Padding parameters of at most 6,000 characters each (a value may have 8 Ki).
    at_limit = b"grant_type=client_credentials&p1=" + b"a" * 6000 + b"&p2=" + b"a" * 6000 + b"&p3="
    at_limit += b"a" * (16 * 1024 - len(at_limit))
    answer, body = tw.send(HttpRequest("POST", OAUTH_PATHS[0], [tw.basic(), FORM], at_limit, chunked))
    assert answer.status == 200, body
    answer, body = tw.send(HttpRequest("POST", OAUTH_PATHS[0], [tw.basic(), FORM], at_limit + b"a", chunked))
    assert (answer.status, body["error"]) == (400, "invalid_request"), body


def test_a_declared_oversized_body_is_refused_before_it_is_sent(token_world):
    """Content-Length: 100 MB and not one byte of body: the answer comes at once."""
    tw = token_world
    basic = harness.basic_value("cli_fuzz", tw.secret()).encode()
    status, _headers, body, seconds = raw_exchange(tw.world.app.http_port, (
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nAuthorization: " + basic
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n"))
    assert (status, json.loads(body)["error"]) == (400, "invalid_request") and seconds < 1.0, (status, body, seconds)


@pytest.mark.parametrize("fields, status", [(64, 200), (65, 400)])
def test_at_most_64_parameters(token_world, fields, status):
    tw = token_world
    body = "&".join(["grant_type=client_credentials"] + [f"p{i}=x" for i in range(fields - 1)]).encode()
    answer, document = tw.send(token_request(tw, body=body))
    assert answer.status == status, document


@pytest.mark.parametrize("size", [20_000, 1_000_000])
def test_a_huge_basic_header_is_invalid_client(token_world, size):
    tw = token_world
    answer, body = tw.send(HttpRequest("POST", OAUTH_PATHS[0], [("Authorization", b"Basic " + b"QUFB" * (size // 4)),
                                                                  FORM], b"grant_type=client_credentials"))
    assert (answer.status, body["error"]) == (401, "invalid_client")


# --- 4. the failure limit at its default -------------------------------------------------------


def test_failed_client_authentication_is_throttled_with_retry_after(database_url, tmp_path):
    """Default limit (a burst of 10 failures, then one a second), per client id and per address:
    the 11th wrong secret is a 429 with Retry-After, so is the genuine secret (the client and the
    address are out of tries, and the secret is not even looked at), and so is another client from
    the same address; after Retry-After seconds the genuine secret gets a token."""
    tw = start_token_world(database_url, tmp_path)
    try:
        assert tw.world.app.settings.client_auth_failure_burst == 10
        wrong = harness.basic_value("cli_fuzz", tw.secret()[:-1] + ("A" if tw.secret()[-1] != "A" else "B")).encode()
        statuses = []
        for _ in range(11):
            answer, body = tw.send(HttpRequest("POST", OAUTH_PATHS[0], [("Authorization", wrong), FORM],
                                               b"grant_type=client_credentials"), may_throttle=True)
            statuses.append((answer.status, body["error"]))
        assert statuses == [(401, "invalid_client")] * 10 + [(429, "temporarily_unavailable")], statuses
        for client_id in ("cli_fuzz", "cli_plain"):
            answer, body = tw.send(token_request(tw, client_id), may_throttle=True)
            assert (answer.status, body["error"]) == (429, "temporarily_unavailable"), (client_id, body)
            retry_after = int(answer.header("retry-after"))
            assert 1 <= retry_after <= 2 and "no-store" in answer.header("cache-control")
        time.sleep(retry_after + 0.1)
        answer, body = tw.send(token_request(tw), may_throttle=True)
        assert answer.status == 200, body
    finally:
        stop_token_world(tw)


# --- 5. bugs these tests found, fixed ----------------------------------------------------------


@pytest.mark.parametrize("path", OAUTH_PATHS)
@pytest.mark.parametrize("value", [b"Basic \xe9\xe9", b"Basic dXNlcjpwYXNz\xff", b"basic \xc3\xa9:x", b"Basic \x80"])
def test_basic_credentials_beyond_ascii_are_invalid_client(token_world, path, value):
    """Header bytes beyond ASCII in Basic credentials were a 500: base64.b64decode raises a plain
    ValueError for non-ASCII text, which service/http/params.py did not catch."""
    answer, body = token_world.send(HttpRequest("POST", path, [("Authorization", value), FORM], b"token=x"))
    assert (answer.status, body["error"]) == (401, "invalid_client")
    assert answer.header("www-authenticate").startswith("Basic realm=")


@pytest.mark.parametrize("path", [p + "/" for p in OAUTH_PATHS] + ["/.well-known/jwks.json/"])
def test_a_trailing_slash_is_not_found_not_a_redirect_to_the_host_sent(token_world, path):
    """Starlette answered "/oauth/token/" with a 307 to "http://<Host header>/oauth/token": a client
    following it re-posts its body, client secret included, to whatever host the request named."""
    tw = token_world
    body = f"grant_type=client_credentials&client_id=cli_fuzz&client_secret={tw.secret()}"
    answer = tw.http.post(path, headers={"Host": "evil.test", "Content-Type": "application/x-www-form-urlencoded"},
                          content=body.encode())
    assert (answer.status_code, answer.json()["error"]) == (404, "invalid_request")
    assert "location" not in answer.headers and answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("body", ['[1,2]', '[["a","b","c"]]', '[["grant_type","client_credentials"]]', '["ab"]', "[]"])
def test_a_json_array_is_no_parameter_object(token_world, body):
    """A JSON array was read as if it were an object's members (a 500 for [1,2] and [["a","b","c"]],
    parameters for [["grant_type", ...]]); found by this suite, fixed alongside in params.py."""
    tw = token_world
    answer, document = tw.send(HttpRequest("POST", OAUTH_PATHS[0], [tw.basic(), ("Content-Type", b"application/json")],
                                           body.encode()))
    assert (answer.status, document["error"]) == (400, "invalid_request"), document


# --- 6. afterwards -----------------------------------------------------------------------------


def test_no_answer_was_a_server_error(token_world):
    """Last in the module (pytest keeps file order): of all the answers the module's server gave,
    none was a 5xx, not even one whose client was gone before it could be sent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{token_world.world.app.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    answered = [line for line in metrics.splitlines() if line.startswith("tollgate_token_requests_total{")]
    assert answered, "the answers were counted"
    assert not [line for line in answered if 'status="5' in line], answered
